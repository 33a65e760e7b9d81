"""Average pooling folded into the layers that read it (rate coding without a second quantisation).

An average pool is linear, so ``conv(avgpool(a))`` equals one convolution of ``a`` whose kernel is
the original kernel with every tap spread over the pool's window (divided by its area), with the
stride and padding multiplied by the pool's; ``linear(avgpool(a))`` equals one linear layer whose
weight columns are spread the same way.  Realised as IF neurons, the pool would quantise the mean
of its input spike counts a second time (its neurons fire whole spikes); folded, the next layer
receives the spikes of the layer before the pool, and its input over the window is exactly the
pooled spike counts: the rate network then computes ``pool(counts)`` like the ANN computes
``pool(activations)``.  This matters most for QCFS models (Bu et al. 2022), whose ANN quantises
each ReLU once, and for global-average-pool heads (ResNet, MobileNet, DenseNet).

Only pools without padding whose stride equals their kernel are folded, into ``linear`` layers and
into ``conv2d`` layers with dilation 1 (when the pool divides the map exactly); other pools keep
their IF neurons.
"""

from __future__ import annotations

import numpy as np

from biosnn.frontends.torch_graph import Layer, LayerGraph

__all__ = ["fold_avgpool", "foldable"]


def _pool_ok(pool: Layer) -> bool:
    p = pool.params
    return (pool.op == "avgpool2d" and not pool.relu and tuple(p["stride"]) == tuple(p["kernel_size"])
            and not any(p["padding"]))


def _reader_ok(pool: Layer, reader: Layer) -> bool:
    if reader.op == "linear":
        return True
    if reader.op != "conv2d" or tuple(reader.params["dilation"]) != (1, 1):
        return False
    kh, kw = pool.params["kernel_size"]
    _, h, w = pool.in_shape
    return h % kh == 0 and w % kw == 0


def foldable(graph: LayerGraph) -> list[str]:
    """Names of the average pools :func:`fold_avgpool` folds (every reader a linear or foldable conv)."""
    out = []
    for layer in graph.layers:
        readers = graph.consumers(layer.name)
        if (_pool_ok(layer) and readers and layer.name != graph.output
                and all(_reader_ok(layer, graph[r]) for r in readers)):
            out.append(layer.name)
    return out


def _spread(weight: np.ndarray, pool: Layer) -> np.ndarray:
    """Spread the last two (spatial) axes of ``weight`` over the pool windows."""
    kh, kw = pool.params["kernel_size"]
    return np.repeat(np.repeat(weight, kh, axis=-2), kw, axis=-1) / (kh * kw)


def _fold(pool: Layer, reader: Layer) -> Layer:
    kh, kw = pool.params["kernel_size"]
    c, h, w = pool.in_shape
    note = f"{reader.module} (average pool {pool.name} folded in)"
    if reader.op == "linear":
        oc, oh, ow = pool.out_shape
        wgt = _spread(reader.weight.reshape(-1, oc, oh, ow), pool)   # (out, c, oh*kh, ow*kw)
        full = np.zeros((wgt.shape[0], c, h, w))
        full[:, :, :oh * kh, :ow * kw] = wgt                          # rows the pool dropped get no weight
        return reader.replace(weight=full.reshape(wgt.shape[0], -1), inputs=pool.inputs, in_shape=pool.in_shape,
                              module=note)
    p = dict(reader.params)
    (sh, sw), (ph, pw) = p["stride"], p["padding"]
    p.update(kernel_size=(p["kernel_size"][0] * kh, p["kernel_size"][1] * kw), stride=(sh * kh, sw * kw),
             padding=(ph * kh, pw * kw))
    return reader.replace(weight=_spread(reader.weight, pool), inputs=pool.inputs, in_shape=pool.in_shape,
                          params=p, module=note)


def fold_avgpool(graph: LayerGraph) -> LayerGraph:
    """The graph with every foldable average pool (:func:`foldable`) merged into its readers.

    Repeated until no pool folds (a pool read by another pool folds once that one has).  The
    result computes the same function (:func:`~biosnn.frontends.torch_graph.forward_numpy`
    equal up to float rounding); the pools' layers are gone and their readers read the pools'
    inputs.
    """
    names = set(foldable(graph))
    if not names:
        return graph
    layers = []
    for layer in graph.layers:
        if layer.name in names:
            continue
        srcs = [s for s in layer.inputs if s in names]
        if srcs:
            layer = _fold(graph[srcs[0]], layer)
        layers.append(layer)
    folded = LayerGraph(layers=tuple(layers), output=graph.output, output_shape=graph.output_shape,
                        input_scale=graph.input_scale)
    return fold_avgpool(folded)   # a pool read by a pool that is now folded can fold in turn
