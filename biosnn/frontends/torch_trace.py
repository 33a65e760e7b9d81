"""Trace a PyTorch ANN into a :class:`~biosnn.frontends.torch_graph.LayerGraph` (torch.fx).

Tracing rules
-------------
* ``nn.Linear`` -> ``"linear"``, ``nn.Conv2d`` (zero padding) -> ``"conv2d"``,
  ``nn.AvgPool2d``/``F.avg_pool2d`` -> ``"avgpool2d"``,
  ``nn.MaxPool2d``/``F.max_pool2d`` -> ``"maxpool2d"``, ``a + b`` and ``a - b``
  (``operator``/``torch``/``Tensor`` add and sub, ``alpha``) -> ``"add"``.  Pool sizes may
  come from shape arithmetic (``F.avg_pool2d(x, x.size()[3])``, ``x.shape[2:]``): the
  probe run gives their values.  ``ceil_mode=True`` and ``count_include_pad=False``
  are accepted where they change nothing (same windows / no padding).
* ``nn.AdaptiveAvgPool2d``/``F.adaptive_avg_pool2d`` (``nn.AdaptiveMaxPool2d``,
  ``F.adaptive_max_pool2d``) to an output size that divides the input size, and
  ``x.mean((2, 3))`` (``x.amax((2, 3))``), become ``"avgpool2d"`` (``"maxpool2d"``).
* ``nn.BatchNorm1d``/``nn.BatchNorm2d`` directly after a linear/conv layer are
  folded into its weight and bias (exact in eval mode).  Affine maps with
  constants (``x / 255``, ``(x - mean) / std`` with float or buffer constants,
  a BatchNorm on the input or after a ReLU) are folded into the producing
  linear/conv layer when they follow one directly, else into the linear/conv
  layer that reads them (per-channel scale and shift; a shift cannot be folded
  into a zero-padded convolution and is refused).
* ``torch.cat(..., dim=1)`` (channels): a linear/conv layer reading the
  concatenation becomes one partial layer per part (its input channels /
  columns, no ReLU, role ``"virtual"``) and an ``"add"`` summing them; pooling
  and ReLU apply part by part.
* A final ``softmax``/``log_softmax`` over the classes (module, function or
  method) is dropped with a warning: the argmax does not change.
* In-place operations (``h += x``, ``h *= c``, ``relu_``, ``inplace=True``)
  change every tensor that shares the storage (``skip = h``, views), as in
  eager PyTorch; ``a += b`` is recorded as ``operator.iadd`` (torch.fx alone
  traces it as ``a + b``).
* ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``Tensor.relu``, ``clamp(min=0)`` set ``relu=True`` on
  the layer that produced their input; ``nn.ReLU6``, ``F.relu6``, ``nn.Hardtanh(0, a)``,
  ``clamp(0, a)`` and modules with a ``relu_ceiling`` attribute (the QCFS activation of
  :func:`biosnn.codings.rate.prepare`; a boolean ``quantize`` attribute of theirs is
  switched off for the tracer's self-check) also set its ``ceiling``.  ``relu(maxpool(z))`` is rewritten as
  ``maxpool(relu(z))`` (exact: max commutes with a monotone function).
* ``nn.Dropout*``, ``nn.Identity``, ``F.dropout`` (eval) are dropped.
* ``nn.Flatten``, ``torch.flatten(x, 1)``, ``view``, ``reshape``, ``squeeze``,
  ``unsqueeze`` are no-ops: every layer reads its producer's output as a flat
  C-order vector reshaped to its own ``in_shape`` (the same convention as
  ``torch.flatten``).  ``torch.flatten(x)`` (start_dim 0) is refused.

Anything else raises :class:`~biosnn.errors.ConversionError` naming the
module or function and its position in the traced graph.  Finally the graph
is evaluated against the model on the random probe input; a difference (a
misread operation) raises instead of converting silently.

The model is traced in eval mode on a deep copy; the caller's module is never
modified.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
import gc
import inspect
import operator
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from biosnn.errors import ConversionError
from biosnn.frontends.torch_graph import _EMPTY, SUPPORTED, Layer, LayerGraph, forward_numpy, frozen

__all__ = ["trace", "inplace_tracer_class"]


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
def _sig_binary(input, other): ...  # noqa: E704
def _sig_softmax(input, dim=None, _stacklevel=3, dtype=None): ...  # noqa: E704
def _sig_cat(tensors, dim=0): ...  # noqa: E704
def _sig_clamp(input, min=None, max=None): ...  # noqa: E704
def _sig_hardtanh(input, min_val=-1.0, max_val=1.0, inplace=False): ...  # noqa: E704
def _sig_relu6(input, inplace=False): ...  # noqa: E704
def _sig_flatten(input, start_dim=0, end_dim=-1): ...  # noqa: E704
def _sig_amax(input, dim=(), keepdim=False): ...  # noqa: E704


def _bind(sig_fn, node, values: Mapping[Any, Any] = _EMPTY) -> dict[str, Any]:
    """Bind a call's arguments to ``sig_fn``; shape arithmetic nodes become their probe ``values``."""
    from torch.fx.node import map_arg

    def concrete(arg):
        return values[arg] if arg in values else arg

    args, kwargs = map_arg((node.args, node.kwargs), concrete)
    try:
        bound = inspect.signature(sig_fn).bind(*args, **kwargs)
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
        torch.flatten: ("flatten", _sig_flatten),
        torch.reshape: ("reshape", _sig_any),
        torch.squeeze: ("reshape", _sig_any),
        torch.unsqueeze: ("reshape", _sig_any),
        operator.add: ("add", _sig_add),
        torch.add: ("add", _sig_add),
        operator.iadd: ("add_", _sig_add),
        operator.sub: ("sub", _sig_add),
        operator.isub: ("sub", _sig_add),
        operator.imul: ("mul", _sig_binary),
        operator.itruediv: ("div", _sig_binary),
        torch.sub: ("sub", _sig_add),
        operator.mul: ("mul", _sig_binary),
        torch.mul: ("mul", _sig_binary),
        operator.truediv: ("div", _sig_binary),
        torch.div: ("div", _sig_binary),
        F.softmax: ("softmax", _sig_softmax),
        F.log_softmax: ("softmax", _sig_softmax),
        torch.softmax: ("softmax", _sig_softmax),
        torch.log_softmax: ("softmax", _sig_softmax),
        torch.cat: ("cat", _sig_cat),
        torch.concat: ("cat", _sig_cat),
        torch.clamp: ("clamp", _sig_clamp),
        torch.clip: ("clamp", _sig_clamp),
        torch.clamp_min: ("clamp", _sig_clamp),
        F.hardtanh: ("clamp", _sig_hardtanh),
        F.relu6: ("clamp", _sig_relu6),
        F.adaptive_max_pool2d: ("adaptive_maxpool2d", _sig_adaptive),
        torch.amax: ("amax", _sig_amax),
        F.avg_pool2d: ("avgpool2d", _sig_avg_pool2d),
        F.max_pool2d: ("maxpool2d", _sig_max_pool2d),
        F.adaptive_avg_pool2d: ("adaptive_avgpool2d", _sig_adaptive),
        F.dropout: ("dropout", _sig_dropout),
        F.dropout2d: ("dropout", _sig_dropout),
        torch.mean: ("mean", _sig_mean),
        # shape arithmetic; allowed only while it produces no tensor
        getattr: ("meta", None),
        operator.getitem: ("meta", None),
        operator.floordiv: ("meta", None),
    }
    for name in ("concatenate",):
        fn = getattr(torch, name, None)
        if fn is not None:
            table.setdefault(fn, ("cat", _sig_cat))
    for name in ("adaptive_max_pool2d_with_indices",):
        fn = getattr(F, name, None)
        if fn is not None:
            table.setdefault(fn, ("adaptive_maxpool2d", _sig_adaptive))
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
    "flatten": ("flatten", _sig_flatten),
    "squeeze": ("reshape", _sig_any),
    "unsqueeze": ("reshape", _sig_any),
    "contiguous": ("noop", _sig_any),
    "add": ("add", _sig_add),
    "add_": ("add_", _sig_add),
    "sub_": ("sub", _sig_add),
    "mul_": ("mul", _sig_binary),
    "div_": ("div", _sig_binary),
    "clamp_": ("clamp", _sig_clamp),
    "clamp_min_": ("clamp", _sig_clamp),
    "sub": ("sub", _sig_add),
    "mul": ("mul", _sig_binary),
    "div": ("div", _sig_binary),
    "softmax": ("softmax", _sig_softmax),
    "log_softmax": ("softmax", _sig_softmax),
    "clamp": ("clamp", _sig_clamp),
    "clip": ("clamp", _sig_clamp),
    "clamp_min": ("clamp", _sig_clamp),
    "amax": ("amax", _sig_amax),
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
    """What an fx node's tensor is, in terms of layers.

    A plain value is the output of ``layer``.  Two kinds of values are kept
    pending until a layer that can absorb them reads them:

    * ``parts``: a concatenation along channels (``torch.cat(..., 1)``) of
      plain values; a reading linear/conv layer is split into one partial
      layer per part and an ``add``, a pooling is applied part by part;
    * ``affine``: ``layer``'s output times ``scale`` plus ``shift`` (float64
      arrays of ``shape``), e.g. ``(x - mean) / std`` or a BatchNorm that does
      not follow a linear/conv layer; folded into the weights and bias of the
      linear/conv layer that reads it.

    ``softmax`` marks a value that went through a softmax (or log-softmax)
    over its features: only the model output may be such a value.
    """

    layer: str | None   # producing layer (None for a concatenation)
    shape: tuple        # per-sample shape as seen at this node
    post_relu: bool     # the ReLU of `layer` has been applied
    fresh: bool         # straight out of a linear/conv (BN may still fold)
    parts: tuple | None = None
    affine: tuple | None = None
    ceiling: float | None = None   # the ReLU's ceiling applied (with post_relu)
    softmax: str = ""   # "softmax <label>" / "log_softmax <label>" if the value went through one

    @property
    def pending(self) -> bool:
        return self.parts is not None or self.affine is not None or self.softmax

    def reshaped(self, shape: tuple) -> "_Val":
        affine = None
        if self.affine is not None:
            affine = tuple(a.reshape(shape) for a in self.affine)
        return dataclasses.replace(self, shape=tuple(shape), fresh=False, affine=affine)


