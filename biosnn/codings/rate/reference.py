"""Reference rate-coded IF simulation of a :class:`~biosnn.frontends.torch_graph.LayerGraph`.

This is the exact, discrete-time definition that the Brian2 implementation of
a converted network reproduces.  It is deliberately small: float64, dense
(torch functional ops on the CPU), vectorised over the batch.

Semantics
---------
Time runs in steps ``t = 1, ..., T``.  Every non-input layer has one state
vector per sample.  In each step the layers are updated once, in the graph's
topological order, so a spike crosses all layers within one step (like a
layer-by-layer forward pass).  With ``s_L(t)`` the 0/1 output of layer ``L``
in step ``t``:

Input (``s_input(t)``)
    ``"analog"``: the constant ``x / input_scale`` every step (a current, so
    the first layer receives ``W @ x + b`` each step).  ``"poisson"``:
    Bernoulli spikes with probability ``clip(x / input_scale, 0, 1)`` per step
    (see :func:`poisson_trains`).  ``"spikes"``: a given ``(N, T, ...)`` train.

IF layer (``linear``, ``conv2d``, ``avgpool2d``, ``add``)
    ``v_L += I_L(t)`` with the synaptic input ``I_L(t) = W_L s_pre(t) + b_L``
    (``avgpool2d``: the window mean of ``s_pre(t)``, no bias; ``add``:
    ``sum_i c_i I_i(t)``, where ``I_i`` is the synaptic input of a *virtual*
    branch (see :func:`~biosnn.frontends.torch_graph.snn_roles`) or the spikes
    ``s_i(t)`` of a spiking one).  Then, if ``v_L >= theta_L``: ``s_L(t) = 1``
    and ``v_L -= theta_L`` (reset by subtraction; at most one spike per step),
    else ``s_L(t) = 0``.  ``v_L`` starts at 0; ``theta_L`` is 1 unless given.

Signed IF layer (``signed=True``; the signed IF neuron of Hu et al. 2023, cf. Wang et al. 2022)
    The same integration, and a running count ``n_L(t)`` (spikes minus
    negative spikes, ``n_L(0) = 0``).  Then, if ``v_L >= theta_L``:
    ``s_L(t) = +1``, ``v_L -= theta_L``, ``n_L += 1``; else if ``v_L < 0`` and
    ``n_L > 0``: ``s_L(t) = -1`` (a negative spike, taking back an earlier
    spike), ``v_L += theta_L``, ``n_L -= 1``; else ``s_L(t) = 0``.  Synapses
    pass ``w * s_L(t)``.  While one spike per step suffices, ``v_L`` stays in
    ``[0, theta_L)`` once the neuron has spiked, so ``n_L(t) = max(0,
    floor(V_L(t) / theta_L))`` with ``V_L(t) = v_L(0) + sum of its inputs so
    far``: the count follows the summed input down as well as up, whatever
    order the input came in (no "unevenness error" from early spikes).  With
    ``v_L(0) = theta_L / 2`` (QCFS) that is ``round(sum I / theta_L)``; the
    lower bound 0 matches every ``v_L(0)``.  With ``max_count`` a positive
    spike also needs ``n_L < max_count`` (the clip of a QCFS activation at
    ``L`` levels, :mod:`biosnn.codings.rate.levels`).

Burst (signed IF layer with ``burst=B``; cf. the burst spikes of Li & Zeng 2022)
    A neuron may emit up to ``B`` spikes of one sign in one step, as one event
    that carries their number ``k``: if ``v_L >= theta_L`` (and ``n_L <
    max_count``): ``k = clip(floor(v_L / theta_L), 1, B')`` with ``B' = B``
    (``clip(max_count - n_L, 1, B)`` with ``max_count``); else if ``v_L < 0`` and
    ``n_L > 0``: ``k = -clip(ceil(-v_L / theta_L), 1, clip(n_L, 1, B))``; else
    ``k = 0``.  Then ``v_L -= k theta_L``, ``n_L += k``, and ``s_L(t) = k``:
    synapses pass ``w * k``, and the event counts as ``|k|`` spikes (positive
    or negative).  ``B = 1`` is the signed IF neuron above.  While no step
    needs more than ``B`` spikes, ``n_L(t) = clip(floor(V_L(t) / theta_L), 0,
    max_count)`` holds after *every* step, whatever the size of the input's
    jumps; with ``B >= max_count`` it always holds (up to float rounding), so a
    QCFS network with ``match_levels`` reproduces its ANN's quantised
    activations layer by layer.  A max-pool gate reading bursts passes
    ``M(t) - M(t - 1)`` as one event as well (a burst of up to ``B`` spikes).

Max-pool layer (``maxpool2d``, a gate without membrane)
    Each unit tracks ``M(t) = max_j C_j(t)``, the largest running spike
    count ``C_j(t) = sum_{t' <= t} s_j(t')`` among the inputs ``j`` in its
    window (padding excluded), and emits ``s_pool(t) = M(t) - M(t - 1)``
    (``M(0) = 0``): it passes a spike exactly when an input spiking in step
    ``t`` sets a new maximal count.  With spiking input ``M`` grows by at
    most 1 per step, so this is 0 or 1, and the pool's spike count after
    ``T`` steps is exactly the largest input count in its window (its rate
    is the max rate).  No tie-breaking is needed.  (With analog input
    straight into a max pool the increment is an analog value.)  With signed
    inputs the counts ``C_j`` can fall, ``M`` by at most 1 per step, and the
    gate's ``s_pool(t) = M(t) - M(t - 1)`` is -1, 0 or 1: its signed count is
    again the largest signed input count (the Brian2 network's signed gate,
    :mod:`biosnn.codings.rate.spec`, keeps one count per window position).

Output layer
    ``readout="spikes"``: an IF layer like the others; scores are spike
    counts / T.  ``readout="potential"``: no threshold, it only integrates;
    scores are ``v_out(T) / T``.  Predictions are ``argmax`` of the scores
    (ties to the lowest class index).

With analog input, a first-layer neuron with constant input ``I`` has
``v(t) = t * I - count(t)``, hence ``count(T) = floor(T * clip(I, 0, 1))`` for
``I <= 1`` (up to float rounding) and ``|count / T - clip(I, 0, 1)| <= 1 / T``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from biosnn.frontends.torch_graph import LayerGraph, _as_batch, linear_map, snn_roles
from biosnn.errors import ConversionError

__all__ = ["RateResult", "simulate_rate", "poisson_trains", "check_burst", "INPUT_MODES", "READOUTS"]

INPUT_MODES = ("analog", "poisson", "spikes")
READOUTS = ("spikes", "potential")


@dataclass
class RateResult:
    """Result of :func:`simulate_rate`.

    Attributes
    ----------
    counts : dict of str to numpy.ndarray
        Spike counts, int64 ``(N, layer.size)``, of every IF and max-pool layer
        (and of ``"input"`` for Poisson/spike-train input).  The output layer
        has zero counts with ``readout="potential"``.  Signed networks: the net
        counts ``n_L(T)`` (spikes minus negative spikes; the rate times ``T``).
    negative : dict of str to numpy.ndarray or None
        Signed networks: the negative spikes per unit (a burst of ``k < 0`` counts ``|k|``), int64, keys as in
        ``counts``; ``None`` otherwise.  :attr:`events` adds them up.
    scores : numpy.ndarray
        ``(N, n_classes)`` float64: output spike counts / T, or ``v_out / T``.
    predictions : numpy.ndarray
        ``(N,)`` int64 ``argmax`` of ``scores``.
    T : int
        Number of time steps.
    readout : str
        ``"spikes"`` or ``"potential"``.
    trains : dict of str to numpy.ndarray or None
        With ``record_trains=True``: bool spike trains ``(N, T, layer.size)``
        per layer (keys as in ``counts``; int8 -1/0/1 in signed networks, ``-B..B`` with bursts);
        ``trains[L][n, t - 1, j]`` is ``s_j(t)`` of sample ``n``.
    step_scores : dict of int to numpy.ndarray or None
        With ``score_steps``: the scores after ``t`` steps for each requested ``t``
        (those of a run with ``T = t``: the dynamics do not depend on ``T``).
    step_spikes : dict of int to numpy.ndarray or None
        With ``score_steps``: spikes per sample (all counted layers, negative spikes included) in the
        first ``t`` steps.
    """

    counts: dict[str, np.ndarray]
    scores: np.ndarray
    predictions: np.ndarray
    T: int
    readout: str
    trains: dict[str, np.ndarray] | None = None
    step_scores: dict[int, np.ndarray] | None = None
    step_spikes: dict[int, np.ndarray] | None = None
    negative: dict[str, np.ndarray] | None = None

    @property
    def events(self) -> dict[str, np.ndarray]:
        """Spikes of either sign per unit and layer (int64; equal to ``counts`` unless signed).

        These are what costs synaptic operations
        (:func:`biosnn.metrics.synops` of them)."""
        if self.negative is None:
            return self.counts
        return {k: c + 2 * self.negative[k] for k, c in self.counts.items()}

    @property
    def rates(self) -> dict[str, np.ndarray]:
        """Spike counts divided by ``T`` (spikes per step), per layer."""
        return {k: v / self.T for k, v in self.counts.items()}

    def spike_times(self, layer: str, sample: int = 0, unit: int = 0) -> np.ndarray:
        """Steps ``t`` (1-based) at which a unit spiked; needs ``record_trains=True``."""
        if self.trains is None:
            raise ValueError("spike times need simulate_rate(..., record_trains=True)")
        return np.flatnonzero(self.trains[layer][sample, :, unit]) + 1


def poisson_trains(x, T: int, seed: int | None = None, offset: int = 0) -> np.ndarray:
    """Bernoulli ("Poisson") input spike trains.

    Sample ``n`` (global index ``offset + n``) draws its own generator
    ``numpy.random.default_rng([seed, offset + n])``, so the trains do not
    depend on how the data are split into batches.

    Parameters
    ----------
    x : array_like
        ``(N, ...)`` spike probabilities per step; clipped to ``[0, 1]``.
    T : int
        Number of steps.
    seed : int or None
        Seed; ``None`` draws fresh entropy.
    offset : int
        Global index of ``x[0]``.

    Returns
    -------
    numpy.ndarray
        bool ``(N, T) + x.shape[1:]``; spike iff ``u < p`` with ``u ~ U[0, 1)``.
    """
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2 ** 63))
    out = np.empty((x.shape[0], int(T)) + x.shape[1:], dtype=bool)
    for n in range(x.shape[0]):
        rng = np.random.default_rng([int(seed), offset + n])
        out[n] = rng.random((int(T),) + x.shape[1:]) < x[n]
    return out


class _Net:
    """The graph prepared for stepping (torch float64 ops, roles, thresholds)."""

    def __init__(self, graph: LayerGraph, thresholds: Mapping[str, float] | None):
        import torch

        self.graph = graph
        self.roles = snn_roles(graph)
        self.maps = {}
        for layer in graph.layers:
            if layer.op in ("linear", "conv2d", "avgpool2d", "maxpool2d"):
                self.maps[layer.name] = linear_map(layer)   # maxpool: max over the window
        self.if_layers = [n for n, r in self.roles.items() if r == "if"]
        thresholds = dict(thresholds or {})
        unknown = set(thresholds) - set(graph.names)
        if unknown:
            raise ConversionError(f"thresholds given for unknown layers {sorted(unknown)}; "
                                  f"layers: {list(graph.names)}")
        self.theta = {}
        for name in self.if_layers:
            th = float(thresholds.get(name, 1.0))
            if not th > 0 or not np.isfinite(th):
                raise ConversionError(f"threshold of layer '{name}' must be a positive number, got {th}")
            self.theta[name] = th
        self.torch = torch

    def current(self, name: str, s: dict):
        """Synaptic input ``I_L(t)`` of layer ``name`` given this step's spikes ``s``."""
        layer = self.graph[name]
        if layer.op == "add":
            total = 0.0
            for c, src in zip(layer.weight, layer.inputs):
                part = self.current(src, s) if self.roles[src] == "virtual" else s[src]
                total = total + float(c) * part
            return total
        return self.maps[name](s[layer.inputs[0]])

    def max_count(self, name: str, cum):
        """Max-pool: the largest running input count ``M(t)`` in each window."""
        return self.maps[name](cum)


