"""STDP rules and weight normalisation against hand-computed spike-pairing results.

Every synapse sees a few exactly timed spikes: the presynaptic ones from a
spike-time input, the postsynaptic ones from neurons whose threshold reads a
0/1 timed array (so a post spike is at exactly the given step, whatever the
synaptic input).  The expected weights are computed here from the exponential
STDP windows, never from the simulator; the event-driven traces make the
simulated changes exact up to floating-point rounding.
"""

from __future__ import annotations

import numpy as np
import pytest

from biosnn.backends.registry import available_backends, get_backend
from biosnn.errors import SpecError
from biosnn.models import neurons, plasticity
from biosnn.models.library import SYNAPSE_MODELS
from biosnn.spec import (AllToAll, ArrayValue, NetworkSpec, NeuronModel, OneToOne, Population,
                         Projection, SpikeTimesInput, TimedArraySpec, load_spec)
from biosnn.spec.expand import expand_projection

DT_MS = 0.1
T_PRE = 60.0                                # ms, the pre spike of the sweep
SWEEP = np.arange(-50.0, 50.1, 5.0)         # ms, t_post - t_pre
STDP = dict(A_plus=0.01, A_minus=0.012, tau_plus="16.8*ms", tau_minus="33.7*ms", w_min=0.0, w_max=1.0)
TAU_PLUS, TAU_MINUS = 16.8, 33.7            # ms, as in STDP
W0 = 0.4
CLIP = dict(STDP, A_plus=0.8, A_minus=0.8)  # clipped for |dt| < ~9 ms (depression: < ~16 ms)
W0_CLIP = 0.5


def pairing_spec(pre_times, post_times, models, weights, *, name="pairing", delay=None,
                 post_model=None, duration_ms=None):
    """Synapse k (one-to-one) sees the pre spikes ``pre_times[k]`` and the post spikes ``post_times[k]`` (ms).

    ``models`` maps projection names to synapse models (all transmitting into ``g``);
    ``weights`` maps them to initial weights.
    """
    n, n_post = len(pre_times), len(post_times)
    last = max(max(t, default=0.0) for t in list(pre_times) + list(post_times))
    duration_ms = duration_ms or last + 10.0
    steps = int(round(duration_ms / DT_MS)) + 1
    fire = np.zeros((steps, n_post))
    for k, times in enumerate(post_times):
        fire[np.round(np.asarray(times) / DT_MS).astype(int), k] = 1.0
    pre_idx = np.concatenate([[k] * len(t) for k, t in enumerate(pre_times)]).astype(np.int64)
    pre_t = np.concatenate([np.asarray(t, dtype=float) for t in pre_times])
    post = post_model or NeuronModel(equations="g : 1", threshold="post_fire(t, i) > 0.5")
    return NetworkSpec(
        name, dt=f"{DT_MS}*ms", duration=f"{duration_ms}*ms",
        timed_arrays=[TimedArraySpec("post_fire", ArrayValue(fire, "1"), f"{DT_MS}*ms")],
        inputs=[SpikeTimesInput("pre", n, ArrayValue(pre_idx), ArrayValue(pre_t, "ms"))],
        populations=[Population("post", n_post, post)],
        projections=[Projection(p, "pre", "post", model, OneToOne(), weights=weights[p], delay=delay)
                     for p, model in models.items()])


def run(spec, backend="runtime", **kw):
    return get_backend(backend, **kw).build(spec).run(progress=False,
                                                      final_state=[f"{p.name}.w" for p in spec.projections]
                                                      + ["post.g"])


def window(dt, w0, dependence, A_plus, A_minus, w_min, w_max, **_):
    """Weight after one pre/post pair: the exponential STDP window with its weight dependence, clipped."""
    dt = np.asarray(dt, dtype=float)
    f_plus = 1.0 if dependence == "additive" else w_max - w0
    f_minus = 1.0 if dependence == "additive" else w0 - w_min
    dw = np.where(dt >= 0, A_plus * f_plus * np.exp(-dt / TAU_PLUS),
                  -A_minus * f_minus * np.exp(dt / TAU_MINUS))
    return np.clip(w0 + dw, w_min, w_max)


SWEEP_CASES = {f"{p}_{d}": (p, d, STDP, W0) for p in plasticity.PAIRINGS
               for d in plasticity.WEIGHT_DEPENDENCES}
SWEEP_CASES["clipped"] = ("all", "additive", CLIP, W0_CLIP)