class _Builder:
    def __init__(self, gm, nodes_index, values: Mapping[Any, Any] = _EMPTY):
        self.gm = gm
        self.index = nodes_index
        self.values = values          # probe values of shape-arithmetic nodes
        self.layers: dict[str, dict[str, Any]] = {}
        self.env: dict[Any, _Val] = {}
        self.alias: dict[Any, Any] = {}   # node -> the node whose tensor storage it shares
        self.uses: list[tuple] = []   # (consumer, producer, post_relu, ceiling seen)
        self.node_of_layer: dict[str, Any] = {}
        self.split_adds: set[str] = set()   # adds that sum the partial layers of a split linear/conv
        self.dropped: list[str] = []        # final operations dropped (softmax)

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

    def plain(self, node, val: _Val, what: str) -> _Val:
        """``val`` if it is the output of one layer; a clear error for pending values."""
        if val.softmax:
            raise self.fail(node, f"{what} reads the output of a softmax",
                            fix="use the softmax only as the last operation of the model (it is dropped: "
                                "the prediction, the argmax, does not change)", supported=True)
        if val.parts is not None:
            raise self.fail(node, f"{what} reads a concatenation (torch.cat); only Linear, Conv2d "
                                  "(groups=1), pooling, ReLU, flatten/view and further torch.cat can read one",
                            fix="apply a Conv2d/Linear/pooling to the concatenated activations first",
                            supported=True)
        if val.affine is not None:
            raise self.fail(node, f"{what} reads a rescaled/shifted activation (x * a + b, x / a, x - b or a "
                                  "BatchNorm that follows no Linear/Conv2d); such affine maps are folded "
                                  "into the Linear/Conv2d layer that reads them",
                            fix="apply the affine map (input normalisation) right before a Linear/Conv2d "
                                "layer, or normalise the data outside the model", supported=True)
        return val

    def add_layer(self, node, name: str, **kw) -> str:
        name = self.unique(name)
        kw.setdefault("relu", False)
        kw.setdefault("ceiling", None)
        self.layers[name] = dict(name=name, **kw)
        self.node_of_layer[name] = node
        return name

    def mutate(self, target, new: _Val) -> None:
        """An in-place operation changed the tensor of fx node ``target`` to ``new``.

        Every node sharing its storage (the node itself, views such as
        ``view``/``flatten``/``Identity``, earlier in-place results) reads the
        new value from now on, as in eager PyTorch.
        """
        root = self.alias.get(target, target)
        for other in list(self.env):
            if self.alias.get(other, other) is root:
                self.env[other] = new if self.env[other].shape == new.shape else new.reshaped(self.env[other].shape)


