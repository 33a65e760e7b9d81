"""Signed IF neurons for rate coding (issue 21): the neuron rule, Brian2 = reference, refusals."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import biosnn  # noqa: E402
from biosnn.codings.rate.reference import simulate_rate  # noqa: E402
from biosnn.errors import ConversionError  # noqa: E402
from biosnn.frontends.torch_graph import trace  # noqa: E402


def _x(n, shape, seed=0):
    return torch.rand((n,) + shape, generator=torch.Generator().manual_seed(seed))


def test_a_negative_spike_takes_back_a_spike_the_input_no_longer_supports():
    model = nn.Sequential(nn.Linear(2, 1, bias=False), nn.ReLU(), nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        model[0].weight[:] = torch.tensor([[0.6, -0.6]])
        model[2].weight[:] = 1.0
    graph = trace(model, (2,))
    trains = np.zeros((1, 6, 2))
    trains[0, :2, 0] = 1     # +0.6, +0.6: v = 0.6, 1.2 -> spike, v = 0.2
    trains[0, 2:4, 1] = 1    # -0.6: v = -0.4 < 0 with n = 1 -> negative spike, v = 0.6; then v = 0.0
    trains[0, 4:, 1] = 1     # v = -0.6 with n = 0: nothing to take back
    kw = dict(input_mode="spikes", readout="potential", record_trains=True)
    signed = simulate_rate(graph, trains, 6, signed=True, **kw)
    plain = simulate_rate(graph, trains, 6, **kw)
    hidden = graph.names[1]
    np.testing.assert_array_equal(signed.trains[hidden][0, :, 0], [0, 1, -1, 0, 0, 0])
    np.testing.assert_array_equal(plain.trains[hidden][0, :, 0], [0, 1, 0, 0, 0, 0])
    assert signed.counts[hidden].tolist() == [[0]] and signed.negative[hidden].tolist() == [[1]]
    assert signed.events[hidden].tolist() == [[2]] and plain.negative is None
    np.testing.assert_allclose(signed.scores, [[0.0]], atol=1e-12)   # +w then -w reached the readout
    np.testing.assert_allclose(plain.scores, [[1 / 6]], atol=1e-12)


class _Mixed(nn.Module):
    """Conv, average pooling, a residual add and a concatenation: the layer kinds signed spikes cross."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 2, 1)
        self.fc = nn.Linear(6 * 4 * 4, 10)

    def forward(self, x):
        a = F.relu(self.c1(x))
        b = F.relu(self.c2(a) + a)
        c = torch.cat([b, F.relu(self.c3(b))], 1)
        return self.fc(torch.flatten(F.avg_pool2d(c, 2), 1))


@pytest.fixture(scope="module")
def mixed_snn():
    torch.manual_seed(3)
    q = biosnn.prepare(_Mixed().eval(), "rate", levels=4)
    x = _x(40, (1, 8, 8), seed=4) - 0.3
    snn = biosnn.convert(q, "rate", calibration=x, input_shape=(1, 8, 8), T=8, signed=True, fold_pooling=False)
    ref = simulate_rate(snn.graph, x[:3].numpy(), 8, thresholds=snn.thresholds, readout=snn.readout,
                        v_init=snn.v_init, signed=True)
    return snn, x[:3].numpy(), ref


def _same_as_reference(res, ref, n, output):
    np.testing.assert_allclose(res.scores, ref.scores, rtol=0, atol=1e-9)
    assert set(res.layer_spikes) == set(ref.events) - {"input", output}
    for name, events in ref.events.items():
        if name in res.layer_spikes:
            np.testing.assert_array_equal(res.layer_spikes[name], events.reshape(n, -1).sum(1), err_msg=name)


def test_signed_brian2_runtime_equals_the_reference_spike_for_spike(mixed_snn):
    snn, x, ref = mixed_snn
    assert sum(int(v.sum()) for v in ref.negative.values()) > 0, "the test needs negative spikes"
    assert {layer.op for layer in snn.graph} >= {"add", "avgpool2d", "conv2d"}
    _same_as_reference(snn.run(x, backend="runtime", progress=False), ref, len(x), snn.graph.output)


def test_signed_cpp_standalone_equals_the_reference(mixed_snn, build_cache):
    snn, x, ref = mixed_snn
    _same_as_reference(snn.run(x, backend="cpp_standalone", progress=False, workers=1), ref, len(x), snn.graph.output)


