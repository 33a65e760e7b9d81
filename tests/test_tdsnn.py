"""TDSNN reverse coding (Zhang et al. 2019): G, prepare, exact spike times in Brian2 vs the reference and eq. 10."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import biosnn
from biosnn.frontends.torch_graph import trace
from biosnn.codings.tdsnn.coding import TDSNNActivation, strip_activations
from biosnn.codings.tdsnn.reference import g_forward, g_logits, spike_step
from biosnn.datasets import accuracy, load_digits, train_classifier
from biosnn.errors import ConversionError

ROOT = Path(__file__).resolve().parents[1]


def _T(value: float, L: float) -> int:
    """Eq. 10 by hand: ceil(L ln(x + 1)) for x > 0, else 0."""
    return math.ceil(L * math.log(1.0 + value)) if value > 0 else 0


def test_activation_G_values_gradient_and_prepare():
    L = 2.0
    x = torch.tensor([-3.0, 0.0, 0.2, 1.0, 7.5], dtype=torch.float64, requires_grad=True)
    g = TDSNNActivation(L)(x)
    expected = [1.0 if v < 0 else math.exp(_T(v, L) / L) for v in x.tolist()]   # eq. 11
    np.testing.assert_allclose(g.detach().numpy(), expected, rtol=1e-15)
    np.testing.assert_array_equal(spike_step(x.detach(), L).numpy(), [0, 0, 1, 2, 5])
    g.sum().backward()                                    # straight-through: the gradient of relu(x) + 1
    np.testing.assert_array_equal(x.grad.numpy(), [0, 0, 1, 1, 1])

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 6), nn.ReLU(), nn.Linear(6, 3))
    prepared = biosnn.prepare(model, "tdsnn", L=3)
    acts = [m for m in prepared.modules() if isinstance(m, TDSNNActivation)]
    assert len(acts) == 3 and all(a.L == 3.0 for a in acts)      # before the conv and both linear layers
    assert list(prepared.state_dict()) == list(model.state_dict())
    stripped, L_found, preceded = strip_activations(prepared)
    assert L_found == 3.0 and preceded == {"0", "4", "6"}
    xb = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    graph = trace(stripped, (1, 8, 8))
    with torch.no_grad():
        np.testing.assert_allclose(prepared.double()(xb).numpy(), g_logits(graph, g_forward(graph, xb, 3.0)),
                                   rtol=1e-12, atol=1e-12)
    with pytest.raises(ConversionError, match="already contains TDSNNActivation"):
        biosnn.prepare(prepared, "tdsnn", L=3)


def test_prepare_compensates_G_so_the_prepared_model_starts_close_to_the_ann():
    """G(x) >= 1 for every neuron (a silent one sends 1): with the plain weights every pre-activation gains
    W 1 and a trained digits CNN falls to chance (0.10-0.30).  prepare shifts the biases (and the running mean
    of a BatchNorm after a bias-free convolution) and divides the weights by G's gain, so that before any
    re-training the prepared model is close to the ANN."""
    x, y = load_digits("train")
    xt, yt = load_digits("test")
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(16 * 2 * 2, 32), nn.ReLU(), nn.Linear(32, 10))
    train_classifier(model, x, y, epochs=4, lr=1e-2, batch_size=64, seed=0)
    ann = accuracy(model, xt, yt)
    assert ann > 0.85
    prepared = biosnn.prepare(model, "tdsnn", L=5)
    assert accuracy(prepared, xt, yt) >= ann - 0.15
    assert list(prepared.state_dict()) == list(model.state_dict())      # compensated in the bias / BN mean
    snn = biosnn.convert(prepared, "tdsnn", calibration=x[:100], input_shape=(1, 8, 8))
    with torch.no_grad():
        ann_pred = prepared(torch.as_tensor(xt[:60])).argmax(1).numpy()
    assert np.mean(snn.reference(xt[:60]).predictions == ann_pred) >= 0.95


def _hand_model():
    """The G-network with hand-set weights (set after prepare, which compensates the weights it gets)."""
    model = biosnn.prepare(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)), "tdsnn", L=2)
    with torch.no_grad():
        model.get_submodule("0").weight[:] = torch.tensor([[0.5, 1.0], [-0.375, 1.5]])    # exact in float32
        model.get_submodule("0").bias[:] = torch.tensor([0.25, -0.125])
        model.get_submodule("2").weight[:] = torch.tensor([[1.0, -0.5], [-0.25, 0.75]])
        model.get_submodule("2").bias[:] = torch.tensor([0.125, 0.0])
    return model


_HAND_X = np.array([[1.0, 0.25], [0.0, 0.6]])


def _hand_expected(L=2.0, T_il=None):
    """Spike steps (eq. 10, clipped at T_il - 1) and logits of the hand model, by hand."""
    w1, b1 = np.array([[0.5, 1.0], [-0.375, 1.5]]), np.array([0.25, -0.125])
    w2, b2 = np.array([[1.0, -0.5], [-0.25, 0.75]]), np.array([0.125, 0.0])
    top = np.inf if T_il is None else T_il - 1
    steps_in = np.array([[min(_T(v, L), top) for v in row] for row in _HAND_X])
    hidden = np.exp(steps_in / L) @ w1.T + b1
    steps_h = np.array([[min(_T(v, L), top) for v in row] for row in hidden])
    return steps_in, steps_h, np.exp(steps_h / L) @ w2.T + b2


def test_hand_network_spike_times_scores_and_operation_counts(tmp_path):
    """x = (1, 0.25): input steps (2, 1); hidden a = (3.26, 1.33): steps (3, 2); by eq. 10 with L = 2."""
    snn = biosnn.convert(_hand_model(), "tdsnn", calibration=_HAND_X, input_shape=(2,))
    steps_in, steps_h, logits = _hand_expected()
    np.testing.assert_array_equal(steps_in, [[2, 1], [0, 1]])
    np.testing.assert_array_equal(steps_h, [[3, 2], [3, 3]])
    assert snn.L == 2.0 and snn.calibration_max_step == 3 and snn.T_il == 3 + 1 + 2 and snn.T == 2 * 6 + 1
    brian = snn.spike_steps(_HAND_X)
    np.testing.assert_array_equal(brian["input"], steps_in)
    np.testing.assert_array_equal(brian["0"], steps_h)
    res = snn.run(_HAND_X, progress=False)
    np.testing.assert_allclose(res.scores, logits, rtol=1e-13)
    np.testing.assert_array_equal(res.predictions, np.argmax(logits, axis=1))
    np.testing.assert_array_equal(res.layer_spikes["input"], [2, 2])     # every neuron fires once
    np.testing.assert_array_equal(res.layer_spikes["0"], [2, 2])
    ex = res.extras
    np.testing.assert_array_equal(ex["synaptic_additions"], [2 * 2 + 2 * 2] * 2)  # each spike x fan-out 2
    np.testing.assert_array_equal(ex["ticks"], steps_h.max(axis=1))               # ticks until all fired
    np.testing.assert_array_equal(ex["tick_additions"], steps_h.sum(axis=1))      # k ticks for a spike at k
    np.testing.assert_array_equal(ex["bias_additions"], [4, 4])
    np.testing.assert_array_equal(ex["additions"], 8 + steps_h.sum(axis=1) + 4)
    np.testing.assert_array_equal(ex["multiplications"], (2 + 2) * snn.T_il + steps_h.sum(axis=1))
    assert snn.ann_multiplications == 8 and snn.ann_additions == 8
    assert biosnn.load(snn.save(tmp_path / "hand.yaml")) == snn.spec

    # a period too short for the values: neurons still silent at the last active step fire there (clipped)
    with pytest.warns(UserWarning, match="clipped to step 2"):
        short = biosnn.convert(_hand_model(), "tdsnn", calibration=_HAND_X, input_shape=(2,), T_il=3)
    steps_in, steps_h, logits = _hand_expected(T_il=3)
    np.testing.assert_array_equal(steps_h, [[2, 2], [2, 2]])
    ref = short.reference(_HAND_X)
    np.testing.assert_array_equal(ref.steps["0"], steps_h)
    np.testing.assert_array_equal(ref.saturated["0"], [1, 2])
    res = short.run(_HAND_X, progress=False)
    np.testing.assert_allclose(res.scores, logits, rtol=1e-13)
    np.testing.assert_allclose(ref.scores, logits, rtol=1e-13)
    np.testing.assert_array_equal(res.extras["tick_additions"], [4, 4])   # both hidden neurons at step 2
    np.testing.assert_array_equal(res.extras["ticks"], [2, 2])


@pytest.fixture(scope="module")
def digits_tdsnn():
    """A max-pool CNN trained on digits, re-trained with G (L = 2), converted."""
    x, y = load_digits("train")
    xt, yt = load_digits("test")
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 2 * 2, 16), nn.ReLU(), nn.Linear(16, 10))
    train_classifier(model, x, y, epochs=5, lr=1e-2, batch_size=64, seed=0)
    prepared = train_classifier(biosnn.prepare(model, "tdsnn", L=2), x, y, epochs=2, lr=3e-3, batch_size=64, seed=0)
    snn = biosnn.convert(prepared, "tdsnn", calibration=x[:300], input_shape=(1, 8, 8), name="digits_tdsnn")
    return snn, prepared, xt, yt


def test_brian2_spike_times_equal_reference_and_eq10(digits_tdsnn):
    """Every neuron's Brian2 spike step equals the discrete reference's and T(x) of its G-ANN value (eq. 10)."""
    snn, prepared, xt, yt = digits_tdsnn
    x = xt[:8]
    ref = snn.reference(x)
    assert all(int(s.sum()) == 0 for s in ref.saturated.values())   # T_il covers these samples
    brian = snn.spike_steps(x)
    assert set(brian) == set(ref.steps) == {"input", "0", "2", "3", "6"}
    for name, steps in brian.items():
        np.testing.assert_array_equal(steps, ref.steps[name], err_msg=f"layer {name}")
    values = g_forward(snn.graph, x, snn.L)
    for name, steps in brian.items():
        v = values[name]
        u = snn.L * np.log1p(np.maximum(v, 0.0))
        # not within rounding error of a step boundary (of eq. 10's ceil, or of the ReLU at 0)
        clear = (v < -1e-9) | ((v > 1e-9) & (np.abs(u - np.round(u)) > 1e-9))
        analytic = spike_step(torch.from_numpy(v), snn.L).numpy()
        np.testing.assert_array_equal(steps[clear], analytic[clear], err_msg=f"layer {name}")
        if name != "input":                                          # (pixels k/16 meet a boundary only at 0)
            assert clear.mean() > 0.99, name

    res = snn.run(x, batch_size=8, progress=False)
    np.testing.assert_array_equal(res.scores, ref.scores)          # the same float operations: bit for bit
    logits = snn.g_ann(x)
    np.testing.assert_allclose(res.scores, logits, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(res.predictions, ref.predictions)
    np.testing.assert_array_equal(res.predictions, np.argmax(logits, axis=1))
    for name, counts in res.layer_spikes.items():
        np.testing.assert_array_equal(counts, snn.graph[name].size)   # every neuron fires exactly once
    for key, value in ref.ops.items():
        np.testing.assert_array_equal(res.extras[key], value, err_msg=key)
    assert res.extras["ticks"].min() > 0 and res.T == 4 * snn.T_il + 1

    # on the whole test split: the reference predicts exactly what the G-ANN (float64) and the
    # re-trained torch model predict, and is far above chance
    full = snn.reference(xt)
    g_pred = np.argmax(snn.g_ann(xt), axis=1)
    np.testing.assert_array_equal(full.predictions, g_pred)
    fast = snn.reference(xt, exact=False)                          # one matrix product per layer
    for name, steps in full.steps.items():
        np.testing.assert_array_equal(fast.steps[name], steps, err_msg=f"layer {name}")
    np.testing.assert_allclose(fast.scores, full.scores, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        torch_pred = prepared.double()(torch.as_tensor(xt, dtype=torch.float64)).argmax(1).numpy()
    np.testing.assert_array_equal(torch_pred, g_pred)
    assert np.mean(full.predictions == yt) > 0.5


@pytest.mark.standalone
def test_cpp_standalone_equals_reference(build_cache, tmp_path):
    snn = biosnn.convert(_hand_model(), "tdsnn", calibration=_HAND_X, input_shape=(2,), name="hand_tdsnn")
    res = snn.run(_HAND_X, backend="cpp_standalone", batch_size=2, progress=False, cache_dir=build_cache)
    ref = snn.reference(_HAND_X)
    np.testing.assert_array_equal(res.scores, ref.scores)
    for key, value in ref.ops.items():
        np.testing.assert_array_equal(res.extras[key], value, err_msg=key)
    # the same although the neuron loops of the leak and thresholder ran over no neuron while idle
    sim = next(iter(snn._sim_cache.values()))
    code = sim.directory / "code_objects"
    for obj in ("L1_op0", "L1_spike_thresholder", "L2_op0", "input_spike_thresholder", "meter_spike_thresholder"):
        assert "biosnn_idle ? 0 : N" in (code / f"{obj}_codeobject.cpp").read_text(), obj
    # other weights and another T_il (another window: P T_il + 1 steps, another run length): T_il is data, the
    # run's duration is read at run time, so the build is reused and nothing is compiled
    other = _hand_model()
    with torch.no_grad():
        other.get_submodule("0").weight.mul_(0.5)
    snn2 = biosnn.convert(other, "tdsnn", calibration=_HAND_X, input_shape=(2,), name="hand_tdsnn",
                          T_il=snn.T_il + 3)
    assert snn2.T == snn.T + 2 * 3
    res2 = snn2.run(_HAND_X, backend="cpp_standalone", batch_size=2, progress=False, cache_dir=build_cache)
    sim2 = next(iter(snn2._sim_cache.values()))
    assert sim2.directory == sim.directory and res2.compiled is False and sim2.compiled is False
    ref2 = snn2.reference(_HAND_X)
    np.testing.assert_array_equal(res2.scores, ref2.scores)
    for key, value in ref2.ops.items():
        np.testing.assert_array_equal(res2.extras[key], value, err_msg=key)
    assert not np.allclose(res2.scores, res.scores)
    # two batches in two processes of the binary (biosnn.backends.parallel), each told its run's duration
    four = np.concatenate([_HAND_X, _HAND_X[::-1]])
    par = snn2.run(four, backend="cpp_standalone", batch_size=2, workers=2, progress=False, cache_dir=build_cache)
    assert par.runs == 2 and par.compiled is False
    np.testing.assert_array_equal(par.scores, np.concatenate([ref2.scores, ref2.scores[::-1]]))
    # the first network again: its build reloads itself (new values, no compilation), same results
    again = snn.run(_HAND_X, backend="cpp_standalone", batch_size=2, progress=False, cache_dir=build_cache)
    assert again.compiled is False
    np.testing.assert_array_equal(again.scores, res.scores)
    # the binary refuses to run without its duration
    env = {k: v for k, v in os.environ.items() if k != "BIOSNN_DURATION_S"}
    out = subprocess.run(["./main", "--results_dir", str(tmp_path) + "/"], cwd=sim.directory, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 2 and "set BIOSNN_DURATION_S to the run's duration in seconds" in out.stderr


def test_standalone_main_reads_the_duration_at_run_time(tmp_path):
    """main.cpp's one Network.run gets its duration from the environment; the structure key leaves it out."""
    from biosnn.backends.brian2_standalone import duration_from_environment, structure_key
    from biosnn.errors import BackendError
    main = tmp_path / "main.cpp"
    text = ("#include <iostream>\nint main(int argc, char **argv)\n{\n"
            "        biosnn_network.run(0.027, report_progress, 1.0);\n}\n")
    main.write_text(text)
    assert duration_from_environment(main) is True
    patched = main.read_text()
    assert "biosnn_network.run(biosnn_duration_s(), report_progress, 1.0);" in patched and "0.027" not in patched
    assert duration_from_environment(main) is False and main.read_text() == patched   # once
    main.write_text(text.replace("    biosnn_network.run(0.027", "    net.run(0.01, NULL, 1.0);\n    net.run(0.027"))
    with pytest.raises(BackendError, match="does not have the one network run"):
        duration_from_environment(main)
    snn = biosnn.convert(_hand_model(), "tdsnn", calibration=_HAND_X, input_shape=(2,))
    longer = biosnn.convert(_hand_model(), "tdsnn", calibration=_HAND_X, input_shape=(2,), T_il=snn.T_il + 1)
    a, b = snn.spec_for(2), longer.spec_for(2)
    assert a.duration != b.duration
    assert structure_key(a, None, {}) == structure_key(b, None, {})
    assert structure_key(a, a.duration_seconds(), {}) != structure_key(b, b.duration_seconds(), {})


