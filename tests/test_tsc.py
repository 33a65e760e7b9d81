"""Temporal Switch Coding: hand-computed networks, Brian2 against the exact reference, ANN agreement."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import biosnn
from biosnn.spec.expand import expand_projection
from biosnn.frontends.torch_graph import forward_numpy, trace
from biosnn.codings.rate.spec import DT_MS, layer_connections
from biosnn.codings.rate.reference import simulate_rate
from biosnn.codings.tsc.coding import TSCSNN
from biosnn.codings.tsc.reference import simulate_tsc, tsc_schedule
from biosnn.codings.tsc.spec import tsc_network_spec
from biosnn.errors import ConversionError
from biosnn.metrics import synops

ROOT = Path(__file__).resolve().parents[1]


def _cnn(pool: str, seed: int = 1):
    Pool = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), Pool(2), nn.Conv2d(4, 8, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 2 * 2, 16), nn.ReLU(), nn.Linear(16, 10)).eval()


@pytest.mark.parametrize("rounding,k_hidden", [("round", 3), ("floor", 2)])
def test_tiny_network_by_hand(rounding, k_hidden, tiny_net):
    """T = 4, x = (1, 0.5): input intervals 4 and 2 steps; hidden v = 0.5*4 + 0.25*2 = 2.5 steps,
    sent as 3 (round) or 2 (floor) steps in period 1; the output integrates it: score k / 4."""
    snn = TSCSNN(trace(tiny_net, (2,)), T=4, rounding=rounding, ann_ops=3)
    assert snn.window_steps == 2 * 4 + 1   # two periods plus the step of the last off spike
    x = np.array([[1.0, 0.5], [0.0, 0.0]])
    res = snn.run(x, progress=False)
    np.testing.assert_allclose(res.scores[:, 0], [k_hidden / 4, 0.0], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(res.layer_spikes["input"], [4, 0])
    np.testing.assert_array_equal(res.layer_spikes["0"], [2, 0])
    # one memory access and one addition per spike and synapse (fan-out 1 everywhere)
    np.testing.assert_array_equal(res.extras["memory_accesses"], [6, 0])
    np.testing.assert_array_equal(res.extras["synaptic_additions"], [6, 0])
    np.testing.assert_array_equal(res.extras["neuron_additions"], [8, 8])  # 2 neurons x 4 steps
    # spike steps (window-local), from Brian2's spike monitors
    spec = tsc_network_spec(snn.graph, T=4, windows=2, rounding=rounding, x=x, monitor_spikes=True)
    rec = biosnn.get_backend("runtime").build(spec).run(progress=False)
    steps = {p: np.rint(rec.spikes[p].times / (DT_MS * 1e-3)).astype(int) for p in ("input", "L1")}
    assert sorted(zip(rec.spikes["input"].indices, steps["input"])) == [(0, 0), (0, 4), (1, 0), (1, 2)]
    assert sorted(steps["L1"]) == [4, 4 + k_hidden]


def _spikes_by_unit(rec, pop, window, n):
    """{(sample, unit): (on step, off step)} from a spike monitor (window-local steps; the run's
    final step, which only lets the monitors read the last window, starts a window ``n`` and is left out)."""
    st = rec.spikes[pop]
    step = np.rint(st.times / (DT_MS * 1e-3)).astype(np.int64)
    out: dict = {}
    for s, u in zip(step, st.indices):
        if s // window < n:
            out.setdefault((int(s // window), int(u)), []).append(int(s % window))
    assert all(len(v) == 2 for v in out.values()), "every active unit spikes exactly twice"
    return {k: tuple(v) for k, v in out.items()}


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_brian2_spike_steps_equal_reference(pool, digits):
    """Every on and off spike of every layer is at the step the reference computes; scores agree."""
    x, _, xt, _ = digits
    snn = biosnn.convert(_cnn(pool), "tsc", calibration=x[:200], input_shape=(1, 8, 8), T=8,
                         normalization="max")
    n = 5
    xs = xt[:n].reshape(n, -1) / snn.graph.input_scale
    spec = tsc_network_spec(snn.graph, T=8, windows=n, x=xs, monitor_spikes=True)
    rec = biosnn.get_backend("runtime").build(spec).run(progress=False)
    ref = snn.reference(xt[:n], record=True)
    pops = snn.layer_populations()
    for layer, pop in pops.items():
        if snn.schedule.roles[layer] == "readout":
            continue
        got = _spikes_by_unit(rec, pop, snn.window_steps, n)
        want = {}
        for s in range(n):
            units, on, off = ref.spike_steps(layer, s)
            want.update({(s, int(u)): (int(a), int(b)) for u, a, b in zip(units, on, off)})
        assert got == want, f"layer {layer}"
    v_last = rec.states[pops[snn.graph.output]]["v_last"].values[1:n + 1]
    np.testing.assert_allclose(v_last / 8, ref.scores, rtol=1e-12, atol=1e-12)
    # the batched SNN.run gives the same figures
    res = snn.run(xt[:n], batch_size=3, progress=False)
    np.testing.assert_array_equal(res.predictions, ref.predictions)
    for layer in ref.layer_spikes:
        np.testing.assert_array_equal(res.layer_spikes[layer], ref.layer_spikes[layer])
        np.testing.assert_array_equal(res.layer_synops[layer], ref.layer_events[layer])
    np.testing.assert_array_equal(res.extras["memory_accesses"], ref.memory_accesses)
    np.testing.assert_array_equal(res.extras["additions"], ref.additions)


def test_max_pool_gate_is_exact_max(digits):
    """The gate's interval is the longest interval in its window (the max of the quantised values)."""
    x, _, xt, _ = digits
    snn = biosnn.convert(_cnn("max"), "tsc", calibration=x[:200], input_shape=(1, 8, 8), T=16)
    ref = snn.reference(xt[:20], record=True)
    k_conv = ref.steps["0"].reshape(20, 4, 8, 8)
    expected = k_conv.reshape(20, 4, 4, 2, 4, 2).max(axis=(3, 5)).reshape(20, -1)
    np.testing.assert_array_equal(ref.steps["2"], expected)


