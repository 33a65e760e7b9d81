"""Exact numpy/torch reference of TDSNN reverse coding (Zhang et al., AAAI 2019).

Two views of the same network, both in float64:

* the **G-ANN** (:func:`g_forward`): the re-trained ANN with the activation
  ``G(x) = exp(ceil(L ln(x + 1)) / L)`` (``x >= 0``; 1 otherwise, eq. 11)
  in front of every weighted layer, and the analytic spike step of every
  neuron ``T(x) = ceil(L ln(x + 1))`` (eq. 10, :func:`spike_step`);
* the **discrete-time simulation** (:func:`simulate_tdsnn`): the LIF /
  ticking-neuron network that :mod:`biosnn.codings.tdsnn.spec` builds for
  Brian2, step by step with the same float operations in the same order
  (leak, bias, one addition per synaptic event in Brian2's spike-queue order,
  tick, threshold), so its potentials, scores and integer spike steps are
  those of Brian2 bit for bit.  The analytic ``T(x)`` of the G-ANN agrees
  with them except where ``L ln(x + 1)`` lies within rounding error of an
  integer (the discrete simulation decides there).

Discrete-time semantics
-----------------------
Time is counted in steps; ``d = exp(-1/L)`` is the leak per step and
``T_il`` the length of every period.  A spiking layer fires in its *active
period*; step ``k`` of it (``0 <= k < T_il``) encodes the value ``x`` with
``k = T(x)``.  The input layer is active in period 0; a weighted layer
(Linear, Conv2d, AvgPool2d) is inhibited during its input's active period and
active in the next one; a max-pool layer is active in its input's period (it
fires with its latest input, in the same step).  For a hidden weighted layer
with weights ``W``, bias ``b`` and input spike steps ``k_i``:

1. inhibitory step ``s = 0 .. T_il - 1``: ``v <- v d`` (plus ``-b`` at
   ``s = 0``: the bias is an input of G-value 1, i.e. a spike at step 0),
   then every input spike at step ``s`` adds ``-w_i`` (negated weights);
2. active step 0 (release): ``v <- v d``, so ``v = -d^T_il (W G(x) + b)``;
   the neuron fires if ``v >= 0`` (threshold 0);
3. active step ``k = 1 .. T_il - 1``: ``v <- v d + w_tick`` with
   ``w_tick = (1 - d) d^T_il`` (eq. 9, the ticking neuron), fire when
   ``v >= 0``; a neuron still silent at ``k = T_il - 1`` fires there
   (saturation: the value is clipped to ``exp((T_il - 1)/L) - 1``).

In exact arithmetic ``v(k) >= 0`` iff ``exp(k/L) >= a + 1`` with
``a = W G(x) + b``, so the neuron fires at ``T(a)`` (``0`` for ``a <= 0``):
the next layer receives ``exp(T(a)/L) = G(a)``.  The output layer integrates
in the same way with the weights not negated and is read at its release step:
``v = d^T_il (W G(x) + b)``; scores are ``v exp(T_il / L)``, the G-ANN's
logits.  A max-pool neuron has unit weights, threshold ``N`` (its number of
inputs), no leak and no ticking neuron: it fires with its latest input, at
``max_i k_i = T(max_i x_i)``.

Operation counts (Table 2 of the paper), per sample
---------------------------------------------------
* additions: synaptic events (every spike times its fan-out, into max-pool
  neurons too: the paper counts pooling comparisons as additions), plus one
  addition per tick and not-yet-fired neuron (``sum_i k_i`` for a layer),
  plus one bias addition per neuron of a layer with a (non-zero) bias;
* multiplications (leak): a hidden LIF neuron decays ``T_il`` times up to its
  release and once per active step until it fires (``T_il + k_i``); an
  output neuron ``T_il`` times; max-pool and input neurons never.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from biosnn.frontends.torch_graph import LayerGraph, _as_batch, linear_map
from biosnn.codings.rate.spec import layer_connections
from biosnn.conversion.chains import branch_error
from biosnn.errors import ConversionError

__all__ = ["spike_step", "g_value", "check_L", "check_T_il", "decay_factor", "tick_weight", "tdsnn_roles",
           "input_steps", "g_forward", "g_logits", "simulate_tdsnn", "operation_totals", "ann_operation_counts",
           "TDSNNReference", "WEIGHTED"]

#: Layer ops realised as LIF layers with a ticking neuron (the paper's synapse-based layers with weights).
WEIGHTED = ("linear", "conv2d", "avgpool2d")


def check_L(L) -> float:
    """``L`` as a float; :class:`ConversionError` unless it is a positive finite number (time steps)."""
    if isinstance(L, bool) or not isinstance(L, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(float(L)) and float(L) > 0):
        raise ConversionError(f"L (the leak constant, in time steps) must be a positive number, got {L!r}")
    return float(L)


def spike_step(x, L: float):
    """``T(x) = ceil(L ln(1 + max(x, 0)))`` (eq. 10), elementwise.

    Parameters
    ----------
    x : torch.Tensor
        Values (any float dtype; the computation stays in that dtype).
    L : float
        Leak constant (time steps).

    Returns
    -------
    torch.Tensor
        Whole numbers ``>= 0`` (time steps), same dtype as ``x``.
    """
    import torch
    return torch.ceil(L * torch.log1p(torch.clamp_min(x, 0.0)))


def g_value(x, L: float, max_step: int | None = None):
    """``G(x) = exp(T(x) / L)`` (eq. 11), optionally with ``T`` clipped to ``max_step``."""
    import torch
    steps = spike_step(x, L)
    if max_step is not None:
        steps = torch.clamp_max(steps, float(max_step))
    return torch.exp(steps / L)


def decay_factor(L: float) -> float:
    """Leak per time step ``d = exp(-1/L)`` (dimensionless)."""
    return math.exp(-1.0 / L)


def tick_weight(L: float, T_il: int) -> float:
    """Weight of the ticking neuron ``(1 - exp(-1/L)) exp(-T_il/L)`` (eq. 9, dimensionless)."""
    return -math.expm1(-1.0 / L) * math.exp(-T_il / L)


def check_T_il(T_il) -> int:
    """``T_il`` as an int; :class:`ConversionError` unless it is a positive whole number of steps."""
    if isinstance(T_il, bool) or not isinstance(T_il, (int, np.integer)) or T_il < 1:
        raise ConversionError(f"T_il (steps per inhibitory/active period) must be a positive integer, got {T_il!r}")
    return int(T_il)


#: Why TDSNN refuses residual additions and concatenations (:func:`biosnn.conversion.chains.branch_error`).
RESIDUAL_WHY = ("converts chains of Linear, Conv2d, AvgPool2d and MaxPool2d layers only: its network and exact "
                "reference realise one layer per inhibitory/active period, with G (eq. 11) only in front of "
                "weighted layers; a sum of branches needs both branches' spikes in the same inhibitory period "
                "(the shorter branch delayed by whole periods) and G on the shortcut, which are not implemented")


def tdsnn_roles(graph: LayerGraph) -> dict[str, str]:
    """How each layer is realised: ``input``, ``lif`` (hidden weighted layer), ``pool`` (max pooling), ``output``.

    Raises
    ------
    biosnn.errors.ConversionError
        The network is not a chain of Linear / Conv2d / AvgPool2d / MaxPool2d
        layers ending in a weighted layer (residual additions, branches and a
        max-pooling output are not part of TDSNN).
    """
    if not isinstance(graph, LayerGraph):
        raise ConversionError(f"expected a LayerGraph, got {type(graph).__name__}")
    for layer in graph.layers:
        if layer.op == "add":
            cat = any("of the concatenation)" in graph[src].module for src in layer.inputs)
            raise branch_error(f"layer '{layer.name}' ({layer.module})", "cat" if cat else "add", "TDSNN",
                               RESIDUAL_WHY)
    roles = {}
    for layer in graph.layers:
        if layer.op == "input":
            roles[layer.name] = "input"
            continue
        if layer.name == graph.output:
            if layer.op not in WEIGHTED:
                raise ConversionError(
                    f"the output layer '{layer.name}' ({layer.module}) is a {layer.op}; TDSNN reads the "
                    "potential of a weighted output layer. Fix: end the model with nn.Linear (or nn.Conv2d).")
            roles[layer.name] = "output"
        else:
            roles[layer.name] = "pool" if layer.op == "maxpool2d" else "lif"
        consumers = graph.consumers(layer.inputs[0])
        if len(consumers) != 1:
            raise ConversionError(
                f"layer '{layer.inputs[0]}' feeds {len(consumers)} layers ({', '.join(consumers)}); TDSNN "
                "converts chains in which every layer feeds exactly one layer. Fix: remove the branch.")
    return roles


def input_steps(graph: LayerGraph, x, L: float, T_il: int) -> np.ndarray:
    """Spike step of every input neuron, ``min(T(x), T_il - 1)``, float64 of shape ``(N, n_in)``.

    The Brian2 network receives exactly these numbers (timed array ``x_in``),
    so its input spikes are those of the reference bit for bit.
    """
    import torch
    xb = torch.from_numpy(np.ascontiguousarray(_as_batch(graph, x))).reshape(-1, graph.input.size)
    return torch.clamp_max(spike_step(xb, L), float(T_il - 1)).numpy()


class _Synapses:
    """One layer's synapses as the spec gives them to Brian2 (:func:`~biosnn.codings.rate.spec.layer_connections`),
    grouped by presynaptic neuron in creation order: the order of Brian2's spike queue."""

    def __init__(self, layer, sign: float):
        import torch
        conns = layer_connections(layer)
        order = np.argsort(conns.i, kind="stable")
        w = np.ones(len(conns.i)) if conns.weights is None else np.asarray(conns.weights, dtype=np.float64)
        deg = np.bincount(conns.i, minlength=layer.in_size)
        self.post = torch.from_numpy(np.asarray(conns.j, dtype=np.int64)[order])
        self.w = torch.from_numpy(sign * w[order])
        self.deg = torch.from_numpy(deg.astype(np.int64))
        self.first = torch.from_numpy((np.cumsum(deg) - deg).astype(np.int64))
        self.per_chunk = max(1, (1 << 22) // max(1, int(deg.max(initial=1))))
        self.n_post = layer.size

    def deliver(self, v, spikes) -> None:
        """``v[b, j] += w`` for every synapse ``i -> j`` of every spike ``(b, i)`` (bool ``(nb, n_pre)``).

        One addition per synapse, in Brian2's order (spiking neurons by index,
        each neuron's synapses in creation order), so the sums round exactly as
        in Brian2 (``numpy.add.at`` in runtime mode, a loop in C++).
        """
        import torch
        b, i = torch.nonzero(spikes, as_tuple=True)
        flat = v.view(-1)
        for lo in range(0, b.numel(), self.per_chunk):
            bb, ii = b[lo:lo + self.per_chunk], i[lo:lo + self.per_chunk]
            counts = self.deg[ii]
            rep = torch.repeat_interleave(torch.arange(ii.numel()), counts)
            offset = torch.arange(int(counts.sum())) - (torch.cumsum(counts, 0) - counts)[rep]
            syn = self.first[ii][rep] + offset
            flat.index_add_(0, bb[rep] * self.n_post + self.post[syn], self.w[syn])


def g_forward(graph: LayerGraph, x, L: float, *, max_step: int | None = None,
              batch_size: int = 256) -> dict[str, np.ndarray]:
    """Values of every layer of the G-ANN, float64.

    Parameters
    ----------
    graph : LayerGraph
        The traced (not normalised) network.
    x : array_like
        ``(N,) + graph.input_shape`` raw inputs.
    L : float
        Leak constant (time steps).
    max_step : int, optional
        Clip every spike step at this value (``T_il - 1``: what a network with
        period ``T_il`` computes); default no clipping (the re-trained ANN).
    batch_size : int
        Samples evaluated together.

    Returns
    -------
    dict of str to ndarray
        ``(N, layer.size)`` per layer: the input itself, the pre-activation
        ``W G(x) + b`` of weighted layers (the output's are the logits, before
        any ReLU) and the maximum of the input values for max pooling.  A
        neuron's spike step is :func:`spike_step` of its value.
    """
    import torch
    L = check_L(L)
    roles = tdsnn_roles(graph)
    maps = {layer.name: linear_map(layer) for layer in graph.layers[1:]}
    out: dict[str, list] = {name: [] for name in graph.names}
    for start in range(0, len(x), int(batch_size)):
        xb = torch.from_numpy(np.ascontiguousarray(_as_batch(graph, x[start:start + int(batch_size)])))
        vals = {graph.input.name: xb.reshape(xb.shape[0], -1)}
        with torch.no_grad():
            for layer in graph.layers[1:]:
                src = vals[layer.inputs[0]]
                f = maps[layer.name]
                vals[layer.name] = f(src) if roles[layer.name] == "pool" else f(g_value(src, L, max_step))
        for name, v in vals.items():
            out[name].append(v.numpy())
    return {name: np.concatenate(v) for name, v in out.items()}


def g_logits(graph: LayerGraph, values: dict) -> np.ndarray:
    """The G-ANN's output from :func:`g_forward` values (the output layer's ReLU applied if it has one)."""
    logits = values[graph.output]
    return np.maximum(logits, 0.0) if graph[graph.output].relu else logits


@dataclass(frozen=True)
class TDSNNReference:
    """What :func:`simulate_tdsnn` computed.

    Attributes
    ----------
    steps : dict of str to ndarray
        Active-period spike step of every neuron, int64 ``(N, layer.size)``,
        for the input, hidden and max-pool layers (every neuron fires once).
    scores : ndarray (N, classes)
        Output potential at its release step times ``exp(T_il / L)``
        (≈ the G-ANN's logits; ReLU applied if the output layer has one).
    predictions : ndarray (N,)
        ``argmax`` of the scores.
    saturated : dict of str to ndarray
        Per hidden layer, neurons per sample that reached the end of their
        active period without crossing the threshold (forced spike, clipped value).
    ops : dict of str to ndarray
        Operation counts per sample (see :func:`operation_totals`).
    """

    steps: dict
    scores: np.ndarray
    predictions: np.ndarray
    saturated: dict
    ops: dict


def simulate_tdsnn(graph: LayerGraph, x, L: float, T_il: int, batch_size: int = 256,
                   exact: bool = True) -> TDSNNReference:
    """Simulate the TDSNN network of ``graph`` in discrete time (see the module docstring).

    Parameters
    ----------
    graph : LayerGraph
        Traced chain network (weights as trained; negated here for hidden layers).
    x : array_like
        ``(N,) + graph.input_shape`` raw inputs.
    L : float
        Leak constant (time steps).
    T_il : int
        Steps per period (inhibitory period = active period of the input layer).
    batch_size : int
        Samples simulated together.
    exact : bool
        ``True`` (default): every synaptic event is one addition in Brian2's
        order, so potentials and spike steps equal Brian2's bit for bit (cost:
        one indexed addition per synaptic event, ~10x a float64 ANN pass per
        period step).  ``False``: the same network with the inhibitory-period
        sum associated differently, ``v = sum_i w_i d^(T_il - k_i)`` with the
        powers ``d^n`` by repeated multiplication and one matrix product per
        layer (about the cost of one ANN pass); its spike steps equal the exact
        ones unless a value lies within ~1e-13 (relative) of a step boundary.

    Returns
    -------
    TDSNNReference
    """
    import torch

    from biosnn.metrics import fan_out
    L, T_il = check_L(L), check_T_il(T_il)
    roles = tdsnn_roles(graph)
    if len(x) == 0:
        raise ConversionError("simulate_tdsnn() got an empty input batch")
    d, w_tick = decay_factor(L), tick_weight(L, T_il)
    gain = math.exp(T_il / L)
    names = [n for n in graph.names if roles[n] != "output"]
    syn, bias, pool = {}, {}, {}
    powers = [1.0]                                         # d^n by repeated multiplication, n = 0 .. T_il
    for _ in range(T_il):
        powers.append(powers[-1] * d)
    decayed = torch.tensor(powers[:0:-1], dtype=torch.float64)   # d^(T_il - k) for a spike at step k
    for layer in graph.layers[1:]:
        if roles[layer.name] == "pool":
            pool[layer.name] = linear_map(layer)           # max of the input steps: the latest input spike
            continue
        sign = -1.0 if roles[layer.name] == "lif" else 1.0
        syn[layer.name] = _Synapses(layer, sign) if exact else \
            (sign, linear_map(layer.replace(bias=None) if layer.bias is not None else layer))
        b = np.zeros(layer.size) if layer.bias is None else np.asarray(layer.bias, dtype=np.float64)
        bias[layer.name] = torch.from_numpy(sign * np.repeat(b, layer.size // b.size))
    steps: dict[str, list] = {n: [] for n in names}
    saturated: dict[str, list] = {n: [] for n in names if roles[n] == "lif"}
    scores = []
    for start in range(0, len(x), int(batch_size)):
        k = {graph.input.name: torch.from_numpy(input_steps(graph, x[start:start + int(batch_size)], L, T_il))}
        nb = k[graph.input.name].shape[0]
        with torch.no_grad():
            for layer in graph.layers[1:]:
                role, name = roles[layer.name], layer.name
                pre = k[layer.inputs[0]]
                if role == "pool":
                    k[name] = pool[name](pre)
                    continue
                if exact:
                    v = torch.zeros(nb, layer.size, dtype=torch.float64)
                    for s in range(T_il):                  # inhibitory period: leak, bias (step 0), spikes
                        v = v * d + bias[name] * float(s == 0)
                        syn[name].deliver(v, pre == s)
                    v = v * d + bias[name] * 0.0           # release (active step 0)
                else:
                    sign, f = syn[name]
                    v = sign * f(decayed[pre.long()]) + bias[name] * powers[T_il]
                if role == "output":
                    scores.append(v.numpy() * gain)
                    continue
                out = torch.full((nb, layer.size), -1.0, dtype=torch.float64)
                fired = torch.zeros(nb, layer.size, dtype=torch.bool)
                for step in range(T_il):                   # active period: release, then the ticking neuron
                    if step > 0:
                        v = v * d + bias[name] * 0.0
                        v = v + w_tick
                    new = ~fired & (v >= 0)
                    if step == T_il - 1:                   # the period ends: silent neurons fire (saturation)
                        forced = (~fired & ~new).sum(dim=1)
                        new = ~fired
                    out[new] = float(step)
                    fired |= new
                k[name] = out
                saturated[name].append(forced.numpy())
        for n in names:
            steps[n].append(k[n].numpy().astype(np.int64))
    steps_np = {n: np.concatenate(v) for n, v in steps.items()}
    scores_np = np.concatenate(scores)
    if graph[graph.output].relu:
        scores_np = np.maximum(scores_np, 0.0)
    fo = fan_out(graph)
    synaptic = sum((steps_np[n] >= 0).astype(np.int64) @ fo[n] for n in names)
    lif = [n for n in names if roles[n] == "lif"]
    tick_adds = sum((steps_np[n].sum(axis=1) for n in lif), np.zeros(len(scores_np), dtype=np.int64))
    ticks = sum((steps_np[n].max(axis=1) for n in lif), np.zeros(len(scores_np), dtype=np.int64))
    return TDSNNReference(
        steps=steps_np, scores=scores_np, predictions=np.argmax(scores_np, axis=1).astype(np.int64),
        saturated={n: np.concatenate(v) for n, v in saturated.items()},
        ops=operation_totals(graph, T_il, synaptic, tick_adds, ticks))


def _has_bias(layer) -> bool:
    """A bias that costs additions: present and not all zero (bias-free modules trace to zeros)."""
    return layer.bias is not None and bool(np.any(layer.bias != 0))


def operation_totals(graph: LayerGraph, T_il: int, synaptic, tick_additions, ticks) -> dict[str, np.ndarray]:
    """Per-sample operation counts of a TDSNN run from its measured parts.

    Parameters
    ----------
    graph : LayerGraph
        The network.
    T_il : int
        Steps per period.
    synaptic : array_like (N,)
        Synaptic events (spikes times fan-out, all spiking layers incl. the input).
    tick_additions : array_like (N,)
        Additions of ticking neurons: per tick, the not-yet-fired neurons it
        reaches (``sum_i k_i`` over hidden LIF neurons).
    ticks : array_like (N,)
        Spikes of all ticking neurons.

    Returns
    -------
    dict of str to ndarray
        ``synaptic_additions``, ``tick_additions``, ``bias_additions``,
        ``additions`` (their sum), ``leak_multiplications`` (= ``multiplications``)
        and ``ticks``, int64 ``(N,)``; see the module docstring for the rules.
    """
    roles = tdsnn_roles(graph)
    synaptic = np.asarray(synaptic, dtype=np.int64)
    tick_additions = np.asarray(tick_additions, dtype=np.int64)
    lif_neurons = sum(graph[n].size for n, r in roles.items() if r == "lif")
    out_neurons = graph[graph.output].size
    bias = sum(graph[n].size for n, r in roles.items()
               if r in ("lif", "output") and _has_bias(graph[n]))
    leak = (lif_neurons + out_neurons) * int(T_il) + tick_additions
    n = len(synaptic)
    return {"synaptic_additions": synaptic, "tick_additions": tick_additions,
            "bias_additions": np.full(n, bias, dtype=np.int64),
            "additions": synaptic + tick_additions + bias,
            "leak_multiplications": leak, "multiplications": leak.copy(),
            "ticks": np.asarray(ticks, dtype=np.int64)}


def ann_operation_counts(graph: LayerGraph) -> dict[str, int]:
    """Multiplications and additions of one ANN inference (the paper's DNN columns of Table 2).

    A weighted layer with ``M`` real inputs per output and ``N`` outputs does
    ``M N`` multiplications and ``(M - 1) N`` additions, plus ``N`` bias
    additions if it has a bias; a max-pool layer does ``(M - 1) N``
    comparisons, counted as additions (as in the paper).  Padding taps are
    not counted (:func:`biosnn.metrics.connection_counts`).

    Returns
    -------
    dict
        ``multiplications`` and ``additions`` (ints, per sample).
    """
    from biosnn.metrics import connection_counts
    mults = adds = 0
    for layer in graph.layers[1:]:
        conns = int(sum(int(c.sum()) for c in connection_counts(layer)))
        adds += conns - layer.size
        if layer.op in WEIGHTED:
            mults += conns
            if _has_bias(layer):
                adds += layer.size
    return {"multiplications": mults, "additions": adds}
