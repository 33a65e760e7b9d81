"""TDSNN: reverse temporal coding with LIF and ticking neurons (Zhang et al., AAAI 2019).

Every neuron fires once; a larger value fires *later*: the value ``x`` is sent
at step ``T(x) = ceil(L ln(x + 1))`` of its layer's active period (eq. 10).
The ANN is re-trained with the activation ``G(x) = exp(T(x) / L)`` (eq. 11)
in front of every weighted layer (:func:`prepare`), then :func:`convert`
turns it into LIF layers with leak ``exp(-1/L)`` per step, negated weights
(except the output layer), the bias as an input of G-value 1, a ticking
neuron of weight ``w_tick = (1 - exp(-1/L)) exp(-T_il/L)`` (eq. 9) per layer,
and max pooling as unit weights with threshold ``N`` (no leak, no ticking
neuron: the paper's simplified mapping).  The output layer integrates and the
largest potential wins.  The discrete-time semantics, the schedule and the
operation counts are documented in :mod:`biosnn.codings.tdsnn.reference`
and :mod:`biosnn.codings.tdsnn.spec`.

Period length
-------------
All layers use one period length ``T_il`` (the inhibitory period of a layer is
the active period of its input, Fig. 3 of the paper).  It must exceed every
spike step: by default ``convert`` sets ``T_il = 1 + max_step + margin``,
``max_step`` being the largest spike step ``T(x)`` of any input, hidden or
max-pool neuron of the G-ANN over the calibration data.  No activation is
rescaled: ``G`` is not homogeneous, so a per-layer normalisation would change
the re-trained network's function.  A neuron whose value would need a later
step fires at the last active step (its value is clipped); the reference
(:func:`~biosnn.codings.tdsnn.reference.simulate_tdsnn`) counts such neurons.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import operator
import warnings

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from biosnn.codings.rate.coding import calibration_array
from biosnn.conversion.chains import refuse_residual_additions
from biosnn.conversion.inputs import check_nonnegative
from biosnn.conversion.snn import SNN, SNNResult
from biosnn.codings.tdsnn.reference import (RESIDUAL_WHY, WEIGHTED, ann_operation_counts, check_L, check_T_il, g_forward,
                                               g_logits, g_value, input_steps, operation_totals, simulate_tdsnn,
                                               spike_step, tdsnn_roles)
from biosnn.codings.tdsnn.spec import tdsnn_layout, tdsnn_network_spec, window_steps, window_values
from biosnn.errors import ConversionError
from biosnn.frontends.torch_graph import inplace_tracer_class

__all__ = ["PARAMS", "prepare", "convert", "TDSNN", "TDSNNActivation", "strip_activations"]

PARAMS = ("L", "T_il", "margin", "name")

_TICK = "tick:"

_WHY_NONNEGATIVE = "encodes each input value as a time to first spike, T(x) = ceil(L ln(1 + x)), which is 0 for x <= 0"


class _G(torch.autograd.Function):
    """G(x) forward; the gradient of its envelope ``relu(x) + 1`` backward (straight-through)."""

    @staticmethod
    def forward(ctx, x, L):
        ctx.save_for_backward(x)
        return g_value(x, L)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0).to(grad.dtype), None


class TDSNNActivation(nn.Module):
    """``G(x) = exp(ceil(L ln(x + 1)) / L)`` for ``x >= 0``, 1 otherwise (Zhang et al. 2019, eq. 11).

    The value a TDSNN layer receives from a neuron of value ``x`` (its spike
    at step ``ceil(L ln(x + 1))``, decayed).  The gradient is that of
    ``relu(x) + 1`` (straight-through), which ``G`` follows within a factor
    ``exp(1/L)``.

    Parameters
    ----------
    L : float
        Leak constant of the SNN (time steps).
    """

    def __init__(self, L: float = 5.0):
        super().__init__()
        self.L = check_L(L)

    def forward(self, x):
        return _G.apply(x, self.L)

    def extra_repr(self) -> str:
        return f"L={self.L:g}"


class _Tracer(inplace_tracer_class()):
    """torch.fx tracer that keeps TDSNNActivation modules as calls (and records ``a += b`` in place)."""

    def is_leaf_module(self, mod, qualname):
        return isinstance(mod, TDSNNActivation) or super().is_leaf_module(mod, qualname)


def _graph_module(model):
    """``model`` (deep copy, eval mode) as a torch.fx GraphModule that keeps TDSNNActivation modules as calls."""
    if not isinstance(model, nn.Module):
        raise ConversionError(f"expected a torch.nn.Module, got {type(model).__name__}")
    model = copy.deepcopy(model).eval()
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError, ...
        raise ConversionError(f"torch.fx could not trace {type(model).__name__}.forward: "
                              f"{type(exc).__name__}: {exc}. Fix: avoid data-dependent control flow") from None
    return fx.GraphModule(model, graph)


def _weighted_call(node, modules) -> bool:
    """Does this fx node compute a weighted layer (Linear, Conv2d, average pooling)?"""
    if node.op == "call_module":
        return isinstance(modules[node.target], (nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d))
    if node.op == "call_function":
        return node.target in (F.avg_pool2d, F.adaptive_avg_pool2d, torch.mean)
    return node.op == "call_method" and node.target == "mean"


def g_gain(L: float) -> float:
    """``c = L (exp(1/L) - 1)``: ``G(x) = c' (x + 1)`` with ``1 <= c' < exp(1/L)``, and ``c`` is the mean of
    ``c'`` over a uniformly distributed fractional part of ``L ln(x + 1)``."""
    return L * math.expm1(1.0 / L)