def test_at_most_two_memory_accesses_per_synapse(digits):
    """Memory accesses <= 2 x synapses; = 2 x synapses when every unit is active (all-ones input)."""
    x, _, _, _ = digits
    snn = biosnn.convert(_cnn("avg"), "tsc", calibration=x[:200], input_shape=(1, 8, 8), T=8)
    synapses = {}
    for proj in snn.spec.projections:
        if proj.target != "meter":
            synapses[proj.source] = synapses.get(proj.source, 0) + len(expand_projection(snn.spec, proj).i)
    res = snn.run(np.concatenate([x[:3], np.ones((1, 1, 8, 8))]), progress=False)
    pops = snn.layer_populations()
    for layer, events in res.layer_synops.items():
        assert (events <= 2 * synapses[pops[layer]]).all()
    assert res.layer_synops["input"][-1] == 2 * synapses["input"]
    n_in = snn.graph.input.size
    assert res.layer_spikes["input"][-1] == 2 * n_in


def _row_abs_sums(layer) -> float:
    """Largest sum of |w| over one output unit's synapses (the map's infinity norm)."""
    c = layer_connections(layer)
    return float(np.bincount(c.j, weights=np.abs(c.weights), minlength=layer.size).max())


@pytest.mark.parametrize("rounding", ["round", "floor"])
def test_quantisation_error_bound_and_convergence(rounding, digits):
    """With max normalisation on the evaluated samples nothing saturates, so every layer's value is
    off by at most ||W||_inf * (error of its input) + (1/2 or 1) / T; the bound holds and the error
    shrinks with T."""
    _, _, xt, _ = digits
    xs = xt[:60]
    errors = []
    for T in (4, 16, 64):
        snn = biosnn.convert(_cnn("avg", seed=3), "tsc", calibration=xs, input_shape=(1, 8, 8), T=T,
                             normalization="max", rounding=rounding)
        g = snn.graph
        step = (0.5 if rounding == "round" else 1.0) / T
        bound = step                             # input
        for layer in g.layers[1:]:
            bound = _row_abs_sums(layer) * bound + (step if layer.name != g.output else 0.0)
        ann = forward_numpy(g, xs)[g.output]
        err = np.abs(simulate_tsc(g, xs, T, rounding=rounding).scores - ann).max()
        assert err <= bound, (T, err, bound)
        errors.append(err)
    assert errors[0] > errors[1] > errors[2]


def test_trained_cnn_agrees_with_ann(digits):
    """A trained digits CNN: agreement with the ANN grows with T and reaches 98 % at T = 64 (reference on
    all 450 test images); Brian2 equals the reference on 30 of them."""
    from biosnn.datasets import train_classifier
    from biosnn.demo import digits_cnn
    x, y, xt, yt = digits
    model = train_classifier(digits_cnn(), x, y, epochs=15, lr=1e-2, batch_size=64, seed=0)
    with torch.no_grad():
        ann = model(torch.as_tensor(xt)).argmax(1).numpy()
    agree = {}
    for T in (4, 16, 64):
        snn = biosnn.convert(biosnn.prepare(model, "tsc"), "tsc", calibration=x[:500], input_shape=(1, 8, 8), T=T)
        agree[T] = float(np.mean(snn.reference(xt).predictions == ann))
    assert agree[4] < agree[16] < agree[64] and agree[64] >= 0.98
    snn = biosnn.convert(model, "tsc", calibration=x[:500], input_shape=(1, 8, 8), T=16)
    res = snn.run(xt[:30], batch_size=30, progress=False)
    ref = snn.reference(xt[:30])
    np.testing.assert_array_equal(res.predictions, ref.predictions)
    np.testing.assert_allclose(res.scores, ref.scores, rtol=1e-12, atol=1e-12)
    assert res.agreement(ann[:30]) >= 0.9
    # fewer synaptic additions than rate coding with as many steps per layer (T = 64, exact rate reference)
    rate = biosnn.convert(model, "rate", calibration=x[:500], input_shape=(1, 8, 8), T=64)
    counts = simulate_rate(rate.graph, xt[:30], 64, readout="potential").counts
    rate_adds = synops({k: c for k, c in counts.items() if k != rate.graph.output}, rate.graph)
    assert rate_adds.mean() > 2 * res.extras["synaptic_additions"].mean()