@functools.lru_cache(maxsize=None)
def inplace_tracer_class():
    """A ``torch.fx.Tracer`` subclass that records ``a += b`` (``-=``, ``*=``, ``/=``) as in-place calls.

    torch.fx's ``Proxy`` has no ``__iadd__``, so by default ``h += f(h)`` traces as
    ``h = h + f(h)``: a tensor ``skip`` that aliases ``h`` would keep the old value in
    the traced graph while eager PyTorch changes it.  This tracer records
    ``operator.iadd`` (``isub``, ``imul``, ``itruediv``), which the GraphModule runs in
    place, as eager PyTorch does.  Modules with a ``relu_ceiling`` attribute (QCFS) are
    leaves.  Subclass it to add leaves (``is_leaf_module``).
    """
    import torch.fx as fx

    class Proxy(fx.Proxy):
        def _inplace(self, fn, other):
            return self.tracer.create_proxy("call_function", fn, (self, other), {})

        def __iadd__(self, other):
            return self._inplace(operator.iadd, other)

        def __isub__(self, other):
            return self._inplace(operator.isub, other)

        def __imul__(self, other):
            return self._inplace(operator.imul, other)

        def __itruediv__(self, other):
            return self._inplace(operator.itruediv, other)

    class InplaceTracer(fx.Tracer):
        def proxy(self, node):
            return Proxy(node, self)

        def is_leaf_module(self, m, qualname):
            # activations with a ceiling (QCFS) are traced as one call, not through their forward()
            return hasattr(type(m), "relu_ceiling") or super().is_leaf_module(m, qualname)

    return InplaceTracer


