"""Brian2 constructs of the spec format, against the same network written directly in Brian2.

One small scenario (``_scenario``) uses them all: ``connect`` conditions and ``p`` expressions of
``i, j`` and the generator ``j='N_post - 1 - i'`` (:class:`Condition`), subgroups (``a[5:10]``) as
projection ends, current-input targets and monitor sources, spike
monitors with variables, population-rate monitors, a state monitor of a projection's synaptic
variable, a synapse model with two pathways of their own delays, synapses onto the synapses of
another projection, and a protocol of two segments that changes a population variable and a synaptic
variable between them.  ``_original`` is the same network as a plain Brian2 script (explicit
``Network``, same seed, same order of random draws).

* runtime: every recorded figure equals the original's (spikes, values at spikes, rates, traces, and
  the synapses drawn by the ``p`` expression: Brian2 draws them, from the same seed);
* cpp_standalone (one build): everything that does not depend on random numbers equals the original
  run on Brian2's runtime (spike indices exactly, times and values within 1e-9 relative); the ``p``
  projection's random draws come from the C++ generator: its synapse count is within six standard
  deviations of the expectation, every pair lies in range;
* NEST: conditions and subgroups (but current inputs onto them) run through the deterministic
  expansion (``biosnn.spec.expand``), rate monitors from recorded spikes, protocols setting neuron variables between ``nest.Run`` calls;
  protocols setting synaptic variables, spike monitors with variables, synaptic state monitors, pathways
  and synapses onto synapses are refused with the construct and the alternative named.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

os.environ.setdefault("PYNEST_QUIET", "1")

from biosnn import get_backend  # noqa: E402
from biosnn.backends.registry import available_backends  # noqa: E402
from biosnn.errors import BackendError, SpecError  # noqa: E402
from biosnn.recording import Recording  # noqa: E402
from biosnn.spec import load_spec, save_spec  # noqa: E402
from biosnn.spec import model as m  # noqa: E402
from biosnn.spec.expand import expand_projection  # noqa: E402
from biosnn.spec.values import ArrayValue  # noqa: E402

LIF = m.NeuronModel("dv/dt = (I - v)/(10*ms) : volt (unless refractory)\nI : volt", threshold="v > 10*mV",
                    reset="v = 0*mV", refractory="2*ms", method="exact")
DELTA = m.SynapseModel("w : volt", on_pre="v_post += w")
TRACE = m.SynapseModel("w : volt\ndx/dt = -x/(5*ms) : 1 (clock-driven)", on_pre="v_post += w\nx += 1")
PAIRS = m.SynapseModel("w : volt\npair : 1", on_pre="v_post += w")
PATHS = m.SynapseModel("w : volt", on_pre={"up": "v_post += w", "down": "v_post -= 0.5*w"})
MOD = m.SynapseModel("", on_pre="w_post += 0.2*mV")  # onto the synapses of 'ring'
P_RND = "0.4*exp(-abs(i - j)/4.0)"
CUR = 10.5 + np.arange(25.0).reshape(5, 5) % 7 * 0.5  # mV: 5 steps of 10 ms x the 5 neurons of a[15:20]
SEED = 7


def _scenario(**changes) -> m.NetworkSpec:
    spec = m.NetworkSpec(
        "constructs", dt="0.1*ms", duration="50*ms", seed=SEED,
        populations=(m.Population("a", 20, LIF, initial={"I": "9*mV + i*0.3*mV"}),
                     m.Population("b", 10, LIF, initial={"I": "9*mV"})),
        inputs=(m.SpikeTimesInput("s", 5, ArrayValue(np.arange(5), "1"),
                                  ArrayValue(np.array([2.0, 4, 6, 8, 10]), "ms")),
                m.CurrentInput("cur", "a[15:20]", "I", ArrayValue(CUR, "mV"), "10*ms")),
        projections=(
            m.Projection("inp", "s", "a[5:10]", DELTA, m.Condition("i == j"), weights="8*mV"),
            m.Projection("ring", "a", "a", TRACE, m.Condition("i != j and abs(i - j) <= 2"), weights="0.5*mV",
                         delay="1*ms"),
            m.Projection("rnd", "a[0:10]", "b", PAIRS, m.Condition(p=P_RND), weights="3*mV",
                         initial={"pair": "i*100 + j"}),
            m.Projection("paths", "s", "a[10:15]", PATHS, m.Condition("i == j"), weights="6*mV",
                         delay={"up": "1*ms", "down": "3*ms"}),
            m.Projection("mod", "s", "ring", MOD, m.Condition("i == 0 and j < 4")),
            m.Projection("rev", "s", "a[0:5]", DELTA, m.Condition(j="N_post - 1 - i"), weights="4*mV")),
        monitors=(m.SpikeMonitor("a", ("v", "I")), m.SpikeMonitor("b"), m.SpikeMonitor("a[10:20]"),
                  m.RateMonitor("a"), m.RateMonitor("a[0:10]"), m.StateMonitor("a[0:3]", ("v",)),
                  m.StateMonitor("ring", ("x", "w"), indices=(0, 1, 5))),
        protocol=(m.Segment("20*ms"), m.Segment("30*ms", {"a.I": "12*mV", "ring.w": "0.8*mV"})))
    return spec.replace(**changes) if changes else spec


def _original() -> dict:
    """The scenario as a Brian2 script (runtime), with what it records."""
    import brian2 as b2
    from brian2.devices.device import set_device
    set_device("runtime")
    b2.prefs.codegen.target = "numpy"  # biosnn's runtime backend (Cython rounds differently in the last bit)
    b2.seed(SEED)
    ns = {"cur": b2.TimedArray(CUR * b2.mV, dt=10 * b2.ms, name="cur")}
    eqs = LIF.equations
    a = b2.NeuronGroup(20, eqs, threshold="v > 10*mV", reset="v = 0*mV", refractory=2 * b2.ms, method="exact",
                       namespace=ns, name="a")
    a.I = "9*mV + i*0.3*mV"
    b = b2.NeuronGroup(10, eqs, threshold="v > 10*mV", reset="v = 0*mV", refractory=2 * b2.ms, method="exact",
                       namespace=ns, name="b")
    b.I = "9*mV"
    s = b2.SpikeGeneratorGroup(5, np.arange(5), np.array([2.0, 4, 6, 8, 10]) * b2.ms, name="s")
    inp = b2.Synapses(s, a[5:10], "w : volt", on_pre="v_post += w", namespace=ns, name="inp")
    inp.connect(condition="i == j")
    inp.w = 8 * b2.mV
    ring = b2.Synapses(a, a, TRACE.equations, on_pre=TRACE.on_pre, namespace=ns, name="ring")
    ring.connect(condition="i != j and abs(i - j) <= 2")
    ring.w = 0.5 * b2.mV
    ring.delay = 1 * b2.ms
    rnd = b2.Synapses(a[0:10], b, PAIRS.equations, on_pre=PAIRS.on_pre, namespace=ns, name="rnd")
    rnd.connect(p=P_RND)
    rnd.w = 3 * b2.mV
    rnd.pair = "i*100 + j"
    paths = b2.Synapses(s, a[10:15], "w : volt", on_pre={"up": "v_post += w", "down": "v_post -= 0.5*w"},
                        delay={"up": 1 * b2.ms, "down": 3 * b2.ms}, namespace=ns, name="paths")
    paths.connect(condition="i == j")
    paths.w = 6 * b2.mV
    rev = b2.Synapses(s, a[0:5], "w : volt", on_pre="v_post += w", namespace=ns, name="rev")
    rev.connect(j="N_post - 1 - i")
    rev.w = 4 * b2.mV
    cur_op = a[15:20].run_regularly("I = cur(t, i)", dt=10 * b2.ms, when="start")  # i counts from 15
    mod = b2.Synapses(s, ring, on_pre="w_post += 0.2*mV", namespace=ns, name="mod")
    mod.connect(condition="i == 0 and j < 4")
    sa = b2.SpikeMonitor(a, variables=["v", "I"])
    sb, sa2 = b2.SpikeMonitor(b), b2.SpikeMonitor(a[10:20])
    ra, ra2 = b2.PopulationRateMonitor(a), b2.PopulationRateMonitor(a[0:10])
    va = b2.StateMonitor(a[0:3], "v", record=True)
    xr = b2.StateMonitor(ring, ["x", "w"], record=[0, 1, 5])
    net = b2.Network(a, b, s, inp, ring, rnd, paths, mod, rev, cur_op, sa, sb, sa2, ra, ra2, va, xr)
    b2.defaultclock.dt = 0.1 * b2.ms
    net.run(20 * b2.ms, namespace={})
    a.I = 12 * b2.mV
    ring.w = 0.8 * b2.mV
    net.run(30 * b2.ms, namespace={})
    return {"a": (sa.t_[:].copy(), np.asarray(sa.i[:]).copy()), "a.v": sa.v_[:].copy(), "a.I": sa.I_[:].copy(),
            "b": (sb.t_[:].copy(), np.asarray(sb.i[:]).copy()),
            "a[10:20]": (sa2.t_[:].copy(), np.asarray(sa2.i[:]).copy()),
            "rate a": ra.rate_[:].copy(), "rate a[0:10]": ra2.rate_[:].copy(),
            "v": va.v_[:].T.copy(), "x": xr.x_[:].T.copy(), "w": xr.w_[:].T.copy(),
            "pairs": np.sort(rnd.pair[:].copy())}


@pytest.fixture(scope="module")
def original():
    return _original()


def _sorted(t, i):
    order = np.lexsort((i, t))
    return t[order], i[order], order


def _check_deterministic(rec: Recording, o: dict, exact: bool):
    close = (lambda x, y: np.testing.assert_array_equal(x, y)) if exact else \
        (lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-15))
    for key in ("a", "a[10:20]"):
        t, i, order = _sorted(*o[key])
        np.testing.assert_array_equal(rec.spikes[key].indices, i)
        close(rec.spikes[key].times, t)
        if key == "a":
            close(rec.spike_values["a"]["v"].values, o["a.v"][order])
            close(rec.spike_values["a"]["I"].values, o["a.I"][order])
    assert rec.spikes["a[10:20]"].size == 10 and len(rec.spikes["a"]) > 50
    close(rec.rates["a"].values[:, 0], o["rate a"])
    close(rec.rates["a[0:10]"].values[:, 0], o["rate a[0:10]"])
    close(rec.states["a[0:3]"]["v"].values, o["v"])
    close(rec.states["ring"]["x"].values, o["x"])
    close(rec.states["ring"]["w"].values, o["w"])
    w = rec.states["ring"]["w"].values  # 'mod' (onto ring's synapses 0-3) raised w by 0.2 mV at s's first spike
    assert w[25, 0] == pytest.approx(0.0007) and w[25, 2] == pytest.approx(0.0005)
    assert rec.states["ring"]["x"].indices.tolist() == [0, 1, 5]
    # the protocol's second segment: a.I = 12 mV is what the spikes after 20 ms record (but in a[15:20],
    # where the current input 'cur' sets I every 10 ms)
    late = (rec.spikes["a"].times >= 0.021) & (rec.spikes["a"].indices < 15)
    assert np.all(rec.spike_values["a"]["I"].values[late] == pytest.approx(0.012))
    cur = rec.spikes["a"].indices >= 15
    rows = (rec.spikes["a"].times[cur] / 0.01 + 1e-9).astype(int)
    np.testing.assert_allclose(rec.spike_values["a"]["I"].values[cur],
                               CUR[rows, rec.spikes["a"].indices[cur] - 15] * 1e-3, rtol=1e-12)


def test_runtime_equals_the_brian2_script(original, tmp_path):
    rec = get_backend("runtime").build(_scenario()).run(progress=False, final_state=["rnd.pair"])
    _check_deterministic(rec, original, exact=True)
    t, i, _ = _sorted(*original["b"])
    np.testing.assert_array_equal(rec.spikes["b"].times, t)
    np.testing.assert_array_equal(rec.spikes["b"].indices, i)
    # the p expression: Brian2 drew the same synapses from the same seed
    np.testing.assert_array_equal(np.sort(rec.final["rnd.pair"].values), original["pairs"])
    for suffix in (".npz", ".h5"):
        assert Recording.load(rec.save(tmp_path / f"rec{suffix}")) == rec
    from biosnn.recording.formats import to_neo
    from biosnn.recording.data import RecordingError
    with pytest.raises(RecordingError, match=r"spike values or population rates, which the Neo export does not"):
        to_neo(rec)


def _expected_rnd() -> tuple[float, float]:
    i, j = np.meshgrid(np.arange(10), np.arange(10), indexing="ij")
    p = 0.4 * np.exp(-np.abs(i - j) / 4.0)
    return float(p.sum()), float(np.sqrt((p * (1 - p)).sum()))


@pytest.mark.standalone
def test_cpp_standalone_equals_the_brian2_script(original, build_cache):
    rec = get_backend("cpp_standalone", cache_dir=build_cache).build(_scenario()).run(
        progress=False, final_state=["rnd.pair"])
    _check_deterministic(rec, original, exact=False)
    pairs = rec.final["rnd.pair"].values
    mean, sd = _expected_rnd()
    assert abs(len(pairs) - mean) < 6 * sd
    assert np.all((pairs // 100 < 10) & (pairs % 100 < 10))


# ---------------------------------------------------------------------------
# the spec: YAML, validation, expansion


def test_the_scenario_round_trips_through_yaml(tmp_path):
    spec = _scenario()
    path = save_spec(spec, tmp_path / "constructs.yaml")
    assert load_spec(path) == spec
    text = path.read_text()
    assert "type: condition" in text and "a[5:10]" in text and "type: rate" in text and "protocol:" in text
    assert "down: v_post -= 0.5*w" in text and "up: 1*ms" in text


def test_yaml_protocol_without_duration_lasts_its_segments(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\npopulations:\n  a:\n    size: 2\n    model:\n      equations: |\n"
                    "        dv/dt = (I - v)/(10*ms) : volt\n        I : volt\n"
                    "protocol:\n  - {duration: 10*ms}\n  - {duration: 5*ms, set: {a.I: 2*mV}}\n")
    spec = load_spec(path)
    assert spec.duration_seconds() == pytest.approx(0.015)
    assert spec.protocol[1].set == {"a.I": "2*mV"}


def _err(match: str, field: str, **changes):
    with pytest.raises(SpecError, match=match) as info:
        _scenario(**changes)
    assert info.value.field == field, info.value.field


def _proj(k: int, **changes):
    spec = _scenario(protocol=())
    projections = list(spec.projections)
    projections[k] = m.Projection(**{**{f: getattr(projections[k], f) for f in
                                        ("name", "source", "target", "model", "connect", "weights", "delay",
                                         "initial")}, **changes})
    return projections


def test_validation_names_the_field_and_the_fix():
    _err(r"uses \['v'\]: a condition may only use i, j", "projections.inp.connect.condition",
         projections=_proj(0, connect=m.Condition("v > 0*mV")), protocol=())
    _err(r"is not a condition", "projections.inp.connect.condition",
         projections=_proj(0, connect=m.Condition("i + j")), protocol=())
    _err(r"unit mismatch", "projections.inp.connect.p",
         projections=_proj(0, connect=m.Condition(p="1*mV")), protocol=())
    _err(r"a condition connectivity has no fixed number of synapses", "projections.inp.weights",
         projections=_proj(0, weights=ArrayValue(np.ones(5), "mV")), protocol=())
    _err(r"subgroup \[5:30\] of 'a' is empty or outside its 20 neurons", "projections.inp.target",
         projections=_proj(0, target="a[5:30]"), protocol=())
    with pytest.raises(SpecError, match=r"not a population name or a contiguous slice") as info:
        m.Projection("x", "a[0:10:2]", "b", DELTA)
    assert info.value.field == "source"
    with pytest.raises(SpecError, match=r"needs a 'condition', a 'p' or both"):
        m.Condition()
    _err(r"projection 'ring' has no synaptic variable\(s\) \['y'\]", "monitors[0].variables",
         monitors=(m.StateMonitor("ring", ("y",)),))
    _err(r"synapse indices must be < 2", "monitors[0].indices",
         projections=_proj(1, connect=m.AllToAll(), source="a[0:1]", target="a[0:2]"), protocol=(),
         monitors=(m.StateMonitor("ring", ("x",), indices=(2,)),))
    _err(r"spike monitors record variables of populations, not inputs", "monitors[0].population",
         monitors=(m.SpikeMonitor("s", ("v",)),))
    _err(r"monitors\[0\] and monitors\[1\] record the spikes of 'a' with other variables", "monitors[1].variables",
         monitors=(m.SpikeMonitor("a"), m.SpikeMonitor("a", ("v",))))
    _err(r"indices must be < 3", "monitors[0].indices", monitors=(m.StateMonitor("a[0:3]", ("v",), indices=(3,)),))
    _err(r"the protocol's segments last 0.03 s but duration is 0.05 s", "duration",
         protocol=(m.Segment("10*ms"), m.Segment("20*ms")))
    _err(r"'u' is not a variable of 'a' that a protocol can set", "protocol[1].set.a.u",
         protocol=(m.Segment("10*ms"), m.Segment("40*ms", {"a.u": "1*mV"})))
    _err(r"unit mismatch", "protocol[1].set.a.I", protocol=(m.Segment("10*ms"), m.Segment("40*ms", {"a.I": "1*ms"})))
    _err(r"'zz' is not a population or projection", "protocol[0].set.zz.I",
         protocol=(m.Segment("50*ms", {"zz.I": "1*mV"}),))
    _err(r"delay names pathway\(s\) \['sideways'\], which the synapse model does not have",
         "projections.paths.delay.sideways",
         projections=_proj(3, delay={"up": "1*ms", "sideways": "2*ms"}), protocol=())
    _err(r"unit mismatch", "projections.paths.delay.up", projections=_proj(3, delay={"up": "1*mV"}), protocol=())
    _err(r"undefined name\(s\) \['vv_post'\]", "projections.paths.model.on_pre.down",
         projections=_proj(3, model=m.SynapseModel("w : volt", on_pre={"up": "v_post += w", "down": "vv_post += w"})),
         protocol=())
    _err(r"j = 'i \+ 1' gives 5 for i = 4, not a target index in \[0, 5\)", "projections.rev.connect.j",
         projections=_proj(5, connect=m.Condition(j="i + 1")), protocol=())
    _err(r"connection target j = 'j' uses \['j'\]", "projections.rev.connect.j",
         projections=_proj(5, connect=m.Condition(j="j")), protocol=())
    with pytest.raises(SpecError, match=r"'j' \(one target per source\) cannot be combined with 'condition' or 'p'"):
        m.Condition("i > 0", j="i")
    _err(r"connects with a condition or all_to_all", "projections.mod.connect",
         projections=_proj(4, connect=m.OneToOne()), protocol=())
    _err(r"unknown target population 'paths' \(a projection defined after this one\)", "projections.ring.target",
         projections=_proj(1, target="paths"), protocol=(), monitors=())
    with pytest.raises(SpecError, match=r"pathway\(s\) \['up'\] are in on_pre and on_post"):
        m.SynapseModel("w : 1", on_pre={"up": "w += 1"}, on_post={"up": "w -= 1"})


def test_yaml_errors_name_the_file_and_field(tmp_path):
    base = ("name: e\npopulations:\n  a: {size: 4, model: {equations: 'dv/dt = -v/(10*ms) : volt',"
            " threshold: 'v > 1*mV'}}\n")
    cases = [("projections:\n  p: {source: a, target: a, model: delta_voltage, weights: 1*mV,"
              " connect: {type: condition, condition: 'i != j', q: 1}}\n",
              r"unknown field 'q'", "projections.p.connect.q"),
             ("projections:\n  p: {source: 'a[1:]', target: a, model: delta_voltage, weights: 1*mV,"
              " connect: {type: condition, condition: 'i = j'}}\n",
              r"not valid", "projections.p.connect.condition"),
             ("protocol:\n  - {duration: 10*ms, sett: {}}\n", r"unknown field 'sett'", "protocol[0].sett"),
             ("monitors:\n  - {type: rate, population: 'a[0:9]'}\n", r"outside its 4 neurons",
              "monitors[0].population")]
    for k, (extra, match, field) in enumerate(cases):
        path = tmp_path / f"e{k}.yaml"
        path.write_text(base + extra)
        with pytest.raises(SpecError, match=match) as info:
            load_spec(path)
        assert info.value.field == field and info.value.file == str(path), (info.value.field, info.value.file)


def test_condition_expansion_is_the_brute_force_result_and_deterministic():
    spec = _scenario()
    rev = expand_projection(spec, spec.projection("rev"))
    assert rev.i.tolist() == list(range(5)) and rev.j.tolist() == [4, 3, 2, 1, 0]
    ring = expand_projection(spec, spec.projection("ring"))
    want = [(i, j) for i in range(20) for j in range(20) if i != j and abs(i - j) <= 2]
    assert list(zip(ring.i.tolist(), ring.j.tolist())) == want
    inp = expand_projection(spec, spec.projection("inp"))
    assert inp.i.tolist() == inp.j.tolist() == list(range(5))
    rnd = expand_projection(spec, spec.projection("rnd"))
    again = expand_projection(spec, spec.projection("rnd"))
    assert rnd.i.tolist() == again.i.tolist() and rnd.j.tolist() == again.j.tolist()
    other = expand_projection(spec.replace(seed=SEED + 1), spec.projection("rnd"))
    assert (rnd.i.tolist(), rnd.j.tolist()) != (other.i.tolist(), other.j.tolist())


def test_condition_expansion_statistics_and_blocks():
    """A large p expression: per-distance frequencies match p within 5 sigma, across several blocks."""
    from biosnn.spec import expand
    n = 600  # 360000 pairs: two blocks of CONDITION_BLOCK rows
    assert n * n > expand.CONDITION_BLOCK
    pop = m.Population("a", n, LIF)
    proj = m.Projection("r", "a", "a", DELTA, m.Condition("i != j", "0.2*exp(-abs(i - j)/50.0)"), weights="0*mV")
    spec = m.NetworkSpec("big", populations=(pop,), projections=(proj,), seed=3)
    conn = expand_projection(spec, proj)
    d = np.abs(conn.i - conn.j)
    assert d.min() >= 1
    for lo, hi in ((1, 10), (50, 100), (200, 400)):
        dist = np.arange(lo, hi)
        pairs = 2 * (n - dist)
        p = 0.2 * np.exp(-dist / 50.0)
        mean, sd = float((pairs * p).sum()), float(np.sqrt((pairs * p * (1 - p)).sum()))
        count = int(((d >= lo) & (d < hi)).sum())
        assert abs(count - mean) < 5 * sd, (lo, hi, count, mean, sd)


def test_condition_expansion_respects_the_memory_budget():
    from biosnn.spec.budget import memory_limit
    from biosnn.spec.expand import expand_condition
    pop = m.Population("a", 3000, LIF)
    proj = m.Projection("r", "a", "a", DELTA, m.Condition("i != j"), weights="0*mV")
    with pytest.raises(SpecError, match=r"projection 'r' .*about .* synapses.*more than the given memory limit"):
        with memory_limit(1e6):
            spec = m.NetworkSpec("big", populations=(pop,), projections=(proj,))
    spec = m.NetworkSpec("big", populations=(pop,), projections=(proj,))
    with memory_limit(1e6), pytest.raises(SpecError, match=r"more than the given memory limit"):
        expand_condition(spec, proj, 3000, 3000)


# ---------------------------------------------------------------------------
# NEST


def _nest():
    if "nest" not in available_backends():
        pytest.skip("NEST is not installed here")
    return get_backend("nest")


@pytest.mark.parametrize("changes, match", [
    ({}, r"protocol\[1\] sets 'ring.w', a synaptic variable, which the NEST backend does not change"),
    ({"protocol": (), "monitors": (m.SpikeMonitor("a", ("v",)),)},
     r"records \['v'\] at each spike of 'a'; NEST's spike recorders record no variables"),
    ({"protocol": (), "monitors": (m.StateMonitor("ring", ("x",)),)},
     r"synaptic variables of projection 'ring' over time.*final_state"),
    ({"protocol": (), "monitors": (), "projections": "all but mod"},
     r"projection 'paths' has several pathways \(\['down', 'up'\]\).*one projection "
                                      r"per pathway"),
    ({"protocol": (), "monitors": (), "projections": "all but paths"},
     r"'mod' targets the synapses of projection 'ring' \(synapses onto synapses\)"),
    ({"protocol": (), "monitors": (), "projections": "all but paths mod"},
     r"current input 'cur' sets a subgroup \('a\[15:20\]'\), which the NEST backend does not"),
])
def test_nest_refuses_what_it_cannot_run(changes, match):
    if isinstance(changes.get("projections"), str):  # "all but <name>"
        drop = changes["projections"].split()[2:]
        changes = dict(changes, projections=tuple(p for p in _scenario().projections if p.name not in drop))
    with pytest.raises(BackendError, match=match):
        _nest().build(_scenario(**changes))


def test_nest_lowering_of_conditions_subgroups_and_rates():
    """What NEST is given: explicit whole-population synapses, whole-population monitors; cut back afterwards."""
    from biosnn.backends.nest_constructs import lower_for_nest
    from biosnn.recording import SpikeTrains
    spec = _scenario(protocol=(), monitors=(m.SpikeMonitor("a[10:20]"), m.RateMonitor("a[0:10]"),
                                            m.StateMonitor("a[2:5]", ("v",), indices=(1, 2))))
    # no pathways, no synapses onto synapses, no current input onto a subgroup
    spec = spec.replace(projections=spec.projections[:3], inputs=spec.inputs[:1])
    lowered, finish = lower_for_nest(spec)
    inp = lowered.projection("inp")
    assert (inp.source, inp.target) == ("s", "a")
    assert inp.connect.i.data.tolist() == list(range(5)) and inp.connect.j.data.tolist() == list(range(5, 10))
    assert lowered.monitors == (m.SpikeMonitor("a"), m.StateMonitor("a", ("v",), indices=(3, 4)))
    st = SpikeTrains(times=[0.001, 0.001, 0.002], indices=[3, 12, 15], size=20)
    from biosnn.recording import StateTrace
    trace = StateTrace(times=[0.0, 1e-4], values=[[1.0, 2.0], [3.0, 4.0]], indices=[3, 4], unit="volt")
    rec = finish(Recording(spikes={"a": st}, states={"a": {"v": trace}}, duration=0.003, dt=1e-4))
    assert rec.spikes["a[10:20]"].indices.tolist() == [2, 5] and rec.spikes["a[10:20]"].size == 10
    rate = rec.rates["a[0:10]"].values[:, 0]
    assert rate[10] == pytest.approx(1 / (10 * 1e-4)) and rate.sum() == pytest.approx(1 / (10 * 1e-4))
    assert rec.states["a[2:5]"]["v"].indices.tolist() == [1, 2]
    np.testing.assert_array_equal(rec.states["a[2:5]"]["v"].values, [[1.0, 2.0], [3.0, 4.0]])


@pytest.mark.nestml
def test_nest_runs_conditions_subgroups_and_rates_like_the_runtime():
    """Deterministic conditions, subgroups and a protocol: NEST's spikes are the runtime's (rates from them)."""
    spec = _scenario(protocol=(m.Segment("20*ms"), m.Segment("30*ms", {"a.I": "12*mV - i*0.1*mV"})), monitors=(
        m.SpikeMonitor("a"), m.SpikeMonitor("a[10:20]"), m.RateMonitor("a[0:10]")))
    spec = spec.replace(projections=tuple(p for p in spec.projections if p.name == "inp"),
                        populations=(spec.population("a"),), inputs=spec.inputs[:1])
    nest_rec = _nest().build(spec).run(progress=False)
    rt = get_backend("runtime").build(spec).run(progress=False)
    assert len(rt.spikes["a"]) > 20
    late = rt.spikes["a"].times > 0.02  # the second segment changed I: neuron 0 (9 mV before) fires after 20 ms
    assert 0 in rt.spikes["a"].indices[late] and 0 not in rt.spikes["a"].indices[~late]
    for key in ("a", "a[10:20]"):
        np.testing.assert_array_equal(nest_rec.spikes[key].indices, rt.spikes[key].indices)
        np.testing.assert_allclose(nest_rec.spikes[key].times, rt.spikes[key].times, atol=1e-9)
    np.testing.assert_allclose(nest_rec.rates["a[0:10]"].values, rt.rates["a[0:10]"].values)
    assert math.isclose(nest_rec.mean_rate("a"), rt.mean_rate("a"))
