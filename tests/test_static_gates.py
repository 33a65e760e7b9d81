"""Max-pool gates of the rate coding on cpp_standalone without a spike queue (``biosnn_static_gate.cpp``):
bit for bit the stock Brian2 ``Synapses`` and the exact reference (issue 20)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import biosnn  # noqa: E402
from biosnn.backends import get_backend  # noqa: E402
from biosnn.backends.brian2_static import CountGate, StaticStatement, count_gate, static_statements  # noqa: E402
from biosnn.conversion.snn import batch_layout  # noqa: E402
from biosnn.spec import Operation  # noqa: E402
# a 3x3 stride 2 padding 1 max pool (overlapping windows, padded borders: rows of 1 to 4 synapses) and a 2x2 one
# (one synapse per source), each after two spiking layers (negative spikes and bursts reach them)
sys.path.insert(0, str(Path(__file__).parent))
from test_rate_signed_maxpool import _Pools as _Gates  # noqa: E402


_X = torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * 2 - 0.5


@pytest.fixture(scope="module")
def gate_snns():
    """The unsigned network (T=12) and the signed one with bursts of up to 4 spikes (QCFS, L=4, T=8)."""
    torch.manual_seed(1)
    kw = dict(calibration=_X, input_shape=(1, 8, 8))
    unsigned = biosnn.convert(_Gates().eval(), "rate", T=12, **kw)
    prepared = biosnn.prepare(_Gates().eval(), "rate", levels=4)
    burst = biosnn.convert(prepared, "rate", T=8, match_levels=True, burst=4, signed=True, **kw)
    return {"unsigned": unsigned, "burst": burst}


def _gate_projections(spec):
    gates = {p.name for p in spec.populations if p.model in ("max_gate", "max_gate_signed")}
    return [p for p in spec.projections if p.target in gates]


def test_gate_projections_are_recognised_and_nothing_else(gate_snns):
    spec = gate_snns["unsigned"].spec
    projs = _gate_projections(spec)
    assert len(projs) == 2
    for proj in projs:
        assert count_gate(spec, proj) == CountGate("c", "fire", "n_out") and static_statements(spec, proj) is None
    # a counter without its reset, or another rule, is not the gate: stock Synapses
    assert count_gate(spec, dataclasses.replace(projs[0], operations=())) is None
    assert count_gate(spec, dataclasses.replace(projs[0], operations=(Operation("c = 1", dt="12*ms"),))) is None
    other = dataclasses.replace(spec.synapse_models["gate"], on_pre="c += 1\nfire_post = 1\nn_out_post = c")
    spec2 = dataclasses.replace(spec, synapse_models={**spec.synapse_models, "gate": other})
    assert count_gate(spec2, projs[0]) is None
    spec = gate_snns["burst"].spec
    K = 9  # the largest window: 3x3
    for proj in _gate_projections(spec):
        assert count_gate(spec, proj) is None
        assert static_statements(spec, proj) == tuple(
            StaticStatement(f"c{k}", False, pre="sgn", select=("pos", float(k))) for k in range(K))
        # the position must be given per synapse (an array)
        assert static_statements(spec, dataclasses.replace(proj, initial={})) is None


@pytest.mark.parametrize("cuda", [False, True])
def test_static_builds_put_the_gates_on_the_template_except_on_cuda(gate_snns, monkeypatch, cuda):
    """Which Brian2 object each gate projection becomes (objects only, nothing generated or compiled)."""
    import brian2
    from biosnn.backends import brian2_network
    monkeypatch.setattr(brian2_network, "on_cuda", lambda: cuda)   # brian2cuda has no gate template
    for snn in gate_snns.values():
        objs = brian2_network.build_objects(snn.spec, static=True)
        gates = [objs.synapses[p.name] for p in _gate_projections(snn.spec)]
        assert len(gates) == 2
        for obj in gates:
            assert isinstance(obj, brian2.Synapses) is cuda, obj.name
            assert cuda or obj.runner.template == "biosnn_static_gate"
        if snn.signed:   # the counters of the unsigned gate stay per synapse, reset by the projection's operation
            continue
        for obj in gates:
            assert len(obj.variables["c"].get_value()) == len(obj)


def _code(snn, windows, R, static, build_cache):
    """The propagation code of every gate projection of the build ``snn.run`` used (the build cache: no compile)."""
    spec = snn.spec_for(windows, R)
    sim = get_backend("cpp_standalone", cache_dir=build_cache, static_projections=static).build(spec)
    assert sim.compiled is False
    code = sim.directory / "code_objects"
    return {p.name: {f.name for f in code.glob(f"{p.name}_*codeobject.cpp")} for p in _gate_projections(spec)}, code


@pytest.mark.standalone
@pytest.mark.parametrize("name", ["unsigned", "burst"])
def test_static_gates_equal_stock_synapses_and_the_reference_with_replicas(gate_snns, name, build_cache):
    snn = gate_snns[name]
    x = _X[:6].numpy()
    R, windows = batch_layout(2, "cpp_standalone", len(x), len(x))
    assert (R, windows) == (2, 3)
    runs = {static: snn.run(x, backend="cpp_standalone", progress=False, workers=1, replicas=2,
                            cache_dir=build_cache, static_projections=static) for static in (True, False)}
    for static, res in runs.items():   # gates on biosnn's template, or on Brian2's Synapses with a spike queue
        files, code = _code(snn, windows, R, static, build_cache)
        for proj, names in files.items():
            assert (f"{proj}_propagate_codeobject.cpp" in names) is static, proj
            assert any(n.startswith(f"{proj}_pre") for n in names) is not static, proj
            if static:
                text = (code / f"{proj}_propagate_codeobject.cpp").read_text()
                assert ("_rise" in text if name == "unsigned" else "switch (" in text), proj
    gates = [layer.name for layer in snn.graph if layer.op == "maxpool2d"]
    assert all(runs[True].layer_spikes[g].min() > 0 for g in gates)
    for key in ("scores", "layer_spikes", "layer_synops"):   # bit for bit
        a, b = getattr(runs[True], key), getattr(runs[False], key)
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            for layer in a:
                np.testing.assert_array_equal(a[layer], b[layer], err_msg=f"{key} {layer}")
        else:
            np.testing.assert_array_equal(a, b)
    ref = snn.reference(x)
    np.testing.assert_allclose(runs[True].scores, ref.scores, rtol=0, atol=1e-9)
    for layer, events in ref.events.items():
        if layer in runs[True].layer_spikes:
            np.testing.assert_array_equal(runs[True].layer_spikes[layer], events.reshape(len(x), -1).sum(1),
                                          err_msg=layer)
    if name == "burst":   # the test needs bursts and negative spikes through the gates
        trains = snn.reference(x, record_trains=True).trains
        assert all(np.abs(trains[g]).max() >= 2 and trains[g].min() < 0 for g in gates)
