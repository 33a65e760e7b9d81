"""The NEST backend against Brian2's runtime (biosnn's reference semantics) and analytic values.

Tests marked ``nestml`` generate and compile NESTML models (two models, 15-40 s
each on an idle machine, once; modules are cached under the session's build cache).
"""

import os

import numpy as np
import pytest

os.environ.setdefault("PYNEST_QUIET", "1")  # no NEST banner in the test output
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # NEST threads must not spin on a shared CI machine
pytest.importorskip("nest")

from biosnn import get_backend  # noqa: E402
from biosnn.backends.registry import available_backends  # noqa: E402
from biosnn.errors import BackendError  # noqa: E402
from biosnn.spec import load_spec  # noqa: E402
from biosnn.spec import model as m  # noqa: E402
from biosnn.spec.values import ArrayValue  # noqa: E402


def A(values, unit="1"):
    return ArrayValue(np.asarray(values), unit)


def _explicit(i, j):
    return m.Explicit(A(np.asarray(i, dtype=np.int64)), A(np.asarray(j, dtype=np.int64)))


@pytest.fixture(scope="module")
def nestml_cache(build_cache):
    """NESTML module cache; skips where NESTML or the C++ toolchain is missing."""
    import shutil
    pytest.importorskip("pynestml")
    if not (shutil.which("cmake") and shutil.which("g++")):
        pytest.skip("NESTML needs cmake and g++")
    return build_cache / "nestml"


def _both(spec, nest_options=None, final_state=None):
    ref = get_backend("runtime").build(spec).run(progress=False, final_state=final_state)
    sim = get_backend("nest", **(nest_options or {})).build(spec)
    return ref, sim.run(progress=False, final_state=final_state), sim


def _assert_same_spikes(ref, rec, name):
    a, b = ref.spikes[name], rec.spikes[name]
    assert len(a.times) > 0
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_allclose(a.times, b.times, atol=1e-9)


def test_get_backend_lists_and_validates_nest():
    assert "nest" in available_backends()
    assert get_backend("nest", local_num_threads=2).local_num_threads == 2
    with pytest.raises(BackendError, match="local_num_threads must be a positive integer"):
        get_backend("nest", local_num_threads=0)


def test_builtin_lif_network_matches_brian2_spike_for_spike():
    """lif -> iaf_psc_delta: currents, spike times, explicit weights, delays, a recurrent synapse."""
    spec = m.NetworkSpec(
        name="det_lif", dt="0.1*ms", duration="100*ms",
        populations=[m.Population("exc", 4, "lif", initial={"I": A([0.16, 0.18, 0.2, 0.25], "nA"),
                                                            "v": "-65*mV"}),
                     m.Population("driven", 2, "lif", initial={"v": "-65*mV"})],
        inputs=[m.SpikeTimesInput("stim", 2, indices=A(np.array([0, 1, 0])), times=A([5.0, 22.0, 51.3], "ms")),
                m.CurrentInput("drive", "driven", "I", A(np.array([[0.2, 0.0], [0.5, 0.3], [0.0, 0.2]]), "nA"),
                               dt="35*ms")],
        projections=[m.Projection("stim_exc", "stim", "exc", "delta_voltage", connect=_explicit([0, 0, 1, 1], [0, 1, 2, 3]),
                                  weights=A([3.0, 4.0, 5.0, -2.0], "mV"), delay="1*ms"),
                     m.Projection("rec", "exc", "exc", "delta_voltage", connect=_explicit([3], [0]), weights="2*mV")],
        monitors=[m.SpikeMonitor("exc"), m.SpikeMonitor("stim"), m.SpikeMonitor("driven"),
                  m.StateMonitor("exc", ["v"], indices=[0, 3])])
    ref, rec, _ = _both(spec, final_state=["exc.v", "stim_exc.w"])
    assert rec.meta["nest_models"] == "iaf_psc_delta"
    for name in ("exc", "stim", "driven"):
        _assert_same_spikes(ref, rec, name)
    assert len(ref.spikes["exc"].times) >= 10
    np.testing.assert_allclose(rec.final["exc.v"].values, ref.final["exc.v"].values, atol=1e-9)
    np.testing.assert_allclose(rec.final["stim_exc.w"].values, ref.final["stim_exc.w"].values, rtol=1e-12)
    assert rec.final["stim_exc.w"].unit == ref.final["stim_exc.w"].unit == "volt"
    a, b = ref.states["exc"]["v"], rec.states["exc"]["v"]
    np.testing.assert_allclose(b.times, a.times, atol=1e-12)
    # traces agree except in the one step where an input arrives (Brian2 shows the jump a step earlier)
    close = np.isclose(a.values, b.values, atol=1e-9)
    assert close.mean() > 0.98


