"""The NEST backend: a :class:`~biosnn.spec.NetworkSpec` simulated by NEST.

``get_backend("nest", local_num_threads=2).build(spec).run()`` returns the
same :class:`~biosnn.recording.Recording` as the Brian2 backends.

What it builds
--------------
* populations: the library ``lif`` maps onto ``iaf_psc_delta``; any other
  equation model is translated to NESTML, compiled once and cached by a hash
  of its text (:mod:`biosnn.backends.nestml_build`);
* inputs: spike times -> ``spike_generator`` (``spike_train_injector``, a
  node, where a plastic projection starts), Poisson -> ``poisson_generator``
  + ``parrot_neuron`` (so every target of a source sees the same train), or
  the generators alone where every source has at most one static synapse
  and no monitor (:func:`_private_slots`: no relay neurons, no extra spikes
  to exchange, NEST's minimal delay stays the projections'); sources of equal
  rate share generators (a generator draws one train per connection); Poisson
  rates that follow timed arrays (``stim(t, i)``) -> ``inhomogeneous_poisson_generator``
  + ``parrot_neuron`` (:func:`timed_rates`); current inputs
  set their variable (a model parameter, ``I_e`` for ``iaf_psc_delta``) between
  ``nest.Run`` segments, exactly when Brian2's ``run_regularly`` would;
* projections: every connectivity kind is expanded to explicit lists by
  :func:`biosnn.spec.expand.expand_projection` (the Brian2 backends use the
  same lists), connected with ``static_synapse``, and for plastic
  equation models (pair STDP included) a NESTML synapse co-generated with the target's NESTML
  neuron (see :func:`biosnn.backends.nest_models.plan_synapse` and
  :mod:`biosnn.backends.nestml_synapses`); plastic connections have the
  minimal delay, ``parrot_neuron`` relays carry the spec's delays;
* monitors: ``spike_recorder`` and ``multimeter``.

Timing conventions (so that spike trains equal the Brian2 runtime's)
--------------------------------------------------------------------
NEST stamps a spike at the *end* of the step in which the threshold is
crossed, Brian2 at its start; recorded times are therefore shifted back by one
``dt``.  NEST's smallest delay is one step, and a spike arriving in a step is
applied *before* that step's integration in translated models (after it in
``iaf_psc_delta``, compensated by a factor ``exp(-dt/tau_m)`` on the weight), so
NEST delays are the spec's delay plus ``dt``.  Spike-generator times move one
``dt`` later to match.  Plastic (NESTML) connections arrive in the same step:
they have the minimal delay, relays carry the spec's delay, and their synapses
pair with the postsynaptic spikes up to the arrival (no dendritic delay), so
pairings, weights and spikes equal Brian2's (``NestSimulation._plastic_sources``).
State traces differ from Brian2's only in the step in which a synaptic input
arrives (Brian2 records the jump one step earlier).

Processes
---------
The kernel runs with ``local_num_threads`` threads per process.  With an
MPI-enabled NEST (the PyPI wheel has none; ``scripts/build_nest_mpi.sh``
builds one) the same script runs under ``mpirun -np N``: every rank builds the
whole network from the same seed, NEST keeps each rank's share of neurons and
connections, and recorder events, final values and connection weights are
gathered from all ranks (:mod:`biosnn.backends.nest_mpi`, with mpi4py), so
every rank returns the same :class:`~biosnn.recording.Recording` (its
``meta["processes"]`` says how many).  NEST's results are reproducible per
number of virtual processes (processes x threads): ``mpirun -np 2`` with one
thread equals one process with two threads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from biosnn.backends.brian2_network import run_request
from biosnn.backends.nest_constructs import lower_for_nest, protocol_schedule
from biosnn.backends.nest_models import NeuronPlan, evaluate, name_paired_synapses, plan_neuron, plan_synapse
from biosnn.backends.nest_mpi import (communicator, gather_connections, gather_events, gather_node_values,
                                      merge_samples, merge_spikes, per_node, sample_matrix)
from biosnn.backends.progress import ProgressBar
from biosnn.errors import BackendError
from biosnn.recording import FinalState, Recording, SpikeTrains, StateTrace
from biosnn.spec import model as m
from biosnn.spec.expand import expand_projection
from biosnn.spec.values import parse_quantity, unit_of

__all__ = ["NestBackend", "NestSimulation", "nest_available"]

_EARLY_SLOTS = {"start", "before_start", "after_start", "before_groups"}
_LATE_SLOTS = {"after_resets", "before_end", "end", "after_end"}


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
    multimeters: list = field(default_factory=list)  # (StateMonitor, multimeter, indices, initial values or None)
    synapses: dict = field(default_factory=dict)     # projection name -> (plan, n)
    plastic_pre: dict = field(default_factory=dict)  # plastic projection -> (presynaptic node ids, source index)


class NestSimulation:
    """A spec planned for NEST; each :meth:`run` builds the network in a fresh kernel."""

    def __init__(self, backend: NestBackend, spec: m.NetworkSpec):
        self.backend = backend
        self.spec, self._finish = lower_for_nest(spec)  # conditions, subgroups, rate monitors; refusals
        spec = self.spec
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
                                   "cannot run: NEST runs no code between its steps, and a value set between "
                                   "nest.Run segments would keep the synaptic input that Brian2's operation "
                                   "overwrites (NEST adds it during the next step). Use a Brian2 backend, give "
                                   "changing values as current inputs, or reset by starting a new run")
        for mon in spec.monitors:
            if isinstance(mon, m.StateMonitor) and mon.when not in _EARLY_SLOTS | _LATE_SLOTS:
                raise BackendError(f"state monitor of '{mon.population}' samples in the '{mon.when}' slot: NEST "
                                   "records the state before a step (when: start) or after the whole step, resets "
                                   "included (when: end), not between integration and reset; use 'start' or 'end'")
        in_models = _timed_arrays_in_models(spec)
        if in_models:
            raise BackendError(f"the NEST backend does not evaluate timed arrays in equations "
                               f"({in_models}); give inputs as current inputs, spike times or Poisson "
                               "rates (which may follow timed arrays, e.g. rates: stim(t, i))")
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
        paired = {p.name: [self.synapses[q.name].nestml for q in spec.projections
                           if q.target == p.name and self.synapses[q.name].nestml is not None]
                  for p in spec.populations}
        plans = {p.name: plan_neuron(spec, p, targets[p.name], currents[p.name], self.dt_s, paired[p.name])
                 for p in spec.populations}
        # populations of one NESTML model share one translation: with the input ports of all of them
        ports: dict = {}
        for p in spec.populations:
            if plans[p.name].nestml is not None:
                ports.setdefault(plans[p.name].nestml.name, set()).update(targets[p.name])
        for p in spec.populations:
            tr = plans[p.name].nestml
            if tr is not None and set(tr.ports) != ports[tr.name]:
                plans[p.name] = plan_neuron(spec, p, ports[tr.name], currents[p.name], self.dt_s, paired[p.name])
        name_paired_synapses(spec, plans, self.synapses)
        return plans

    def _compile(self):
        """All NESTML models of the spec (neurons with their co-generated synapses) in one module, cached."""
        from biosnn.backends.nestml_build import compile_module
        from biosnn.backends.nestml_synapses import merge_codegen_options
        texts, options = {}, []
        for name, plan in sorted(self.plans.items()):
            model_texts, model_options = plan.module_texts()
            for key, text in model_texts.items():
                if texts.setdefault(key, text) != text:
                    raise BackendError(f"population '{name}' translates model '{key}' to another NESTML text "
                                       "than a population before it (they differ in the variables synapses or "
                                       "current inputs change); give the populations models of their own")
            if model_options and model_options not in options:
                options.append(model_options)
        self.compiled_now = False
        if not texts:
            return []
        module, directory, self.compiled_now = compile_module(
            texts, cache_root=self.backend.cache_dir, codegen_opts=merge_codegen_options(options) or None)
        return [(module, directory)]

    # -- running ----------------------------------------------------------
    def run(self, duration: float | None = None, overrides=None, progress: bool = True, final_state=None):
        """Run from the spec's initial state (see :meth:`biosnn.backends.base.Simulation.run`)."""
        spec, final_keys, duration_s = run_request(self.spec, duration, overrides, final_state)
        nest = _import_nest()
        t0 = time.perf_counter()
        rng = np.random.default_rng(spec.seed)
        built = self._build_network(nest, spec, duration_s, rng)
        n_steps = int(round(duration_s / self.dt_s))
        changes = self._current_schedule(spec, built, n_steps)
        for step, items in protocol_schedule(spec, self.plans, built.nodes, self.dt_s, n_steps, rng).items():
            changes.setdefault(step, []).extend(items)
        chunks = max(1, min(20, n_steps // 100)) if progress else 1
        bounds = sorted(set(np.linspace(0, n_steps, chunks + 1).round().astype(int).tolist()) | set(changes))
        t1 = time.perf_counter()
        bar = ProgressBar(progress, f"{spec.name} (nest)", duration_s)
        try:
            with nest.RunManager():
                t_prep = time.perf_counter()
                for a, b in zip(bounds[:-1], bounds[1:]):
                    for nodes, name, values in changes.get(a, ()):
                        nodes.set(per_node(name, values))  # a list of dicts: works on every MPI rank
                    nest.Run((b - a) * self.dt_ms)
                    bar.update(b / n_steps)
            final = self._final_state(nest, spec, built, final_keys)
            if built.multimeters:  # recorders deliver the last step's samples one step later
                nest.Simulate(self.dt_ms)
        finally:
            bar.close()
        t2 = time.perf_counter()
        return self._finish(self._recording(spec, built, duration_s, final, {
            "backend": "nest", "spec": spec.name, "threads": self.backend.local_num_threads,
            "build_time_s": f"{t1 - t0:.3f}", "wall_time_s": f"{t2 - t_prep:.3f}",
            "prepare_time_s": f"{t_prep - t1:.3f}",
            "nestml_compile_time_s": f"{self.build_time_s:.3f}",
            "nest_models": ",".join(sorted({p.nest_model for p in self.plans.values()}))}))

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
        from brian2 import Quantity
        done, subexpressions = set(), _subexpressions(spec.neuron_model(pop))

        def bind(used: set):  # model variables not set yet: NEST's values; subexpressions: from the current values
            for name in used - {"i"}:
                if name in subexpressions:
                    code, dim = subexpressions[name]
                    bind(_names(code))
                    names[name] = Quantity(evaluate(code, pop.size, names, rng, f"subexpression '{name}' of "
                                                    f"{pop.name}"), dim=dim)
                elif name in plan.names and name not in done:
                    names[name] = self._variable(nest, nodes, plan, name, status.get(plan.names[name]))

        for var, value in pop.initial.items():  # in order, as Brian2 sets them: later values may use earlier ones
            if var not in plan.names:
                raise BackendError(f"initial value of {pop.name}.{var}: the NEST model {plan.nest_model} "
                                   f"has no counterpart of '{var}' (it maps {sorted(plan.names)})")
            bind(_names(value) if isinstance(value, str) else set())
            done.add(var)
            si = evaluate(value, pop.size, names, rng, f"initial value of {pop.name}.{var}")
            status[plan.names[var]] = si / plan.scales[var]
            names[var] = self._variable(nest, nodes, plan, var, status[plan.names[var]])
        for key, value in status.items():
            if np.ndim(value) == 0:
                status[key] = float(value)
        try:
            scalars = {k: v for k, v in status.items() if np.ndim(v) == 0}
            nodes.set(scalars)
            for k, v in status.items():
                if np.ndim(v) != 0:
                    nodes.set(per_node(k, v))
        except Exception as exc:
            raise BackendError(f"NEST rejected the parameters of population '{pop.name}': {exc}") from None
        if plan.nestml is not None and len(plan.receptors) > 1:
            types = nest.GetDefaults(plan.nest_model).get("receptor_types", {})
            for var, port in plan.nestml.ports.items():
                plan.receptors[var] = int(types.get(port.upper(), types.get(port, 0)))
        return nodes

    @staticmethod
    def _variable(nest, nodes, plan: NeuronPlan, var: str, nest_value=None):
        """A neuron variable as a Brian2 quantity (its NEST value, or ``nest_value`` in NEST units) for expressions."""
        from brian2 import Quantity
        if nest_value is None:
            nest_value = gather_node_values(communicator(nest), nest, nodes, plan.names[var])
        values = np.broadcast_to(np.asarray(nest_value, dtype=np.float64), (len(nodes),)) * plan.scales[var]
        return Quantity(values, dim=plan.dims[var])

    def _create_input(self, nest, spec, inp, duration_s: float, rng):
        if isinstance(inp, m.PoissonInput):
            if isinstance(inp.rates, str) and ("t" in _names(inp.rates) or _names(inp.rates) & _timed(spec)):
                return self._inhomogeneous_poisson(nest, spec, inp, duration_s, rng)
            rates = evaluate(inp.rates, inp.size, {**_constants(spec), "i": np.arange(inp.size)}, rng,
                             f"rates of '{inp.name}'")
            plastic = {name for name, syn in self.synapses.items() if syn.plastic}
            slots = _private_slots(spec, inp.name, rates, plastic)
            if slots is not None:  # one synapse per source: connected straight from the generators
                return _poisson_generators(nest, rates, slots)
            parrots = nest.Create("parrot_neuron", inp.size)  # relays: all synapses of a source share its train
            gids = _poisson_generators(nest, rates, np.zeros(inp.size, dtype=np.int64))
            nest.Connect(gids, np.asarray(parrots.tolist(), dtype=np.int64), "one_to_one",
                         syn_spec={"delay": np.full(inp.size, self.dt_ms)})
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
        # a device cannot drive plastic connections: spike_train_injector is a node that emits the same spikes
        plastic = any(p.source == inp.name and self.synapses[p.name].plastic for p in spec.projections)
        gens = nest.Create("spike_train_injector" if plastic else "spike_generator", inp.size)
        per = [[] for _ in range(inp.size)]
        for k, s in zip(idx[keep], steps[keep]):
            per[k].append(s)
        gens.set([{"spike_times": [(s + 1) * self.dt_ms for s in sorted(set(p))]} for p in per])
        return gens

    def _inhomogeneous_poisson(self, nest, spec, inp, duration_s: float, rng):
        """Poisson sources whose rates follow timed arrays: ``inhomogeneous_poisson_generator``.

        The rates expression may use ``t`` only as the time argument of timed
        arrays (e.g. ``stim(t, i)``, ``2 * stim(t, i) * Hz``); it is evaluated
        at every row boundary of those arrays, where the rates can change.
        Each source gets its own generator behind a ``parrot_neuron``, so all
        synapses of a source share its train, as in Brian2's ``PoissonGroup``.
        """
        rates, change_s = timed_rates(spec, inp, duration_s, rng)
        times_ms = (np.round(change_s / self.dt_s) + 1) * self.dt_ms  # NEST's one-step delivery convention
        gens = nest.Create("inhomogeneous_poisson_generator", inp.size)
        gens.set([{"rate_times": list(map(float, times_ms)), "rate_values": list(map(float, rates[:, k]))}
                  for k in range(inp.size)])
        parrots = nest.Create("parrot_neuron", inp.size)
        nest.Connect(gens, parrots, "one_to_one", syn_spec={"delay": self.dt_ms})
        return parrots

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
        params = {}
        if syn.nestml is not None:  # NESTML synapse: its own weight variable, states and constants
            params = syn.nestml_values(names, n)
            w = params.pop("weight")
        if syn.plastic:
            pre = self._plastic_sources(nest, proj, built, conn.i, delay_ms)
            delay_ms = np.full(n, self.dt_ms)
        else:
            pre = np.asarray(source.tolist(), dtype=np.int64)[conn.i]
        post = np.asarray(built.nodes[proj.target].tolist(), dtype=np.int64)[conn.j]
        try:
            nest.Connect(pre, post, "one_to_one",
                         syn_spec={"synapse_model": syn.nest_model, "weight": w, "delay": delay_ms,
                                   "receptor_type": plan.receptors[syn.target_var], **params})
        except Exception as exc:
            raise BackendError(f"NEST could not connect projection '{proj.name}': {exc}") from None
        built.synapses[proj.name] = (syn, n)

    def _plastic_sources(self, nest, proj, built, source_index: np.ndarray, delay_ms: np.ndarray) -> np.ndarray:
        """Presynaptic nodes of a plastic projection whose connections all have the minimal delay (one step).

        Brian2 pairs the presynaptic spike's *arrival* (emission + delay) with
        the postsynaptic spikes; NEST's plastic connections pair at the
        spike's stamp.  Synapses without delay connect their source directly
        (one step, as a static synapse); the others take their spikes from one
        ``parrot_neuron`` per (source, delay), reached after the spec's delay,
        which adds the step back: every spike arrives when it does over a
        static synapse, and the synapse sees it then (the NESTML synapses
        pair with no dendritic delay, :mod:`biosnn.backends.nestml_synapses`).

        Returns
        -------
        numpy.ndarray
            The presynaptic node id of every synapse.
        """
        steps = np.round(delay_ms / self.dt_ms).astype(np.int64) - 1  # the spec's delay in steps
        sources = np.asarray(built.nodes[proj.source].tolist(), dtype=np.int64)
        pre = sources[source_index]
        late = steps > 0
        gids, index = [sources], [np.arange(len(sources))]
        if late.any():
            pairs, inverse = np.unique(np.stack([source_index[late], steps[late]]), axis=1, return_inverse=True)
            ids = np.asarray(nest.Create("parrot_neuron", pairs.shape[1]).tolist(), dtype=np.int64)
            nest.Connect(sources[pairs[0]], ids, "one_to_one", syn_spec={"delay": pairs[1] * self.dt_ms})
            pre[late] = ids[inverse.reshape(-1)]
            gids.append(ids)
            index.append(pairs[0])
        built.plastic_pre[proj.name] = (np.concatenate(gids), np.concatenate(index))
        return pre

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
        if abs(interval / self.dt_ms - round(interval / self.dt_ms)) > 1e-9:
            raise BackendError(f"state monitor of '{mon.population}': its dt ({mon.dt}) is not a multiple of the "
                               "simulation dt")
        # every step is recorded and the monitor's samples picked in _recording: a multimeter with an offset
        # (for 'end' samples) misses the first one
        mm = nest.Create("multimeter", params={"record_from": [plan.names[v] for v in mon.variables],
                                               "interval": self.dt_ms})
        nest.Connect(mm, nodes[sorted(set(indices.tolist()))])
        initial = None
        if mon.when in _EARLY_SLOTS:  # NEST's first sample follows the first step: Brian2's t = 0 sample is the
            comm = communicator(nest)  # initial state, read before running
            initial = {v: gather_node_values(comm, nest, nodes, plan.names[v])[indices] for v in mon.variables}
        built.multimeters.append((mon, mm, indices, initial))

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
                values = gather_node_values(communicator(nest), nest, built.nodes[part], plan.names[var])
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
        twins = [q.name for q in spec.projections if q.name != proj.name and q.source == proj.source
                 and q.target == proj.target and q.name in self.synapses
                 and self.synapses[q.name].nest_model == syn.nest_model]
        if twins:  # NEST's connections carry no projection name: the weights would come back mixed
            raise BackendError(
                f"final_state entry '{proj.name}.{proj.weight_var}': NEST cannot tell projection "
                f"'{proj.name}' from {twins} (same synapse model {syn.nest_model} between the same "
                "populations, or subgroups of them), so their weights cannot be read back apart; "
                "merge them into one projection, or read them on a Brian2 backend")
        plan = self.plans[proj.target]
        src, tgt = built.nodes[proj.source], built.nodes[proj.target]
        relayed = built.plastic_pre.get(proj.name)
        if relayed is not None:  # sources and relay parrots
            src = relayed[0]
        shared = isinstance(src, np.ndarray)  # Poisson sources on shared generators (_private_slots), or relays
        source = nest.NodeCollection(sorted(set(src.tolist()))) if shared else src
        conns = nest.GetConnections(source=source, target=tgt, synapse_model=syn.nest_model)
        status = gather_connections(communicator(nest), conns)  # every rank's connections
        if len(status["source"]) == 0:
            return FinalState(values=np.zeros(0), unit="1")
        if relayed is not None:  # node id -> source index
            index_of = np.full(int(relayed[0].max()) + 1, -1, dtype=np.int64)
            index_of[relayed[0]] = relayed[1]
            i = index_of[status["source"]]
        elif shared:  # (generator, target) names one synapse: find its source index
            status = _synapses_of_generators(spec, proj, src, tgt[0].global_id, status)
            i = status["source"]
        else:
            i = status["source"] - src[0].global_id
        j = status["target"] - tgt[0].global_id
        order = np.lexsort((j, i))
        w = status["weight"][order]
        w = w * syn.weight_unit(plan)
        smodel = spec.synapse_model(proj)
        from biosnn.spec.check import parse_equations
        eqs = parse_equations(smodel.equations or "", f"synapse_models.{proj.model}.equations")
        dim = eqs[proj.weight_var].dim if proj.weight_var in eqs else plan.dims[syn.target_var]
        return FinalState(values=w, unit=_unit_name(dim))

    def _recording(self, spec, built, duration_s, final, meta) -> Recording:
        dt = self.dt_s
        comm = communicator(_import_nest())  # recorders hold the local rank's events: gather them
        meta["processes"] = comm.size
        spikes = {}
        for name, rec in built.spike_recorders.items():
            t_ms, senders = merge_spikes(gather_events(comm, rec, ("times", "senders")))
            t = t_ms * 1e-3 - dt
            i = senders - built.nodes[name][0].global_id
            keep = t < duration_s - dt / 2
            spikes[name] = SpikeTrains(times=t[keep], indices=i[keep], size=len(built.nodes[name]))
        states: dict = {}
        for mon, mm, indices, initial in built.multimeters:
            plan = self.plans[mon.population]
            nest_vars = [plan.names[var] for var in mon.variables]
            ev = merge_samples(gather_events(comm, mm, ["times", "senders", *nest_vars]), nest_vars)
            shift = 0.0 if mon.when in _EARLY_SLOTS else dt
            t_all = ev["times"] * 1e-3 - shift
            senders = ev["senders"] - built.nodes[mon.population][0].global_id
            every = 1 if mon.dt is None else int(round(float(parse_quantity(mon.dt)) / dt))
            steps = np.round(t_all / dt).astype(np.int64)
            keep = (t_all < duration_s - dt / 2) & (steps % every == 0)
            per = states.setdefault(mon.population, {})
            for var, nest_var in zip(mon.variables, nest_vars):
                times, values = sample_matrix(t_all[keep], senders[keep], ev[nest_var][keep] * plan.scales[var],
                                              indices)
                if initial is not None:
                    times = np.r_[0.0, times]
                    values = np.vstack([initial[var][None, :] * plan.scales[var], values])
                per[var] = StateTrace(times=times, values=values, indices=indices,
                                      unit=_unit_name(plan.dims[var]))
        return Recording(spikes=spikes, states=states, duration=duration_s, dt=dt,
                         meta={k: str(v) for k, v in meta.items()}, final=final)


def _private_slots(spec, name: str, rates: np.ndarray, plastic: set) -> np.ndarray | None:
    """Generator slots of a Poisson input that may drive its targets without relays, else ``None``.

    Brian2's ``PoissonGroup`` sends each source's one train to all synapses of
    that source; a NEST ``poisson_generator`` draws an independent train for
    every connection.  The two agree exactly when each source has at most one
    synapse (over all projections), no monitor records the input (a
    ``spike_recorder`` cannot record a generator) and no projection from it is
    plastic (NEST's STDP synapses take no generator as source).  The out-degree
    is read cheaply from one-to-one and explicit connectivity and from
    all-to-all onto a single neuron; any other connectivity keeps the
    ``parrot_neuron`` relays, which are always correct.

    Sources of equal rate then share generators.  The returned slot of a
    source numbers it among the sources of the same rate and the same target
    neuron, so that (generator, target) names one synapse: one generator per
    (rate, slot), which keeps final weights readable per synapse and NEST's
    per-device connection storage (tens of kB per connected generator) small.
    """
    if any(getattr(mon, "population", None) == name for mon in spec.monitors):
        return None
    size = spec.node(name).size
    target = np.full(size, -1, dtype=np.int64)  # a key of each source's target neuron, -1: none
    offset = {p.name: k for k, p in enumerate(spec.populations)}
    for proj in spec.projections:
        if proj.source != name:
            continue
        if proj.name in plastic:
            return None
        c, n_post = proj.connect, spec.node(proj.target).size
        if isinstance(c, m.OneToOne) and n_post == size:
            i = j = np.arange(size)
        elif isinstance(c, m.AllToAll) and n_post == 1:
            i, j = np.arange(size), np.zeros(size, dtype=np.int64)
        elif isinstance(c, m.Explicit):
            i, j = np.asarray(c.i.data, dtype=np.int64), np.asarray(c.j.data, dtype=np.int64)
            if i.size and (i.min() < 0 or i.max() >= size):
                return None  # expand_projection reports the bad index
        else:
            return None
        if np.any(target[i] >= 0) or len(np.unique(i)) < len(i):
            return None  # a source with two synapses
        target[i] = offset.get(proj.target, 0) * (2 ** 40) + j
    order = np.lexsort((np.arange(size), target, rates))
    new = np.r_[True, (np.diff(rates[order]) != 0) | (np.diff(target[order]) != 0)]
    start = np.maximum.accumulate(np.where(new, np.arange(size), 0))
    slots = np.empty(size, dtype=np.int64)
    slots[order] = np.arange(size) - start
    slots[target < 0] = 0  # sources without synapses
    return slots


def _synapses_of_generators(spec, proj, gids: np.ndarray, first_target: int, status: dict) -> dict:
    """Connections of ``proj`` from shared Poisson generators, each generator id replaced by its source index.

    :func:`_private_slots` makes (generator, target) unique per synapse; connections
    of another projection from the same input onto the same population are dropped.
    """
    conn = expand_projection(spec, proj)
    spec_keys = gids[conn.i] * (2 ** 32) + first_target + conn.j
    order = np.argsort(spec_keys)
    got = status["source"] * (2 ** 32) + status["target"]
    pos = np.minimum(np.searchsorted(spec_keys[order], got), max(len(order) - 1, 0))
    found = spec_keys[order][pos] == got if len(order) else np.zeros(len(got), dtype=bool)
    return {"source": conn.i[order[pos[found]]], "target": status["target"][found],
            "weight": status["weight"][found]}


def _timed_arrays_in_models(spec) -> list[str]:
    """Timed arrays used by neuron or synapse code or initial values (not only by Poisson rates)."""
    import re
    texts = []
    for pop in spec.populations:
        model = spec.neuron_model(pop)
        texts += [model.equations, model.threshold, model.reset, *map(str, pop.initial.values())]
    for proj in spec.projections:
        model = spec.synapse_model(proj)
        texts += [model.equations, model.on_pre, model.on_post, *map(str, proj.initial.values())]
    text = "\n".join(str(x) for x in texts if x)
    return [ta.name for ta in spec.timed_arrays if re.search(rf"\b{re.escape(ta.name)}\s*\(", text)]


def timed_rates(spec, inp, duration_s: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """A Poisson input's rates (Hz) at each time they can change, for rates that use timed arrays.

    Parameters
    ----------
    spec : NetworkSpec
    inp : PoissonInput
        Its ``rates`` is an expression in which ``t`` appears only as the first
        argument of timed arrays.
    duration_s : float
        Simulated time (s).
    rng : numpy.random.Generator
        For ``rand()`` in the expression.

    Returns
    -------
    rates : numpy.ndarray, shape (n_changes, size)
        Hz, from each change time on.
    change_s : numpy.ndarray, shape (n_changes,)
        The change times (s): 0 and every row boundary of the timed arrays used.

    Raises
    ------
    BackendError
        If ``t`` is used outside a timed array, or a rate is negative.
    """
    import ast
    from brian2 import Quantity
    text = str(inp.rates)
    tree = ast.parse(text, mode="eval")
    timed = {ta.name: ta for ta in spec.timed_arrays}
    inside = {id(a) for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in timed and node.args for a in [node.args[0]]}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id == "t" and id(node) not in inside:
            raise BackendError(f"Poisson input '{inp.name}': rates '{text}' use t outside a timed array; the NEST "
                               "backend follows rates that change with timed arrays (e.g. stim(t, i)), not "
                               "arbitrary functions of t: tabulate them in a timed array")
    used = {n: (timed[n].values.quantity(), float(parse_quantity(timed[n].dt))) for n in _names(text) if n in timed}
    change = {0}
    for q, dt in used.values():
        rows = int(np.ceil(duration_s / dt - 1e-9))
        change.update(int(round(k * dt / 1e-9)) for k in range(min(rows, q.shape[0])))
    change_s = np.array(sorted(change), dtype=np.float64) * 1e-9
    names = {**_constants(spec), "i": np.arange(inp.size)}
    out = np.empty((len(change_s), inp.size))
    for r, t_now in enumerate(change_s):
        names["t"] = t_now
        for name, (q, dt) in used.items():
            values = q[min(int(np.floor(t_now / dt + 1e-9)), q.shape[0] - 1)]
            names[name] = (lambda v: lambda _t: Quantity(v))(values) if q.ndim == 1 else \
                (lambda v: lambda _t, k: v[k])(values)
        out[r] = evaluate(inp.rates, inp.size, names, rng, f"rates of '{inp.name}'")
    if (out < 0).any():
        raise BackendError(f"Poisson input '{inp.name}': rates '{text}' are negative somewhere; rates must be >= 0")
    return out, change_s


def _poisson_generators(nest, rates: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """One ``poisson_generator`` per distinct (rate, slot); the generator's global id of each source."""
    keys = np.rec.fromarrays([np.asarray(rates, dtype=np.float64), slots])
    unique, inverse = np.unique(keys, return_inverse=True)
    gens = nest.Create("poisson_generator", len(unique), params={"rate": 0.0})
    gens.set(per_node("rate", unique.f0))
    return np.asarray(gens.tolist(), dtype=np.int64)[inverse.reshape(-1)]


def _subexpressions(model: m.NeuronModel) -> dict:
    """Subexpressions of a neuron model: name -> (expression, Brian2 dimension)."""
    from biosnn.spec.check import parse_equations
    if not model.equations:
        return {}
    eqs = parse_equations(model.equations, "neuron equations")
    return {eq.varname: (str(eq.expr.code), eq.dim) for eq in eqs.values() if eq.type == "subexpression"}


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