_AFFINE_FUNCTIONS = {operator.add: "add", torch.add: "add", operator.sub: "sub", torch.sub: "sub",
                     operator.mul: "mul", torch.mul: "mul", operator.truediv: "div", torch.div: "div"}


def _constant_affine(node, gm, modules):
    """``(k, m)`` (float64 tensors, scalar or one entry per channel/feature) if the fx node computes
    ``k x + m`` of its first argument ``x`` with constants (``x + c``, ``x - c``, ``x * c``, ``x / c`` with a
    number or a buffer, a BatchNorm in eval mode): what the tracer folds into the Linear/Conv2d reading it."""
    if node.op == "call_module" and isinstance(modules[node.target], (nn.BatchNorm1d, nn.BatchNorm2d)):
        bn = modules[node.target]
        if bn.running_mean is None:
            return None
        with torch.no_grad():
            k = torch.rsqrt(bn.running_var.double() + bn.eps)
            k = k * bn.weight.double() if bn.weight is not None else k
            m = -bn.running_mean.double() * k + (bn.bias.double() if bn.bias is not None else 0.0)
        return k, m
    if node.op == "call_function":
        kind = _AFFINE_FUNCTIONS.get(node.target)
    elif node.op == "call_method":
        kind = {"add": "add", "sub": "sub", "mul": "mul", "div": "div"}.get(node.target)
    else:
        kind = None
    if kind is None or len(node.args) != 2 or node.kwargs or not isinstance(node.args[0], fx.Node):
        return None
    const = node.args[1]
    if isinstance(const, fx.Node):
        if const.op != "get_attr":
            return None
        const = functools.reduce(getattr, const.target.split("."), gm)
    if isinstance(const, bool) or not isinstance(const, (int, float, torch.Tensor)):
        return None
    const = torch.as_tensor(const, dtype=torch.float64).detach()
    const = const.reshape(()) if const.numel() == 1 else const.reshape(-1)
    one, zero = torch.tensor(1.0, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64)
    return {"add": (one, const), "sub": (one, -const), "mul": (const, zero), "div": (1.0 / const, zero)}[kind]


def _produces_weighted(node, modules) -> bool:
    """Is the fx node a Linear / Conv2d call (the tracer folds constant affine maps after it into it)?"""
    if node.op == "call_module":
        return isinstance(modules[node.target], (nn.Linear, nn.Conv2d))
    return node.op == "call_function" and node.target in (F.linear, F.conv2d)


def _g_site(node, gm, modules):
    """The fx node whose input ``G`` replaces for weighted node ``node``: the node itself, or the first of the
    constant affine maps in front of it that the tracer folds into it (a normalisation of the input, a scaling
    after a ReLU), since the spiking network sends the values before them."""
    site, cur = node, node.args[0]
    while (isinstance(cur, fx.Node) and len(cur.users) == 1 and _constant_affine(cur, gm, modules) is not None):
        site, cur = cur, cur.args[0]
    return node if site is not node and _produces_weighted(cur, modules) else site