def test_residual_block_equals_reference(digits, residual_block):
    """A residual add integrates over the periods of both of its sources."""
    x, _, xt, _ = digits
    snn = biosnn.convert(residual_block, "tsc", calibration=x[:200], input_shape=(1, 8, 8), T=8)
    add = [n for n, r in snn.schedule.roles.items() if r == "neuron" and snn.graph[n].op == "add"][0]
    assert snn.schedule.integrate[add] == (8, 24)   # periods of h (1) and of c1 (2)
    res = snn.run(xt[:4], progress=False)
    ref = snn.reference(xt[:4])
    np.testing.assert_allclose(res.scores, ref.scores, rtol=1e-12, atol=1e-12)
    for layer in ref.layer_spikes:
        np.testing.assert_array_equal(res.layer_spikes[layer], ref.layer_spikes[layer])


def test_errors_name_the_problem(digits):
    x = digits[0]
    with pytest.raises(ConversionError, match="spike-norm.*does not apply"):
        biosnn.convert(_cnn("avg"), "tsc", calibration=x[:10], input_shape=(1, 8, 8), normalization="spike-norm")
    with pytest.raises(ConversionError, match="rounding must be one of"):
        biosnn.convert(_cnn("avg"), "tsc", calibration=x[:10], input_shape=(1, 8, 8), rounding="ceil")
    with pytest.raises(ConversionError, match="T .* positive integer"):
        biosnn.convert(_cnn("avg"), "tsc", calibration=x[:10], input_shape=(1, 8, 8), T=0)
    with pytest.raises(ConversionError, match="unknown parameters \\['seed'\\]"):
        biosnn.convert(_cnn("avg"), "tsc", calibration=x[:10], input_shape=(1, 8, 8), seed=1)
    pool_out = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    with pytest.raises(ConversionError, match="output layer .* max pool"):
        tsc_schedule(trace(pool_out, (1, 8, 8)), 8)
    snn = biosnn.convert(_cnn("avg"), "tsc", calibration=x[:10], input_shape=(1, 8, 8), T=4)
    with pytest.raises(ConversionError, match=r"negative values \(down to -0.5\).*>= 0"):
        snn.run(x[:2] - 0.5, progress=False)
    with pytest.raises(ConversionError, match="x must have shape"):
        snn.run(np.zeros((2, 1, 7, 7)), progress=False)


@pytest.mark.standalone
def test_cpp_standalone_equals_reference(digits, build_cache):
    x, _, xt, _ = digits
    snn = biosnn.convert(_cnn("max"), "tsc", calibration=x[:200], input_shape=(1, 8, 8), T=8)
    sa = snn.run(xt[:7], backend="cpp_standalone", batch_size=4, progress=False, cache_dir=build_cache)
    ref = snn.reference(xt[:7])
    np.testing.assert_array_equal(sa.predictions, ref.predictions)
    np.testing.assert_allclose(sa.scores, ref.scores, rtol=1e-12, atol=1e-12)
    for layer in ref.layer_spikes:
        np.testing.assert_array_equal(sa.layer_spikes[layer], ref.layer_spikes[layer])
    np.testing.assert_array_equal(sa.extras["memory_accesses"], ref.memory_accesses)
    # exact although the neuron loops of a layer's operation and thresholder ran over no neuron while idle
    # (the operation fused into the thresholder's loop: biosnn.backends.brian2_fused)
    directory = next(iter(snn._sim_cache.values())).directory
    code = directory / "code_objects"
    assert "_run_L1_op1_codeobject)" not in (directory / "main.cpp").read_text()
    for obj in ("L1_spike_thresholder", "input_spike_thresholder"):
        assert "biosnn_idle ? 0 : N" in (code / f"{obj}_codeobject.cpp").read_text(), obj
    assert "biosnn_idle" not in (code / "L1_op0_codeobject.cpp").read_text()   # the window-start reset


def test_convert_tsc_example(tmp_path):
    env = dict(os.environ, BIOSNN_PROGRESS="0", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "examples/convert_tsc.py", "--samples", "12", "--T", "4", "8",
                           "--rate-T", "16", "--epochs", "8"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    for key in ("ANN accuracy", "TSC T=4:", "TSC T=8:", "rate T=16:", "memory accesses", "all additions"):
        assert key in out
    agreement = float(out.split("TSC T=8:")[1].split("agreement")[1].split("%")[0])
    assert agreement > 50.0