def sweep_spec(keys=tuple(SWEEP_CASES), name="stdp_sweep"):
    models = {k: plasticity.stdp_trace(p, d, target_var="g", **params)
              for k, (p, d, params, _) in SWEEP_CASES.items() if k in keys}
    weights = {k: str(w0) for k, (_, _, _, w0) in SWEEP_CASES.items()}
    return pairing_spec([[T_PRE]] * len(SWEEP), [[T_PRE + dt] for dt in SWEEP], models, weights, name=name)


def sweep_expected(key):
    _, dependence, params, w0 = SWEEP_CASES[key]
    return window(SWEEP, w0, dependence, **params)


@pytest.fixture(scope="module")
def sweep():
    return run(sweep_spec())


@pytest.mark.parametrize("key", SWEEP_CASES)
def test_single_pairs_follow_the_exponential_window(sweep, key):
    np.testing.assert_allclose(sweep.final[f"{key}.w"].values, sweep_expected(key), rtol=1e-12, atol=1e-15)


def test_sweep_is_not_trivial(sweep):
    changes = sweep.final["all_additive.w"].values - W0
    assert (changes[SWEEP >= 0] > 0).all() and (changes[SWEEP < 0] < 0).all()
    clipped = sweep.final["clipped.w"].values
    assert set(clipped[np.abs(SWEEP) <= 5]) == {0.0, 1.0}          # at the bounds, exactly
    assert ((clipped[np.abs(SWEEP) >= 20] > 0) & (clipped[np.abs(SWEEP) >= 20] < 1)).all()
    # multiplicative: the same pair changes a weight by A*(w_max - w) resp. A*(w - w_min)
    mult = sweep.final["all_multiplicative.w"].values - W0
    np.testing.assert_allclose(mult[SWEEP >= 0], changes[SWEEP >= 0] * (1.0 - W0), rtol=1e-10)
    np.testing.assert_allclose(mult[SWEEP < 0], changes[SWEEP < 0] * W0, rtol=1e-10)


def test_every_synapse_transmits_its_weight(sweep):
    # each post neuron got one pre spike through each projection, carrying the weight before its update
    expected = sum(w0 for *_, w0 in SWEEP_CASES.values())
    np.testing.assert_allclose(sweep.final["post.g"].values, expected, rtol=1e-12)


TRIPLET_PRE, TRIPLET_POST = [[10.0, 20.0], [30.0]], [[30.0], [10.0, 20.0]]


@pytest.fixture(scope="module")
def triplets():
    models = {f"{p}_{d}": plasticity.stdp_trace(p, d, target_var="g", **STDP)
              for p in plasticity.PAIRINGS for d in plasticity.WEIGHT_DEPENDENCES}
    return run(pairing_spec(TRIPLET_PRE, TRIPLET_POST, models, {k: str(W0) for k in models}, name="triplets"))


def test_nearest_and_all_to_all_pairing_differ_on_triplets(triplets):
    """pre, pre, post and post, post, pre at 10, 20, 30 ms: all-to-all sums both pairs, nearest the last."""
    a_p, a_m = STDP["A_plus"], STDP["A_minus"]
    trace_plus = {"all": np.exp(-20 / TAU_PLUS) + np.exp(-10 / TAU_PLUS), "nearest": np.exp(-10 / TAU_PLUS)}
    trace_minus = {"all": np.exp(-20 / TAU_MINUS) + np.exp(-10 / TAU_MINUS), "nearest": np.exp(-10 / TAU_MINUS)}
    for pairing in plasticity.PAIRINGS:
        additive = [W0 + a_p * trace_plus[pairing], W0 - a_m * trace_minus[pairing]]
        multiplicative = [W0 + a_p * (1 - W0) * trace_plus[pairing], W0 - a_m * W0 * trace_minus[pairing]]
        np.testing.assert_allclose(triplets.final[f"{pairing}_additive.w"].values, additive, rtol=1e-12)
        np.testing.assert_allclose(triplets.final[f"{pairing}_multiplicative.w"].values, multiplicative,
                                   rtol=1e-12)
    assert triplets.final["all_additive.w"].values[0] > triplets.final["nearest_additive.w"].values[0]


DC = dict(nu_ee_pre=0.002, nu_ee_post=0.05, tc_pre_ee="20*ms", tc_post_1_ee="20*ms", tc_post_2_ee="40*ms")


