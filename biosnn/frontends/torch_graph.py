"""Trace a PyTorch ANN into a flat, framework-free layer graph.

:func:`trace` turns a ``torch.nn.Module`` into a :class:`LayerGraph`: a tuple of
frozen :class:`Layer` nodes in topological order, with float64 numpy weights.
Everything downstream (calibration, the numpy/torch reference IF simulation,
the Brian2 builders, the metrics) works on this graph, never on the module.

Tracing rules
-------------
* ``nn.Linear`` -> ``"linear"``, ``nn.Conv2d`` (zero padding) -> ``"conv2d"``,
  ``nn.AvgPool2d``/``F.avg_pool2d`` -> ``"avgpool2d"``,
  ``nn.MaxPool2d``/``F.max_pool2d`` (``ceil_mode=False``) -> ``"maxpool2d"``,
  ``a + b`` (``operator.add``, ``torch.add``, ``Tensor.add``) -> ``"add"``.
* ``nn.AdaptiveAvgPool2d``/``F.adaptive_avg_pool2d`` to an output size that
  divides the input size, and ``x.mean((2, 3))``, become ``"avgpool2d"``.
* ``nn.BatchNorm1d``/``nn.BatchNorm2d`` directly after a linear/conv layer are
  folded into its weight and bias (exact in eval mode).
* ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu`` set ``relu=True`` on
  the layer that produced their input.  ``relu(maxpool(z))`` is rewritten as
  ``maxpool(relu(z))`` (exact: max commutes with a monotone function).
* ``nn.Dropout*``, ``nn.Identity``, ``F.dropout`` (eval) are dropped.
* ``nn.Flatten``, ``torch.flatten``, ``view``, ``reshape`` are no-ops: every
  layer reads its producer's output as a flat C-order vector reshaped to its
  own ``in_shape`` (the same convention as ``torch.flatten``).

Anything else raises :class:`~biosnn.errors.ConversionError` naming the
module or function and its position in the traced graph.

The model is traced in eval mode on a deep copy; the caller's module is never
modified.
"""

from __future__ import annotations

import dataclasses
import inspect
import operator
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
    "trace",
    "forward_numpy",
    "linear_map",
    "snn_roles",
]

#: Layer operations a :class:`LayerGraph` can contain.
OPS = ("input", "linear", "conv2d", "avgpool2d", "maxpool2d", "add")

#: Human-readable list of what :func:`trace` accepts (used in error messages).
SUPPORTED = (
    "nn.Linear, nn.Conv2d (padding_mode='zeros'), nn.AvgPool2d, "
    "nn.MaxPool2d (ceil_mode=False), nn.AdaptiveAvgPool2d (output size dividing the input), "
    "nn.BatchNorm1d/2d (directly after Linear/Conv2d), nn.ReLU, nn.Flatten, "
    "nn.Dropout, nn.Identity; functions F.relu/torch.relu/Tensor.relu, "
    "torch.flatten/Tensor.view/Tensor.reshape/Tensor.flatten, a + b (residual add), "
    "F.avg_pool2d, F.max_pool2d, F.adaptive_avg_pool2d, Tensor.mean((2, 3)), F.dropout"
)

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _freeze_array(a: Any) -> np.ndarray | None:
    if a is None:
        return None
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

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"unknown layer op {self.op!r}; expected one of {OPS}")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "in_shape", tuple(int(s) for s in self.in_shape))
        object.__setattr__(self, "out_shape", tuple(int(s) for s in self.out_shape))
        object.__setattr__(self, "weight", _freeze_array(self.weight))
        object.__setattr__(self, "bias", _freeze_array(self.bias))
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
        relu = " +relu" if self.relu else ""
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


# --------------------------------------------------------------------------- tracing


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        if len(v) == 1:
            return (int(v[0]), int(v[0]))
        if len(v) != 2:
            raise ValueError(f"expected an int or a pair, got {v!r}")
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


# Signatures used to bind the arguments of functional calls.
def _sig_relu(input, inplace=False): ...  # noqa: E704
def _sig_avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,  # noqa: E704
                    count_include_pad=True, divisor_override=None): ...
