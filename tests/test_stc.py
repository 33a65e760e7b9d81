"""STC coding (STCSNN): decaying-threshold encoding by hand, the equivalent gradient, Brian2 == torch."""

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
import torch.nn.functional as F

import biosnn
from biosnn.codings.stc.spec import stc_plan
from biosnn.codings.stc.torch_model import STCBlock, STCNet, cab, steb, theta_table
from biosnn.datasets import accuracy, train_classifier
from biosnn.errors import ConversionError

ROOT = Path(__file__).resolve().parents[1]


def _bn_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
                         nn.Conv2d(6, 12, 3), nn.BatchNorm2d(12), nn.ReLU(), nn.Flatten(),
                         nn.Linear(12 * 2 * 2, 24), nn.ReLU(), nn.Linear(24, 10))


@pytest.fixture(scope="module")
def trained(digits):
    """A digits CNN (BatchNorm, average pooling) trained as an ANN, then fine-tuned as an STCSNN (T = 6)."""
    x, y, xt, yt = digits
    ann = train_classifier(_bn_cnn(), x, y, epochs=5, lr=3e-3, seed=0)
    stc = biosnn.prepare(ann, "stc", T=6, theta0=1.0, tau=2.0)
    direct = accuracy(stc, xt, yt)
    train_classifier(stc, x, y, epochs=1, lr=5e-4, seed=1)
    return ann, stc, direct


# ---------------------------------------------------------------------------
# encoding and accumulation by hand


def test_thresholds_and_steb_by_hand():
    """T = 4, theta0 = 1, tau = 2: theta = (1, e^-1/2, e^-1, e^-3/2) = (1, .6065, .3679, .2231)."""
    theta = theta_table(4, 1.0, 2.0)
    np.testing.assert_array_equal(theta, [1.0, math.exp(-0.5), math.exp(-1.0), math.exp(-1.5)])
    z = torch.tensor([1.7, 0.5, -0.3, 3.0, 0.0], dtype=torch.float64)
    s = steb(z, torch.tensor(theta))
    # 1.7: fires at t=0 (0.7 left), t=1 (0.0935 left); 0.5: only at t=2 (0.1321 < 0.2231 left);
    # -0.3 and 0: never; 3.0 > sum(theta) = 2.1975: every step (saturated)
    expected = [[1, 0, 0, 1, 0], [1, 0, 0, 1, 0], [0, 1, 0, 1, 0], [0, 0, 0, 1, 0]]
    np.testing.assert_array_equal(s.numpy(), expected)


@pytest.mark.parametrize("T,theta0", [(4, 1.0), (8, 1.0), (6, 0.4), (12, 2.0)])
def test_decoding_error_is_below_the_last_threshold(T, theta0):
    """With tau = 2 (threshold ratio e^-1/2 > 1/2), 0 <= z - sum_t theta_t s_t < theta_{T-1} on [0, sum(theta))."""
    theta = theta_table(T, theta0, 2.0)
    top = theta.sum()
    z = torch.linspace(0, 1.5 * top, 30001, dtype=torch.float64)
    q = (steb(z, torch.tensor(theta)) * torch.tensor(theta)[:, None]).sum(0)
    inside = z < top
    err = (z - q)[inside]
    assert err.min() >= 0 and err.max() < theta[-1]
    above = z > top * (1 + 1e-12)  # saturation: every step fires (at z = top rounding may leave one out)
    np.testing.assert_allclose(q[above], top, rtol=1e-15)
    assert bool(torch.all(q[1:] >= q[:-1] - 1e-15))  # monotone (up to the rounding of the sum at saturation)


def test_cab_by_hand():
    currents = torch.tensor([[[1.0]], [[2.0]], [[3.0]]], dtype=torch.float64)  # (T, N, C)
    out = cab(currents, torch.tensor([1.0, 0.5, 0.25], dtype=torch.float64), torch.tensor([0.1], dtype=torch.float64))
    assert out.item() == 0.1 + 1.0 + 1.0 + 0.75


