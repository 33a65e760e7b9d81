"""Build Brian2 objects from a :class:`~biosnn.spec.NetworkSpec`, on whatever device is active.

The backends choose and activate the device; this module only creates the
objects (groups, synapses, monitors, timed arrays) inside one explicit
``brian2.Network``, each with an explicit namespace (constants of the spec,
the model and the population, plus the spec's timed arrays), so nothing is
looked up in the caller's frame.  It also turns the monitors back into a
:class:`~biosnn.recording.Recording` after a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from biosnn.backends.base import apply_overrides
from biosnn.errors import BackendError, SpecError
from biosnn.recording import FinalState, Recording, SpikeTrains, SpikeValues, StateTrace
from biosnn.spec import model as m
from biosnn.spec.check import evaluate_namespace
from biosnn.backends.brian2_static import count_gate, on_cuda, static_statements
from biosnn.spec.expand import expand_projection
from biosnn.spec.values import ArrayValue, parse_quantity, unit_of

__all__ = ["Brian2Objects", "build_objects", "collect_recording", "brian2_errors", "brian2_cause", "run_network"]


@dataclass
class Brian2Objects:
    """The Brian2 objects of one network, keyed by spec names."""

    network: object
    clock: object
    groups: dict = field(default_factory=dict)        # population/input name -> group
    synapses: dict = field(default_factory=dict)      # projection name -> Synapses
    spike_monitors: dict = field(default_factory=dict)  # population name (or subgroup) -> SpikeMonitor
    state_monitors: list = field(default_factory=list)  # (StateMonitor spec, brian2 StateMonitor)
    rate_monitors: dict = field(default_factory=dict)   # population name (or subgroup) -> PopulationRateMonitor
    timed_arrays: dict = field(default_factory=dict)  # name -> TimedArray
    n_synapses: dict = field(default_factory=dict)    # projection name -> count


class brian2_errors:
    """Context manager turning Brian2's errors about a spec into :class:`BackendError`."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None or isinstance(exc, (SpecError, BackendError, KeyboardInterrupt)):
            return False
        from brian2.core.base import BrianObjectException
        from brian2.units.fundamentalunits import DimensionMismatchError
        if isinstance(exc, (BrianObjectException, DimensionMismatchError, ValueError, TypeError,
                            KeyError, NotImplementedError, RuntimeError)):
            raise BackendError(f"Brian2 could not {self.what}: {brian2_cause(exc)}") from exc
        return False


def brian2_cause(exc: BaseException) -> str:
    """The message of a Brian2 error with its original cause (Brian2's wrapper only names the object)."""
    from brian2.core.base import BrianObjectException
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, BrianObjectException):
            parts.append(f"in '{exc._brian_objname}': {' '.join(str(exc._brian_message).split())}")
        else:
            text = " ".join(str(exc).split())
            if text and not any(text in p for p in parts):
                parts.append(f"{type(exc).__name__}: {text}" if not parts else text)
        exc = exc.__cause__ or exc.__context__
    return "; caused by ".join(parts) or "unknown error"


def _set(obj, var: str, value, what: str):
    """Set a Brian2 variable from a spec value (expression string or ArrayValue)."""
    with brian2_errors(f"set {what}"):
        if isinstance(value, ArrayValue):
            setattr(obj, var, value.quantity())
        else:
            setattr(obj, var, value)


def _namespace(spec, layers, functions) -> dict:
    ns = evaluate_namespace([("namespace", spec.namespace)] + layers)
    ns.update(functions)
    return ns


