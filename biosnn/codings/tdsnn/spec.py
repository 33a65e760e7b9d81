"""A TDSNN (reverse-coded, Zhang et al. 2019) converted network as a :class:`~biosnn.spec.NetworkSpec`.

The dynamics are those of :mod:`biosnn.codings.tdsnn.reference` (read its
docstring first); this module lays them out for Brian2.

Schedule
--------
Time is counted in steps (``dt`` = 1 ms, nominal).  One copy of the network
runs many samples one after another, each in a window of
``W = P T_il + 1`` steps, ``P`` being the number of weighted layers: the
input is active in period 0 (steps ``0 .. T_il - 1`` of the window), weighted
layer ``p`` in period ``p`` (its inhibitory period is period ``p - 1``), a
max-pool layer in its input's period, and the output layer is read at step
``P T_il``, the last of the window (the layers of one sample form the
pipeline of the paper's Fig. 3; samples do not overlap).

``T_il`` is data, not code: it is the one value of the timed array
:data:`T_IL_TABLE`, and every population computes its schedule from it and
the integer step counter at every step (shared subexpressions, once per
step: ``W = P*T_il + 1``, ``phase = t_in_timesteps % W``, the bounds ``S0``,
``S1``, ``S2`` of its busy steps from its period ``p``).  There is no
per-window clock: what happens once per window is done by per-step code at
one phase (resets at ``phase == S0``, readouts at the last step), and the
run's duration (``windows * W`` steps) is read at run time by the
``cpp_standalone`` binary (:func:`biosnn.backends.brian2_standalone.duration_from_environment`),
so networks of the same shape share one build whatever their ``T_il``.

Within a step: every LIF population updates ``v`` (schedule slot ``start``:
at ``S0``, the first step of the inhibitory period, ``v`` is reset to the
bias, an input of G-value 1, and ``fired`` to 0; then ``v = v*decay`` per
step; outside ``[S0, S2)``, the inhibitory and active periods, ``v`` is left
as it is: it is not read before ``S0`` and no longer after ``S2``, and the
standalone backends skip the layer's neuron loops there,
:data:`biosnn.backends.brian2_standalone.IDLE_LOOPS`); then, layer by layer in topological order (slot
``groups``, :attr:`~biosnn.spec.model.Population.order`), incoming spikes and
ticks are added and thresholds tested, so a spike crosses a max-pool layer in
the step it was emitted, like in the reference.

Populations
-----------
* ``input``: reads its spike step ``tin`` from row ``t_in_timesteps // W``
  (the window) of the 2-D timed array ``x_in`` (one row per window, computed
  by :func:`~biosnn.codings.tdsnn.reference.input_steps`, at most
  ``T_il - 1``) and fires at ``phase == tin`` (not at all if
  ``tin >= T_il``, its last busy step being ``T_il - 1``);
* ``L1, L2, ...`` in topological order: hidden weighted layers (model
  ``tdsnn_lif``: leak ``decay``, threshold 0 in their active period, a flag
  ``fired`` so that each neuron spikes once, a forced spike at the last
  active step), max-pool layers (``tdsnn_pool``: unit weights, threshold = the
  window's number of inputs, no leak, reset at the first step of its period)
  and the output (``tdsnn_output``: integrates; every output neuron spikes at
  the last step of the window, where a spike monitor reads ``v``);
* ``T<k>``: the ticking neuron of hidden layer ``L<k>`` (model ``tdsnn_tick``):
  fires at active steps ``1 .. T_il - 1`` of ``L<k>`` while some neuron of
  ``L<k>`` has not fired (``fanout``: set to the layer's size at the window's
  first step, decremented by every spike of ``L<k>``); each tick adds
  ``w_tick`` (eq. 9) to every neuron of ``L<k>``;
* ``meter``: one neuron per spiking population (input, hidden, max-pool,
  ticking) counting spikes and ``fanout`` per spike per window, as in the
  rate-coded network: for a ticking neuron ``fanout`` is the number of
  neurons the tick still had to update, so its ``ops`` are the tick additions.
  Its neurons spike at the last step of every window, where a spike monitor
  reads the counts (:func:`window_values`), and reset them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from biosnn.frontends.torch_graph import LayerGraph
from biosnn.conversion.connect import weighted_connect
from biosnn.codings.rate.spec import DT_MS, layer_connections
from biosnn.codings.tdsnn.reference import (check_L, check_T_il, decay_factor, tdsnn_roles,
                                               tick_weight)
from biosnn.spec import model as m
from biosnn.spec.values import ArrayValue

__all__ = ["Slot", "tdsnn_layout", "window_steps", "tdsnn_network_spec", "T_IL_TABLE", "window_values"]


@dataclass(frozen=True)
class Slot:
    """Where one layer sits in the TDSNN network.

    Attributes
    ----------
    layer : str
        Torch layer name.
    role : str
        ``input``, ``lif``, ``pool`` or ``output`` (:func:`~biosnn.codings.tdsnn.reference.tdsnn_roles`).
    population : str
        Population name in the spec.
    order : int
        Schedule position (:attr:`biosnn.spec.model.Population.order`).
    period : int
        Period in which the layer fires (its active steps are
        ``period*T_il .. period*T_il + T_il - 1`` of the window); for the
        output, the period whose first step is its readout.
    """

    layer: str
    role: str
    population: str
    order: int
    period: int

    @property
    def tick_population(self) -> str | None:
        """Name of the ticking neuron of a hidden LIF layer (``None`` for the other roles)."""
        return f"T{self.order}" if self.role == "lif" else None


def tdsnn_layout(graph: LayerGraph) -> list[Slot]:
    """The :class:`Slot` of every layer, in topological order (raises for unsupported networks)."""
    roles = tdsnn_roles(graph)
    slots: dict[str, Slot] = {}
    for k, layer in enumerate(graph.layers):
        role = roles[layer.name]
        if role == "input":
            slots[layer.name] = Slot(layer.name, role, "input", 0, 0)
            continue
        src = slots[layer.inputs[0]].period
        slots[layer.name] = Slot(layer.name, role, f"L{k}", k, src if role == "pool" else src + 1)
    return list(slots.values())


def window_steps(layout: list[Slot], T_il: int) -> int:
    """Steps of one sample window, ``P T_il + 1`` (``P``: the output's period = number of weighted layers)."""
    return layout[-1].period * int(T_il) + 1


#: Name of the one-value timed array that holds ``T_il``: the schedule is computed from it at every step, so
#: that ``T_il`` (and the window, ``P T_il + 1`` steps) is data, not code: networks that differ in ``T_il``
#: share a standalone build.
T_IL_TABLE = "tdsnn_T_il"

# Every model's window clock: T_il from the table, the window W and the step in it (phase) from the integer
# step counter; P (the output's period) and p (the population's period) are the populations' parameters.
_SCHEDULE = (f"T_il = int({T_IL_TABLE}(t) + 0.5) : integer (shared)\n"
             "W = P*T_il + 1 : integer (shared)\n"
             "phase = t_in_timesteps % W : integer (shared)\n")


def _neuron_models() -> dict[str, m.NeuronModel]:
    # biosnn_idle: steps on which a population's threshold and operations change nothing (outside [S0, S2));
    # the standalone backends skip their neuron loops then (biosnn.backends.brian2_standalone.IDLE_LOOPS)
    return {
        "tdsnn_input": m.NeuronModel(
            f"fanout : 1 (constant)\nspikes : 1\n{_SCHEDULE}window = t_in_timesteps // W : integer (shared)\n"
            "tin = x_in(window*dt, i) : 1\nbiosnn_idle = int(phase >= T_il) : integer (shared)",
            threshold="biosnn_idle == 0 and phase >= tin - 0.5 and phase < tin + 0.5", reset="spikes += 1",
            description="TDSNN input: fires once, at step tin of the window (tin = min(ceil(L ln(1 + x)), "
                        "T_il - 1), row 'window' of x_in); idle from step T_il on; spikes: spikes so far"),
        "tdsnn_lif": m.NeuronModel(
            f"v : 1\nfired : 1\nb_in : 1 (constant)\ndecay : 1 (constant)\nfanout : 1 (constant)\n{_SCHEDULE}"
            "S0 = (p - 1)*T_il : integer (shared)\nS1 = p*T_il : integer (shared)\n"
            "S2 = (p + 1)*T_il : integer (shared)\nbiosnn_idle = int(phase < S0 or phase >= S2) : integer (shared)",
            threshold="biosnn_idle == 0 and phase >= S1 and phase < S2 and fired < 0.5 "
                      "and (v >= 0 or phase == S2 - 1)",
            reset="fired = 1",
            description="TDSNN LIF neuron: reset at S0, leak v*decay per step, inhibited outside [S1, S2), "
                        "threshold 0, fires once (forced at the last active step)"),
        "tdsnn_output": m.NeuronModel(
            f"v : 1\nwindows : 1\nb_in : 1 (constant)\ndecay : 1 (constant)\n{_SCHEDULE}"
            "S0 = (p - 1)*T_il : integer (shared)\nbiosnn_idle = int(phase < S0) : integer (shared)",
            threshold="biosnn_idle == 0 and phase == W - 1", reset="windows += 1",
            description="TDSNN output: reset at S0, leaky integration; every neuron 'spikes' at the last step of "
                        "the window, so that a spike monitor reads v there (windows: windows read so far)"),
        "tdsnn_pool": m.NeuronModel(
            f"v : 1\nfired : 1\nn_in : 1 (constant)\nfanout : 1 (constant)\n{_SCHEDULE}"
            "S0 = p*T_il : integer (shared)\nbiosnn_idle = int(phase < S0 or phase >= S0 + T_il) : integer (shared)",
            threshold="biosnn_idle == 0 and fired < 0.5 and v >= n_in - 0.5", reset="fired = 1",
            description="TDSNN max pooling: unit weights, threshold = number of inputs, no leak: "
                        "fires with the latest input; reset at S0, idle outside its period"),
        "tdsnn_tick": m.NeuronModel(
            f"fanout : 1\nticks : 1\n{_SCHEDULE}S0 = p*T_il + 1 : integer (shared)\n"
            "S2 = (p + 1)*T_il : integer (shared)\nbiosnn_idle = int(phase < S0 or phase >= S2) : integer (shared)",
            threshold="biosnn_idle == 0 and fanout > 0.5", reset="ticks += 1",
            description="Ticking neuron (Zhang et al. 2019): fires at active steps 1 .. T_il - 1 of its layer "
                        "(period p) while some neuron of the layer has not fired (fanout: neurons left; ticks: "
                        "ticks so far)"),
        "tdsnn_meter": m.NeuronModel(
            f"spk : 1\nops : 1\n{_SCHEDULE}biosnn_idle = int(phase != W - 1) : integer (shared)",
            threshold="biosnn_idle == 0", reset="spk = 0\nops = 0",
            description="spikes and operations per population and window; every neuron 'spikes' at the last "
                        "step of the window, so that a spike monitor reads the counts there, then resets them"),
    }


_SYNAPSE_MODELS = {
    "jump": m.SynapseModel("w : 1", on_pre="v_post += w", description="potential jump"),
    "untick": m.SynapseModel("", on_pre="fanout_post -= 1",
                             description="a spike of a hidden layer: one neuron fewer for its ticking neuron"),
    "count": m.SynapseModel("", on_pre="spk_post += 1\nops_post += fanout_pre",
                            description="counts spikes and fanout per spike (synaptic events, tick additions)"),
}


def _explicit(i, j) -> m.Explicit:
    return m.Explicit(ArrayValue(np.asarray(i, dtype=np.int64)), ArrayValue(np.asarray(j, dtype=np.int64)))


def tdsnn_network_spec(graph: LayerGraph, *, L: float, T_il: int, windows: int, name: str = "tdsnn",
                       x: np.ndarray | None = None) -> m.NetworkSpec:
    """Build the batched TDSNN spec of a traced chain network.

    Parameters
    ----------
    graph : LayerGraph
        Traced network with its trained weights (negated here for the hidden layers).
    L : float
        Leak constant (time steps): ``decay = exp(-1/L)`` per step.
    T_il : int
        Steps per inhibitory / active period.
    windows : int
        Sample windows simulated per run.
    name : str
        Spec name.
    x : ndarray, optional
        ``(windows, n_in)`` input spike steps (default zeros; pass real ones per
        run through ``overrides={"x_in": ...}``).

    Returns
    -------
    NetworkSpec
    """
    L, T_il = check_L(L), check_T_il(T_il)
    layout = tdsnn_layout(graph)
    W = window_steps(layout, T_il)
    P = layout[-1].period
    n_in = graph.input.size
    x = np.zeros((windows, n_in)) if x is None else np.asarray(x, dtype=np.float64).reshape(windows, n_in)
    slot_of = {s.layer: s for s in layout}
    d, w_tick = decay_factor(L), tick_weight(L, T_il)
    fanout = {s.population: np.zeros(graph[s.layer].size) for s in layout}
    pops: list[m.Population] = []
    projs: list[m.Projection] = []
    metered: list[tuple[str, int, int | None]] = []   # (population, size, projection order)

    def shape_of(layer):
        return layer.out_shape if len(layer.out_shape) == 3 else None

    def periods(p):
        return {"P": repr(P), "p": repr(p)}

    for s in layout:
        layer = graph[s.layer]
        n = layer.size
        kw = dict(name=s.population, size=n, shape=shape_of(layer), order=s.order)
        if s.role == "input":
            pops.append(m.Population(model="tdsnn_input", parameters=periods(0), **kw))
            metered.append((s.population, n, None))
            continue
        conns = layer_connections(layer)
        src, src_order = slot_of[layer.inputs[0]].population, slot_of[layer.inputs[0]].order
        fanout[src] += np.bincount(conns.i, minlength=fanout[src].size)
        if s.role == "pool":
            projs.append(m.Projection(f"{src}_{s.population}", src, s.population, "jump", _explicit(conns.i, conns.j),
                                      weights=ArrayValue(np.ones(len(conns.i))), order=src_order))
            # reset at the first step of its period (v*0, fired*0); the loop is skipped while idle
            reset = "int(biosnn_idle == 1 or phase != S0)"
            pops.append(m.Population(model="tdsnn_pool", parameters=periods(s.period),
                                     operations=[m.Operation(f"v = v*{reset}\nfired = fired*{reset}")],
                                     initial={"n_in": ArrayValue(np.bincount(conns.j, minlength=n).astype(float))},
                                     **kw))
            metered.append((s.population, n, None))
            continue
        sign = -1.0 if s.role == "lif" else 1.0
        connect, weights = weighted_connect(layer, conns, sign * np.asarray(conns.weights, dtype=np.float64),
                                            shaped=shape_of(layer) is not None
                                            and shape_of(graph[layer.inputs[0]]) is not None)
        projs.append(m.Projection(f"{src}_{s.population}", src, s.population, "jump", connect, weights=weights,
                                  order=src_order))
        bias = np.zeros(n)
        if layer.bias is not None:
            bias = np.asarray(layer.bias, dtype=np.float64)
            bias = np.repeat(bias, n // bias.size)
        initial = {"b_in": ArrayValue(sign * bias), "decay": ArrayValue(np.full(n, d))}
        # at S0, the first step of the inhibitory period: v = 0 (v*...*0) plus the bias; then v*decay per step
        # until S2; frozen while idle (before S0 v is not read, after S2 a hidden neuron has fired)
        leak = "v = v*(decay*(1 - biosnn_idle) + biosnn_idle)*int(phase != S0) + b_in*int(phase == S0)"
        if s.role == "output":
            pops.append(m.Population(model="tdsnn_output", parameters=periods(s.period), initial=initial,
                                     operations=[m.Operation(leak)], **kw))
            continue
        pops.append(m.Population(model="tdsnn_lif", parameters=periods(s.period), initial=initial,
                                 operations=[m.Operation(f"{leak}\nfired = fired*int(phase != S0)")], **kw))
        metered.append((s.population, n, None))
        tick = s.tick_population
        # fanout: the neurons of the layer that have not fired, n again at the window's first step
        pops.append(m.Population(tick, 1, "tdsnn_tick", order=s.order - 1, parameters=periods(s.period),
                                 operations=[m.Operation(f"fanout = fanout*int(phase != 0) + {n}*int(phase == 0)")]))
        projs.append(m.Projection(f"{tick}_{s.population}", tick, s.population, "jump",
                                  _explicit(np.zeros(n), np.arange(n)), weights=ArrayValue(np.full(n, w_tick)),
                                  order=s.order - 1))
        projs.append(m.Projection(f"{s.population}_{tick}", s.population, tick, "untick",
                                  _explicit(np.arange(n), np.zeros(n)), order=s.order))
        metered.append((tick, 1, s.order - 1))   # counted before this step's spikes lower fanout

    pops = [p if p.name not in fanout or p.model == "tdsnn_output"
            else replace(p, initial={**p.initial, "fanout": ArrayValue(fanout[p.name])}) for p in pops]
    pops.append(m.Population("meter", len(metered), "tdsnn_meter", parameters=periods(P)))
    for k, (pname, n, order) in enumerate(metered):
        projs.append(m.Projection(f"{pname}_meter", pname, "meter", "count",
                                  _explicit(np.arange(n), np.full(n, k)), order=order))
    out_pop = layout[-1].population
    layer_map = ", ".join(f"{s.population}={s.layer}" for s in layout)
    dt = f"{DT_MS!r}*ms"
    return m.NetworkSpec(
        name, populations=pops, projections=projs,
        monitors=[m.SpikeMonitor("meter", ("spk", "ops")), m.SpikeMonitor(out_pop, ("v",))],
        dt=dt, duration=f"{windows * W * DT_MS!r}*ms",
        neuron_models=_neuron_models(), synapse_models=_SYNAPSE_MODELS,
        timed_arrays=[m.TimedArraySpec("x_in", ArrayValue(x), dt),
                      m.TimedArraySpec(T_IL_TABLE, ArrayValue(np.array([float(T_il)])), dt)],
        description=f"TDSNN (reverse coding, Zhang et al. 2019) converted from a torch model: L={L!r}, "
                    f"T_il={T_il} steps per period, {W} steps per sample window, {windows} windows per run, "
                    f"w_tick={w_tick!r}. Layers: {layer_map}.")


def window_values(spikes, values, window: int, windows: int) -> np.ndarray:
    """Per-window values read by a spike monitor from a population that spikes once at the end of every window.

    Parameters
    ----------
    spikes : SpikeTrains
        The population's spikes (the ``meter`` and the output spike at the last step of every window).
    values : SpikeValues
        A variable recorded at those spikes.
    window : int
        Steps per window (``dt`` = :data:`~biosnn.codings.rate.spec.DT_MS` ms).
    windows : int
        Windows of the run.

    Returns
    -------
    ndarray (windows, spikes.size)
        Row ``w``: the values at the end of window ``w``.

    Raises
    ------
    BackendError
        If some neuron did not spike exactly once at the last step of every window.
    """
    from biosnn.errors import BackendError
    step = np.rint(np.asarray(spikes.times) / (DT_MS * 1e-3)).astype(np.int64)
    win, idx = step // window, np.asarray(spikes.indices)
    seen = np.zeros((windows, spikes.size), dtype=np.int64)
    ok = (step % window == window - 1) & (win < windows)
    np.add.at(seen, (win[ok], idx[ok]), 1)
    if not ok.all() or not (seen == 1).all():
        raise BackendError(f"expected one spike per neuron at the last step of each of {windows} windows of "
                           f"{window} steps, got {len(step)} spikes ({int((~ok).sum())} at other steps)")
    out = np.empty((windows, spikes.size))
    out[win, idx] = np.asarray(values.values)
    return out
