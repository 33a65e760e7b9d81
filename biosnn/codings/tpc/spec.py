"""A temporal-pattern-coded (TPC) network as a :class:`~biosnn.spec.NetworkSpec`.

The network computes the quantised ANN of a :class:`~biosnn.codings.tpc.reference.TPCPlan`
bit-serially.  Time is cut into *windows* of ``k`` steps (``k`` = ``plan.steps``
<= ``n`` = ``plan.bits``), marked by a clock: ``run_regularly`` operations with
``dt = k`` steps at the start of each window.  The layers form a pipeline:

* window ``w``: the input population emits sample ``w``'s input pattern, the
  stage at depth ``d`` emits sample ``w - d``'s pattern while it accumulates
  sample ``w - d + 1``; the output layer (depth ``D``) accumulates sample
  ``w - D + 1``.  A new sample enters every window (throughput one sample per
  ``k`` steps, latency ``D`` windows).
* Row ``w`` of the 2-D timed array ``x_in`` (shape ``(windows, n_in)``) is the
  input of sample ``w`` in code units (``x / Delta_input``).

Neurons (dimensionless, code units):

* every emitting neuron has a threshold ``theta`` that the clock
  sets to ``2**n`` and that halves at every step before the threshold test,
  so at step ``t`` of a window it is ``2**(n-1-t)``; a neuron spikes when
  ``r >= theta`` and then ``r -= theta`` (:func:`~biosnn.codings.tpc.reference.emit_pattern`);
* input: at the clock ``r = floor(x_in(t, i) + 1/2)``;
* linear / conv / avg-pool stage: incoming spikes add ``w * theta_pre`` to the
  accumulator ``v`` (the spike's binary weight ``2**(n-1-t)`` times the
  fixed-point weight); at the clock the accumulated code moves to the emitter,
  ``r = v + b`` (bias, the constant input of one window, with the rounding
  offset), and ``v = 0``;
* max-pool stage: each synapse adds ``theta_pre`` to its own accumulator
  ``acc`` (the prefix of its input's code) and raises the unit's ``v`` to
  ``acc`` when larger; the codes arrive MSB first, so after the window ``v``
  is the largest code of the pooling window (a bit-serial comparator); at the
  clock ``r = v``, ``v = 0``, ``acc = 0``;
* output: integrates like a linear stage; at the clock ``v_last = v + b``
  (the scores, monitored), ``v = 0``;
* a stage with several sources (a residual addition, a layer reading a
  ``torch.cat``) has one projection per source; the synapses from a source
  ``m`` stages shallower than the deepest delay its spikes by ``m`` whole
  windows (``m k`` steps), so every pattern of a sample arrives in the same
  window, at the step (and with the bit weight ``theta_pre``) it was sent.

Every emitting population sits in its own ``order`` (its depth), so within a
step its threshold, reset and spike propagation run in depth order; this does
not matter for the result (accumulation and emission use different
variables) but keeps the schedule deterministic.  A one-neuron-per-population
``meter`` counts spikes (``spk``) and synaptic operations (``ops``, spike x
fan-out) per window, as in :mod:`biosnn.codings.rate.spec`: the count of
the stage at depth ``d`` recorded at the end of window ``w`` belongs to
sample ``w - d``.
"""

from __future__ import annotations

import numpy as np

from biosnn.conversion.connect import weighted_connect
from biosnn.codings.rate.spec import DT_MS, layer_populations
from biosnn.codings.tpc.reference import TPCPlan
from biosnn.spec import model as m
from biosnn.spec.values import ArrayValue

__all__ = ["tpc_network_spec"]

# theta is per neuron (not shared): every backend, static projections included, reads theta_pre per spike
_EMIT = "r : 1\ntheta : 1\nfanout : 1 (constant)"


def _models(bits: int) -> tuple[dict, dict, str]:
    """Neuron and synapse models, and ``2**n`` as a literal."""
    top = repr(float(2 ** bits))
    emit = dict(threshold="r >= theta", reset="r -= theta")
    neurons = {
        "tpc_input": m.NeuronModel(_EMIT, **emit, description="input: loads floor(x + 1/2) at the clock and "
                                   "emits its binary digits, MSB first (threshold halving every step)"),
        "tpc_stage": m.NeuronModel("v : 1\nb : 1 (constant)\n" + _EMIT, **emit,
                                   description="accumulates weighted input patterns in v; at the clock emits "
                                               "the binary digits of v + b, MSB first"),
        "tpc_readout": m.NeuronModel("v : 1\nv_last : 1\nb : 1 (constant)",
                                     description="output: integrates input patterns; v_last = v + b at the clock"),
        "tpc_meter": m.NeuronModel("spk : 1\nops : 1\nspk_last : 1\nops_last : 1",
                                   description="spikes and synaptic operations per window of one population"),
    }
    synapses = {
        "tpc_pattern": m.SynapseModel("w : 1", on_pre="v_post += w * theta_pre",
                                      description="a spike at step t adds w * 2**(n-1-t)"),
        "tpc_max": m.SynapseModel("acc : 1", on_pre="acc += theta_pre\n"
                                                    "v_post = v_post + (acc - v_post) * int(acc > v_post)",
                                  description="bit-serial max: per-synapse code prefix, running max in v_post"),
        "tpc_meter": m.SynapseModel("", on_pre="spk_post += 1\nops_post += fanout_pre",
                                    description="counts spikes and synaptic operations"),
    }
    return neurons, synapses, top