def build_objects(spec: m.NetworkSpec, duration_s: float | None = None, static: bool = False) -> Brian2Objects:
    """Create the Brian2 objects of ``spec`` on the active device.

    Parameters
    ----------
    spec : NetworkSpec
        The network.
    duration_s : float, optional
        Simulated time (seconds); only used to size nothing -- kept for backends.
    static : bool
        Build static projections (see :mod:`biosnn.backends.brian2_static`)
        with biosnn's own C++ standalone template instead of ``Synapses``.

    Returns
    -------
    Brian2Objects
    """
    import brian2 as b2

    dt = parse_quantity(spec.dt) * 1.0
    # Explicit names everywhere (Brian2 checks clashes per network and device): names with '*'
    # would depend on which other Brian2 objects are alive and change the generated code.
    clock = b2.Clock(dt=dt, name="biosnn_clock")
    clocks = {float(dt): clock}

    def clock_for(text):
        value = parse_quantity(text) * 1.0
        key = float(value)
        if key not in clocks:
            clocks[key] = b2.Clock(dt=value, name=f"biosnn_clock_{len(clocks)}")
        return clocks[key]
    if spec.seed is not None:
        b2.seed(spec.seed)
    objs = Brian2Objects(network=None, clock=clock)
    subgroups = {}

    def node(ref: str):
        """The group a reference names; a subgroup ``exc[0:800]`` as a Brian2 ``Subgroup`` with a fixed name."""
        r = m.NodeRef.parse(ref, None)
        group = objs.groups[r.name]
        if r.whole:
            return group
        start, stop = r.bounds(len(group), None)
        if (r.name, start, stop) not in subgroups:
            subgroups[r.name, start, stop] = b2.Subgroup(group, start, stop, name=f"{r.name}_{start}_{stop}")
        return subgroups[r.name, start, stop]
    functions = {}
    for ta in spec.timed_arrays:
        functions[ta.name] = b2.TimedArray(ta.values.quantity(), dt=parse_quantity(ta.dt) * 1.0,
                                           name=ta.name)
    for inp in spec.inputs:
        if isinstance(inp, m.CurrentInput):
            functions[inp.name] = b2.TimedArray(inp.values.quantity(), dt=parse_quantity(inp.dt) * 1.0,
                                                name=inp.name)
    objs.timed_arrays = dict(functions)
    net_objects = []

    for pop in spec.populations:
        model = spec.neuron_model(pop)
        mname = pop.model if isinstance(pop.model, str) else pop.name
        ns = _namespace(spec, [(f"neuron_models.{mname}.parameters", model.parameters),
                               (f"populations.{pop.name}.parameters", pop.parameters)], functions)
        kwargs = _given(model, "threshold", "reset", "refractory", "method")
        with brian2_errors(f"create population '{pop.name}'"):
            group = b2.NeuronGroup(pop.size, model.equations or "", namespace=ns, clock=clock,
                                   name=pop.name, **kwargs)
        for var, value in pop.initial.items():
            _set(group, var, value, f"initial value of {pop.name}.{var}")
        if pop.order is not None:
            _schedule_group(group, pop.order)
        net_objects.extend(_operations(group, pop.operations, f"population '{pop.name}'", clock_for))
        objs.groups[pop.name] = group
        net_objects.append(group)

    global_ns = _namespace(spec, [], functions)
    for inp in spec.inputs:
        if isinstance(inp, m.PoissonInput):
            rates = inp.rates.quantity() if isinstance(inp.rates, ArrayValue) else inp.rates
            with brian2_errors(f"create Poisson input '{inp.name}'"):
                group = b2.PoissonGroup(inp.size, rates=rates, namespace=dict(global_ns), clock=clock,
                                        name=inp.name)
        elif isinstance(inp, m.SpikeTimesInput):
            kw = {}
            if inp.period is not None:
                kw["period"] = parse_quantity(inp.period) * 1.0
            with brian2_errors(f"create spike-time input '{inp.name}'"):
                group = b2.SpikeGeneratorGroup(inp.size, np.asarray(inp.indices.data, dtype=np.int64),
                                               inp.times.quantity(), clock=clock, name=inp.name,
                                               **kw)
        else:  # CurrentInput (onto a population or a subgroup, whose i counts from its start)
            target = node(inp.target)
            code = f"{inp.variable} = {inp.name}(t, i)" if inp.values.data.ndim == 2 else \
                f"{inp.variable} = {inp.name}(t)"
            with brian2_errors(f"create current input '{inp.name}'"):
                op = target.run_regularly(code, clock=clock_for(inp.dt), when="start",
                                          name=f"{_tag(inp.target)}_{inp.name}_update")
            net_objects.append(op)
            continue
        objs.groups[inp.name] = group
        net_objects.append(group)

    # Synapses objects needed as such: recorded by a state monitor, or the target of synapses onto synapses
    monitored = {mon.population for mon in spec.monitors if isinstance(mon, m.StateMonitor)} | \
        {p.target for p in spec.projections if p.target not in objs.groups}
    for proj in spec.projections:
        smodel = spec.synapse_model(proj)
        mname = proj.model if isinstance(proj.model, str) else proj.name
        ns = _namespace(spec, [(f"synapse_models.{mname}.parameters", smodel.parameters),
                               (f"projections.{proj.name}.parameters", proj.parameters)], functions)
        kwargs = _given(smodel, "on_pre", "on_post", "method")
        onto = proj.target in objs.synapses and proj.target not in objs.groups  # synapses onto synapses
        plain = not isinstance(proj.connect, m.Condition) and "[" not in proj.source + proj.target \
            and proj.name not in monitored and not onto
        statements = static_statements(spec, proj) if static and plain else None
        gate = count_gate(spec, proj) if static and plain and statements is None else None
        gated = gate is not None or (statements is not None and any(st.select for st in statements))
        if gated and (on_cuda() or isinstance(proj.weights, str) or isinstance(proj.connect, m.Conv2D)):
            statements = gate = None  # max-pool gates have no CUDA template: Synapses there
        elif gated:  # max-pool gates: biosnn_static_gate.cpp, the counter's reset
            obj = _static_projection(objs, spec, proj, expand_projection(spec, proj), statements or (), clock,
                                     gate=gate)
            net_objects.append(obj)
            net_objects.extend(_operations(obj, proj.operations, f"projection '{proj.name}'", clock_for))
            continue
        if statements is not None and not isinstance(proj.weights, str):
            kernel = proj.weights is None and isinstance(proj.connect, m.Conv2D)
            dense = isinstance(proj.connect, m.AllToAll) and isinstance(proj.weights, ArrayValue) and (
                proj.source != proj.target or proj.connect.allow_autapses)
            # a shared convolution kernel needs only the geometry, all-to-all only the sizes: no synapse lists
            conn = None if kernel or dense else expand_projection(spec, proj)
            net_objects.append(_static_projection(objs, spec, proj, conn, statements, clock, dense))
            continue
        condition = proj.connect if isinstance(proj.connect, m.Condition) else \
            m.Condition("True") if onto else None  # onto synapses: all_to_all, drawn by Brian2
        conn = None if condition else expand_projection(spec, proj)
        with brian2_errors(f"create projection '{proj.name}'"):
            target = objs.synapses[proj.target] if onto else node(proj.target)
            syn = b2.Synapses(node(proj.source), target, model=smodel.equations,
                              namespace=ns, clock=clock, name=proj.name, **kwargs)
            if condition is not None and condition.j is not None:  # Brian2's generator syntax
                syn.connect(j=condition.j, namespace=ns)
            elif condition is not None:  # Brian2 draws them: the synapses of a Brian2 script with the same seed
                syn.connect(condition=condition.condition, p=condition.p if condition.p is not None else 1.0,
                            namespace=ns)
            elif len(conn.i):
                syn.connect(i=np.asarray(conn.i, dtype=np.int32), j=np.asarray(conn.j, dtype=np.int32))
            else:  # Brian2's connect(i=[], j=[]) fails; a projection may well draw no synapse (p = 0)
                syn.connect(False)
        objs.n_synapses[proj.name] = None if condition else len(conn.i)
        if conn is not None and conn.weights is not None and proj.weights is None:
            if isinstance(proj.connect, m.Conv2D):
                unit = unit_of(proj.connect.kernel.unit)
                value = ArrayValue(np.asarray(conn.weights) * float(np.asarray(unit)), _unit_name(unit))
            else:  # Pool2D: weights already in SI units
                unit = parse_quantity(proj.connect.weight) if proj.connect.weight else 1.0
                value = ArrayValue(np.asarray(conn.weights), _unit_name(unit))
            _set(syn, proj.weight_var, value, f"weights of {proj.name}")
        elif proj.weights is not None:
            _set(syn, proj.weight_var, proj.weights, f"weights of {proj.name}")
        if isinstance(proj.delay, Mapping):  # per pathway (Brian2: S.<pathway>.delay)
            for pathway, value in proj.delay.items():
                _set(getattr(syn, pathway), "delay", value, f"delay of {proj.name}.{pathway}")
        elif proj.delay is not None:
            _set(syn, "delay", proj.delay, f"delay of {proj.name}")
        for var, value in proj.initial.items():
            _set(syn, var, value, f"initial value of {proj.name}.{var}")
        if proj.order is not None:
            for pathway in syn._pathways:
                pathway.when, pathway.order = "groups", 10 * proj.order + 5
        net_objects.extend(_operations(syn, proj.operations, f"projection '{proj.name}'", clock_for))
        objs.synapses[proj.name] = syn
        net_objects.append(syn)

    for mon in spec.monitors:
        source = objs.synapses[mon.population] if mon.population in objs.synapses and \
            mon.population not in objs.groups else node(mon.population)
        tag = _tag(mon.population)
        with brian2_errors(f"create a monitor of '{mon.population}'"):
            if isinstance(mon, m.SpikeMonitor):
                if mon.population in objs.spike_monitors:
                    continue
                sm = b2.SpikeMonitor(source, variables=list(mon.variables) or None, name=f"spikes_{tag}")
                objs.spike_monitors[mon.population] = sm
                net_objects.append(sm)
            elif isinstance(mon, m.RateMonitor):
                if mon.population in objs.rate_monitors:
                    continue
                rm = b2.PopulationRateMonitor(source, name=f"rate_{tag}")
                objs.rate_monitors[mon.population] = rm
                net_objects.append(rm)
            else:
                record = True if mon.indices is None else list(mon.indices)
                st = b2.StateMonitor(source, list(mon.variables), record=record, when=mon.when,
                                     order=mon.order, clock=clock_for(mon.dt) if mon.dt else clock,
                                     name=f"states_{tag}_{len(objs.state_monitors)}")
                objs.state_monitors.append((mon, st))
                net_objects.append(st)
    objs.network = b2.Network(*net_objects, name="biosnn_network")
    return objs


