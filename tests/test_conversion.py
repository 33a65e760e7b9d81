"""Converted SNNs in Brian2 against the hand-computed values, the numpy reference and the ANN."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import biosnn
from biosnn.frontends.torch_graph import trace
from biosnn.codings.rate.reference import simulate_rate
from biosnn.conversion.snn import SNN
from biosnn.errors import ConversionError


@pytest.mark.parametrize("readout", ["potential", "spikes"])
def test_tiny_network_by_hand(readout, tiny_net):
    """x = (1, 0.8), w = (0.5, 0.25): I = 0.7 per step; v = 0.7 t - count crosses 1 at t = 2, 3, 5, 6, 8, 9."""
    graph = trace(tiny_net, (2,))
    snn = SNN(graph, coding="rate", T=9, thresholds={}, input_mode="analog", readout=readout, seed=0, ann_ops=3)
    res = snn.run(np.array([[1.0, 0.8], [0.0, 0.0]]), progress=False)
    hidden = res.layer_spikes["0"]
    np.testing.assert_array_equal(hidden, [6, 0])
    np.testing.assert_array_equal(res.layer_synops["0"], [6, 0])  # fan-out 1
    if readout == "potential":
        np.testing.assert_allclose(res.scores[:, 0], [6 / 9, 0.0], rtol=1e-12)
    else:  # the output IF neuron gets 6 unit jumps: 6 spikes
        np.testing.assert_allclose(res.scores[:, 0], [6 / 9, 0.0], rtol=1e-12)
        np.testing.assert_array_equal(res.layer_spikes["2"], [6, 0])
    np.testing.assert_array_equal(res.input_events, [2, 0])  # one event per non-zero pixel per sample
    # energy: 6 synaptic operations at 0.9 pJ + 2 analog-input MACs at 4.6 pJ; the ANN does 3 MACs
    e = res.energy()
    np.testing.assert_allclose(e["snn_J"], [6 * 0.9e-12 + 2 * 4.6e-12, 0.0])
    assert e["ann_J"] == pytest.approx(3 * 4.6e-12)


def _cnn(pool: str):
    Pool = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), Pool(2), nn.Conv2d(4, 8, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 2 * 2, 16), nn.ReLU(), nn.Linear(16, 10)).eval()


def _compare_with_reference(snn, res, x):
    ref = simulate_rate(snn.graph, x, snn.T, thresholds=snn.thresholds, readout=snn.readout)
    for name, counts in res.layer_spikes.items():
        np.testing.assert_array_equal(counts, ref.counts[name].sum(axis=1), err_msg=f"layer {name}")
    np.testing.assert_allclose(res.scores, ref.scores, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(res.predictions, ref.predictions)
    return ref


@pytest.mark.parametrize("pool,readout", [("avg", "potential"), ("max", "potential"), ("max", "spikes")])
def test_brian2_equals_reference(pool, readout, digits):
    """Every layer's spike count per sample and the scores equal the numpy reference exactly."""
    x, _, xt, _ = digits
    snn = biosnn.convert(_cnn(pool), "rate", calibration=x[:200], input_shape=(1, 8, 8), T=12,
                         normalization="max", readout=readout)
    res = snn.run(xt[:12], batch_size=12, progress=False)
    _compare_with_reference(snn, res, xt[:12])
    assert res.spikes_per_sample.min() > 0


def test_residual_block_equals_reference(digits, residual_block):
    x, _, xt, _ = digits
    snn = biosnn.convert(residual_block, "rate", calibration=x[:200], input_shape=(1, 8, 8), T=10,
                         normalization="percentile")
    res = snn.run(xt[:6], progress=False)
    _compare_with_reference(snn, res, xt[:6])


def test_batch_size_does_not_change_results(digits):
    x, _, xt, _ = digits
    snn = biosnn.convert(_cnn("avg"), "rate", calibration=x[:200], input_shape=(1, 8, 8), T=8)
    a = snn.run(xt[:10], batch_size=10, progress=False)
    b = snn.run(xt[:10], batch_size=4, progress=False)  # 3 runs, the last padded
    assert (a.runs, b.runs) == (1, 3) and b.run_time_s > 0 and b.build_time_s >= 0
    np.testing.assert_array_equal(a.scores, b.scores)
    for k in a.layer_spikes:
        np.testing.assert_array_equal(a.layer_spikes[k], b.layer_spikes[k])


