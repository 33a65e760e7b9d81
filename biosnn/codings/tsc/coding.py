"""Temporal Switch Coding (TSC; Han & Roy, ECCV 2020): two spikes per value, interval = value.

Han, B. and Roy, K. "Deep Spiking Neural Network: Energy Efficiency Through
Time Based Coding", ECCV 2020, LNCS 12355.

What is followed
----------------
* From the paper's abstract: every input pixel is sent as two spikes whose
  time difference is proportional to its intensity; ReLU activations are
  encoded by the spike times of TSC neurons; every synapse costs at most two
  memory accesses and two additions per inference.
* The switch mechanism named by the coding: the first spike switches a
  synapse's current on, the second switches it off.
* The input encoding of an open-source TSC encoder that cites the paper
  (found by code search; ``p* = floor(p (N - 1)) + 1`` for ``N`` steps: on at
  the first step, off ``p* - 1`` steps later, silent when ``p* < 2``): with
  ``rounding="floor"`` this is ``k = floor(x T)`` here, ``T = N - 1``.
* Data-based per-layer normalisation (:mod:`biosnn.conversion.calibrate`,
  Rueckauer et al. 2017) so that every layer's values lie in ``[0, 1]``.

Where this deviates
-------------------
The full paper text was not available; the discrete semantics are this
module's own, defined in :mod:`biosnn.codings.tsc.reference`.

* Discrete time: a layer integrates during one period of ``T`` steps and
  sends its values in the next period (layer pipelining), and the interval is
  ``q(value * T)`` steps with ``q`` rounding to the nearest step by default
  (``rounding="floor"`` as in the encoder above).  The TSC neuron's firing
  rule is "on spike at the start of its period, off spike ``q(v)`` steps
  later" rather than a continuous-time threshold crossing.
* The bias enters as the initial potential ``T * b`` (one value per neuron),
  not as a current.
* Max pooling is a gate that is on while any of its inputs is on (all units
  of a layer switch on together, so this is exactly the max); average
  pooling is a TSC neuron layer; residual additions integrate over the
  periods of all their sources.
* The output layer's potential is read directly (no output spikes).
* Negative inputs are rejected (the paper's signed inputs are not modelled).

Cost accounting (per sample, in :attr:`SNNResult.extras`)
---------------------------------------------------------
``memory_accesses`` and ``synaptic_additions``: one each per spike and
outgoing synapse (at most 2 per synapse); ``neuron_additions``: one
``v += I`` per neuron and integration step (``T`` per neuron of a sequential
layer); ``additions``: their sum.  Rate coding's synaptic additions are its
``synops_per_sample``.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from biosnn.conversion.snn import SNN, SNNResult
from biosnn.errors import ConversionError

__all__ = ["PARAMS", "prepare", "convert", "TSCSNN"]

PARAMS = ("T", "normalization", "percentile", "rounding", "name")


class TSCSNN(SNN):
    """A torch ANN converted to a temporal-switch-coded spiking network.

    ``T`` is the number of steps per period (a value in ``[0, 1]`` becomes an
    interval of ``0 ... T`` steps); a sample window lasts
    :attr:`window_steps` = (periods x ``T``) + 1 steps.  :meth:`run` adds
    ``memory_accesses``, ``synaptic_additions``, ``neuron_additions`` and
    ``additions`` per sample to :attr:`SNNResult.extras`.
    """

    def __init__(self, graph, *, T: int, rounding: str = "round", ann_ops: int = 0, name: str = "tsc"):
        from biosnn.codings.tsc.reference import ROUNDINGS, tsc_schedule
        if rounding not in ROUNDINGS:
            raise ConversionError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")
        self.rounding = rounding
        self.schedule = tsc_schedule(graph, T)
        super().__init__(graph, coding="tsc", T=T, thresholds={}, input_mode="tsc", readout="potential",
                         seed=None, ann_ops=ann_ops, name=name)

    @property
    def window_steps(self) -> int:
        """Steps of one sample window: one period of ``T`` steps per layer stage, plus one."""
        return self.schedule.window

    def _build_spec(self, windows: int):
        from biosnn.codings.tsc.spec import tsc_network_spec
        return tsc_network_spec(self.graph, T=self.T, windows=windows, rounding=self.rounding, name=self.name)

    def _scores_from_potential(self, v_last: np.ndarray) -> np.ndarray:
        """Scores: the output potential (in steps) divided by ``T``."""
        return v_last / self.T

    def reference(self, x, batch_size: int = 256, record: bool = False):
        """The exact numpy result of this network on ``x`` (:func:`~biosnn.codings.tsc.reference.simulate_tsc`)."""
        from biosnn.codings.tsc.reference import simulate_tsc
        return simulate_tsc(self.graph, x, self.T, rounding=self.rounding, batch_size=batch_size, record=record)

    def run(self, x, backend: str = "auto", batch_size: int | None = None, progress: bool = True,
            **backend_options) -> SNNResult:
        """Simulate ``x`` (see :meth:`SNN.run`); adds TSC's operation counts per sample to ``extras``."""
        from biosnn.conversion.snn import _to_numpy
        from biosnn.codings.tsc.reference import check_nonnegative, neuron_additions
        check_nonnegative(_to_numpy(x) / self.graph.input_scale)
        res = super().run(x, backend=backend, batch_size=batch_size, progress=progress, **backend_options)
        events = res.synops_per_sample
        per_neuron = np.full(len(res.predictions), neuron_additions(self.schedule, self.graph), dtype=np.float64)
        extras = {"memory_accesses": events, "synaptic_additions": events, "neuron_additions": per_neuron,
                  "additions": events + per_neuron}
        return dataclasses.replace(res, extras=extras)


