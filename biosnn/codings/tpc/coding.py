"""Temporal pattern coding (TPC; Rueckauer & Liu, IJCNN 2021).

An activation quantised to ``n`` bits travels as up to ``n`` spikes, one per
set bit, most significant bit first; a spike at step ``t`` of a window adds
``w * 2**(n-1-t)`` to the post-synaptic potential, so after the window the
post-synaptic neuron holds exactly ``sum w a`` and emits its own code in the
next window with a threshold that halves every step.  With ``k = steps < n``
steps per window the ``n - k`` least significant bits are dropped.

* :func:`prepare` returns the quantisation-aware torch model (every ReLU and
  every average pool followed by an ``n``-bit quantiser with a straight-through
  estimator, the input quantised too) for fine-tuning;
* :func:`calibrate` sets the quantisers' scales from data;
* :func:`convert` returns a :class:`TPCSNN` (Brian2) that equals the
  quantised model: :func:`biosnn.codings.tpc.reference.simulate_tpc` is its
  exact numpy reference, the quantisation is defined there.

The network layout (a pipeline of ``k``-step windows driven by a clock) is
described in :mod:`biosnn.codings.tpc.spec`.
"""

from __future__ import annotations

import copy
import dataclasses
import logging

import numpy as np
import torch
from torch import nn

from biosnn.conversion.inputs import check_nonnegative
from biosnn.conversion.snn import SNN, SNNResult, _to_numpy, batch_layout, batch_plan
from biosnn.codings.tpc.reference import TPCPlan, build_plan, check_bits, simulate_tpc
from biosnn.errors import ConversionError

__all__ = ["PARAMS", "prepare", "calibrate", "convert", "TPCSNN", "TPCModel", "QuantAct"]

PARAMS = ("bits", "steps", "percentile", "name")

_WHY_NONNEGATIVE = "sends non-negative binary codes of the inputs"

#: Weight of a new batch statistic in the running scale of a quantiser during training.
MOMENTUM = 0.1


def _check_percentile(percentile) -> float:
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
        raise ConversionError(f"percentile must be a number in (0, 100], got {percentile!r}")
    return float(percentile)


def _positive_percentile(x, percentile: float) -> float | None:
    """Nearest-rank percentile of the positive entries of tensor ``x``: the smallest of them that is
    at least as large as ``percentile`` % of them (the maximum for 100); ``None`` if there are none."""
    with torch.no_grad():
        pos = x.detach().reshape(-1)
        pos = pos[pos > 0]
        if pos.numel() == 0:
            return None
        rank = max(1, int(np.ceil(percentile / 100.0 * pos.numel())))
        return float(torch.kthvalue(pos.double(), rank).values)


class _Quantize(torch.autograd.Function):
    """n-bit quantisation (forward) with a straight-through gradient inside ``(0, scale)`` (backward)."""

    @staticmethod
    def forward(ctx, x, scale, bits: int, steps: int):
        levels = 2 ** bits - 1
        step = scale / levels
        y = torch.minimum(torch.clamp(x, min=0), scale)
        q = torch.clamp(torch.floor(y / step + 0.5), 0, levels)
        if steps < bits:
            drop = float(2 ** (bits - steps))
            q = torch.floor(q / drop) * drop
        ctx.save_for_backward((x > 0) & (x < scale))
        return q * step

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside.to(grad.dtype), None, None, None