def tpc_network_spec(plan: TPCPlan, *, windows: int, name: str = "tpc",
                     x: np.ndarray | None = None) -> m.NetworkSpec:
    """Build the pipelined TPC network of a plan (see the module docstring).

    Parameters
    ----------
    plan : TPCPlan
        Quantised network (:func:`biosnn.codings.tpc.reference.build_plan`).
    windows : int
        Windows simulated per run (the input rows of ``x_in``); the results of
        sample ``s`` are complete ``plan.depth`` windows after it entered.
    name : str
        Spec name.
    x : ndarray, optional
        ``(windows, n_in)`` inputs in code units (default zeros: pass real
        inputs per run through ``overrides={"x_in": ...}``).

    Returns
    -------
    NetworkSpec
        Populations ``input, L1, L2, ...`` (topological order) and ``meter``; the
        meter's ``spk_last``/``ops_last`` and the output's ``v_last`` are
        monitored at every clock tick.
    """
    neurons, synapses, top = _models(plan.bits)
    k = plan.steps
    window = f"{k * DT_MS!r}*ms"
    graph = plan.graph
    n_in = graph.input.size
    x = np.zeros((windows, n_in)) if x is None else np.asarray(x, dtype=np.float64).reshape(windows, n_in)
    pop_of = layer_populations(graph)
    halve = "theta = theta * 0.5"
    shape_of = {layer.name: (layer.out_shape if len(layer.out_shape) == 3 else None) for layer in graph.layers}

    populations = [m.Population("input", n_in, "tpc_input", shape=shape_of["input"], order=0, operations=[
        m.Operation(f"theta = {top}\nr = floor(x_in(t, i) + 0.5)", dt=window, when="start", order=1),
        m.Operation(halve, when="groups", order=0)],
        initial={"fanout": ArrayValue(plan.fanout("input").astype(np.float64))})]
    projections = []
    for stage in plan.stages:
        pname = pop_of[stage.name]
        bias = ArrayValue(np.asarray(stage.bias, dtype=np.float64))
        if stage.is_output:
            populations.append(m.Population(pname, stage.size, "tpc_readout", shape=shape_of[stage.name],
                                            order=stage.depth, initial={"b": bias}, operations=[
                                                m.Operation("v_last = v + b\nv = 0", dt=window)]))
        else:
            populations.append(m.Population(
                pname, stage.size, "tpc_stage", shape=shape_of[stage.name], order=stage.depth,
                initial={"b": bias, "fanout": ArrayValue(plan.fanout(stage.name).astype(np.float64))},
                operations=[m.Operation(f"theta = {top}\nr = v + b\nv = 0", dt=window),
                            m.Operation(halve, when="groups", order=10 * stage.depth)]))
        for si in stage.inputs:
            src = pop_of[si.source]
            # whole windows of delay keep the step within the window, so theta_pre at delivery is the bit weight
            delay = f"{si.delay * k * DT_MS!r}*ms" if si.delay else None
            if stage.op == "maxpool2d":
                connect = m.Explicit(ArrayValue(np.asarray(si.conns.i)), ArrayValue(np.asarray(si.conns.j)))
                projections.append(m.Projection(f"{src}_{pname}", src, pname, "tpc_max", connect,
                                                operations=[m.Operation("acc = 0", dt=window)],
                                                order=stage.depth - 1))
            else:
                connect, weights = weighted_connect(graph[si.layer], si.conns, si.conns.weights,
                                                    shaped=shape_of[stage.name] is not None
                                                    and shape_of[si.source] is not None)
                projections.append(m.Projection(f"{src}_{pname}{si.tag}", src, pname, "tpc_pattern", connect,
                                                weights=weights, delay=delay, order=stage.depth - 1))

    emitting = [p for p in populations if p.model != "tpc_readout"]
    populations.append(m.Population("meter", len(emitting), "tpc_meter", operations=[
        m.Operation("spk_last = spk\nops_last = ops\nspk = 0\nops = 0", dt=window)]))
    for col, pop in enumerate(emitting):
        projections.append(m.Projection(f"{pop.name}_meter", pop.name, "meter", "tpc_meter", m.Explicit(
            ArrayValue(np.arange(pop.size)), ArrayValue(np.full(pop.size, col)))))
    out_pop = pop_of[graph.output]
    layer_map = ", ".join(f"{p}={lname}" for lname, p in pop_of.items())
    return m.NetworkSpec(
        name, populations=populations, projections=projections,
        monitors=[m.StateMonitor("meter", ("spk_last", "ops_last"), dt=window, when="start", order=2),
                  m.StateMonitor(out_pop, ("v_last",), dt=window, when="start", order=2)],
        dt=f"{DT_MS!r}*ms", duration=f"{(windows * k + 1) * DT_MS!r}*ms",
        neuron_models=neurons, synapse_models=synapses,
        timed_arrays=[m.TimedArraySpec("x_in", ArrayValue(x), window)],
        description=f"Temporal-pattern-coded SNN converted from a torch model: {plan.bits}-bit codes, "
                    f"{k} steps per window, {plan.depth}-stage pipeline, {windows} windows per run. "
                    f"Layers: {layer_map}.")
