"""Temporal pattern coding: bit-serial patterns by hand, Brian2 against the exact numpy reference,
the reference against the quantised torch model (k = n and LSB truncation k < n), prepare/convert."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import biosnn
from biosnn.backends.registry import get_backend
from biosnn.codings.tpc import coding as tpc
from biosnn.frontends.torch_graph import trace
from biosnn.codings.tpc.reference import build_plan, emit_pattern, popcount, simulate_tpc, truncate
from biosnn.datasets import load_digits, train_classifier
from biosnn.errors import ConversionError
from biosnn.spec import model as m

ROOT = Path(__file__).resolve().parents[1]


def test_emit_pattern_gives_the_binary_digits_msb_first():
    """Threshold 2**(n-1-t), reset by subtraction: the spikes are the digits of clip(floor(r), 0, 2**n - 1)."""
    bits = 5
    r = np.concatenate([np.arange(32) + 0.5, np.arange(32) + 0.999, [-3.0, -0.25, 31.5, 32.0, 100.0]])
    code = np.clip(np.floor(r), 0, 31).astype(int)
    digits = (code[:, None] >> np.arange(4, -1, -1)) & 1
    np.testing.assert_array_equal(emit_pattern(r, bits), digits.astype(bool))
    # k < n steps: the k most significant digits, i.e. the truncated code
    k3 = emit_pattern(r, bits, 3)
    np.testing.assert_array_equal(k3, digits[:, :3].astype(bool))
    np.testing.assert_array_equal(k3 @ (2 ** np.arange(4, 1, -1)), truncate(code, 5, 3))
    np.testing.assert_array_equal(popcount(code, 5), digits.sum(axis=1))


def _tiny_plan(steps):
    """input (2) -> linear [0.5, 0.5] + ReLU -> linear [2]; scales 1: Delta = 1/7 at 3 bits."""
    model = nn.Sequential(nn.Linear(2, 1, bias=False), nn.ReLU(), nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        model[0].weight[:] = torch.tensor([[0.5, 0.5]])
        model[2].weight[:] = torch.tensor([[2.0]])
    return build_plan(trace(model, (2,)), {"input": 1.0, "0": 1.0}, bits=3, steps=steps)


def test_tiny_network_by_hand():
    """x = (1, 3/7): codes 7 = 111 and 3 = 011; hidden u = 3.5 + 1.5 + 1/2 -> code 5 = 101; score 2 * 5/7.

    The input emits in window 0 (steps 0-2), the hidden layer in window 1 (steps 3-5), MSB first.
    """
    plan = _tiny_plan(3)
    snn = tpc.TPCSNN(plan, ann_ops=3)
    spec = snn.spec_for(2)  # two windows: the sample, then an empty one while the hidden layer emits
    spec = spec.replace(monitors=spec.monitors + (m.SpikeMonitor("input"), m.SpikeMonitor("L1")))
    rec = get_backend("runtime").build(spec).run(overrides={"x_in": np.array([[7.0, 3.0], [0.0, 0.0]])},
                                                 progress=False)
    steps = {p: (np.rint(rec.spikes[p].times / 1e-3).astype(int), rec.spikes[p].indices) for p in ("input", "L1")}
    assert sorted(zip(steps["input"][0], steps["input"][1])) == [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1)]
    assert sorted(zip(steps["L1"][0], steps["L1"][1])) == [(3, 0), (5, 0)]

    x = np.array([[1.0, 3 / 7], [0.0, 0.0]])
    res = snn.run(x, progress=False)
    ref = snn.reference(x)
    np.testing.assert_array_equal(ref.codes["0"][:, 0], [5, 0])
    np.testing.assert_allclose(res.scores[:, 0], [10 / 7, 0.0], rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(res.scores, ref.scores)
    np.testing.assert_array_equal(res.layer_spikes["input"], [5, 0])
    np.testing.assert_array_equal(res.layer_spikes["0"], [2, 0])
    np.testing.assert_array_equal(res.layer_synops["input"], [5, 0])  # fan-out 1
    assert snn.latency_steps == 6 and snn.window_steps == 3


def test_tiny_network_truncated_by_hand():
    """k = 2 of 3 bits: the input sends 110 and 010 (6 and 2); u = 3 + 1 + 1/2 -> code 4 = 100; score 2 * 4/7."""
    snn = tpc.TPCSNN(_tiny_plan(2), ann_ops=3)
    res = snn.run(np.array([[1.0, 3 / 7]]), progress=False)
    np.testing.assert_allclose(res.scores[:, 0], [8 / 7], rtol=1e-12)
    np.testing.assert_array_equal(res.layer_spikes["input"], [3])
    np.testing.assert_array_equal(res.layer_spikes["0"], [1])


def _cnn():
    """Max pooling and average pooling stages, 8x8 input."""
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                         nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 10))


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits("train")
    xt, yt = load_digits("test")
    model = train_classifier(_cnn(), x, y, epochs=6, batch_size=32)
    qat = biosnn.prepare(model, "tpc", bits=5)
    train_classifier(qat, x[:600], y[:600], epochs=1, lr=2e-4, batch_size=32)  # sets the scales
    return model, qat.eval(), x, y, xt, yt


def _assert_equal_to_reference(res, ref, n):
    np.testing.assert_array_equal(res.scores, ref.scores[:n])
    np.testing.assert_array_equal(res.predictions, ref.predictions[:n])
    assert set(res.layer_spikes) == set(ref.layer_spikes)
    for name in ref.layer_spikes:
        np.testing.assert_array_equal(res.layer_spikes[name], ref.layer_spikes[name][:n], err_msg=name)
        np.testing.assert_array_equal(res.layer_synops[name], ref.layer_synops[name][:n], err_msg=name)


def test_brian2_equals_reference_runtime(digits):
    """k = n = 5: scores, spikes and synaptic operations per layer and sample equal the reference bit for bit
    (11 samples in pipeline runs of 4, 4 and 3 samples)."""
    _, qat, x, _, xt, _ = digits
    snn = biosnn.convert(qat, "tpc", calibration=x[:100], input_shape=(1, 8, 8))
    assert [s.op for s in snn.plan.stages] == ["conv2d", "maxpool2d", "conv2d", "avgpool2d", "linear", "linear"]
    scales = {n: float(q.scale) for n, q in qat.quantizers()}
    assert set(snn.plan.scales.values()) == set(scales.values())  # the fine-tuned scales are used
    res = snn.run(xt[:11], batch_size=4, progress=False)
    ref = snn.reference(xt[:11])
    _assert_equal_to_reference(res, ref, 11)
    assert res.spikes_per_sample.min() > 0


@pytest.mark.standalone
def test_brian2_equals_reference_cpp_standalone_truncated(digits, build_cache):
    """k = 3 < n = 5 (two LSBs dropped) on cpp_standalone (a small conv / max-pool / linear network, so that
    the one compilation stays short): equal to the truncated reference."""
    _, _, x, _, xt, _ = digits
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))
    snn = biosnn.convert(model, "tpc", calibration=x[:100], input_shape=(1, 8, 8), bits=5, steps=3)
    res = snn.run(xt[:9], backend="cpp_standalone", batch_size=4, progress=False, cache_dir=build_cache)
    ref = snn.reference(xt[:9])
    _assert_equal_to_reference(res, ref, 9)
    assert res.layer_spikes["2"].min() > 0  # the max-pool stage is active


def _quantised_ann(qat, x, steps=None):
    model = copy.deepcopy(qat).double().eval()
    for _, q in model.quantizers():
        q.steps = q.steps if steps is None else steps
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(x, dtype=np.float64))).numpy()


@pytest.mark.parametrize("steps", [5, 3])
def test_reference_equals_quantised_torch_model(digits, steps):
    """The reference (fixed-point, code units) equals the prepared torch model in float64 on all test digits,
    for k = n and for LSB truncation k < n."""
    _, qat, x, _, xt, _ = digits
    snn = biosnn.convert(qat, "tpc", calibration=x[:100], input_shape=(1, 8, 8), steps=steps)
    ref = snn.reference(xt)
    out = _quantised_ann(qat, xt, steps)
    np.testing.assert_array_equal(ref.predictions, out.argmax(axis=1))
    np.testing.assert_allclose(ref.scores, out, rtol=0, atol=1e-9)
    if steps < 5:  # truncation drops the 2 LSBs of every transmitted code
        full = simulate_tpc(build_plan(snn.plan.graph.replace_layers(input_scale=1.0), snn.plan.scales, 5), xt)
        np.testing.assert_array_equal(ref.codes["input"], truncate(full.codes["input"], 5, 3))
        assert all(np.all(c % 4 == 0) for c in ref.codes.values())
        assert ref.layer_spikes["input"].sum() < full.layer_spikes["input"].sum()


def test_fixed_point_weights_are_exact_and_close(digits):
    """W' = W * Delta_pre / Delta_L on a 2**-F grid, within half a grid step; the bias carries the 1/2 offset."""
    model, _, x, _, _, _ = digits
    plan = biosnn.convert(model, "tpc", calibration=x[:100], input_shape=(1, 8, 8), bits=6).plan
    first = plan.stages[0]
    grid = np.asarray(first.conns.weights) * 2.0 ** first.frac_bits
    np.testing.assert_array_equal(grid, np.rint(grid))
    half = 2.0 ** -(first.frac_bits + 1)
    kernel = model[0].weight.detach().double().numpy().reshape(-1)
    expected = kernel[np.asarray(first.conns.kernel_index)] * (plan.input_step / first.step)
    np.testing.assert_allclose(first.conns.weights, expected, rtol=0, atol=half)
    bias = np.repeat(model[0].bias.detach().double().numpy() / first.step, 64)
    np.testing.assert_allclose(first.bias - 0.5, bias, rtol=0, atol=half)
    assert plan.stages[-1].bias[0] != 0 and 30 <= first.frac_bits <= 52
    assert first.step == pytest.approx(first.scale / 63) and plan.input_step == pytest.approx(plan.input_scale / 63)