def _weight_sums(mod, o: torch.Tensor) -> torch.Tensor:
    """``W o`` for a constant input ``o`` (a scalar, or one value per input channel / feature), float64."""
    w = mod.weight.detach().double()
    if o.dim() == 0:
        return w.reshape(w.shape[0], -1).sum(1) * o
    if isinstance(mod, nn.Conv2d) and o.numel() == mod.in_channels:
        g = mod.groups
        per = w.sum((2, 3))                                       # (out, in / groups)
        idx = torch.arange(w.shape[0]) // (w.shape[0] // g)
        return (per * o.reshape(g, -1)[idx]).sum(1)
    if isinstance(mod, nn.Linear) and mod.in_features % o.numel() == 0:
        return w @ torch.repeat_interleave(o, mod.in_features // o.numel())   # per channel, flattened C-order
    return w.reshape(w.shape[0], -1).sum(1) * o.mean()


def _compensate(gm, L: float) -> None:
    """Rescale the weights and shift the biases of the layers behind ``G`` so that the G-network starts close to
    the ReLU network (in place).

    ``G(x) ~ c (x + 1)`` (:func:`g_gain`): every neuron, even a silent one, sends at least 1.  Following
    the graph, each value is tracked as ``s a + o`` of the ReLU network's value ``a`` (the input: ``s = 1,
    o = 0``; ``G``: ``c s``, ``c (o + 1)``; a constant affine map ``k x + m``: ``s``, ``k o + (1 - s) m``;
    pooling, reshapes and ReLUs keep them); a Linear / Conv2d layer reading ``s a + o`` gets ``W / s`` and
    its pre-activation ``- W o / s`` (exact for linear layers and away from a convolution's zero padding),
    in its bias, or in the running mean of the BatchNorm that reads it, or a new bias; its output is ``a``.

    The units at the border of a zero-padded convolution keep an offset (a padded input sends nothing, not
    ``o``; a per-channel bias cannot hold a per-position correction): in deep networks with small maps
    (VGG, MobileNet at 32x32) it dominates and the model must be re-trained, as the paper does.
    """
    c = g_gain(L)
    modules = dict(gm.named_modules())
    zero = torch.tensor(0.0, dtype=torch.float64)
    affine, done = {}, set()
    for node in gm.graph.nodes:
        srcs = [a for a in node.args if isinstance(a, fx.Node)]
        s, o = affine.get(srcs[0], (1.0, zero)) if srcs else (1.0, zero)
        mod = modules.get(node.target) if node.op == "call_module" else None
        if isinstance(mod, TDSNNActivation):
            affine[node] = (c * s, c * (o + 1.0))
            continue
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            if node.target not in done and (s != 1.0 or bool(torch.any(o != 0))):   # a shared module: once
                done.add(node.target)
                with torch.no_grad():
                    delta = (-_weight_sums(mod, o) / s).to(mod.weight.dtype)
                    mod.weight.div_(s)
                    users = list(node.users)
                    bn = modules.get(users[0].target) if len(users) == 1 and users[0].op == "call_module" else None
                    if mod.bias is not None:
                        mod.bias.add_(delta)
                    elif isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)) and bn.running_mean is not None:
                        bn.running_mean.sub_(delta)
                    else:
                        mod.bias = nn.Parameter(delta.clone())
            affine[node] = (1.0, zero)
            continue
        km = _constant_affine(node, gm, modules)
        affine[node] = (s, km[0] * o + (1.0 - s) * km[1]) if km is not None else (s, o)


def prepare(model, L: float = 5.0):
    """A copy of ``model`` with ``G`` (eq. 11) in front of every weighted layer, for re-training.

    Parameters
    ----------
    model : torch.nn.Module
        A (trained) chain of Linear / Conv2d / pooling layers with ReLUs.
    L : float
        Leak constant of the SNN (time steps; the paper uses 1 to 5).

    Returns
    -------
    torch.fx.GraphModule
        The model in eval mode with a :class:`TDSNNActivation` before every
        ``nn.Linear``, ``nn.Conv2d`` and average pooling (max pooling commutes
        with ``G`` and gets none; in front of the constant affine maps the
        tracer folds into the layer, such as ``(x - mean) / std`` on the
        input, since the spiking network sends the values before them), and its weights compensated for ``G``'s
        offset and gain (:func:`_compensate`: ``G`` sends at least 1, so the
        plain weights would add ``W 1`` to every pre-activation): it starts
        close to ``model``.  Same ``state_dict`` keys, except a bias added to a
        bias-free layer that no BatchNorm follows.  Re-train it (e.g. :func:`biosnn.datasets.train_classifier`), then
        ``biosnn.convert(prepared, "tdsnn", ...)``.
    """
    L = check_L(L)
    gm = _graph_module(model)
    refuse_residual_additions(gm, "TDSNN", RESIDUAL_WHY)
    modules = dict(gm.named_modules())
    if any(isinstance(mod, TDSNNActivation) for mod in modules.values()):
        raise ConversionError("the model already contains TDSNNActivation modules (it was prepared before). "
                              "Fix: prepare the original ReLU model")
    count = 0
    for node in list(gm.graph.nodes):
        if not _weighted_call(node, modules):
            continue
        target = f"tdsnn_g{count}"
        count += 1
        gm.add_submodule(target, TDSNNActivation(L))
        site = _g_site(node, gm, modules)
        with gm.graph.inserting_before(site):
            g = gm.graph.call_module(target, (site.args[0],))
        site.replace_input_with(site.args[0], g)
    gm.recompile()
    _compensate(gm, L)
    return gm.eval()


