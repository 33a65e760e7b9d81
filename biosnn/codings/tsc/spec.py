"""A Temporal-Switch-Coded (TSC) converted network as a :class:`~biosnn.spec.NetworkSpec`.

The discrete semantics are defined in :mod:`biosnn.codings.tsc.reference`;
this module lays them out for Brian2 in the conventions of
:mod:`biosnn.codings.rate.spec` (batching in time: one sample per window
of ``W`` steps, inputs as rows of a 2-D timed array ``x_in``, state reset at
each window start, a ``meter`` population counting spikes and synaptic
events per layer, the output potential handed to ``v_last``).

Every population knows its window-local step ``n = t_in_timesteps % n_win``
and the steps of its period (constants ``n_on``, ``n_int0``, ``n_int1``):

* input: at the window start ``k = q(x * q_max)``; spikes at ``n = 0`` (on)
  and ``n = k`` (off) when ``k >= 1``;
* TSC neuron: ``v = vb`` (bias times T) at the window start; each step,
  after the incoming spikes, ``v += I`` while ``n_int0 <= n < n_on``; at
  ``n = n_on``: ``k = q(v)`` and spikes at ``n_on`` and ``n_on + k``;
* readout: integrates while ``n_int0 <= n < n_int1``, no spikes; ``v_last = v``
  at the next window start;
* max-pool gate: ``cnt`` counts its inputs that are on; spikes when
  ``cnt > 0`` changes.

Since ``0 <= k <= q_max``, a population can fire only in a window-local
step range (``n <= q_max``, ``n_on <= n <= n_on + q_max``), and its
per-step operation changes ``v`` and ``k`` only while it integrates or at
``n_on``.  Outside ``n_busy0 <= n <= n_busy1`` (the union of those ranges:
most steps, a window has a period per layer) the shared subexpression
``biosnn_idle`` is 1, and it gates the threshold and the operation, which
then leave every variable as it is; on the standalone backends the neuron
loops of those code objects then run over no neuron
(:data:`biosnn.backends.brian2_standalone.IDLE_LOOPS`).

A spike carries its kind in the presynaptic variable ``sgn`` (+1 on, -1
off; set by the reset, which Brian2 runs before the spike is propagated):
a switched synapse does ``I_post += w * sgn_pre``, a gate synapse
``cnt_post += sgn_pre``.  All populations share one schedule slot in
topological order (``Population.order``), so a spike reaches its targets
within its own step, as in the reference.
"""

from __future__ import annotations

import numpy as np

from biosnn.frontends.torch_graph import LayerGraph
from biosnn.conversion.connect import weighted_connect
from biosnn.codings.rate.spec import (DT_MS, METER_SYNAPSE, _fanout, layer_connections,
                                         layer_populations, meter_parts, synaptic_inputs)
from biosnn.codings.tsc.reference import ROUNDINGS, tsc_schedule
from biosnn.errors import ConversionError
from biosnn.spec import model as m
from biosnn.spec.values import ArrayValue

__all__ = ["tsc_network_spec"]

_STEP = "(t_in_timesteps % n_win)"


def _quantizer(expr: str, rounding: str) -> str:
    inner = f"{expr} + 0.5" if rounding == "round" else expr
    return f"clip(floor({inner}), 0, q_max)"


