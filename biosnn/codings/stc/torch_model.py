"""STCSNN in torch: spike train encoding (STEB), synapses, current accumulation (CAB).

The spatio-temporal conversion blocks of STCSNN (Xu et al., "STCSNN: High
energy efficiency spike-train level spiking neural networks with
spatio-temporal conversion") as torch modules.  :class:`STCNet` is the model
that ``biosnn.prepare(model, "stc")`` returns: it trains (forward with the real
spikes, backward with the paper's equivalent gradient), and in float64 it is
the exact reference that the Brian2 network of
:mod:`biosnn.codings.stc.spec` reproduces.

Semantics (all potentials dimensionless)
----------------------------------------
Thresholds, one per step ``t = 0, ..., T-1`` of a block::

    theta_t = theta0 * exp(-t / tau)          (numpy float64, :func:`theta_table`)

STEB (an IF neuron per unit, no input current, reset by subtraction)::

    v = z                                     (the input is the initial potential)
    for t in 0..T-1:  s_t = [v >= theta_t];  v -= theta_t * s_t

so ``q(z) = sum_t theta_t s_t`` encodes ``max(z, 0)`` up to the largest value
the train can hold, ``sum_t theta_t`` (larger inputs saturate: every step
fires).  When consecutive thresholds shrink by at most half
(``tau >= 1 / ln 2``, e.g. the paper's ``tau = 2``) the greedy code is
accurate to the last threshold: ``0 <= z - q(z) < theta_{T-1}`` for
``0 <= z < sum_t theta_t``.  Synapse: the block's parameter-free maps
(average pooling, flatten) and its ``Conv2d``/``Linear`` layer *without bias*,
applied to every step's spikes: ``I_t = W s_t``.  CAB::

    y = b;  for t in 0..T-1:  y = y + I_t * theta_t      (b: the layer's bias)

``y`` (after an optional BatchNorm) is the next block's
initial potential; the last block's ``y`` is the network output.  By
linearity ``y = W q(z) + b`` with ``q(z) = sum_t theta_t s_t``, and if the
quantisation is ignored ``q(z) = relu(z)``: a block is ReLU + conv.

Gradient (the paper's Sec. 3.3): the forward pass returns the real
STEB + conv + CAB value; the backward pass is that of ``W relu(z) + b``
(ReLU + conv), i.e. ``dy/dz = W^T diag(z > 0)`` and the weight gradient is
taken with ``relu(z)`` as the layer input.  No back-propagation through
time is needed: the backward pass costs as much as the ANN's.

Building the blocks from a model
--------------------------------
:class:`STCNet` takes an ``nn.Sequential`` (nested ones are flattened) of
``Conv2d``, ``Linear``, ``BatchNorm1d/2d``, ``ReLU``, ``AvgPool2d``,
``MaxPool2d``, ``Flatten``, ``Unflatten``, ``Dropout``, ``Dropout2d`` and
``Identity``.  Every ``ReLU`` becomes a STEB; the pooling/flatten modules after
it and the next ``Conv2d``/``Linear`` form the block's synapse, followed by its
CAB.  Everything else runs on analog values between blocks: the layers before
the first ``ReLU`` (``first_layer="analog"``, the paper's analog first
convolution; with ``"spiking"`` the input itself is STEB-encoded), BatchNorm
after a CAB, and ``Dropout`` written right after a ``ReLU``, which moves in
front of the STEB.  A ``ReLU`` on spikes (after pooling) is a no-op and is
dropped.  ``MaxPool2d`` is refused (:func:`max_pooling_error`, the rule
:func:`~biosnn.codings.stc.spec.stc_plan` applies too): the spiking network
has no max pooling of CAB outputs, so a model trained with it would not convert.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from biosnn.errors import ConversionError

__all__ = ["theta_table", "check_stc_params", "steb", "cab", "STCBlock", "STCNet", "graph_to_sequential", "as_sequential",
           "FIRST_LAYERS"]

#: Where the first block starts: ``"analog"`` (the layers before the first ReLU run on the analog
#: input, as in the paper) or ``"spiking"`` (the input is STEB-encoded too).
FIRST_LAYERS = ("analog", "spiking")

_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d)
_SHAPE = (nn.Flatten, nn.Unflatten)
_SUPPORTED = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.AvgPool2d, nn.MaxPool2d,
              nn.Identity) + _SHAPE + _DROPOUT


def check_stc_params(T=None, theta0=None, tau=None, first_layer=None) -> None:
    """Raise :class:`~biosnn.errors.ConversionError` unless the given STC parameters are valid.

    Parameters left at ``None`` are not checked.

    Parameters
    ----------
    T : int
        Time steps per block (length of a spike train), at least 1.
    theta0 : float
        Initial threshold (dimensionless potential units), positive and finite.
    tau : float
        Time constant of the threshold decay, in time steps, positive and finite.
    first_layer : {"analog", "spiking"}
        See :data:`FIRST_LAYERS`.
    """
    if T is not None and (isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1):
        raise ConversionError(f"T (time steps per block) must be a positive integer, got {T!r}")
    for name, value in (("theta0", theta0), ("tau", tau)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                or not (math.isfinite(value) and value > 0):
            raise ConversionError(f"{name} must be a positive finite number, got {value!r}")
    if first_layer is not None and first_layer not in FIRST_LAYERS:
        raise ConversionError(f"first_layer must be one of {list(FIRST_LAYERS)}, got {first_layer!r}")


def theta_table(T: int, theta0: float = 1.0, tau: float = 2.0) -> np.ndarray:
    """The decaying thresholds ``theta_t = theta0 * exp(-t / tau)``, ``t = 0, ..., T-1``.

    Computed once in numpy float64 and handed, unchanged, to the torch model and
    to the Brian2 network (so both compare against bit-identical thresholds).

    Parameters
    ----------
    T : int
        Time steps per block.
    theta0 : float
        Threshold of the first step (dimensionless potential).
    tau : float
        Decay time constant in steps.

    Returns
    -------
    numpy.ndarray
        Read-only float64 array of shape ``(T,)``.
    """
    check_stc_params(T, theta0, tau)
    theta = float(theta0) * np.exp(-np.arange(int(T), dtype=np.float64) / float(tau))
    theta.setflags(write=False)
    return theta


def steb(z: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Spike train encoding: IF neurons starting at ``v = z`` with thresholds ``theta``.

    Parameters
    ----------
    z : torch.Tensor
        ``(N, ...)`` initial membrane potentials.
    theta : torch.Tensor
        ``(T,)`` thresholds, same dtype as ``z``.

    Returns
    -------
    torch.Tensor
        ``(T, N, ...)`` spikes (0 or 1, dtype of ``z``); ``out[t]`` is ``s_t``.
    """
    v = z.clone()
    out = z.new_empty((theta.shape[0],) + tuple(z.shape))
    fire = torch.empty(z.shape, dtype=torch.bool, device=z.device)
    for t in range(theta.shape[0]):
        torch.ge(v, theta[t], out=fire)
        out[t].copy_(fire)
        v.sub_(out[t], alpha=theta[t].item())  # v - theta_t * s_t: exactly v - theta_t or v
    return out