def _static_projection(objs: Brian2Objects, spec: m.NetworkSpec, proj: m.Projection, conn, statements, clock,
                       dense: bool = False, gate=None):
    """A static projection on biosnn's template (weights per synapse, or the shared conv kernel: ``conn`` None;
    all-to-all with per-synapse weights: ``dense``, ``conn`` None; max-pool gates: selected ``statements``,
    or a :class:`~biosnn.backends.brian2_static.CountGate` ``gate``)."""
    from biosnn.backends.brian2_static import ConvGeometry, make_static_projection
    from biosnn.spec.expand import convolution_of
    kernel = conn is None and not dense
    when, order = ("groups", 10 * proj.order + 5) if proj.order is not None else ("synapses", 0)
    conv = None
    if kernel:
        replicas, one = convolution_of(spec, proj)
        lead = (replicas,) if replicas > 1 else ()
        conv = ConvGeometry.of(proj.connect, lead + one.pre_shape, lead + one.post_shape)
        n = replicas * len(one)
        if conv.n_synapses() != n:
            raise BackendError(f"projection '{proj.name}': the template's convolution geometry gives "
                               f"{conv.n_synapses()} synapses, the spec's {n}; build with "
                               "static_projections=False and report this")
    with brian2_errors(f"create projection '{proj.name}'"):
        obj = make_static_projection(objs.groups[proj.source], objs.groups[proj.target], conn, statements,
                                     name=proj.name, clock=clock, when=when, order=order,
                                     kernel_size=proj.connect.kernel.data.size if kernel else None, conv=conv,
                                     dense=dense, gate=gate, select=next(
                                         (proj.initial[st.select[0]].data for st in statements if st.select), None))
    if "w" in obj.variables:
        # the spec's own arrays (no copy): a VGG's kernels are tens of MB
        if kernel:
            value = proj.connect.kernel
        elif proj.weights is not None:
            value = proj.weights
        else:  # Pool2D: per-synapse weights in SI units
            unit = parse_quantity(proj.connect.weight) if proj.connect.weight else 1.0
            value = ArrayValue(np.asarray(conn.weights), _unit_name(unit))
        with brian2_errors(f"set weights of {proj.name}"):
            obj.set_weights(value.data, value.unit)
    objs.n_synapses[proj.name] = conv.n_synapses() if kernel else len(obj) if dense else len(conn.i)
    objs.synapses[proj.name] = obj
    return obj


