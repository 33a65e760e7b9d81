"""The exact numpy reference of temporal pattern coding (TPC; Rueckauer & Liu, IJCNN 2021).

A TPC network is an *n-bit quantised ANN* whose activations travel between
layers as binary spike patterns.  This module defines that quantised ANN
precisely (:func:`build_plan`, :func:`simulate_tpc`), and the bit-serial
neuron that emits a pattern (:func:`emit_pattern`).  The Brian2 network
(:mod:`biosnn.codings.tpc.spec`) and the torch model of
:func:`biosnn.codings.tpc.coding.prepare` implement the same definition.

Quantisation
------------
Layer ``L`` (the input, every ReLU layer, every pooling layer) has a scale
``lambda_L > 0`` (activation units) and the step ``Delta_L = lambda_L / (2**n - 1)``.
Its activation ``a`` is sent as the integer *code*::

    q = clip(floor(a / Delta_L + 1/2), 0, 2**n - 1)

i.e. ``a`` clipped to ``[0, lambda_L]`` and rounded (half up) to the nearest
of ``2**n`` equidistant levels ``0, Delta_L, ..., lambda_L``; the quantised
activation is ``q * Delta_L``.  With ``k < n`` time steps per window only the
``k`` most significant bits are sent: the *transmitted* code is
``q_k = q - (q mod 2**(n-k))`` (LSB truncation).  Every layer reads the
transmitted codes of its source.  Max pooling acts on codes (it commutes with
the monotone quantiser and with truncation); average pooling is a layer of its
own that re-quantises the window mean with its own scale.  The output layer
is not quantised: its scores are ``W a + b`` of the quantised activations.

Exact arithmetic
----------------
In code units the pre-activation of layer ``L`` is
``u = sum_i W'_ji q_i + b'_j`` with ``W' = W * Delta_pre / Delta_L`` and
``b' = b / Delta_L + 1/2`` (the rounding offset is folded into the bias; the
output layer uses ``Delta = 1`` and no offset).  ``W'`` and ``b'`` are
rounded to fixed point, multiples of ``2**-F_L``, with ``F_L`` fractional bits
chosen per layer so that every partial sum ``sum |W'| (2**n - 1) + |b'|`` stays
below ``2**(52 - F_L)``: then every sum, in any order, is exact in float64 (the
rounding changes the weights by at most ``2**-(F_L+1)`` code units; ``F_L`` is
typically 40-50).  This is what makes the Brian2 network, whose synapses add
``w * 2**(n-1-t)`` in whatever order spikes arrive, equal this reference bit
for bit.

Bit-serial semantics (what the spiking network does)
----------------------------------------------------
A neuron holding ``r = u`` (its code plus the rounding offset) at the start of
its emission window fires at step ``t = 0, ..., k-1`` iff ``r >= 2**(n-1-t)``
and then subtracts ``2**(n-1-t)`` (an IF neuron whose threshold halves every
step, reset by subtraction).  For ``0 <= r`` it emits exactly the binary digits
of ``min(floor(r), 2**n - 1)``, MSB first (:func:`emit_pattern`); a spike at
step ``t`` adds ``w * 2**(n-1-t)`` to the post-synaptic potential, so after the
window the post-synaptic neuron holds ``sum w q_k``: the pattern code is
lossless for ``k = n`` and truncates LSBs for ``k < n``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from biosnn import connectivity as cx
from biosnn.frontends.torch_graph import LayerGraph, _as_batch, snn_roles
from biosnn.errors import ConversionError

__all__ = ["MAX_BITS", "TPCStage", "TPCPlan", "TPCResult", "check_bits", "build_plan", "input_codes",
           "truncate", "popcount", "emit_pattern", "simulate_tpc"]

#: Largest supported bit width (codes stay far inside float64's exact integers).
MAX_BITS = 24

#: Fixed-point fractional bits are chosen so that partial sums stay below 2**(52 - F).
_MANTISSA = 52


def check_bits(bits, steps=None) -> tuple[int, int]:
    """Validate the bit width ``n`` and the time steps ``k`` per window (default ``k = n``).

    Returns
    -------
    (int, int)
        ``(bits, steps)``.
    """
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
        raise ConversionError(f"bits must be an integer in [1, {MAX_BITS}], got {bits!r}")
    if steps is None:
        steps = bits
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= bits:
        raise ConversionError(f"steps must be an integer in [1, bits={bits}] (fewer steps than bits "
                              f"truncate least-significant bits), got {steps!r}")
    return int(bits), int(steps)


@dataclass(frozen=True, eq=False)
class TPCStage:
    """One population of the TPC network: a layer of the graph in code units.

    Attributes
    ----------
    name : str
        Torch layer name.
    op : str
        ``linear``, ``conv2d``, ``avgpool2d`` or ``maxpool2d``.
    source : str
        The layer it reads (``"input"`` or an earlier stage).
    depth : int
        Pipeline stage, 1 for the first layer: the stage emits a sample's
        pattern ``depth`` windows after the input emitted it.
    scale : float
        ``lambda_L`` in activation units (``nan`` for the output layer).
    step : float
        ``Delta_L`` (activation units per code unit; 1 for the output layer).
    conns : biosnn.connectivity.Connections
        Synapses from the source; ``weights`` are ``W'`` in fixed point
        (``None`` for max pooling).
    bias : numpy.ndarray
        ``b'`` per neuron in fixed point, rounding offset 1/2 included
        (zeros for max pooling).
    frac_bits : int
        Fractional bits ``F`` of ``W'`` and ``b'`` (0 for max pooling).
    is_output : bool
        The output layer (integrates, not quantised).
    """

    name: str
    op: str
    source: str
    depth: int
    scale: float
    step: float
    conns: cx.Connections
    bias: np.ndarray
    frac_bits: int
    is_output: bool

    @property
    def size(self) -> int:
        return int(self.conns.n_post)

    def matrix(self):
        """``W'`` as a scipy CSR matrix ``(size, source size)`` (linear stages only)."""
        from scipy import sparse
        c = self.conns
        return sparse.csr_matrix((np.asarray(c.weights), (np.asarray(c.j), np.asarray(c.i))),
                                 shape=(c.n_post, c.n_pre))


