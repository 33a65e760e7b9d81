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


# --------------------------------------------------------------------------- snnTorch

def _snntorch_run(net, x):
    from snntorch import utils
    utils.reset(net)
    out = []
    with torch.no_grad():
        for t in range(len(x)):
            s = net(x[t][None])
            out.append((s[0] if isinstance(s, tuple) else s)[0].numpy())
    return np.array(out)


def _snntorch_export(net, n_in):
    from snntorch import utils
    from snntorch.export_nir import export_to_nir
    g = export_to_nir(net, torch.zeros(1, n_in), ignore_dims=[0])
    utils.reset(net)
    return g


@pytest.fixture(scope="module")
def snntorch_nets():
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(3)
    ff = torch.nn.Sequential(torch.nn.Linear(6, 5), snn.Leaky(beta=torch.full((5,), 0.9), threshold=torch.ones(5),
                                                               init_hidden=True),
                             torch.nn.Linear(5, 4), snn.Synaptic(alpha=torch.full((4,), 0.8), beta=torch.full((4,), 0.9),
                                                                 threshold=torch.ones(4), init_hidden=True, output=True))
    rec = torch.nn.Sequential(torch.nn.Linear(6, 5), snn.RLeaky(beta=torch.full((5,), 0.85), threshold=torch.ones(5),
                                                                linear_features=5, init_hidden=True, output=True))
    with torch.no_grad():
        rec[0].weight.mul_(4.0)
        rec[1].recurrent.weight.mul_(2.0)
    return {"ff": (ff, 6), "recurrent": (rec, 6)}


@pytest.mark.parametrize("kind", ["ff", "recurrent"])
def test_snntorch_spike_identical(snntorch_nets, kind):
    net, n_in = snntorch_nets[kind]
    g = _snntorch_export(net, n_in)
    x = _bernoulli((n_in,), seed=1)
    ref = _snntorch_run(net, x)
    res = run_nir(g, x.numpy(), flavor="snntorch")
    _same(ref, res["output"], f"snntorch {kind}")


# --------------------------------------------------------------------------- Norse

def test_norse_spike_identical():
    norse = pytest.importorskip("norse.torch")
    torch.manual_seed(4)
    net = norse.SequentialState(torch.nn.Linear(6, 5), norse.LIFBoxCell(), torch.nn.Linear(5, 4), norse.LIFCell(),
                                torch.nn.Linear(4, 3), norse.IAFCell())
    with torch.no_grad():
        for k in (0, 2, 4):
            net[k].weight.mul_(6.0)
    g = norse.to_nir(net, torch.zeros(1, 6))
    x = _bernoulli((6,), seed=2)
    state, out = None, []
    with torch.no_grad():
        for t in range(T):
            z, state = net(x[t][None], state)
            out.append(z[0].numpy())
    res = run_nir(g, x.numpy(), flavor="norse")
    _same(np.array(out), res["output"], "norse LIFBox/LIF(Cuba)/IAF")


# --------------------------------------------------------------------------- SpikingJelly

def test_spikingjelly_spike_identical():
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, layer, neuron
    from spikingjelly.activation_based.nir_exchange import export_to_nir
    torch.manual_seed(5)
    net = torch.nn.Sequential(layer.Conv2d(1, 2, 3, padding=1), neuron.LIFNode(tau=2.0),
                              layer.AvgPool2d(2), layer.Flatten(), layer.Linear(2 * 3 * 3, 4),
                              neuron.CUBALIFNode(c_decay=0.6, v_decay=0.7), layer.Linear(4, 3), neuron.IFNode())
    with torch.no_grad():
        net[0].weight.mul_(3.0)
        net[4].weight.mul_(4.0)
        net[6].weight.mul_(4.0)
    x = _bernoulli((1, 6, 6), seed=3)
    g = export_to_nir(net, torch.zeros(1, 1, 6, 6))
    functional.reset_net(net)
    with torch.no_grad():
        out = [net(x[t][None])[0].numpy() for t in range(T)]
    res = run_nir(g, x.numpy(), flavor="spikingjelly")
    _same(np.array(out), res["output"], "spikingjelly conv/avgpool/LIF/CUBALIF/IF")


