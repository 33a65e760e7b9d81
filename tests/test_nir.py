"""NIR import/export: graphs exported by snnTorch, Norse, SpikingJelly, sinabs and Rockpool with their own
exporters run spike-identically in biosnn (runtime; cpp_standalone in one shared build), round trips."""

import warnings

import numpy as np
import pytest

nir = pytest.importorskip("nir")
torch = pytest.importorskip("torch")

from biosnn.errors import ConversionError  # noqa: E402
from biosnn.frontends.nir import from_nir, run_nir, to_nir  # noqa: E402

T = 25


def _bernoulli(shape, p=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((T, *shape), generator=g) < p).float()


def _same(ref, res, what):
    ref = np.asarray(ref)
    assert ref.sum() > 0, f"{what}: the tool's network is silent; the comparison would say nothing"
    assert ref.shape == res.shape, (what, ref.shape, res.shape)
    diff = np.argwhere(ref != res)
    assert diff.size == 0, f"{what}: spikes differ at (step, neuron...) {diff[:5].tolist()}"


# --------------------------------------------------------------------------- the tools' networks
# Each case builds a tiny network in the tool, exports it with the tool's own NIR exporter, simulates it in the tool
# and returns (graph, x, reference, what): reference is the tool's output for input x (spikes, or the values of a
# leaky-integrator readout).  Weights are scaled up so that every layer spikes.


def _scale(*layers, by):
    with torch.no_grad():
        for layer in layers:
            layer.weight.mul_(by)


def _snntorch_export(net, n_in):
    from snntorch import utils
    from snntorch.export_nir import export_to_nir
    g = export_to_nir(net, torch.zeros(1, *n_in), ignore_dims=[0])
    utils.reset(net)  # the export ran the net: hidden states must start from zero again
    return g


def _snntorch_run(net, x):
    out = []
    with torch.no_grad():
        for t in range(len(x)):
            s = net(x[t][None])
            out.append((s[0] if isinstance(s, tuple) else s)[0].numpy())
    return np.array(out)


def snntorch_ff_cuba():
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(3)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), snn.Leaky(beta=torch.full((5,), 0.9), threshold=torch.ones(5),
                                                                init_hidden=True),
                              torch.nn.Linear(5, 4),
                              snn.Synaptic(alpha=torch.full((4,), 0.8), beta=torch.full((4,), 0.9),
                                           threshold=torch.ones(4), init_hidden=True, output=True))
    g, x = _snntorch_export(net, (6,)), _bernoulli((6,), seed=1)
    return g, x, _snntorch_run(net, x), "spikes"


def _snntorch_recurrent(make, seed, in_scale):
    """Linear(6, 5) -> a recurrent snnTorch layer ``make(snn)`` with all-to-all recurrent weights doubled."""
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), make(snn))
    _scale(net[0], by=in_scale)
    _scale(net[1].recurrent, by=2.0)
    g, x = _snntorch_export(net, (6,)), _bernoulli((6,), seed=seed % 3)
    return g, x, _snntorch_run(net, x), "spikes"


def snntorch_recurrent():
    return _snntorch_recurrent(lambda snn: snn.RLeaky(beta=torch.full((5,), 0.85), threshold=torch.ones(5),
                                                      linear_features=5, init_hidden=True, output=True), 3, 4.0)


def snntorch_rsynaptic():
    return _snntorch_recurrent(lambda snn: snn.RSynaptic(alpha=torch.full((5,), 0.7), beta=torch.full((5,), 0.85),
                                                         threshold=torch.ones(5), linear_features=5, init_hidden=True,
                                                         output=True), 8, 3.0)


def snntorch_conv():
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(4)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), snn.Leaky(beta=torch.full((2, 6, 6), 0.8),
                                                                              threshold=torch.ones(2, 6, 6),
                                                                              init_hidden=True),
                              torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(18, 3, bias=False),
                              snn.Leaky(beta=torch.full((3,), 0.9), threshold=torch.ones(3), init_hidden=True,
                                        output=True))
    _scale(net[0], by=3.0)
    _scale(net[4], by=6.0)
    g, x = _snntorch_export(net, (1, 6, 6)), _bernoulli((1, 6, 6), seed=3)
    return g, x, _snntorch_run(net, x), "spikes"


def _norse_run(net, x):
    state, out = None, []
    with torch.no_grad():
        for t in range(len(x)):
            z, state = net(x[t][None], state)
            out.append(z[0].numpy())
    return np.array(out)


def norse_ff():
    norse = pytest.importorskip("norse.torch")
    torch.manual_seed(4)
    net = norse.SequentialState(torch.nn.Linear(6, 5), norse.LIFBoxCell(), torch.nn.Linear(5, 4), norse.LIFCell(),
                                torch.nn.Linear(4, 3), norse.IAFCell())
    _scale(net[0], net[2], net[4], by=6.0)
    x = _bernoulli((6,), seed=2)
    return norse.to_nir(net, torch.zeros(1, 6)), x, _norse_run(net, x), "spikes"


def norse_conv():
    norse = pytest.importorskip("norse.torch")
    torch.manual_seed(9)
    net = norse.SequentialState(torch.nn.Conv2d(1, 2, 3, stride=2, padding=1), norse.LIFBoxCell(),
                                torch.nn.Conv2d(2, 2, 2), norse.IAFCell())
    _scale(net[0], by=12.0)
    _scale(net[2], by=6.0)
    x = _bernoulli((1, 6, 6), seed=4)
    return norse.to_nir(net, torch.zeros(1, 1, 6, 6)), x, _norse_run(net, x), "spikes"


def norse_li_readout():
    norse = pytest.importorskip("norse.torch")
    torch.manual_seed(5)
    net = norse.SequentialState(torch.nn.Linear(6, 5), norse.LIFBoxCell(), torch.nn.Linear(5, 3), norse.LIBoxCell())
    _scale(net[0], by=6.0)
    x = _bernoulli((6,), seed=3)
    return norse.to_nir(net, torch.zeros(1, 6)), x, _norse_run(net, x), "values"


