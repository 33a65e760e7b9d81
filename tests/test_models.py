"""Library neuron models against their analytic solutions (runtime backend).

Expected values are computed here with numpy/scipy from the closed-form
solutions, never from the simulator.

Brian2's schedule within one time step ``t_n = n*dt`` is: the state is
integrated from ``t_n`` to ``t_n + dt``, the threshold is tested on the
integrated state, a spike is *recorded at t_n*, resets run, and then the state
monitors (``when="end"``, the spec's default, pinned here) sample the state
-- so the sample labelled ``t_n`` is the state at ``t_n + dt`` after any reset.
A threshold crossed by the exact trajectory at ``t*`` is therefore reported at
the step ``n`` with ``t_n < t* <= t_n + dt`` (for a fixed threshold).  The
discrete checks below use that convention explicitly.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import lambertw

from biosnn.backends.registry import get_backend
from biosnn.spec import (ArrayValue, NetworkSpec, Population, Projection, SpikeMonitor,
                         SpikeTimesInput, StateMonitor)

DT = 1e-4  # 0.1 ms


def run(spec, **kw):
    return get_backend("runtime").build(spec).run(progress=False, **kw)


def single_population_spec(model, currents_nA=None, *, size=None, dt="0.1*ms", duration="100*ms",
                           parameters=None, initial=None, monitors=("spikes",)):
    initial = dict(initial or {})
    if currents_nA is not None:
        initial["I"] = ArrayValue(np.asarray(currents_nA, dtype=float), "nA")
        size = len(currents_nA)
    mons = []
    for m in monitors:
        mons.append(SpikeMonitor("n") if m == "spikes" else StateMonitor("n", tuple(m), when="end"))
    return NetworkSpec(name="model_test", dt=dt, duration=duration,
                       populations=(Population("n", size, model, parameters=parameters or {},
                                               initial=initial),),
                       monitors=tuple(mons))


def assert_no_ties(values, what):
    """Guard: analytic crossing points must not sit on a time-step boundary (float rounding)."""
    frac = np.asarray(values) % 1.0
    assert np.all((frac > 1e-6) & (frac < 1 - 1e-6)), f"{what}: choose parameters without exact ties"


# ---------------------------------------------------------------------------
# LIF


LIF = dict(E_L=-65e-3, v_th=-50e-3, v_reset=-65e-3, tau_m=20e-3, R_m=100e6, tau_ref=2e-3)
SUPRA_NA = [0.16, 0.2, 0.3, 0.5, 1.0, 2.0]


@pytest.fixture(scope="module")
def lif_recording():
    spec = single_population_spec("lif", SUPRA_NA, duration="200*ms", initial={"v": "v_reset"})
    return run(spec)


@pytest.mark.parametrize("k, current_nA", list(enumerate(SUPRA_NA)))
def test_lif_interspike_interval(lif_recording, k, current_nA):
    p = LIF
    drive = p["E_L"] + p["R_m"] * current_nA * 1e-9
    free = p["tau_m"] * np.log((drive - p["v_reset"]) / (drive - p["v_th"]))
    isi = p["tau_ref"] + free
    train = lif_recording.spikes["n"].trains()[k]
    expected_count = int(np.floor((0.2 - free) / isi)) + 1
    assert abs(len(train) - expected_count) <= 1
    assert len(train) >= 3
    # first spike from v_reset at t=0 (no refractory period before it)
    assert -DT - 1e-12 <= train[0] - free <= 1e-12
    # every interval within one time step of the analytic value
    np.testing.assert_allclose(np.diff(train), isi, atol=DT + 1e-12, rtol=0)
    assert abs(np.mean(np.diff(train)) - isi) < DT


def test_lif_interval_shrinks_with_current(lif_recording):
    isis = [np.mean(np.diff(t)) for t in lif_recording.spikes["n"].trains()]
    assert all(a > b for a, b in zip(isis, isis[1:]))
    assert isis[-1] > LIF["tau_ref"]  # the refractory period bounds the rate


def test_lif_no_spikes_below_rheobase():
    p = LIF
    rheobase_nA = (p["v_th"] - p["E_L"]) / p["R_m"] * 1e9  # 0.15 nA
    currents = [0.0, 0.05, 0.14, 0.99 * rheobase_nA]
    spec = single_population_spec("lif", currents, duration="300*ms", initial={"v": "v_reset"},
                                  monitors=("spikes", ("v",)))
    rec = run(spec)
    assert len(rec.spikes["n"]) == 0
    # the subthreshold trajectory is the exact exponential relaxation (method 'exact')
    trace = rec.states["n"]["v"]
    t = trace.times[:, None] + DT  # sampled at the end of the step
    drive = p["E_L"] + p["R_m"] * np.asarray(currents) * 1e-9
    expected = drive + (p["v_reset"] - drive) * np.exp(-t / p["tau_m"])
    np.testing.assert_allclose(trace.values, expected, rtol=0, atol=1e-9)
    assert trace.values.max() < p["v_th"]


# ---------------------------------------------------------------------------
# IF with reset by subtraction


IF_C, IF_VTH = 250e-12, 20e-3


@pytest.mark.parametrize("current_nA", [0.31, 0.77, 1.23, 2.93])
def test_if_subtract_spike_count_and_times(current_nA):
    T, n_steps = 0.05, 500
    spec = single_population_spec("if_subtract", [current_nA], duration="50*ms")
    rec = run(spec)
    times = rec.spikes["n"].times
    rate = current_nA * 1e-9 / IF_C  # dv/dt in V/s
    # count over T: floor(I T / (C v_th)) -- subtraction loses no charge
    assert_no_ties([rate * T / IF_VTH], "count")
    assert len(times) == int(np.floor(rate * T / IF_VTH))
    # k-th spike: the first step n whose integrated potential I (n+1) dt / C reaches k v_th
    k = np.arange(1, len(times) + 1)
    crossing_steps = k * IF_VTH / (rate * DT)  # continuous t_k / dt
    assert_no_ties(crossing_steps, "spike times")
    expected_steps = np.ceil(crossing_steps).astype(int) - 1
    np.testing.assert_array_equal(np.round(times / DT).astype(int), expected_steps)
    assert np.all(expected_steps < n_steps)


def test_if_subtract_keeps_the_residual():
    """After k spikes the potential is I t / C - k v_th: the reset loses no charge."""
    current = 0.77e-9
    spec = single_population_spec("if_subtract", [0.77], duration="20*ms", monitors=("spikes", ("v",)))
    rec = run(spec)
    trace = rec.states["n"]["v"]
    t = trace.times
    spikes = rec.spikes["n"].times
    n_reset = np.searchsorted(spikes, t + DT / 2)  # spikes (and resets) up to and including step t
    expected = current * (t + DT) / IF_C - n_reset * IF_VTH
    assert n_reset[-1] == len(spikes) >= 3
    np.testing.assert_allclose(trace.values[:, 0], expected, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------
# IF with a decaying threshold


DTH = dict(C_m=250e-12, theta0=20e-3, tau_theta=2e-3)


@pytest.mark.parametrize("dt_ms", [0.1, 0.01])
def test_if_decaying_threshold_first_spike(dt_ms):
    currents_nA = np.array([0.5, 1.0, 2.0, 5.0])
    dt = dt_ms * 1e-3
    spec = single_population_spec("if_decaying_threshold", currents_nA, dt=f"{dt_ms}*ms", duration="10*ms")
    trains = run(spec).spikes["n"].trains()
    C, th0, tau = DTH["C_m"], DTH["theta0"], DTH["tau_theta"]
    for I_nA, train in zip(currents_nA, trains):
        I = I_nA * 1e-9
        # continuous model: I t / C = theta0 exp(-t / tau)  =>  t* = tau W(theta0 C / (I tau))
        t_star = tau * lambertw(th0 * C / (I * tau)).real
        assert np.isclose(I * t_star / C, th0 * np.exp(-t_star / tau))
        assert len(train) >= 1
        # v is tested at t_n + dt against theta(t_n): the step is within one dt of t*
        assert abs(train[0] - t_star) <= dt + 1e-12, (I_nA, train[0], t_star)
        # discrete: the first step n with I (n+1) dt / C >= theta0 exp(-n dt / tau)
        n = np.arange(int(0.01 / dt))
        hit = I * (n + 1) * dt / C >= th0 * np.exp(-n * dt / tau)
        assert hit.any()
        assert round(train[0] / dt) == int(np.argmax(hit))


def test_if_decaying_threshold_is_faster_than_fixed_threshold():
    """With the threshold decaying, the first spike comes before the fixed-threshold IF's."""
    I = 1e-9
    t_fixed = DTH["theta0"] * DTH["C_m"] / I
    t_star = DTH["tau_theta"] * lambertw(DTH["theta0"] * DTH["C_m"] / (I * DTH["tau_theta"])).real
    spec = single_population_spec("if_decaying_threshold", [1.0], duration="10*ms")
    first = run(spec).spikes["n"].times[0]
    assert first < t_fixed and abs(first - t_star) <= DT