def strip_activations(model):
    """Remove the TDSNNActivation modules of a prepared model.

    Returns
    -------
    model : torch.fx.GraphModule
        The ReLU network with the same weights (what :func:`biosnn.frontends.torch_graph.trace` reads).
    L : float or None
        The activations' leak constant (``None`` if there are none).
    preceded : set of str
        Names of the layers that had ``G`` in front (module paths, or fx node names for functions).
    """
    gm = _graph_module(model)
    modules = dict(gm.named_modules())
    Ls, preceded = set(), set()
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(modules[node.target], TDSNNActivation):
            continue
        Ls.add(modules[node.target].L)
        for user in node.users:
            while not _weighted_call(user, modules) and len(user.users) == 1 \
                    and _constant_affine(user, gm, modules) is not None:
                user = next(iter(user.users))       # G in front of a normalisation folded into the layer
            if not _weighted_call(user, modules):
                raise ConversionError(
                    f"TDSNNActivation '{node.target}' feeds '{user.name}', which is not a Linear, Conv2d or "
                    "average-pooling layer; G belongs right before the weighted layers (max pooling commutes "
                    "with it). Fix: use biosnn.prepare(model, 'tdsnn', L=...)")
            preceded.add(user.target if user.op == "call_module" else user.name)
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)
        gm.delete_submodule(node.target)
    if len(Ls) > 1:
        raise ConversionError(f"the model's TDSNNActivation modules use different L {sorted(Ls)}; TDSNN has one "
                              "leak constant. Fix: prepare the model with a single L")
    gm.recompile()
    return gm, (Ls.pop() if Ls else None), preceded


