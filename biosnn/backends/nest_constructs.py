"""Brian2 constructs of the spec format that NEST has no counterpart of, lowered to what the NEST backend runs.

:func:`lower_for_nest` rewrites a spec before the NEST backend plans it, and
returns the function that turns the NEST recording back into the recording the
original spec asks for:

- :class:`~biosnn.spec.Condition` connectivity becomes explicit synapse lists
  (:func:`biosnn.spec.expand.expand_condition`: deterministic from the spec
  seed; the same statistics as Brian2's ``connect``, not the same draws);
- projections between subgroups (``exc[0:800]``) become explicit lists on the
  whole populations (indices shifted);
- spike, rate and state monitors of subgroups record the whole population and
  are cut back to the subgroup (indices relative to it, as in Brian2);
- rate monitors are computed from the recorded spikes (spikes per neuron in
  each time step / ``dt``, as Brian2's ``PopulationRateMonitor``).

A protocol's assignments to neuron variables are made between ``nest.Run``
calls (:func:`protocol_schedule`).  Refused up front, with the alternative:
protocol assignments to synaptic variables, current inputs onto subgroups, spike monitors with variables,
state monitors of projections, synapse models with several pathways and
synapses onto synapses.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import numpy as np

from biosnn.errors import BackendError
from biosnn.recording import Recording, SpikeTrains, StateTrace
from biosnn.spec import model as m
from biosnn.spec.values import ArrayValue, parse_quantity

__all__ = ["lower_for_nest", "population_rate", "protocol_schedule"]


def _refuse(spec: m.NetworkSpec) -> None:
    for k, seg in enumerate(spec.protocol):
        for key in seg.set:
            if key.partition(".")[0] not in spec.population_names:
                raise BackendError(f"protocol[{k}] sets '{key}', a synaptic variable, which the NEST backend does "
                                   "not change between segments (it sets neuron variables only): use a Brian2 "
                                   "backend, or run each segment as its own run with overrides")
    projections = {p.name for p in spec.projections}
    for k, mon in enumerate(spec.monitors):
        if isinstance(mon, m.SpikeMonitor) and mon.variables:
            raise BackendError(f"monitors[{k}] records {list(mon.variables)} at each spike of '{mon.population}'; "
                               "NEST's spike recorders record no variables: use a Brian2 backend, or a state "
                               "monitor of the variables")
        if isinstance(mon, m.StateMonitor) and mon.population in projections \
                and mon.population not in spec.population_names:
            raise BackendError(f"monitors[{k}] records synaptic variables of projection '{mon.population}' over "
                               "time, which the NEST backend does not: use a Brian2 backend, or read the values "
                               "at the end of the run (run(final_state=['<projection>.<variable>']))")
    for proj in spec.projections:
        if proj.target in projections and proj.target not in spec.population_names:
            raise BackendError(f"projection '{proj.name}' targets the synapses of projection '{proj.target}' "
                               "(synapses onto synapses), which NEST has no counterpart of: use a Brian2 backend")
        model = spec.synapse_model(proj)
        if isinstance(proj.delay, Mapping) or not all(isinstance(c, (str, type(None)))
                                                      for c in (model.on_pre, model.on_post)):
            raise BackendError(f"projection '{proj.name}' has several pathways ({sorted(model.pathways())}), which "
                               "the NEST backend does not translate: use a Brian2 backend, or one projection per "
                               "pathway (same source and target, each with its statements and delay)")
    for inp in spec.inputs:
        if isinstance(inp, m.CurrentInput) and "[" in inp.target:
            raise BackendError(f"current input '{inp.name}' sets a subgroup ('{inp.target}'), which the NEST "
                               "backend does not: use a Brian2 backend, or give the whole population's columns")


def _uses_indices(value) -> bool:
    from brian2.utils.stringtools import get_identifiers
    return isinstance(value, str) and bool(get_identifiers(value) & {"i", "j", "N_pre", "N_post"})


def _explicit(spec: m.NetworkSpec, proj: m.Projection) -> m.Projection:
    """``proj`` as explicit synapse lists between whole populations."""
    from biosnn.spec.expand import expand_projection
    f = f"projections.{proj.name}"
    _, a, _ = spec.node_bounds(proj.source, f"{f}.source")
    _, c, _ = spec.node_bounds(proj.target, f"{f}.target")
    values = [proj.weights, proj.delay, *proj.initial.values()]
    if (a or c) and any(_uses_indices(v) for v in values):
        raise BackendError(f"projection '{proj.name}' connects subgroups and computes values from i or j; on "
                           "NEST it connects the whole populations, where i and j would mean other neurons: "
                           "use a Brian2 backend, or give the values without i and j")
    conn = expand_projection(spec, proj)
    src, tgt = m.NodeRef.parse(proj.source, f"{f}.source"), m.NodeRef.parse(proj.target, f"{f}.target")
    explicit = m.Explicit(ArrayValue(np.asarray(conn.i, dtype=np.int64) + a, "1"),
                          ArrayValue(np.asarray(conn.j, dtype=np.int64) + c, "1"))
    return replace(proj, source=src.name, target=tgt.name, connect=explicit)


def _monitors(spec: m.NetworkSpec) -> list:
    """The monitors NEST records: whole populations (subgroups widened), rate monitors as spike monitors."""
    out = []
    for mon in spec.monitors:
        ref = m.NodeRef.parse(mon.population, "population")
        if isinstance(mon, m.StateMonitor):
            if ref.whole:
                new = mon
            else:
                _, a, b = spec.node_bounds(mon.population)
                idx = tuple(range(a, b)) if mon.indices is None else tuple(a + i for i in mon.indices)
                new = replace(mon, population=ref.name, indices=idx)
        else:
            new = m.SpikeMonitor(ref.name)
        if new not in out:
            out.append(new)
    return out


def population_rate(spikes: SpikeTrains, duration_s: float, dt: float) -> StateTrace:
    """Brian2's ``PopulationRateMonitor`` from spike trains: spikes per neuron in each step / ``dt`` (Hz)."""
    n_steps = int(round(duration_s / dt))
    steps = np.clip(np.round(spikes.times / dt).astype(np.int64), 0, n_steps - 1)
    counts = np.bincount(steps, minlength=n_steps)[:n_steps].astype(np.float64)
    rate = counts / (max(spikes.size, 1) * dt)
    return StateTrace(times=np.arange(n_steps) * dt, values=rate.reshape(-1, 1),
                      indices=np.zeros(1, dtype=np.int64), unit="hertz")