# ---------------------------------------------------------------------------
# ticking neuron


@pytest.mark.parametrize("t_start_ms, t_stop_ms, dt_ms", [(2.0, 5.0, 0.1), (0.3, 0.7, 0.1), (0.0, 1.1, 0.1),
                                                          (0.25, 0.5, 0.05)])
def test_ticking_neuron_fires_every_step_in_window(t_start_ms, t_stop_ms, dt_ms):
    spec = single_population_spec("ticking", size=3, dt=f"{dt_ms}*ms", duration=f"{t_stop_ms + 1}*ms",
                                  parameters={"t_start": f"{t_start_ms}*ms", "t_stop": f"{t_stop_ms}*ms"})
    rec = run(spec)
    first, stop = round(t_start_ms / dt_ms), round(t_stop_ms / dt_ms)
    expected = np.arange(first, stop)
    for train in rec.spikes["n"].trains():
        steps = train / (dt_ms * 1e-3)
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)
        np.testing.assert_array_equal(np.round(steps).astype(int), expected)
    assert len(rec.spikes["n"]) == 3 * len(expected)


def test_ticking_neuron_default_fires_every_step():
    spec = single_population_spec("ticking", size=1, duration="3*ms")
    times = run(spec).spikes["n"].times
    np.testing.assert_array_equal(np.round(times / DT).astype(int), np.arange(30))