def _run(net: _Net, inp, T: int, readout: str, record: bool, layers=None, probe: str | None = None,
         v_init: float = 0.0, score_steps=(), signed: bool = False, max_count: int | None = None,
         burst: int | None = None):
    """Simulate one batch.  ``inp(t)`` gives the (N, input_size) input of step t (0-based).

    ``layers``: names to simulate (default all); ``probe``: a layer whose
    maximal synaptic input over steps and samples is returned instead of
    being integrated (used by spike-norm); ``v_init``: initial potential of the spiking IF
    layers as a fraction of their threshold; ``score_steps``: steps after which the output
    scores and the spikes per sample so far are kept (returned in ``counts`` under ``("scores", t)``
    and ``("spikes", t)``); ``signed``: signed IF neurons (module docstring), whose negative spikes per
    unit are returned in ``counts`` under ``("negative", layer)``; ``max_count``: their cap; ``burst``:
    at most this many spikes per neuron and step (signed only; ``None``: 1).
    """
    torch = net.torch
    graph = net.graph
    order = [n for n in graph.names[1:] if (layers is None or n in layers)]
    x0 = inp(0)
    nb = x0.shape[0]
    v = {n: torch.full((nb, graph[n].size), 0.0 if (n == graph.output and readout == "potential")
                       else v_init * net.theta[n], dtype=torch.float64)
         for n in order if net.roles[n] == "if"}
    cum = {n: torch.zeros(nb, graph[n].in_size, dtype=torch.float64)
           for n in order if net.roles[n] == "maxpool"}
    peak = {n: torch.zeros(nb, graph[n].size, dtype=torch.float64) for n in cum}
    counts = {n: torch.zeros(nb, graph[n].size, dtype=torch.float64)
              for n in order if net.roles[n] in ("if", "maxpool")}
    negative = {n: torch.zeros_like(c) for n, c in counts.items()} if signed else {}
    trains = {n: [] for n in counts} if record else None
    probe_max = -np.inf
    potential_out = readout == "potential"
    for t in range(T):
        s = {"input": x0 if t == 0 else inp(t)}
        for name in order:
            role = net.roles[name]
            if role == "virtual":
                continue
            if name == probe:
                probe_max = max(probe_max, float(net.current(name, s).max()))
                break
            if role == "maxpool":
                src = graph[name].inputs[0]
                cum[name] += s[src]
                new_peak = net.max_count(name, cum[name])
                out = new_peak - peak[name]
                peak[name] = new_peak
            else:
                v[name] += net.current(name, s)
                if potential_out and name == graph.output:
                    out = torch.zeros_like(v[name])
                else:
                    theta = net.theta[name]
                    up = v[name] >= theta
                    if max_count is not None:
                        up &= counts[name] < max_count
                    out = up.to(torch.float64)
                    if signed:
                        down = (v[name] < 0) & (counts[name] > 0)
                        if burst is None:
                            out -= down.to(torch.float64)
                        else:
                            out = _burst(v[name], theta, counts[name], up, down, burst, max_count)
                    v[name] -= theta * out
            s[name] = out
            counts[name] += out
            if signed:
                negative[name] -= out.clamp(max=0)
            if record:
                trains[name].append(out.to(torch.int8 if signed else torch.bool))
        if t + 1 in score_steps:
            out_name = graph.output
            kept = v[out_name] if potential_out and net.roles[out_name] == "if" else counts[out_name]
            counts[("scores", t + 1)] = kept / (t + 1)
            counts[("spikes", t + 1)] = sum(c.sum(1) + 2 * negative[k].sum(1) if k in negative else c.sum(1)
                                            for k, c in counts.items() if isinstance(k, str))
    counts.update({("negative", k): c for k, c in negative.items()})
    return v, counts, trains, probe_max