def _sj_run(net, x):
    from spikingjelly.activation_based import functional
    functional.reset_net(net)
    with torch.no_grad():
        return np.array([net(x[t][None])[0].numpy() for t in range(len(x))])


def spikingjelly_conv_cuba():
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import layer, neuron
    from spikingjelly.activation_based.nir_exchange import export_to_nir
    torch.manual_seed(5)
    net = torch.nn.Sequential(layer.Conv2d(1, 2, 3, padding=1), neuron.LIFNode(tau=2.0),
                              layer.AvgPool2d(2), layer.Flatten(), layer.Linear(2 * 3 * 3, 4),
                              neuron.CUBALIFNode(c_decay=0.6, v_decay=0.7), layer.Linear(4, 3), neuron.IFNode())
    _scale(net[0], by=3.0)
    _scale(net[4], net[6], by=4.0)
    x = _bernoulli((1, 6, 6), seed=3)
    g = export_to_nir(net, torch.zeros(1, 1, 6, 6))
    return g, x, _sj_run(net, x), "spikes"


def spikingjelly_conv1d_plif():
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import layer, neuron
    from spikingjelly.activation_based.nir_exchange import export_to_nir
    torch.manual_seed(6)
    net = torch.nn.Sequential(layer.Conv1d(2, 3, 3, stride=2, dilation=2, padding=1),
                              neuron.ParametricLIFNode(init_tau=3.0, decay_input=False),
                              layer.Flatten(), layer.Linear(3 * 4, 3, bias=False), neuron.LIFNode(tau=4.0))
    _scale(net[0], by=3.0)
    _scale(net[3], by=5.0)
    x = _bernoulli((2, 9), seed=4)
    g = export_to_nir(net, torch.zeros(1, 2, 9))
    return g, x, _sj_run(net, x), "spikes"


def sinabs_conv():
    sinabs = pytest.importorskip("sinabs")
    import sinabs.layers as sl
    from sinabs.activation import SingleSpike
    torch.manual_seed(6)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1, bias=False),
                              sl.IAFSqueeze(batch_size=1, spike_fn=SingleSpike),
                              sl.SumPool2d(2), torch.nn.Flatten(), torch.nn.Linear(2 * 3 * 3, 4),
                              sl.LIFSqueeze(tau_mem=torch.tensor(5.0), batch_size=1, spike_fn=SingleSpike))
    _scale(net[0], by=2.0)
    _scale(net[4], by=4.0)
    x = _bernoulli((1, 6, 6), seed=4)
    net(torch.zeros(T, 1, 6, 6))  # sinabs needs one forward pass to know its state shapes
    g = sinabs.to_nir(net, torch.zeros(T, 1, 6, 6))
    net.apply(lambda mod: mod.reset_states() if hasattr(mod, "reset_states") else None)
    with torch.no_grad():
        ref = net(x).numpy()  # Squeeze layers: one sample's T steps folded into dim 0
    return g, x, ref, "spikes"


def sinabs_conv1d_expleak():
    sinabs = pytest.importorskip("sinabs")
    import sinabs.layers as sl
    from sinabs.activation import SingleSpike
    torch.manual_seed(10)
    net = torch.nn.Sequential(torch.nn.Conv1d(2, 3, 3, stride=2), sl.IAFSqueeze(batch_size=1, spike_fn=SingleSpike),
                              torch.nn.Flatten(), torch.nn.Linear(3 * 4, 3),
                              sl.ExpLeakSqueeze(tau_mem=torch.tensor(4.0), batch_size=1, norm_input=True))
    _scale(net[0], by=3.0)
    x = _bernoulli((2, 9), seed=5)
    net(torch.zeros(T, 2, 9))
    g = sinabs.to_nir(net, torch.zeros(T, 2, 9))
    net.apply(lambda mod: mod.reset_states() if hasattr(mod, "reset_states") else None)
    with torch.no_grad():
        ref = net(x).numpy()
    return g, x, ref, "values"


def _rockpool_run(net, x):
    net.reset_state()  # the exporter ran the network on sample data
    with torch.no_grad():
        out, _, _ = net(x[None])
    return out[0].numpy()


def rockpool_cuba():
    pytest.importorskip("rockpool")
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch
    from rockpool.nn.modules.torch.nir import to_nir as rockpool_to_nir
    torch.manual_seed(7)
    net = Sequential(LinearTorch((6, 5)), LIFTorch(5, max_spikes_per_dt=1),
                     LinearTorch((5, 4)), LIFTorch(4, max_spikes_per_dt=1))
    _scale(net[0], net[2], by=6.0)
    x = _bernoulli((6,), seed=5)
    g = rockpool_to_nir(net)
    return g, x, _rockpool_run(net, x), "spikes"


def rockpool_lif_li():
    pytest.importorskip("rockpool")
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import ExpSynTorch, LIFNeuronTorch, LinearTorch
    from rockpool.nn.modules.torch.nir import to_nir as rockpool_to_nir
    torch.manual_seed(8)
    net = Sequential(LinearTorch((6, 5)), LIFNeuronTorch(5, tau_mem=0.01, max_spikes_per_dt=1),
                     LinearTorch((5, 3), has_bias=True), ExpSynTorch(3, tau=0.005))
    _scale(net[0], by=3.0)
    x = _bernoulli((6,), seed=6)
    g = rockpool_to_nir(net)
    return g, x, _rockpool_run(net, x), "values"


CASES = {
    "snntorch": [snntorch_ff_cuba, snntorch_recurrent, snntorch_rsynaptic, snntorch_conv],
    "norse": [norse_ff, norse_conv, norse_li_readout],
    "spikingjelly": [spikingjelly_conv_cuba, spikingjelly_conv1d_plif],
    "sinabs": [sinabs_conv, sinabs_conv1d_expleak],
    "rockpool": [rockpool_cuba, rockpool_lif_li],
}
_ALL = [(tool, case) for tool, cases in CASES.items() for case in cases]


def _check(tool, case, res, ref, what):
    got = res["output"]
    if what == "spikes":
        _same(ref, got, f"{tool} {case.__name__}")
    else:  # leaky-integrator readout: the tool computes in float32
        assert np.abs(ref).max() > 0
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
        spiking = [k for k in res if k != "output"]
        assert spiking and all(res[k].sum() > 0 for k in spiking)