def test_signed_neurons_refuse_spike_readout_and_nir_not_max_pooling():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(18, 3)).eval()
    x = _x(10, (1, 8, 8))
    snn = biosnn.convert(model, "rate", calibration=x, input_shape=(1, 8, 8), signed=True)
    assert snn.spec.population("L2").model == "max_gate_signed"   # tests/test_rate_signed_maxpool.py runs it
    mlp = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    xm = _x(10, (4,))
    with pytest.raises(ConversionError, match="signed=True needs readout='potential'"):
        biosnn.convert(mlp, "rate", calibration=xm, input_shape=(4,), signed=True, readout="spikes")
    with pytest.raises(ConversionError, match="signed must be True or False"):
        biosnn.convert(mlp, "rate", calibration=xm, input_shape=(4,), signed="yes")
    pytest.importorskip("nir")
    from biosnn.frontends.nir.snn_export import snn_to_nir
    snn = biosnn.convert(mlp, "rate", calibration=xm, input_shape=(4,), signed=True)
    with pytest.raises(ConversionError, match="signed IF neurons.*negative spikes.*signed=False"):
        snn_to_nir(snn)
    snn_to_nir(biosnn.convert(mlp, "rate", calibration=xm, input_shape=(4,)))   # the same network unsigned exports


def test_the_reference_max_pool_gate_passes_the_maximum_of_signed_counts():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(36, 3)).eval()
    graph = trace(model, (1, 10, 10))
    x = _x(6, (1, 10, 10), seed=2).numpy() * 4 - 1
    ref = simulate_rate(graph, x, 16, readout="potential", v_init=0.5, signed=True, record_trains=True)
    conv, pool = graph.names[2], graph.names[3]
    assert ref.negative[conv].sum() > 0 and ref.negative[pool].sum() > 0, "the test needs negative spikes"
    running = np.cumsum(ref.trains[conv].astype(np.int64), axis=1).reshape(6, 16, 4, 6, 6)
    window_max = running.reshape(6, 16, 4, 3, 2, 3, 2).max(axis=(4, 6)).reshape(6, 16, -1)
    np.testing.assert_array_equal(np.cumsum(ref.trains[pool], axis=1), window_max)   # at every step
    np.testing.assert_array_equal(ref.counts[pool], window_max[:, -1])


def test_spikes_worth_k_steps_quantise_to_the_models_levels_and_brian2_equals_the_reference():
    torch.manual_seed(3)
    L, k = 4, 3
    q = biosnn.prepare(_Mixed().eval(), "rate", levels=L)
    x = _x(40, (1, 8, 8), seed=4) - 0.3
    kw = dict(calibration=x, input_shape=(1, 8, 8), signed=True, fold_pooling=False)
    plain = biosnn.convert(q, "rate", T=L, **kw)
    snn = biosnn.convert(q, "rate", T=k * L, match_levels=True, **kw)
    assert snn.thresholds["c1"] == k * plain.thresholds.get("c1", 1.0)
    assert snn.max_count == L
    ref = simulate_rate(snn.graph, x.numpy(), k * L, thresholds=snn.thresholds, readout=snn.readout,
                        v_init=snn.v_init, signed=True, max_count=L)
    short = simulate_rate(plain.graph, x.numpy(), L, thresholds=plain.thresholds, readout=plain.readout,
                          v_init=plain.v_init, signed=True)
    stem = q.get_submodule(next(n for n, m in q.named_modules() if type(m).__name__ == "QCFS"))
    with torch.no_grad():
        levels = stem(q.c1(x)).numpy().reshape(len(x), -1) / float(stem.threshold) * L
    np.testing.assert_array_equal(ref.counts["c1"], np.rint(levels))      # L levels, not k L
    assert max(int(c.max()) for n, c in ref.counts.items() if n != "input") <= L
    same = np.all([np.array_equal(ref.counts[n], short.counts[n]) for n in ref.counts], axis=0)
    assert same or np.mean(ref.predictions == short.predictions) >= 0.9   # = T = L where neither lags
    _same_as_reference(snn.run(x[:3].numpy(), backend="runtime", progress=False),
                       simulate_rate(snn.graph, x[:3].numpy(), k * L, thresholds=snn.thresholds,
                                     readout=snn.readout, v_init=snn.v_init, signed=True, max_count=L), 3,
                       snn.graph.output)
    with pytest.raises(ConversionError, match=r"match_levels needs .* T a multiple of L and signed=True; got "
                                              r"levels \[4\], T=10"):
        biosnn.convert(q, "rate", T=10, match_levels=True, **kw)
