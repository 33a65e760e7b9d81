"""Diehl & Cook (2015) STDP training: labels, checkpoints, the chunk network, learning on digits, resume, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from biosnn.cli import main
from biosnn.errors import BiosnnError, SpecError
from biosnn.learning import evaluate, train
from biosnn.learning.checkpoint import load_checkpoint, save_checkpoint
from biosnn.learning.figures import receptive_field_grid
from biosnn.learning.labels import accuracy, assign_labels, class_response_sums, predict
from biosnn.learning.network import ChunkConfig, chunk_spec, event_driven_variables, is_diehl_cook_rule
from biosnn.learning.report import drive_matched_weight_total, load_dataset
from biosnn.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "network_specs" / "diehl_cook_2015.yaml"
N_EXC, CHUNK, SAMPLES = 100, 250, 1000   # one compiled network serves every standalone test here


# ---------------------------------------------------------------------------
# Pure functions


def test_label_assignment_and_prediction_follow_the_paper():
    responses = np.array([[5, 0, 1], [3, 0, 0], [0, 4, 1], [0, 2, 3]])
    labels = np.array([0, 0, 1, 2])
    sums, counts = class_response_sums(responses, labels, n_classes=3)
    np.testing.assert_array_equal(sums, [[8, 0, 0], [0, 4, 2], [1, 1, 3]])
    np.testing.assert_array_equal(counts, [2, 1, 1])
    # mean response per class: neuron 0 -> (4, 0, 0), neuron 1 -> (0, 4, 2), neuron 2 -> (0.5, 1, 3)
    assignments = assign_labels(sums, counts)
    np.testing.assert_array_equal(assignments, [0, 1, 2])
    np.testing.assert_array_equal(predict(responses, assignments, n_classes=3), [0, 0, 1, 2])
    assert accuracy(np.array([0, 1, 1]), np.array([0, 1, 2])) == pytest.approx(2 / 3)
    with pytest.raises(BiosnnError, match="no labelled responses"):
        assign_labels(np.zeros((3, 3)), np.zeros(3))
    with pytest.raises(BiosnnError, match=r"labels must be in \[0, 3\)"):
        class_response_sums(responses, np.array([0, 0, 1, 5]), n_classes=3)


def test_checkpoint_round_trip_is_atomic(tmp_path):
    path = tmp_path / "ck.npz"
    save_checkpoint(path, {"w": np.arange(4.0)}, {"consumed": 3})
    save_checkpoint(path, {"w": np.arange(5.0)}, {"consumed": 7})
    arrays, meta = load_checkpoint(path)
    np.testing.assert_array_equal(arrays["w"], np.arange(5.0))
    assert meta == {"consumed": 7}
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]  # no temporary file left behind
    path.write_bytes(b"not an npz")
    with pytest.raises(BiosnnError, match="cannot read checkpoint"):
        load_checkpoint(path)


def test_receptive_field_grid_tiles_columns():
    w = np.arange(4 * 3, dtype=float).reshape(4, 3)          # 3 neurons with 2x2 fields
    grid = receptive_field_grid(w, (2, 2))
    assert grid.shape == (2 * 3 - 1, 2 * 3 - 1)
    np.testing.assert_array_equal(grid[:2, 3:5], w[:, 1].reshape(2, 2))
    assert np.isnan(grid[2]).all()


def test_chunk_spec_layout_and_errors():
    spec = load_spec(SPEC)
    assert event_driven_variables(spec.synapse_model(spec.projection("XeAe")).equations) == ["pre", "post1", "post2"]
    cs = chunk_spec(spec, ChunkConfig(n_exc=20, n_in=64, slots=10, input_shape=(1, 8, 8)))
    assert {p.name: p.size for p in cs.populations} == {"Ae": 20, "Ai": 20, "X": 64, "ctl": 1}
    assert cs.duration_seconds() == pytest.approx(10 * 0.35 + 0.0005)
    # the spec's rule is Diehl & Cook's: by default its traces move to the neurons, gated without a weight copy
    stdp = cs.synapse_model(cs.projection("XeAe"))
    assert stdp.on_pre.endswith("w = plastic_post*clip(w - nu_ee_pre*post1_post, 0, wmax_ee) + (1 - plastic_post)*w")
    assert "post1 : 1" in cs.neuron_model(cs.population("Ae")).equations and "w_fix" not in stdp.equations
    written = chunk_spec(spec, ChunkConfig(n_exc=20, n_in=64, slots=10, input_shape=(1, 8, 8), traces="synapse"))
    stdp = written.synapse_model(written.projection("XeAe"))
    assert stdp.on_pre.endswith("w = plastic_post*w + (1 - plastic_post)*w_fix")
    rule = spec.synapse_model(spec.projection("XeAe"))
    assert is_diehl_cook_rule(rule)
    other = spec.with_projection("XeAe", model=replace(rule, on_post=rule.on_post.replace("pre*post2before", "pre")))
    assert not is_diehl_cook_rule(other.synapse_model(other.projection("XeAe")))
    with pytest.raises(SpecError, match="not Diehl & Cook's STDP rule"):
        chunk_spec(other, ChunkConfig(n_exc=2, n_in=4, slots=1, traces="neuron"))
    with pytest.raises(SpecError, match="traces must be one of"):
        chunk_spec(spec, ChunkConfig(n_exc=2, n_in=4, slots=1, traces="post"))
    with pytest.raises(SpecError, match=r"needs populations \['Ae', 'Ai'\]"):
        chunk_spec(load_spec(ROOT / "network_specs" / "cuba.yaml"), ChunkConfig(n_exc=2, n_in=4, slots=1))
    with pytest.raises(SpecError, match="not a whole number of time steps"):
        chunk_spec(spec, ChunkConfig(n_exc=2, n_in=4, slots=1, presentation=0.35025))


def test_drive_matched_weight_total():
    assert drive_matched_weight_total(np.full((2, 4), 0.1307)) == pytest.approx(78.0)
    x = load_dataset("digits")[0]
    assert 25 < drive_matched_weight_total(x) < 40


# ---------------------------------------------------------------------------
# The chunk network on Brian2's runtime backend (small, no compilation)


def _one_chunk(spec, x, traces, slots=4, n_exc=12, plastic=True):
    from biosnn.learning.diehl_cook import _Chunks, _config, _flat_inputs, _phase, _rates, initial_state
    cfg = _config(spec, x[:slots], n_exc, slots, {"traces": traces, "weight_total": drive_matched_weight_total(x)})
    init = initial_state(spec, cfg)
    chunks = _Chunks(spec, cfg, init["delay"], "runtime", {})
    rows = _rates(_flat_inputs(x), np.arange(slots), 0, slots, slots)
    return chunks.run(rows, init["w"], init["theta"], plastic=plastic, intensity=2.0, phase=_phase(0, 0, 0, cfg.n_in))


def test_neuron_traces_give_the_rule_as_written(digits):
    """Post traces on Ae and the pre trace as arrival time = the spec's event-driven per-synapse traces."""
    x = digits[0]
    spec = load_spec(SPEC)
    written = _one_chunk(spec, x, "synapse")
    fast = _one_chunk(spec, x, "neuron")
    assert written[0].sum() >= 20                          # the Ae neurons spiked: post events and pairings
    np.testing.assert_array_equal(fast[0], written[0])      # the same spikes in every slot
    np.testing.assert_array_equal(fast[3]["theta"], written[3]["theta"])
    np.testing.assert_allclose(fast[3]["w"], written[3]["w"], rtol=0, atol=1e-13)   # rounding only
    # the comparison sees the traces: a pre trace twice as fast changes the weights by far more
    slower = spec.with_projection("XeAe", parameters={"tc_pre_ee": "10*ms"})
    assert np.abs(_one_chunk(slower, x, "neuron")[3]["w"] - fast[3]["w"]).max() > 1e-5