@pytest.mark.parametrize("tool, case", _ALL, ids=[c.__name__ for _, c in _ALL])
def test_tool_graph_runs_spike_identically(tool, case):
    g, x, ref, what = case()
    res = run_nir(g, x.numpy(), flavor=tool)
    _check(tool, case, res, ref, what)


# --------------------------------------------------------------------------- cpp_standalone, round trips, errors

def _merged(imports):
    """One spec holding several imported graphs side by side (names prefixed ``c<k>_``): one compile for all."""
    from dataclasses import replace

    from biosnn.frontends.nir.importer import INPUT_TABLE
    from biosnn.spec import model as m
    pops, projs, mons, tables, renamed = [], [], [], [], []
    for k, imp in enumerate(imports):
        pre, spec = f"c{k}_", imp.spec
        for p in spec.populations:
            ops = tuple(replace(op, code=op.code.replace(f"{INPUT_TABLE}(", f"{INPUT_TABLE}_{k}("))
                        for op in p.operations)
            pops.append(replace(p, name=pre + p.name, operations=ops))
        projs += [replace(q, name=pre + q.name, source=pre + q.source, target=pre + q.target) for q in spec.projections]
        mons += [replace(mon, population=pre + mon.population) for mon in spec.monitors]
        tables += [replace(t, name=f"{t.name}_{k}") for t in spec.timed_arrays]
        renamed.append(replace(imp, populations={n: pre + v for n, v in imp.populations.items()}))
    first = imports[0].spec
    spec = m.NetworkSpec("nir_tools", populations=pops, projections=projs, monitors=mons, timed_arrays=tables,
                         dt=first.dt, duration=first.duration, synapse_models=first.synapse_models)
    return spec, renamed


def _static_nodes():
    """Input -> Scale -> Delay (2, 0, 3 steps) -> Threshold -> Linear -> I, plain NIR at dt = 1 ms, and its numpy
    solution: ``(graph, x, threshold spikes, integrator values)``."""
    rng = np.random.default_rng(1)
    dt, scale, theta = 1e-3, np.array([1.5, -0.5, 2.0]), np.array([0.5, -0.6, 1.0])
    W, r, k = rng.normal(size=(2, 3)), np.array([300.0, 500.0]), np.array([2, 0, 3])
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([3])}), "scale": nir.Scale(scale=scale),
                            "delay": nir.Delay(delay=k * dt), "thr": nir.Threshold(threshold=theta),
                            "lin": nir.Linear(weight=W), "integ": nir.I(r=r),
                            "output": nir.Output(output_type={"output": np.array([2])})},
                     edges=[("input", "scale"), ("scale", "delay"), ("delay", "thr"), ("thr", "lin"), ("lin", "integ"),
                            ("integ", "output")], type_check=False)
    x = rng.uniform(0, 1, size=(T, 3))
    d = np.stack([np.concatenate([np.zeros(k[j]), (scale[j] * x[:, j])[:T - k[j]]]) for j in range(3)], axis=1)
    z = (d > theta).astype(np.uint8)
    assert 0 < z.sum() < z.size
    return g, x, z, np.cumsum(dt * r * (z @ W.T), axis=0)


def nir_static_nodes():
    g, x, _, v = _static_nodes()
    return g, torch.tensor(x), v, "values"


# one case per tool on cpp_standalone (feed-forward, conv + pooling, recurrent, CubaLIF across them); the cases
# with the same dt share one compiled network
CPP_CASES = {1e-4: [snntorch_rsynaptic, spikingjelly_conv_cuba], 1e-3: [norse_ff, rockpool_cuba, nir_static_nodes],
             1.0: [sinabs_conv]}


@pytest.mark.standalone
@pytest.mark.parametrize("dt", list(CPP_CASES), ids=["snntorch+spikingjelly", "norse+rockpool+nir", "sinabs"])
def test_tool_graphs_spike_identical_on_cpp_standalone(dt, build_cache):
    from biosnn import get_backend
    from biosnn.frontends.nir.importer import build
    from biosnn.frontends.nir.run import spikes_of
    tools = {case: tool for tool, case in _ALL}
    built, imports = [], []
    for case in CPP_CASES[dt]:
        g, x, ref, what = case()
        tool = tools.get(case, "nir")  # nir_static_nodes: plain NIR (Scale, Delay, Threshold, I)
        built.append((tool, case, ref, what))
        imports.append(build(g, dt=dt, flavor=tool, x=x.numpy()))
    spec, renamed = _merged(imports)
    rec = get_backend("cpp_standalone", cache_dir=build_cache).build(spec).run(progress=False)
    for (tool, case, ref, what), imp in zip(built, renamed):
        _check(tool, case, spikes_of(imp, rec), ref, what)


def _graph():
    rng = np.random.default_rng(0)
    inner = nir.NIRGraph(nodes={"in": nir.Input(input_type={"input": np.array([3])}),
                                "lif": nir.LIF(tau=np.full(3, 2e-3), r=np.ones(3), v_leak=np.zeros(3),
                                               v_threshold=np.full(3, 0.5), v_reset=np.zeros(3)),
                                "rec": nir.Linear(weight=rng.normal(size=(3, 3))),
                                "out": nir.Output(output_type={"output": np.array([3])})},
                         edges=[("in", "lif"), ("lif", "rec"), ("rec", "lif"), ("lif", "out")], type_check=False)
    return nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([1, 4, 4])}),
                               "conv": nir.Conv2d(input_shape=(4, 4), weight=rng.normal(size=(2, 1, 2, 2)), stride=1,
                                                  padding=1, dilation=2, groups=1, bias=rng.normal(size=2)),
                               "if": nir.IF(r=np.full((2, 4, 4), 800.0), v_threshold=np.ones((2, 4, 4)),
                                            v_reset=np.zeros((2, 4, 4))),
                               "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([1, 1]),
                                                     padding=np.array([0, 0])),
                               "flat": nir.Flatten(input_type={"input": np.array([2, 3, 3])}),
                               "aff": nir.Affine(weight=rng.normal(size=(3, 18)), bias=rng.normal(size=3)),
                               "sub": inner,
                               "cuba": nir.CubaLIF(tau_syn=np.full(3, 1e-3), tau_mem=np.full(3, 3e-3), r=np.ones(3),
                                                   v_leak=np.zeros(3), v_threshold=np.full(3, 0.2),
                                                   w_in=np.full(3, 80.0)),
                               "output": nir.Output(output_type={"output": np.array([3])})},
                        edges=[("input", "conv"), ("conv", "if"), ("if", "pool"), ("pool", "flat"), ("flat", "aff"),
                               ("aff", "sub"), ("sub", "cuba"), ("cuba", "output")],
                        metadata={"producer": "spikingjelly"}, type_check=False)