def prepare(model, **params):
    """An evaluation-mode copy of ``model``: ReLU networks convert to TSC without re-training.

    ``params`` (the coding's parameters) are accepted for the common
    :func:`biosnn.prepare` interface and do not change the model.
    """
    return copy.deepcopy(model).eval()


def convert(ann, calibration, input_shape, *, T: int = 32, normalization: str = "percentile",
            percentile: float = 99.9, rounding: str = "round", name: str = "tsc") -> TSCSNN:
    """TSC conversion (``biosnn.convert(ann, "tsc", ...)``).

    Parameters
    ----------
    ann : torch.nn.Module
        ReLU network (see :func:`biosnn.convert` for the supported layers).
    calibration : torch.Tensor or ndarray
        ``(N,) + input_shape`` training samples for the per-layer scales.
    input_shape : tuple
    T : int
        Steps per period: a value in ``[0, 1]`` is an interval of up to
        ``T`` steps (quantisation ``1/T``; latency grows with ``T``).
    normalization : {"percentile", "max"}
        Per-layer scale: the ``percentile``-th percentile (default 99.9) or
        the maximum of the layer's positive activations on ``calibration``;
        values above the scale saturate at ``T`` steps.
    percentile : float
        For ``"percentile"``.
    rounding : {"round", "floor"}
        Interval of a value ``a``: ``floor(a T + 1/2)`` or ``floor(a T)`` steps.
    name : str
        Network name.

    Returns
    -------
    TSCSNN
    """
    from biosnn.conversion.calibrate import calibrate
    from biosnn.frontends.torch_graph import trace
    from biosnn.codings.rate.coding import calibration_array
    from biosnn.codings.tsc.reference import check_nonnegative
    from biosnn.metrics import ann_ops
    check_nonnegative(calibration_array(calibration), "the calibration data")
    if normalization not in ("percentile", "max"):
        raise ConversionError(f"TSC normalization must be 'percentile' or 'max', got {normalization!r} "
                              "(spike-norm balances rate-coded thresholds and does not apply to TSC)")
    graph = trace(ann, input_shape)
    graph_n, _ = calibrate(graph, calibration_array(calibration), normalization=normalization,
                           percentile=percentile)
    return TSCSNN(graph_n, T=T, rounding=rounding, ann_ops=ann_ops(graph), name=name)