def _InplaceTracer():
    return inplace_tracer_class()()


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
        tracer = _InplaceTracer()
        gm = fx.GraphModule(model, tracer.trace(model), type(model).__name__)
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError, ...
        raise ConversionError(
            f"torch.fx could not trace {type(model).__name__}.forward: {type(exc).__name__}: {exc}. "
            "Fix: avoid data-dependent control flow and non-torch operations in forward(); "
            f"supported layers: {SUPPORTED}."
        ) from None

    nodes = list(gm.graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    modules = dict(gm.named_modules())
    ftable = _function_table()
    builder = _Builder(gm, index)

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
            kinds[node] = ("const", None)
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
    _check_flatten_start(builder, nodes, kinds)

    # ---- pass 2: shapes and shape arithmetic (batch of 2 so that a flattened batch dimension is detected)
    batch = 2
    params = list(model.parameters())
    dtype = params[0].dtype if params and params[0].is_floating_point() else torch.float32
    gen = torch.Generator().manual_seed(0)
    probe = torch.rand((batch,) + input_shape, generator=gen, dtype=dtype)
    values: dict[Any, Any] = {}

    class _Probe(ShapeProp):
        def run_node(self, n):
            result = super().run_node(n)
            if n.op == "get_attr" or not isinstance(result, torch.Tensor):
                values[n] = result
            return result

    try:
        with torch.no_grad():
            _Probe(gm).propagate(probe)
    except Exception as exc:
        raise ConversionError(
            f"{type(model).__name__} does not run on an input of shape {(batch,) + input_shape} "
            f"(input_shape={input_shape}): {type(exc).__name__}: {exc}"
            + _batch_hint(gm, input_shape, dtype)) from None
    builder.values = values

    # ---- pass 3: build layers
    output_val: _Val | None = None
    for node in nodes:
        kind, sig = kinds[node]
        if kind == "output":
            output_val = _output_value(builder, node)
            continue
        meta = node.meta.get("tensor_meta")
        is_tensor = meta is not None and hasattr(meta, "shape")
        label = _node_label(node, modules)
        if kind == "const":
            continue
        if kind == "meta" or (kind in _ARITH and not is_tensor
                              and not any(isinstance(a, fx.Node) and a in builder.env
                                          for a in node.all_input_nodes)):
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

    graph = _finish(builder, output_val)
    for mod in model.modules():
        if getattr(mod, "relu_ceiling", None) is not None and hasattr(mod, "quantize"):
            mod.quantize = False   # the graph is the clipped network; its SNN does the quantising
    _check_against_model(graph, model, probe, builder.dropped)
    for what in builder.dropped:
        warnings.warn(f"{what}: the converted network outputs the scores before it; the prediction "
                      "(the argmax) is the same", stacklevel=3)
    # the traced GraphModule and the model's copy form reference cycles: free them now, not at some
    # later collection (a VGG-11's copy is 37 MB, and conversion's peak memory comes next)
    del gm, model, builder, values, kinds, modules, nodes, index
    gc.collect()
    return graph


_ARITH = ("add", "add_", "sub", "mul", "div")
_INPLACE_FUNCTIONS = {operator.iadd, operator.isub, operator.imul, operator.itruediv}


def _inplace(node, mod=None, args: Mapping[str, Any] = _EMPTY) -> bool:
    """Whether the call changes its first argument's tensor in place."""
    if node.op == "call_function":
        return node.target in _INPLACE_FUNCTIONS or getattr(node.target, "__name__", "").endswith("_") \
            or bool(args.get("inplace"))
    if node.op == "call_method":
        return node.target.endswith("_")
    return bool(getattr(mod, "inplace", False))


def _check_flatten_start(b: _Builder, nodes, kinds) -> None:
    """``torch.flatten(x)`` / ``x.flatten()`` (start_dim 0) flatten the batch dimension too."""
    for node in nodes:
        if kinds[node][0] != "flatten":
            continue
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        if start == 0:
            call = "torch.flatten(x)" if node.op == "call_function" else "x.flatten()"
            raise b.fail(node, f"{call} without start_dim flattens the batch dimension into the features "
                               "(the model then only runs on one sample at a time)",
                         fix="flatten from dim 1: torch.flatten(x, 1), x.flatten(1) or nn.Flatten()")


def _batch_hint(gm, input_shape, dtype) -> str:
    """Why a model that fails on a batch of 2 may still run on one sample."""
    import torch

    try:
        with torch.no_grad():
            gm(torch.rand((1,) + tuple(input_shape), dtype=dtype))
    except Exception:
        return ""
    return (". The model runs on a batch of 1 but not on a batch of 2: an operation mixes the batch "
            "dimension into the features. Fix: keep dim 0 as the batch dimension, e.g. "
            "torch.flatten(x, 1) or x.view(x.size(0), -1) instead of torch.flatten(x) or x.view(-1)")


def _output_value(b: _Builder, node) -> _Val:
    val = b.val(node, node.args[0], "the model output")
    if val.softmax:
        b.dropped.append(val.softmax)
        val = dataclasses.replace(val, softmax="")
    val = b.plain(node, val, "the model output")
    b.uses.append(("<output>", val.layer, val.post_relu, val.ceiling))
    return val


def _check_against_model(graph: "LayerGraph", model, probe, dropped) -> None:
    """The traced graph must compute what the model computes (float64, on the random probe)."""
    import torch

    with torch.no_grad():
        ref = model.double()(probe.double())
        if not isinstance(ref, torch.Tensor):
            return
        out = torch.from_numpy(forward_numpy(graph, probe)[graph.output]).reshape(ref.shape[0], -1)
        for what in dropped:
            out = torch.log_softmax(out, -1) if what.startswith("log_softmax") else torch.softmax(out, -1)
        ref = ref.reshape(ref.shape[0], -1)
    err = float((out - ref).abs().max())
    tol = 1e-6 * max(1.0, float(ref.abs().max()))
    if not err <= tol:
        raise ConversionError(
            f"internal check failed: the traced graph of {type(model).__name__} differs from the model "
            f"by {err:.3g} on a random input (the tracer misread an operation of forward(), e.g. an "
            "in-place operation on a tensor another variable refers to). Fix: write such operations "
            "out of place (h = h + f(h)) and report the model to the biosnn developers")


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
    if isinstance(mod, nn.Hardtanh) or getattr(mod, "relu_ceiling", None) is not None:  # ReLU6, QCFS
        return "clamp"
    if isinstance(mod, (nn.Softmax, nn.LogSoftmax)):
        return "softmax"
    if isinstance(mod, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)):
        return "noop"
    if isinstance(mod, (nn.Flatten, nn.Unflatten)):
        return "reshape"
    if isinstance(mod, nn.AvgPool2d):
        if mod.divisor_override is not None:
            raise b.fail(node, f"{label} with divisor_override", supported=True)
        return "avgpool2d"
    if isinstance(mod, nn.MaxPool2d):
        if mod.return_indices:
            raise b.fail(node, f"{label} with return_indices=True", supported=True)
        return "maxpool2d"
    if isinstance(mod, nn.AdaptiveAvgPool2d):
        return "adaptive_avgpool2d"
    if isinstance(mod, nn.AdaptiveMaxPool2d):
        if mod.return_indices:
            raise b.fail(node, f"{label} with return_indices=True", supported=True)
        return "adaptive_maxpool2d"
    raise b.fail(node, f"unsupported {label}", supported=True)


def _module_label(node, mod) -> str:
    return f"{node.target} ({type(mod).__name__})"


