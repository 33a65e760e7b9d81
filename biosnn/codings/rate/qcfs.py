"""QCFS: quantisation-clip-floor-shift activations for rate-coded conversion (Bu et al., ICLR 2022).

``QCFS(x) = lambda * clip(floor(x L / lambda + 1/2) / L, 0, 1)`` replaces every ReLU of the model
:func:`biosnn.codings.rate.prepare` returns with ``levels=L``.  The threshold ``lambda`` is trained
(straight-through gradient for the floor); the converted IF neuron of that layer gets the
threshold ``lambda`` (its activation scale) and starts every sample at half of it: then an IF
neuron driven by a constant input ``z`` for ``T = L`` steps fires exactly
``clip(floor(T z / lambda + 1/2), 0, T)`` spikes, the QCFS value, and the expected conversion
error vanishes for any ``T`` (Bu et al., Theorem 2).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from biosnn.errors import ConversionError

__all__ = ["QCFS", "qcfs_model", "qcfs_modules", "init_thresholds", "with_levels"]


class _FloorSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return torch.floor(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class QCFS(nn.Module):
    """Clip-floor-shift activation with a trainable threshold.

    Parameters
    ----------
    levels : int
        Quantisation steps ``L`` (the activation takes ``L + 1`` values ``lambda k / L``).
    threshold : float, optional
        Initial ``lambda``; by default it is set on the first forward pass to the
        ``percentile``-th percentile of the positive inputs of that batch.
    percentile : float
        For the data-based initialisation.
    """

    def __init__(self, levels: int = 8, threshold: float | None = None, percentile: float = 99.9):
        super().__init__()
        if isinstance(levels, bool) or not isinstance(levels, (int, np.integer)) or levels < 1:
            raise ConversionError(f"levels (QCFS quantisation steps L) must be a positive integer, got {levels!r}")
        self.levels = int(levels)
        self.percentile = float(percentile)
        self.threshold = nn.Parameter(torch.tensor(float("nan") if threshold is None else float(threshold)))
        #: False: the plain clip ``min(relu(x), lambda)`` (used by the tracer's self-check)
        self.quantize = True

    @property
    def relu_ceiling(self) -> float:
        """``lambda``: the tracer converts this module as a ReLU clipped at it."""
        value = float(self.threshold.detach())
        if not (np.isfinite(value) and value > 0):
            raise ConversionError(f"a QCFS activation has no positive threshold yet ({value}): fine-tune the "
                                  "prepared model or pass calibration data to biosnn.convert")
        return value

    def extra_repr(self) -> str:
        return f"levels={self.levels}, threshold={float(self.threshold.detach()):.4g}"

    def forward(self, x):
        if not torch.isfinite(self.threshold):
            with torch.no_grad():
                pos = x.detach().reshape(-1)
                pos = pos[pos > 0]
                value = float(torch.quantile(pos.double()[:2 ** 24], self.percentile / 100)) if pos.numel() else 1.0
                self.threshold.fill_(value if value > 0 else 1.0)
        lam = self.threshold
        if not self.quantize:
            return torch.minimum(torch.relu(x), lam)
        y = _FloorSTE.apply(x / lam * self.levels + 0.5) / self.levels
        return torch.clamp(y, 0.0, 1.0) * lam


def _relu_targets():
    import torch.nn.functional as F
    return {F.relu, torch.relu, torch.relu_, F.relu_}


def qcfs_model(model: nn.Module, levels: int) -> nn.Module:
    """A copy of ``model`` (a ``torch.fx.GraphModule``) with every ReLU replaced by a :class:`QCFS`.

    ReLU modules, ``F.relu``/``torch.relu`` calls and ``Tensor.relu()`` are replaced; the
    other operations stay as they are.  A ReLU that directly follows a pooling operation is
    kept (pooling IF neurons cannot clip; after a rectified layer that ReLU changes nothing).
    """
    import copy

    import torch.fx as fx

    from biosnn.frontends.torch_graph import _InplaceTracer

    model = copy.deepcopy(model)
    try:
        graph = _InplaceTracer().trace(model)
    except Exception as exc:
        raise ConversionError(f"torch.fx could not trace {type(model).__name__}.forward: {type(exc).__name__}: "
                              f"{exc}. Fix: avoid data-dependent control flow in forward()") from None
    gm = fx.GraphModule(model, graph, type(model).__name__)
    modules = dict(gm.named_modules())
    relus = _relu_targets()
    k = 0
    for node in list(gm.graph.nodes):
        is_relu = ((node.op == "call_module" and type(modules[node.target]) is nn.ReLU)
                   or (node.op == "call_function" and node.target in relus)
                   or (node.op == "call_method" and node.target in ("relu", "relu_")))
        if not is_relu or _is_pooling(node.args[0], modules):
            continue
        name = f"qcfs{k}"
        k += 1
        gm.add_submodule(name, QCFS(levels))
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, (node.args[0],))
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
    if k == 0:
        raise ConversionError(f"{type(model).__name__} has no ReLU to replace by a QCFS activation")
    gm.graph.lint()
    gm.recompile()
    return gm.eval()


def _is_pooling(node, modules) -> bool:
    import torch.fx as fx
    import torch.nn.functional as F

    if not isinstance(node, fx.Node):
        return False
    if node.op == "call_module":
        return isinstance(modules[node.target], (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d,
                                                 nn.AdaptiveMaxPool2d))
    if node.op == "call_function":
        return node.target in (F.avg_pool2d, F.max_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
                               torch.mean, torch.amax)
    return node.op == "call_method" and node.target in ("mean", "amax")


def qcfs_modules(model: nn.Module) -> list[QCFS]:
    """The QCFS activations of a model (empty for a model that was not prepared with ``levels``)."""
    return [m for m in model.modules() if isinstance(m, QCFS)]


def with_levels(model: nn.Module, levels: int) -> nn.Module:
    """A copy of a QCFS-prepared model whose activations use ``levels`` steps (thresholds kept).

    The converted network run for ``T`` steps computes, in its first layer exactly, the QCFS model
    with ``L = T``: a model fine-tuned at another ``L`` is the ANN it approximates only when
    ``T = L`` (for ``T >> L`` it approaches the clipped ReLU ``min(relu(x), lambda)``).  Compare
    a ``T``-step simulation with ``with_levels(model, T)`` to separate this quantisation
    difference from the conversion error.

    Parameters
    ----------
    model : nn.Module
        From ``biosnn.prepare(model, "rate", levels=L)``.
    levels : int
        The new number of quantisation steps (e.g. the simulation's ``T``).

    Returns
    -------
    nn.Module
        A copy; ``model`` is unchanged.
    """
    import copy

    if not qcfs_modules(model):
        raise ConversionError(f"{type(model).__name__} has no QCFS activation; prepare it with "
                              "biosnn.prepare(model, 'rate', levels=L)")
    QCFS(levels)   # checks levels
    out = copy.deepcopy(model)
    for m in qcfs_modules(out):
        m.levels = int(levels)
    return out


def init_thresholds(model: nn.Module, x) -> None:
    """Set the thresholds that are not set yet from a forward pass over ``x`` (eval mode, no gradient)."""
    if all(torch.isfinite(m.threshold) for m in qcfs_modules(model)):
        return
    was = model.training
    model.eval()
    with torch.no_grad():
        model(torch.as_tensor(np.asarray(x), dtype=torch.float32))
    model.train(was)
