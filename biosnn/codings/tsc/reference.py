"""Exact reference of a Temporal-Switch-Coded (TSC) network: spike times and operation counts.

This module defines the discrete-time TSC network that
:func:`biosnn.codings.tsc.spec.tsc_network_spec` builds for Brian2, and
computes what it does without stepping through time: in TSC every unit's
output is an *interval* (an on spike and an off spike), so the whole run is
determined by the interval lengths, layer by layer.

Semantics
---------
Time runs in integer steps ``n = 0, 1, ..., W - 1`` of a sample window,
divided into *periods* of ``T`` steps (period ``e`` holds the steps
``e*T <= n < (e+1)*T``); one extra step at the end lets the last off spike
arrive inside the window.  Values are dimensionless and normalised per
layer (:func:`biosnn.conversion.calibrate.normalize`), so that a unit's
value ``a`` is mostly in ``[0, 1]``.

Quantiser
    ``q(z) = clip(floor(z + 1/2), 0, T)`` (``rounding="round"``) or
    ``clip(floor(z), 0, T)`` (``rounding="floor"``), for ``z`` in steps.

Input (emits in period 0)
    Pixel ``x`` (divided by ``graph.input_scale``; must be ``>= 0``) gives
    ``k = q(x * T)`` steps.  If ``k >= 1`` the input unit spikes at step
    ``0`` (on) and at step ``k`` (off); if ``k = 0`` it stays silent.

Switched synapse
    The on spike of unit ``j`` adds ``w_ij`` to the target's current
    ``I_i``, the off spike subtracts it: one weight fetch (memory access)
    and one addition per spike and synapse, so at most two of each per
    synapse and inference.

TSC neuron (``linear``, ``conv2d``, ``avgpool2d``, ``add``; emits in period ``e + 1``)
    ``e`` is the last period in which one of its spiking sources emits
    (:func:`tsc_schedule`).  The membrane starts each window at ``v = T*b``
    (the bias, in steps) and integrates ``v += I`` in every step
    ``e0*T <= n < (e+1)*T`` (``e0``: the first period of its sources), after
    the step's incoming spikes have changed ``I``.  A source unit that is on
    from step ``t_on`` to ``t_on + k`` therefore adds exactly ``w * k`` and
    ``v = T * (b + sum_j w_ij k_j / T)``: ``T`` times the ANN's pre-activation
    evaluated on the quantised inputs.  At step ``(e+1)*T`` the neuron takes
    ``k = q(v)`` (ReLU and the clip to ``[0, 1]`` of the normalised value are
    in ``q``) and, if ``k >= 1``, spikes at that step (on) and ``k`` steps
    later (off).  Its value is ``k / T``.

Max-pool gate (``maxpool2d``; emits in its source's period)
    All units of a layer switch on at the same step, so the maximum of
    their values is the latest off spike: the gate counts its inputs that
    are on (``+1`` per on spike, ``-1`` per off spike) and spikes in the
    same step when the count leaves 0 (on) and when it returns to 0 (off),
    so ``k_pool = max_j k_j`` exactly.

Output (readout)
    The output layer integrates like a TSC neuron but does not spike; its
    scores are ``v / T`` after its integration period (no quantisation of
    the output) and the prediction is their ``argmax`` (ties to the lowest
    class).

Operation counts per sample
    * spikes: 2 per unit with ``k >= 1`` (input included);
    * memory accesses = synaptic additions: ``sum over spikes of fan-out``
      (:func:`biosnn.metrics.fan_out`; a max-pool gate input counts as one
      access and one addition of +-1);
    * neuron additions: one ``v += I`` per neuron and integration step
      (``T`` per neuron of a sequential layer), constant per sample.

The potentials here are computed with dense float64 maps
(:func:`biosnn.frontends.torch_graph.linear_map` with the biases times ``T``),
the Brian2 network sums the same terms event by event: they agree to float64
rounding, and the integer spike steps agree exactly unless a potential lies
within rounding of a quantiser boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from biosnn.conversion import inputs
from biosnn.frontends.torch_graph import LayerGraph, _as_batch, snn_roles
from biosnn.errors import ConversionError

__all__ = ["ROUNDINGS", "TSCSchedule", "TSCResult", "tsc_schedule", "quantize", "simulate_tsc",
           "neuron_additions", "check_nonnegative"]

#: Quantisers of a value in steps (see the module docstring).
ROUNDINGS = ("round", "floor")


@dataclass(frozen=True)
class TSCSchedule:
    """When each layer of a TSC network integrates and spikes (window-local steps).

    Attributes
    ----------
    T : int
        Steps per period (quantisation levels of a value in ``[0, 1]``).
    window : int
        Steps per sample window ``W`` (periods times ``T``, plus one step).
    roles : dict of str to str
        ``"input"``, ``"neuron"``, ``"readout"`` (the output layer), ``"gate"``
        (max pooling) or ``"virtual"`` (a residual branch without neurons,
        see :func:`~biosnn.frontends.torch_graph.snn_roles`), per layer.
    sources : dict of str to tuple of str
        The spiking layers whose spikes reach each neuron, readout or gate
        layer (looking through virtual branches).
    emit : dict of str to int
        Period in which a spiking layer (input, neuron, gate) emits its pair.
    integrate : dict of str to tuple of int
        ``(start, stop)`` steps of the integration of neuron and readout layers.
    """

    T: int
    window: int
    roles: dict
    sources: dict
    emit: dict
    integrate: dict

    def on_step(self, layer: str) -> int:
        """Window-local step of the on spikes of a spiking layer."""
        return self.emit[layer] * self.T


def tsc_schedule(graph: LayerGraph, T: int) -> TSCSchedule:
    """The period of every layer of ``graph`` in a TSC network with ``T`` steps per period.

    Parameters
    ----------
    graph : LayerGraph
        Traced (normalised) network.
    T : int
        Steps per period.

    Returns
    -------
    TSCSchedule

    Raises
    ------
    biosnn.errors.ConversionError
        ``T`` is not a positive integer, or the output layer is a max pool.
    """
    from biosnn.conversion.calibrate import _spiking_sources

    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 1:
        raise ConversionError(f"T (steps per period) must be a positive integer, got {T!r}")
    T = int(T)
    base = snn_roles(graph)
    roles, sources, emit, integrate = {}, {}, {}, {}
    for layer in graph.layers:
        name, role = layer.name, base[layer.name]
        if role == "input":
            roles[name], emit[name] = "input", 0
            continue
        if role == "virtual":
            roles[name] = "virtual"
            continue
        srcs = tuple(_spiking_sources(graph, name, base))
        sources[name] = srcs
        periods = [emit[s] for s in srcs]
        if role == "maxpool":
            if name == graph.output:
                raise ConversionError(
                    f"the output layer '{name}' ({layer.module}) is a max pool; a TSC network reads its "
                    "output from the potentials of a linear, conv or average-pool layer. Fix: end the "
                    "model with such a layer (e.g. nn.Linear) after the pooling.")
            roles[name], emit[name] = "gate", periods[0]
            continue
        integrate[name] = (min(periods) * T, (max(periods) + 1) * T)
        if name == graph.output:
            roles[name] = "readout"
        else:
            roles[name], emit[name] = "neuron", max(periods) + 1
    last = max([(e + 1) * T for e in emit.values()] + [stop for _, stop in integrate.values()])
    return TSCSchedule(T=T, window=last + 1, roles=roles, sources=sources, emit=emit, integrate=integrate)


def quantize(z, T: int, rounding: str = "round"):
    """Steps between the on and the off spike for a value of ``z`` steps (``z = T * value``).

    Parameters
    ----------
    z : ndarray or torch.Tensor
        Values in steps (float64).
    T : int
        Steps per period (the largest result).
    rounding : {"round", "floor"}
        ``floor(z + 1/2)`` (nearest, halves up) or ``floor(z)``.

    Returns
    -------
    same type as ``z``
        Float64 whole numbers in ``[0, T]``.
    """
    if rounding not in ROUNDINGS:
        raise ConversionError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
    if hasattr(z, "detach"):
        import torch
        zz = torch.floor(z + 0.5) if rounding == "round" else torch.floor(z)
        return torch.clamp(zz, 0.0, float(T))
    zz = np.floor(z + 0.5) if rounding == "round" else np.floor(z)
    return np.clip(zz, 0.0, float(T))


@dataclass
class TSCResult:
    """Result of :func:`simulate_tsc`.

    Attributes
    ----------
    scores : ndarray (N, classes)
        Output potential / T.
    predictions : ndarray (N,)
        ``argmax`` of ``scores``.
    layer_spikes : dict of str to ndarray (N,)
        Spikes per sample of every spiking layer (input, neurons, gates).
    layer_events : dict of str to ndarray (N,)
        Synaptic events per sample caused by each layer's spikes (spikes x
        fan-out): each is one memory access and one addition.
    neuron_additions : int
        ``v += I`` updates per sample (all neuron and readout layers).
    schedule : TSCSchedule
    steps : dict of str to ndarray (N, size), optional
        With ``record=True``: the interval ``k`` (steps from on to off, 0 =
        silent) of every unit of every spiking layer, int64.
    """

    scores: np.ndarray
    predictions: np.ndarray
    layer_spikes: dict
    layer_events: dict
    neuron_additions: int
    schedule: TSCSchedule
    steps: dict | None = field(default=None)

    @property
    def memory_accesses(self) -> np.ndarray:
        """Weight fetches per sample (one per synaptic event)."""
        return np.sum(list(self.layer_events.values()), axis=0)

    @property
    def synaptic_additions(self) -> np.ndarray:
        """Additions to synaptic currents per sample (one per synaptic event)."""
        return self.memory_accesses

    @property
    def additions(self) -> np.ndarray:
        """All additions per sample: synaptic plus neuron-state updates."""
        return self.synaptic_additions + self.neuron_additions

    @property
    def spikes_per_sample(self) -> np.ndarray:
        """Total spikes per sample, input included."""
        return np.sum(list(self.layer_spikes.values()), axis=0)

    def spike_steps(self, layer: str, sample: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Units, on steps and off steps (window-local) of the spikes of ``layer`` in one sample.

        Needs ``record=True``.  Silent units (``k = 0``) are left out.
        """
        if self.steps is None:
            raise ConversionError("spike steps need simulate_tsc(..., record=True)")
        k = self.steps[layer][sample]
        units = np.flatnonzero(k > 0)
        on = np.full(units.size, self.schedule.on_step(layer), dtype=np.int64)
        return units, on, on + k[units]