def _tag(ref: str) -> str:
    """A Brian2 object name part for a reference: ``exc[0:10]`` -> ``exc_0_10``."""
    return ref.replace("[", "_").replace(":", "_").replace("]", "")


def _given(model, *names) -> dict:
    """The model's fields among ``names`` that are set, as keyword arguments for Brian2 (pathways as dicts)."""
    return {n: dict(v) if isinstance(v, Mapping) else v for n in names if (v := getattr(model, n))}


def _schedule_group(group, order: int):
    """Put a group's state update, threshold and reset in the 'groups' slot at 10*order + 1, 2, 3."""
    group.state_updater.when, group.state_updater.order = "groups", 10 * order + 1
    if "spike" in getattr(group, "thresholder", {}):
        group.thresholder["spike"].when, group.thresholder["spike"].order = "groups", 10 * order + 2
    if "spike" in getattr(group, "resetter", {}):
        group.resetter["spike"].when, group.resetter["spike"].order = "groups", 10 * order + 3


def _operations(owner, operations, what: str, clock_for) -> list:
    out = []
    for k, op in enumerate(operations):
        kw = {"when": op.when, "order": op.order, "name": f"{owner.name}_op{k}"}
        if op.dt is not None:
            kw["clock"] = clock_for(op.dt)
        with brian2_errors(f"add an operation to {what}"):
            out.append(owner.run_regularly(op.code, **kw))
    return out