def test_block_forward_is_exact_and_backward_is_relu_plus_linear():
    """Forward: real STEB + linear + CAB; backward: exactly the gradient of linear(relu(z)) (paper Sec. 3.3)."""
    torch.manual_seed(3)
    layer = nn.Linear(5, 3).double()
    theta = theta_table(8, 1.0, 2.0)
    block = STCBlock(nn.Sequential(), layer, theta)
    z = (torch.randn(4, 5, dtype=torch.float64) * 1.5).requires_grad_()
    out = block(z)
    th = torch.tensor(theta)
    s = steb(z.detach(), th)
    manual = layer.bias.detach().clone().expand(4, 3)
    for t in range(8):
        manual = manual + F.linear(s[t], layer.weight.detach()) * th[t]
    assert torch.equal(out.detach(), manual)
    g = torch.randn(4, 3, dtype=torch.float64)
    (out * g).sum().backward()
    grads = (z.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone())
    z2 = z.detach().clone().requires_grad_()
    layer.zero_grad()
    (F.linear(torch.relu(z2), layer.weight, layer.bias) * g).sum().backward()
    for a, b in zip(grads, (z2.grad, layer.weight.grad, layer.bias.grad)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_tiny_network_by_hand_in_brian2(tmp_path):
    """x = 0.85 -> z = 2 x = 1.7 -> spikes at t = 0, 1 (T = 4) -> out = 0.25 + 0.5 (1 + e^-1/2)."""
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1))
    with torch.no_grad():
        model[0].weight.fill_(2.0)
        model[0].bias.zero_()
        model[2].weight.fill_(0.5)
        model[2].bias.fill_(0.25)
    snn = biosnn.convert(model, "stc", calibration=np.array([[0.85]]), input_shape=(1,), T=4,
                         theta0=1.0)  # an explicit theta0: the weights are not rescaled from the data
    assert snn.window_steps == 4  # one STEB (the hidden layer), analog first layer
    res = snn.run(np.array([[0.85], [-1.0]]), progress=False)
    np.testing.assert_array_equal(res.layer_spikes["0"], [2, 0])
    np.testing.assert_array_equal(res.layer_synops["0"], [2, 0])
    np.testing.assert_array_equal(res.input_events, [1, 1])  # the analog input sends every non-zero value once (signed)
    assert res.scores[0, 0] == 0.25 + 0.5 * 1.0 + 0.5 * math.exp(-0.5)
    assert res.scores[1, 0] == 0.25
    np.testing.assert_array_equal(res.extras["cab_macs"], [4, 4])
    assert snn.saturation == {"0": 0.0}
    path = snn.save(tmp_path / "stc.yaml")  # thresholds outside a STEB's phase are inf in the timed arrays
    assert biosnn.load(path) == snn.spec


# ---------------------------------------------------------------------------
# Brian2 against the torch forward pass


def _compare(res, ref):
    np.testing.assert_allclose(res.scores, ref["scores"], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(res.predictions, ref["predictions"])
    assert set(res.layer_spikes) == set(ref["layer_spikes"])
    for name, counts in res.layer_spikes.items():
        np.testing.assert_array_equal(counts, ref["layer_spikes"][name], err_msg=f"layer {name}")


def test_fine_tuned_stcsnn_in_brian2_equals_torch(trained, digits):
    """BatchNorm + average pooling, analog first layer: Brian2 == the float64 torch forward, sample by sample."""
    x, y, xt, yt = digits
    ann, stc, direct = trained
    ann_acc = accuracy(ann, xt, yt)
    snn = biosnn.convert(stc, "stc", calibration=x[:100], input_shape=(1, 8, 8))
    assert snn.plan.steb_layers == ("0", "4", "8") and snn.window_steps == 18
    ref = snn.reference(xt)
    # the prepared model itself (float64, BatchNorm not folded) gives the same scores
    net = stc.copy_with().double().eval()
    with torch.no_grad():
        own = net(torch.as_tensor(xt, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(own, ref["scores"], rtol=0, atol=1e-9)
    assert np.mean(ref["predictions"] == yt) >= ann_acc - 0.03 > 0.8
    assert direct > 0.5
    res = snn.run(xt[:16], batch_size=16, progress=False)
    _compare(res, {k: (v[:16] if not isinstance(v, dict) else {n: c[:16] for n, c in v.items()})
                   for k, v in ref.items()})
    assert res.spikes_per_sample.min() > 0 and set(snn.saturation) == {"0", "4", "8"}


def test_spiking_input_and_composed_linear_maps(digits):
    """STEB-encoded input; conv -> conv and conv -> avgpool (analog, after the CAB) composed into one synapse."""
    torch.manual_seed(2)
    x, _, xt, _ = digits
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                          nn.Conv2d(4, 6, 3, padding=1), nn.AvgPool2d(2), nn.ReLU(), nn.AvgPool2d(2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(24, 10))
    with torch.no_grad():
        for mod in model:
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                mod.weight.mul_(2.0)
    stc = biosnn.prepare(model, "stc", T=5, theta0=0.8, first_layer="spiking")
    assert len(stc.blocks) == 3
    snn = biosnn.convert(stc, "stc", calibration=x[:50], input_shape=(1, 8, 8))
    plan = snn.plan
    assert plan.steb_layers == ("input", "0", "4")
    assert [s.chain for s in plan.stages] == [("0",), ("2", "3", "4"), ("6", "9")]
    assert snn.window_steps == 15
    res = snn.run(xt[:6], batch_size=6, progress=False)
    ref = snn.reference(xt[:6])
    _compare(res, ref)
    assert res.layer_spikes["input"].min() > 0 and res.layer_spikes["4"].min() > 0


# ---------------------------------------------------------------------------
# what is not supported, and parameters


def test_unsupported_models_and_parameters(digits):
    x = digits[0][:10]
    mx = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(36, 10))
    # one rule for prepare (with or without calibration) and convert: what is fine-tuned must convert
    for call in (lambda: biosnn.prepare(mx, "stc"), lambda: biosnn.prepare(mx, "stc", calibration=x),
                 lambda: biosnn.convert(mx, "stc", calibration=x, input_shape=(1, 8, 8))):
        with pytest.raises(ConversionError, match="is a max pooling.*prepare refuses it too.*Fix: use nn.AvgPool2d"):
            call()

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.fc = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 10)

        def forward(self, inp):
            h = torch.relu(self.a(inp.flatten(1)))
            return self.fc(torch.relu(self.b(h)) + h)

    with pytest.raises(ConversionError, match="'add' in Residual.forward.. does not continue a simple chain"):
        biosnn.prepare(Residual(), "stc")
    with pytest.raises(ConversionError, match="simple chain"):
        biosnn.convert(Residual(), "stc", calibration=x, input_shape=(1, 8, 8))
    with pytest.raises(ConversionError, match="BatchNorm right after"):
        biosnn.prepare(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 2)), "stc")
    with pytest.raises(ConversionError, match="ends with a ReLU"):
        biosnn.prepare(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2), nn.ReLU()), "stc")
    with pytest.raises(ConversionError, match="nothing to encode"):
        biosnn.prepare(nn.Sequential(nn.Linear(4, 2)), "stc")
    with pytest.raises(ConversionError, match="not supported by the stc coding"):
        biosnn.prepare(nn.Sequential(nn.Linear(4, 4), nn.Sigmoid(), nn.Linear(4, 2)), "stc")
    with pytest.raises(ConversionError, match="T .* positive integer"):
        biosnn.prepare(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), "stc", T=0)
    with pytest.raises(ConversionError, match="theta0 must be a positive finite"):
        biosnn.prepare(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), "stc", theta0=-1.0)
    with pytest.raises(ConversionError, match="first_layer must be one of"):
        biosnn.prepare(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), "stc", first_layer="poisson")
    with pytest.raises(ConversionError, match="unknown parameters"):
        biosnn.prepare(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), "stc", threshold=1.0)
    small = biosnn.prepare(nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10)), "stc", T=6)
    with pytest.raises(ConversionError, match="prepared model has T=6 but convert was given T=8"):
        biosnn.convert(small, "stc", calibration=x.reshape(10, 64), input_shape=(64,), T=8)
    assert stc_plan(biosnn.convert(small, "stc", calibration=x.reshape(10, 64), input_shape=(64,)).graph).stages