def _module_args(node, mod) -> dict[str, Any]:
    """The arguments a module call means, in the names of the functional signatures."""
    from torch import nn

    args: dict[str, Any] = {"input": node.args[0] if node.args else node.kwargs.get("input")}
    if isinstance(mod, nn.Hardtanh):
        args.update(min=float(mod.min_val), max=float(mod.max_val), inplace=bool(mod.inplace))
    elif isinstance(mod, (nn.Softmax, nn.LogSoftmax)):
        args["dim"] = mod.dim
    elif isinstance(mod, (nn.AvgPool2d, nn.MaxPool2d)):
        args.update(kernel_size=mod.kernel_size, stride=mod.stride, padding=mod.padding,
                    dilation=getattr(mod, "dilation", 1), ceil_mode=mod.ceil_mode,
                    count_include_pad=getattr(mod, "count_include_pad", True),
                    divisor_override=getattr(mod, "divisor_override", None),
                    return_indices=getattr(mod, "return_indices", False))
    elif isinstance(mod, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        args["output_size"] = mod.output_size
    return args


def _build_node(b: _Builder, node, kind: str, sig, shape: tuple, modules, input_shape) -> None:
    if kind == "input":
        name = b.add_layer(node, "input", op="input", inputs=(), in_shape=input_shape,
                           out_shape=input_shape, module="input")
        b.env[node] = _Val(name, input_shape, post_relu=False, fresh=False)
        return

    label = _node_label(node, modules)
    if node.op == "call_module":
        mod = modules[node.target]
        if len(node.args) + len(node.kwargs) != 1:
            raise b.fail(node, f"module {label} is called with more than one argument")
        args = _module_args(node, mod)
        base_name = node.target if node.target not in b.layers else node.name
        short = _module_label(node, mod)
    else:
        mod = None
        args = _bind(sig, node, b.values) if sig is not _sig_any else {"input": node.args[0]}
        base_name = node.name
        short = (_function_label(node.target) if node.op == "call_function"
                 else f"Tensor.{node.target}")

    if kind == "cat":
        _cat(b, node, args, shape, label)
        return
    if kind in _ARITH:
        _arith(b, node, kind, args, shape, label, base_name, short)
        return

    src = b.val(node, args["input"], label)

    if kind in ("noop", "dropout"):
        if kind == "dropout" and args.get("training"):
            raise b.fail(node, f"{label} with training=True is random at inference",
                         fix="pass training=self.training")
        b.env[node] = src
        b.alias[node] = b.alias.get(args["input"], args["input"])
        return

    if kind in ("reshape", "flatten"):
        if int(np.prod(shape)) != int(np.prod(src.shape)):
            raise b.fail(node, f"{label} changes the number of features per sample "
                               f"({src.shape} -> {shape})")
        b.env[node] = src.reshaped(shape)
        b.alias[node] = b.alias.get(args["input"], args["input"])
        return

    if kind == "softmax":
        dim = args.get("dim")
        nd = len(src.shape) + 1
        if len(src.shape) != 1 or (dim is not None and dim % nd != 1):
            raise b.fail(node, f"{label} over dim {dim} of activations of shape {src.shape}; only a softmax "
                               "over the class scores (dim=1 of an (N, classes) output) can be dropped",
                         supported=True)
        src = b.plain(node, src, label)
        log = "log_softmax" in short.lower() or "LogSoftmax" in short
        b.env[node] = dataclasses.replace(src, fresh=False,
                                          softmax=f"{'log_softmax' if log else 'softmax'} {label}")
        return

    ceiling = None
    if kind == "clamp":
        lo, hi = args.get("min", args.get("min_val")), args.get("max", args.get("max_val"))
        if short.endswith("relu6"):
            lo, hi = 0.0, 6.0
        if mod is not None and getattr(mod, "relu_ceiling", None) is not None:
            lo, hi = 0.0, float(mod.relu_ceiling)
        if lo != 0 or (hi is not None and not (float(hi) > 0 and np.isfinite(float(hi)))):
            raise b.fail(node, f"{label} clips at [{lo}, {hi}]; only clamp(min=0) (a ReLU) and clamp(0, a) "
                               "with a > 0 (a ReLU with a ceiling) are supported", supported=True)
        kind, ceiling = "relu", None if hi is None else float(hi)

    if kind in ("relu", "relu_"):
        inplace = kind == "relu_" or _inplace(node, mod, args)
        if src.parts is not None:
            new = dataclasses.replace(src, parts=tuple(_relu(b, node, label, p, ceiling) for p in src.parts))
        else:
            new = _relu(b, node, label, b.plain(node, src, label), ceiling)
        b.env[node] = new
        if inplace:
            b.mutate(args["input"], new)
            b.alias[node] = b.alias.get(args["input"], args["input"])
        return

    if kind == "bn":
        _bn(b, node, mod, label, src)
        return

    if kind in ("linear", "conv2d"):
        _weighted(b, node, kind, mod, src, shape, label, base_name, short)
        return

    if kind in ("avgpool2d", "maxpool2d", "adaptive_avgpool2d", "adaptive_maxpool2d", "mean", "amax"):
        if len(src.shape) != 3:
            raise b.fail(node, f"{label} applied to an input of shape {src.shape}; expected (C, H, W)")
        params = _pool_params(b, node, kind, label, args, src.shape, shape)
        op = "maxpool2d" if kind in ("maxpool2d", "adaptive_maxpool2d", "amax") else "avgpool2d"
        oh, ow = (1, 1) if kind in ("mean", "amax") else shape[1:]
        parts = src.parts if src.parts is not None else (b.plain(node, src, label),)
        outs = []
        for k, part in enumerate(parts):
            out_shape = (part.shape[0], oh, ow)
            name = b.add_layer(node, base_name if len(parts) == 1 else f"{base_name}_p{k}", op=op,
                               inputs=(part.layer,), in_shape=part.shape, out_shape=out_shape,
                               params=params, module=short)
            b.uses.append((name, part.layer, part.post_relu, part.ceiling))
            outs.append(_Val(name, out_shape, post_relu=False, fresh=False))
        if src.parts is None:
            b.env[node] = outs[0].reshaped(shape) if outs[0].shape != shape else outs[0]
        else:
            b.env[node] = _Val(None, shape, post_relu=False, fresh=False, parts=tuple(outs))
        return

    raise b.fail(node, f"internal error: unhandled kind {kind!r}")  # pragma: no cover


def _relu(b: _Builder, node, label: str, src: _Val, ceiling: float | None = None) -> _Val:
    """ReLU (with an optional ceiling) of a plain value: set on the layer that produced it."""
    layer = b.layers[src.layer]
    if layer["op"] == "input":
        raise b.fail(node, f"{label} applied to the network input",
                     fix="rectify the data before the model, not inside it", supported=True)
    old = layer.get("ceiling") if src.post_relu else None
    if ceiling is None:
        ceiling = old
    elif old is not None:
        ceiling = min(ceiling, old)
    if src.post_relu and ceiling != src.ceiling and any(u[1] == src.layer for u in b.uses):
        raise b.fail(node, f"{label} clips the output of '{src.layer}', which other layers already read "
                           "unclipped", fix="clip the activation once, before any layer reads it")
    layer["relu"] = True
    layer["ceiling"] = ceiling
    return _Val(src.layer, src.shape, post_relu=True, fresh=False, ceiling=ceiling)


def _pool_params(b: _Builder, node, kind: str, label: str, args, in_shape, out_shape) -> dict[str, Any]:
    C, H, W = in_shape
    if kind in ("mean", "amax"):
        dims = args["dim"]
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        if sorted(d % 4 for d in dims) != [2, 3] or args.get("dtype") is not None:
            what = "average" if kind == "mean" else "max"
            raise b.fail(node, f"{label} over dims {dims}; only the spatial {kind} over (2, 3) "
                               f"(global {what} pooling) is supported", supported=True)
        params = dict(kernel_size=(H, W), stride=(H, W), padding=(0, 0))
    elif kind in ("adaptive_avgpool2d", "adaptive_maxpool2d"):
        oh, ow = out_shape[1:]
        if H % oh or W % ow:
            raise b.fail(node, f"{label} maps {(H, W)} to {(oh, ow)}, which is not a uniform pooling",
                         fix="choose an output size that divides the input size, or use nn.AvgPool2d/MaxPool2d",
                         supported=True)
        params = dict(kernel_size=(H // oh, W // ow), stride=(H // oh, W // ow), padding=(0, 0))
    else:
        if args.get("return_indices"):
            raise b.fail(node, f"{label} with return_indices=True", supported=True)
        if args.get("divisor_override") is not None:
            raise b.fail(node, f"{label} with divisor_override", supported=True)
        k = _pair(args["kernel_size"])
        stride = args.get("stride")
        s = k if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0) else _pair(stride)
        p = _pair(args.get("padding", 0))
        d = _pair(args.get("dilation", 1)) if kind == "maxpool2d" else (1, 1)
        floor = tuple((n + 2 * pp - dd * (kk - 1) - 1) // ss + 1 for n, pp, dd, kk, ss in zip((H, W), p, d, k, s))
        if args.get("ceil_mode") and floor != tuple(out_shape[1:]):
            raise b.fail(node, f"{label} with ceil_mode=True makes {tuple(out_shape[1:])} windows from an "
                               f"input of {(H, W)} (ceil_mode=False makes {floor}); the partial windows at the "
                               "border are not supported",
                         fix="use ceil_mode=False, or pad the input so that the windows tile it", supported=True)
        params = dict(kernel_size=k, stride=s, padding=p)
        if kind == "maxpool2d":
            params["dilation"] = d
        else:
            # without padding every window is full: count_include_pad does not matter
            params["count_include_pad"] = bool(args.get("count_include_pad", True)) or p == (0, 0)
        return params
    if kind in ("maxpool2d", "adaptive_maxpool2d", "amax"):
        params["dilation"] = (1, 1)
    else:
        params["count_include_pad"] = True
    return params


def _cat(b: _Builder, node, args, shape: tuple, label: str) -> None:
    tensors = args["tensors"]
    if not isinstance(tensors, (tuple, list)):
        raise b.fail(node, f"{label} of {tensors!r}: expected a list of activations")
    vals = [b.val(node, t, label) for t in tensors]
    nd = len(vals[0].shape) + 1
    dim = args.get("dim", 0)
    if not isinstance(dim, int) or dim % nd != 1 or len(vals[0].shape) not in (1, 3):
        raise b.fail(node, f"{label} along dim {dim} of activations of shape {vals[0].shape}; only the "
                           "concatenation along channels (dim=1 of (N, C, H, W) or (N, F)) is supported",
                     supported=True)
    parts: list[_Val] = []
    for v in vals:
        if v.parts is not None:
            parts.extend(v.parts)
        else:
            parts.append(b.plain(node, v, label))
    if len(parts) == 1:
        b.env[node] = parts[0].reshaped(shape)
        return
    b.env[node] = _Val(None, shape, post_relu=False, fresh=False, parts=tuple(parts))


def _constant(b: _Builder, node, arg, shape: tuple, label: str) -> np.ndarray:
    """A constant operand broadcast to the per-sample ``shape`` (float64)."""
    import torch

    value = b.values.get(arg, arg)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().double().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise b.fail(node, f"{label} with operand {arg!r}", supported=True) from None
    if arr.ndim > len(shape):
        if arr.ndim != len(shape) + 1 or arr.shape[0] != 1:
            raise b.fail(node, f"{label} with a constant of shape {arr.shape} that is not the same for every "
                               "sample", fix="give the constant the shape (1, C, 1, 1), (C, 1, 1) or a scalar")
        arr = arr[0]
    try:
        return np.broadcast_to(arr, shape).astype(np.float64)
    except ValueError:
        raise b.fail(node, f"{label} with a constant of shape {arr.shape} that does not broadcast to the "
                           f"activations' shape {shape}") from None


def _arith(b: _Builder, node, kind: str, args, shape: tuple, label: str, base_name: str, short: str) -> None:
    """``+ - * /`` of two activations (an add layer) or of an activation and a constant (an affine map)."""
    from torch.fx import Node

    x, y = args["input"], args["other"]
    is_act = [isinstance(v, Node) and v in b.env for v in (x, y)]
    alpha = float(args.get("alpha", 1) if args.get("alpha", 1) is not None else 1)
    inplace = _inplace(node)
    if all(is_act):
        if kind in ("mul", "div"):
            raise b.fail(node, f"{label} multiplies two activations", supported=True)
        a, c = (b.plain(node, b.val(node, v, label), label) for v in (x, y))
        if a.shape != c.shape:
            raise b.fail(node, f"{label} adds activations of different shapes {a.shape} and {c.shape} "
                               "(broadcasting is not supported)")
        coef = alpha if kind in ("add", "add_") else -alpha
        name = b.add_layer(node, base_name, op="add", inputs=(a.layer, c.layer), in_shape=a.shape,
                           out_shape=shape, weight=np.array([1.0, coef]), params={}, module=short)
        b.uses.append((name, a.layer, a.post_relu, a.ceiling))
        b.uses.append((name, c.layer, c.post_relu, c.ceiling))
        new = _Val(name, shape, post_relu=False, fresh=False)
    elif any(is_act):
        act_arg, const_arg = (x, y) if is_act[0] else (y, x)
        src = b.val(node, act_arg, label)
        if src.parts is not None or src.softmax:
            b.plain(node, src, label)
        if src.shape != shape:
            raise b.fail(node, f"{label} broadcasts the activations from {src.shape} to {shape}")
        c = _constant(b, node, const_arg, shape, label)
        ones = np.ones(shape)
        if kind in ("add", "add_"):
            scale, shift = ones, alpha * c
        elif kind == "sub":
            scale, shift = (ones, -alpha * c) if is_act[0] else (-alpha * ones, c)
        elif kind == "mul":
            scale, shift = c, np.zeros(shape)
        elif is_act[0]:
            scale, shift = 1.0 / c, np.zeros(shape)
        else:
            raise b.fail(node, f"{label} divides a constant by an activation", supported=True)
        new = _affine(b, node, src, scale, shift, label, single_use=len(act_arg.users) == 1)
    else:  # pragma: no cover - constant arithmetic gives no tensor of the batch
        raise b.fail(node, f"{label} of two constants", supported=True)
    b.env[node] = new
    if inplace:
        b.mutate(x, new)
        b.alias[node] = b.alias.get(x, x)


def _per_channel(arr: np.ndarray) -> np.ndarray | None:
    """``arr`` of shape ``(C, ...)`` as ``(C,)`` if it is constant over all but the first axis."""
    flat = arr.reshape(arr.shape[0], -1)
    return flat[:, 0].copy() if np.all(flat == flat[:, :1]) else None


def _affine(b: _Builder, node, src: _Val, scale: np.ndarray, shift: np.ndarray, label: str,
            single_use: bool) -> _Val:
    """``src * scale + shift``: folded into the producing linear/conv layer if it can be, else pending."""
    if src.affine is not None:
        s0, t0 = src.affine
        scale, shift = s0 * scale, t0 * scale + shift
    elif src.fresh and single_use:
        layer = b.layers[src.layer]
        sc, sh = _per_channel(scale), _per_channel(shift)
        if (layer["op"] in ("linear", "conv2d", "add") and sc is not None and sh is not None
                and src.shape == layer["out_shape"]):
            _fold_into_producer(b, src.layer, sc, sh, label)
            return _Val(src.layer, src.shape, post_relu=False, fresh=True)
    if np.all(scale == 1) and np.all(shift == 0):
        return src
    return _Val(src.layer, src.shape, post_relu=src.post_relu, fresh=False,
                affine=(np.array(scale, dtype=np.float64), np.array(shift, dtype=np.float64)))


def _fold_into_producer(b: _Builder, name: str, scale: np.ndarray, shift: np.ndarray, label: str) -> None:
    """``layer(x) * scale + shift`` (per output channel) folded into the layer's weight and bias.

    A split layer (an ``add`` of partial layers reading a concatenation) gets
    the scale in every part and the shift in the first part's bias.
    """
    layer = b.layers[name]
    targets = [b.layers[p] for p in layer["inputs"]] if layer["op"] == "add" else [layer]
    for k, t in enumerate(targets):
        w = t["weight"]
        t["weight"] = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        t["bias"] = t["bias"] * scale + (shift if k == 0 else 0.0)
    layer["module"] = f"{layer['module']} + {label}"


def _bn(b: _Builder, node, mod, label: str, src: _Val) -> None:
    """BatchNorm (eval): folded into the producing linear/conv, else an affine map for the next one."""
    arg = node.args[0] if node.args else node.kwargs.get("input")
    if not mod.track_running_stats or mod.running_mean is None:
        raise b.fail(node, f"{label} has no running statistics (track_running_stats=False)",
                     fix="use track_running_stats=True")
    channels = src.shape[0]
    if mod.num_features != channels:
        raise b.fail(node, f"{label} has {mod.num_features} features but reads activations of shape {src.shape}")
    if src.parts is not None:
        b.plain(node, src, label)
    mean = mod.running_mean.detach().cpu().double().numpy()
    var = mod.running_var.detach().cpu().double().numpy()
    gamma = (mod.weight.detach().cpu().double().numpy() if mod.weight is not None
             else np.ones(channels))
    beta = (mod.bias.detach().cpu().double().numpy() if mod.bias is not None
            else np.zeros(channels))
    scale = gamma / np.sqrt(var + float(mod.eps))
    shift = beta - mean * scale
    shape_c = (-1,) + (1,) * (len(src.shape) - 1)
    full = [np.broadcast_to(a.reshape(shape_c), src.shape) for a in (scale, shift)]
    layer = b.layers[src.layer]
    if src.fresh and layer["op"] in ("linear", "conv2d", "add") and len(arg.users) != 1:
        raise b.fail(node, f"{label}: the output of '{layer['name']}' is also used without the "
                           "BatchNorm, so the BatchNorm cannot be folded")
    b.env[node] = _affine(b, node, src, full[0], full[1], _module_label(node, mod), single_use=True)


def _conv_padding(b: _Builder, node, mod, label: str) -> tuple[int, int]:
    k, dil = _pair(mod.kernel_size), _pair(mod.dilation)
    if not isinstance(mod.padding, str):
        return _pair(mod.padding)
    pad = []
    for kk, dd in zip(k, dil):
        total = 0 if mod.padding == "valid" else dd * (kk - 1)
        if total % 2:
            raise b.fail(node, f"{label} with padding='same' pads asymmetrically",
                         fix="use an odd kernel size or explicit padding")
        pad.append(total // 2)
    return tuple(pad)


def _weighted(b: _Builder, node, kind: str, mod, src: _Val, shape: tuple, label: str, base_name: str,
              short: str) -> None:
    """nn.Linear / nn.Conv2d reading a plain value, an affine map of one (folded) or a concatenation (split)."""
    if src.softmax:
        b.plain(node, src, label)
    w = frozen(mod.weight.detach().cpu().numpy())  # one float64 copy, kept by the Layer
    n_out = mod.out_features if kind == "linear" else mod.out_channels
    bias = mod.bias.detach().cpu().double().numpy() if mod.bias is not None else np.zeros(n_out)
    if kind == "linear":
        if src.shape != (mod.in_features,):
            raise b.fail(node, f"{label} applied to an input of shape {src.shape}",
                         fix="flatten the activations before nn.Linear (torch.flatten(x, 1))")
        params: dict[str, Any] = {}
    else:
        if len(src.shape) != 3:
            raise b.fail(node, f"{label} applied to an input of shape {src.shape}; expected (C, H, W)")
        params = dict(kernel_size=_pair(mod.kernel_size), stride=_pair(mod.stride),
                      padding=_conv_padding(b, node, mod, label), dilation=_pair(mod.dilation),
                      groups=int(mod.groups))

    if src.affine is not None:
        w, bias = _fold_affine_input(b, node, kind, w, bias, params, src, label)
        src = dataclasses.replace(src, affine=None)
        short = f"{short} + preceding affine map"

    if src.parts is None:
        name = b.add_layer(node, base_name, op=kind, inputs=(src.layer,), in_shape=src.shape,
                           out_shape=shape, weight=w, bias=bias, params=params, module=short)
        b.uses.append((name, src.layer, src.post_relu, src.ceiling))
        b.env[node] = _Val(name, shape, post_relu=False, fresh=True)
        return

    # a concatenation: one partial layer per part (the columns / input channels it reads), summed by an add
    if kind == "conv2d" and params["groups"] != 1:
        raise b.fail(node, f"{label} with groups={params['groups']} reads a concatenation",
                     fix="use groups=1 after torch.cat", supported=True)
    names, start = [], 0
    for k, part in enumerate(src.parts):
        width = part.shape[0] if kind == "conv2d" else int(np.prod(part.shape))
        wk = w[:, start:start + width]
        start += width
        name = b.add_layer(node, f"{base_name}_p{k}", op=kind, inputs=(part.layer,), in_shape=part.shape,
                           out_shape=shape, weight=wk, bias=bias if k == 0 else np.zeros(n_out),
                           params=params, module=f"{short} (input part {k} of the concatenation)")
        b.uses.append((name, part.layer, part.post_relu, part.ceiling))
        names.append(name)
    name = b.add_layer(node, base_name, op="add", inputs=tuple(names), in_shape=shape, out_shape=shape,
                       weight=np.ones(len(names)), params={}, module=short)
    for n in names:
        b.uses.append((name, n, False, None))
    b.split_adds.add(name)
    b.env[node] = _Val(name, shape, post_relu=False, fresh=True)


def _fold_affine_input(b: _Builder, node, kind: str, w: np.ndarray, bias: np.ndarray, params, src: _Val,
                       label: str) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of ``layer(x * scale + shift)`` as a layer of ``x``."""
    scale, shift = src.affine
    if kind == "linear":
        s, t = scale.reshape(-1), shift.reshape(-1)
        return w * s[None, :], bias + w @ t
    sc, sh = _per_channel(scale), _per_channel(shift)
    if sc is None or sh is None:
        raise b.fail(node, f"{label} reads an affine map of its input that varies over the image; only one "
                           "scale and shift per channel can be folded into a convolution",
                     fix="normalise per channel ((x - mean) / std with mean, std of shape (C, 1, 1))")
    if any(params["padding"]) and np.any(sh != 0):
        raise b.fail(node, f"{label} zero-pads an input shifted by a constant ((x - mean) / std, a "
                           "BatchNorm ...): folding the shift into the bias would change the border outputs",
                     fix="normalise the data outside the model, remove the mean subtraction, or use "
                         "padding=0 in the first convolution")
    groups = params["groups"]
    out_c, in_pg = w.shape[0], w.shape[1]
    ch = (np.arange(out_c)[:, None] // (out_c // groups)) * in_pg + np.arange(in_pg)[None, :]
    s, t = sc[ch], sh[ch]                                   # (out, in/groups)
    return w * s[:, :, None, None], bias + np.einsum("oikl,oi->o", w, t)


def _finish(b: _Builder, output_val: _Val) -> LayerGraph:
    # prune layers that do not lead to the output
    keep = {output_val.layer}
    for name in reversed(list(b.layers)):
        if name in keep:
            keep.update(b.layers[name]["inputs"])
    order = [n for n in b.layers if n in keep]

    # a value may not be read both before and after its ReLU
    for consumer, producer, post, ceiling in b.uses:
        if consumer != "<output>" and consumer not in keep:
            continue
        node = b.node_of_layer[producer]
        who = "the model output" if consumer == "<output>" else f"layer '{consumer}'"
        if b.layers[producer]["relu"] and not post:
            raise b.fail(node, f"the output of '{producer}' ({b.layers[producer]['module']}) is used "
                               f"both before its ReLU (by {who}) and after it",
                         fix="apply the ReLU once and use only the rectified value")
        if post and b.layers[producer].get("ceiling") != ceiling:
            raise b.fail(node, f"the output of '{producer}' ({b.layers[producer]['module']}) is used "
                               f"both with and without the ceiling of its clipped ReLU (by {who})",
                         fix="clip the activation once and use only the clipped value")

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
                src["ceiling"] = layer.get("ceiling")

    layers = tuple(Layer(**b.layers[n]) for n in order)
    return LayerGraph(layers=layers, output=output_val.layer, output_shape=output_val.shape)
