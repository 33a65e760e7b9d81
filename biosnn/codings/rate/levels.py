"""Spikes worth ``k`` quantisation steps: a QCFS network's ``L`` levels at ``T = k L`` time steps.

With reset by subtraction and ``v(0) = theta / 2`` an IF layer's final count is
``round(V / theta)`` (``V`` its summed input; exactly so for signed neurons while one
spike per step suffices), so a converted QCFS model run for ``T`` steps quantises
every layer to ``1 / T`` of its threshold, not to the ``1 / L`` of the QCFS ANN it
was fine-tuned as: at ``T != L`` the SNN approximates a *different* (finer) network.
:func:`spikes_worth` makes a run of ``T = k L`` steps the ``L``-level network again:

* every IF threshold becomes ``k theta`` (and its start ``k theta / 2``);
* every synapse from a spiking layer (IF or max-pool gate) carries ``k w``:
  each spike is worth ``k`` steps of ``theta / T``, so a layer's count is at
  most ``L`` and its summed input ``k (W n + L b)``, i.e. ``k`` times the
  ``T = L`` network's (biases and the analog input act every step, ``T = k L``
  times);
* an average-pool IF layer reading spikes keeps ``theta`` (its input, a window
  mean of spikes, is not re-weighted; its spikes are worth ``k`` like its inputs').

The potential readout ends with ``v = k v_L`` after ``k L`` steps, so its scores
``v / T`` equal those of ``T = L``.  What ``k > 1`` adds is time: a layer may lag its
input (at most one spike per step) and has ``k`` steps per level to catch up.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from biosnn.errors import ConversionError
from biosnn.frontends.torch_graph import LayerGraph, snn_roles

__all__ = ["spikes_worth"]


def spikes_worth(graph: LayerGraph, thresholds: dict, k: int) -> tuple[LayerGraph, dict]:
    """The graph and thresholds in which every spike is worth ``k`` threshold steps (module docstring).

    Parameters
    ----------
    graph : LayerGraph
        Normalised graph (thresholds 1 unless ``thresholds`` says otherwise).
    thresholds : dict
        Threshold per IF layer name (missing: 1), dimensionless.
    k : int
        Steps per quantisation level, ``T / L`` (a positive integer).

    Returns
    -------
    graph : LayerGraph
    thresholds : dict
        A threshold for every IF layer.

    Raises
    ------
    ConversionError
        A max pool reading the analog input, or an average pool without neurons reading spikes.
    """
    roles = snn_roles(graph)
    spiking = {n for n, r in roles.items() if r in ("if", "maxpool")}
    layers, out = [graph.layers[0]], {}
    for layer in graph.layers[1:]:
        src = layer.inputs[0]
        if layer.op == "add":
            layer = dataclasses.replace(layer, weight=np.array(
                [float(c) * k if s in spiking else float(c) for c, s in zip(layer.weight, layer.inputs)]))
        elif layer.op in ("linear", "conv2d") and src in spiking:
            layer = dataclasses.replace(layer, weight=np.asarray(layer.weight) * k)
        elif layer.op == "maxpool2d" and src not in spiking or (layer.op == "avgpool2d" and src in spiking
                                                                 and roles[layer.name] != "if"):
            raise ConversionError(f"layer '{layer.name}' ({layer.module or layer.op}): spikes worth k steps need "
                                  "pools that read spikes into neurons; convert with match_levels=False")
        layers.append(layer)
        if roles[layer.name] == "if":
            keep = layer.op == "avgpool2d" and src in spiking
            out[layer.name] = float(thresholds.get(layer.name, 1.0)) * (1 if keep else k)
    return LayerGraph(tuple(layers), graph.output, graph.output_shape, graph.input_scale), out