def test_prepare_copies_and_rebuilds(trained):
    ann, stc, _ = trained
    again = biosnn.prepare(stc, "stc", T=12, theta0=0.8)
    assert isinstance(again, STCNet) and again.settings == {"T": 12, "theta0": 0.8, "tau": 2.0,
                                                            "first_layer": "analog"}
    assert again.ann is not stc.ann
    torch.testing.assert_close(again.ann[0].weight, stc.ann[0].weight, rtol=0, atol=0)
    assert stc.blocks[0].layer is stc.ann[4]  # the STCNet trains the modules of its own ANN


# ---------------------------------------------------------------------------
# compiled, and the example


@pytest.mark.standalone
def test_cpp_standalone_equals_torch(digits, build_cache):
    """Compiled C++ (a small MLP, STEB-encoded input: few code objects to compile) == the torch forward pass."""
    x, y, xt, _ = digits
    torch.manual_seed(4)
    mlp = train_classifier(nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10)), x, y,
                           epochs=3, lr=3e-3)
    stc = biosnn.prepare(mlp, "stc", T=5, theta0=0.8, first_layer="spiking")
    snn = biosnn.convert(stc, "stc", calibration=x[:50], input_shape=(1, 8, 8), name="stc_mlp")
    res = snn.run(xt[:10], backend="cpp_standalone", batch_size=5, progress=False, cache_dir=build_cache)
    _compare(res, snn.reference(xt[:10]))
    assert res.layer_spikes["input"].min() > 0 and res.layer_spikes["1"].min() > 0


def test_convert_stc_example():
    env = dict(os.environ, BIOSNN_PROGRESS="0", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "examples/convert_stc.py", "--dataset", "digits", "--epochs", "3",
                           "--finetune-epochs", "1", "--T", "4", "--backend", "runtime", "--brian2-samples", "8",
                           "--test-samples", "200"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    out = proc.stdout
    assert "predictions equal True, spike counts equal True" in out
    ann = float(out.split("ANN accuracy")[1].split("%")[0])
    stc = float(out.split("STCSNN accuracy  ")[1].split("%")[0])
    assert ann > 80.0 and stc > 60.0