def _sig_max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1,  # noqa: E704
                    ceil_mode=False, return_indices=False): ...
def _sig_adaptive(input, output_size): ...  # noqa: E704
def _sig_dropout(input, p=0.5, training=False, inplace=False): ...  # noqa: E704
def _sig_add(input, other, alpha=1): ...  # noqa: E704
def _sig_mean(input, dim=None, keepdim=False, dtype=None): ...  # noqa: E704
def _sig_any(input, *args, **kwargs): ...  # noqa: E704


def _bind(sig_fn, node) -> dict[str, Any]:
    try:
        bound = inspect.signature(sig_fn).bind(*node.args, **node.kwargs)
    except TypeError as exc:
        raise ConversionError(f"cannot read the arguments of {node.format_node()}: {exc}") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def _function_table() -> dict[Any, tuple[str, Any]]:
    import torch
    import torch.nn.functional as F

    table: dict[Any, tuple[str, Any]] = {
        F.relu: ("relu", _sig_relu),
        torch.relu: ("relu", _sig_relu),
        torch.relu_: ("relu_", _sig_relu),
        F.relu_: ("relu_", _sig_relu),
        torch.flatten: ("reshape", _sig_any),
        torch.reshape: ("reshape", _sig_any),
        operator.add: ("add", _sig_add),
        torch.add: ("add", _sig_add),
        operator.iadd: ("add", _sig_add),
        F.avg_pool2d: ("avgpool2d", _sig_avg_pool2d),
        F.max_pool2d: ("maxpool2d", _sig_max_pool2d),
        F.adaptive_avg_pool2d: ("adaptive_avgpool2d", _sig_adaptive),
        F.dropout: ("dropout", _sig_dropout),
        F.dropout2d: ("dropout", _sig_dropout),
        torch.mean: ("mean", _sig_mean),
        # shape arithmetic; allowed only while it produces no tensor
        getattr: ("meta", None),
        operator.getitem: ("meta", None),
        operator.mul: ("meta", None),
        operator.floordiv: ("meta", None),
    }
    for name in ("max_pool2d_with_indices", "_max_pool2d"):
        fn = getattr(F, name, None)
        if fn is not None:
            table.setdefault(fn, ("maxpool2d", _sig_max_pool2d))
    return table


_METHODS: dict[str, tuple[str, Any]] = {
    "relu": ("relu", _sig_relu),
    "relu_": ("relu_", _sig_relu),
    "view": ("reshape", _sig_any),
    "reshape": ("reshape", _sig_any),
    "flatten": ("reshape", _sig_any),
    "contiguous": ("noop", _sig_any),
    "add": ("add", _sig_add),
    "add_": ("add_", _sig_add),
    "mean": ("mean", _sig_mean),
    "size": ("meta", None),
    "dim": ("meta", None),
}


def _node_label(node, modules) -> str:
    if node.op == "call_module":
        return f"module '{node.target}' ({type(modules[node.target]).__name__})"
    if node.op == "call_function":
        return f"function {_function_label(node.target)}"
    if node.op == "call_method":
        return f"method Tensor.{node.target}()"
    return f"{node.op} '{node.name}'"


def _function_label(target: Any) -> str:
    mod = getattr(target, "__module__", None) or ""
    name = getattr(target, "__name__", None) or repr(target)
    return f"{mod}.{name}" if mod else name


@dataclass
class _Val:
    """What an fx node's tensor is, in terms of layers."""

    layer: str          # producing layer
    shape: tuple        # per-sample shape as seen at this node
    post_relu: bool     # the ReLU of `layer` has been applied
    fresh: bool         # straight out of a linear/conv (BN may still fold)