@dataclass(frozen=True, eq=False)
class TPCPlan:
    """A LayerGraph quantised for TPC: scales, fixed-point weights and pipeline stages.

    Attributes
    ----------
    graph : LayerGraph
        The traced network with ``input_scale = Delta_input`` (so ``x /
        graph.input_scale`` is the input in code units); its weights are the
        original float ones, the stages hold the fixed-point ones.
    bits, steps : int
        ``n`` and ``k``.
    input_scale : float
        ``lambda_input``.
    stages : tuple of TPCStage
        In pipeline order; the last is the output layer.
    """

    graph: LayerGraph
    bits: int
    steps: int
    input_scale: float
    stages: tuple

    @property
    def depth(self) -> int:
        """Number of pipeline stages after the input (the output layer's depth)."""
        return len(self.stages)

    @property
    def input_step(self) -> float:
        """``Delta_input = lambda_input / (2**n - 1)``."""
        return self.graph.input_scale

    @property
    def scales(self) -> dict:
        """``lambda_L`` of the input and every quantised stage."""
        out = {"input": self.input_scale}
        out.update({s.name: s.scale for s in self.stages if not s.is_output})
        return out

    def stage(self, name: str) -> TPCStage:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConversionError(f"no TPC stage named '{name}'; stages: {[s.name for s in self.stages]}")

    def fanout(self, name: str) -> np.ndarray:
        """Synapses out of each neuron of layer ``name`` (``"input"`` or a stage) into the next stage."""
        for s in self.stages:
            if s.source == name:
                return np.bincount(np.asarray(s.conns.i), minlength=s.conns.n_pre).astype(np.int64)
        return np.zeros(self.stage(name).size, dtype=np.int64)