class QuantAct(nn.Module):
    """ReLU followed by ``n``-bit quantisation with a data-driven scale.

    ``forward(x) = q * Delta`` with ``Delta = scale / (2**bits - 1)`` and
    ``q = clip(floor(clip(x, 0, scale) / Delta + 1/2), 0, 2**bits - 1)``, the
    ``bits - steps`` least significant bits of ``q`` set to 0 (see
    :mod:`biosnn.codings.tpc.reference`).  The gradient is passed straight
    through where ``0 < x < scale`` and is 0 elsewhere.

    In training mode each batch updates ``scale`` (a buffer, activation
    units) to a running average (weight :data:`MOMENTUM`) of the batch's
    ``percentile``-th (nearest-rank) percentile of positive values; the first
    batch sets it (a layer without positive values keeps its scale).
    In evaluation mode the scale is fixed; :func:`calibrate` sets it from data.

    Parameters
    ----------
    bits, steps : int
        ``n`` and ``k`` (``k <= n``).
    percentile : float
        Percentile in ``(0, 100]``.
    after_pool : bool
        Inserted after an average pooling (not a ReLU site).
    """

    def __init__(self, bits: int, steps: int, percentile: float = 99.9, after_pool: bool = False):
        super().__init__()
        self.bits, self.steps = check_bits(bits, steps)
        self.percentile = _check_percentile(percentile)
        self.after_pool = bool(after_pool)
        self.enabled = True
        self.register_buffer("scale", torch.tensor(float("nan")))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, steps={self.steps}, scale={float(self.scale):.6g}"

    @property
    def calibrated(self) -> bool:
        return bool(np.isfinite(float(self.scale)) and float(self.scale) > 0)

    def batch_statistic(self, x) -> float | None:
        """The ``percentile``-th percentile of the positive entries of ``x`` (``None`` if there are none)."""
        return _positive_percentile(x, self.percentile)

    def forward(self, x):
        if not self.enabled:
            return torch.relu(x)
        if self.training:
            stat = self.batch_statistic(x)
            if stat is not None:
                new = stat if not self.calibrated else (1 - MOMENTUM) * float(self.scale) + MOMENTUM * stat
                self.scale.fill_(new)
        if not self.calibrated:
            raise ConversionError("this TPC quantiser has no scale yet: fine-tune the prepared model (train "
                                  "mode sets the scales) or call biosnn.codings.tpc.coding.calibrate(model, x) first")
        return _Quantize.apply(x, self.scale.to(x.dtype), self.bits, self.steps)


class TPCModel(nn.Module):
    """The quantisation-aware model :func:`prepare` returns: ``net(input_quant(x))``.

    Attributes
    ----------
    input_quant : QuantAct
        Quantises the input (negative inputs become 0).
    net : torch.fx.GraphModule
        The original model with a :class:`QuantAct` in place of every ReLU
        and after every average pooling (except one producing the output).
    bits, steps : int
    """

    def __init__(self, net, bits: int, steps: int, percentile: float):
        super().__init__()
        self.bits, self.steps = check_bits(bits, steps)
        self.percentile = _check_percentile(percentile)
        self.input_quant = QuantAct(bits, steps, percentile)
        self.net = net

    def forward(self, x):
        return self.net(self.input_quant(x))

    def quantizers(self) -> list:
        """``(name, QuantAct)`` pairs: ``("input", ...)`` first, then those of ``net`` in graph order."""
        return [("input", self.input_quant)] + [(n, q) for n, q in self.net.named_modules()
                                                if isinstance(q, QuantAct)]