class _Builder:
    def __init__(self, gm, nodes_index):
        self.gm = gm
        self.index = nodes_index
        self.layers: dict[str, dict[str, Any]] = {}
        self.env: dict[Any, _Val] = {}
        self.uses: list[tuple[str, str, bool]] = []   # (consumer, producer, post_relu)
        self.node_of_layer: dict[str, Any] = {}

    def where(self, node) -> str:
        return f"fx node '{node.name}' (#{self.index[node]} in the traced graph)"

    def fail(self, node, what: str, fix: str | None = None, supported: bool = False) -> ConversionError:
        text = f"{what} at {self.where(node)}."
        if fix:
            text += f" Fix: {fix.rstrip('.')}."
        if supported:
            text += f" Supported layers: {SUPPORTED}."
        return ConversionError(text)

    def unique(self, name: str) -> str:
        base, k = name, 1
        while name in self.layers:
            name = f"{base}_{k}"
            k += 1
        return name

    def val(self, node, arg, what: str) -> _Val:
        from torch.fx import Node

        if not isinstance(arg, Node) or arg not in self.env:
            raise self.fail(node, f"{what} takes an input that is not a traced activation ({arg!r})",
                            fix="only activations flowing from the model input can be converted",
                            supported=True)
        return self.env[arg]

    def add_layer(self, node, name: str, **kw) -> str:
        name = self.unique(name)
        kw.setdefault("relu", False)
        self.layers[name] = dict(name=name, **kw)
        self.node_of_layer[name] = node
        return name