def test_errors_name_the_problem():
    x = np.random.default_rng(0).random((10, 4))
    with pytest.raises(ConversionError, match="L .*must be a positive number"):
        biosnn.prepare(nn.Sequential(nn.Linear(4, 2)), "tdsnn", L=0)

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.out = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, z):
            h = torch.relu(self.a(z))
            return self.out(torch.relu(self.b(h)) + h)

    with pytest.raises(ConversionError, match="residual connection"):
        biosnn.convert(biosnn.prepare(Residual(), "tdsnn"), "tdsnn", calibration=x, input_shape=(4,))
    pool_out = nn.Sequential(nn.Unflatten(1, (1, 2, 2)), nn.Conv2d(1, 2, 1), nn.ReLU(), nn.MaxPool2d(2))
    with pytest.raises(ConversionError, match="output layer .* is a maxpool2d"):
        biosnn.convert(biosnn.prepare(pool_out, "tdsnn"), "tdsnn", calibration=x, input_shape=(4,))
    mlp = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(ConversionError, match="differs from the L=5"):
        biosnn.convert(biosnn.prepare(mlp, "tdsnn", L=5), "tdsnn", calibration=x, input_shape=(4,), L=3)
    half = nn.Sequential(TDSNNActivation(2), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(ConversionError, match=r"layers \['3'\] have no TDSNNActivation"):
        biosnn.convert(half, "tdsnn", calibration=x, input_shape=(4,))
    misplaced = nn.Sequential(nn.Unflatten(1, (1, 2, 2)), nn.Conv2d(1, 2, 1), nn.ReLU(), TDSNNActivation(2),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2, 2))
    with pytest.raises(ConversionError, match="not a Linear, Conv2d or average-pooling"):
        biosnn.convert(misplaced, "tdsnn", calibration=x, input_shape=(4,))
    with pytest.warns(UserWarning, match="no TDSNN activation"):
        snn = biosnn.convert(mlp, "tdsnn", calibration=x, input_shape=(4,))
    with pytest.raises(ConversionError, match="x must have shape"):
        snn.run(np.zeros((2, 5)), progress=False)
    with pytest.raises(ConversionError, match="margin must be"):
        biosnn.convert(mlp, "tdsnn", calibration=x, input_shape=(4,), margin=-1)
    with pytest.raises(ConversionError, match="unknown parameters \\['T'\\]"):
        biosnn.convert(mlp, "tdsnn", calibration=x, input_shape=(4,), T=8)


def test_convert_tdsnn_example():
    """examples/convert_tdsnn.py on scikit-learn digits (avg-pool CNN, L = 2), Brian2 runtime."""
    env = dict(os.environ, BIOSNN_PROGRESS="0", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "examples/convert_tdsnn.py", "--dataset", "digits", "--L", "2",
                           "--epochs", "4", "--retrain-epochs", "1", "--test-samples", "150", "--brian2-samples", "6",
                           "--backend", "runtime"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    for key in ("ANN accuracy", "G-ANN accuracy", "SNN accuracy", "Brian2 equals the reference",
                "additions per image", "multiplications per image"):
        assert key in out, key
    assert "Brian2 equals the reference: yes" in out
    assert float(out.split("SNN accuracy")[1].split("%")[0].split()[-1]) > 30.0   # chance: 10 %