def _node_kind(node, modules) -> str | None:
    """``"relu"``, ``"pool"`` (average pooling / spatial mean) or ``None`` for an fx node."""
    import torch.nn.functional as F

    if node.op == "call_module":
        mod = modules[node.target]
        if type(mod) is nn.ReLU:
            return "relu"
        if isinstance(mod, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            return "pool"
    elif node.op == "call_function":
        if node.target in (F.relu, torch.relu, torch.relu_, getattr(F, "relu_", None)):
            return "relu"
        if node.target in (F.avg_pool2d, F.adaptive_avg_pool2d, torch.mean):
            return "pool"
    elif node.op == "call_method":
        if node.target in ("relu", "relu_"):
            return "relu"
        if node.target == "mean":
            return "pool"
    return None


def _plain_net(model):
    """A copy of a prepared network with ReLUs back in place of its quantisers (pool quantisers dropped)."""
    net = copy.deepcopy(model.net if isinstance(model, TPCModel) else model)
    for name, mod in list(net.named_modules()):
        if isinstance(mod, QuantAct):
            parent, _, leaf = name.rpartition(".")
            owner = net.get_submodule(parent) if parent else net
            setattr(owner, leaf, nn.Identity() if mod.after_pool else nn.ReLU())
    return net


def prepare(model, bits: int = 8, steps: int | None = None, percentile: float = 99.9):
    """The quantisation-aware model for TPC fine-tuning (``biosnn.prepare(model, "tpc", bits=n)``).

    Parameters
    ----------
    model : torch.nn.Module
        A ReLU network ``biosnn.convert`` accepts (or a model this function
        returned, to re-prepare it with other ``bits``).  Not modified.
    bits : int
        ``n``, bits per activation (1-24).
    steps : int, optional
        ``k <= n`` time steps per window the network will run with (default
        ``n``); ``k < n`` trains with the LSB truncation of the converted network.
    percentile : float
        Percentile of the positive activations that sets each quantiser's
        scale (:class:`QuantAct`).

    Returns
    -------
    TPCModel
        A copy whose every ReLU (module or function) and every average pooling
        is followed by an ``n``-bit quantiser with a straight-through
        estimator, and whose input is quantised.  The scales are unset until
        the model runs in training mode or :func:`calibrate` sees data.  Same
        train/eval mode as ``model``.

    Raises
    ------
    biosnn.errors.ConversionError
        ``torch.fx`` cannot trace the model.
    """
    import torch.fx as fx

    from biosnn.frontends.torch_graph import inplace_tracer_class

    bits, steps = check_bits(bits, steps)
    percentile = _check_percentile(percentile)
    base = _plain_net(model)
    try:
        gm = fx.GraphModule(base, inplace_tracer_class()().trace(base), type(base).__name__)
    except Exception as exc:  # fx raises TraceError, TypeError, NotImplementedError, ...
        raise ConversionError(f"torch.fx could not trace {type(base).__name__}.forward: {type(exc).__name__}: "
                              f"{exc}. Fix: avoid data-dependent control flow in forward()") from None
    modules = dict(gm.named_modules())
    graph = gm.graph
    count = 0
    for node in list(graph.nodes):
        kind = _node_kind(node, modules)
        if kind is None or (kind == "pool" and all(u.op == "output" for u in node.users)):
            continue
        while hasattr(gm, f"tpc_quant{count}"):
            count += 1
        qname = f"tpc_quant{count}"
        gm.add_submodule(qname, QuantAct(bits, steps, percentile, after_pool=kind == "pool"))
        source = (node.args[0] if node.args else node.kwargs["input"]) if kind == "relu" else node
        with graph.inserting_after(node):
            new = graph.call_module(qname, args=(source,))
        if kind == "relu":
            node.replace_all_uses_with(new)
            graph.erase_node(node)
        else:
            node.replace_all_uses_with(new, delete_user_cb=lambda user: user is not new)
    graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return TPCModel(gm, bits, steps, percentile).train(model.training)


def calibrate(model: TPCModel, x, batch_size: int = 256, overwrite: bool = True) -> TPCModel:
    """Set every quantiser's scale from data, layer by layer, in place.

    Quantisers are calibrated in graph order: the ``percentile``-th
    (nearest-rank) percentile of the positive values reaching quantiser ``j`` is computed
    over all of ``x`` with quantisers ``0..j-1`` already calibrated and the
    later ones replaced by plain ReLUs (so each scale sees the quantised
    network before it).  Batch-norm and dropout run in evaluation mode.

    Parameters
    ----------
    model : TPCModel
        From :func:`prepare`.
    x : array_like or torch.Tensor
        ``(N,) + input_shape`` samples (a few hundred training inputs).
    batch_size : int
        Samples per forward pass.
    overwrite : bool
        Recalibrate quantisers that already have a scale (``False``: keep
        their scales, calibrate only the others).

    Returns
    -------
    TPCModel
        ``model`` (its scales set, its train/eval mode unchanged).
    """
    if not isinstance(model, TPCModel):
        raise ConversionError(f"calibrate() needs the model biosnn.prepare(..., 'tpc') returned, "
                              f"got {type(model).__name__}")
    params = list(model.parameters())
    xt = torch.as_tensor(_to_numpy(x), dtype=params[0].dtype if params else torch.float32)
    if len(xt) == 0:
        raise ConversionError("calibration data is empty; pass a few hundred training samples")
    quants = [q for _, q in model.quantizers()]
    was_training = model.training
    model.eval()
    seen = []
    hook = None
    try:
        for j, quant in enumerate(quants):
            if quant.calibrated and not overwrite:
                continue
            for later in quants[j:]:
                later.enabled = False
            hook = quant.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach().double()))
            seen.clear()
            with torch.no_grad():
                for start in range(0, len(xt), int(batch_size)):
                    model(xt[start:start + int(batch_size)])
            hook.remove()
            hook = None
            stat = _positive_percentile(torch.cat([v.reshape(-1) for v in seen]), quant.percentile)
            quant.scale.fill_(1.0 if stat is None else stat)
            for later in quants[j:]:
                later.enabled = True
    finally:
        if hook is not None:
            hook.remove()
        for quant in quants:
            quant.enabled = True
        model.train(was_training)
    return model