def test_round_trip_nir_spec_nir_is_lossless():
    g = _graph()
    back = to_nir(from_nir(g))
    flat = {"sub.lif": g.nodes["sub"].nodes["lif"], "sub.rec": g.nodes["sub"].nodes["rec"]}
    flat.update({k: v for k, v in g.nodes.items() if k != "sub"})
    assert set(back.nodes) == set(flat)
    for name, node in flat.items():
        other = back.nodes[name]
        assert type(other) is type(node), name
        for f in node.__dataclass_fields__:
            if f in ("input_type", "output_type", "metadata"):
                continue
            a, b = getattr(node, f), getattr(other, f)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                np.testing.assert_array_equal(np.broadcast_to(np.asarray(a, float), np.shape(b)), b,
                                              err_msg=f"{name}.{f}")
            else:
                assert np.array_equal(np.asarray(a), np.asarray(b)), (name, f, a, b)
    want = {("input", "conv"), ("conv", "if"), ("if", "pool"), ("pool", "flat"), ("flat", "aff"), ("aff", "sub.lif"),
            ("sub.lif", "sub.rec"), ("sub.rec", "sub.lif"), ("sub.lif", "cuba"), ("cuba", "output")}
    assert set(back.edges) == want
    assert back.metadata["producer"] == "spikingjelly"


def test_round_trip_spec_nir_spec_and_same_spikes():
    g = _graph()
    spec = from_nir(g, steps=T)
    spec2 = from_nir(to_nir(spec), steps=T)
    assert [p.name for p in spec.populations] == [p.name for p in spec2.populations]
    for p, q in zip(spec.populations, spec2.populations):
        assert p.initial.keys() == q.initial.keys()
        for k in p.initial:
            np.testing.assert_array_equal(p.initial[k].data, q.initial[k].data, err_msg=f"{p.name}.{k}")
    x = _bernoulli((1, 4, 4), p=0.6, seed=9).numpy()
    a, b = run_nir(g, x), run_nir(to_nir(spec), x, flavor="spikingjelly")
    assert a["sub.lif"].sum() > 0 and a["cuba"].sum() > 0
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_errors_name_node_type_and_fix():
    g = _graph()
    with pytest.raises(ConversionError, match="do not store the time step.*give dt="):
        from_nir(nir.NIRGraph(nodes=dict(g.nodes), edges=list(g.edges), type_check=False))
    bad = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}),
                              "mp": nir.CubaLI(tau_syn=np.ones(2), tau_mem=np.ones(2), r=np.ones(2),
                                               v_leak=np.zeros(2)),
                              "output": nir.Output(output_type={"output": np.array([2])})},
                       edges=[("input", "mp"), ("mp", "output")], type_check=False)
    bad.nodes["mp"] = object.__new__(type("MaxPool2d", (), {}))
    with pytest.raises(ConversionError, match="NIR node 'mp' has type MaxPool2d.*supported: Input, Output"):
        from_nir(bad, dt=1e-3)
    with pytest.raises(ConversionError, match="unknown NIR flavor 'brian'"):
        from_nir(g, flavor="brian")
    with pytest.raises(ConversionError, match="cannot run on NEST: recurrent edges .*Run it on a Brian2 backend"):
        run_nir(g, np.zeros((2, 1, 4, 4)), backend="nest")
    import biosnn
    with pytest.raises(ConversionError, match="population 'exc'.*no NIR counterpart"):
        to_nir(biosnn.load("network_specs/cuba.yaml"))


# --------------------------------------------------------------------------- node types no tool exports

def test_scale_delay_threshold_integrator_against_numpy():
    g, x, z, v = _static_nodes()
    res = run_nir(g, x, dt=1e-3)
    np.testing.assert_array_equal(res["thr"], z)
    np.testing.assert_allclose(res["output"], v, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["euler", "exact"])
def test_cubali_li_against_numpy(method):
    rng = np.random.default_rng(2)
    dt, n = 1e-3, 3
    W, b = rng.normal(size=(n, 4)), rng.normal(size=n)
    ts, tm, r, vl, w_in = np.full(n, 4e-3), np.array([5e-3, 8e-3, 20e-3]), np.array([1.0, 2.0, 0.5]), \
        np.array([0.0, 0.1, -0.2]), np.array([1.0, 3.0, 2.0])
    g = nir.NIRGraph.from_list(nir.Affine(weight=W, bias=b),
                               nir.CubaLI(tau_syn=ts, tau_mem=tm, r=r, v_leak=vl, w_in=w_in), type_check=False)
    x = rng.uniform(0, 1, size=(T, 4))
    current, v, out = np.zeros(n), np.zeros(n), []
    for t in range(T):
        X = W @ x[t] + b
        if method == "euler":
            current = current + dt / ts * (w_in * X - current)
            v = v + dt / tm * (vl + r * current - v)
        else:
            current = w_in * X + (current - w_in * X) * np.exp(-dt / ts)
            v = vl + r * current + (v - vl - r * current) * np.exp(-dt / tm)
        out.append(v)
    res = run_nir(g, x, dt=dt, flavor="nir", method=method)
    np.testing.assert_allclose(res["output"], np.array(out), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", [1, "same"])
def test_grouped_dilated_conv_if_against_torch(padding):
    """Conv2d (groups 2, dilation 2) -> IF, plain NIR (forward Euler, reset to v_reset), against torch's conv2d."""
    rng = np.random.default_rng(3)
    dt, w, bias = 1e-3, rng.normal(size=(4, 1, 3, 3)), rng.normal(size=4) * 0.2
    conv = nir.Conv2d(input_shape=(5, 5), weight=w, stride=1, padding=padding, dilation=2, groups=2, bias=bias)
    shape = (4, 5, 5) if padding == "same" else (4, 3, 3)
    g = nir.NIRGraph.from_list(conv, nir.IF(r=np.full(shape, 400.0), v_threshold=np.ones(shape),
                                            v_reset=np.full(shape, -0.1)), type_check=False)
    g.nodes["input"] = nir.Input(input_type={"input": np.array([2, 5, 5])})
    x = (rng.uniform(size=(T, 2, 5, 5)) < 0.4).astype(float)
    cur = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), torch.tensor(bias), padding=padding,
                                     dilation=2, groups=2).numpy()
    v, ref = np.zeros(shape), []
    for t in range(T):
        v = v + dt * 400.0 * cur[t]
        z = v > 1.0
        v[z] = -0.1
        ref.append(z.astype(np.uint8))
    res = run_nir(g, x, dt=dt)
    _same(np.array(ref), res["output"], f"grouped dilated conv, padding {padding}")