def _burst(v, theta: float, n, up, down, burst: int, max_count: int | None):
    """Spikes ``k`` of a burst step (module docstring, "Burst"), float64, given the fire masks ``up``/``down``.

    The same expression as the Brian2 neuron's reset (:mod:`biosnn.codings.rate.spec`, ``if_signed``)."""
    import torch

    top = torch.full_like(n, float(burst)) if max_count is None else (max_count - n).clamp(1, burst)
    k_up = torch.minimum(torch.floor(v / theta).clamp(min=1), top)
    k_down = torch.minimum(torch.ceil(-v / theta).clamp(min=1), n.clamp(1, burst))
    return torch.where(up, k_up, 0.0) - torch.where(down, k_down, 0.0)


def _input_source(graph: LayerGraph, x, T: int, input_mode: str, seed, offset: int):
    """Per-batch input: returns (inp(t) function, input train or None)."""
    import torch

    size = graph.input.size
    if input_mode == "analog":
        xb = torch.from_numpy(np.ascontiguousarray(_as_batch(graph, x))).reshape(len(x), size)
        return (lambda t: xb), None
    if input_mode == "poisson":
        p = _as_batch(graph, x).reshape(len(x), size)
        train = torch.from_numpy(poisson_trains(p, T, seed, offset)).to(torch.float64)
    else:  # "spikes"
        arr = np.asarray(x, dtype=np.float64)
        if arr.ndim < 2 or arr.shape[1] != T or int(np.prod(arr.shape[2:])) != size:
            raise ConversionError(f"input_mode='spikes' needs trains of shape (N, T={T}) + "
                                  f"{graph.input_shape}, got {arr.shape}")
        train = torch.from_numpy(np.ascontiguousarray(arr.reshape(arr.shape[0], T, size)))
    return (lambda t: train[:, t]), train