def _unit_name(unit) -> str:
    from brian2 import Quantity, get_unit
    if isinstance(unit, Quantity) and not unit.is_dimensionless:
        return repr(get_unit(unit.dim))
    return "1"


def run_network(objs: Brian2Objects, spec: m.NetworkSpec, duration_s: float, **kwargs) -> None:
    """Run the network for ``duration_s`` seconds: in one go, or segment by segment when the spec has a protocol.

    Before each segment its ``set`` assignments are made (Brian2's ``G.var = value``
    between two ``Network.run`` calls; on a standalone device they become
    code between the runs of one binary).  Keyword arguments go to every
    ``Network.run``.
    """
    from brian2 import second
    if not spec.protocol:
        objs.network.run(duration_s * second, namespace={}, **kwargs)
        return
    if abs(duration_s - spec.duration_seconds()) > 1e-12:
        raise BackendError(f"'{spec.name}' has a protocol of {spec.duration_seconds()} s; it cannot run for "
                           f"{duration_s} s (change the segments to change the duration)")
    for seg in spec.protocol:
        for key, value in seg.set.items():
            part, _, var = key.partition(".")
            _set(objs.groups.get(part, objs.synapses.get(part)), var, value, f"protocol value {key}")
        objs.network.run(parse_quantity(seg.duration) * 1.0, namespace={}, **kwargs)


def positive_duration(duration_s: float) -> float:
    """``duration_s`` as a float, or a :class:`BackendError` if it is not positive."""
    duration_s = float(duration_s)
    if duration_s <= 0:
        raise BackendError(f"duration must be positive, got {duration_s} s")
    return duration_s


def run_request(spec: m.NetworkSpec, duration, overrides, final_state):
    """What a run that builds its simulator objects from the spec needs (runtime, cython, NEST).

    Returns
    -------
    spec : NetworkSpec
        ``spec`` with ``overrides`` applied.
    final_keys : tuple of str
        The validated ``final_state`` keys.
    duration_s : float
        ``duration`` (s), or the spec's.
    """
    spec = apply_overrides(spec, overrides)
    final_keys = check_final_state(spec, final_state)
    return spec, final_keys, positive_duration(spec.duration_seconds() if duration is None else duration)