def neuron_additions(schedule: TSCSchedule, graph: LayerGraph) -> int:
    """``v += I`` updates per sample: neurons times integration steps, summed over layers."""
    return int(sum(graph[name].size * (stop - start) for name, (start, stop) in schedule.integrate.items()))


def simulate_tsc(graph: LayerGraph, x, T: int, rounding: str = "round", batch_size: int = 256,
                 record: bool = False) -> TSCResult:
    """Run the TSC network of ``graph`` on inputs ``x`` (see the module docstring).

    Parameters
    ----------
    graph : LayerGraph
        Normalised network (:func:`biosnn.conversion.calibrate.calibrate`).
    x : array_like or torch.Tensor
        ``(N,) + graph.input_shape`` raw, non-negative inputs (divided by
        ``graph.input_scale`` here).
    T : int
        Steps per period.
    rounding : {"round", "floor"}
        Quantiser of the intervals.
    batch_size : int
        Samples evaluated together.
    record : bool
        Keep every unit's interval (memory ``N * units``).

    Returns
    -------
    TSCResult

    Raises
    ------
    biosnn.errors.ConversionError
        Bad arguments, negative inputs, or a graph TSC cannot represent.
    """
    import torch

    from biosnn.codings.rate.reference import _Net
    from biosnn.metrics import fan_out

    schedule = tsc_schedule(graph, T)
    quantize(np.zeros(1), schedule.T, rounding)  # checks rounding
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ConversionError(f"batch_size must be a positive integer, got {batch_size!r}")
    xb_all = _as_batch(graph, x)
    if len(xb_all) == 0:
        raise ConversionError("simulate_tsc() got an empty input batch")
    check_nonnegative(xb_all)
    T = schedule.T
    # potentials in steps: v = W k + T b (biases scaled by T, weights unchanged)
    scaled = graph.replace_layers({layer.name: layer.replace(bias=layer.bias * T)
                                   for layer in graph.layers if layer.bias is not None})
    net = _Net(scaled, None)
    fo = fan_out(graph)
    roles = schedule.roles
    spiking = [n for n in graph.names if roles[n] in ("input", "neuron", "gate")]
    spikes = {n: [] for n in spiking}
    events = {n: [] for n in spiking}
    steps = {n: [] for n in spiking} if record else None
    scores = []
    n_in = graph.input.size
    for start in range(0, len(xb_all), int(batch_size)):
        xb = torch.from_numpy(np.ascontiguousarray(xb_all[start:start + int(batch_size)])).reshape(-1, n_in)
        k = {graph.input.name: quantize(xb * T, T, rounding)}
        for name in graph.names[1:]:
            role = roles[name]
            if role == "gate":
                k[name] = net.max_count(name, k[schedule.sources[name][0]])
            elif role == "neuron":
                k[name] = quantize(net.current(name, k), T, rounding)
            elif role == "readout":
                scores.append(net.current(name, k).numpy() / T)
        for name in spiking:
            active = (k[name] > 0).numpy()
            spikes[name].append(2 * active.sum(axis=1))
            events[name].append(2 * (active.astype(np.int64) @ fo[name]))
            if record:
                steps[name].append(k[name].numpy().round().astype(np.int64))
    scores_np = np.concatenate(scores)
    return TSCResult(
        scores=scores_np, predictions=np.argmax(scores_np, axis=1).astype(np.int64),
        layer_spikes={n: np.concatenate(v).astype(np.int64) for n, v in spikes.items()},
        layer_events={n: np.concatenate(v).astype(np.int64) for n, v in events.items()},
        neuron_additions=neuron_additions(schedule, graph), schedule=schedule,
        steps={n: np.concatenate(v) for n, v in steps.items()} if record else None)


def check_nonnegative(x, where: str = "the input") -> None:
    """Raise :class:`ConversionError` if inputs (already divided by the input scale) are negative."""
    inputs.check_nonnegative(x, "TSC", "encodes each input value as an interval of non-negative length", where)
