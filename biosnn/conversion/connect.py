"""The connect rule of a converted layer's weighted projection: a shared convolution kernel where exact.

Every coding builds its projections from a layer's synapses
(:func:`biosnn.codings.rate.spec.layer_connections`) with per-synapse
weights that are the layer's weights transformed (scaled, negated, quantised
to fixed point, ...).  When the layer is a convolution and every synapse's
weight is still a function of its kernel entry alone, the projection can keep
a :class:`~biosnn.spec.Conv2D` kernel instead of a weight per synapse: the
backends then store the kernel only (:mod:`biosnn.backends.brian2_static`:
no per-synapse array on cpp_standalone and cuda_standalone).  The synapses,
their order and their weights are the same, so the simulations are the same.
"""

from __future__ import annotations

import numpy as np

from biosnn import connectivity as cx
from biosnn.spec import model as m
from biosnn.spec.values import ArrayValue

__all__ = ["shared_kernel", "weighted_connect", "scaled_connect"]


def shared_kernel(layer, conns: cx.Connections, weights) -> np.ndarray | None:
    """The kernel (torch layout) whose entries are ``weights``, or None if the weights are not one per entry.

    Parameters
    ----------
    layer : biosnn.frontends.torch_graph.Layer
        The layer the synapses come from.
    conns : biosnn.connectivity.Connections
        Its synapses (from :func:`~biosnn.connectivity.conv2d`, with ``kernel_index``).
    weights : array_like, shape (n_synapses,)
        The projection's per-synapse weights (dimensionless).

    Returns
    -------
    numpy.ndarray or None
        ``K`` of the layer's weight shape with ``K.ravel()[kernel_index] == weights``
        for every synapse; None when the layer is not a dilation-1 convolution
        with numeric padding, or two synapses of one kernel entry differ.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> kern = np.arange(4.0).reshape(1, 1, 2, 2)
    >>> layer = SimpleNamespace(op="conv2d", weight=kern,
    ...                         params={"stride": 1, "padding": 0, "dilation": 1, "groups": 1})
    >>> conns = cx.conv2d(kern, (1, 3, 3))
    >>> shared_kernel(layer, conns, -np.asarray(conns.weights)).ravel()
    array([-0., -1., -2., -3.])
    >>> shared_kernel(layer, conns, np.arange(len(conns.i), dtype=float)) is None
    True
    """
    p = getattr(layer, "params", {})
    if (layer.op != "conv2d" or conns.kernel_index is None or p.get("dilation", 1) not in (1, (1, 1))
            or isinstance(p.get("padding"), str)):
        return None
    weights = np.asarray(weights, dtype=np.float64)
    idx = np.asarray(conns.kernel_index)
    kernel = np.zeros(np.asarray(layer.weight).size)
    kernel[idx] = weights
    if not np.array_equal(kernel[idx], weights):
        return None
    return kernel.reshape(np.asarray(layer.weight).shape)


def weighted_connect(layer, conns: cx.Connections, weights, shaped: bool) -> tuple[object, ArrayValue | None]:
    """``(connect, weights)`` of a weighted projection: a shared kernel where exact, else explicit synapses.

    Parameters
    ----------
    layer : biosnn.frontends.torch_graph.Layer
        The layer the synapses come from.
    conns : biosnn.connectivity.Connections
        Its synapses.
    weights : array_like, shape (n_synapses,)
        Per-synapse weights of the projection (dimensionless).
    shaped : bool
        Whether the source and target populations have ``(C, H, W)`` shapes
        (a :class:`~biosnn.spec.Conv2D` needs them).

    Returns
    -------
    tuple
        ``(Conv2D, None)`` when :func:`shared_kernel` finds a kernel, otherwise
        ``(Explicit(i, j), ArrayValue(weights))``.
    """
    kernel = shared_kernel(layer, conns, weights) if shaped else None
    if kernel is not None:
        p = layer.params
        return m.Conv2D(ArrayValue(kernel), stride=p["stride"], padding=p["padding"], groups=p["groups"]), None
    return (m.Explicit(ArrayValue(np.asarray(conns.i)), ArrayValue(np.asarray(conns.j))),
            ArrayValue(np.asarray(weights, dtype=np.float64)))


def scaled_connect(layer, conns, scale: float, shaped: bool) -> tuple[object, ArrayValue | None]:
    """:func:`weighted_connect` of the layer's own weights times ``scale`` (ones where it has none).

    A convolution given as :class:`~biosnn.connectivity.ConvConnections`
    (dilation 1, numeric padding, shaped populations) becomes a
    :class:`~biosnn.spec.Conv2D` of the kernel times ``scale`` -- taps that
    make no synapse set to 0, as :func:`shared_kernel` leaves them -- without
    making the per-synapse lists; a fully connected layer given as
    :class:`~biosnn.connectivity.DenseConnections` becomes an
    :class:`~biosnn.spec.AllToAll` with its weights (``W.T`` flattened: the
    synapse order of :func:`~biosnn.connectivity.dense`) times ``scale``.

    >>> kern = np.arange(4.0).reshape(1, 1, 2, 2)
    >>> from types import SimpleNamespace
    >>> layer = SimpleNamespace(op="conv2d", weight=kern,
    ...                         params={"stride": 1, "padding": 0, "dilation": 1, "groups": 1})
    >>> lazy, full = cx.conv2d(kern, (1, 3, 3), lazy=True), cx.conv2d(kern, (1, 3, 3))
    >>> np.array_equal(scaled_connect(layer, lazy, -2.0, True)[0].kernel.data,
    ...                weighted_connect(layer, full, -2.0 * full.weights, True)[0].kernel.data)
    True
    """
    p = getattr(layer, "params", {})
    if (shaped and isinstance(conns, cx.ConvConnections) and layer.op == "conv2d"
            and p.get("dilation", 1) in (1, (1, 1)) and not isinstance(p.get("padding"), str)):
        kernel = np.asarray(conns.kernel, dtype=np.float64)
        kernel = kernel if scale == 1.0 else kernel * scale  # scale 1: the layer's read-only weight, shared
        used = conns.used_taps()
        if not used.all():
            kernel = np.where(used[None, None], kernel, 0.0)
        return m.Conv2D(ArrayValue(kernel), stride=p["stride"], padding=p["padding"], groups=p["groups"]), None
    if isinstance(conns, cx.DenseConnections):
        # all-to-all: the weights in synapse order, no index lists (a VGG-16's first FC layer has 103 M synapses)
        return m.AllToAll(), ArrayValue(conns.pre_major_weights(scale))
    weights = np.ones(len(conns.i)) if conns.weights is None else np.asarray(conns.weights, dtype=np.float64) * scale
    return weighted_connect(layer, conns, weights, shaped)