def _models() -> tuple[dict, dict]:
    step = _STEP
    idle = f"biosnn_idle = int({step} < n_busy0 or {step} > n_busy1) : integer (shared)"
    neurons = {
        "tsc_input": m.NeuronModel(
            f"x : 1\nk : 1\nsgn : 1\nfanout : 1 (constant)\n{idle}",
            threshold=f"biosnn_idle == 0 and {step} <= q_max and k > 0.5 and ({step} == 0 or {step} == k)",
            reset=f"sgn = 1 - 2 * int({step} > 0)",
            description="TSC input: value x sent as an on spike at step 0 and an off spike k = q(x T) steps later"),
        "tsc_neuron": m.NeuronModel(
            f"v : 1\nI : 1\nk : 1\nsgn : 1\nvb : 1 (constant)\nfanout : 1 (constant)\n{idle}",
            threshold=f"biosnn_idle == 0 and {step} >= n_on and {step} <= n_on + q_max and k > 0.5 "
                      f"and ({step} == n_on or {step} == n_on + k)",
            reset=f"sgn = 1 - 2 * int({step} > n_on)",
            description="TSC neuron: integrates its switched current, then sends k = q(v) as an on/off pair"),
        "tsc_readout": m.NeuronModel(
            f"v : 1\nI : 1\nv_last : 1\nvb : 1 (constant)\n{idle}",
            description="integrating TSC readout (no spikes)"),
        "tsc_gate": m.NeuronModel(
            "cnt : 1\nis_on : 1\nsgn : 1\nfanout : 1 (constant)",
            threshold="abs(int(cnt > 0.5) - is_on) > 0.5",
            reset="is_on = int(cnt > 0.5)\nsgn = 2 * is_on - 1",
            description="TSC max-pool gate: on while any input is on"),
    }
    synapses = {
        "switch": m.SynapseModel("w : 1", on_pre="I_post += w * sgn_pre",
                                 description="switched synapse: on spike adds w to the current, off subtracts it"),
        "gate_count": m.SynapseModel("", on_pre="cnt_post += sgn_pre",
                                     description="counts the gate's inputs that are on"),
        "meter": METER_SYNAPSE,
    }
    return neurons, synapses


