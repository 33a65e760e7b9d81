"""An STCSNN (spatio-temporal conversion blocks) as a :class:`~biosnn.spec.NetworkSpec`.

The network computes, step for step and with the same float64 operations, the
torch model of :mod:`biosnn.codings.stc.torch_model` (see its docstring for the
STEB / synapse / CAB equations).  One population per *stage*: the input, then
one per layer whose output passes a ReLU (a STEB) and the output layer.  A
population holds the CAB of its layer and the STEB that encodes the result:

* ``v`` starts every sample window at the (composed) bias ``b``;
* while the previous stage's STEB fires, each step's synaptic input ``I``
  (``I_post += w`` per spike) is accumulated as ``v += I * tc(t)``, where the
  timed array ``tc`` holds that stage's threshold ``theta_t`` of the step;
* then, during the stage's own ``T`` steps, the population is the STEB:
  spike when ``v >= th(t)``, ``v -= th(t)``, where ``th`` holds ``theta_t`` in
  the stage's steps and ``inf`` elsewhere (so it never fires outside them).

The synapses between two stages are the composition of every linear map in
between (average pooling, flatten, then the ``Conv2d``/``Linear``; BatchNorm
folded by tracing), so a spike of a STEB unit adds its composed weight directly
to ``I``; the composed bias initialises ``v``.  With ``first_layer="analog"``
the input units send their value once, at the window start
(``v_post += w * x_pre``), so the first layer's analog map is computed once
per sample; with ``"spiking"`` the input is a STEB itself (``v = x``).

A pipeline in time
------------------
A block's ``T`` steps start after the previous block's CAB has finished: stage
``k``'s STEB fires in phase ``k`` (steps ``k T ... (k+1) T - 1`` of the sample
window) while the next stage accumulates.  A sample window has
``n_steb * T`` steps (``n_steb`` STEBs, the input's included with
``first_layer="spiking"``); the output layer's CAB is complete at the end of
the window and is read (``v_last``) at the next window's start.  Samples run
one after the other (batching in time, as in :mod:`biosnn.codings.rate.spec`), with the
``x_in`` timed array, the ``meter`` population and the ``v_last`` readout that
:class:`~biosnn.conversion.snn.SNN` expects.

Within one step the stages run in order (``Population.order``): the spikes of
stage ``k`` reach stage ``k+1``'s ``I`` in the same step, and the accumulation
``v += I * tc(t)`` runs before stage ``k+1``'s threshold.

Max pooling is not a linear map of spikes; on CAB outputs it is possible in
torch but not built here (:func:`stc_plan` raises a
:class:`~biosnn.errors.ConversionError`): use average pooling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from biosnn import connectivity as cx
from biosnn.frontends.torch_graph import LayerGraph
from biosnn.codings.rate.spec import DT_MS, _fanout, layer_connections
from biosnn.codings.stc.torch_model import check_chain, check_stc_params, max_pooling_error, theta_table
from biosnn.errors import ConversionError
from biosnn.spec import model as m
from biosnn.spec.values import ArrayValue

__all__ = ["Stage", "STCPlan", "stc_plan", "affine_chain", "stc_network_spec"]

_AFFINE = ("linear", "conv2d")


@dataclass(frozen=True)
class Stage:
    """One population of the STCSNN.

    Attributes
    ----------
    layer : str
        The graph layer whose CAB output the population holds.
    source : str
        The previous stage's layer (``"input"`` for the first).
    chain : tuple of str
        Graph layers from ``source`` (exclusive) to ``layer`` (inclusive),
        composed into the stage's synapses.
    """

    layer: str
    source: str
    chain: tuple[str, ...]


@dataclass(frozen=True)
class STCPlan:
    """How a graph maps onto STC populations.

    Attributes
    ----------
    stages : tuple of Stage
        In order; the last one is the output layer (CAB only, no STEB).
    first_layer : str
        ``"analog"`` or ``"spiking"``.
    """

    stages: tuple[Stage, ...]
    first_layer: str

    @property
    def steb_layers(self) -> tuple[str, ...]:
        """Layers whose STEB fires, in firing order: the one at index ``k`` fires in phase ``k``."""
        first = ("input",) if self.first_layer == "spiking" else ()
        return first + tuple(s.layer for s in self.stages[:-1])

    @property
    def populations(self) -> dict[str, str]:
        """Layer name -> population name (``input``, then ``L1, L2, ...``)."""
        out = {"input": "input"}
        out.update({s.layer: f"L{k + 1}" for k, s in enumerate(self.stages)})
        return out

    def window_steps(self, T: int) -> int:
        """Steps of one sample window: ``T`` per STEB."""
        return len(self.steb_layers) * int(T)


def stc_plan(graph: LayerGraph, first_layer: str = "analog") -> STCPlan:
    """Split a traced graph into STC stages.

    A layer with a ReLU ends a stage when the maps since the previous stage
    include a ``linear``/``conv2d`` layer (or, with an analog first layer, it
    is the first ReLU): its population holds that CAB and its STEB encodes
    the ReLU.  A ReLU after pooling of spikes is a no-op.  The output layer
    ends the last stage.

    Raises
    ------
    biosnn.errors.ConversionError
        Residual additions or branches, max pooling, a ReLU on the output, an
        output stage without a linear/conv layer, or no hidden ReLU at all.
    """
    check_stc_params(first_layer=first_layer)
    check_chain(graph)
    stages: list[Stage] = []
    source, chain = "input", []
    for layer in graph.layers[1:]:
        if layer.op == "maxpool2d":
            raise max_pooling_error(f"layer '{layer.name}' ({layer.module})")
        chain.append(layer.name)
        affine = any(graph[c].op in _AFFINE for c in chain)
        if layer.name == graph.output:
            if layer.relu or not affine:
                raise ConversionError(
                    f"the output layer '{layer.name}' ({layer.module}) must be a Linear/Conv2d without ReLU (the "
                    "last CAB gives the scores). Fix: end the model with nn.Linear.")
            stages.append(Stage(layer.name, source, tuple(chain)))
        elif layer.relu and (affine or (source == "input" and first_layer == "analog")):
            stages.append(Stage(layer.name, source, tuple(chain)))
            source, chain = layer.name, []
    if len(stages) < 2 and first_layer == "analog":
        raise ConversionError("the model has no ReLU between two Conv2d/Linear layers, so there is nothing to "
                              "encode in spikes. Fix: use a network with at least one hidden ReLU layer.")
    return STCPlan(tuple(stages), first_layer)


def _layer_bias(layer) -> np.ndarray:
    if layer.bias is None:
        return np.zeros(layer.size)
    bias = np.asarray(layer.bias, dtype=np.float64)
    return np.repeat(bias, int(np.prod(layer.out_shape[1:]))) if layer.op == "conv2d" else bias


def affine_chain(graph: LayerGraph, chain) -> tuple[cx.Connections, np.ndarray]:
    """Compose the affine maps of consecutive layers into one set of synapses and a bias.

    Parameters
    ----------
    graph : LayerGraph
    chain : sequence of str
        Layer names in forward order (``linear``, ``conv2d``, ``avgpool2d``).

    Returns
    -------
    connections : Connections
        ``M = A_n ... A_1`` as synapses from the chain's input to its output
        (float64 products of the layers' weights).
    bias : numpy.ndarray
        ``c = A_n (... (A_1 0 + b_1) ...) + b_n``, one per output unit.
    """
    matrix, bias = None, np.zeros(graph[chain[0]].in_size)
    for name in chain:
        layer = graph[name]
        conns = layer_connections(layer)
        a = sp.csr_matrix((conns.weights, (conns.j, conns.i)), shape=(conns.n_post, conns.n_pre))
        bias = a @ bias + _layer_bias(layer)
        matrix = a if matrix is None else a @ matrix
    coo = matrix.tocoo()
    return cx.explicit(coo.col, coo.row, coo.shape[1], coo.shape[0], weights=coo.data), bias


def _phase_table(name: str, theta: np.ndarray, phase: int, window: int, windows: int,
                 outside: float) -> m.TimedArraySpec:
    """Timed array ``name``: ``theta`` at steps ``phase*T ... (phase+1)*T - 1`` of every window,
    ``outside`` elsewhere (and at the one extra step after the last window)."""
    T = len(theta)
    one = np.full(window, outside)
    one[phase * T:(phase + 1) * T] = theta
    return m.TimedArraySpec(name, ArrayValue(np.concatenate([np.tile(one, windows), [outside]])), f"{DT_MS!r}*ms")


def _meter(metered: list[tuple[str, int]], window: str) -> tuple[m.Population, list[m.Projection]]:
    """One neuron per metered population counting its spikes and synaptic operations per window."""
    model = m.NeuronModel("spk : 1\nops : 1\nspk_last : 1\nops_last : 1")
    pop = m.Population("meter", len(metered), model, operations=[
        m.Operation("spk_last = spk\nops_last = ops\nspk = 0\nops = 0", dt=window)])
    projections = [m.Projection(f"{name}_meter", name, "meter", "meter",
                                m.Explicit(ArrayValue(np.arange(size)), ArrayValue(np.full(size, col))))
                   for col, (name, size) in enumerate(metered)]
    return pop, projections


_SYNAPSE_MODELS = {
    "load": m.SynapseModel("w : 1", on_pre="v_post += w * x_pre", description="analog input, sent once"),
    "spike": m.SynapseModel("w : 1", on_pre="I_post += w", description="synaptic current of one spike"),
    "meter": m.SynapseModel("", on_pre="spk_post += 1\nops_post += fanout_pre",
                            description="counts spikes and synaptic operations per stage"),
}


def stc_network_spec(graph: LayerGraph, *, T: int, theta0: float, tau: float, first_layer: str = "analog",
                     windows: int = 1, name: str = "stc", x: np.ndarray | None = None) -> m.NetworkSpec:
    """Build the batched STCSNN spec of a traced graph.

    Parameters
    ----------
    graph : LayerGraph
        Traced network (BatchNorm folded), a chain of layers.
    T : int
        Time steps per block.
    theta0, tau : float
        Threshold ``theta_t = theta0 exp(-t / tau)``, ``tau`` in steps.
    first_layer : {"analog", "spiking"}
        Analog first layer (the input sends its values once) or STEB-encoded input.
    windows : int
        Sample windows simulated per run.
    name : str
        Spec name.
    x : ndarray, optional
        ``(windows, n_in)`` inputs (default zeros; pass real ones per run with
        ``overrides={"x_in": ...}``).

    Returns
    -------
    NetworkSpec
        Populations ``input``, ``L1 ... Ln`` (stages in order, see
        :attr:`STCPlan.populations`) and ``meter``; time step 1 ms (one step),
        ``windows * window_steps + 1`` steps.
    """
    check_stc_params(T, theta0, tau, first_layer)
    if isinstance(windows, bool) or not isinstance(windows, (int, np.integer)) or windows < 1:
        raise ConversionError(f"windows must be a positive integer, got {windows!r}")
    plan = stc_plan(graph, first_layer)
    theta = theta_table(T, theta0, tau)
    W = plan.window_steps(T)
    window = f"{W * DT_MS!r}*ms"
    n_in = graph.layers[0].size
    x = np.zeros((windows, n_in)) if x is None else np.asarray(x, dtype=np.float64).reshape(windows, n_in)
    pops = plan.populations
    phase = {layer: k for k, layer in enumerate(plan.steb_layers)}
    tables = [m.TimedArraySpec("x_in", ArrayValue(x), window)]

    def steb_model(layer: str, equations: str) -> m.NeuronModel:
        th = f"th_{pops[layer]}"
        tables.append(_phase_table(th, theta, phase[layer], W, windows, np.inf))
        return m.NeuronModel(equations, threshold=f"v >= {th}(t)", reset=f"v -= {th}(t)",
                             description=f"STEB of {layer}: decaying threshold in phase {phase[layer]}, reset "
                                         "by subtraction")

    if first_layer == "analog":
        input_model = m.NeuronModel("x : 1\npending : 1\nfanout : 1 (constant)", threshold="pending > 0.5",
                                    reset="pending = 0", description="sends its value once per window")
        load = "x = x_in(t, i)\npending = int(x != 0)"
    else:
        input_model, load = steb_model("input", "v : 1\nfanout : 1 (constant)"), "v = x_in(t, i)"
    specs = [dict(name="input", size=n_in, model=input_model, order=0,
                  operations=[m.Operation(load, dt=window, order=1)], initial={})]
    projections = []
    for k, stage in enumerate(plan.stages, start=1):
        pname, layer, src = pops[stage.layer], graph[stage.layer], pops[stage.source]
        conns, bias = affine_chain(graph, stage.chain)
        is_out = stage.layer == graph.output
        ops = [m.Operation("v_last = v\nv = b\nI = 0" if is_out else "v = b\nI = 0", dt=window)]
        if stage.source in phase:  # spiking source: its CAB accumulates theta-weighted currents
            tables.append(_phase_table(f"tc_{pname}", theta, phase[stage.source], W, windows, 0.0))
            ops.append(m.Operation(f"v += I * tc_{pname}(t)\nI = 0", when="groups", order=10 * k))
        eqs = "v : 1\nI : 1\nb : 1 (constant)"
        model = (m.NeuronModel(eqs + "\nv_last : 1", description="output CAB (no STEB)") if is_out
                 else steb_model(stage.layer, eqs + "\nfanout : 1 (constant)"))
        specs.append(dict(name=pname, size=layer.size, model=model, order=k, operations=ops,
                          initial={"b": ArrayValue(bias)}))
        projections.append(m.Projection(f"{src}_{pname}", src, pname, "spike" if stage.source in phase else "load",
                                        m.Explicit(ArrayValue(conns.i), ArrayValue(conns.j)),
                                        weights=ArrayValue(conns.weights), order=k - 1))
        source = next(kw for kw in specs if kw["name"] == src)
        source["initial"]["fanout"] = ArrayValue(_fanout([(0, conns)], source["size"]))

    shapes = {"input": graph.layers[0].out_shape, **{pops[s.layer]: graph[s.layer].out_shape for s in plan.stages}}
    populations = [m.Population(**kw, shape=shapes[kw["name"]] if len(shapes[kw["name"]]) == 3 else None)
                   for kw in specs]
    meter, meter_projections = _meter([(kw["name"], kw["size"]) for kw in specs if "fanout" in kw["initial"]],
                                      window)
    monitors = [m.StateMonitor("meter", ("spk_last", "ops_last"), dt=window, when="start", order=2),
                m.StateMonitor(pops[graph.output], ("v_last",), dt=window, when="start", order=2)]
    layer_map = ", ".join(f"{p}={layer}" for layer, p in pops.items())
    return m.NetworkSpec(
        name, populations=populations + [meter], projections=projections + meter_projections, monitors=monitors,
        dt=f"{DT_MS!r}*ms", duration=f"{(windows * W + 1) * DT_MS!r}*ms", synapse_models=_SYNAPSE_MODELS,
        timed_arrays=tables,
        description=f"STCSNN (spatio-temporal conversion blocks): T={T} steps per block, theta0={theta0!r}, "
                    f"tau={tau!r} steps, {first_layer} first layer, {W} steps per sample window, {windows} "
                    f"windows per run. Layers: {layer_map}.")