@pytest.mark.parametrize("when", ["start", "end"])
def test_state_monitor_timing_matches_brian2_before_and_after_the_step(when):
    """when=start (Brian2's default) samples before the step, when=end after it (resets included), as Brian2."""
    spec = m.NetworkSpec(name="when_nest", dt="0.1*ms", duration="60*ms",
                         populations=[m.Population(name, 2, "lif", initial={"I": A([0.3, 0.5], "nA"), "v": "-65*mV"})
                                      for name in ("n", "slow")],
                         monitors=[m.SpikeMonitor("n"), m.StateMonitor("n", ["v"], when=when),
                                   m.StateMonitor("slow", ["v"], dt="1*ms", when=when)])
    ref, rec, _ = _both(spec)
    assert len(ref.spikes["n"].times) >= 4
    for pop in ("n", "slow"):  # every step; every 1 ms
        a, b = ref.states[pop]["v"], rec.states[pop]["v"]
        np.testing.assert_allclose(b.times, a.times, atol=1e-12)
        np.testing.assert_allclose(b.values, a.values, atol=1e-9)
    a, b = ref.states["n"]["v"], rec.states["n"]["v"]
    if when == "start":  # the first sample is the initial value
        np.testing.assert_allclose(b.values[0], -65e-3, atol=1e-12)


def test_state_monitor_between_integration_and_reset_is_refused():
    spec = m.NetworkSpec(name="when_groups", populations=[m.Population("n", 1, "lif")],
                         monitors=[m.StateMonitor("n", ["v"], when="thresholds")])
    with pytest.raises(BackendError, match=r"samples in the 'thresholds' slot.*use 'start' or 'end'"):
        get_backend("nest").build(spec).run(progress=False)


def test_lif_interspike_interval_matches_the_analytic_value():
    """tau_ref + tau_m ln((E_L + R I - v_reset)/(E_L + R I - v_th)), to within one step."""
    spec = m.NetworkSpec(name="isi", dt="0.1*ms", duration="200*ms",
                         populations=[m.Population("n", 3, "lif", initial={"I": A([0.2, 0.3, 0.5], "nA"),
                                                                           "v": "-65*mV"})],
                         monitors=[m.SpikeMonitor("n")])
    rec = get_backend("nest").build(spec).run(progress=False)
    for k, current in enumerate([0.2e-9, 0.3e-9, 0.5e-9]):
        drive = -65e-3 + 100e6 * current
        expected = 2e-3 + 20e-3 * np.log((drive + 65e-3) / (drive + 50e-3))
        isi = np.diff(rec.spikes["n"].times[rec.spikes["n"].indices == k])
        assert len(isi) >= 3
        np.testing.assert_allclose(isi, expected, atol=1e-4 + 1e-9)


def test_conv2d_and_pool_projections_match_brian2():
    """Convolution and pooling are expanded with the Brian2 backend's index code."""
    rng = np.random.default_rng(3)
    kernel = rng.uniform(0.5, 4.0, size=(2, 1, 3, 3))
    idx = rng.integers(0, 36, size=40)
    times = np.sort(rng.uniform(0, 40, size=40)).round(1)
    spec = m.NetworkSpec(
        name="conv_nest", dt="0.1*ms", duration="60*ms",
        inputs=[m.SpikeTimesInput("img", 36, indices=A(idx), times=A(times, "ms"), shape=(1, 6, 6))],
        populations=[m.Population("c1", 32, "lif", shape=(2, 4, 4), initial={"v": "-65*mV"}),
                     m.Population("p1", 8, "lif", shape=(2, 2, 2), initial={"v": "-65*mV"})],
        projections=[m.Projection("conv", "img", "c1", "delta_voltage", connect=m.Conv2D(A(kernel, "mV"))),
                     m.Projection("pool", "c1", "p1", "delta_voltage",
                                  connect=m.Pool2D(kernel_size=2, weight="16*mV"))],
        monitors=[m.SpikeMonitor("c1"), m.SpikeMonitor("p1")])
    ref, rec, _ = _both(spec, {"local_num_threads": 2})  # threads change nothing
    _assert_same_spikes(ref, rec, "c1")
    _assert_same_spikes(ref, rec, "p1")