def cab(currents: torch.Tensor, theta: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Current accumulation: ``y = b``, then ``y = y + I_t * theta_t`` for ``t = 0, ..., T-1``.

    Parameters
    ----------
    currents : torch.Tensor
        ``(T, N, C, ...)`` synaptic currents per step.
    theta : torch.Tensor
        ``(T,)`` thresholds.
    bias : torch.Tensor or None
        ``(C,)`` bias (broadcast over the trailing spatial dimensions), added first.

    Returns
    -------
    torch.Tensor
        ``(N, C, ...)``.
    """
    acc = torch.zeros_like(currents[0])
    if bias is not None:
        acc = acc + bias.reshape((-1,) + (1,) * (currents.dim() - 3))
    for t in range(theta.shape[0]):
        acc = acc + currents[t] * theta[t]
    return acc


class _EquivalentGradient(torch.autograd.Function):
    """Forward: the exact STEB + synapse + CAB value; backward: the gradient of ReLU + synapse."""

    @staticmethod
    def forward(ctx, equivalent, exact):
        return exact.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class STCBlock(nn.Module):
    """A spatio-temporal conversion block: STEB -> synapse (each step) -> CAB.

    Parameters
    ----------
    synapse : nn.Sequential
        Parameter-free maps applied to each step's spikes before ``layer``
        (``AvgPool2d``, ``Flatten``, ``Unflatten``); may be empty.
    layer : nn.Conv2d or nn.Linear
        The synaptic layer; its bias is added once by the CAB.
    theta : numpy.ndarray
        ``(T,)`` float64 thresholds (:func:`theta_table`).
    """

    def __init__(self, synapse: nn.Sequential, layer: nn.Module, theta: np.ndarray):
        super().__init__()
        self.synapse = synapse
        self.layer = layer
        self.theta = theta

    def extra_repr(self) -> str:
        return f"T={len(self.theta)}, theta0={self.theta[0]:g}"

    def synaptic_map(self, x: torch.Tensor, bias: bool) -> torch.Tensor:
        """The block's linear map of ``x`` (``(B, ...)``), with or without the layer's bias."""
        h = self.synapse(x)
        b = self.layer.bias if bias else None
        if isinstance(self.layer, nn.Conv2d):
            return F.conv2d(h, self.layer.weight, b, self.layer.stride, self.layer.padding, self.layer.dilation,
                            self.layer.groups)
        return F.linear(h, self.layer.weight, b)

    def forward(self, z: torch.Tensor, record: dict | None = None) -> torch.Tensor:
        """The block's output for initial potentials ``z`` (``(N, ...)``).

        Parameters
        ----------
        z : torch.Tensor
            Initial STEB potentials.
        record : dict, optional
            When given, appends to ``record["spikes"]`` the ``(N,)`` spike count
            of each sample and to ``record["saturated"]`` the fraction of its
            units whose ``z`` exceeds ``sum(theta)``, the largest value a train
            can encode.
        """
        theta = torch.tensor(self.theta, dtype=z.dtype, device=z.device)
        with torch.no_grad():
            spikes = steb(z.detach(), theta)
            T, n = spikes.shape[:2]
            cur = self.synaptic_map(spikes.reshape((T * n,) + spikes.shape[2:]), bias=False)
            out = cab(cur.reshape((T, n) + cur.shape[1:]), theta, self.layer.bias)
            if record is not None:
                record.setdefault("spikes", []).append(spikes.reshape(T, n, -1).sum(dim=(0, 2)))
                top = float(np.sum(self.theta))
                record.setdefault("saturated", []).append((z.detach().reshape(n, -1) > top).to(z.dtype).mean(1))
        if torch.is_grad_enabled() and (z.requires_grad or self.layer.weight.requires_grad):
            return _EquivalentGradient.apply(self.synaptic_map(torch.relu(z), bias=True), out)
        return out


def _is_size_query(node) -> bool:
    """``x.size(...)``, ``x.shape`` or an item of one (arguments of ``view``/``reshape``, not activations)."""
    import operator
    if node.op == "call_method" and node.target in ("size", "dim"):
        return True
    if node.op == "call_function" and node.target is getattr and node.args[1:] == ("shape",):
        return True
    return node.op == "call_function" and node.target is operator.getitem and _is_size_query(node.args[0])


def _module_of(node, modules: dict) -> nn.Module:
    """The ``nn.Module`` that computes one step of a traced chain (functional forms mapped to modules)."""
    args, kwargs = node.args[1:], dict(node.kwargs)
    if node.op == "call_module":
        return modules[node.target]
    fn = node.target
    if fn in (F.relu, torch.relu, torch.relu_, "relu", "relu_") and not args:
        return nn.ReLU()
    if fn in (torch.flatten, "flatten") and (args or (kwargs.get("start_dim"),))[0] == 1 and len(args) <= 1:
        return nn.Flatten()
    if fn in ("view", "reshape") and len(args) == 2 and args[1] == -1 and _is_size_query(args[0]):
        return nn.Flatten()
    constant = not any(hasattr(a, "op") for a in (*args, *kwargs.values()))
    if fn in (F.max_pool2d, F.avg_pool2d) and constant:
        return (nn.MaxPool2d if fn is F.max_pool2d else nn.AvgPool2d)(*args, **kwargs)
    if fn is F.dropout and constant:  # training=self.training is a constant of the trace; Dropout follows .train()
        return nn.Dropout(kwargs.get("p", args[0] if args else 0.5))
    name = getattr(fn, "__name__", fn)
    raise ConversionError(
        f"'{node.name}' ({name}) in forward() has no equivalent in the stc coding. Fix: use only Conv2d, Linear, "
        "BatchNorm, ReLU, AvgPool2d, MaxPool2d, Flatten and Dropout (as modules, or F.relu, torch.flatten(x, 1), "
        "x.view(x.size(0), -1), F.max_pool2d, F.avg_pool2d, F.dropout).")


def as_sequential(model: nn.Module) -> nn.Sequential:
    """``model`` as an ``nn.Sequential`` of its own modules (shared, not copied), for :class:`STCNet`.

    An ``nn.Sequential`` is returned as it is; another module is traced with
    ``torch.fx`` and must compute a chain (every operation reads the previous
    one's result): its modules in call order, functional ReLU, flatten, view,
    pooling and dropout replaced by the equivalent modules.

    Raises
    ------
    biosnn.errors.ConversionError
        ``torch.fx`` cannot trace the model, it is not a chain (residual
        additions, branches, several inputs), or an operation has no stc equivalent.
    """
    if isinstance(model, nn.Sequential):
        return model
    import torch.fx as fx
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError, ...
        raise ConversionError(f"torch.fx could not trace {type(model).__name__}.forward: {type(exc).__name__}: "
                              f"{exc}. Fix: avoid data-dependent control flow in forward()") from None
    modules = dict(model.named_modules())
    layers, prev = {}, None
    for node in gm.graph.nodes:
        if node.op == "placeholder" and prev is None:
            prev = node
            continue
        if _is_size_query(node):
            continue
        data = [a for a in node.all_input_nodes if not _is_size_query(a)]
        if node.op == "output" and data == [prev]:
            return nn.Sequential(OrderedDict(layers))
        if node.op in ("placeholder", "output", "get_attr") or data != [prev]:
            raise ConversionError(
                f"'{node.name}' in {type(model).__name__}.forward() does not continue a simple chain of layers "
                "(residual additions, branches, several inputs and parameters used in forward() are not supported "
                "by the stc coding). Fix: use a network whose forward() applies its layers one after another.")
        key = str(node.target).replace(".", "_") if node.op == "call_module" else node.name
        layers[key] = _module_of(node, modules)
        prev = node
    raise ConversionError(f"{type(model).__name__}.forward() returns nothing")  # pragma: no cover - fx always has an output


def _flat_modules(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Sequential):
        raise ConversionError(
            f"the stc coding builds its blocks from an nn.Sequential, got {type(model).__name__}. Fix: write the "
            "model as nn.Sequential(...) of Conv2d, Linear, BatchNorm, ReLU, AvgPool2d, MaxPool2d, Flatten, "
            "Dropout (nested Sequentials are fine).")
    out = []
    for name, mod in model.named_children():
        path = f"{prefix}{name}"
        if isinstance(mod, nn.Sequential):
            out += _flat_modules(mod, path + ".")
            continue
        if not isinstance(mod, _SUPPORTED):
            raise ConversionError(
                f"module '{path}' ({type(mod).__name__}) is not supported by the stc coding. Fix: use only "
                f"{', '.join(sorted({c.__name__ for c in _SUPPORTED}))}.")
        if isinstance(mod, nn.Conv2d) and mod.padding_mode != "zeros":
            raise ConversionError(f"module '{path}' (Conv2d) has padding_mode='{mod.padding_mode}'. "
                                  "Fix: use padding_mode='zeros'.")
        out.append((path, mod))
    return out


def _build_stages(ann: nn.Sequential, theta: np.ndarray, first_layer: str) -> list[nn.Module]:
    stages: list[nn.Module] = []
    analog: list[nn.Module] = []
    synapse: list[nn.Module] = []
    spiking = first_layer == "spiking"
    after_relu = False  # right after a ReLU: dropout may still move in front of the STEB
    for path, mod in _flat_modules(ann):
        if isinstance(mod, nn.Identity):
            continue
        if isinstance(mod, nn.ReLU):
            if not spiking:  # a STEB starts here
                spiking, synapse, after_relu = True, [], True
            continue  # on spikes (non-negative) a ReLU does nothing
        if not spiking:
            analog.append(mod)
            continue
        if isinstance(mod, nn.MaxPool2d):
            raise max_pooling_error(f"module '{path}' (MaxPool2d)")
        if isinstance(mod, _DROPOUT):
            if not after_relu:
                raise ConversionError(
                    f"module '{path}' ({type(mod).__name__}) acts on spikes; in the stc coding dropout must "
                    "come right after a ReLU (it then acts on the analog values in front of the STEB). "
                    "Fix: move it directly after the ReLU.")
            analog.append(mod)
        elif isinstance(mod, (nn.AvgPool2d,) + _SHAPE):
            synapse.append(mod)
            after_relu = False
        elif isinstance(mod, (nn.Conv2d, nn.Linear)):
            if analog:
                stages.append(nn.Sequential(*analog))
            stages.append(STCBlock(nn.Sequential(*synapse), mod, theta))
            analog, synapse, spiking, after_relu = [], [], False, False
        else:  # BatchNorm on spikes
            raise ConversionError(
                f"module '{path}' ({type(mod).__name__}) follows a ReLU, so it would act on spikes. Fix: put "
                "BatchNorm right after Conv2d/Linear, before the ReLU.")
    if spiking:
        raise ConversionError("the model ends with a ReLU (a STEB whose spikes reach no synapse). Fix: end the "
                              "model with a Linear or Conv2d layer (its CAB gives the output).")
    if not any(isinstance(s, STCBlock) for s in stages):
        raise ConversionError("the model has no ReLU between two Conv2d/Linear layers, so there is nothing to "
                              "encode in spikes. Fix: use a network with at least one hidden ReLU layer.")
    if analog:
        stages.append(nn.Sequential(*analog))
    return stages


class STCNet(nn.Module):
    """An ``nn.Sequential`` ReLU network run as an STCSNN (what ``biosnn.prepare(model, "stc")`` returns).

    Parameters
    ----------
    ann : nn.Sequential
        The ReLU network (see the module docstring for the layers allowed).
        Its modules are shared, not copied: training the STCNet trains them,
        and :attr:`ann` is the same network with ReLUs (what
        :func:`biosnn.convert` traces).
    T : int
        Time steps per block (spike-train length).
    theta0 : float
        Initial threshold.
    tau : float
        Threshold decay time constant, in steps.
    first_layer : {"analog", "spiking"}
        Whether the layers before the first ReLU run on the analog input
        (default, the paper's choice) or the input is STEB-encoded too.

    Notes
    -----
    In float32 it trains as usual (``loss.backward()`` uses the ReLU + conv
    equivalent gradient).  Call ``.double()`` (and ``.eval()``) for the
    float64 forward pass that the Brian2 network reproduces.
    """

    def __init__(self, ann: nn.Sequential, T: int = 8, theta0: float = 1.0, tau: float = 2.0,
                 first_layer: str = "analog"):
        super().__init__()
        check_stc_params(T, theta0, tau, first_layer)
        self.T, self.theta0, self.tau, self.first_layer = int(T), float(theta0), float(tau), first_layer
        self.theta = theta_table(self.T, self.theta0, self.tau)
        object.__setattr__(self, "_ann", ann)  # shares its modules with `stages`; not registered twice
        self.stages = nn.ModuleList(_build_stages(ann, self.theta, first_layer))

    @property
    def ann(self) -> nn.Sequential:
        """The underlying ReLU network (same modules, same weights)."""
        return self._ann

    @property
    def settings(self) -> dict:
        """``T``, ``theta0``, ``tau`` and ``first_layer`` of this model."""
        return {"T": self.T, "theta0": self.theta0, "tau": self.tau, "first_layer": self.first_layer}

    @property
    def blocks(self) -> list[STCBlock]:
        """The STC blocks in order (one STEB each)."""
        return [s for s in self.stages if isinstance(s, STCBlock)]

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.settings.items())

    def forward(self, x: torch.Tensor, record: dict | None = None) -> torch.Tensor:
        """Logits for ``x``; with ``record`` (a dict), per-block spike counts (see :meth:`STCBlock.forward`)."""
        for stage in self.stages:
            x = stage(x, record) if isinstance(stage, STCBlock) else stage(x)
        return x

    @classmethod
    def from_graph(cls, graph, T: int = 8, theta0: float = 1.0, tau: float = 2.0,
                   first_layer: str = "analog") -> "STCNet":
        """The float64, eval-mode STCNet of a traced :class:`~biosnn.frontends.torch_graph.LayerGraph`.

        BatchNorm is already folded into the graph's weights, so this is the
        network the Brian2 spec is built from, and its forward pass is the
        exact reference of that spec (up to the summation order of sums).
        """
        return cls(graph_to_sequential(graph), T=T, theta0=theta0, tau=tau, first_layer=first_layer).double().eval()

    def copy_with(self, **settings) -> "STCNet":
        """A deep copy with other ``T``, ``theta0``, ``tau`` or ``first_layer`` (same weights)."""
        merged = {**self.settings, **settings}
        return STCNet(copy.deepcopy(self.ann), **merged).train(self.training)


def graph_to_sequential(graph) -> nn.Sequential:
    """A float64 ``nn.Sequential`` computing a chain-shaped :class:`~biosnn.frontends.torch_graph.LayerGraph`.

    Parameters
    ----------
    graph : LayerGraph
        Traced network without ``add`` layers (BatchNorm folded).

    Returns
    -------
    nn.Sequential
        Conv2d / Linear / AvgPool2d / MaxPool2d modules with the graph's
        weights, ``ReLU`` where the graph has ``relu=True``, and
        ``Flatten``/``Unflatten`` where a layer reads its producer with another
        shape; eval mode, float64.
    """
    check_chain(graph)
    mods: list[nn.Module] = []
    shape = tuple(graph.input_shape)
    for layer in graph.layers[1:]:
        if shape != layer.in_shape:
            mods.append(nn.Flatten())
            if len(layer.in_shape) > 1:
                mods.append(nn.Unflatten(1, layer.in_shape))
        p = layer.params
        if layer.op == "conv2d":
            w = layer.weight
            mod = nn.Conv2d(layer.in_shape[0], w.shape[0], w.shape[2:], stride=p["stride"], padding=p["padding"],
                            dilation=p["dilation"], groups=p["groups"], dtype=torch.float64)
        elif layer.op == "linear":
            mod = nn.Linear(layer.weight.shape[1], layer.weight.shape[0], dtype=torch.float64)
        elif layer.op == "avgpool2d":
            mod = nn.AvgPool2d(p["kernel_size"], p["stride"], p["padding"], count_include_pad=p["count_include_pad"])
        else:  # maxpool2d
            mod = nn.MaxPool2d(p["kernel_size"], p["stride"], p["padding"], p["dilation"])
        if layer.weight is not None:
            with torch.no_grad():
                mod.weight.copy_(torch.from_numpy(np.array(layer.weight)))
                mod.bias.copy_(torch.from_numpy(np.array(layer.bias)))
        mods.append(mod)
        if layer.relu:
            mods.append(nn.ReLU())
        shape = layer.out_shape
    return nn.Sequential(*mods).double().eval()


def max_pooling_error(where: str) -> ConversionError:
    """The one refusal of max pooling in the stc coding (``prepare`` and ``convert``): ``where`` names the layer."""
    return ConversionError(
        f"{where} is a max pooling: it is not a linear map of spikes, and max pooling on CAB outputs is not "
        "built in the STC spiking network (prepare refuses it too, so that what is fine-tuned converts). "
        "Fix: use nn.AvgPool2d (folded into the next layer's synapses) and fine-tune with "
        "biosnn.prepare(model, 'stc').")


def check_chain(graph) -> None:
    """Refuse a graph that is not a simple chain of layers (residual additions, branches)."""
    prev = graph.layers[0].name
    for layer in graph.layers[1:]:
        if layer.op == "add" or tuple(layer.inputs) != (prev,):
            raise ConversionError(
                f"layer '{layer.name}' ({layer.module}) is not part of a simple chain of layers (residual "
                "additions and branches are not supported by the stc coding). Fix: use a sequential network.")
        prev = layer.name