def trace(model, input_shape: tuple[int, ...]) -> LayerGraph:
    """Trace a PyTorch model into a :class:`LayerGraph`.

    Parameters
    ----------
    model : torch.nn.Module
        A feed-forward ReLU network built from the supported layers (see the
        module docstring and :data:`SUPPORTED`).  It is deep-copied and put in
        eval mode; the argument is not modified.
    input_shape : tuple of int
        Per-sample input shape without the batch dimension, e.g. ``(1, 28, 28)``
        or ``(784,)``.

    Returns
    -------
    LayerGraph
        Layers in topological order, float64 weights, BatchNorm folded.

    Raises
    ------
    biosnn.errors.ConversionError
        The model contains an unsupported module or function, cannot be traced
        by ``torch.fx`` (data-dependent control flow), does not accept
        ``input_shape``, or has a structure the converter cannot represent.
    """
    import copy

    import torch
    import torch.fx as fx
    from torch import nn
    from torch.fx.passes.shape_prop import ShapeProp

    if not isinstance(model, nn.Module):
        raise ConversionError(f"trace() needs a torch.nn.Module, got {type(model).__name__}")
    try:
        input_shape = tuple(int(s) for s in input_shape)
    except TypeError:
        raise ConversionError(f"input_shape must be a tuple of ints, got {input_shape!r}") from None
    if not input_shape or min(input_shape) <= 0:
        raise ConversionError(f"input_shape must be a non-empty tuple of positive ints, got {input_shape!r}")

    model = copy.deepcopy(model).eval()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError, ...
        raise ConversionError(
            f"torch.fx could not trace {type(model).__name__}.forward: {type(exc).__name__}: {exc}. "
            "Fix: avoid data-dependent control flow and non-torch operations in forward(); "
            f"supported layers: {SUPPORTED}."
        ) from None

    nodes = list(gm.graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    builder = _Builder(gm, index)
    modules = dict(gm.named_modules())
    ftable = _function_table()

    # ---- pass 1: classify every node; unsupported ones fail before running the model
    kinds: dict[Any, tuple[str, Any]] = {}
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise ConversionError(
            f"the model's forward() takes {len(placeholders)} inputs "
            f"({', '.join(p.name for p in placeholders)}); exactly one tensor input is supported")
    for node in nodes:
        if node.op == "placeholder":
            kinds[node] = ("input", None)
        elif node.op == "output":
            kinds[node] = ("output", None)
        elif node.op == "get_attr":
            raise builder.fail(node, f"direct use of parameter/buffer '{node.target}'",
                               fix="use modules (nn.Linear, nn.Conv2d, ...) instead of raw parameters",
                               supported=True)
        elif node.op == "call_module":
            kinds[node] = (_classify_module(builder, node, modules[node.target]), None)
        elif node.op == "call_function":
            if node.target not in ftable:
                raise builder.fail(node, f"unsupported function {_function_label(node.target)}",
                                   supported=True)
            kinds[node] = ftable[node.target]
        elif node.op == "call_method":
            if node.target not in _METHODS:
                raise builder.fail(node, f"unsupported tensor method .{node.target}()", supported=True)
            kinds[node] = _METHODS[node.target]
        else:  # pragma: no cover - fx has no other ops
            raise builder.fail(node, f"unsupported fx op {node.op}")

    # ---- pass 2: shapes (batch of 2 so that a flattened batch dimension is detected)
    batch = 2
    params = list(model.parameters())
    dtype = params[0].dtype if params and params[0].is_floating_point() else torch.float32
    gen = torch.Generator().manual_seed(0)
    probe = torch.rand((batch,) + input_shape, generator=gen, dtype=dtype)
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(probe)
    except Exception as exc:
        raise ConversionError(
            f"{type(model).__name__} does not run on an input of shape {(batch,) + input_shape} "
            f"(input_shape={input_shape}): {type(exc).__name__}: {exc}") from None

    # ---- pass 3: build layers
    output_val: _Val | None = None
    for node in nodes:
        kind, sig = kinds[node]
        if kind == "output":
            arg = node.args[0]
            output_val = builder.val(node, arg, "the model output")
            builder.uses.append(("<output>", output_val.layer, output_val.post_relu))
            continue
        meta = node.meta.get("tensor_meta")
        is_tensor = meta is not None and hasattr(meta, "shape")
        label = _node_label(node, modules)
        if kind == "meta":
            if meta is not None:
                raise builder.fail(node, f"unsupported {label} applied to an activation",
                                   supported=True)
            continue
        if not is_tensor:
            raise builder.fail(node, f"{label} does not return a single tensor",
                               supported=True)
        shape = tuple(int(s) for s in meta.shape)
        if len(shape) == 0 or shape[0] != batch:
            raise builder.fail(node, f"{label} mixes the batch dimension into the features "
                                     f"(shape {shape} for batch {batch})",
                               fix="keep dim 0 as the batch dimension, e.g. x.view(x.size(0), -1)")
        shape = shape[1:]
        _build_node(builder, node, kind, sig, shape, modules, input_shape)

    assert output_val is not None
    if builder.layers[output_val.layer]["op"] == "input":
        raise ConversionError("the model output is its input: there is no layer to convert")

    return _finish(builder, output_val)


def _classify_module(b: _Builder, node, mod) -> str:
    from torch import nn

    label = f"module '{node.target}' ({type(mod).__name__})"
    if isinstance(mod, nn.Linear):
        return "linear"
    if isinstance(mod, nn.Conv2d):
        if mod.padding_mode != "zeros":
            raise b.fail(node, f"{label} uses padding_mode={mod.padding_mode!r}",
                         fix="use padding_mode='zeros'", supported=True)
        return "conv2d"
    if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return "bn"
    if type(mod) is nn.ReLU:
        return "relu"
    if isinstance(mod, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)):
        return "noop"
    if isinstance(mod, (nn.Flatten, nn.Unflatten)):
        return "reshape"
    if isinstance(mod, nn.AvgPool2d):
        if mod.ceil_mode:
            raise b.fail(node, f"{label} with ceil_mode=True", fix="use ceil_mode=False", supported=True)
        if mod.divisor_override is not None:
            raise b.fail(node, f"{label} with divisor_override", supported=True)
        return "avgpool2d"
    if isinstance(mod, nn.MaxPool2d):
        if mod.ceil_mode:
            raise b.fail(node, f"{label} with ceil_mode=True", fix="use ceil_mode=False", supported=True)
        if mod.return_indices:
            raise b.fail(node, f"{label} with return_indices=True", supported=True)
        return "maxpool2d"
    if isinstance(mod, nn.AdaptiveAvgPool2d):
        return "adaptive_avgpool2d"
    raise b.fail(node, f"unsupported {label}", supported=True)


def _module_label(node, mod) -> str:
    return f"{node.target} ({type(mod).__name__})"


