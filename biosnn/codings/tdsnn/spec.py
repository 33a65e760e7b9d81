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
pipeline of the paper's Fig. 3; samples do not overlap).  Each population
knows where it is in the window through ``phase = t_in_timesteps % W``.

Within a step: every LIF population decays (``v = v*decay``, schedule slot
``start``; the bias, an input of G-value 1, is added at the first step of the
inhibitory period; outside ``[S0, S2)``, the inhibitory and active periods,
``v`` is left as it is: it is 0 before ``S0`` and no longer read after
``S2``, and the standalone backends skip the layer's neuron loops there,
:data:`biosnn.backends.brian2_standalone.IDLE_LOOPS`); then, layer by layer in topological order (slot
``groups``, :attr:`~biosnn.spec.model.Population.order`), incoming spikes and
ticks are added and thresholds tested, so a spike crosses a max-pool layer in
the step it was emitted, like in the reference.

Populations
-----------
* ``input``: loads its spike step ``tin`` from the 2-D timed array ``x_in``
  (one row per window, computed by
  :func:`~biosnn.codings.tdsnn.reference.input_steps`, at most ``T_il - 1``)
  and fires once at ``phase == tin`` (not at all if ``tin >= T_il``);
* ``L1, L2, ...`` in topological order: hidden weighted layers (model
  ``tdsnn_lif``: leak ``decay``, threshold 0 in their active period, a flag
  ``fired`` so that each neuron spikes once, a forced spike at the last
  active step), max-pool layers (``tdsnn_pool``: unit weights, threshold = the
  window's number of inputs, no leak) and the output (``tdsnn_output``:
  integrates, ``v_last = v`` at the next window start, monitored);
* ``T<k>``: the ticking neuron of hidden layer ``L<k>`` (the library model
  :func:`biosnn.models.neurons.ticking` with per-window ``t_start``/``t_stop``):
  fires at active steps ``1 .. T_il - 1`` of ``L<k>`` while some neuron of
  ``L<k>`` has not fired (``fanout``, decremented by every spike of ``L<k>``);
  each tick adds ``w_tick`` (eq. 9) to every neuron of ``L<k>``;
* ``meter``: one neuron per spiking population (input, hidden, max-pool,
  ticking) counting spikes and ``fanout`` per spike per window, as in the
  rate-coded network: for a ticking neuron ``fanout`` is the number of
  neurons the tick still had to update, so its ``ops`` are the tick additions.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from biosnn.frontends.torch_graph import LayerGraph
from biosnn.conversion.connect import weighted_connect
from biosnn.codings.rate.spec import DT_MS, layer_connections
from biosnn.codings.tdsnn.reference import (check_L, check_T_il, decay_factor, tdsnn_roles,
                                               tick_weight)
from biosnn.models.neurons import ticking
from biosnn.spec import model as m
from biosnn.spec.values import ArrayValue

__all__ = ["Slot", "tdsnn_layout", "window_steps", "tdsnn_network_spec"]


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


_PHASE = "phase = t_in_timesteps % {W} : integer"
#: Steps on which a layer's per-neuron code cannot change anything (the standalone backends skip its neuron
#: loops then: :data:`biosnn.backends.brian2_standalone.IDLE_LOOPS`).
_IDLE = "biosnn_idle = int(t_in_timesteps % {W} < S0 or t_in_timesteps % {W} >= S2) : integer (shared)"