@pytest.mark.standalone
def test_cpp_standalone_compiles_once_and_matches_runtime(digits, build_cache):
    x, _, xt, _ = digits
    cache = build_cache
    snn = biosnn.convert(_cnn("max"), "rate", calibration=x[:200], input_shape=(1, 8, 8), T=10)
    rt = snn.run(xt[:9], batch_size=4, progress=False)
    sa = snn.run(xt[:9], backend="cpp_standalone", batch_size=4, progress=False, cache_dir=cache)
    np.testing.assert_array_equal(sa.predictions, rt.predictions)
    np.testing.assert_allclose(sa.scores, rt.scores, rtol=1e-12, atol=1e-12)
    for k in rt.layer_spikes:
        np.testing.assert_array_equal(sa.layer_spikes[k], rt.layer_spikes[k])
    # other weights, same structure: the cached binary is reused, no compilation
    from biosnn.backends import get_backend
    sim = get_backend("cpp_standalone", cache_dir=cache).build(snn.spec_for(4))
    assert sim.compiled is False


def test_save_and_load_round_trip(tmp_path, digits):
    x, _, xt, _ = digits
    snn = biosnn.convert(_cnn("avg"), "rate", calibration=x[:100], input_shape=(1, 8, 8), T=8)
    path = snn.save(tmp_path / "snn.yaml")
    assert (tmp_path / "snn.npz").exists()
    assert biosnn.load(path) == snn.spec


def test_ann_agreement_on_digits(digits):
    """A trained digits CNN and its SNN (T = 64, 99.9th percentile balancing) agree on >= 95 % of test images."""
    from biosnn.datasets import accuracy, train_classifier
    from biosnn.demo import digits_cnn
    x, y, xt, yt = digits
    model = train_classifier(digits_cnn(), x, y, epochs=40, lr=1e-2, batch_size=64, seed=0)
    assert accuracy(model, xt, yt) > 0.9
    with torch.no_grad():
        ann_pred = model(torch.as_tensor(xt[:150])).argmax(1).numpy()
    snn = biosnn.convert(biosnn.prepare(model, "rate"), "rate", calibration=x[:500], input_shape=(1, 8, 8), T=64)
    res = snn.run(xt[:150], batch_size=150, progress=False)
    assert res.agreement(ann_pred) >= 0.95
    assert res.accuracy(yt[:150]) >= accuracy(model, xt[:150], yt[:150]) - 0.04
    # MACs per real connection (padding taps excluded): a 3x3 'same' conv over n x n has (3n - 2)^2 taps
    # per channel pair; 2x2 average pooling 4 per output; the fully connected layers in x out
    conv = 1 * 8 * (3 * 8 - 2) ** 2 + 8 * 16 * (3 * 4 - 2) ** 2
    pool = 8 * 4 * 4 * 4 + 16 * 2 * 2 * 4
    assert snn.ann_ops == conv + pool + 64 * 32 + 32 * 10
    assert (res.synops_per_sample > 0).all()


def test_spike_norm_and_poisson_input(digits):
    x, _, xt, _ = digits
    snn = biosnn.convert(_cnn("avg"), "rate", calibration=x[:100], input_shape=(1, 8, 8), T=16,
                         normalization="spike-norm")
    res = snn.run(xt[:8], progress=False)
    _compare_with_reference(snn, res, xt[:8])
    assert any(abs(t - 1.0) > 1e-6 for t in snn.thresholds.values())  # thresholds balanced, not all 1
    pois = biosnn.convert(_cnn("avg"), "rate", calibration=x[:100], input_shape=(1, 8, 8), T=16,
                          input_mode="poisson", seed=3)
    r = pois.run(xt[:8], progress=False)
    assert "input" in r.layer_spikes and r.layer_spikes["input"].sum() > 0


def test_errors_name_the_problem(digits):
    x = digits[0]
    with pytest.raises(ConversionError, match="unknown coding 'ratee'.*'rate'"):
        biosnn.convert(_cnn("avg"), "ratee", calibration=x[:10], input_shape=(1, 8, 8))
    with pytest.raises(ConversionError, match="needs calibration data"):
        biosnn.convert(_cnn("avg"), "rate", input_shape=(1, 8, 8))
    with pytest.raises(ConversionError, match="Sigmoid"):
        biosnn.convert(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Sigmoid(), nn.Linear(10, 10)),
                       "rate", calibration=x[:10], input_shape=(1, 8, 8))
    snn = biosnn.convert(_cnn("avg"), "rate", calibration=x[:10], input_shape=(1, 8, 8), T=4)
    with pytest.raises(ConversionError, match="x must have shape"):
        snn.run(np.zeros((2, 1, 7, 7)), progress=False)
    with pytest.raises(ConversionError, match="batch_size"):
        snn.run(x[:2], batch_size=0, progress=False)