def _cut(st: SpikeTrains, a: int, b: int) -> SpikeTrains:
    keep = (st.indices >= a) & (st.indices < b)
    return SpikeTrains(times=st.times[keep], indices=st.indices[keep] - a, size=b - a)


def lower_for_nest(spec: m.NetworkSpec):
    """The spec NEST runs and the function that turns its recording into the original spec's.

    Returns
    -------
    lowered : NetworkSpec
        ``spec`` itself when it uses no construct to lower.
    finish : callable
        ``Recording -> Recording``.

    Raises
    ------
    BackendError
        For constructs the NEST backend does not run (naming the alternative).
    """
    _refuse(spec)
    projections = tuple(_explicit(spec, p) if isinstance(p.connect, m.Condition)
                        or "[" in p.source + p.target else p for p in spec.projections)
    subgroups = any("[" in mon.population for mon in spec.monitors)
    rates = any(isinstance(mon, m.RateMonitor) for mon in spec.monitors)
    if projections == spec.projections and not subgroups and not rates:
        return spec, lambda rec: rec
    lowered = replace(spec, projections=projections, monitors=tuple(_monitors(spec)))
    wanted = list(spec.monitors)

    def finish(rec: Recording) -> Recording:
        spikes, states, rates_out = {}, {}, {}
        for mon in wanted:
            ref = m.NodeRef.parse(mon.population, "population")
            a, b = (0, None) if ref.whole else spec.node_bounds(mon.population)[1:]
            if isinstance(mon, m.StateMonitor):
                per = states.setdefault(mon.population, {})
                for var in mon.variables:
                    trace = rec.states[ref.name][var]
                    if ref.whole:
                        per[var] = trace
                        continue
                    cols = np.flatnonzero((trace.indices >= a) & (trace.indices < b))
                    if mon.indices is not None:
                        cols = np.array([np.flatnonzero(trace.indices == a + i)[0] for i in mon.indices])
                    per[var] = StateTrace(times=trace.times, values=trace.values[:, cols],
                                          indices=trace.indices[cols] - a, unit=trace.unit)
                continue
            st = rec.spikes[ref.name] if ref.whole else _cut(rec.spikes[ref.name], a, b)
            if isinstance(mon, m.RateMonitor):
                rates_out[mon.population] = population_rate(st, rec.duration, rec.dt)
            else:
                spikes[mon.population] = st
        return replace(rec, spikes=spikes, states=states, rates=rates_out)

    return lowered, finish


def protocol_schedule(spec: m.NetworkSpec, plans: dict, nodes: dict, dt_s: float, n_steps: int, rng) -> dict:
    """Step -> ``[(nodes, NEST name, values)]``: the protocol's assignments, set before each segment's first step.

    The NEST backend sets them between two ``nest.Run`` calls (as Brian2 assigns
    them between two ``Network.run`` calls); expressions are evaluated per
    neuron with the population's constants (``rand()`` from ``rng``).
    """
    from biosnn.backends.nest_models import evaluate, namespace_layers
    changes: dict = {}
    step = 0
    for k, seg in enumerate(spec.protocol):
        for key, value in seg.set.items():
            part, _, var = key.partition(".")
            pop, plan = spec.population(part), plans[part]
            if var not in plan.names:
                raise BackendError(f"protocol[{k}] sets '{key}', but the NEST model {plan.nest_model} has no "
                                   f"counterpart of '{var}' (it maps {sorted(plan.names)}): use a Brian2 backend")
            names = dict(namespace_layers(spec, pop, spec.neuron_model(pop), "neuron"), i=np.arange(pop.size))
            si = evaluate(value, pop.size, names, rng, f"protocol[{k}].set.{key}")
            values = np.broadcast_to(np.asarray(si, dtype=np.float64) / plan.scales[var], (pop.size,))
            changes.setdefault(step, []).append((nodes[part], plan.names[var], list(map(float, values))))
        step += int(round(float(parse_quantity(seg.duration)) / dt_s))
    if spec.protocol and step != n_steps:
        raise BackendError(f"'{spec.name}' has a protocol of {step} steps; it cannot run for {n_steps} steps "
                           "(change the segments to change the duration)")
    return changes