# --------------------------------------------------------------------------- sinabs

def test_sinabs_spike_identical():
    sinabs = pytest.importorskip("sinabs")
    import sinabs.layers as sl
    from sinabs.activation import SingleSpike
    torch.manual_seed(6)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1, bias=False), sl.IAFSqueeze(batch_size=1, spike_fn=SingleSpike),
                              sl.SumPool2d(2), torch.nn.Flatten(), torch.nn.Linear(2 * 3 * 3, 4),
                              sl.LIFSqueeze(tau_mem=torch.tensor(5.0), batch_size=1, spike_fn=SingleSpike))
    with torch.no_grad():
        net[0].weight.mul_(2.0)
        net[4].weight.mul_(4.0)
    x = _bernoulli((1, 6, 6), seed=4)
    net(torch.zeros(T, 1, 6, 6))  # sinabs needs one forward pass to know its state shapes
    g = sinabs.to_nir(net, torch.zeros(T, 1, 6, 6))
    net.apply(lambda mod: mod.reset_states() if hasattr(mod, "reset_states") else None)
    with torch.no_grad():
        out = net(x).numpy()  # Squeeze layers: batch 1 x T steps folded into dim 0
    res = run_nir(g, x.numpy(), flavor="sinabs")
    _same(out, res["output"], "sinabs conv/IAF/SumPool/LIF")


# --------------------------------------------------------------------------- Rockpool

def test_rockpool_spike_identical():
    pytest.importorskip("rockpool")
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch
    from rockpool.nn.modules.torch.nir import to_nir as rockpool_to_nir
    torch.manual_seed(7)
    net = Sequential(LinearTorch((6, 5)), LIFTorch(5, max_spikes_per_dt=1),
                     LinearTorch((5, 4)), LIFTorch(4, max_spikes_per_dt=1))
    with torch.no_grad():
        net[0].weight.mul_(6.0)
        net[2].weight.mul_(6.0)
    g = rockpool_to_nir(net)
    x = _bernoulli((6,), seed=5)
    with torch.no_grad():
        out, _, _ = net(x[None])
    res = run_nir(g, x.numpy(), flavor="rockpool")
    _same(out[0].numpy(), res["output"], "rockpool Linear/LIFTorch(CubaLIF)")


# --------------------------------------------------------------------------- cpp_standalone, round trips, errors

@pytest.mark.standalone
def test_snntorch_recurrent_cpp_standalone_equals_runtime_and_tool(snntorch_nets, build_cache):
    from biosnn import get_backend
    net, n_in = snntorch_nets["recurrent"]
    g = _snntorch_export(net, n_in)
    x = _bernoulli((n_in,), seed=1)
    ref = _snntorch_run(net, x)
    res = run_nir(g, x.numpy(), flavor="snntorch", backend=get_backend("cpp_standalone", cache_dir=build_cache))
    _same(ref, res["output"], "snntorch recurrent on cpp_standalone")


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
                                                   v_leak=np.zeros(3), v_threshold=np.full(3, 0.2), w_in=np.full(3, 80.0)),
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
                np.testing.assert_array_equal(np.broadcast_to(np.asarray(a, float), np.shape(b)), b, err_msg=f"{name}.{f}")
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
                              "mp": nir.CubaLI(tau_syn=np.ones(2), tau_mem=np.ones(2), r=np.ones(2), v_leak=np.zeros(2)),
                              "output": nir.Output(output_type={"output": np.array([2])})},
                       edges=[("input", "mp"), ("mp", "output")], type_check=False)
    bad.nodes["mp"] = object.__new__(type("MaxPool2d", (), {}))
    with pytest.raises(ConversionError, match="NIR node 'mp' has type MaxPool2d.*supported: Input, Output"):
        from_nir(bad, dt=1e-3)
    with pytest.raises(ConversionError, match="unknown NIR flavor 'brian'"):
        from_nir(g, flavor="brian")
    import biosnn
    with pytest.raises(ConversionError, match="population 'exc'.*no NIR counterpart"):
        to_nir(biosnn.load("network_specs/cuba.yaml"))