# ---------------------------------------------------------------------------
# Diehl & Cook excitatory neuron (adaptive threshold)


def dc_spec(input_times_ms, weight, parameters, duration, dt="0.05*ms", theta_dt=None):
    times = np.asarray(input_times_ms, dtype=float)
    return NetworkSpec(
        name="dc_test", dt=dt, duration=duration,
        inputs=(SpikeTimesInput("drive", 1, ArrayValue(np.zeros(len(times), dtype=np.int64)),
                                ArrayValue(times, "ms")),),
        populations=(Population("e", 1, "adaptive_lif_dc", parameters=parameters,
                                initial={"v": "v_rest", "timer": "1*second"}),),
        projections=(Projection("syn", "drive", "e", "conductance_exc", weights=str(weight)),),
        monitors=(SpikeMonitor("e"), StateMonitor("e", ("theta", "v"), dt=theta_dt, when="end")))


def test_adaptive_lif_theta_follows_its_spikes():
    theta_plus, tau_theta = 1e-3, 20e-3
    inputs = [5, 12, 20, 27, 45, 52, 80]
    spec = dc_spec(inputs, 50, {"offset": "0*mV", "tau_theta": "20*ms", "theta_plus": "1*mV"}, "120*ms")
    rec = run(spec)
    spikes = rec.spikes["e"].times
    # every strong input elicits exactly one spike, within 2 ms
    assert len(spikes) == len(inputs)
    assert np.all((spikes * 1e3 - inputs >= 0) & (spikes * 1e3 - inputs < 2))
    trace = rec.states["e"]["theta"]
    assert trace.unit == "volt"
    t = trace.times
    # theta(t) = theta_plus * sum over own spikes t_k <= t of exp(-(t - t_k)/tau_theta)
    # (sampled at the end of the step, after the reset of a spike at t)
    lag = t[:, None] - spikes[None, :]
    fired = lag > -2.5e-5  # half a step: t_k <= t
    expected = theta_plus * np.where(fired, np.exp(-np.clip(lag, 0, None) / tau_theta), 0.0).sum(axis=1)
    # forward Euler of the decay (dt/tau = 0.25 % per step) bounds the error
    np.testing.assert_allclose(trace.values[:, 0], expected, rtol=1e-2, atol=1e-3 * theta_plus)
    assert np.all(trace.values[t < spikes[0] - 2.5e-5, 0] == 0.0)
    at_spikes = np.searchsorted(t, spikes - 2.5e-5)
    assert np.all(np.diff(trace.values[:, 0])[at_spikes - 1] > 0.9 * theta_plus)  # the jumps
    # the decay is visible: theta falls between the spikes at 52 ms and 80 ms
    between = (t > spikes[5] + 1e-3) & (t < spikes[6])
    assert np.all(np.diff(trace.values[between, 0]) < 0)
    assert trace.values[between, 0][-1] < 0.4 * trace.values[between, 0][0]