def check_burst(burst, signed: bool) -> int | None:
    """``burst`` checked: ``None`` for one spike per step (``None`` or 1), else an integer ``B >= 2``.

    Raises
    ------
    biosnn.errors.ConversionError
        ``burst`` is not a positive integer, or ``B >= 2`` without signed neurons.
    """
    if burst is None:
        return None
    if isinstance(burst, bool) or not isinstance(burst, (int, np.integer)) or burst < 1:
        raise ConversionError(f"burst must be a positive integer (spikes per neuron and step), got {burst!r}")
    if burst == 1:
        return None
    if not signed:
        raise ConversionError(f"burst={burst} needs signed=True (burst spikes are built on the signed IF neuron)")
    return int(burst)


def _check_args(graph, T, input_mode, readout):
    if not isinstance(graph, LayerGraph):
        raise ConversionError(f"expected a LayerGraph, got {type(graph).__name__}")
    if int(T) != T or T < 1:
        raise ConversionError(f"T must be a positive number of time steps, got {T!r}")
    if input_mode not in INPUT_MODES:
        raise ConversionError(f"input_mode must be one of {INPUT_MODES}, got {input_mode!r}")
    if readout not in READOUTS:
        raise ConversionError(f"readout must be one of {READOUTS}, got {readout!r}")