def test_readme_table_matches_the_tested_tool_graphs():
    """The README's tools x node types table is what the tool cases above export and check."""
    import re
    from pathlib import Path

    from biosnn.frontends.nir.graph import flatten
    text = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    table = text.split("<!-- nir-table -->")[1].split("<!-- /nir-table -->")[0].strip().splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    rows = {r.strip("|").split("|")[0].strip(): [c.strip() for c in r.strip("|").split("|")[1:]] for r in table[2:]}
    assert set(rows) == set(CASES)
    for tool, cases in CASES.items():
        found = {}
        for case in cases:
            g, _, _, what = case()
            flat = flatten(g)
            for node in flat.nodes.values():
                kind = type(node).__name__
                found[kind] = "values" if kind in ("LI", "CubaLI", "I") else "spikes"
            if flat.back:
                found["recurrent"] = "spikes"
        want = [found.get(col, "-") for col in header[1:]]
        assert rows[tool] == want, f"README row {tool}: {rows[tool]} but the tests check {want}"
    assert re.search(r"\| rockpool \|", text)


def test_cli_run_and_export_nir(tmp_path, capsys):
    from biosnn.cli import main
    g, x, ref, _ = snntorch_ff_cuba()
    path = tmp_path / "model.nir"
    nir.write(str(path), g)
    np.save(tmp_path / "x.npy", x.numpy())
    assert main(["run", str(path), "--input", str(tmp_path / "x.npy"), "--flavor", "snntorch",
                 "--out", str(tmp_path / "run")]) == 0
    got = np.load(tmp_path / "run" / "spikes.npz")
    _same(ref, got["output"], "biosnn run model.nir")
    assert "output: shape (25, 4)" in capsys.readouterr().out
    from_nir(g, flavor="snntorch", x=x.numpy()).save(tmp_path / "spec.yaml")
    assert main(["export-nir", str(tmp_path / "spec.yaml"), str(tmp_path / "back.nir")]) == 0
    back = nir.read(str(tmp_path / "back.nir"))
    assert set(back.nodes) == set(g.nodes)
    np.testing.assert_array_equal(back.nodes["2"].weight, np.asarray(g.nodes["2"].weight, dtype=np.float64))
    assert main(["run", str(path), "--flavor", "snntorch"]) == 2
    assert "needs --input x.npy" in capsys.readouterr().err


@pytest.mark.parametrize("tool, case", _ALL, ids=[c.__name__ for _, c in _ALL])
def test_tool_graph_through_biosnn_export_file_still_matches_the_tool(tool, case, tmp_path):
    """tool -> NIR -> spec -> NIR file (to_nir, nir.write) -> run_nir with flavor auto: the tool's spikes again
    (to_nir stores the discretisation in the metadata and writes Norse's dt*tau back as plain tau)."""
    g, x, ref, what = case()
    back = to_nir(from_nir(g, flavor=tool, x=x.numpy()))
    nir.write(str(tmp_path / "back.nir"), back)
    res = run_nir(str(tmp_path / "back.nir"), x.numpy())
    _check(tool, case, res, ref, what)


def test_flavor_auto_reads_the_producer_from_the_file():
    from biosnn.frontends.nir import detect_flavor
    g, x, ref, what = rockpool_cuba()
    assert detect_flavor(g) == "rockpool"  # Rockpool names its nodes after its modules (0_LIFTorch)
    _check("rockpool", rockpool_cuba, run_nir(g, x.numpy()), ref, what)
    g, x, ref, what = snntorch_ff_cuba()
    assert detect_flavor(g) is None
    with pytest.raises(ConversionError, match="give dt="):
        run_nir(g, x.numpy())
    g.metadata = {"producer": b"snnTorch"}
    _check("snntorch", snntorch_ff_cuba, run_nir(g, x.numpy()), ref, what)


