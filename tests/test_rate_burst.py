"""Burst spikes of signed IF neurons for rate coding (issue 21): the rule by hand, the exact QCFS
network, Brian2 = reference, refusals."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import biosnn  # noqa: E402
from biosnn.codings.rate.reference import simulate_rate  # noqa: E402
from biosnn.errors import ConversionError  # noqa: E402
from biosnn.frontends.torch_graph import trace  # noqa: E402
from biosnn.metrics import fan_out  # noqa: E402


def test_a_burst_carries_several_spikes_of_one_sign_by_hand():
    model = nn.Sequential(nn.Linear(2, 1, bias=False), nn.ReLU(), nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        model[0].weight[:] = torch.tensor([[2.5, -1.7]])
        model[2].weight[:] = 1.0
    graph = trace(model, (2,))
    hidden = graph.names[1]
    trains = np.zeros((1, 6, 2))
    trains[0, :2, 0] = 1     # +2.5 twice
    trains[0, 3:, 1] = 1     # -1.7 three times: V(6) = 5 - 5.1 = -0.1
    kw = dict(input_mode="spikes", readout="potential", record_trains=True, signed=True)
    # B = 2, theta = 1: v 2.5 -> k 2 (v .5); 3.0 -> 2 (B; v 1); 1.0 -> 1 (v 0); -1.7 -> -2 (v .3, n 3);
    # -1.4 -> -2 (v .6, n 1); -1.1 -> -1 (n: only 1 to take back; v -.1, n 0)
    burst = simulate_rate(graph, trains, 6, burst=2, **kw)
    np.testing.assert_array_equal(burst.trains[hidden][0, :, 0], [2, 2, 1, -2, -2, -1])
    assert burst.counts[hidden].tolist() == [[0]] and burst.negative[hidden].tolist() == [[5]]
    assert burst.events[hidden].tolist() == [[10]]
    np.testing.assert_allclose(burst.scores, [[0.0]], atol=1e-12)   # sum of w * k reached the readout
    # with the cap n <= 3: 2.5 -> 2; 3.0 -> 1 (n reaches 3; v 2); 2.0, 0.3: capped / nothing; -1.4 -> -2; -1.1 -> -1
    capped = simulate_rate(graph, trains, 6, burst=2, max_count=3, **kw)
    np.testing.assert_array_equal(capped.trains[hidden][0, :, 0], [2, 1, 0, 0, -2, -1])
    assert capped.events[hidden].tolist() == [[6]]
    # one spike per step lags: it ends with n = 1 although V = -0.1 (burst=1 is the same neuron)
    for one in (simulate_rate(graph, trains, 6, **kw), simulate_rate(graph, trains, 6, burst=1, **kw)):
        np.testing.assert_array_equal(one.trains[hidden][0, :, 0], [1, 1, 1, 0, -1, -1])


def _depthwise(scale=3.0):
    """Conv, a depthwise conv with large (BN-folded-like) weights, average pool, 1x1 conv, linear."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1, groups=4),
                          nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 6, 1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(6 * 16, 5)).eval()
    with torch.no_grad():
        model[2].weight *= scale
    return model


_X = torch.rand((30, 1, 8, 8), generator=torch.Generator().manual_seed(1)) - 0.2


@pytest.mark.parametrize("k", [1, 2])
def test_bursts_of_up_to_L_spikes_reproduce_the_qcfs_network(k):
    L = 4
    q = biosnn.prepare(_depthwise(), "rate", levels=L)
    kw = dict(calibration=_X, input_shape=(1, 8, 8), T=k * L, signed=True, match_levels=True)
    with torch.no_grad():
        ann = q(_X).numpy().astype(np.float64)
    exact = biosnn.convert(q, "rate", burst=L, **kw).reference(_X.numpy())
    one = biosnn.convert(q, "rate", **kw).reference(_X.numpy())
    # n = clip(floor(V / theta), 0, L) after every step: the potential readout is the QCFS output up to
    # one constant factor (the output layer's scale) and float32 rounding of the ANN
    c = float(np.sum(exact.scores * ann) / np.sum(ann * ann))
    np.testing.assert_allclose(exact.scores, c * ann, rtol=0, atol=1e-5 * np.abs(exact.scores).max())
    assert np.abs(one.scores - c * ann).max() > 1e-3 * np.abs(one.scores).max(), "one spike per step lags"
    np.testing.assert_array_equal(exact.predictions, ann.argmax(1))


@pytest.fixture(scope="module")
def burst_snn():
    q = biosnn.prepare(_depthwise(), "rate", levels=4)
    snn = biosnn.convert(q, "rate", calibration=_X, input_shape=(1, 8, 8), T=4, signed=True, match_levels=True,
                         burst=2, fold_pooling=False)
    x = _X[:3].numpy()
    return snn, x, snn.reference(x, record_trains=True)


def _same_as_reference(snn, res, ref, n):
    np.testing.assert_allclose(res.scores, ref.scores, rtol=0, atol=1e-9)
    fo = fan_out(snn.graph)
    assert set(res.layer_spikes) == set(ref.events) - {snn.graph.output}
    for name, events in ref.events.items():
        if name in res.layer_spikes:
            np.testing.assert_array_equal(res.layer_spikes[name], events.reshape(n, -1).sum(1), err_msg=name)
            np.testing.assert_allclose(res.layer_synops[name], (events.reshape(n, -1) * fo[name]).sum(1),
                                       err_msg=name)


def test_burst_brian2_runtime_equals_the_reference(burst_snn):
    snn, x, ref = burst_snn
    trains = np.concatenate([t.reshape(len(x), -1) for n, t in ref.trains.items() if n != snn.graph.output], 1)
    assert trains.max() >= 2 and trains.min() <= -2, "the test needs bursts of either sign"
    assert "avgpool2d" in {layer.op for layer in snn.graph}
    _same_as_reference(snn, snn.run(x, backend="runtime", progress=False), ref, len(x))


def test_burst_cpp_standalone_equals_the_reference(burst_snn, build_cache):
    snn, x, ref = burst_snn
    _same_as_reference(snn, snn.run(x, backend="cpp_standalone", progress=False, workers=1), ref, len(x))


def test_burst_refusals():
    mlp = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    xm = torch.rand(10, 4)
    kw = dict(calibration=xm, input_shape=(4,))
    with pytest.raises(ConversionError, match=r"burst=2 needs signed=True"):
        biosnn.convert(mlp, "rate", burst=2, **kw)
    for bad in (0, 2.5, True, "2"):
        with pytest.raises(ConversionError, match=r"burst must be a positive integer .*got " + repr(bad)):
            biosnn.convert(mlp, "rate", signed=True, burst=bad, **kw)
    assert biosnn.convert(mlp, "rate", burst=1, **kw).burst is None   # one spike per step: the plain neuron
    with pytest.raises(ConversionError, match="burst=3 needs signed=True"):
        simulate_rate(trace(mlp, (4,)), xm.numpy(), 4, burst=3)
