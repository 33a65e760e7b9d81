"""The NEST backend: a :class:`~biosnn.spec.NetworkSpec` simulated by NEST.

``get_backend("nest", local_num_threads=2).build(spec).run()`` returns the
same :class:`~biosnn.recording.Recording` as the Brian2 backends.

What it builds
--------------
* populations: the library ``lif`` maps onto ``iaf_psc_delta``; any other
  equation model is translated to NESTML, compiled once and cached by a hash
  of its text (:mod:`biosnn.backends.nestml_build`);
* inputs: spike times -> ``spike_generator``, Poisson -> ``poisson_generator``
  + ``parrot_neuron`` (so every target sees the same train); current inputs
  set their variable (a model parameter, ``I_e`` for ``iaf_psc_delta``) between
  ``nest.Run`` segments, exactly when Brian2's ``run_regularly`` would;
* projections: every connectivity kind is expanded to explicit lists by
  :func:`biosnn.spec.expand.expand_projection` (the Brian2 backends use the
  same lists), connected with ``static_synapse`` or, for the library's pair
  STDP with all-to-all pairing, ``stdp_synapse`` (see
  :func:`biosnn.backends.nest_models.plan_synapse`);
* monitors: ``spike_recorder`` and ``multimeter``.

Timing conventions (so that spike trains equal the Brian2 runtime's)
-------------------------------------------------------------------
NEST stamps a spike at the *end* of the step in which the threshold is
crossed, Brian2 at its start; recorded times are therefore shifted back by one
``dt``.  NEST's smallest delay is one step, and a spike arriving in a step is
applied *before* that step's integration in translated models (after it in
``iaf_psc_delta``, compensated by a factor ``exp(-dt/tau_m)`` on the weight), so
NEST delays are the spec's delay plus ``dt``.  Spike-generator times move one
``dt`` later to match.  State traces differ from Brian2's only in the step in
which a synaptic input arrives (Brian2 records the jump one step earlier).

Processes
---------
The kernel runs with ``local_num_threads`` threads.  Nothing here assumes a
single MPI process except reading recorders, connection weights and final
values, which read the local rank's part (the PyPI wheel has no MPI).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from biosnn.backends.base import apply_overrides
from biosnn.backends.brian2_network import check_final_state
from biosnn.backends.nest_models import NeuronPlan, evaluate, plan_neuron, plan_synapse
from biosnn.backends.progress import ProgressBar
from biosnn.errors import BackendError
from biosnn.recording import FinalState, Recording, SpikeTrains, StateTrace
from biosnn.spec import model as m
from biosnn.spec.expand import expand_projection
from biosnn.spec.values import parse_quantity, unit_of

__all__ = ["NestBackend", "NestSimulation", "nest_available"]

_EARLY_SLOTS = {"start", "before_start", "after_start", "before_groups"}


def nest_available() -> bool:
    """Whether the ``nest`` Python package (PyPI ``nest-simulator``) is installed."""
    import importlib.util
    return importlib.util.find_spec("nest") is not None


def _import_nest():
    if not nest_available():
        raise BackendError("the NEST backend needs NEST: pip install 'biosnn[nest]' "
                           "(the PyPI packages nest-simulator, nestml and boost-headers)")
    import os
    os.environ.setdefault("PYNEST_QUIET", "1")
    import nest
    try:
        nest.verbosity = nest.VerbosityLevel.ERROR
    except AttributeError:  # older NEST
        nest.set_verbosity("M_ERROR")
    return nest


def _unit_name(dim) -> str:
    from brian2 import get_unit
    return "1" if dim.is_dimensionless else repr(get_unit(dim))


class NestBackend:
    """NEST 3 (PyPI ``nest-simulator``) as a biosnn backend.

    Parameters
    ----------
    local_num_threads : int
        Threads of the NEST kernel.
    cache_dir : str or Path, optional
        Where compiled NESTML modules are cached (default
        ``$BIOSNN_CACHE_DIR/nestml`` or ``~/.cache/biosnn/nestml``).
    """

    name = "nest"

    def __init__(self, local_num_threads: int = 1, cache_dir=None):
        if isinstance(local_num_threads, bool) or not isinstance(local_num_threads, (int, np.integer)) \
                or local_num_threads < 1:
            raise BackendError(f"local_num_threads must be a positive integer, got {local_num_threads!r}")
        self.local_num_threads = int(local_num_threads)
        from pathlib import Path
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None

    def build(self, spec: m.NetworkSpec) -> "NestSimulation":
        """Plan the network and compile the NESTML models it needs (cached)."""
        _import_nest()
        return NestSimulation(self, spec)


@dataclass
class _Built:
    nodes: dict = field(default_factory=dict)        # population/input name -> NodeCollection
    spike_recorders: dict = field(default_factory=dict)
    multimeters: list = field(default_factory=list)  # (StateMonitor, multimeter, indices)
    synapses: dict = field(default_factory=dict)     # projection name -> (plan, n)
    tau_minus: dict = field(default_factory=dict)    # population -> (STDP tau_minus in ms, projection)
    parrots: dict = field(default_factory=dict)      # STDP projection -> relay parrot neurons


class NestSimulation:
    """A spec planned for NEST; each :meth:`run` builds the network in a fresh kernel."""

    def __init__(self, backend: NestBackend, spec: m.NetworkSpec):
        self.backend = backend
        self.spec = spec
        self.dt_s = spec.dt_seconds()
        t0 = time.perf_counter()
        self.plans = self._plan(spec)
        self.modules = self._compile()
        self.build_time_s = time.perf_counter() - t0

    # -- planning ---------------------------------------------------------
    def _plan(self, spec) -> dict[str, NeuronPlan]:
        for part in list(spec.populations) + list(spec.projections):
            if part.operations:
                raise BackendError(f"'{part.name}' has operations (run_regularly), which the NEST backend "
                                   "cannot run; use a Brian2 backend for this spec")
        if spec.timed_arrays:
            raise BackendError(f"the NEST backend does not evaluate timed arrays in equations "
                               f"({[t.name for t in spec.timed_arrays]}); give inputs as current inputs, "
                               "spike times or constant Poisson rates")
        targets = {p.name: set() for p in spec.populations}
        self.synapses = {}
        for proj in spec.projections:
            if proj.target not in targets:
                raise BackendError(f"projection '{proj.name}' targets '{proj.target}', not a population")
            syn = plan_synapse(spec, proj)
            targets[proj.target].add(syn.target_var)
            self.synapses[proj.name] = syn
        currents = {p.name: set() for p in spec.populations}
        for inp in spec.inputs:
            if isinstance(inp, m.CurrentInput):
                currents[inp.target].add(inp.variable)
        return {p.name: plan_neuron(spec, p, targets[p.name], currents[p.name], self.dt_s)
                for p in spec.populations}

    def _compile(self):
        from biosnn.backends.nestml_build import compile_module
        texts = {}
        for plan in self.plans.values():
            if plan.nestml is not None:
                texts[plan.nestml.name] = plan.nestml.text
        modules, self.compiled_now = [], False
        for name, text in sorted(texts.items()):  # one module per model: cached independently
            module, directory, now = compile_module({name: text}, cache_root=self.backend.cache_dir)
            modules.append((module, directory))
            self.compiled_now |= now
        return modules

    # -- running ----------------------------------------------------------
    def run(self, duration: float | None = None, overrides=None, progress: bool = True, final_state=None):
        """Run from the spec's initial state (see :meth:`biosnn.backends.base.Simulation.run`)."""
        spec = apply_overrides(self.spec, overrides)
        final_keys = check_final_state(spec, final_state)
        duration_s = spec.duration_seconds() if duration is None else float(duration)
        if duration_s <= 0:
            raise BackendError(f"duration must be positive, got {duration_s} s")
        nest = _import_nest()
        t0 = time.perf_counter()
        rng = np.random.default_rng(spec.seed)
        built = self._build_network(nest, spec, duration_s, rng)
        n_steps = int(round(duration_s / self.dt_s))
        changes = self._current_schedule(spec, built, n_steps)
        chunks = max(1, min(20, n_steps // 100)) if progress else 1
        bounds = sorted(set(np.linspace(0, n_steps, chunks + 1).round().astype(int).tolist()) | set(changes))
        t1 = time.perf_counter()
        bar = ProgressBar(progress, f"{spec.name} (nest)", duration_s)
        try:
            with nest.RunManager():
                t_prep = time.perf_counter()
                for a, b in zip(bounds[:-1], bounds[1:]):
                    for nodes, name, values in changes.get(a, ()):
                        nodes.set({name: values})
                    nest.Run((b - a) * self.dt_ms)
                    bar.update(b / n_steps)
            final = self._final_state(nest, spec, built, final_keys)
            if built.multimeters:  # recorders deliver the last step's samples one step later
                nest.Simulate(self.dt_ms)
        finally:
            bar.close()
        t2 = time.perf_counter()
        return self._recording(spec, built, duration_s, final, {
            "backend": "nest", "spec": spec.name, "threads": self.backend.local_num_threads,
            "build_time_s": f"{t1 - t0:.3f}", "wall_time_s": f"{t2 - t_prep:.3f}",
            "prepare_time_s": f"{t_prep - t1:.3f}",
            "nestml_compile_time_s": f"{self.build_time_s:.3f}",
            "nest_models": ",".join(sorted({p.nest_model for p in self.plans.values()}))})

    @property
    def dt_ms(self) -> float:
        return self.dt_s * 1e3

    def _build_network(self, nest, spec, duration_s: float, rng) -> _Built:
        from biosnn.backends.nestml_build import install_modules
        nest.ResetKernel()
        nest.SetKernelStatus({"resolution": self.dt_ms, "local_num_threads": self.backend.local_num_threads,
                              "rng_seed": int(spec.seed or 0) % (2 ** 31 - 2) + 1, "print_time": False})
        install_modules(self.modules)
        built = _Built()
        for pop in spec.populations:
            built.nodes[pop.name] = self._create_population(nest, spec, pop, rng)
        for inp in spec.inputs:
            if not isinstance(inp, m.CurrentInput):
                built.nodes[inp.name] = self._create_input(nest, spec, inp, duration_s, rng)
        for proj in spec.projections:
            self._connect(nest, spec, proj, built, rng)
        for mon in spec.monitors:
            self._monitor(nest, mon, built)
        return built

    def _create_population(self, nest, spec, pop, rng):
        plan = self.plans[pop.name]
        try:
            nodes = nest.Create(plan.nest_model, pop.size)
        except Exception as exc:
            raise BackendError(f"NEST could not create population '{pop.name}' ({plan.nest_model}): "
                               f"{exc}") from None
        status = dict(plan.params)
        consts = _constants(spec, pop)
        names = dict(consts)
        names["i"] = np.arange(pop.size)
        for var, value in pop.initial.items():
            if var not in plan.names:
                raise BackendError(f"initial value of {pop.name}.{var}: the NEST model {plan.nest_model} "
                                   f"has no counterpart of '{var}' (it maps {sorted(plan.names)})")
            si = evaluate(value, pop.size, names, rng, f"initial value of {pop.name}.{var}")
            status[plan.names[var]] = si / plan.scales[var]
        for key, value in status.items():
            if np.ndim(value) == 0:
                status[key] = float(value)
        try:
            scalars = {k: v for k, v in status.items() if np.ndim(v) == 0}
            nodes.set(scalars)
            for k, v in status.items():
                if np.ndim(v) != 0:
                    nodes.set({k: list(map(float, v))})
        except Exception as exc:
            raise BackendError(f"NEST rejected the parameters of population '{pop.name}': {exc}") from None
        if plan.nestml is not None and len(plan.receptors) > 1:
            types = nest.GetDefaults(plan.nest_model).get("receptor_types", {})
            for var, port in plan.nestml.ports.items():
                plan.receptors[var] = int(types.get(port.upper(), types.get(port, 0)))
        return nodes

    def _create_input(self, nest, spec, inp, duration_s: float, rng):
        if isinstance(inp, m.PoissonInput):
            if isinstance(inp.rates, str) and ("t" in _names(inp.rates) or _names(inp.rates) & _timed(spec)):
                raise BackendError(f"Poisson input '{inp.name}': rates '{inp.rates}' vary in time; the NEST "
                                   "backend takes constant rates (an array or a constant expression)")
            rates = evaluate(inp.rates, inp.size, {**_constants(spec), "i": np.arange(inp.size)}, rng,
                             f"rates of '{inp.name}'")
            gens = nest.Create("poisson_generator", inp.size, params={"rate": 0.0})
            gens.set({"rate": list(map(float, rates))})
            parrots = nest.Create("parrot_neuron", inp.size)
            nest.Connect(gens, parrots, "one_to_one", syn_spec={"delay": self.dt_ms})
            return parrots
        idx = np.asarray(inp.indices.data, dtype=np.int64)
        times = np.asarray(inp.times.si(), dtype=np.float64)
        if inp.period is not None:
            period = float(parse_quantity(inp.period))
            reps = int(np.ceil(duration_s / period))
            times = np.concatenate([times + k * period for k in range(reps)])
            idx = np.tile(idx, reps)
        steps = np.round(times / self.dt_s).astype(np.int64)
        keep = steps * self.dt_s < duration_s
        gens = nest.Create("spike_generator", inp.size)
        per = [[] for _ in range(inp.size)]
        for k, s in zip(idx[keep], steps[keep]):
            per[k].append(s)
        gens.set([{"spike_times": [(s + 1) * self.dt_ms for s in sorted(set(p))]} for p in per])
        return gens

    def _current_schedule(self, spec, built, n_steps: int) -> dict:
        """Step -> [(nodes, NEST name, values)]: when each current input changes its variable.

        Brian2 sets ``variable = values(t)`` at the start of every step; here a
        value is set before the first step it applies to (step 0 included).
        """
        changes: dict = {}
        for inp in spec.inputs:
            if not isinstance(inp, m.CurrentInput):
                continue
            plan = self.plans[inp.target]
            nodes = built.nodes[inp.target]
            values = np.asarray(inp.values.si(), dtype=np.float64) / plan.scales[inp.variable]
            per_step = float(parse_quantity(inp.dt)) / self.dt_s
            rows = np.floor(np.arange(n_steps) / per_step + 1e-9).astype(np.int64)
            rows = np.minimum(rows, len(values) - 1)  # a timed array holds its last value
            starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
            for step in starts:
                row = values[rows[step]]
                changes.setdefault(int(step), []).append(
                    (nodes, plan.names[inp.variable], list(map(float, np.broadcast_to(row, (len(nodes),))))))
        return changes

    def _connect(self, nest, spec, proj, built, rng):
        syn = self.synapses[proj.name]
        plan = self.plans[proj.target]
        conn = expand_projection(spec, proj)
        n = len(conn.i)
        if n == 0:
            return
        names = dict(syn.consts)
        names.update({"i": conn.i, "j": conn.j})
        weight = _base_weights(proj, conn, n, names, rng)
        if weight is not None:
            names[proj.weight_var] = weight
        for var, value in proj.initial.items():
            names[var] = evaluate(value, n, names, rng, f"initial value of {proj.name}.{var}")
        w_si = syn.sign * evaluate(syn.rhs, n, names, rng, f"on_pre of projection '{proj.name}'")
        w = w_si * plan.weight_factor[syn.target_var] / plan.scales[syn.target_var]
        delay_s = np.zeros(n) if proj.delay is None else \
            evaluate(proj.delay, n, names, rng, f"delay of projection '{proj.name}'")
        delay_ms = (np.round(delay_s / self.dt_s) + 1) * self.dt_ms
        source = built.nodes[proj.source]
        scale = plan.scales[syn.target_var] / plan.weight_factor[syn.target_var]
        if syn.stdp is not None:
            self._set_tau_minus(proj, syn, built)
            source = self._relay(nest, proj, built, delay_ms)
            delay_ms = np.full(n, self.dt_ms)
            if np.any(w < 0):
                raise BackendError(f"projection '{proj.name}': NEST's STDP synapses need non-negative weights")
        pre = np.asarray(source.tolist(), dtype=np.int64)[conn.i]
        post = np.asarray(built.nodes[proj.target].tolist(), dtype=np.int64)[conn.j]
        try:
            nest.Connect(pre, post, "one_to_one",
                         syn_spec={"synapse_model": syn.nest_model, "weight": w, "delay": delay_ms,
                                   "receptor_type": plan.receptors[syn.target_var], **syn.nest_params(scale)})
        except Exception as exc:
            raise BackendError(f"NEST could not connect projection '{proj.name}': {exc}") from None
        built.synapses[proj.name] = (syn, n)

    def _relay(self, nest, proj, built, delay_ms):
        """Parrot neurons that carry an STDP projection's delay as an *axonal* delay.

        Brian2 pairs the presynaptic spike's arrival (emission + delay) with the
        postsynaptic spike; NEST's STDP synapses treat their delay as dendritic.
        Relaying the source through parrots with the delay on the way in (and
        NEST's minimal delay after them) gives Brian2's pairing; the spike
        reaches the target one step later than over a static synapse.  Parrots
        also let spike generators (devices) drive plastic synapses.
        """
        if np.ptp(delay_ms) > 1e-9:
            raise BackendError(f"projection '{proj.name}': the NEST backend runs STDP with one delay per "
                               "projection; give a single delay")
        source = built.nodes[proj.source]
        parrots = nest.Create("parrot_neuron", len(source))
        nest.Connect(source, parrots, "one_to_one", syn_spec={"delay": float(delay_ms[0])})
        built.parrots[proj.name] = parrots
        return parrots

    def _set_tau_minus(self, proj, syn, built):
        """NEST keeps the post trace of STDP in the target neuron: one ``tau_minus`` per population."""
        tau = syn.tau_minus_ms()
        seen = built.tau_minus.setdefault(proj.target, (tau, proj.name))
        if not np.isclose(seen[0], tau):
            raise BackendError(f"projections '{seen[1]}' and '{proj.name}' onto '{proj.target}' have different "
                               f"tau_minus ({seen[0]} ms, {tau} ms); NEST keeps one per target neuron")
        built.nodes[proj.target].set({"tau_minus": tau})

    def _monitor(self, nest, mon, built):
        nodes = built.nodes[mon.population]
        if isinstance(mon, m.SpikeMonitor):
            if mon.population not in built.spike_recorders:
                rec = nest.Create("spike_recorder")
                nest.Connect(nodes, rec)
                built.spike_recorders[mon.population] = rec
            return
        plan = self.plans.get(mon.population)
        if plan is None:
            raise BackendError(f"state monitor of '{mon.population}': inputs have no state variables on NEST")
        missing = [v for v in mon.variables if v not in plan.names]
        if missing:
            raise BackendError(f"state monitor of '{mon.population}': the NEST model {plan.nest_model} "
                               f"cannot record {missing} (it has {sorted(plan.names)})")
        interval = self.dt_ms if mon.dt is None else float(parse_quantity(mon.dt)) * 1e3
        indices = np.arange(len(nodes)) if mon.indices is None else np.asarray(mon.indices, dtype=np.int64)
        if indices.size and indices.max() >= len(nodes):
            raise BackendError(f"state monitor of '{mon.population}': index {indices.max()} >= size {len(nodes)}")
        mm = nest.Create("multimeter", params={"record_from": [plan.names[v] for v in mon.variables],
                                               "interval": interval})
        if interval > self.dt_ms * 1.5:
            mm.set({"offset": self.dt_ms})
        nest.Connect(mm, nodes[sorted(set(indices.tolist()))])
        built.multimeters.append((mon, mm, indices))

    # -- reading back -----------------------------------------------------
    def _final_state(self, nest, spec, built, keys) -> dict:
        out = {}
        for key in keys:
            part, _, var = key.partition(".")
            if part in self.plans:
                plan = self.plans[part]
                if var not in plan.names:
                    raise BackendError(f"final_state entry '{key}': the NEST model {plan.nest_model} has no "
                                       f"'{var}' (it has {sorted(plan.names)})")
                values = np.asarray(built.nodes[part].get(plan.names[var]), dtype=np.float64).reshape(-1)
                out[key] = FinalState(values=values * plan.scales[var], unit=_unit_name(plan.dims[var]))
                continue
            proj = spec.projection(part)
            syn = self.synapses[part]
            if var != proj.weight_var or syn.rhs.strip() != proj.weight_var:
                raise BackendError(f"final_state entry '{key}': the NEST backend reads back only the weight "
                                   f"variable of projections whose on_pre adds it unchanged ('x_post += "
                                   f"{proj.weight_var}')")
            out[key] = self._read_weights(nest, spec, proj, built)
        return out

    def _read_weights(self, nest, spec, proj, built) -> FinalState:
        syn = self.synapses[proj.name]
        plan = self.plans[proj.target]
        src, tgt = built.parrots.get(proj.name, built.nodes[proj.source]), built.nodes[proj.target]
        conns = nest.GetConnections(source=src, target=tgt, synapse_model=syn.nest_model)
        if len(conns) == 0:
            return FinalState(values=np.zeros(0), unit="1")
        status = conns.get(["source", "target", "weight"])
        i = np.asarray(status["source"]) - src[0].global_id
        j = np.asarray(status["target"]) - tgt[0].global_id
        order = np.lexsort((j, i))
        w = np.asarray(status["weight"], dtype=np.float64)[order]
        w = syn.sign * w * plan.scales[syn.target_var] / plan.weight_factor[syn.target_var]
        smodel = spec.synapse_model(proj)
        from biosnn.spec.check import parse_equations
        eqs = parse_equations(smodel.equations or "", f"synapse_models.{proj.model}.equations")
        dim = eqs[proj.weight_var].dim if proj.weight_var in eqs else plan.dims[syn.target_var]
        return FinalState(values=w, unit=_unit_name(dim))

    def _recording(self, spec, built, duration_s, final, meta) -> Recording:
        dt = self.dt_s
        spikes = {}
        for name, rec in built.spike_recorders.items():
            ev = rec.get("events")
            t = np.asarray(ev["times"], dtype=np.float64) * 1e-3 - dt
            first = built.nodes[name][0].global_id
            i = np.asarray(ev["senders"], dtype=np.int64) - first
            keep = t < duration_s - dt / 2
            t, i = t[keep], i[keep]
            order = np.lexsort((i, t))
            spikes[name] = SpikeTrains(times=t[order], indices=i[order], size=len(built.nodes[name]))
        states: dict = {}
        for mon, mm, indices in built.multimeters:
            plan = self.plans[mon.population]
            ev = mm.get("events")
            shift = 0.0 if mon.when in _EARLY_SLOTS else dt
            t_all = np.asarray(ev["times"], dtype=np.float64) * 1e-3 - shift
            senders = np.asarray(ev["senders"], dtype=np.int64) - built.nodes[mon.population][0].global_id
            keep = t_all < duration_s - dt / 2
            times = np.unique(t_all[keep])
            row = np.searchsorted(times, t_all[keep])
            per = states.setdefault(mon.population, {})
            for var in mon.variables:
                data = np.asarray(ev[plan.names[var]], dtype=np.float64)[keep] * plan.scales[var]
                values = np.full((len(times), len(indices)), np.nan)
                for c, k in enumerate(indices):
                    sel = senders[keep] == k
                    values[row[sel], c] = data[sel]
                per[var] = StateTrace(times=times, values=values, indices=indices,
                                      unit=_unit_name(plan.dims[var]))
        return Recording(spikes=spikes, states=states, duration=duration_s, dt=dt,
                         meta={k: str(v) for k, v in meta.items()}, final=final)


def _names(text: str) -> set:
    import ast
    try:
        return {n.id for n in ast.walk(ast.parse(str(text), mode="eval")) if isinstance(n, ast.Name)}
    except SyntaxError:
        return set()


def _timed(spec) -> set:
    return {t.name for t in spec.timed_arrays}


def _constants(spec, pop=None) -> dict:
    from biosnn.backends.nest_models import namespace_layers
    from biosnn.spec.check import evaluate_namespace
    if pop is None:
        return evaluate_namespace([("namespace", spec.namespace)])
    return namespace_layers(spec, pop, spec.neuron_model(pop), "neuron")


def _base_weights(proj, conn, n, names, rng):
    """Per-synapse values of the weight variable in SI (kernel, pooling or the projection's weights)."""
    if conn.weights is not None and proj.weights is None:
        if isinstance(proj.connect, m.Conv2D):
            unit = float(np.asarray(unit_of(proj.connect.kernel.unit)))
            return np.asarray(conn.weights, dtype=np.float64) * unit
        return np.asarray(conn.weights, dtype=np.float64)
    if proj.weights is not None:
        return evaluate(proj.weights, n, names, rng, f"weights of projection '{proj.name}'")
    return None