def test_static_node_with_two_inputs_sums_them_and_adds_its_bias_once():
    """NIR edges into one node sum: Affine(x1 + x2) = W (x1 + x2) + b, with two IF layers feeding it."""
    dt, W, b = 1e-3, np.array([[0.7, -0.2], [0.4, 0.9]]), np.array([0.3, -0.1])
    ones = np.ones(2)
    g = nir.NIRGraph(nodes={"input": nir.Input(input_type={"input": np.array([2])}),
                            "a": nir.IF(r=ones * 1000, v_threshold=ones * 0.5, v_reset=0 * ones),
                            "c": nir.IF(r=ones * 1000, v_threshold=ones * 0.8, v_reset=0 * ones),
                            "aff": nir.Affine(weight=W, bias=b), "li": nir.I(r=ones * 1000),
                            "output": nir.Output(output_type={"output": np.array([2])})},
                     edges=[("input", "a"), ("input", "c"), ("a", "aff"), ("c", "aff"), ("aff", "li"),
                            ("li", "output")],
                     type_check=False)
    x = np.random.default_rng(4).uniform(0, 0.6, size=(T, 2))
    va, vc, v, out, spk = np.zeros(2), np.zeros(2), np.zeros(2), [], []
    for t in range(T):
        va, vc = va + x[t], vc + x[t]
        za, zc = va > 0.5, vc > 0.8
        va[za], vc[zc] = 0, 0
        v = v + W @ (za + zc.astype(float)) + b
        out.append(v.copy())
        spk.append(za)
    res = run_nir(g, x, dt=dt)
    np.testing.assert_array_equal(res["a"], np.array(spk, dtype=np.uint8))
    np.testing.assert_allclose(res["output"], np.array(out), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- biosnn's converted networks -> NIR

TC = 24  # steps per sample of the converted networks


@pytest.fixture(scope="module")
def converted(digits):
    """Rate-coded conversions of two small digits networks trained briefly: a CNN (conv, average pooling,
    flatten, linear; analog input, potential readout) and an MLP (Poisson input, spike readout)."""
    import biosnn
    import torch.nn as nn
    from biosnn.datasets import train_classifier
    x, y, xt, yt = digits
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64, 10))
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    for net in (cnn, mlp):
        train_classifier(net, x, y, epochs=12, lr=3e-3)
    snn_cnn = biosnn.convert(cnn, "rate", calibration=x[:200], input_shape=(1, 8, 8), T=TC)
    snn_mlp = biosnn.convert(mlp, "rate", calibration=x[:200], input_shape=(1, 8, 8), T=TC, input_mode="poisson",
                             readout="spikes")
    return snn_cnn, snn_mlp, np.asarray(xt), np.asarray(yt)


def _graph_params(g):
    out = {}
    for name, node in g.nodes.items():
        fields = {k: np.asarray(v) for k, v in vars(node).items() if isinstance(v, np.ndarray)}
        out[name] = (type(node).__name__, fields)
    return out


def test_converted_cnn_exports_to_nir_and_reimports_spike_identically(converted):
    """to_nir(SNN): IF nodes behind NIR's static nodes; biosnn runs the graph (its stored discretisation: >=,
    reset by subtraction) with the same spikes, step for step, as the rate coding's exact reference, and the
    Output, summed over the steps, is the readout potential."""
    from biosnn.codings.rate.reference import simulate_rate
    snn, _, xt, _ = converted
    g = to_nir(snn)
    kinds = {k: type(v).__name__ for k, v in g.nodes.items()}
    assert kinds == {"input": "Input", "L1_conv2d": "Conv2d", "L1": "IF", "L2_avgpool2d": "AvgPool2d", "L2": "IF",
                     "L3_flatten": "Flatten", "L3_linear": "Affine", "output": "Output"}
    assert g.metadata["producer"] == "biosnn"
    ref = simulate_rate(snn.graph, xt[:2], TC, thresholds=snn.thresholds, readout="potential", record_trains=True)
    pops = snn.layer_populations()
    for k in range(2):
        res = run_nir(g, np.repeat(xt[k:k + 1], TC, axis=0))
        for layer in ("0", "2"):
            _same(ref.trains[layer][k], res[pops[layer]].reshape(TC, -1), f"sample {k} layer {layer}")
        np.testing.assert_allclose(res["output"].sum(0) / TC, ref.scores[k], rtol=1e-12, atol=1e-14)


def test_converted_residual_network_exports_with_a_scale_shortcut(residual_block, digits):
    """A residual block: the virtual branch's conv and the shortcut (a Scale: normalisation rescales it) both feed
    the add layer's IF node, which sums them, as the rate coding does."""
    import biosnn
    from biosnn.codings.rate.reference import simulate_rate
    x = digits[0]
    snn = biosnn.convert(residual_block, "rate", calibration=x[:100], input_shape=(1, 8, 8), T=12)
    g = to_nir(snn)
    assert {("L2", "L3_conv2d_0"), ("L1", "L3_scale_1"), ("L3_conv2d_0", "L3"), ("L3_scale_1", "L3")} <= set(g.edges)
    ref = simulate_rate(snn.graph, x[:1], 12, thresholds=snn.thresholds, readout="potential", record_trains=True)
    res = run_nir(g, np.repeat(x[:1], 12, axis=0))
    for layer, pop in snn.layer_populations().items():
        if pop in res:
            _same(ref.trains[layer][0], res[pop].reshape(12, -1), f"layer {layer}")
    np.testing.assert_allclose(res["output"].sum(0) / 12, ref.scores[0], rtol=1e-12, atol=1e-14)


def test_converted_round_trip_spec_nir_spec(converted):
    """SNN -> NIR -> spec -> NIR: every node, parameter, edge and the discretisation come back unchanged."""
    snn, _, _, _ = converted
    g = to_nir(snn)
    back = to_nir(from_nir(g))
    a, b = _graph_params(g), _graph_params(back)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name][0] == b[name][0], name
        assert a[name][1].keys() == b[name][1].keys(), name
        for f in a[name][1]:
            np.testing.assert_array_equal(a[name][1][f], b[name][1][f], err_msg=f"{name}.{f}")
    assert set(back.edges) == set(g.edges)
    import json
    from biosnn.frontends.nir.flavors import METADATA_KEY
    assert json.loads(back.metadata[METADATA_KEY]) == json.loads(g.metadata[METADATA_KEY])


def test_converted_mlp_poisson_spike_readout(converted):
    """Poisson input (the graph takes the 0/1 trains) and an IF output layer: same spikes as the reference."""
    from biosnn.codings.rate.reference import poisson_trains, simulate_rate
    _, snn, xt, _ = converted
    g = to_nir(snn)
    assert [type(g.nodes[k]).__name__ for k in ("L1_linear", "L1", "L2_linear", "L2")] == ["Affine", "IF"] * 2
    trains = poisson_trains(xt[:1] / snn.graph.input_scale, TC, seed=3)
    ref = simulate_rate(snn.graph, trains, TC, thresholds=snn.thresholds, input_mode="spikes", readout="spikes",
                        record_trains=True)
    res = run_nir(g, trains[0].reshape(TC, 1, 8, 8))
    pops = snn.layer_populations()
    for layer in (k for k in ref.trains if k != "input"):
        _same(ref.trains[layer][0], res[pops[layer]].reshape(TC, -1), f"layer {layer}")
    _same(ref.trains[snn.graph.output][0], res["output"], "output")