def check_final_state(spec: m.NetworkSpec, final_state) -> tuple[str, ...]:
    """Validate the ``final_state`` keys of a run (``"<population or projection>.<variable>"``)."""
    if final_state is None:
        return ()
    keys = (final_state,) if isinstance(final_state, str) else tuple(final_state)
    parts = set(spec.population_names) | {p.name for p in spec.projections}
    for key in keys:
        part, _, var = str(key).partition(".")
        if part not in parts or not var:
            raise BackendError(f"final_state entry '{key}' must be '<population or projection>.<variable>' "
                               f"with one of {sorted(parts)}")
    return keys


def read_final_state(objs: Brian2Objects, keys) -> dict:
    """End-of-run values of the variables named by ``keys`` (see :func:`check_final_state`)."""
    from brian2 import get_unit
    out = {}
    for key in keys:
        part, _, var = key.partition(".")
        obj = objs.groups.get(part, objs.synapses.get(part))
        if var not in obj.variables:
            raise BackendError(f"final_state entry '{key}': '{part}' has no variable '{var}' "
                               f"(it has {sorted(v for v in obj.variables if not v.startswith('_'))})")
        dim = obj.variables[var].dim
        values = np.asarray(getattr(obj, var + "_")[:], dtype=np.float64).reshape(-1)
        out[key] = FinalState(values=values, unit="1" if dim.is_dimensionless else repr(get_unit(dim)))
    return out


def collect_recording(objs: Brian2Objects, spec: m.NetworkSpec, duration_s: float,
                      meta: dict, final_state=()) -> Recording:
    """Read the monitors (and the ``final_state`` variables) into a :class:`Recording` (numpy, SI)."""
    from brian2 import get_unit
    spikes, spike_values = {}, {}
    for name, sm in objs.spike_monitors.items():
        t = np.asarray(sm.t_[:], dtype=np.float64)
        i = np.asarray(sm.i[:], dtype=np.int64)
        order = np.lexsort((i, t))  # SpikeTrains' order: by time, then index
        spikes[name] = SpikeTrains(times=t[order], indices=i[order], size=len(sm.source))
        values = {}
        for var in sm.record_variables:
            if var in ("t", "i"):
                continue
            dim = sm.variables[var].dim
            values[var] = SpikeValues(values=np.asarray(getattr(sm, var + "_")[:], dtype=np.float64)[order],
                                      unit="1" if dim.is_dimensionless else repr(get_unit(dim)))
        if values:
            spike_values[name] = values
    rates = {}
    for name, rm in objs.rate_monitors.items():
        rate = np.asarray(rm.rate_[:], dtype=np.float64)
        rates[name] = StateTrace(times=np.asarray(rm.t_[:], dtype=np.float64), values=rate.reshape(-1, 1),
                                 indices=np.zeros(1, dtype=np.int64), unit="hertz")
    states: dict = {}
    for mon, st in objs.state_monitors:
        times = np.asarray(st.t_[:], dtype=np.float64)
        idx = np.asarray(st.record, dtype=np.int64) if not isinstance(st.record, bool) else \
            np.arange(len(st.source), dtype=np.int64)
        per = states.setdefault(mon.population, {})
        for var in mon.variables:
            values = np.asarray(getattr(st, var + "_")[:], dtype=np.float64).T
            dim = st.variables[var].dim
            unit = "1" if dim.is_dimensionless else repr(get_unit(dim))
            per[var] = StateTrace(times=times, values=values.reshape(len(times), len(idx)),
                                  indices=idx, unit=unit)
    return Recording(spikes=spikes, states=states, spike_values=spike_values, rates=rates, duration=duration_s,
                     dt=spec.dt_seconds(), meta={k: str(v) for k, v in meta.items()},
                     final=read_final_state(objs, final_state))
