"""The signed max-pool gate of the Brian2 rate network (issue 21): Brian2 = reference, spike for spike."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import biosnn  # noqa: E402
from biosnn.codings.rate.reference import simulate_rate  # noqa: E402
from biosnn.errors import ConversionError  # noqa: E402


class _Pools(nn.Module):
    """Both zoo max pools: 3x3 stride 2 padding 1 (ResNet-18's stem) and 2x2 stride 2 (VGG), after signed convs."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 2 * 2, 5)

    def forward(self, x):
        a = F.max_pool2d(F.relu(self.c2(F.relu(self.c1(x)))), 3, 2, 1)   # 8x8 -> 4x4, padded border windows
        b = F.max_pool2d(F.relu(self.c3(a)), 2)                           # 4x4 -> 2x2
        return self.fc(torch.flatten(b, 1))


@pytest.fixture(scope="module")
def pool_snns():
    """The signed network (T=12), the QCFS one with match_levels (L=4, T=8) and that one with bursts of up to
    4 spikes (also through the gates), each with its exact reference."""
    torch.manual_seed(1)
    x = torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 0.5
    kw = dict(calibration=x, input_shape=(1, 8, 8), signed=True)
    plain = biosnn.convert(_Pools().eval(), "rate", T=12, **kw)
    prepared = biosnn.prepare(_Pools().eval(), "rate", levels=4)
    qcfs = biosnn.convert(prepared, "rate", T=8, match_levels=True, **kw)
    burst = biosnn.convert(prepared, "rate", T=8, match_levels=True, burst=4, **kw)
    xs = x[:4].numpy()
    return {name: (snn, xs, simulate_rate(snn.graph, xs, snn.T, thresholds=snn.thresholds, readout=snn.readout,
                                          v_init=snn.v_init, signed=True, max_count=snn.max_count, burst=snn.burst))
            for name, snn in (("plain", plain), ("match_levels", qcfs), ("burst", burst))}


def _same_as_reference(res, ref, n, output):
    np.testing.assert_allclose(res.scores, ref.scores, rtol=0, atol=1e-9)
    assert set(res.layer_spikes) - {"input"} == set(ref.events) - {"input", output}   # Poisson input: metered
    for name, events in ref.events.items():   # spikes of either sign per sample
        if name in res.layer_spikes:
            np.testing.assert_array_equal(res.layer_spikes[name], events.reshape(n, -1).sum(1), err_msg=name)


@pytest.mark.parametrize("name", ["plain", "match_levels", "burst"])
def test_signed_max_pool_gates_on_brian2_runtime_equal_the_reference(pool_snns, name):
    snn, x, ref = pool_snns[name]
    pools = [layer.name for layer in snn.graph if layer.op == "maxpool2d"]
    assert [snn.graph[p].params["kernel_size"] for p in pools] == [(3, 3), (2, 2)]
    assert all(ref.negative[p].sum() > 0 for p in pools), "the test needs negative gate spikes"
    if name == "burst":   # events of several spikes pass the gates
        assert all(ref.events[p].sum() > _gate_events(snn, x, p) for p in pools), "the test needs gate bursts"
    _same_as_reference(snn.run(x, backend="runtime", progress=False), ref, len(x), snn.graph.output)
    if name == "plain":   # two copies of the network in one run: per-synapse window positions copied too
        _same_as_reference(snn.run(x, backend="runtime", progress=False, replicas=2), ref, len(x), snn.graph.output)


def _gate_events(snn, x, pool):
    """Events (not spikes) a gate sends in the reference: nonzero steps of its recorded trains."""
    trains = simulate_rate(snn.graph, x, snn.T, thresholds=snn.thresholds, readout=snn.readout, v_init=snn.v_init,
                           signed=True, max_count=snn.max_count, burst=snn.burst, record_trains=True).trains
    return int(np.count_nonzero(trains[pool]))


def test_signed_max_pool_gates_on_cpp_standalone_equal_the_reference(pool_snns, build_cache):
    snn, x, ref = pool_snns["burst"]   # the gates pass bursts; test_rate_signed.py compiles one-spike neurons
    _same_as_reference(snn.run(x, backend="cpp_standalone", progress=False, workers=1), ref, len(x),
                       snn.graph.output)


def test_max_pools_the_gate_cannot_realise_are_refused():
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    last = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2)).eval()
    with pytest.raises(ConversionError, match=r"layer '2' is a max pool as the output layer: signed=True"):
        biosnn.convert(last, "rate", calibration=x, input_shape=(1, 8, 8), signed=True)
    first = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3)).eval()
    for signed in (False, True):
        with pytest.raises(ConversionError, match=r"layer 'input' \(the analog input\) is read by a max pool"):
            biosnn.convert(first, "rate", calibration=x, input_shape=(1, 8, 8), signed=signed)


def test_a_signed_max_pool_gate_reading_poisson_input_counts_its_spikes():
    """Binary images: Poisson spikes with probability 0 or 1, the same in Brian2 and the reference."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * 16, 3)).eval()
    x = (torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(5)) > 0.5).float()
    snn = biosnn.convert(model, "rate", calibration=x, input_shape=(1, 8, 8), T=10, signed=True, input_mode="poisson")
    assert snn.graph.input_scale == 1.0 and snn.spec.projection("input_L1").model == "gate_signed_input"
    ref = snn.reference(x.numpy())
    assert ref.counts[snn.graph.names[1]].max() == 10
    _same_as_reference(snn.run(x.numpy(), backend="runtime", progress=False), ref, len(x), snn.graph.output)