def _spikingjelly_run(net, x, T, hooks=True):
    """Run a SpikingJelly graph imported from NIR for T steps of constant input x; (outputs, {node: spikes})."""
    spikes = {}
    handles = [mod.register_forward_hook(lambda m, i, o, name=name: spikes.setdefault(name, []).append(
        o[0].detach().numpy().copy())) for name, mod in net.named_modules()
        if type(mod).__name__ == "_NIRStatefulModule"] if hooks else []
    state, outs = None, []
    with torch.no_grad():
        for _ in range(T):
            o, state = net(torch.tensor(x, dtype=torch.float64), state)
            outs.append(o.numpy())
    for h in handles:
        h.remove()
    return np.array(outs), {k: np.array(v) for k, v in spikes.items()}


def test_converted_network_reimported_by_spikingjelly(converted):
    """SpikingJelly's NIR importer builds IFNode(v_reset=0): NIR's IF, which resets to v_reset.  As imported, biosnn
    reproduces it exactly (flavor spikingjelly), and its predictions differ from the rate coding's (reset by
    subtraction) on some samples; with the IF nodes switched to SpikingJelly's soft reset (v_reset=None), as the
    graph's metadata says (reset="subtract", threshold ">="), predictions and spike counts equal biosnn's SNN."""
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based.nir_exchange import import_from_nir
    from biosnn.frontends.nir.snn_export import DT
    snn, _, xt, _ = converted
    g = to_nir(snn)
    net = import_from_nir(g, dt=DT, dtype=torch.float64)
    n = 60
    ours = snn.run(xt[:n], backend="runtime", progress=False)
    hard, spikes = _spikingjelly_run(net, xt[:n], TC)
    res = run_nir(g, np.repeat(xt[:1], TC, axis=0), flavor="spikingjelly", dt=DT)
    for name, pop in zip(sorted(spikes), ("L1", "L2")):
        _same(spikes[name][:, 0].reshape(TC, -1), res[pop].reshape(TC, -1), f"hard reset, {pop}")
    np.testing.assert_allclose(res["output"], hard[:, 0], rtol=1e-12, atol=1e-12)
    agree_hard = np.mean(hard.sum(0).argmax(1) == ours.predictions)
    assert 0.5 < agree_hard < 1.0, agree_hard  # the reset differs: some predictions do
    for mod in net.modules():
        if type(mod).__name__ == "IFNode":
            mod.v_reset = None
    soft, spikes = _spikingjelly_run(net, xt[:n], TC)
    np.testing.assert_array_equal(soft.sum(0).argmax(1), ours.predictions)
    np.testing.assert_allclose(soft.sum(0) / TC, ours.scores, rtol=1e-9, atol=1e-12)
    for name, layer in zip(sorted(spikes), ("0", "2")):
        np.testing.assert_array_equal(spikes[name].reshape(TC, n, -1).sum((0, 2)), ours.layer_spikes[layer])


def test_converted_export_refusals(converted, digits):
    """Networks NIR cannot express are refused with the layer or population, the model and the reason."""
    import biosnn
    import torch.nn as nn
    x = digits[0][:50]
    torch.manual_seed(0)
    pooled = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(18, 10))
    with pytest.raises(ConversionError, match=r"layer '2' \(.*MaxPool2d.*\) is max pooling.*no such node"):
        to_nir(biosnn.convert(pooled, "rate", calibration=x, input_shape=(1, 8, 8), T=8))
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    with pytest.raises(ConversionError, match="tdsnn network.*population 'T1' \\(model 'tdsnn_tick'\\).*clock"):
        to_nir(biosnn.convert(mlp, "tdsnn", calibration=x, input_shape=(1, 8, 8)))
    with pytest.raises(ConversionError,
                       match="tpc network.*population 'L1' \\(model 'tpc_stage'\\).*do not depend on time"):
        to_nir(biosnn.convert(mlp, "tpc", calibration=x, input_shape=(1, 8, 8)))
    stc = biosnn.prepare(mlp, "stc", calibration=torch.tensor(x))
    with pytest.raises(ConversionError, match="stc network.*population 'L1' \\(model 'inline': .*decaying threshold.*"
                                              "NIR's thresholds are constant"):
        to_nir(biosnn.convert(stc, "stc", calibration=x, input_shape=(1, 8, 8)))
    qcfs = biosnn.prepare(mlp, "rate", levels=4)
    with pytest.raises(ConversionError, match="half their threshold|0.5 x threshold.*no initial state"):
        to_nir(biosnn.convert(qcfs, "rate", calibration=x, input_shape=(1, 8, 8), T=8))
    with pytest.raises(ConversionError, match="pass the SNN object"):
        to_nir(converted[0].spec)
    from biosnn.spec import model as m
    spec = m.NetworkSpec("lifs", populations=[m.Population("exc", 3, "lif")], duration="1*ms")
    with pytest.raises(ConversionError, match="population 'exc' \\(model lif: .*refractory period"):
        to_nir(spec)


# --------------------------------------------------------------------------- NEST: feed-forward IF/LIF graphs

@pytest.fixture(scope="module")
def nest_backend(build_cache):
    """The NEST backend with the session's NESTML module cache; skips where NEST, NESTML or the toolchain is missing."""
    import os
    import shutil
    os.environ.setdefault("PYNEST_QUIET", "1")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    pytest.importorskip("nest")
    pytest.importorskip("pynestml")
    if not (shutil.which("cmake") and shutil.which("g++")):
        pytest.skip("NESTML needs cmake and g++")
    from biosnn import get_backend
    return get_backend("nest", cache_dir=build_cache / "nestml")


@pytest.mark.nestml
@pytest.mark.parametrize("tool, case", [("norse", norse_conv), ("sinabs", sinabs_conv)],
                         ids=["norse-LIF-euler-IF-step-reset-to-value", "sinabs-IF-LIF-exact-subtract"])