def test_adaptive_lif_rate_decreases_as_theta_grows():
    theta_plus = 2e-3
    spec = dc_spec(np.arange(1, 300, 1.0), 3, {"offset": "0*mV", "theta_plus": "2*mV"}, "300*ms",
                   dt="0.1*ms", theta_dt="1*ms")
    rec = run(spec)
    spikes = rec.spikes["e"].times
    assert len(spikes) >= 6
    isi = np.diff(spikes)
    assert np.all(np.diff(isi) > -1e-9), "intervals should not shrink while theta grows"
    assert isi[-1] > 1.5 * isi[0]
    counts = np.histogram(spikes, bins=[0, 0.1, 0.2, 0.3])[0]
    assert counts[0] > counts[2]
    # with the paper's tau_theta (1e7 ms) theta is the running count of spikes times theta_plus
    theta = rec.states["e"]["theta"]
    n_fired = np.searchsorted(spikes, theta.times + 5e-5)  # spikes up to and including the sample step
    np.testing.assert_allclose(theta.values[:, 0], theta_plus * n_fired, rtol=1e-4, atol=1e-9)


# ---------------------------------------------------------------------------
# Diehl & Cook inhibitory neuron


def test_inhibitory_lif_relaxes_to_rest_and_resets():
    """Passive decay (forward Euler of a linear ODE) and reset to v_reset after a spike."""
    v0 = np.array([-80.0, -70.0, -50.0])
    tau_m, v_rest, dt = 10e-3, -60e-3, 1e-5
    spec = single_population_spec("inhibitory_lif_dc", size=3, dt="0.01*ms", duration="20*ms",
                                  initial={"v": ArrayValue(v0, "mV")}, monitors=("spikes", ("v", "ge")))
    rec = run(spec)
    assert len(rec.spikes["n"]) == 0
    trace = rec.states["n"]["v"]
    n = np.round(trace.times / dt)[:, None] + 1  # sampled after the step's update
    euler = v_rest + (v0 * 1e-3 - v_rest) * (1 - dt / tau_m) ** n
    np.testing.assert_allclose(trace.values, euler, rtol=1e-9, atol=1e-12)
    exact = v_rest + (v0 * 1e-3 - v_rest) * np.exp(-(trace.times[:, None] + dt) / tau_m)
    np.testing.assert_allclose(trace.values, exact, atol=5e-5)  # Euler at dt/tau = 1e-3


def test_inhibitory_lif_spike_and_refractory_clamp():
    spec = NetworkSpec(
        name="inh", dt="0.05*ms", duration="10*ms",
        inputs=(SpikeTimesInput("drive", 1, ArrayValue([0]), ArrayValue([1.0], "ms")),),
        populations=(Population("i", 1, "inhibitory_lif_dc", initial={"v": "v_rest"}),),
        projections=(Projection("syn", "drive", "i", "conductance_exc", weights="20"),),
        monitors=(SpikeMonitor("i"), StateMonitor("i", ("v",), when="end")))
    rec = run(spec)
    spikes = rec.spikes["i"].times
    assert len(spikes) == 1 and 1e-3 <= spikes[0] < 2e-3
    v = rec.states["i"]["v"]
    # from the reset at the spike step until the 2 ms refractory period is over, v = v_reset
    refractory = (v.times > spikes[0] - 2.5e-5) & (v.times < spikes[0] + 2e-3 - 2.5e-5)
    assert refractory.sum() == 40
    np.testing.assert_allclose(v.values[refractory, 0], -45e-3, atol=1e-12)
    assert v.values[np.argmax(v.times > spikes[0] + 2e-3 - 2.5e-5), 0] != -45e-3
    # afterwards the conductance (tau_ge = 1 ms) fades and v relaxes towards v_rest
    late = v.times > spikes[0] + 6e-3
    assert np.all(np.diff(v.values[late, 0]) < 0)
    assert -60e-3 < v.values[-1, 0] < -45e-3