class TDSNN(SNN):
    """A network converted with TDSNN reverse coding (made by :func:`convert`).

    ``T`` (and :attr:`window_steps`) is the sample window ``P T_il + 1``
    (``P`` weighted layers).  :meth:`run` returns an :class:`SNNResult` whose
    ``scores`` approximate the G-ANN's logits (output potential times
    ``exp(T_il/L)``) and whose ``extras`` hold the paper's operation counts per
    sample (``additions``, ``multiplications`` and their parts, ``ticks``; see
    :func:`~biosnn.codings.tdsnn.reference.operation_totals`), measured by the
    ``meter`` population.

    Parameters
    ----------
    graph : LayerGraph
        Traced chain network (as trained: :func:`convert` negates nothing in it).
    L : float
        Leak constant (time steps).
    T_il : int
        Steps per inhibitory / active period.
    name : str
        Network name.
    calibration_max_step : int, optional
        Largest spike step seen on the calibration data (for reference).
    """

    def __init__(self, graph, *, L: float, T_il: int, name: str = "tdsnn", calibration_max_step: int | None = None):
        from biosnn.metrics import ann_ops
        self.L = check_L(L)
        self.T_il = check_T_il(T_il)
        if graph.input_scale != 1.0:
            raise ConversionError(f"TDSNN encodes raw inputs; the graph has input_scale {graph.input_scale}. "
                                  "Fix: convert the traced, un-normalised graph")
        self.layout = tdsnn_layout(graph)
        self.calibration_max_step = calibration_max_step
        ann = ann_operation_counts(graph)
        self.ann_multiplications, self.ann_additions = ann["multiplications"], ann["additions"]
        super().__init__(graph, coding="tdsnn", T=window_steps(self.layout, self.T_il), thresholds={},
                         input_mode="temporal", readout="potential", seed=None, ann_ops=ann_ops(graph), name=name)

    def _build_spec(self, windows: int):
        return tdsnn_network_spec(self.graph, L=self.L, T_il=self.T_il, windows=windows, name=self.name)

    def _window_states(self, rec, population: str, variable: str, windows: int) -> np.ndarray | None:
        """Read from the spike monitors of the ``meter`` and the output, which spike at the end of every window
        (:func:`~biosnn.codings.tdsnn.spec.window_values`): ``spk_last``/``ops_last`` are the counts ``spk``/``ops``,
        ``v_last`` the potential ``v``."""
        var = {"spk_last": "spk", "ops_last": "ops", "v_last": "v"}[variable]
        values = rec.spike_values.get(population, {}).get(var)
        return None if values is None else window_values(rec.spikes[population], values, self.T, windows)

    def _scores_from_potential(self, v_last: np.ndarray) -> np.ndarray:
        scores = v_last * math.exp(self.T_il / self.L)
        return np.maximum(scores, 0.0) if self.graph[self.graph.output].relu else scores

    def layer_populations(self) -> dict[str, str]:
        """Torch layer name -> population; ticking neurons appear as ``"tick:<layer>"``."""
        pops = {s.layer: s.population for s in self.layout}
        pops.update({_TICK + s.layer: s.tick_population for s in self.layout if s.role == "lif"})
        return pops

    def encode(self, x) -> np.ndarray:
        """Input spike steps ``min(T(x), T_il - 1)`` of raw inputs ``x``, float64 of the shape of ``x``."""
        x = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
        n_in = self.graph.input.size
        if x.ndim < 2 or int(np.prod(x.shape[1:])) != n_in:
            raise ConversionError(f"x must have shape (N,) + {self.graph.input_shape}, got {x.shape}")
        check_nonnegative(x, "TDSNN", _WHY_NONNEGATIVE)
        return input_steps(self.graph, x, self.L, self.T_il).reshape(x.shape)

    def run(self, x, backend: str = "auto", batch_size: int | None = None, progress: bool = True,
            **backend_options) -> SNNResult:
        """Simulate raw inputs ``x`` (see :meth:`SNN.run`); the ticking neurons' counts go to ``extras``."""
        res = super().run(self.encode(x), backend=backend, batch_size=batch_size, progress=progress,
                          **backend_options)
        spikes = {k: v for k, v in res.layer_spikes.items() if not k.startswith(_TICK)}
        synops = {k: v for k, v in res.layer_synops.items() if not k.startswith(_TICK)}
        zero = np.zeros(len(res.predictions))
        ticks = sum((v for k, v in res.layer_spikes.items() if k.startswith(_TICK)), zero)
        tick_adds = sum((v for k, v in res.layer_synops.items() if k.startswith(_TICK)), zero)
        synaptic = sum(synops.values(), zero)
        extras = operation_totals(self.graph, self.T_il, np.rint(synaptic), np.rint(tick_adds), np.rint(ticks))
        return dataclasses.replace(res, layer_spikes=spikes, layer_synops=synops, extras=extras)

    def spike_steps(self, x, backend: str = "runtime", **backend_options) -> dict[str, np.ndarray]:
        """Active-period spike step of every neuron, from a Brian2 run with spike monitors (for tests).

        All samples run in one batch (keep ``x`` small).

        Returns
        -------
        dict of str to ndarray
            int64 ``(N, layer.size)`` for the input, hidden and max-pool layers;
            -1 where a neuron did not fire.
        """
        from biosnn.backends.registry import get_backend
        from biosnn.codings.rate.spec import DT_MS
        from biosnn.spec import model as m
        steps = self.encode(x)
        n = steps.shape[0]
        spiking = [s for s in self.layout if s.role != "output"]
        spec = self.spec_for(n)
        spec = spec.replace(name=f"{spec.name}_spikes",
                            monitors=tuple(spec.monitors) + tuple(m.SpikeMonitor(s.population) for s in spiking))
        rec = get_backend(backend, **backend_options).build(spec).run(
            overrides={"x_in": steps.reshape(n, -1)}, progress=False)
        out = {}
        for s in spiking:
            st = rec.spikes[s.population]
            step = np.rint(st.times / (DT_MS * 1e-3)).astype(np.int64)
            win = step // self.T
            arr = np.full((n, self.graph[s.layer].size), -1, dtype=np.int64)
            keep = win < n
            arr[win[keep], st.indices[keep]] = step[keep] - win[keep] * self.T - s.period * self.T_il
            out[s.layer] = arr
        return out

    def reference(self, x, batch_size: int = 256, exact: bool = True):
        """The exact discrete-time reference of this network on raw inputs ``x``
        (:func:`~biosnn.codings.tdsnn.reference.simulate_tdsnn`)."""
        return simulate_tdsnn(self.graph, x, self.L, self.T_il, batch_size=batch_size, exact=exact)

    def g_ann(self, x, batch_size: int = 256) -> np.ndarray:
        """Logits of the G-ANN (the re-trained network, float64, no clipping) on raw inputs ``x``."""
        return g_logits(self.graph, g_forward(self.graph, x, self.L, batch_size=batch_size))