def _neuron_models(W: int) -> dict[str, m.NeuronModel]:
    phase, idle = _PHASE.format(W=W), _IDLE.format(W=W)
    tick = ticking()
    return {
        "tdsnn_input": m.NeuronModel(
            f"tin : 1\nfired : 1\nfanout : 1 (constant)\n{phase}\n{idle}",
            threshold="biosnn_idle == 0 and fired < 0.5 and phase >= tin - 0.5", reset="fired = 1",
            description="TDSNN input: fires once, at step tin of the window (tin = min(ceil(L ln(1 + x)), "
                        "T_il - 1); idle from step S2 = T_il on)"),
        # biosnn_idle outside [S0, S2): the threshold and the leak change nothing, and the standalone backends
        # skip their neuron loops (biosnn.backends.brian2_standalone.IDLE_LOOPS)
        "tdsnn_lif": m.NeuronModel(
            f"v : 1\nfired : 1\nb_in : 1 (constant)\ndecay : 1 (constant)\nfanout : 1 (constant)\n{phase}\n"
            f"{idle}",
            threshold="biosnn_idle == 0 and phase >= S1 and phase < S2 and fired < 0.5 "
                      "and (v >= 0 or phase == S2 - 1)",
            reset="fired = 1",
            description="TDSNN LIF neuron: leak v*decay per step, inhibited outside [S1, S2), threshold 0, "
                        "fires once (forced at the last active step)"),
        "tdsnn_output": m.NeuronModel(
            f"v : 1\nv_last : 1\nb_in : 1 (constant)\ndecay : 1 (constant)\n{phase}\n{idle}",
            description="TDSNN output: leaky integration, no threshold; v_last = v at the next window start"),
        "tdsnn_pool": m.NeuronModel(
            "v : 1\nfired : 1\nn_in : 1 (constant)\nfanout : 1 (constant)",
            threshold="fired < 0.5 and v >= n_in - 0.5", reset="fired = 1",
            description="TDSNN max pooling: unit weights, threshold = number of inputs, no leak: "
                        "fires with the latest input"),
        "tdsnn_tick": replace(
            tick, equations="t_start : second\nt_stop : second\nfanout : 1\nticks : 1",
            threshold=f"({tick.threshold}) and fanout > 0.5", reset="ticks += 1", parameters={},
            description="Ticking neuron (Zhang et al. 2019) with per-window t_start/t_stop; stops when "
                        "every neuron of its layer has fired (fanout: neurons left; ticks: ticks so far)"),
        "tdsnn_meter": m.NeuronModel("spk : 1\nops : 1\nspk_last : 1\nops_last : 1",
                                     description="spikes and operations per population and window"),
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
    window = f"{W * DT_MS!r}*ms"
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

    def reset(code):
        return m.Operation(code, dt=window, when="start", order=0)

    for s in layout:
        layer = graph[s.layer]
        n = layer.size
        kw = dict(name=s.population, size=n, shape=shape_of(layer), order=s.order)
        if s.role == "input":
            pops.append(m.Population(model="tdsnn_input", parameters={"S0": "0", "S2": repr(T_il)},
                                     operations=[reset("tin = x_in(t, i)\nfired = 0")], **kw))
            metered.append((s.population, n, None))
            continue
        conns = layer_connections(layer)
        src, src_order = slot_of[layer.inputs[0]].population, slot_of[layer.inputs[0]].order
        fanout[src] += np.bincount(conns.i, minlength=fanout[src].size)
        if s.role == "pool":
            projs.append(m.Projection(f"{src}_{s.population}", src, s.population, "jump", _explicit(conns.i, conns.j),
                                      weights=ArrayValue(np.ones(len(conns.i))), order=src_order))
            pops.append(m.Population(model="tdsnn_pool", operations=[reset("v = 0\nfired = 0")],
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
        S0, S1 = (s.period - 1) * T_il, s.period * T_il
        initial = {"b_in": ArrayValue(sign * bias), "decay": ArrayValue(np.full(n, d))}
        # frozen while idle (before S0 v is 0; after S2 a hidden neuron has fired and its v is not read)
        leak = m.Operation("v = v*(decay*(1 - biosnn_idle) + biosnn_idle) + b_in*int(phase == S0)",
                           when="start", order=1)
        if s.role == "output":
            pops.append(m.Population(model="tdsnn_output", parameters={"S0": repr(S0), "S2": repr(W)},
                                     initial=initial,
                                     operations=[reset("v_last = v\nv = 0"), leak], **kw))
            continue
        pops.append(m.Population(model="tdsnn_lif", parameters={"S0": repr(S0), "S1": repr(S1),
                                                                "S2": repr(S1 + T_il)},
                                 initial=initial, operations=[reset("v = 0\nfired = 0"), leak], **kw))
        metered.append((s.population, n, None))
        tick = s.tick_population
        pops.append(m.Population(tick, 1, "tdsnn_tick", order=s.order - 1, operations=[reset(
            f"t_start = t + {S1 + 1}*dt\nt_stop = t + {S1 + T_il}*dt\nfanout = {n}\nticks = 0")]))
        projs.append(m.Projection(f"{tick}_{s.population}", tick, s.population, "jump",
                                  _explicit(np.zeros(n), np.arange(n)), weights=ArrayValue(np.full(n, w_tick)),
                                  order=s.order - 1))
        projs.append(m.Projection(f"{s.population}_{tick}", s.population, tick, "untick",
                                  _explicit(np.arange(n), np.zeros(n)), order=s.order))
        metered.append((tick, 1, s.order - 1))   # counted before this step's spikes lower fanout

    pops = [p if p.name not in fanout or p.model == "tdsnn_output"
            else replace(p, initial={**p.initial, "fanout": ArrayValue(fanout[p.name])}) for p in pops]
    pops.append(m.Population("meter", len(metered), "tdsnn_meter", operations=[
        reset("spk_last = spk\nops_last = ops\nspk = 0\nops = 0")]))
    for k, (pname, n, order) in enumerate(metered):
        projs.append(m.Projection(f"{pname}_meter", pname, "meter", "count",
                                  _explicit(np.arange(n), np.full(n, k)), order=order))
    out_pop = layout[-1].population
    layer_map = ", ".join(f"{s.population}={s.layer}" for s in layout)
    return m.NetworkSpec(
        name, populations=pops, projections=projs,
        monitors=[m.StateMonitor("meter", ("spk_last", "ops_last"), dt=window, when="start", order=2),
                  m.StateMonitor(out_pop, ("v_last",), dt=window, when="start", order=2)],
        dt=f"{DT_MS!r}*ms", duration=f"{(windows * W + 1) * DT_MS!r}*ms",
        neuron_models=_neuron_models(W), synapse_models=_SYNAPSE_MODELS,
        timed_arrays=[m.TimedArraySpec("x_in", ArrayValue(x), window)],
        description=f"TDSNN (reverse coding, Zhang et al. 2019) converted from a torch model: L={L!r}, "
                    f"T_il={T_il} steps per period, {W} steps per sample window, {windows} windows per run, "
                    f"w_tick={w_tick!r}. Layers: {layer_map}.")