def simulate_rate(graph: LayerGraph, x, T: int, thresholds: Mapping[str, float] | None = None,
                  input_mode: str = "analog", seed: int | None = None, readout: str = "spikes",
                  batch_size: int = 256, record_trains: bool = False, v_init: float = 0.0,
                  score_steps=(), signed: bool = False, max_count: int | None = None,
                  burst: int | None = None) -> RateResult:
    """Simulate the rate-coded IF network defined by ``graph`` (see the module docstring).

    Parameters
    ----------
    graph : LayerGraph
        Usually normalised (:func:`biosnn.conversion.calibrate.normalize`) so that
        all thresholds are 1.
    x : array_like
        ``(N,) + graph.input_shape`` raw input (divided by
        ``graph.input_scale``), or for ``input_mode="spikes"`` 0/1 trains
        ``(N, T) + graph.input_shape`` (used as given).
    T : int
        Number of time steps.
    thresholds : mapping of str to float, optional
        Threshold ``theta_L`` per IF layer (e.g. from spike-norm); missing
        layers use 1.
    input_mode : {"analog", "poisson", "spikes"}
        How the input enters the network.
    seed : int, optional
        Seed of the Poisson input (see :func:`poisson_trains`).
    readout : {"spikes", "potential"}
        Output layer spikes (scores = counts / T) or integrates without
        threshold (scores = v / T).
    batch_size : int
        Samples simulated together.
    record_trains : bool
        Also return full bool spike trains (memory ``N * T * units``).
    v_init : float
        Initial membrane potential of every spiking IF layer as a fraction of
        its threshold (0; QCFS conversion uses 0.5, Bu et al. 2022).
    score_steps : sequence of int
        Also keep the scores after these steps (``<= T``): ``RateResult.step_scores``,
        equal to the scores of runs with ``T = t`` (one run gives several window lengths).
    signed : bool
        Signed IF neurons (see the module docstring): a neuron that has spiked emits a negative
        spike when its potential falls below 0; ``counts`` are then net counts and
        ``RateResult.negative`` holds the negative spikes.
    max_count : int, optional
        Signed neurons only: at most this many net spikes per neuron (the clip at ``L`` levels of
        spikes worth ``T / L`` steps, :func:`biosnn.codings.rate.levels.spikes_worth`).
    burst : int, optional
        Signed neurons only: up to this many spikes per neuron and step, sent as one event
        worth their number (module docstring, "Burst"); ``None`` or 1: one spike per step.

    Returns
    -------
    RateResult
        Spike counts per layer, scores, predictions.

    Raises
    ------
    biosnn.errors.ConversionError
        Bad arguments, or a graph an IF network cannot represent.
    """
    _check_args(graph, T, input_mode, readout)
    if signed not in (True, False):
        raise ConversionError(f"signed must be True or False, got {signed!r}")
    if max_count is not None and (not signed or int(max_count) != max_count or max_count < 1):
        raise ConversionError(f"max_count must be a positive integer and needs signed=True, got {max_count!r}")
    burst = check_burst(burst, signed)
    T = int(T)
    net = _Net(graph, thresholds)
    score_steps = tuple(sorted({int(t) for t in score_steps}))
    if any(t < 1 or t > T for t in score_steps):
        raise ConversionError(f"score_steps must lie in 1..T={T}, got {list(score_steps)}")
    if not hasattr(x, "detach"):
        x = np.asarray(x)
    n_total = len(x)
    if n_total == 0:
        raise ConversionError("simulate_rate() got an empty input batch")
    counts: dict[str, list] = {}
    negative: dict[str, list] = {}
    trains: dict[str, list] = {}
    scores = []
    step_scores: dict[int, list] = {t: [] for t in score_steps}
    step_spikes: dict[int, list] = {t: [] for t in score_steps}
    out_layer = graph.output
    for start in range(0, n_total, int(batch_size)):
        xb = x[start:start + int(batch_size)]
        inp, in_train = _input_source(graph, xb, T, input_mode, seed, start)
        v, c, tr, _ = _run(net, inp, T, readout, record_trains, v_init=float(v_init), score_steps=score_steps,
                           signed=bool(signed), max_count=max_count, burst=burst)
        for key in [k for k in c if isinstance(k, tuple) and k[0] == "negative"]:
            negative.setdefault(key[1], []).append(c.pop(key).numpy().round().astype(np.int64))
        for t in score_steps:
            step_scores[t].append(c.pop(("scores", t)).numpy())
            step_spikes[t].append(c.pop(("spikes", t)).numpy())
        if in_train is not None:
            c = {"input": in_train.sum(dim=1), **c}
            if record_trains:
                tr = {"input": [in_train[:, t].to(bool) for t in range(T)], **tr}
        for name, val in c.items():
            counts.setdefault(name, []).append(val.numpy().round().astype(np.int64))
        if record_trains:
            for name, steps in tr.items():
                trains.setdefault(name, []).append(np.stack([a.numpy() for a in steps], axis=1))
        if readout == "potential" and net.roles[out_layer] == "if":
            scores.append(v[out_layer].numpy() / T)
        else:
            scores.append(c[out_layer].numpy() / T)
    counts_np = {k: np.concatenate(v_) for k, v_ in counts.items()}
    scores_np = np.concatenate(scores)
    return RateResult(
        counts=counts_np,
        scores=scores_np,
        predictions=np.argmax(scores_np, axis=1).astype(np.int64),
        T=T,
        readout=readout,
        trains={k: np.concatenate(v_) for k, v_ in trains.items()} if record_trains else None,
        step_scores={t: np.concatenate(v_) for t, v_ in step_scores.items()} if score_steps else None,
        step_spikes={t: np.concatenate(v_) for t, v_ in step_spikes.items()} if score_steps else None,
        negative=({k: np.concatenate(negative[k]) if k in negative else np.zeros_like(c)
                   for k, c in counts_np.items()} if signed else None),
    )