#: What TPC makes of a network, for the errors about residual connections.
RESIDUAL_WHY = "pipelines a feed-forward chain of layers (one window per layer)"


def _chain(graph: LayerGraph) -> list:
    """The graph's layers after the input, checked to form a feed-forward chain TPC can pipeline."""
    roles = snn_roles(graph)
    layers = list(graph.layers[1:])
    for layer in layers:
        if layer.op == "add" or roles[layer.name] == "virtual":
            raise ConversionError(
                f"layer '{layer.name}' ({layer.module}) is part of a residual addition; TPC conversion "
                f"{RESIDUAL_WHY} and does not support residual connections. Fix: convert a network without "
                "skip connections")
    out = graph[graph.output]
    if out.op not in ("linear", "conv2d", "avgpool2d"):
        raise ConversionError(f"the output layer '{out.name}' ({out.module}) is a {out.op}; TPC reads the "
                              "output potential of a linear, conv2d or avgpool2d layer. Fix: end the model "
                              "with nn.Linear (or a convolution)")
    if out.relu:
        raise ConversionError(f"the output layer '{out.name}' ({out.module}) has a ReLU; TPC reads the "
                              "output layer's potential (the logits). Fix: remove the final ReLU")
    return layers


def _fixed_point(w: np.ndarray, b: np.ndarray, j: np.ndarray, n_post: int, bits: int,
                 offset: float, where: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Round ``w`` and ``b + offset`` to ``F`` fractional bits with all partial sums exact."""
    bound = np.bincount(j, weights=np.abs(w), minlength=n_post) * (2 ** bits - 1) + np.abs(b) + abs(offset)
    peak = float(bound.max()) if bound.size else 0.0
    if not np.isfinite(peak):
        raise ConversionError(f"{where}: weights or bias are not finite")
    frac = _MANTISSA - max(0, math.ceil(math.log2(peak * 1.01 + 1.0)))
    if frac < 8:
        raise ConversionError(f"{where}: the weights are too large ({peak:.3g} code units) for exact "
                              "fixed-point sums; check the per-layer scales")
    unit = 2.0 ** frac
    return np.rint(w * unit) / unit, np.rint(b * unit) / unit + offset, frac


def build_plan(graph: LayerGraph, scales: dict, bits: int, steps: int | None = None) -> TPCPlan:
    """Quantise a traced graph for TPC (see the module docstring).

    Parameters
    ----------
    graph : LayerGraph
        Traced network (original weights, ``input_scale`` 1): a chain of
        linear / conv2d / avgpool2d / maxpool2d layers with ReLUs, ending in
        a linear or conv layer without ReLU.
    scales : dict of str to float
        ``lambda_L`` for ``"input"`` and every layer that is not the output and
        not a max pool (a max pool takes its source's scale), in activation
        units.
    bits : int
        ``n``, bits per activation.
    steps : int, optional
        ``k <= n`` time steps per window (default ``n``).

    Returns
    -------
    TPCPlan
    """
    from biosnn.codings.rate.spec import layer_connections

    bits, steps = check_bits(bits, steps)
    if not isinstance(graph, LayerGraph):
        raise ConversionError(f"expected a LayerGraph, got {type(graph).__name__}")
    if graph.input_scale != 1.0:
        raise ConversionError("build_plan needs the traced graph (input_scale 1), not a normalised one")
    levels = 2 ** bits - 1

    def scale_of(name):
        value = scales.get(name)
        if value is None or not (float(value) > 0 and np.isfinite(float(value))):
            raise ConversionError(f"the scale of layer '{name}' must be a positive number, got {value!r}")
        return float(value)

    lam_in = scale_of("input")
    step_of = {"input": lam_in / levels}
    scale_by = {"input": lam_in}
    stages = []
    for depth, layer in enumerate(_chain(graph), start=1):
        src = layer.inputs[0]
        if src not in step_of:
            raise ConversionError(f"layer '{layer.name}' reads '{src}', which is not the previous stage")
        conns = layer_connections(layer)
        is_out = layer.name == graph.output
        if layer.op == "maxpool2d":
            lam, step = scale_by[src], step_of[src]
            weights, bias, frac = None, np.zeros(layer.size), 0
        else:
            lam = float("nan") if is_out else scale_of(layer.name)
            step = 1.0 if is_out else lam / levels
            raw_b = np.zeros(layer.size) if layer.bias is None else np.asarray(layer.bias, dtype=np.float64)
            if layer.op == "conv2d":
                raw_b = np.repeat(raw_b, int(np.prod(layer.out_shape[1:])))
            w = np.asarray(conns.weights, dtype=np.float64) * (step_of[src] / step)
            weights, bias, frac = _fixed_point(w, raw_b / step, np.asarray(conns.j), layer.size, bits,
                                               0.0 if is_out else 0.5, f"layer '{layer.name}'")
        conns = cx.Connections(conns.i, conns.j, weights, conns.kernel_index, conns.n_pre, conns.n_post,
                               pre_shape=conns.pre_shape, post_shape=conns.post_shape,
                               window_shape=conns.window_shape)
        stages.append(TPCStage(layer.name, layer.op, src, depth, lam, step, conns, bias, frac, is_out))
        step_of[layer.name], scale_by[layer.name] = step, lam
    return TPCPlan(graph.replace_layers(input_scale=step_of["input"]), bits, steps, lam_in, tuple(stages))


def truncate(codes: np.ndarray, bits: int, steps: int) -> np.ndarray:
    """The transmitted codes: the ``steps`` most significant of ``bits`` bits (LSBs set to 0)."""
    drop = 2.0 ** (bits - steps)
    return np.floor(codes / drop) * drop


def popcount(codes: np.ndarray, bits: int) -> np.ndarray:
    """Number of set bits of non-negative integer codes (float or int arrays), elementwise."""
    c = np.asarray(codes).astype(np.int64)
    return sum((c >> b) & 1 for b in range(bits))


def input_codes(plan: TPCPlan, x) -> np.ndarray:
    """Input codes ``clip(floor(x / Delta_input + 1/2), 0, 2**n - 1)``, float64 ``(N, n_in)``, untruncated."""
    xb = _as_batch(plan.graph, x)  # divides by graph.input_scale = Delta_input
    return np.clip(np.floor(xb.reshape(len(xb), -1) + 0.5), 0, 2 ** plan.bits - 1)


def emit_pattern(r, bits: int, steps: int | None = None) -> np.ndarray:
    """The spikes of IF neurons with potential ``r`` whose threshold halves every step.

    Parameters
    ----------
    r : array_like
        Potentials at the start of the emission window (code units, rounding
        offset included).
    bits, steps : int
        ``n`` and ``k``: at step ``t < k`` the threshold is ``2**(n-1-t)``;
        a spike subtracts it (reset by subtraction).

    Returns
    -------
    numpy.ndarray
        bool ``r.shape + (steps,)``; for ``r >= 0`` the spikes are the ``k``
        most significant binary digits of ``min(floor(r), 2**n - 1)``.
    """
    bits, steps = check_bits(bits, steps)
    r = np.array(r, dtype=np.float64)
    out = np.zeros(r.shape + (steps,), dtype=bool)
    for t in range(steps):
        theta = 2.0 ** (bits - 1 - t)
        out[..., t] = r >= theta
        r = r - theta * out[..., t]
    return out


@dataclass
class TPCResult:
    """Result of :func:`simulate_tpc`.

    Attributes
    ----------
    codes : dict of str to numpy.ndarray
        Transmitted codes, int64 ``(N, size)``, of the input and every
        quantised stage (keys: torch layer names).
    layer_spikes : dict of str to numpy.ndarray
        Spikes per sample of each of them (the codes' set bits), int64 ``(N,)``.
    layer_synops : dict of str to numpy.ndarray
        Synaptic operations per sample caused by their spikes (spikes x
        fan-out), int64 ``(N,)``.
    scores : numpy.ndarray
        ``(N, classes)`` output of the quantised network (activation units).
    predictions : numpy.ndarray
        ``argmax`` of the scores (ties to the lowest class).
    """

    codes: dict
    layer_spikes: dict
    layer_synops: dict
    scores: np.ndarray
    predictions: np.ndarray

    def activations(self, plan: TPCPlan) -> dict:
        """Quantised (transmitted) activations ``codes * Delta_L`` in activation units."""
        steps = {"input": plan.input_step, **{s.name: s.step for s in plan.stages}}
        return {k: v * steps[k] for k, v in self.codes.items()}


def _potential(stage: TPCStage, pre: np.ndarray, mats: dict) -> np.ndarray:
    """``u`` of a stage (code units, rounding offset included) from its source's transmitted codes."""
    if stage.op == "maxpool2d":
        c = stage.conns
        out = np.zeros((stage.size, pre.shape[0]))
        np.maximum.at(out, np.asarray(c.j), pre.T[np.asarray(c.i)])
        return out.T
    return np.asarray(mats[stage.name] @ pre.T).T + stage.bias


def _forward_batch(plan: TPCPlan, x, mats: dict) -> tuple[dict, np.ndarray]:
    levels = 2 ** plan.bits - 1
    codes = {"input": truncate(input_codes(plan, x), plan.bits, plan.steps)}
    for stage in plan.stages[:-1]:
        u = _potential(stage, codes[stage.source], mats)
        codes[stage.name] = truncate(np.clip(np.floor(u), 0, levels), plan.bits, plan.steps)
    out = plan.stages[-1]
    return codes, _potential(out, codes[out.source], mats)


def simulate_tpc(plan: TPCPlan, x, batch_size: int = 1000) -> TPCResult:
    """The quantised ANN of ``plan`` in code units: what the TPC spiking network computes.

    Parameters
    ----------
    plan : TPCPlan
        From :func:`build_plan` (or ``snn.plan`` of a converted network).
    x : array_like or torch.Tensor
        ``(N,) + input_shape`` raw inputs (divided by ``Delta_input`` inside).
    batch_size : int
        Samples evaluated together.

    Returns
    -------
    TPCResult
        Transmitted codes, spikes and synaptic operations per layer, scores
        and predictions.
    """
    if not isinstance(plan, TPCPlan):
        raise ConversionError(f"expected a TPCPlan, got {type(plan).__name__}")
    if not hasattr(x, "detach"):
        x = np.asarray(x)
    if len(x) == 0:
        raise ConversionError("simulate_tpc() got an empty input batch")
    mats = {s.name: s.matrix() for s in plan.stages if s.op != "maxpool2d"}
    fanout = {name: plan.fanout(name) for name in ["input"] + [s.name for s in plan.stages[:-1]]}
    codes, scores = {}, []
    for start in range(0, len(x), int(batch_size)):
        c, u = _forward_batch(plan, x[start:start + int(batch_size)], mats)
        scores.append(u)
        for k, v in c.items():
            codes.setdefault(k, []).append(v.astype(np.int64))
    codes = {k: np.concatenate(v) for k, v in codes.items()}
    scores = np.concatenate(scores)
    spikes = {k: popcount(v, plan.bits).sum(axis=1) for k, v in codes.items()}
    synops = {k: popcount(v, plan.bits) @ fanout[k] for k, v in codes.items()}
    return TPCResult(codes, spikes, synops, scores, np.argmax(scores, axis=1).astype(np.int64))
