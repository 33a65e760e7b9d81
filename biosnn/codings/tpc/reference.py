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

Residual additions and concatenations
-------------------------------------
A residual addition ``relu(W2 h + shortcut(x))`` is one stage whose neurons
receive several weighted projections (:func:`~biosnn.codings.rate.spec.synaptic_inputs`
looks through the branches without ReLU): ``u = sum_k c_k W'_k q_k + b'`` with
each source's own ``Delta`` in ``W'_k``, rounded to fixed point with one
``F_L`` for all of them, and quantised like any stage.  A layer reading a
``torch.cat`` is traced as such a sum of partial layers.  A bit-serial sum
needs every source's pattern of a sample in the same window (the weight of a
spike is set by its step in the window): a stage has depth ``1 +`` the largest
depth of its sources, and the synapses from a source of depth ``d`` delay its
spikes by ``depth - 1 - d`` whole windows (:class:`TPCInput`), which keeps each
spike's step in its window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from biosnn import connectivity as cx
from biosnn.frontends.torch_graph import LayerGraph, _as_batch, snn_roles
from biosnn.errors import ConversionError

__all__ = ["MAX_BITS", "TPCInput", "TPCStage", "TPCPlan", "TPCResult", "check_bits", "build_plan", "input_codes",
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
class TPCInput:
    """Synapses from one emitting layer into a stage.

    Attributes
    ----------
    source : str
        The emitting layer (``"input"`` or an earlier stage).
    layer : str
        The graph layer whose map the synapses realise (the stage's own, a
        residual branch's linear/conv layer, or the ``add`` for a shortcut).
    conns : biosnn.connectivity.Connections
        The synapses; ``weights`` are ``W'`` in fixed point (``None`` for max pooling).
    delay : int
        Windows the synapses delay the source's spikes: a stage reading sources
        of different depths (a residual addition, a concatenation read by a
        weighted layer) receives all of a sample's patterns in the same window.
    tag : str
        Suffix that makes the projection name unique (empty for a single input).
    """

    source: str
    layer: str
    conns: cx.Connections
    delay: int
    tag: str

    def matrix(self):
        """``W'`` as a scipy CSR matrix ``(n_post, n_pre)``."""
        from scipy import sparse
        c = self.conns
        return sparse.csr_matrix((np.asarray(c.weights), (np.asarray(c.j), np.asarray(c.i))),
                                 shape=(c.n_post, c.n_pre))


@dataclass(frozen=True, eq=False)
class TPCStage:
    """One population of the TPC network: a layer of the graph in code units.

    Attributes
    ----------
    name : str
        Torch layer name.
    op : str
        ``linear``, ``conv2d``, ``avgpool2d``, ``maxpool2d`` or ``add`` (a
        residual addition or a layer reading a concatenation: the sum of the
        weighted inputs of its branches).
    inputs : tuple of TPCInput
        Synapses from the emitting layers it reads (one for a chain layer;
        residual branches without neurons are looked through, see
        :func:`~biosnn.codings.rate.spec.synaptic_inputs`).
    depth : int
        Pipeline stage: the stage emits a sample's pattern ``depth`` windows
        after the input emitted it (``1 +`` the largest depth of its sources;
        the input has depth 0).
    scale : float
        ``lambda_L`` in activation units (``nan`` for the output layer).
    step : float
        ``Delta_L`` (activation units per code unit; 1 for the output layer).
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
    inputs: tuple
    depth: int
    scale: float
    step: float
    bias: np.ndarray
    frac_bits: int
    is_output: bool

    @property
    def size(self) -> int:
        return int(self.inputs[0].conns.n_post)

    @property
    def sources(self) -> tuple:
        """The emitting layers it reads."""
        return tuple(si.source for si in self.inputs)

    @property
    def source(self) -> str:
        """The emitting layer a single-input stage reads."""
        return self._single().source

    @property
    def conns(self) -> cx.Connections:
        """The synapses of a single-input stage."""
        return self._single().conns

    def _single(self) -> TPCInput:
        if len(self.inputs) != 1:
            raise ConversionError(f"stage '{self.name}' reads {len(self.inputs)} sources {list(self.sources)}; "
                                  "use its inputs")
        return self.inputs[0]

    def matrix(self):
        """``W'`` as a scipy CSR matrix ``(size, source size)`` (single-input linear stages only)."""
        return self._single().matrix()


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
        """Number of pipeline stages after the input (the output layer's depth, the largest)."""
        return max(s.depth for s in self.stages)

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
        """Synapses out of each neuron of layer ``name`` (``"input"`` or a stage) into the stages reading it."""
        size = self.graph.input.size if name == "input" else self.stage(name).size
        out = np.zeros(size, dtype=np.int64)
        for s in self.stages:
            for si in s.inputs:
                if si.source == name:
                    out += np.bincount(np.asarray(si.conns.i), minlength=size).astype(np.int64)
        return out


def _check_output(graph: LayerGraph) -> None:
    """The output layer must be read as a potential: a weighted layer (or a sum of them) without ReLU."""
    out = graph[graph.output]
    if out.op not in ("linear", "conv2d", "avgpool2d", "add"):
        raise ConversionError(f"the output layer '{out.name}' ({out.module}) is a {out.op}; TPC reads the "
                              "output potential of a linear, conv2d or avgpool2d layer. Fix: end the model "
                              "with nn.Linear (or a convolution)")
    if out.relu:
        raise ConversionError(f"the output layer '{out.name}' ({out.module}) has a ReLU; TPC reads the "
                              "output layer's potential (the logits). Fix: remove the final ReLU")


def _fixed_point(ws: list, b: np.ndarray, js: list, n_post: int, bits: int,
                 offset: float, where: str) -> tuple[list, np.ndarray, int]:
    """Round the weights ``ws`` (one array per input, post indices ``js``) and ``b + offset`` to ``F``
    fractional bits with all partial sums of all inputs together exact."""
    bound = np.abs(b) + abs(offset)
    for w, j in zip(ws, js):
        bound = bound + np.bincount(j, weights=np.abs(w), minlength=n_post) * (2 ** bits - 1)
    peak = float(bound.max()) if bound.size else 0.0
    if not np.isfinite(peak):
        raise ConversionError(f"{where}: weights or bias are not finite")
    frac = _MANTISSA - max(0, math.ceil(math.log2(peak * 1.01 + 1.0)))
    if frac < 8:
        raise ConversionError(f"{where}: the weights are too large ({peak:.3g} code units) for exact "
                              "fixed-point sums; check the per-layer scales")
    unit = 2.0 ** frac
    return [np.rint(w * unit) / unit for w in ws], np.rint(b * unit) / unit + offset, frac


def build_plan(graph: LayerGraph, scales: dict, bits: int, steps: int | None = None) -> TPCPlan:
    """Quantise a traced graph for TPC (see the module docstring).

    Parameters
    ----------
    graph : LayerGraph
        Traced network (original weights, ``input_scale`` 1): linear /
        conv2d / avgpool2d / maxpool2d layers with ReLUs and residual
        additions (concatenations trace to additions of partial layers),
        ending in a linear or conv layer (or a sum of them) without ReLU.
    scales : dict of str to float
        ``lambda_L`` for ``"input"`` and every layer with neurons that is not the output and
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
    from biosnn.codings.rate.spec import layer_connections, synaptic_inputs

    bits, steps = check_bits(bits, steps)
    if not isinstance(graph, LayerGraph):
        raise ConversionError(f"expected a LayerGraph, got {type(graph).__name__}")
    if graph.input_scale != 1.0:
        raise ConversionError("build_plan needs the traced graph (input_scale 1), not a normalised one")
    levels = 2 ** bits - 1
    roles = snn_roles(graph)
    _check_output(graph)

    def scale_of(name):
        value = scales.get(name)
        if value is None or not (float(value) > 0 and np.isfinite(float(value))):
            raise ConversionError(f"the scale of layer '{name}' must be a positive number, got {value!r}")
        return float(value)

    lam_in = scale_of("input")
    step_of = {"input": lam_in / levels}
    scale_by = {"input": lam_in}
    depth_of = {"input": 0}
    stages = []
    for layer in graph.layers[1:]:
        if roles[layer.name] == "virtual":
            continue
        is_out = layer.name == graph.output
        if layer.op == "maxpool2d":
            src = layer.inputs[0]
            depth = depth_of[src] + 1
            conns = layer_connections(layer)
            inputs = (TPCInput(src, layer.name, conns, 0, ""),)
            lam, step, bias, frac = scale_by[src], step_of[src], np.zeros(layer.size), 0
        else:
            syn, raw_b = synaptic_inputs(graph, layer.name, roles)
            depth = 1 + max(depth_of[si.source] for si in syn)
            lam = float("nan") if is_out else scale_of(layer.name)
            step = 1.0 if is_out else lam / levels
            ws = [np.asarray(si.conns.weights, dtype=np.float64) * (si.scale * step_of[si.source] / step)
                  for si in syn]
            ws, bias, frac = _fixed_point(ws, raw_b / step, [np.asarray(si.conns.j) for si in syn], layer.size,
                                          bits, 0.0 if is_out else 0.5, f"layer '{layer.name}'")
            inputs = tuple(
                TPCInput(si.source, si.layer.name, cx.Connections(si.conns.i, si.conns.j, w, si.conns.kernel_index, si.conns.n_pre,
                                                   si.conns.n_post, pre_shape=si.conns.pre_shape,
                                                   post_shape=si.conns.post_shape,
                                                   window_shape=si.conns.window_shape),
                         depth - 1 - depth_of[si.source], si.tag if len(syn) > 1 else "")
                for si, w in zip(syn, ws))
        stages.append(TPCStage(layer.name, layer.op, inputs, depth, lam, step, bias, frac, is_out))
        step_of[layer.name], scale_by[layer.name], depth_of[layer.name] = step, lam, depth
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


def _potential(stage: TPCStage, codes: dict, mats: dict) -> np.ndarray:
    """``u`` of a stage (code units, rounding offset included) from its sources' transmitted codes."""
    if stage.op == "maxpool2d":
        c, pre = stage.conns, codes[stage.source]
        out = np.zeros((stage.size, pre.shape[0]))
        np.maximum.at(out, np.asarray(c.j), pre.T[np.asarray(c.i)])
        return out.T
    return sum(np.asarray(mats[stage.name][k] @ codes[si.source].T).T for k, si in enumerate(stage.inputs)) \
        + stage.bias


def _forward_batch(plan: TPCPlan, x, mats: dict) -> tuple[dict, np.ndarray]:
    levels = 2 ** plan.bits - 1
    codes = {"input": truncate(input_codes(plan, x), plan.bits, plan.steps)}
    for stage in plan.stages:
        if stage.is_output:
            continue
        u = _potential(stage, codes, mats)
        codes[stage.name] = truncate(np.clip(np.floor(u), 0, levels), plan.bits, plan.steps)
    out = next(s for s in plan.stages if s.is_output)
    return codes, _potential(out, codes, mats)


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
    mats = {s.name: [si.matrix() for si in s.inputs] for s in plan.stages if s.op != "maxpool2d"}
    fanout = {name: plan.fanout(name) for name in ["input"] + [s.name for s in plan.stages if not s.is_output]}
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