def test_quantizer_forward_backward_and_observer():
    q = tpc.QuantAct(bits=2, steps=2)
    q.scale.fill_(3.0)  # Delta = 1
    x = torch.tensor([-1.0, 0.4, 0.5, 1.49, 2.5, 5.0], requires_grad=True)
    y = q.eval()(x)
    np.testing.assert_array_equal(y.detach().numpy(), [0, 0, 1, 1, 3, 3])
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 1, 1, 1, 1, 0])  # straight through inside (0, scale)
    q.steps = 1  # one step of two bits: codes 0 or 2
    np.testing.assert_array_equal(q(x).detach().numpy(), [0, 0, 0, 0, 2, 2])
    obs = tpc.QuantAct(bits=4, steps=4, percentile=100.0).train()
    obs(torch.tensor([0.0, 1.0, 2.0, -5.0]))
    assert float(obs.scale) == pytest.approx(2.0)
    obs(torch.tensor([4.0]))
    assert float(obs.scale) == pytest.approx(0.9 * 2.0 + 0.1 * 4.0)  # running average
    with pytest.raises(ConversionError, match="no scale yet"):
        tpc.QuantAct(bits=4, steps=4).eval()(x)


class _Functional(nn.Module):
    """One nn.ReLU module used twice and a functional relu: each site gets its own quantiser."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 32), nn.Linear(32, 24), nn.Linear(24, 16)
        self.out = nn.Linear(16, 10)
        self.act = nn.ReLU()

    def forward(self, x):
        x = self.act(self.fc1(torch.flatten(x, 1)))
        x = self.act(self.fc2(x))
        return self.out(F.relu(self.fc3(x)))


def test_prepare_quantises_every_relu_site_and_calibrates(digits):
    _, _, x, y, xt, _ = digits
    torch.manual_seed(0)
    model = train_classifier(_Functional(), x, y, epochs=2, batch_size=32)
    qat = biosnn.prepare(model, "tpc", bits=6)
    names = [n for n, _ in qat.quantizers()]
    assert len(names) == 4 and names[0] == "input"
    assert all(not q.calibrated for _, q in qat.quantizers())
    tpc.calibrate(qat, x[:200])
    scales = [float(q.scale) for _, q in qat.quantizers()]
    assert len(set(scales[1:])) == 3 and min(scales) > 0
    snn = biosnn.convert(qat, "tpc", calibration=x[:200], input_shape=(1, 8, 8))
    assert [snn.plan.scales[k] for k in ("input", "fc1", "fc2", "fc3")] == scales
    ref = snn.reference(xt)
    out = _quantised_ann(qat, xt)
    np.testing.assert_array_equal(ref.predictions, out.argmax(axis=1))
    np.testing.assert_allclose(ref.scores, out, rtol=0, atol=1e-9)
    # a plain model converts directly (prepared and calibrated inside): the same network
    direct = biosnn.convert(model, "tpc", calibration=x[:200], input_shape=(1, 8, 8), bits=6)
    assert direct.plan.scales == snn.plan.scales


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.c, self.b, self.out = nn.Linear(64, 32), nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 10)

    def forward(self, x):
        h = torch.relu(self.a(torch.flatten(x, 1)))
        return self.out(torch.relu(h + self.b(torch.relu(self.c(h)))))


def test_residual_addition_is_one_stage_with_aligned_windows(digits):
    """relu(h + W g(h)): the add stage reads h directly and g through W; h is one stage earlier than g, so its
    synapses delay it by one window.  The reference equals the quantised model, Brian2 equals the reference."""
    _, _, x, _, _, _ = digits
    torch.manual_seed(3)
    model = _Block()
    prepared = biosnn.prepare(model, "tpc", bits=5).eval()
    tpc.calibrate(prepared, x[:50])
    snn = biosnn.convert(prepared, "tpc", calibration=x[:50], input_shape=(1, 8, 8))
    add = [s for s in snn.plan.stages if s.op == "add"]
    assert len(add) == 1 and {si.source: si.delay for si in add[0].inputs} == {"c": 0, "a": 1}
    assert snn.plan.depth == 4
    xs = x[:40]
    ref = snn.reference(xs)
    with torch.no_grad():
        ann = prepared.double()(torch.as_tensor(xs, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(ref.scores, ann, rtol=0, atol=1e-9)
    run = snn.run(xs[:2], backend="runtime", progress=False)
    np.testing.assert_array_equal(run.scores, ref.scores[:2])
    for k in ref.layer_spikes:
        np.testing.assert_array_equal(run.layer_spikes[k], ref.layer_spikes[k][:2])
        np.testing.assert_array_equal(run.layer_synops[k], ref.layer_synops[k][:2])


def test_errors_name_the_problem(digits):
    model, qat, x, _, _, _ = digits
    conv = dict(calibration=x[:50], input_shape=(1, 8, 8))
    with pytest.raises(ConversionError, match="bits must be an integer"):
        biosnn.prepare(model, "tpc", bits=0)
    with pytest.raises(ConversionError, match="steps must be an integer in"):
        biosnn.convert(model, "tpc", bits=4, steps=5, **conv)
    with pytest.raises(ConversionError, match="prepared for bits=5"):
        biosnn.convert(qat, "tpc", bits=4, **conv)
    with pytest.raises(ConversionError, match="unknown parameters"):
        biosnn.convert(model, "tpc", T=8, **conv)
    with pytest.raises(ConversionError, match="non-negative"):
        biosnn.convert(model, "tpc", calibration=x[:50] - 0.5, input_shape=(1, 8, 8))
    with pytest.raises(ConversionError, match="final ReLU"):
        biosnn.convert(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.ReLU()), "tpc", **conv)
    with pytest.raises(ConversionError, match="percentile"):
        biosnn.prepare(model, "tpc", percentile=0)


def test_convert_tpc_example(tmp_path):
    """examples/convert_tpc.py on scikit-learn digits, Brian2 runtime."""
    env = dict(os.environ, BIOSNN_PROGRESS="0", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "examples/convert_tpc.py", "--dataset", "digits", "--bits", "4",
                           "--steps", "3", "--epochs", "2", "--finetune-epochs", "1", "--train-samples", "500",
                           "--test-samples", "20"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert "Brian2 equals the exact reference on every image: yes" in out
    assert "agreement with the quantised ANN 100.00 %" in out
    for key in ("float ANN accuracy", "TPC SNN accuracy", "synops per image", "wall time"):
        assert key in out