def test_diehl_cook_rule_follows_its_closed_form():
    """Three synapses, the second with a 3 ms delay (pairing is at the pre spike's arrival)."""
    pre_times = [[20.0, 55.0], [20.0, 55.0], [10.0]]
    post_times = [[30.0, 45.0], [30.0, 45.0], [30.0]]
    model = plasticity.stdp_diehl_cook(target_var="g", **DC)
    w0 = 0.5
    rec = run(pairing_spec(pre_times, post_times, {"dc": model}, {"dc": str(w0)}, name="diehl_cook",
                           delay=ArrayValue([0.0, 3.0, 0.0], "ms")))
    nu_pre, nu_post = DC["nu_ee_pre"], DC["nu_ee_post"]

    def expected(t_pre, t_post1, t_post2, t_pre2):
        # first post spike: post2 is 0 -> no change; second: pre trace x post2 before its reset;
        # the later pre spike: depression by post1 of the last post spike
        return (w0 + nu_post * np.exp(-(t_post2 - t_pre) / 20) * np.exp(-(t_post2 - t_post1) / 40)
                - nu_pre * np.exp(-(t_pre2 - t_post2) / 20))
    np.testing.assert_allclose(rec.final["dc.w"].values,
                               [expected(20, 30, 45, 55), expected(23, 30, 45, 58), w0], rtol=1e-12)


def test_diehl_cook_model_is_the_one_of_the_network_spec():
    spec = load_spec("network_specs/diehl_cook_2015.yaml")
    inline = spec.synapse_model(spec.projection("XeAe"))
    ours = plasticity.stdp_diehl_cook()
    lines = lambda text: [ln.strip() for ln in text.strip().splitlines()]  # noqa: E731
    assert lines(inline.equations) == lines(ours.equations)
    assert lines(inline.on_pre) == lines(ours.on_pre) and lines(inline.on_post) == lines(ours.on_post)
    assert dict(inline.parameters) == dict(ours.parameters)
    # the library model can replace the inline one, and with the normalisation of the paper
    # (incoming weights of each Ae neuron summing to 78, once per 500 ms sample) the spec is valid
    spec.with_projection("XeAe", model="stdp_diehl_cook")
    spec = spec.with_population("Ae", model=plasticity.with_sum_variable(neurons.adaptive_lif_dc()))
    spec = spec.with_projection("XeAe", model=plasticity.with_weight_sum(ours),
                                operations=[plasticity.normalization(78.0, dt="500*ms")])
    assert spec.projection("XeAe").operations[0].code == \
        "w = w * (78.0) / (wsum_post + int(wsum_post == 0*(78.0))*(78.0))"


# ---------------------------------------------------------------------------
# Weight normalisation


def test_normalize_incoming_dense_and_per_synapse():
    rng = np.random.default_rng(0)
    w = rng.uniform(0, 1, size=(7, 4))
    w[:, 2] = 0.0
    out = plasticity.normalize_incoming(w, 78.0)
    np.testing.assert_allclose(out.sum(axis=0), [78.0, 78.0, 0.0, 78.0], rtol=1e-12)
    np.testing.assert_allclose(out[:, 1], w[:, 1] * 78.0 / w[:, 1].sum(), rtol=1e-12)
    pre, post = np.nonzero(np.ones_like(w))  # row-major synapse order, as Brian2's connect(i, j)
    flat = plasticity.normalize_incoming(w[pre, post], 78.0, post=post)
    np.testing.assert_allclose(flat, out[pre, post], rtol=1e-12)
    with pytest.raises(SpecError, match="must be 2-D"):
        plasticity.normalize_incoming(w.ravel(), 78.0)
    with pytest.raises(SpecError, match="equal length"):
        plasticity.normalize_incoming(w.ravel(), 78.0, post=post[:-1])


def normalization_spec(op_dt):
    """6 inputs x 3 neurons, all-to-all, additive STDP; each synapse sees one pre and one post spike."""
    rng = np.random.default_rng(1)
    w0 = rng.uniform(0.05, 0.6, size=18)
    model = plasticity.with_weight_sum(plasticity.stdp_trace(target_var="g", **STDP))
    post = plasticity.with_sum_variable(NeuronModel(equations="g : 1", threshold="post_fire(t, i) > 0.5"))
    spec = pairing_spec([[1.0], [1.5], [2.0], [2.5], [3.0], [3.5]], [[2.2], [0.7], [3.9]], {}, {},
                        name="normalised", post_model=post, duration_ms=12.0)
    proj = Projection("XA", "pre", "post", model, AllToAll(), weights=ArrayValue(w0),
                      operations=[plasticity.normalization(2.0, dt=op_dt)])
    return spec.replace(projections=(proj,)), w0