def max_spike_step(graph, x, L: float, batch_size: int = 256) -> int:
    """Largest spike step ``T(value)`` of any input, hidden or max-pool neuron of the G-ANN on ``x``."""
    roles = tdsnn_roles(graph)
    values = g_forward(graph, x, L, batch_size=batch_size)
    return int(max(float(spike_step(torch.from_numpy(values[name]), L).max())
                   for name, role in roles.items() if role != "output"))


def convert(ann, calibration, input_shape, *, L: float | None = None, T_il: int | None = None, margin: int = 2,
            name: str = "tdsnn") -> TDSNN:
    """TDSNN conversion (``biosnn.convert(ann, "tdsnn", ...)``).

    Parameters
    ----------
    ann : torch.nn.Module
        The model :func:`prepare` returned, re-trained.  A plain ReLU model is
        accepted too (with a warning): the SNN then computes the G-network of
        its weights, which usually loses accuracy.
    calibration : torch.Tensor or ndarray
        ``(N,) + input_shape`` training samples; they fix the period length.
    input_shape : tuple
        Per-sample input shape, e.g. ``(1, 28, 28)``.
    L : float, optional
        Leak constant (time steps); default the prepared model's (5 for a
        plain model).  Must equal the prepared model's.
    T_il : int, optional
        Steps per inhibitory / active period; default ``1 + max_step + margin``
        with ``max_step`` the largest spike step on the calibration data.
        ``T_il`` sets the window length (``P T_il + 1`` steps), which is data
        of the network, not code: networks of the same shape share a
        standalone build whatever their ``T_il``, weights and biases (a
        second one compiles nothing).
    margin : int
        Extra steps over the calibration data's largest spike step (default 2)
        for test inputs with larger values.
    name : str
        Network name.

    Returns
    -------
    TDSNN
    """
    from biosnn.frontends.torch_graph import check_no_ceiling, trace
    if not isinstance(margin, (int, np.integer)) or isinstance(margin, bool) or margin < 0:
        raise ConversionError(f"margin must be a non-negative integer (time steps), got {margin!r}")
    stripped, model_L, preceded = strip_activations(ann)
    if model_L is not None and L is not None and check_L(L) != model_L:
        raise ConversionError(f"L={L!r} differs from the L={model_L:g} the model was prepared (and re-trained) "
                              f"with. Fix: pass L={model_L:g} or prepare the model again")
    L = check_L(L if L is not None else (model_L if model_L is not None else 5.0))
    graph = trace(stripped, input_shape)
    check_no_ceiling(graph, "tdsnn")
    tdsnn_roles(graph)
    weighted = {layer.name for layer in graph.layers if layer.op in WEIGHTED}
    if not preceded:
        warnings.warn("the model has no TDSNN activation: the SNN computes the G-network of its weights "
                      "(G(x) = exp(ceil(L ln(x + 1))/L) before every weighted layer), not the model itself. "
                      "Re-train biosnn.prepare(model, 'tdsnn', L=...) for the paper's accuracy.", stacklevel=4)
    elif weighted - preceded:
        raise ConversionError(f"layers {sorted(weighted - preceded)} have no TDSNNActivation in front; the SNN "
                              "applies G before every weighted layer. Fix: use biosnn.prepare(model, 'tdsnn', "
                              "L=...) and re-train")
    calib = calibration_array(calibration)
    if len(calib) == 0:
        raise ConversionError("calibration data is empty; pass a few hundred training samples")
    check_nonnegative(calib, "TDSNN", _WHY_NONNEGATIVE, "the calibration data")
    top = max_spike_step(graph, calib, L)
    if T_il is None:
        T_il = top + 1 + int(margin)
    elif check_T_il(T_il) <= top:
        warnings.warn(f"T_il={T_il} steps cannot represent the calibration data's largest spike step {top}: "
                      f"later spikes are clipped to step {T_il - 1}. Use T_il >= {top + 1}.", stacklevel=4)
    return TDSNN(graph, L=L, T_il=int(T_il), name=name, calibration_max_step=top)