def test_poisson_input_rates():
    spec = m.NetworkSpec(name="poisson_nest", dt="0.1*ms", duration="2*second", seed=4,
                         inputs=[m.PoissonInput("noise", 50, rates=A(np.full(50, 20.0), "Hz"))],
                         populations=[m.Population("n", 1, "lif", initial={"v": "-65*mV"})],
                         projections=[m.Projection("noise_n", "noise", "n", "delta_voltage", weights="0.1*mV")],
                         monitors=[m.SpikeMonitor("noise")])
    rec = get_backend("nest").build(spec).run(progress=False)
    counts = rec.spikes["noise"].counts()
    assert abs(counts.sum() - 2000) < 4 * np.sqrt(2000)


def test_untranslatable_models_and_synapses_raise_backend_errors():
    indexed = m.NeuronModel(equations="dv/dt = (i*mV - v)/tau : volt",
                            threshold="v > 1*mV", reset="v = 0*mV", parameters={"tau": "10*ms"})
    spec = m.NetworkSpec(name="indexed", neuron_models={"indexed": indexed},
                         populations=[m.Population("n", 2, "indexed")])
    with pytest.raises(BackendError, match=r"neuron model 'indexed' cannot be translated.*the neuron index 'i'"
                                           r".*NEST can run"):
        get_backend("nest").build(spec)
    plastic = m.SynapseModel(equations="w : volt\ndapre/dt = -apre/(20*ms) : 1 (event-driven)",
                             on_pre="v_post += w\napre += 0.01", on_post="w = w + apre*mV + 0*v_post")
    spec = m.NetworkSpec(name="plastic", synapse_models={"plastic": plastic},
                         populations=[m.Population("a", 2, "lif"), m.Population("b", 2, "lif")],
                         projections=[m.Projection("ab", "a", "b", "plastic", weights="1*mV")])
    with pytest.raises(BackendError, match=r"synapse model 'plastic'.*w = w \+ apre\*mV.*stdp_synapse"):
        get_backend("nest").build(spec)


def test_nestml_errors_become_backend_errors(nestml_cache, tmp_path):
    """NESTML prints errors and returns normally; biosnn checks and quotes them."""
    from biosnn.backends.nestml_build import compile_module
    bad = "model bad_nestml:\n    state:\n        v mV = 0 mV\n    equations:\n        v' = -v / undefined_tau\n"
    with pytest.raises(BackendError, match=r"(?s)NESTML rejected.*bad_nestml.*undefined_tau"):
        compile_module({"bad_nestml": bad}, cache_root=tmp_path)


def _cuba_small():
    cuba = load_spec("network_specs/cuba.yaml")
    return cuba.replace(
        name="cuba_small", duration="200*ms",
        populations=(m.Population("exc", 6, "cuba_lif", initial={"v": A(np.linspace(-60, -50.5, 6), "mV")}),),
        inputs=(m.SpikeTimesInput("stim", 3, indices=A(np.array([0, 1, 2, 0, 1, 2, 0])),
                                  times=A([3.0, 10.0, 17.2, 40.0, 41.0, 90.5, 120.0], "ms")),),
        projections=(m.Projection("stim_e", "stim", "exc", "excitatory", connect=_explicit([0, 0, 1, 2, 2], [0, 1, 2, 3, 4])),
                     m.Projection("stim_i", "stim", "exc", "inhibitory", connect=_explicit([1, 2], [5, 0]), delay="0.5*ms"),
                     m.Projection("ee", "exc", "exc", "excitatory", connect=_explicit(range(6), [1, 2, 3, 4, 5, 0]))),
        monitors=(m.SpikeMonitor("exc"),))