def _build_node(b: _Builder, node, kind: str, sig, shape: tuple, modules, input_shape) -> None:
    if kind == "input":
        name = b.add_layer(node, "input", op="input", inputs=(), in_shape=input_shape,
                           out_shape=input_shape, module="input")
        b.env[node] = _Val(name, input_shape, post_relu=False, fresh=False)
        return

    if node.op == "call_module":
        mod = modules[node.target]
        label = _node_label(node, modules)
        args = {"input": node.args[0] if node.args else node.kwargs.get("input")}
        if len(node.args) + len(node.kwargs) != 1:
            raise b.fail(node, f"module {label} is called with more than one argument")
        base_name = node.target if node.target not in b.layers else node.name
        short = _module_label(node, mod)
    else:
        mod = None
        label = _node_label(node, modules)
        args = _bind(sig, node) if sig is not _sig_any else {"input": node.args[0]}
        base_name = node.name
        short = (_function_label(node.target) if node.op == "call_function"
                 else f"Tensor.{node.target}")

    src = b.val(node, args["input"], label)

    if kind in ("noop", "dropout"):
        if kind == "dropout" and args.get("training"):
            raise b.fail(node, f"{label} with training=True is random at inference",
                         fix="pass training=self.training")
        b.env[node] = src
        return

    if kind == "reshape":
        if int(np.prod(shape)) != int(np.prod(src.shape)):
            raise b.fail(node, f"{label} changes the number of features per sample "
                               f"({src.shape} -> {shape})")
        b.env[node] = _Val(src.layer, shape, src.post_relu, fresh=False)
        return

    if kind in ("relu", "relu_"):
        layer = b.layers[src.layer]
        if layer["op"] == "input":
            raise b.fail(node, f"{label} applied to the network input",
                         fix="rectify the data before the model, not inside it", supported=True)
        layer["relu"] = True
        new = _Val(src.layer, src.shape, post_relu=True, fresh=False)
        b.env[node] = new
        inplace = kind == "relu_" or bool(args.get("inplace")) or bool(getattr(mod, "inplace", False))
        if inplace:
            b.env[args["input"]] = new
        return

    if kind == "bn":
        _fold_bn(b, node, mod, label, src)
        return

    if kind == "linear":
        if src.shape != (mod.in_features,):
            raise b.fail(node, f"{label} applied to an input of shape {src.shape}",
                         fix="flatten the activations before nn.Linear (torch.flatten(x, 1))")
        w = mod.weight.detach().cpu().double().numpy()
        bias = (mod.bias.detach().cpu().double().numpy() if mod.bias is not None
                else np.zeros(mod.out_features))
        name = b.add_layer(node, base_name, op="linear", inputs=(src.layer,), in_shape=src.shape,
                           out_shape=shape, weight=w, bias=bias, params={}, module=short)
        b.uses.append((name, src.layer, src.post_relu))
        b.env[node] = _Val(name, shape, post_relu=False, fresh=True)
        return

    if kind == "conv2d":
        if len(src.shape) != 3:
            raise b.fail(node, f"{label} applied to an input of shape {src.shape}; expected (C, H, W)")
        k = _pair(mod.kernel_size)
        dil = _pair(mod.dilation)
        if isinstance(mod.padding, str):
            pad = []
            for kk, dd in zip(k, dil):
                total = 0 if mod.padding == "valid" else dd * (kk - 1)
                if total % 2:
                    raise b.fail(node, f"{label} with padding='same' pads asymmetrically",
                                 fix="use an odd kernel size or explicit padding")
                pad.append(total // 2)
            pad = tuple(pad)
        else:
            pad = _pair(mod.padding)
        w = mod.weight.detach().cpu().double().numpy()
        bias = (mod.bias.detach().cpu().double().numpy() if mod.bias is not None
                else np.zeros(mod.out_channels))
        params = dict(kernel_size=k, stride=_pair(mod.stride), padding=pad, dilation=dil,
                      groups=int(mod.groups))
        name = b.add_layer(node, base_name, op="conv2d", inputs=(src.layer,), in_shape=src.shape,
                           out_shape=shape, weight=w, bias=bias, params=params, module=short)
        b.uses.append((name, src.layer, src.post_relu))
        b.env[node] = _Val(name, shape, post_relu=False, fresh=True)
        return

    if kind in ("avgpool2d", "maxpool2d", "adaptive_avgpool2d", "mean"):
        if len(src.shape) != 3:
            raise b.fail(node, f"{label} applied to an input of shape {src.shape}; expected (C, H, W)")
        C, H, W = src.shape
        op = "maxpool2d" if kind == "maxpool2d" else "avgpool2d"
        if kind == "adaptive_avgpool2d":
            osz = mod.output_size if mod is not None else args["output_size"]
            osz = osz if isinstance(osz, (tuple, list)) else (osz, osz)
            oh, ow = (H if osz[0] is None else int(osz[0])), (W if osz[1] is None else int(osz[1]))
            if H % oh or W % ow:
                raise b.fail(node, f"{label} maps {(H, W)} to {(oh, ow)}, which is not a uniform "
                                   "average pooling",
                             fix="choose an output size that divides the input size, or use nn.AvgPool2d",
                             supported=True)
            params = dict(kernel_size=(H // oh, W // ow), stride=(H // oh, W // ow), padding=(0, 0),
                          count_include_pad=True)
            out_shape = (C, oh, ow)
        elif kind == "mean":
            dims = args["dim"]
            dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
            if sorted(d % 4 for d in dims) != [2, 3] or args.get("dtype") is not None:
                raise b.fail(node, f"{label} over dims {dims}; only the spatial mean over (2, 3) "
                                   "(global average pooling) is supported", supported=True)
            params = dict(kernel_size=(H, W), stride=(H, W), padding=(0, 0), count_include_pad=True)
            out_shape = (C, 1, 1)
        elif mod is not None:
            params = _pool_params(b, node, label, kind, mod.kernel_size, mod.stride, mod.padding,
                                  getattr(mod, "dilation", 1), getattr(mod, "ceil_mode", False),
                                  getattr(mod, "count_include_pad", True),
                                  getattr(mod, "divisor_override", None),
                                  getattr(mod, "return_indices", False))
            out_shape = shape
        else:
            params = _pool_params(b, node, label, kind, args["kernel_size"], args["stride"],
                                  args["padding"], args.get("dilation", 1), args["ceil_mode"],
                                  args.get("count_include_pad", True), args.get("divisor_override"),
                                  args.get("return_indices", False))
            out_shape = shape
        if kind == "mean" and not args.get("keepdim"):
            pass  # the reshape (C,1,1) -> (C,) is a no-op in the flat convention
        elif int(np.prod(out_shape)) != int(np.prod(shape)):  # pragma: no cover - sanity
            raise b.fail(node, f"{label}: unexpected output shape {shape}")
        name = b.add_layer(node, base_name, op=op, inputs=(src.layer,), in_shape=src.shape,
                           out_shape=out_shape, params=params, module=short)
        b.uses.append((name, src.layer, src.post_relu))
        b.env[node] = _Val(name, shape, post_relu=False, fresh=False)
        return

    if kind in ("add", "add_"):
        other = args["other"]
        if args.get("alpha", 1) != 1:
            raise b.fail(node, f"{label} with alpha != 1", supported=True)
        a = src
        from torch.fx import Node

        if not isinstance(other, Node) or other not in b.env:
            raise b.fail(node, f"{label} adds a constant ({other!r}) to an activation",
                         fix="only the sum of two activations (residual connection) is supported",
                         supported=True)
        c = b.env[other]
        if a.shape != c.shape:
            raise b.fail(node, f"{label} adds activations of different shapes {a.shape} and {c.shape} "
                               "(broadcasting is not supported)")
        name = b.add_layer(node, base_name, op="add", inputs=(a.layer, c.layer), in_shape=a.shape,
                           out_shape=shape, weight=np.ones(2), params={}, module=short)
        b.uses.append((name, a.layer, a.post_relu))
        b.uses.append((name, c.layer, c.post_relu))
        new = _Val(name, shape, post_relu=False, fresh=False)
        b.env[node] = new
        if kind == "add_":
            b.env[args["input"]] = new
        return

    raise b.fail(node, f"internal error: unhandled kind {kind!r}")  # pragma: no cover


def _pool_params(b, node, label, kind, kernel_size, stride, padding, dilation, ceil_mode,
                 count_include_pad, divisor_override, return_indices) -> dict[str, Any]:
    if ceil_mode:
        raise b.fail(node, f"{label} with ceil_mode=True", fix="use ceil_mode=False", supported=True)
    if return_indices:
        raise b.fail(node, f"{label} with return_indices=True", supported=True)
    k = _pair(kernel_size)
    s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else _pair(stride)
    p = _pair(padding)
    if kind == "maxpool2d":
        return dict(kernel_size=k, stride=s, padding=p, dilation=_pair(dilation))
    if divisor_override is not None:
        raise b.fail(node, f"{label} with divisor_override", supported=True)
    return dict(kernel_size=k, stride=s, padding=p, count_include_pad=bool(count_include_pad))


def _fold_bn(b: _Builder, node, mod, label: str, src: _Val) -> None:
    arg = node.args[0] if node.args else node.kwargs.get("input")
    layer = b.layers[src.layer]
    if not src.fresh or layer["op"] not in ("linear", "conv2d"):
        raise b.fail(node, f"{label} does not directly follow a Linear or Conv2d layer, so it cannot "
                           "be folded into its weights",
                     fix="place BatchNorm right after nn.Linear/nn.Conv2d (before the ReLU)",
                     supported=True)
    if len(arg.users) != 1:
        raise b.fail(node, f"{label}: the output of '{layer['name']}' is also used without the "
                           "BatchNorm, so the BatchNorm cannot be folded")
    if not mod.track_running_stats or mod.running_mean is None:
        raise b.fail(node, f"{label} has no running statistics (track_running_stats=False)",
                     fix="use track_running_stats=True")
    channels = layer["out_shape"][0]
    if mod.num_features != channels or src.shape != layer["out_shape"]:
        raise b.fail(node, f"{label} has {mod.num_features} features but follows '{layer['name']}' "
                           f"with output shape {layer['out_shape']}")
    mean = mod.running_mean.detach().cpu().double().numpy()
    var = mod.running_var.detach().cpu().double().numpy()
    gamma = (mod.weight.detach().cpu().double().numpy() if mod.weight is not None
             else np.ones(channels))
    beta = (mod.bias.detach().cpu().double().numpy() if mod.bias is not None
            else np.zeros(channels))
    scale = gamma / np.sqrt(var + float(mod.eps))
    w = layer["weight"]
    layer["weight"] = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    layer["bias"] = (layer["bias"] - mean) * scale + beta
    layer["module"] = f"{layer['module']} + {_module_label(node, mod)}"
    b.env[node] = _Val(src.layer, src.shape, post_relu=False, fresh=True)


def _finish(b: _Builder, output_val: _Val) -> LayerGraph:
    # prune layers that do not lead to the output
    keep = {output_val.layer}
    for name in reversed(list(b.layers)):
        if name in keep:
            keep.update(b.layers[name]["inputs"])
    order = [n for n in b.layers if n in keep]

    # a value may not be read both before and after its ReLU
    for consumer, producer, post in b.uses:
        if consumer != "<output>" and consumer not in keep:
            continue
        if b.layers[producer]["relu"] and not post:
            node = b.node_of_layer[producer]
            who = "the model output" if consumer == "<output>" else f"layer '{consumer}'"
            raise b.fail(node, f"the output of '{producer}' ({b.layers[producer]['module']}) is used "
                               f"both before its ReLU (by {who}) and after it",
                         fix="apply the ReLU once and use only the rectified value")

    # relu(maxpool(z)) == maxpool(relu(z)): move the ReLU onto z when maxpool is z's only reader
    consumers: dict[str, list[str]] = {n: [] for n in order}
    for n in order:
        for src in b.layers[n]["inputs"]:
            consumers[src].append(n)
    for n in reversed(order):
        layer = b.layers[n]
        if layer["op"] == "maxpool2d" and layer["relu"]:
            src = b.layers[layer["inputs"][0]]
            if (not src["relu"] and src["op"] != "input" and consumers[src["name"]] == [n]
                    and src["name"] != output_val.layer):
                src["relu"] = True

    layers = tuple(Layer(**b.layers[n]) for n in order)
    return LayerGraph(layers=layers, output=output_val.layer, output_shape=output_val.shape)


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
                a = torch.clamp_min(a, 0.0)
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