def _concatenation_match(out: np.ndarray, acts: dict, layers, taken: set) -> list:
    """Layers whose activations, concatenated along channels (features) in order, equal ``out``
    (a quantiser after a ReLU or a pooling of a ``torch.cat``: the traced graph has one layer per part)."""
    n, width = out.shape[0], out.shape[1]
    rest = out.shape[2:]
    parts, offset = [], 0
    while offset < width:
        for layer in layers:
            c = layer.out_shape[0]
            if (layer.name in taken or layer in parts or tuple(layer.out_shape[1:]) != rest
                    or offset + c > width):
                continue
            block = out[:, offset:offset + c].reshape(n, -1)
            if np.allclose(acts[layer.name], block, rtol=1e-9, atol=1e-12):
                parts.append(layer)
                offset += c
                break
        else:
            return []
    return parts if len(parts) > 1 else []


def _layer_scales(model: TPCModel, graph, input_shape) -> dict:
    """The scale of each quantised graph layer, found by matching the quantisers' ReLU outputs.

    A float64 copy of the model with its quantisers replaced by plain ReLUs
    runs a random probe; the layer of the traced graph whose activations
    equal a quantiser's output is the one it quantises (a quantiser right
    after a max pool quantises the pool's input layer: the traced graph moves
    the ReLU there, and the quantiser commutes with the max; a quantiser after
    an average pooling quantises that pooling, also where an identity pooling
    repeats a max pool's output).  A quantiser of a concatenation (a ReLU or
    a pooling of a ``torch.cat``) quantises every part's layer with its scale.
    """
    from biosnn.frontends.torch_graph import forward_numpy

    probe_model = copy.deepcopy(model).double().eval()
    quants = [(n, q) for n, q in probe_model.quantizers() if n != "input"]
    outputs = {}
    for name, quant in quants:
        quant.enabled = False
        quant.register_forward_hook(lambda mod, inp, out, name=name: outputs.__setitem__(
            name, out.detach().numpy()))
    probe = torch.rand((3,) + tuple(input_shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        probe_model.net(probe)
    acts = {k: v.reshape(3, -1) for k, v in forward_numpy(graph, probe.numpy()).items()}
    scales = {"input": float(model.input_quant.scale)}
    taken = set()
    for name, quant in quants:
        out = outputs.get(name)
        flat = None if out is None else out.reshape(out.shape[0], -1)
        match = [layer for layer in graph.layers[1:] if flat is not None and layer.name not in taken
                 and acts[layer.name].shape == flat.shape and np.allclose(acts[layer.name], flat, rtol=1e-9, atol=1e-12)]
        # an identity pooling (AvgPool2d(1, 1), a global mean of a 1x1 map) after a max pool outputs what the
        # max pool does: a quantiser after a pooling belongs to the pooling, one after a ReLU to a non-pooling
        pooled = [layer for layer in match if (layer.op == "avgpool2d") == quant.after_pool]
        if match:
            found = [(pooled or match)[0]]
        else:
            found = [] if out is None or out.ndim < 2 else _concatenation_match(
                out, acts, [layer for layer in graph.layers[1:] if (layer.op == "avgpool2d") == quant.after_pool
                            or layer.op == "maxpool2d"], taken)
        if not found:
            raise ConversionError(f"quantiser '{name}' of the prepared model matches no layer of the traced "
                                  "network; prepare the model again from the float model")
        for layer in found:
            taken.add(layer.name)
            scales[layer.inputs[0] if layer.op == "maxpool2d" else layer.name] = float(quant.scale)
    return scales


def convert(ann, calibration, input_shape, *, bits: int | None = None, steps: int | None = None,
            percentile: float = 99.9, name: str = "tpc"):
    """TPC conversion (``biosnn.convert(ann, "tpc", calibration, input_shape, bits=n)``).

    Parameters
    ----------
    ann : torch.nn.Module
        A fine-tuned :class:`TPCModel` (from :func:`prepare`; its scales are
        used, unset ones are calibrated on ``calibration``) or a plain ReLU
        network (prepared here and calibrated on ``calibration``: post-training
        quantisation).  ``Linear``, ``Conv2d``, ``AvgPool2d``, ``MaxPool2d``
        (and folded ``BatchNorm``) layers, residual additions and
        concatenations along channels (the shorter branch is delayed by
        whole windows, :class:`~biosnn.codings.tpc.reference.TPCInput`).
    calibration : torch.Tensor or ndarray
        ``(N,) + input_shape`` training samples for the scales.
    input_shape : tuple
        Per-sample input shape, e.g. ``(1, 28, 28)``.
    bits : int, optional
        ``n`` (default: the prepared model's, else 8).
    steps : int, optional
        ``k <= n`` steps per window (default ``n``): fewer steps truncate LSBs.
    percentile : float
        Percentile for the scales calibrated here.
    name : str
        Network name.

    Returns
    -------
    TPCSNN
    """
    from biosnn.frontends.torch_graph import check_no_ceiling, trace
    from biosnn.metrics import ann_ops

    if isinstance(ann, TPCModel):
        if bits is not None and int(bits) != ann.bits:
            raise ConversionError(f"the model was prepared for bits={ann.bits}; convert with bits={ann.bits} "
                                  f"or prepare the float model again with bits={bits}")
        model = copy.deepcopy(ann)
    else:
        model = prepare(ann, 8 if bits is None else bits, steps, percentile)
    bits, steps = check_bits(model.bits, steps)
    model.steps = steps  # only the calibration below sees the steps; the trained scales do not depend on them
    for _, quant in model.quantizers():
        quant.steps = steps
    x_cal = _to_numpy(calibration)
    if len(x_cal) == 0:
        raise ConversionError("calibration data is empty; pass a few hundred training samples")
    check_nonnegative(x_cal, "TPC", _WHY_NONNEGATIVE, "the calibration data")
    if not all(q.calibrated for _, q in model.quantizers()):
        calibrate(model, x_cal, overwrite=False)
    graph = trace(_plain_net(model), input_shape)
    check_no_ceiling(graph, "tpc")
    plan = build_plan(graph, _layer_scales(model, graph, input_shape), bits, steps)
    return TPCSNN(plan, ann_ops=ann_ops(graph), name=name)


class _MaxOrderFilter(logging.Filter):
    """Drops Brian2's order-of-execution warning for the bit-serial max-pool synapses: a running
    maximum does not depend on the order in which the spikes of one step are processed."""

    def filter(self, record) -> bool:
        return "acc += theta_pre (in-place)" not in record.getMessage()


_MAX_FILTER = _MaxOrderFilter()


class TPCSNN(SNN):
    """A TPC spiking network (Brian2): the quantised ANN of ``plan``, bit-serial and pipelined.

    ``T`` and :attr:`window_steps` are ``k`` (steps per window, one sample
    enters per window); a sample's result is complete after :attr:`latency_steps`.
    :meth:`run` feeds the samples through the pipeline and returns per-sample
    figures (``layer_spikes`` includes the input's spikes; scores are the
    output layer's ``W a + b`` in activation units).
    """

    def __init__(self, plan: TPCPlan, *, ann_ops: int, name: str = "tpc"):
        if not isinstance(plan, TPCPlan):
            raise ConversionError(f"TPCSNN needs a TPCPlan, got {type(plan).__name__}")
        self.plan = plan
        super().__init__(plan.graph, coding="tpc", T=plan.steps, thresholds={}, input_mode="pattern",
                         readout="potential", seed=None, ann_ops=ann_ops, name=name)

    @property
    def bits(self) -> int:
        return self.plan.bits

    @property
    def steps(self) -> int:
        return self.plan.steps

    @property
    def latency_steps(self) -> int:
        """Steps from a sample's first input spike to its output (``depth * k``)."""
        return self.plan.depth * self.plan.steps

    def _build_spec(self, windows: int):
        from biosnn.codings.tpc.spec import tpc_network_spec
        return tpc_network_spec(self.plan, windows=windows, name=self.name)

    def _scores_from_potential(self, v_last: np.ndarray) -> np.ndarray:
        return v_last

    def reference(self, x, batch_size: int = 1000):
        """The exact numpy reference of this network (:func:`~biosnn.codings.tpc.reference.simulate_tpc`)."""
        return simulate_tpc(self.plan, x, batch_size=batch_size)

    def run(self, x, backend: str = "auto", batch_size: int | None = None, progress: bool = True,
            replicas: int | None = None, workers: int | None = None, **backend_options) -> SNNResult:
        """Simulate samples ``x`` through the pipeline, ``batch_size`` samples per simulation run.

        Each network copy (``replicas``, see :meth:`SNN.run`) simulates its
        ``ceil(batch_size / replicas)`` samples in as many windows plus
        ``depth - 1`` empty windows that flush the pipeline; the figures of
        each layer are taken from the windows in which it processed each
        sample.  Parameters as :meth:`SNN.run`.
        """
        logging.getLogger("brian2.codegen.generators.base").addFilter(_MAX_FILTER)  # idempotent
        x = _to_numpy(x)
        if x.ndim < 2 or len(x) == 0:
            raise ConversionError(f"x must have shape (N,) + {self.graph.input_shape} with N >= 1, got {x.shape}")
        check_nonnegative(x, "TPC", _WHY_NONNEGATIVE)
        n, lag = len(x), self.plan.depth - 1
        backend, batch_size, workers = batch_plan(backend, batch_size, n, workers, backend_options,
                                                  int(np.prod(x.shape[1:])))
        R, per_run = batch_layout(replicas, backend, batch_size, n)  # per_run: one copy's pipeline segment
        pieces, rows = [], {}
        # row of sample s in a run: s + d for a stage at depth d (its spikes are counted at the end of
        # window s + d), s + depth - 1 for the output (its v_last is taken at the start of window s + depth)
        depth = {"input": 0, **{s.name: s.depth - int(s.is_output) for s in self.plan.stages}}
        for block, start in enumerate(range(0, n, per_run)):
            chunk = x[start:start + per_run]
            pieces += [chunk, np.zeros((lag,) + x.shape[1:])]
            for lname, d in depth.items():
                rows.setdefault(lname, []).append(block * (per_run + lag) + d + np.arange(len(chunk)))
        res = super().run(np.concatenate(pieces), backend=backend, batch_size=R * (per_run + lag),
                          progress=progress, replicas=R, workers=workers, **backend_options)
        rows = {k: np.concatenate(v) for k, v in rows.items()}
        scores = res.scores[rows[self.graph.output]]
        return dataclasses.replace(
            res, predictions=np.argmax(scores, axis=1), scores=scores,
            layer_spikes={k: v[rows[k]] for k, v in res.layer_spikes.items()},
            layer_synops={k: v[rows[k]] for k, v in res.layer_synops.items()},
            extras={"latency_steps": np.full(n, self.latency_steps)})