@pytest.mark.nestml
def test_nestml_cuba_neuron_matches_brian2_spike_for_spike(nestml_cache):
    """The CUBA neuron (3 ODEs, refractoriness, two synaptic targets) translated to NESTML."""
    spec = _cuba_small()
    ref, rec, sim = _both(spec, {"cache_dir": nestml_cache}, final_state=["exc.v", "exc.gi"])
    assert rec.meta["nest_models"] == "cuba_lif_nestml"
    _assert_same_spikes(ref, rec, "exc")
    assert len(ref.spikes["exc"].times) >= 20
    np.testing.assert_allclose(rec.final["exc.v"].values, ref.final["exc.v"].values, atol=1e-9)
    np.testing.assert_allclose(rec.final["exc.gi"].values, ref.final["exc.gi"].values, atol=1e-12)
    again = get_backend("nest", cache_dir=nestml_cache).build(spec)
    assert not again.compiled_now  # cached by the hash of the model text


@pytest.mark.nestml
def test_nestml_cuba_rates_match_brian2(nestml_cache):
    """CUBA (4000 neurons): NEST's population rates within the seed-to-seed spread of Brian2's."""
    spec = load_spec("network_specs/cuba.yaml")
    duration = 0.1  # the first 100 ms: Brian2's numpy runtime is the slow part of this test
    ref = get_backend("runtime").build(spec).run(duration=duration, progress=False)
    rates = {"exc": [], "inh": []}
    for seed in (1, 2, 3):
        rec = get_backend("nest", cache_dir=nestml_cache).build(
            spec.replace(seed=seed)).run(duration=duration, progress=False)
        for pop in rates:
            rates[pop].append(rec.mean_rate(pop))
    for pop, values in rates.items():
        values = np.asarray(values)
        spread = max(values.std(ddof=1), 0.05 * values.mean())
        assert ref.mean_rate(pop) > 1.0
        assert abs(ref.mean_rate(pop) - values.mean()) < 4 * spread + 0.1 * values.mean(), (pop, ref.mean_rate(pop), values)


