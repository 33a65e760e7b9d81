"""Converted networks -> NIR: the rate-coded SNN of :func:`biosnn.convert` as a NIR graph.

A rate-coded layer is an integrate-and-fire population (``v += W s + b`` per step, a spike when
``v >= theta``, then ``v -= theta``; all layers updated in order within one step), which is NIR's
``IF`` node (``dv/dt = r I``, ``r = 1/dt``) behind the layer's static map (``Affine``, ``Linear``,
``Conv2d``, ``AvgPool2d``, ``Flatten`` before a linear layer fed by a (C, H, W) layer, ``Scale`` for
a weighted residual shortcut; several edges into one node add up).  NIR defines its IF with ``>``
and a reset *to* ``v_reset``; the rate coding fires on ``>=`` and resets by subtraction, so the
graph carries biosnn's :class:`~biosnn.frontends.nir.flavors.Discretisation` in its metadata
(``threshold=">="``, ``reset="subtract"``, ``dt`` = the converted network's step), which
:func:`~biosnn.frontends.nir.from_nir` applies; a tool that reads only NIR's equations resets to
``v_reset = 0`` instead.

Input: ``"analog"`` networks take the raw sample every step (the division by the graph's
``input_scale`` is folded into the first layers' weights); ``"poisson"`` networks take 0/1 spikes
drawn with probability ``x / input_scale`` per step (metadata ``biosnn_input``).  Readout
``"potential"``: the output layer's map goes straight to the ``Output`` node, so what reaches it,
summed over the ``T`` steps, is the readout potential (scores are that sum divided by ``T``);
readout ``"spikes"``: an IF layer like the others.

Refused, naming the layer or population and the reason: max pooling (no NIR node keeps a running
maximum of spike counts), QCFS-prepared networks (IF neurons start at half their threshold; NIR
nodes have no initial state), and the temporal codings (TDSNN, TSC, TPC, STC), whose neurons NIR
cannot express.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np

from biosnn.errors import ConversionError
from biosnn.frontends.nir.flavors import METADATA_KEY, Discretisation

__all__ = ["snn_to_nir", "is_converted", "DT", "UNMAPPED_CODINGS"]

#: The converted network's step in seconds (``biosnn.codings.rate.spec.DT_MS``); the IF nodes' ``r = 1/DT``.
DT = 1e-3

#: Why each temporal coding has no NIR form: coding -> (predicate on a population's model name and
#: description, reason).
UNMAPPED_CODINGS = {
    "tdsnn": (lambda name, desc: name == "tdsnn_tick",
              "a ticking neuron that fires every step of its layer's active period drives the LIF layers, which "
              "are inhibited outside that period: NIR has no clock-driven node and no time-dependent inhibition"),
    "tsc": (lambda name, desc: name == "tsc_neuron",
            "a temporal-switch neuron sends each value as an on/off spike pair k steps apart and its synapses switch "
            "a current on and off: NIR's neurons and static edges cannot hold such a switched current"),
    "tpc": (lambda name, desc: name == "tpc_stage",
            "a bit-serial stage emits binary codes on a clock and its synapses weight a spike at step t by "
            "2**(n-1-t): NIR's weights do not depend on time"),
    "stc": (lambda name, desc: "decaying threshold" in desc,
            "its neurons fire on a threshold that decays as theta0 exp(-t/tau) within each block (a time-decaying "
            "threshold, like the library's if_decaying_threshold): NIR's thresholds are constant"),
}


def is_converted(obj) -> bool:
    """Whether ``obj`` is a converted network (:class:`biosnn.conversion.snn.SNN` or a subclass)."""
    from biosnn.conversion.snn import SNN
    return isinstance(obj, SNN)


def _refuse_coding(snn):
    test, why = UNMAPPED_CODINGS.get(snn.coding, (lambda name, desc: True, "biosnn exports rate-coded networks only"))
    spec = snn.spec

    def named(pop):
        model = spec.neuron_model(pop)
        return (pop.model if isinstance(pop.model, str) else "inline"), model.description or ""
    pops = [p for p in spec.populations if p.name not in ("input", "meter")]
    pop = next((p for p in pops if test(*named(p))), pops[0] if pops else spec.populations[0])
    name, desc = named(pop)
    raise ConversionError(
        f"to_nir: the {snn.coding} network '{snn.name}' has no NIR form: population '{pop.name}' (model "
        f"'{name}'{': ' + desc if name == 'inline' else ''}): {why}. Only rate-coded networks "
        "(biosnn.convert(model, 'rate', ...)) export to NIR")


def snn_to_nir(snn):
    """The NIR graph of a rate-coded converted network (see the module docstring).

    Parameters
    ----------
    snn : biosnn.conversion.snn.SNN
        From ``biosnn.convert(model, "rate", ...)``.

    Returns
    -------
    nir.NIRGraph
        Nodes ``input``, per layer ``L<k>`` (IF; the potential readout has none) behind its map
        ``L<k>_<op>``, and ``output``; metadata: ``producer = "biosnn"``, the discretisation,
        ``biosnn_input`` and ``biosnn_T`` (steps per sample).

    Raises
    ------
    ConversionError
        Temporal codings, max pooling, QCFS initial potentials, signed neurons, layers NIR cannot express; each
        names the layer or population and why.
    """
    import nir
    from biosnn.codings.rate.spec import first_maxpool, layer_populations, synaptic_inputs
    from biosnn.frontends.torch_graph import snn_roles
    if snn.coding != "rate":
        _refuse_coding(snn)
    graph = snn.graph
    if snn.signed:
        raise ConversionError(
            f"to_nir: network '{snn.name}' has signed IF neurons (convert(..., signed=True)): they emit negative "
            "spikes that NIR's IF nodes cannot, so the exported graph would compute something else. Convert "
            "with signed=False to export it")
    if snn.v_init:
        raise ConversionError(
            f"to_nir: network '{snn.name}' starts its IF neurons at {snn.v_init:g} x threshold (a QCFS-prepared "
            "model): NIR nodes have no initial state, so the exported graph would start at 0. Convert the model "
            "without prepare(..., levels=...) to export it")
    roles = snn_roles(graph)
    layer = first_maxpool(graph, roles)
    if layer is not None:
        raise ConversionError(
            f"to_nir: layer '{layer.name}' ({layer.module or layer.op}) is max pooling, which the rate coding "
            "realises as a gate keeping the running maximum of its inputs' spike counts: NIR has no such node. "
            "Use average pooling (nn.AvgPool2d) to export the network")
    pops = layer_populations(graph)
    analog = snn.input_mode == "analog"
    scale = 1.0 / graph.input_scale if analog else 1.0
    nodes = {"input": nir.Input(input_type={"input": np.array(graph.input_shape)})}
    edges = []
    potential = snn.readout == "potential"
    for layer in graph.layers[1:]:
        if layer.name not in pops:
            continue  # a virtual residual branch: its map is written into the add layer's inputs
        pname = pops[layer.name]
        out = potential and layer.name == graph.output
        target = "output" if out else pname
        inputs, _ = synaptic_inputs(graph, layer.name, roles)
        sources = []
        for si in inputs:
            src = pops[si.source]
            factor = si.scale * (scale if src == "input" else 1.0)
            sources.extend(_map_nodes(nir, graph, si, src, pname, factor, nodes, edges))
        for s in sources:
            edges.append((s, target))
        if out:
            continue
        theta = float(snn.thresholds.get(layer.name, 1.0))
        n = layer.out_shape
        nodes[pname] = nir.IF(r=np.full(n, 1.0 / DT), v_threshold=np.full(n, theta), v_reset=np.zeros(n))
        if layer.name == graph.output:
            edges.append((pname, "output"))
    out_shape = graph[graph.output].out_shape
    nodes["output"] = nir.Output(output_type={"output": np.array(out_shape)})
    disc = Discretisation(dt=DT, threshold=">=", reset="subtract")
    meta = {"producer": "biosnn", METADATA_KEY: json.dumps(asdict(disc), sort_keys=True),
            "biosnn_input": ("the sample x itself every step (analog current)" if analog else
                             f"0/1 spikes with probability x / {graph.input_scale!r} per step (Poisson)"),
            "biosnn_T": int(snn.T), "biosnn_readout": snn.readout}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def _bias(layer, n) -> np.ndarray:
    return np.zeros(n) if layer.bias is None else np.asarray(layer.bias, dtype=np.float64)


def _map_nodes(nir, graph, si, src, pname, factor, nodes, edges) -> list:
    """Write the static nodes of one synaptic input of population ``pname``; return the nodes that feed it."""
    layer = si.layer
    tag = si.tag or ""
    src_shape = graph[si.source].out_shape
    if layer.op == "add":  # a shortcut from a spiking layer: coefficient per unit
        c = np.asarray(si.conns.weights, dtype=np.float64) * factor
        if np.all(c == 1.0):
            return [src]
        name = f"{pname}_scale{tag}"
        nodes[name] = nir.Scale(scale=c.reshape(src_shape))
        edges.append((src, name))
        return [name]
    name = f"{pname}_{layer.op}{tag}"
    p = layer.params
    if layer.op in ("conv2d", "avgpool2d") and tuple(layer.in_shape) != tuple(src_shape):
        raise ConversionError(f"to_nir: layer '{layer.name}' reads a {src_shape} output as {layer.in_shape}; NIR "
                              "has no reshape node")
    if layer.op == "linear":
        w = np.asarray(layer.weight, dtype=np.float64) * factor
        b = _bias(layer, w.shape[0]) * si.scale
        feed = src
        if len(src_shape) > 1:
            feed = f"{pname}_flatten{tag}"
            nodes[feed] = nir.Flatten(input_type={"input": np.array(src_shape)}, start_dim=0, end_dim=-1)
            edges.append((src, feed))
        nodes[name] = nir.Affine(weight=w, bias=b) if np.any(b) else nir.Linear(weight=w)
        edges.append((feed, name))
        return [name]
    if layer.op == "conv2d":
        if isinstance(p["padding"], str):
            raise ConversionError(f"to_nir: layer '{layer.name}' has padding '{p['padding']}'; give it as numbers")
        nodes[name] = nir.Conv2d(input_shape=tuple(src_shape[1:]), weight=np.asarray(layer.weight) * factor,
                                 stride=tuple(p["stride"]), padding=tuple(p["padding"]),
                                 dilation=tuple(p["dilation"]), groups=int(p["groups"]),
                                 bias=_bias(layer, np.shape(layer.weight)[0]) * si.scale)
        edges.append((src, name))
        return [name]
    if layer.op == "avgpool2d":
        if not p.get("count_include_pad", True) and any(p["padding"]):
            raise ConversionError(f"to_nir: layer '{layer.name}': average pooling with padding and "
                                  "count_include_pad=False has no NIR node")
        nodes[name] = nir.AvgPool2d(kernel_size=np.array(p["kernel_size"]), stride=np.array(p["stride"]),
                                    padding=np.array(p["padding"]))
        edges.append((src, name))
        if factor != 1.0:
            scaled = f"{pname}_scale{tag}"
            out_shape = layer.out_shape
            nodes[scaled] = nir.Scale(scale=np.full(out_shape, factor))
            edges.append((name, scaled))
            return [scaled]
        return [name]
    raise ConversionError(f"to_nir: layer '{layer.name}' ({layer.op}) has no NIR node")  # pragma: no cover