def pair_dw(dt):
    """Additive weight change of one pair (no clipping), dt = t_post - t_pre in ms."""
    return np.where(dt >= 0, STDP["A_plus"] * np.exp(-dt / TAU_PLUS), -STDP["A_minus"] * np.exp(dt / TAU_MINUS))


@pytest.mark.parametrize("op_dt", ["5*ms", None])
def test_normalization_operation_scales_column_sums(op_dt):
    spec, w0 = normalization_spec(op_dt)
    rec = get_backend("runtime").build(spec).run(progress=False, final_state=["XA.w", "post.wsum"])
    conn = expand_projection(spec, spec.projections[0])
    w = rec.final["XA.w"].values
    np.testing.assert_allclose(np.bincount(conn.j, weights=w), 2.0, rtol=1e-12)
    # numpy: normalise at t = 0; each synapse's pair changes it when its later spike comes; the
    # operation (every 5 ms, or every step) normalises after the changes before it
    pre_t, post_t = 1.0 + 0.5 * conn.i, np.array([2.2, 0.7, 3.9])[conn.j]
    event_t, dw = np.maximum(pre_t, post_t), pair_dw(post_t - pre_t)
    expected = plasticity.normalize_incoming(w0, 2.0, post=conn.j)
    batches = [event_t < 5.0] if op_dt else [event_t == t for t in np.unique(event_t)]
    for batch in batches:
        expected = plasticity.normalize_incoming(expected + dw * batch, 2.0, post=conn.j)
    np.testing.assert_allclose(w, expected, rtol=1e-12)
    np.testing.assert_allclose(rec.final["post.wsum"].values, 2.0, rtol=1e-12)
    assert not np.allclose(w, plasticity.normalize_incoming(w0, 2.0, post=conn.j), rtol=1e-4)  # STDP acted


def test_model_helpers_check_their_input():
    with pytest.raises(SpecError, match="unknown pairing 'triplet'"):
        plasticity.stdp_trace("triplet")
    with pytest.raises(SpecError, match="unknown weight_dependence"):
        plasticity.stdp_trace("all", "power")
    with pytest.raises(SpecError, match="tau_plus = 20 has no unit"):
        plasticity.stdp_trace(tau_plus=20)
    with pytest.raises(SpecError, match="no variable 'weight'"):
        plasticity.with_weight_sum(plasticity.stdp_trace(), weight_var="weight")
    volt = plasticity.stdp_trace(unit="mV", A_plus=0.5, w_max=8)
    assert volt.parameters["A_plus"] == "0.5*mV" and volt.parameters["w_max"] == "8.0*mV"
    NetworkSpec("volt_stdp", populations=[Population("a", 2, "lif")], inputs=[
        SpikeTimesInput("s", 2, ArrayValue([0]), ArrayValue([1.0], "ms"))],
        projections=[Projection("sa", "s", "a", volt, weights="2*mV")])  # units check out
    with pytest.raises(SpecError, match="unit mismatch"):
        NetworkSpec("volt_stdp", populations=[Population("a", 2, "lif")], inputs=[
            SpikeTimesInput("s", 2, ArrayValue([0]), ArrayValue([1.0], "ms"))],
            projections=[Projection("sa", "s", "a", plasticity.stdp_trace(), weights="0.5")])
    assert "wsum_post = w : volt (summed)" in plasticity.with_weight_sum(volt).equations
    assert plasticity.stdp_trace("nearest", "multiplicative", unit="mV").parameters["A_plus"] == "0.01"
    for name in plasticity.LIBRARY:
        assert SYNAPSE_MODELS[name]() == plasticity.LIBRARY[name]()


# ---------------------------------------------------------------------------
# Other simulators