@pytest.mark.nestml
def test_nestml_if_subtract_matches_brian2_spike_for_spike(nestml_cache):
    """Reset by subtraction (no NEST built-in) via NESTML, driven by a time-varying current and spikes."""
    steps = 40
    # values whose per-step increments do not sum to the threshold exactly (no rounding ties)
    current = np.repeat(np.array([[0.317, 0.531, 0.0], [0.613, 0.229, 0.871]]), steps // 2, axis=0)
    spec = m.NetworkSpec(
        name="det_ifsub", dt="0.1*ms", duration="80*ms",
        populations=[m.Population("n", 3, "if_subtract")],
        inputs=[m.CurrentInput("drive", "n", "I", A(current, "nA"), dt="2*ms"),
                m.SpikeTimesInput("stim", 1, indices=A(np.array([0, 0])), times=A([10.0, 31.4], "ms"))],
        projections=[m.Projection("stim_n", "stim", "n", "delta_voltage", connect=_explicit([0, 0], [1, 2]),
                                  weights=A([7.0, -3.0], "mV"), delay="0.3*ms")],
        monitors=[m.SpikeMonitor("n")])
    ref, rec, _ = _both(spec, {"cache_dir": nestml_cache}, final_state=["n.v"])
    assert rec.meta["nest_models"] == "if_subtract_nestml"
    _assert_same_spikes(ref, rec, "n")
    np.testing.assert_allclose(rec.final["n.v"].values, ref.final["n.v"].values, atol=1e-9)


def test_cli_runs_a_spec_on_nest(tmp_path, capsys):
    from biosnn.cli import main
    spec = m.NetworkSpec(name="cli_nest", duration="50*ms",
                         populations=[m.Population("n", 2, "lif", initial={"I": A([0.3, 0.4], "nA"), "v": "-65*mV"})],
                         monitors=[m.SpikeMonitor("n")])
    path = spec.save(tmp_path / "cli_nest.yaml")
    assert main(["run", str(path), "--backend", "nest", "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    assert "on nest" in capsys.readouterr().out
    from biosnn.recording import Recording
    rec = Recording.load(tmp_path / "out" / "recording.npz")
    assert rec.meta["backend"] == "nest" and len(rec.spikes["n"].times) >= 4


@pytest.mark.nestml
def test_pair_stdp_on_nest_equals_brian2_and_the_analytic_sum(nestml_cache):
    """Library pair STDP (all-to-all; additive and multiplicative) -> NESTML synapses, one module.

    Not NEST's ``stdp_synapse``: it sends the weight after the arriving spike's depression
    (Brian2 before), which changed the postsynaptic rate of Brian2's STDP example
    (tests/test_brian2_examples.py).  NEST applies potentiation at the next presynaptic
    spike, so the inputs end with a presynaptic spike after the neurons fell silent.
    """
    from biosnn.models.plasticity import stdp_trace
    times = np.array([22.2, 59.7, 81.1, 108.0, 125.7, 127.0, 129.0, 152.0, 172.4, 177.7, 199.3, 267.6, 268.6, 390.0])
    add = stdp_trace("all", "additive", A_plus=1e-5, A_minus=1.2e-5, w_max=1e-3, unit="mV")
    mult = stdp_trace("all", "multiplicative", A_plus=0.05, A_minus=0.06, w_max=1e-3, unit="mV")
    spec = m.NetworkSpec(
        name="stdp_nest", duration="400*ms", synapse_models={"stdp_add": add, "stdp_mult": mult},
        populations=[m.Population("post", 2, "lif", initial={"v": "-65*mV"})],
        inputs=[m.SpikeTimesInput("pre", 1, indices=A(np.zeros(len(times), dtype=np.int64)), times=A(times, "ms")),
                m.CurrentInput("drive", "post", "I", A(np.array([[0.2, 0.26]] * 3 + [[0.0, 0.0]]), "nA"),
                               dt="100*ms")],
        projections=[m.Projection("add", "pre", "post", "stdp_add", weights="0.0003*mV", delay="1*ms"),
                     m.Projection("mult", "pre", "post", "stdp_mult", weights="0.0003*mV", delay="1*ms")],
        monitors=[m.SpikeMonitor("post")])
    ref, rec, _ = _both(spec, {"cache_dir": nestml_cache}, final_state=["add.w", "mult.w"])
    assert rec.meta["nest_models"] == "lif_nestml__with_stdp_add_nestml_synapse_and_stdp_mult_nestml_synapse"
    _assert_same_spikes(ref, rec, "post")
    for name in ("add", "mult"):
        w_ref, w = ref.final[f"{name}.w"].values, rec.final[f"{name}.w"].values
        assert np.all(np.abs(w_ref - 3e-7) > 1e-8)  # the weights did change
        np.testing.assert_allclose(w, w_ref, rtol=1e-9)
    post = ref.spikes["post"]  # the analytic pair sum, arrival = spike time + delay
    for j in range(2):
        lag = post.times[post.indices == j][None, :] * 1e3 - (times[:, None] + 1.0)
        dw = np.where(lag >= 0, 1e-5 * np.exp(-lag / 20), -1.2e-5 * np.exp(lag / 20)).sum() * 1e-3
        np.testing.assert_allclose(rec.final["add.w"].values[j] - 3e-7, dw, rtol=1e-9)


def _timed_poisson_spec(rates_expr):
    # 3 windows of 100 ms; source k fires at 0, 40 + k Hz, 150 - k Hz (2-D), or 20/80/5 Hz times 2 (1-D)
    n = 100
    table = np.stack([np.zeros(n), 40.0 + np.arange(n), 150.0 - np.arange(n)])
    return m.NetworkSpec(
        "timed_poisson", dt="0.1*ms", duration="300*ms", seed=4,
        timed_arrays=[m.TimedArraySpec("stim", ArrayValue(table, "Hz"), "100*ms"),
                      m.TimedArraySpec("level", ArrayValue(np.array([20.0, 80.0, 5.0]), "Hz"), "100*ms")],
        inputs=[m.PoissonInput("X", n, rates_expr)],
        monitors=[m.SpikeMonitor("X")]), table


@pytest.mark.parametrize("expr, expected", [("stim(t, i)", None), ("2 * level(t)", np.array([40.0, 160.0, 10.0]))])
def test_poisson_rates_from_timed_arrays_on_nest_and_brian2(expr, expected):
    spec, table = _timed_poisson_spec(expr)
    expected = table if expected is None else np.broadcast_to(expected[:, None], table.shape)
    for backend in ("nest", "runtime"):
        spikes = get_backend(backend).build(spec).run(progress=False).spikes["X"]
        window = np.minimum((np.asarray(spikes.times) / 0.1).astype(int), 2)
        for w in range(3):  # spike count per window: Poisson, mean rate * 0.1 s * 100 sources
            mean = expected[w].sum() * 0.1
            count = np.count_nonzero(window == w)
            assert abs(count - mean) <= 4.5 * np.sqrt(max(mean, 1.0)), (backend, w, count, mean)
        if expected is table:  # per source in the last window: rates fall with the index
            counts = np.bincount(np.asarray(spikes.indices)[window == 2], minlength=100)
            assert np.corrcoef(counts, table[2])[0, 1] > 0.5


def test_poisson_rates_with_t_outside_timed_arrays_are_refused():
    spec, _ = _timed_poisson_spec("stim(t, i) * (1 + t / second)")
    with pytest.raises(BackendError, match="use t outside a timed array"):
        get_backend("nest").build(spec).run(progress=False)
    bad = m.NetworkSpec("timed_in_model", dt="0.1*ms", duration="10*ms",
                        timed_arrays=[m.TimedArraySpec("drive", ArrayValue(np.ones(3), "mV"), "1*ms")],
                        populations=[m.Population("P", 2, m.NeuronModel("v = drive(t) : volt"))])
    with pytest.raises(BackendError, match=r"does not evaluate timed arrays in equations \(\['drive'\]\)"):
        get_backend("nest").build(bad).run(progress=False)


def test_unsuffixed_names_in_synapse_code_resolve_as_in_brian2():
    """Unsuffixed names of the target's variables are the target's (``ge += w`` is ``ge_post += w``), no compile.

    Run against Brian2 in tests/test_brian2_examples.py: ``ge += w`` (stdp_song_2000), ``v += 3*mV``
    (adaptive_threshold, a fixed increment without weight variable), ``V += -J`` (brunel_hakim_1999).
    """
    from biosnn.backends.nest_models import plan_synapse
    neuron = m.NeuronModel("dv/dt = (ge - v)/(10*ms) : volt\ndge/dt = -ge/(5*ms) : volt", threshold="v > 1*mV",
                           reset="v = 0*mV")

    def plan(synapse):
        weights = "2*mV" if synapse.equations else None
        spec = m.NetworkSpec(name="suffixes", neuron_models={"n": neuron}, synapse_models={"s": synapse},
                             populations=[m.Population("a", 2, "n"), m.Population("b", 2, "n")],
                             projections=[m.Projection("ab", "a", "b", "s", weights=weights)])
        return plan_synapse(spec, spec.projections[0])

    syn = plan(m.SynapseModel("w : volt", on_pre="ge += w"))
    assert (syn.target_var, syn.rhs, syn.sign, syn.nestml) == ("ge", "w", 1.0, None)
    syn = plan(m.SynapseModel(on_pre="v -= 0.5*mV + ge*0"))
    assert (syn.target_var, syn.rhs, syn.sign) == ("v", "0.5*mV + ge_post*0", -1.0)
    with pytest.raises(BackendError, match=r"on_pre must send a value with 'x_post \+= expr'"):
        plan(m.SynapseModel("w : volt\nge : volt", on_pre="ge += w"))  # a synaptic ge (Brian2 refuses it) stays


def test_weights_of_two_projections_nest_cannot_tell_apart_are_refused_not_mixed():
    """Two projections with one NEST synapse model between the same populations: NEST's connections
    carry no projection name (the weights came back mixed: 'a.w' read [20, 7, 30] mV for [20, 30] mV)."""
    spec = m.NetworkSpec(
        name="twins", dt="0.1*ms", duration="20*ms",
        populations=[m.Population("exc", 2, "lif", initial={"v": "-65*mV"})],
        inputs=[m.SpikeTimesInput("stim", 2, indices=A(np.array([0, 1])), times=A([5.0, 6.0], "ms"))],
        projections=[m.Projection("a", "stim", "exc", "delta_voltage", connect=_explicit([0, 1], [0, 1]),
                                  weights=A([20.0, 30.0], "mV")),
                     m.Projection("b", "stim", "exc", "delta_voltage", connect=_explicit([0], [1]),
                                  weights=A([7.0], "mV"))],
        monitors=[m.SpikeMonitor("exc")])
    ref = get_backend("runtime").build(spec).run(progress=False, final_state=["a.w"])
    np.testing.assert_allclose(ref.final["a.w"].values, [20e-3, 30e-3])
    sim = get_backend("nest").build(spec)
    with pytest.raises(BackendError, match=r"cannot tell projection 'a' from \['b'\].*merge them"):
        sim.run(progress=False, final_state=["a.w"])
    rec = sim.run(progress=False)  # spikes are not affected
    _assert_same_spikes(ref, rec, "exc")