def test_padding_slots_do_not_raise_the_saved_intensity(digits, tmp_path, monkeypatch):
    """Silent padding slots after the last sample raise the controller's intensity; the checkpoint must not keep it."""
    from biosnn.learning import diehl_cook
    x, y = digits[0][:3], digits[1][:3]
    finals = []
    run = diehl_cook._Chunks.run

    def spy(self, *args, **kwargs):
        out = run(self, *args, **kwargs)
        finals.append(out[3])
        return out

    monkeypatch.setattr(diehl_cook._Chunks, "run", spy)
    ck = tmp_path / "ck.npz"
    train(load_spec(SPEC), x, y, n_exc=12, chunk=6, backend="runtime", checkpoint=ck,
          weight_total=drive_matched_weight_total(digits[0]), progress=False)
    meta = load_checkpoint(ck)[1]
    assert meta["consumed"] == 3
    assert finals[-1]["intensity"] > 2.0        # the padding slots raised it in the simulation ...
    assert meta["intensity"] == 2.0             # ... a continued training starts the next sample at intensity0


# ---------------------------------------------------------------------------
# Training in the compiled chunk network (one cpp_standalone build)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def cache(build_cache):
    old = os.environ.get("BIOSNN_CACHE_DIR")
    os.environ["BIOSNN_CACHE_DIR"] = str(build_cache)
    yield build_cache
    if old is None:
        os.environ.pop("BIOSNN_CACHE_DIR", None)
    else:
        os.environ["BIOSNN_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def trained(cache, digits, tmp_path_factory):
    x, y, _, _ = digits
    ck = tmp_path_factory.mktemp("dc") / "full.npz"
    infos = []
    result = train(load_spec(SPEC), x, y, samples=SAMPLES, n_exc=N_EXC, chunk=CHUNK, checkpoint=ck,
                   weight_total=drive_matched_weight_total(x), callback=infos.append, progress=False)
    return result, infos, ck


@pytest.mark.standalone
def test_stdp_learns_class_selective_fields(trained, digits):
    result, infos, _ = trained
    x, y, xt, yt = digits
    assert result.samples == SAMPLES and [i.consumed for i in infos][-1] == SAMPLES
    assert sum(i.slots for i in infos) == CHUNK * len(infos) and result.repeats == sum(i.repeats for i in infos)
    # column normalisation: every neuron's input weights sum to the total
    np.testing.assert_allclose(result.weights.sum(axis=0), drive_matched_weight_total(x), rtol=1e-9)
    assert result.theta.min() > 0.020  # thresholds grew from 20 mV
    # held-out accuracy with the classes assigned during training, well above chance (10 %): 56 % on the
    # 450 test digits here; the bound leaves room for other floating-point rounding (-ffast-math, -march)
    test = evaluate(result.spec, xt, yt, result.assignments, chunk=CHUNK,
                    weight_total=drive_matched_weight_total(x), progress=False)
    assert test.accuracy > 0.45, test.accuracy
    # receptive fields are class-selective: most neurons' weights correlate best with their class's mean image
    means = np.stack([x[y == c].reshape(-1, 64).mean(axis=0) for c in range(10)])
    corr = np.corrcoef(np.concatenate([result.weights.T, means]))[:N_EXC, N_EXC:]
    assert np.mean(corr.argmax(axis=1) == result.assignments) > 0.6
    assert len(set(result.assignments.tolist())) >= 8


@pytest.mark.standalone
def test_frozen_run_keeps_weights_and_thresholds(trained, digits):
    from biosnn.learning.diehl_cook import _Chunks, initial_state
    result, _, _ = trained
    x = digits[0]
    cfg = result.config
    init = initial_state(result.spec, cfg)
    chunks = _Chunks(result.spec, cfg, init["delay"], "cpp_standalone", {})
    rows = np.zeros((CHUNK, 64))
    rows[:50] = x[:50].reshape(50, -1) * 255 / 4
    phase = np.random.default_rng(0).random(64)
    frozen = chunks.run(rows, init["w"], init["theta"], plastic=False, intensity=2.0, phase=phase)
    assert frozen[0].sum() > 0
    np.testing.assert_array_equal(frozen[3]["w"], init["w"])
    np.testing.assert_array_equal(frozen[3]["theta"], init["theta"])
    learning = chunks.run(rows, init["w"], init["theta"], plastic=True, intensity=2.0, phase=phase)
    assert np.abs(learning[3]["w"] - init["w"]).max() > 1e-3


@pytest.mark.standalone
def test_resume_after_interrupt_ends_identical(trained, digits, tmp_path):
    result, _, full_ck = trained
    x, y, _, _ = digits
    ck = tmp_path / "ck.npz"
    kwargs = dict(samples=SAMPLES, n_exc=N_EXC, chunk=CHUNK, checkpoint=ck,
                  weight_total=drive_matched_weight_total(x), progress=False)

    def stop_after_second_chunk(info):
        if info.chunk == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(load_spec(SPEC), x, y, callback=stop_after_second_chunk, **kwargs)
    assert load_checkpoint(ck)[1]["chunk"] == 2
    resumed = train(load_spec(SPEC), x, y, **kwargs)
    assert resumed.chunks == result.chunks and resumed.samples == result.samples
    np.testing.assert_array_equal(resumed.weights, result.weights)
    np.testing.assert_array_equal(resumed.theta, result.theta)
    np.testing.assert_array_equal(resumed.assignments, result.assignments)
    with pytest.raises(BiosnnError, match="belongs to another training run.*seed: checkpoint 0 vs now 1"):
        train(load_spec(SPEC), x, y, seed=1, **kwargs)
    with pytest.raises(BiosnnError, match="belongs to another training run.*samples"):
        train(load_spec(SPEC), x, y, **{**kwargs, "samples": SAMPLES - 1})


@pytest.mark.standalone
def test_cli_train_stdp_digits_writes_report_and_resumes(cache, tmp_path, capsys):
    args = ["train-stdp", str(SPEC), "--dataset", "digits", "--samples", "250", "--neurons", str(N_EXC),
            "--chunk", str(CHUNK), "--test-samples", "250", "--out", str(tmp_path), "--no-progress",
            "--traces", "neuron"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "trained 250 samples" in out
    report = json.loads((tmp_path / "accuracy.json").read_text())
    assert report["train_samples"] == 250 and report["test_samples"] == 250 and report["inputs"] == 64
    assert 0.2 < report["test_accuracy"] <= 1.0
    assert (tmp_path / "weights.png").stat().st_size > 5000
    trained_spec = load_spec(tmp_path / "trained.yaml")
    assert trained_spec.projection("XeAe").weights.shape == (64 * N_EXC,)
    chunks_before = load_checkpoint(tmp_path / "checkpoint.npz")[1]["chunk"]
    assert load_checkpoint(tmp_path / "checkpoint.npz")[1]["traces"] == "neuron"
    assert main(args) == 0  # resumes: nothing left to train
    assert load_checkpoint(tmp_path / "checkpoint.npz")[1]["chunk"] == chunks_before
    report = json.loads((tmp_path / "accuracy.json").read_text())
    assert (report["resumed_at"], report["trained_this_call"], report["train_samples"]) == (250, 0, 250)


def test_cli_train_stdp_rejects_other_networks(tmp_path, capsys):
    assert main(["train-stdp", "network_specs/cuba.yaml", "--dataset", "digits", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("biosnn: error:") and "needs populations ['Ae', 'Ai']" in err


@pytest.mark.standalone
def test_train_diehl_cook_example(cache, tmp_path):
    env = dict(os.environ, BIOSNN_PROGRESS="0", OMP_NUM_THREADS="1", BIOSNN_CACHE_DIR=str(cache))
    proc = subprocess.run([sys.executable, "examples/train_diehl_cook.py", "--samples", "250", "--neurons",
                           str(N_EXC), "--chunk", str(CHUNK), "--test-samples", "250", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "test accuracy" in proc.stdout and (tmp_path / "weights.png").exists()
    acc = float(proc.stdout.split("test accuracy:")[1].split("%")[0])
    assert acc > 20.0