@pytest.mark.standalone
def test_pairing_sweep_agrees_on_cpp_standalone(build_cache, sweep):
    """Two of the sweep's projections (nearest-spike resets, multiplicative, clipping): one small build."""
    if "cpp_standalone" not in available_backends():
        pytest.skip("cpp_standalone is not available")
    keys = ("nearest_multiplicative", "clipped")
    rec = run(sweep_spec(keys, name="stdp_sweep_standalone"), "cpp_standalone", cache_dir=build_cache)
    for key in keys:
        np.testing.assert_allclose(rec.final[f"{key}.w"].values, sweep.final[f"{key}.w"].values,
                                   rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(rec.final[f"{key}.w"].values, sweep_expected(key), rtol=1e-12, atol=1e-15)


NEST_MODELS = {"all": "stdp_synapse", "nearest": "stdp_nn_symm_synapse"}
OFFSET = 1000.0  # ms


def nest_weights(pre_times, post_times, synapse_model, dependence):
    """NEST's STDP synapse between parrot neurons: synapse k sees ``pre_times[k]``, ``post_times[k]`` (ms).

    NEST: ``w/Wmax += lambda (1 - w/Wmax)^mu_plus K+`` and ``w/Wmax -= alpha lambda
    (w/Wmax)^mu_minus K-``.  ``mu = 0`` is our additive rule with ``A_plus = lambda Wmax``,
    ``A_minus = alpha lambda Wmax``; ``mu = 1`` our multiplicative one with ``A_plus = lambda``,
    ``A_minus = alpha lambda`` (``w_min = 0``).  NEST treats the synaptic delay ``d`` as
    dendritic (a post spike at ``t`` meets the pre spikes at ``t + d``), so the post spikes are
    sent ``d`` earlier; it updates weights at pre spikes only, so a last pre spike 2 s later
    (post trace ``exp(-2000/tau_minus)`` < 1e-25) applies the pending potentiation.
    ``stdp_nn_symm_synapse`` pairs post spikes before a synapse's first pre spike with a
    phantom pre spike at t = 0 (its last-spike time starts at 0): all spikes are sent
    ``OFFSET`` = 1 s late, which makes that pairing ``exp(-1000/tau_plus)`` < 1e-25.
    """
    import nest
    nest.ResetKernel()
    nest.verbosity = nest.VerbosityLevel.ERROR
    nest.resolution = DT_MS
    d, n = DT_MS, len(pre_times)
    scale = STDP["w_max"] if dependence == "additive" else 1.0
    lam, alpha = STDP["A_plus"] / scale, STDP["A_minus"] / STDP["A_plus"]
    mu = 0.0 if dependence == "additive" else 1.0
    pre_gen, post_gen = nest.Create("spike_generator", n), nest.Create("spike_generator", n)
    pre = nest.Create("parrot_neuron", n)
    post = nest.Create("parrot_neuron", n, params={"tau_minus": TAU_MINUS})
    last = OFFSET + max(max(t) for t in list(pre_times) + list(post_times))
    for k in range(n):
        pre_gen[k].spike_times = [OFFSET + t for t in pre_times[k]] + [last + 2000.0]
        post_gen[k].spike_times = [round(OFFSET + t - d, 1) for t in post_times[k]]
    nest.Connect(pre_gen, pre, "one_to_one", {"delay": 1.0})
    nest.Connect(post_gen, post, "one_to_one", {"delay": 1.0})
    # receptor 1: the parrot does not repeat these spikes, but they drive plasticity
    nest.Connect(pre, post, "one_to_one", {"synapse_model": synapse_model, "weight": W0, "delay": d,
                                           "receptor_type": 1, "tau_plus": TAU_PLUS, "lambda": lam,
                                           "alpha": alpha, "mu_plus": mu, "mu_minus": mu,
                                           "Wmax": STDP["w_max"]})
    nest.Simulate(last + 2010.0)
    conns = nest.GetConnections(pre, post)
    order = np.argsort(np.atleast_1d(conns.get("source")))
    return np.atleast_1d(np.asarray(conns.get("weight"), dtype=float))[order]


@pytest.mark.parametrize("dependence", list(plasticity.WEIGHT_DEPENDENCES))
def test_single_pairs_agree_with_nest_stdp_synapse(sweep, dependence):
    """dt = 0 is left out: NEST counts a post spike coincident with the pre spike for neither window."""
    pytest.importorskip("nest")
    keep = SWEEP != 0
    theirs = nest_weights([[T_PRE]] * keep.sum(), [[T_PRE + dt] for dt in SWEEP[keep]], "stdp_synapse",
                          dependence)
    np.testing.assert_allclose(theirs, sweep.final[f"all_{dependence}.w"].values[keep], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("pairing", list(plasticity.PAIRINGS))
@pytest.mark.parametrize("dependence", list(plasticity.WEIGHT_DEPENDENCES))
def test_triplets_agree_with_nest(triplets, pairing, dependence):
    """All-to-all against ``stdp_synapse``, nearest against ``stdp_nn_symm_synapse``."""
    pytest.importorskip("nest")
    theirs = nest_weights(TRIPLET_PRE, TRIPLET_POST, NEST_MODELS[pairing], dependence)
    np.testing.assert_allclose(theirs, triplets.final[f"{pairing}_{dependence}.w"].values, rtol=1e-12)
