"""Trace a PyTorch ANN into a flat, framework-free layer graph.

:func:`trace` turns a ``torch.nn.Module`` into a :class:`LayerGraph`: a tuple of
frozen :class:`Layer` nodes in topological order, with float64 numpy weights.
Everything downstream (calibration, the numpy/torch reference IF simulation,
the Brian2 builders, the metrics) works on this graph, never on the module.

The tracer (:func:`trace`, the tracing rules) is :mod:`biosnn.frontends.torch_trace`; it is re-exported here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from biosnn.errors import ConversionError

__all__ = [
    "Layer",
    "LayerGraph",
    "OPS",
    "SUPPORTED",
    "forward_numpy",
    "linear_map",
    "snn_roles",
    "check_no_ceiling",
]

#: Layer operations a :class:`LayerGraph` can contain.
OPS = ("input", "linear", "conv2d", "avgpool2d", "maxpool2d", "add")

#: Human-readable list of what :func:`trace` accepts (used in error messages).
SUPPORTED = (
    "nn.Linear, nn.Conv2d (padding_mode='zeros'), nn.AvgPool2d, nn.MaxPool2d, "
    "nn.AdaptiveAvgPool2d/AdaptiveMaxPool2d (output size dividing the input), "
    "nn.BatchNorm1d/2d (folded), nn.ReLU, nn.ReLU6, nn.Hardtanh(0, a), nn.Flatten, "
    "nn.Dropout, nn.Identity, a final nn.Softmax/LogSoftmax; functions F.relu/torch.relu/Tensor.relu, "
    "clamp(min=0)/clamp(0, a), F.relu6, torch.flatten(x, 1)/Tensor.view/reshape/flatten/squeeze, "
    "a + b, a - b (residual add), torch.cat(dim=1), x * c, x / c, x + c, x - c (folded into the next "
    "Linear/Conv2d), F.avg_pool2d, F.max_pool2d, F.adaptive_avg_pool2d/adaptive_max_pool2d, "
    "Tensor.mean((2, 3)), Tensor.amax((2, 3)), F.dropout, a final F.softmax/log_softmax"
)

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _freeze_array(a: Any) -> np.ndarray | None:
    """A read-only float64 copy of ``a``; an array that is already one (owns its data, read-only) is kept.

    Keeping frozen arrays spares a copy per layer and per ``Layer.replace``
    (a VGG-11's weights are 74 MB in float64).
    """
    if a is None:
        return None
    if isinstance(a, np.ndarray) and a.dtype == np.float64 and a.base is None and not a.flags.writeable:
        return a
    arr = np.array(a, dtype=np.float64, copy=True)
    arr.setflags(write=False)
    return arr


def frozen(a: Any) -> np.ndarray:
    """``a`` as a float64 array that :class:`Layer` keeps without copying (read-only, owning its data)."""
    arr = np.array(a, dtype=np.float64, copy=True)
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Layer:
    """One node of a :class:`LayerGraph`.

    Parameters
    ----------
    name : str
        Unique name (the module's qualified path, e.g. ``"features.0"``, or the
        torch.fx node name for functions, e.g. ``"add"``; the input is
        ``"input"``).
    op : str
        One of ``"input"``, ``"linear"``, ``"conv2d"``, ``"avgpool2d"``,
        ``"maxpool2d"``, ``"add"``.
    inputs : tuple of str
        Names of the producing layers (empty for the input, two or more for
        ``"add"``, one otherwise).
    in_shape, out_shape : tuple of int
        Per-sample shapes without the batch dimension, e.g. ``(C, H, W)`` or
        ``(F,)``.  A layer reads each producer's output as a flat C-order
        vector reshaped to ``in_shape``.
    weight : numpy.ndarray or None
        float64.  ``linear``: ``(out, in)``; ``conv2d``: ``(out_c, in_c/groups,
        kh, kw)``; ``add``: ``(len(inputs),)`` coefficients, the add computes
        ``sum_i weight[i] * input_i`` (all ones after tracing; normalisation
        changes them); ``None`` for the others.
    bias : numpy.ndarray or None
        float64 ``(out,)`` / ``(out_c,)`` for linear/conv (zeros if the module
        has none); ``None`` otherwise.
    params : Mapping
        Read-only.  conv2d: ``kernel_size, stride, padding, dilation, groups``;
        avgpool2d: ``kernel_size, stride, padding, count_include_pad``;
        maxpool2d: ``kernel_size, stride, padding, dilation``.  All sizes are
        ``(h, w)`` int pairs.
    relu : bool
        The layer's output goes through a ReLU.
    module : str
        The module path and class (or function) it came from, for messages.
    ceiling : float or None
        With ``relu``: the ReLU clips at this value (``ReLU6``, ``Hardtanh(0, a)``,
        ``clamp(0, a)``, the QCFS activation of :func:`biosnn.codings.rate.prepare`);
        the conversion uses it as the layer's activation scale.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    params: Mapping[str, Any] = field(default=_EMPTY)
    relu: bool = False
    module: str = ""
    ceiling: float | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown layer op {self.op!r}; expected one of {OPS}")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "in_shape", tuple(int(s) for s in self.in_shape))
        object.__setattr__(self, "out_shape", tuple(int(s) for s in self.out_shape))
        object.__setattr__(self, "weight", _freeze_array(self.weight))
        object.__setattr__(self, "bias", _freeze_array(self.bias))
        if self.ceiling is not None:
            c = float(self.ceiling)
            if not (self.relu and c > 0 and np.isfinite(c)):
                raise ValueError(f"layer {self.name!r}: a ceiling needs relu=True and a positive finite value, "
                                 f"got {self.ceiling!r}")
            object.__setattr__(self, "ceiling", c)
        if not isinstance(self.params, MappingProxyType):
            object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def in_size(self) -> int:
        """Number of input units (product of ``in_shape``)."""
        return int(np.prod(self.in_shape, dtype=np.int64))

    @property
    def size(self) -> int:
        """Number of output units (product of ``out_shape``)."""
        return int(np.prod(self.out_shape, dtype=np.int64))

    def replace(self, **changes: Any) -> "Layer":
        """Return a copy with some fields changed (see :func:`dataclasses.replace`)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """One-line human-readable description."""
        extra = f" <- {', '.join(self.inputs)}" if self.inputs else ""
        relu = (" +relu" + (f"<={self.ceiling:g}" if self.ceiling is not None else "")) if self.relu else ""
        return f"{self.name}: {self.op} {self.in_shape} -> {self.out_shape}{relu}{extra}  [{self.module}]"


@dataclass(frozen=True, eq=False)
class LayerGraph:
    """An ANN as a topologically ordered tuple of :class:`Layer`.

    The graph computes ``f(x / input_scale)``: :func:`forward_numpy` and the
    reference simulation divide the raw input by ``input_scale`` (1 after
    tracing; set by :func:`biosnn.conversion.calibrate.normalize`).

    Parameters
    ----------
    layers : tuple of Layer
        Topological order; ``layers[0]`` is the ``"input"`` layer.
    output : str
        Name of the layer whose activations are the model output.
    output_shape : tuple of int
        Per-sample shape of the model output (may be a reshape of the output
        layer's ``out_shape``).
    input_scale : float
        Divisor applied to the raw input.
    """

    layers: tuple[Layer, ...]
    output: str
    output_shape: tuple[int, ...]
    input_scale: float = 1.0
    _index: Mapping[str, Layer] = field(init=False, repr=False)
    _consumers: Mapping[str, tuple[str, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "output_shape", tuple(int(s) for s in self.output_shape))
        object.__setattr__(self, "input_scale", float(self.input_scale))
        index: dict[str, Layer] = {}
        consumers: dict[str, list[str]] = {}
        for layer in layers:
            if layer.name in index:
                raise ValueError(f"duplicate layer name {layer.name!r}")
            for src in layer.inputs:
                if src not in index:
                    raise ValueError(f"layer {layer.name!r} reads {src!r}, which is not an earlier layer")
                if layer.name not in consumers[src]:
                    consumers[src].append(layer.name)
            index[layer.name] = layer
            consumers[layer.name] = []
        if not layers or layers[0].op != "input":
            raise ValueError("the first layer of a LayerGraph must be the 'input' layer")
        if self.output not in index:
            raise ValueError(f"output layer {self.output!r} is not in the graph")
        object.__setattr__(self, "_index", MappingProxyType(index))
        object.__setattr__(self, "_consumers", MappingProxyType({k: tuple(v) for k, v in consumers.items()}))

    def __getitem__(self, name: str) -> Layer:
        try:
            return self._index[name]
        except KeyError:
            raise KeyError(f"no layer named {name!r}; layers: {list(self._index)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def names(self) -> tuple[str, ...]:
        """Layer names in topological order."""
        return tuple(layer.name for layer in self.layers)

    @property
    def input(self) -> Layer:
        """The ``"input"`` layer."""
        return self.layers[0]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample input shape."""
        return self.layers[0].out_shape

    def consumers(self, name: str) -> tuple[str, ...]:
        """Names of the layers that read layer ``name`` (topological order)."""
        self[name]
        return self._consumers[name]

    def replace_layers(self, layers: Mapping[str, Layer] | None = None, **changes: Any) -> "LayerGraph":
        """Return a new graph with some layers (by name) and/or fields replaced."""
        new = tuple((layers or {}).get(layer.name, layer) for layer in self.layers)
        kwargs = dict(layers=new, output=self.output, output_shape=self.output_shape,
                      input_scale=self.input_scale)
        kwargs.update(changes)
        return LayerGraph(**kwargs)

    def summary(self) -> str:
        """Multi-line description of all layers."""
        lines = [layer.describe() for layer in self.layers]
        lines.append(f"output: {self.output} {self.output_shape}; input_scale={self.input_scale:g}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- evaluation


def _as_batch(graph: LayerGraph, x) -> np.ndarray:
    x = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    size = graph.input.size
    if x.size % size or x.ndim < 1:
        raise ConversionError(f"input of shape {x.shape} does not match the graph's input shape "
                              f"{graph.input_shape}")
    if x.shape[1:] != graph.input_shape and x.shape[1:] != (size,):
        if x.shape == graph.input_shape or x.shape == (size,):
            x = x[None]
        else:
            raise ConversionError(f"input of shape {x.shape} does not match the graph's input shape "
                                  f"(N,) + {graph.input_shape}")
    return x.reshape((x.shape[0],) + graph.input_shape) / graph.input_scale


def linear_map(layer: Layer):
    """The layer's pre-ReLU map as a function of a torch float64 batch.

    Parameters
    ----------
    layer : Layer
        A ``linear``, ``conv2d``, ``avgpool2d`` or ``maxpool2d`` layer.

    Returns
    -------
    callable
        ``f(inp) -> out``: ``inp`` is a ``(N, in_size)`` (or ``(N,) + in_shape``)
        float64 tensor, ``out`` a ``(N, size)`` float64 tensor, bias included.
        The weights are converted to torch once, when ``linear_map`` is called.
    """
    import torch
    import torch.nn.functional as F

    p = layer.params
    w = torch.tensor(layer.weight) if layer.weight is not None else None
    b = torch.tensor(layer.bias) if layer.bias is not None else None
    shape = layer.in_shape

    if layer.op == "linear":
        def f(inp):
            return F.linear(inp.reshape(inp.shape[0], -1), w, b)
    elif layer.op == "conv2d":
        def f(inp):
            out = F.conv2d(inp.reshape((inp.shape[0],) + shape), w, b, stride=p["stride"],
                           padding=p["padding"], dilation=p["dilation"], groups=p["groups"])
            return out.reshape(inp.shape[0], -1)
    elif layer.op == "avgpool2d":
        def f(inp):
            out = F.avg_pool2d(inp.reshape((inp.shape[0],) + shape), p["kernel_size"], p["stride"],
                               p["padding"], count_include_pad=p["count_include_pad"])
            return out.reshape(inp.shape[0], -1)
    elif layer.op == "maxpool2d":
        def f(inp):
            out = F.max_pool2d(inp.reshape((inp.shape[0],) + shape), p["kernel_size"], p["stride"],
                               p["padding"], p["dilation"])
            return out.reshape(inp.shape[0], -1)
    else:
        raise ValueError(f"layer {layer.name!r} ({layer.op}) has no single-input linear map")
    return f


def forward_numpy(graph: LayerGraph, x) -> dict[str, np.ndarray]:
    """Evaluate the graph as an ANN in float64.

    Parameters
    ----------
    graph : LayerGraph
        The traced (possibly normalised) network.
    x : array_like or torch.Tensor
        ``(N,) + graph.input_shape`` (or ``(N, prod(input_shape))``) raw input;
        it is divided by ``graph.input_scale``.

    Returns
    -------
    dict of str to numpy.ndarray
        Activations of every layer, float64, shape ``(N,) + layer.out_shape``,
        after the layer's ReLU if it has one.  ``out[graph.output]`` is the
        model output (reshape it to ``(N,) + graph.output_shape`` if needed).
    """
    import torch

    xb = _as_batch(graph, x)
    n = xb.shape[0]
    acts: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for layer in graph.layers:
            if layer.op == "input":
                a = torch.from_numpy(np.ascontiguousarray(xb)).reshape(n, -1)
            elif layer.op == "add":
                a = sum(float(c) * acts[src] for c, src in zip(layer.weight, layer.inputs))
            else:
                a = linear_map(layer)(acts[layer.inputs[0]])
            if layer.relu:
                a = torch.clamp(a, 0.0, layer.ceiling)
            acts[layer.name] = a
    return {k: v.numpy().reshape((n,) + graph[k].out_shape) for k, v in acts.items()}


# --------------------------------------------------------------------------- SNN roles


def _nonnegative(graph: LayerGraph, name: str, memo: dict[str, bool]) -> bool:
    if name not in memo:
        layer = graph[name]
        if layer.op == "input" or layer.relu:
            memo[name] = True
        elif layer.op in ("avgpool2d", "maxpool2d"):
            memo[name] = _nonnegative(graph, layer.inputs[0], memo)
        else:
            memo[name] = False
    return memo[name]


def check_no_ceiling(graph: LayerGraph, coding: str) -> None:
    """Refuse clipped ReLUs (``Layer.ceiling``) in a coding that does not implement them.

    Raises
    ------
    biosnn.errors.ConversionError
        Naming the clipped layers and the codings that convert them.
    """
    clipped = [f"'{layer.name}' ({layer.module})" for layer in graph.layers if layer.ceiling is not None]
    if clipped:
        raise ConversionError(
            f"layers {', '.join(clipped)} have ReLUs with a ceiling (ReLU6, Hardtanh(0, a), clamp(0, a), QCFS); "
            f"the {coding} coding does not implement the ceiling. Fix: use nn.ReLU, or convert with the rate "
            "or tsc coding (the ceiling becomes the layer's scale)")


def snn_roles(graph: LayerGraph) -> dict[str, str]:
    """How each layer is realised in the rate-coded SNN.

    The roles:

    ``"input"``
        The input layer (analog current or Poisson spikes).
    ``"if"``
        A population of integrate-and-fire neurons (linear, conv2d,
        avgpool2d, add, and the output layer whatever its op).
    ``"maxpool"``
        A max-pooling gate (no membrane; see :mod:`biosnn.codings.rate.reference`).
    ``"virtual"``
        A linear/conv2d/add layer without ReLU whose only readers are ``add``
        layers (a residual branch): it has no neurons, its synaptic current
        ``W @ s + b`` is delivered directly to the add layer's neurons.

    Parameters
    ----------
    graph : LayerGraph
        The traced network.

    Returns
    -------
    dict of str to str
        Role of every layer, in topological order.

    Raises
    ------
    biosnn.errors.ConversionError
        A hidden layer can produce negative activations that IF neurons cannot
        represent (no ReLU and not a residual branch).
    """
    memo: dict[str, bool] = {}
    roles: dict[str, str] = {}
    for layer in graph.layers:
        consumers = graph.consumers(layer.name)
        if layer.op == "input":
            roles[layer.name] = "input"
        elif layer.name == graph.output:
            roles[layer.name] = "maxpool" if layer.op == "maxpool2d" else "if"
        elif layer.op == "maxpool2d":
            if not _nonnegative(graph, layer.name, memo):
                raise ConversionError(
                    f"layer '{layer.name}' ({layer.module}) max-pools activations that can be negative "
                    "and feeds further layers; IF neurons only represent non-negative activations. "
                    "Fix: apply a ReLU before or after the pooling.")
            roles[layer.name] = "maxpool"
        elif _nonnegative(graph, layer.name, memo):
            roles[layer.name] = "if"
        elif (layer.op in ("linear", "conv2d", "add")
              and consumers and all(graph[c].op == "add" for c in consumers)):
            roles[layer.name] = "virtual"
        else:
            readers = ", ".join(f"'{c}'" for c in consumers)
            raise ConversionError(
                f"layer '{layer.name}' ({layer.module}) has no ReLU but feeds {readers}; IF neurons only "
                "represent non-negative activations (only residual branches that end in an add may "
                "skip the ReLU). Fix: add a ReLU after it, or merge the consecutive linear maps.")
    return roles


# the tracer builds LayerGraphs from torch modules (imported last: it uses the classes above)
from biosnn.frontends.torch_trace import _InplaceTracer, inplace_tracer_class, trace  # noqa: E402,F401
