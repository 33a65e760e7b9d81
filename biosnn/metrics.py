"""Operation counts and energy estimates for an ANN and its converted SNN.

Counting conventions
--------------------
* A *connection* is a (pre unit, post unit) pair of a layer's linear map that
  does not involve zero padding.  Counts are exact, including the image
  borders of padded/strided convolutions and pooling windows.
* ANN MACs of a ``linear``/``conv2d``/``avgpool2d`` layer are its
  connections (one multiply-accumulate each; padded zeros are not counted);
  an ``add`` layer does one accumulate per element per input; ``maxpool2d``
  (comparisons) and the input do none.  Hence ``sum(ann_macs)`` equals the
  sum over all units of their fan-out into non-max-pool layers.
* SNN synaptic operations (synops) are ``sum over units of spikes x
  fan-out``, the fan-out of a unit being its number of connections into all
  consuming layers (into a max-pool gate: the number of windows it belongs
  to; into an ``add``: 1).  Residual branches without ReLU ("virtual") have
  no spikes: their synapses are counted as fan-out of the layer feeding them.

Energy per operation defaults to Horowitz (ISSCC 2014), 45 nm, 32-bit float:
0.9 pJ per add (one synaptic event), 4.6 pJ per multiply-accumulate
(3.7 pJ multiply + 0.9 pJ add).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from biosnn.frontends.torch_graph import Layer, LayerGraph

__all__ = [
    "connection_counts",
    "fan_out",
    "ann_macs",
    "ann_ops",
    "analog_input_macs",
    "synops",
    "energy_estimate",
    "E_AC",
    "E_MAC",
]

#: Energy of one accumulate (32-bit float add, 45 nm), joules (Horowitz 2014).
E_AC = 0.9e-12
#: Energy of one multiply-accumulate (32-bit float, 45 nm), joules (Horowitz 2014).
E_MAC = 4.6e-12


def _ones_map_fanout(layer: Layer) -> np.ndarray:
    """Per input unit, the number of output units it connects to (padding excluded)."""
    import torch
    import torch.nn.functional as F

    p = layer.params
    x = torch.zeros((1,) + layer.in_shape, dtype=torch.float64, requires_grad=True)
    if layer.op == "conv2d":
        c_in = layer.in_shape[0]
        w = torch.ones((layer.out_shape[0], c_in // p["groups"]) + tuple(p["kernel_size"]),
                       dtype=torch.float64)
        y = F.conv2d(x, w, None, p["stride"], p["padding"], p["dilation"], p["groups"])
    else:  # pooling: a depthwise all-ones kernel has the same connections as the window
        c = layer.in_shape[0]
        w = torch.ones((c, 1) + tuple(p["kernel_size"]), dtype=torch.float64)
        y = F.conv2d(x, w, None, p["stride"], p["padding"], p.get("dilation", (1, 1)), c)
    y.sum().backward()
    return x.grad.numpy().reshape(-1).round().astype(np.int64)


def connection_counts(layer: Layer) -> list[np.ndarray]:
    """Fan-out of each input unit into ``layer``, one array per input.

    Parameters
    ----------
    layer : Layer
        Any non-input layer.

    Returns
    -------
    list of numpy.ndarray
        For each name in ``layer.inputs``, int64 ``(in_size,)``: the number of
        connections (synapses, count) from each unit of that input to
        ``layer``'s units.
    """
    if layer.op == "input":
        return []
    if layer.op == "linear":
        return [np.full(layer.in_size, layer.out_shape[0], dtype=np.int64)]
    if layer.op == "add":
        return [np.ones(layer.in_size, dtype=np.int64) for _ in layer.inputs]
    return [_ones_map_fanout(layer)]


def fan_out(graph: LayerGraph) -> dict[str, np.ndarray]:
    """Fan-out of every unit: its number of connections into all consuming layers.

    Parameters
    ----------
    graph : LayerGraph
        The network.

    Returns
    -------
    dict of str to numpy.ndarray
        int64 ``(layer.size,)`` per layer (zeros for the output layer).
    """
    out = {layer.name: np.zeros(layer.size, dtype=np.int64) for layer in graph.layers}
    for layer in graph.layers:
        for src, counts in zip(layer.inputs, connection_counts(layer)):
            out[src] += counts
    return out


def ann_macs(graph: LayerGraph) -> dict[str, int]:
    """Multiply-accumulates per sample of each layer of the ANN.

    Parameters
    ----------
    graph : LayerGraph
        The network.

    Returns
    -------
    dict of str to int
        MACs per inference (one sample) for every layer (0 for the input and
        max-pool layers); ``sum(...values())`` is the total (see
        :func:`ann_ops`).
    """
    macs = {}
    for layer in graph.layers:
        if layer.op in ("input", "maxpool2d"):
            macs[layer.name] = 0
        else:
            macs[layer.name] = int(sum(int(c.sum()) for c in connection_counts(layer)))
    return macs


def ann_ops(graph: LayerGraph) -> int:
    """Total ANN multiply-accumulates per sample (sum of :func:`ann_macs`)."""
    return int(sum(ann_macs(graph).values()))


def analog_input_macs(graph: LayerGraph) -> int:
    """MACs per time step of the layers that read an analog (non-spiking) input.

    With analog input the first layer multiplies real values every step, so a
    T-step SNN run costs ``T * analog_input_macs(graph)`` MACs in addition to
    its synops.

    Parameters
    ----------
    graph : LayerGraph
        The network.

    Returns
    -------
    int
        MACs per sample and time step.
    """
    name = graph.input.name
    total = 0
    for consumer in graph.consumers(name):
        layer = graph[consumer]
        for src, counts in zip(layer.inputs, connection_counts(layer)):
            if src == name:
                total += int(counts.sum())
    return total


def synops(spike_counts: Mapping[str, np.ndarray], graph: LayerGraph) -> np.ndarray:
    """Synaptic operations per sample of an SNN run.

    Parameters
    ----------
    spike_counts : mapping of str to array_like
        Spike counts ``(N, layer.size)`` per layer, e.g.
        :attr:`biosnn.codings.rate.reference.RateResult.counts` (include
        ``"input"`` only for spiking input).  Layers not given contribute
        nothing.
    graph : LayerGraph
        The network the counts come from.

    Returns
    -------
    numpy.ndarray
        int64 ``(N,)``: ``sum over units of spikes x fan-out`` per sample
        (synaptic events, count).
    """
    fo = fan_out(graph)
    total = None
    for name, counts in spike_counts.items():
        c = np.asarray(counts)
        c = c.reshape(c.shape[0], -1)
        if c.shape[1] != fo[name].size:
            raise ValueError(f"spike counts of layer '{name}' have {c.shape[1]} units; "
                             f"the layer has {fo[name].size}")
        part = c.astype(np.int64) @ fo[name]
        total = part if total is None else total + part
    if total is None:
        raise ValueError("no spike counts given")
    return total


def energy_estimate(synops, macs, e_ac: float = E_AC, e_mac: float = E_MAC,
                    snn_macs=0) -> dict[str, float | np.ndarray]:
    """Energy of an SNN run versus the ANN, from operation counts.

    Parameters
    ----------
    synops : float or array_like
        SNN synaptic operations per sample (accumulates), e.g. from
        :func:`synops` (or its mean).
    macs : float or array_like
        ANN multiply-accumulates per sample, e.g. :func:`ann_ops`.
    e_ac : float
        Energy per accumulate / synaptic event, joules (default 0.9 pJ).
    e_mac : float
        Energy per multiply-accumulate, joules (default 4.6 pJ).
    snn_macs : float or array_like
        MACs the SNN also performs, e.g. ``T * analog_input_macs(graph)`` for
        analog input (charged at ``e_mac``).

    Returns
    -------
    dict
        ``snn_J`` (``synops * e_ac + snn_macs * e_mac``), ``ann_J``
        (``macs * e_mac``), both joules per sample, and ``ratio``
        (``ann_J / snn_J``, dimensionless; ``inf`` if ``snn_J`` is 0).
    """
    snn_j = np.asarray(synops, dtype=np.float64) * e_ac + np.asarray(snn_macs, dtype=np.float64) * e_mac
    ann_j = np.asarray(macs, dtype=np.float64) * e_mac
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(snn_j > 0, ann_j / np.where(snn_j > 0, snn_j, 1.0), np.inf)

    def _out(a):
        return float(a) if np.ndim(a) == 0 else a

    return {"snn_J": _out(snn_j), "ann_J": _out(ann_j), "ratio": _out(ratio),
            "e_ac_J": float(e_ac), "e_mac_J": float(e_mac)}