def tsc_network_spec(graph: LayerGraph, *, T: int, windows: int, rounding: str = "round",
                     name: str = "tsc", x: np.ndarray | None = None,
                     monitor_spikes: bool = False) -> m.NetworkSpec:
    """Build the batched TSC spec of a normalised graph.

    Parameters
    ----------
    graph : LayerGraph
        Normalised network (values of every layer mostly in ``[0, 1]``).
    T : int
        Steps per period (quantisation levels per value).
    windows : int
        Sample windows simulated per run.
    rounding : {"round", "floor"}
        Quantiser (:func:`biosnn.codings.tsc.reference.quantize`).
    name : str
        Spec name.
    x : ndarray, optional
        ``(windows, n_in)`` inputs already divided by ``graph.input_scale``
        (default zeros; pass real inputs per run with ``overrides={"x_in": ...}``).
    monitor_spikes : bool
        Also record the spikes of every spiking population (for checks
        against :func:`~biosnn.codings.tsc.reference.simulate_tsc`).

    Returns
    -------
    NetworkSpec
        Populations ``input``, ``L1, L2, ...`` (as
        :func:`~biosnn.codings.rate.spec.layer_populations`) and ``meter``.
    """
    if rounding not in ROUNDINGS:
        raise ConversionError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    if isinstance(windows, bool) or not isinstance(windows, (int, np.integer)) or windows < 1:
        raise ConversionError(f"windows must be a positive integer, got {windows!r}")
    sched = tsc_schedule(graph, T)
    T, W = sched.T, sched.window
    window = f"{W * DT_MS!r}*ms"
    n_in = graph.input.size
    x = np.zeros((windows, n_in)) if x is None else np.asarray(x, dtype=np.float64).reshape(windows, n_in)
    pop_of = layer_populations(graph)
    order_of = {lname: 0 if p == "input" else int(p[1:]) for lname, p in pop_of.items()}
    neuron_models, synapse_models = _models()

    populations, projections, out_conns, metered = [], [], {}, []
    for layer in graph.layers:
        role = sched.roles[layer.name]
        if role == "virtual":
            continue
        pname, order = pop_of[layer.name], order_of[layer.name]
        shape = layer.out_shape if len(layer.out_shape) == 3 else None
        kw = dict(name=pname, size=layer.size, shape=shape, order=order, parameters={})
        initial, ops = {}, []
        if role == "input":
            model = "tsc_input"
            kw["parameters"] = {"n_win": repr(W), "q_max": repr(T), "n_busy0": "0", "n_busy1": repr(T)}
            ops = [m.Operation("x = x_in(t, i)\nk = " + _quantizer("x * q_max", rounding), dt=window, order=1)]
        elif role == "gate":
            model = "tsc_gate"
            ops = [m.Operation("cnt = 0\nis_on = 0", dt=window)]
            src_pop, conns = pop_of[sched.sources[layer.name][0]], layer_connections(layer)
            projections.append(m.Projection(f"{src_pop}_{pname}", src_pop, pname, "gate_count",
                                            m.Explicit(ArrayValue(conns.i), ArrayValue(conns.j)),
                                            order=order_of[sched.sources[layer.name][0]]))
            out_conns.setdefault(src_pop, []).append((0, conns))
        else:
            inputs, bias = synaptic_inputs(graph, layer.name, sched.roles)
            start, stop = sched.integrate[layer.name]
            kw["parameters"] = {"n_win": repr(W), "n_int0": repr(start), "n_int1": repr(stop),
                                "n_busy0": repr(start), "n_busy1": repr(stop - 1)}
            initial["vb"] = ArrayValue(T * bias)
            integrate = f"v += I * (int({_STEP} >= n_int0 and {_STEP} < n_int1) * (1 - biosnn_idle))"
            if role == "readout":
                model = "tsc_readout"
                ops = [m.Operation("v_last = v\nv = vb\nI = 0", dt=window),
                       m.Operation(integrate, when="groups", order=10 * order)]
            else:
                model = "tsc_neuron"
                n_on = sched.on_step(layer.name)
                kw["parameters"].update(n_on=repr(n_on), q_max=repr(T), n_busy0=repr(min(start, n_on)),
                                        n_busy1=repr(max(stop - 1, n_on + T)))
                ops = [m.Operation("v = vb\nI = 0\nk = 0", dt=window),
                       m.Operation(f"{integrate}\nk += int({_STEP} == n_on) * " + _quantizer("v", rounding),
                                   when="groups", order=10 * order)]
            for si in inputs:
                src_pop = pop_of[si.source]
                connect, weights = weighted_connect(
                    si.layer, si.conns, np.asarray(si.conns.weights, dtype=np.float64) * si.scale,
                    shaped=shape is not None and len(graph[si.source].out_shape) == 3)
                projections.append(m.Projection(f"{src_pop}_{pname}{si.tag}", src_pop, pname, "switch", connect,
                                                weights=weights, order=order_of[si.source]))
                out_conns.setdefault(src_pop, []).append((0, si.conns))
        if role != "readout":
            metered.append((pname, layer.size))
        populations.append(dict(kw, model=model, operations=ops, initial=initial))

    pops = []
    for kw in populations:
        if kw["model"] != "tsc_readout":
            kw["initial"]["fanout"] = ArrayValue(_fanout(out_conns.get(kw["name"], []), kw["size"]))
        pops.append(m.Population(**kw))
    meter, meter_projs, meter_monitor = meter_parts(metered, window)
    out_pop = pop_of[graph.output]
    monitors = [meter_monitor, m.StateMonitor(out_pop, ("v_last",), dt=window, when="start", order=2)]
    if monitor_spikes:
        monitors += [m.SpikeMonitor(p) for p, _ in metered]
    layer_map = ", ".join(f"{p}={lname}" for lname, p in pop_of.items())
    return m.NetworkSpec(
        name, populations=pops + [meter], projections=projections + meter_projs, monitors=monitors,
        dt=f"{DT_MS!r}*ms", duration=f"{(windows * W + 1) * DT_MS!r}*ms",
        neuron_models=neuron_models, synapse_models=synapse_models,
        timed_arrays=[m.TimedArraySpec("x_in", ArrayValue(x), window)],
        description=f"Temporal-switch-coded SNN converted from a torch model: T={T} steps per period, "
                    f"{W} steps per sample window, {windows} windows per run, rounding {rounding}. "
                    f"Layers: {layer_map}.")