def test_feed_forward_graph_runs_on_nest_spike_identically(nest_backend, tool, case):
    """NEST runs a tool's feed-forward graph (conv, pooling, flatten, linear between IF/LIF layers) with the spikes
    of the tool and of biosnn's Brian2 form, step for step (each neuron layer one step later inside NEST)."""
    g, x, ref, what = case()
    a = run_nir(g, x.numpy(), flavor=tool)
    b = run_nir(g, x.numpy(), flavor=tool, backend=nest_backend)
    assert a.keys() == b.keys()
    for k in a:
        _same(a[k], b[k], f"{tool} node {k} on NEST")
    _check(tool, case, b, ref, what)


def test_nest_form_of_a_converted_network_and_refusals(converted):
    """The NEST form (built without NEST): layers shifted a step each, static nodes composed into one delayed
    projection per layer pair, drive and leak written per step; graphs that do not map are refused."""
    from biosnn.frontends.nir.nest_plan import nest_build
    snn, _, xt, _ = converted
    x = np.repeat(xt[:1], TC, axis=0)
    nimp = nest_build(to_nir(snn), x)
    spec = nimp.spec
    assert [p.name for p in spec.populations] == ["L1", "L2"] and not any(p.operations for p in spec.populations)
    assert [(p.source, p.target, p.delay) for p in spec.projections] == [("L1", "L2", None)]
    assert nimp.layer == {"input": 0, "L1": 1, "L2": 2}
    drive = {i.target: np.asarray(i.values.data) for i in spec.inputs}
    assert len(drive["L1"]) == TC + 1 and not np.any(drive["L2"][0]) and np.any(drive["L1"][0])
    g = _graph()
    with pytest.raises(ConversionError, match="cannot run on NEST: recurrent edges"):
        nest_build(g, np.zeros((2, 1, 4, 4)))
    flat = nir.NIRGraph(nodes={k: v for k, v in g.nodes.items() if k != "sub"} | {"output": g.nodes["output"]},
                        edges=[("input", "conv"), ("conv", "if"), ("if", "pool"), ("pool", "flat"), ("flat", "aff"),
                               ("aff", "cuba"), ("cuba", "output")], metadata=g.metadata, type_check=False)
    with pytest.raises(ConversionError, match="node 'cuba' is a CubaLIF; NEST runs NIR's IF and LIF"):
        nest_build(flat, np.zeros((2, 1, 4, 4)))


# --------------------------------------------------------------------------- specs of the library's IF neuron -> NIR

def _if_subtract_spec():
    """Input (4 spike sources) -> 3 if_subtract neurons (constant currents) -> 2 if_subtract neurons."""
    from biosnn.spec import model as m
    from biosnn.spec.values import ArrayValue as A
    rng = np.random.default_rng(5)
    steps, dt_ms = 60, 0.1
    k = np.flatnonzero(rng.random((steps, 4)).ravel() < 0.3)
    return m.NetworkSpec(
        "ifs", dt=f"{dt_ms}*ms", duration=f"{steps * dt_ms}*ms",
        inputs=[m.SpikeTimesInput("stim", 4, indices=A(k % 4), times=A((k // 4) * dt_ms, "ms"))],
        populations=[m.Population("h", 3, "if_subtract", parameters={"v_th": "15*mV"},
                                  initial={"I": A([0.3, 0.0, 0.7], "nA")}),
                     m.Population("o", 2, "if_subtract", parameters={"C_m": "200*pF"})],
        projections=[m.Projection("stim_h", "stim", "h", "delta_voltage", connect=m.AllToAll(),
                                  weights=A(rng.uniform(2, 9, 12), "mV")),
                     m.Projection("h_o", "h", "o", "delta_voltage", connect=m.AllToAll(),
                                  weights=A(rng.uniform(-4, 14, 6), "mV"))],
        monitors=[m.SpikeMonitor("h"), m.SpikeMonitor("o")])


def test_library_if_subtract_spec_exports_with_delays_and_runs_identically():
    """A spec of the library's if_subtract neurons: Brian2 (runtime) and the exported NIR graph re-imported give the
    same spikes; spec -> NIR -> spec -> NIR keeps every node, parameter and edge."""
    from biosnn import get_backend
    from biosnn.frontends.nir.library_export import input_raster
    spec = _if_subtract_spec()
    g = to_nir(spec)
    assert {k: type(v).__name__ for k, v in g.nodes.items()} == {
        "stim": "Input", "h": "IF", "o": "IF", "stim_h_delay": "Delay", "stim_h": "Affine", "h_o_delay": "Delay",
        "h_o": "Affine", "output": "Output"}
    np.testing.assert_allclose(g.nodes["h"].r, 1 / 250e-12)
    rec = get_backend("runtime").build(spec).run(progress=False)
    x = input_raster(spec)
    res = run_nir(g, x)
    for pop in ("h", "o"):
        ref = np.zeros((len(x), spec.node(pop).size), dtype=np.uint8)
        ref[np.rint(rec.spikes[pop].times / 1e-4).astype(int), rec.spikes[pop].indices] = 1
        _same(ref, res[pop], f"population {pop}")
    back = to_nir(from_nir(g))
    a, b = _graph_params(g), _graph_params(back)
    assert a.keys() == b.keys() and set(back.edges) == set(g.edges)
    for name in a:
        for f in a[name][1]:
            np.testing.assert_array_equal(a[name][1][f], b[name][1][f], err_msg=f"{name}.{f}")


def test_library_spec_refusals():
    from dataclasses import replace

    from biosnn.spec import model as m
    spec = _if_subtract_spec()
    with pytest.raises(ConversionError, match="projection 'h_o': a synaptic delay"):
        to_nir(replace(spec, projections=[spec.projections[0], replace(spec.projections[1], delay="1*ms")]))
    with pytest.raises(ConversionError, match="population 'o' \\(model lif: .*refractory.*lost"):
        to_nir(replace(spec, populations=[spec.populations[0], replace(spec.populations[1], model="lif",
                                                                        parameters={})]))
    with pytest.raises(ConversionError, match="inputs: \\['PoissonInput'\\]"):
        to_nir(replace(spec, inputs=[m.PoissonInput("stim", 4, rates="10*Hz")]))
