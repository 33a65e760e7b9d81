"""Rate coding: IF neurons with reset by subtraction and threshold balancing.

Rueckauer et al. 2017 (data-based max / percentile normalisation) and
Sengupta et al. 2019 (spike-norm); the network is built by
:func:`biosnn.codings.rate.spec.rate_network_spec` and its exact
reference is :func:`biosnn.codings.rate.reference.simulate_rate`.
"""

from __future__ import annotations

import copy

import numpy as np

from biosnn.errors import ConversionError

__all__ = ["PARAMS", "prepare", "convert"]

PARAMS = ("T", "normalization", "percentile", "input_mode", "readout", "seed", "name", "levels", "fold_pooling",
          "signed", "match_levels", "burst")


def prepare(model, levels: int | None = None, **params):
    """The model to fine-tune for rate coding.

    Parameters
    ----------
    model : torch.nn.Module
        A (trained) ReLU network.
    levels : int, optional
        With ``levels=L``: every ReLU is replaced by a QCFS activation
        (:class:`biosnn.codings.rate.qcfs.QCFS`, Bu et al. 2022) with a trainable
        threshold; fine-tune the returned ``torch.fx.GraphModule`` a little and
        convert it with ``T`` around ``L`` or more (deep networks then agree with
        it at small ``T``).  Without: an evaluation-mode copy of ``model``
        (ReLU networks convert as they are).
    **params
        The conversion parameters (checked by :func:`biosnn.prepare`); they change nothing here.
    """
    if levels is None:
        return copy.deepcopy(model).eval()
    from biosnn.codings.rate.qcfs import qcfs_model
    return qcfs_model(model, levels)


def calibration_array(calibration) -> np.ndarray:
    """Calibration data as a float numpy array (accepts torch tensors)."""
    if hasattr(calibration, "detach"):
        return calibration.detach().cpu().numpy()
    return np.asarray(calibration)


def convert(ann, calibration, input_shape, *, T: int = 64, normalization: str = "percentile",
            percentile: float = 99.9, input_mode: str = "analog", readout: str = "potential",
            seed: int | None = 0, name: str = "converted", levels: int | None = None,
            fold_pooling: bool | None = None, signed: bool = False, match_levels: bool = False,
            burst: int | None = None):
    """Rate-coded conversion (``biosnn.convert(ann, "rate", ...)``).

    Parameters
    ----------
    ann : torch.nn.Module
    calibration : torch.Tensor or ndarray
        ``(N,) + input_shape`` training samples for threshold balancing.
    input_shape : tuple
    T : int
        Time steps per sample.
    normalization : {"percentile", "max", "spike-norm"}
        Threshold balancing: data-based weight normalisation with the layer's
        maximum or robust ``percentile`` activation (Rueckauer et al. 2017), or
        spike-norm thresholds set layer by layer from simulated calibration
        data (Sengupta et al. 2019).
    percentile : float
        For ``"percentile"`` (default 99.9).
    input_mode : {"analog", "poisson"}
        Input as a constant current (default) or Bernoulli spikes per step.
    readout : {"potential", "spikes"}
        Output: the integrated potential of a non-spiking output layer
        (default, no quantisation of the scores) or output spike counts.
    seed : int, optional
        Seed of Poisson inputs.
    name : str
        Network name.
    levels : int, optional
        Only checked: a model from ``prepare(..., levels=L)`` converts with its QCFS
        thresholds as the layers' scales and every IF neuron starting at half its
        threshold (thresholds not set yet are set from ``calibration``).
    fold_pooling : bool, optional
        Fold average pools into the layers that read them
        (:func:`biosnn.codings.rate.fold.fold_avgpool`: no IF neurons for the pool, no second
        quantisation of its mean).  Default: on for QCFS-prepared models, off otherwise.
    signed : bool
        Signed IF neurons (Hu et al. 2023, "Fast-SNN"; cf. Wang et al. 2022's signed neuron
        with memory), default off.  Each neuron also keeps its spike count ``n`` (spikes minus
        negative spikes).  Per step, after integrating ``v += I`` (dimensionless, in units
        of the layer's scale): if ``v >= theta``: a spike, ``v -= theta``, ``n += 1``; else if
        ``v < 0`` and ``n > 0``: a *negative* spike, ``v += theta``, ``n -= 1``.  Synapses add
        ``+w`` or ``-w``.  A neuron pushed over threshold early by input that later
        turns negative takes its spike back, so its count follows the accumulated input
        (``n = max(0, floor(V / theta))``, ``V`` the potential it would have without any
        reset) instead of staying too high; this removes most of the "unevenness error" of deep
        QCFS networks (Bu et al. 2022).  Spikes and synaptic operations count negative spikes
        too.  Max pools become signed gates (their count is the largest signed count in the
        window, spikes of -1 or +1).  Needs ``readout="potential"`` and a layer with neurons as
        the output (both refused with a :class:`~biosnn.errors.ConversionError`); not
        exportable to NIR.
    match_levels : bool
        QCFS-prepared models with ``T = k L`` (``k`` a positive integer) and ``signed=True``:
        every IF threshold times ``k``, every spike worth ``k`` (synapses from spiking layers
        carry ``k w``) and at most ``L`` net spikes per neuron, so that each layer's count
        quantises to the model's ``L`` levels and clips at ``L`` as its QCFS ANN does, not to
        ``1 / T`` (:mod:`biosnn.codings.rate.levels`); default off.  The network then depends on
        ``T``: scores after fewer steps are not those of a shorter run.
    burst : int, optional
        ``signed=True`` only: a neuron may emit up to ``burst`` spikes of one sign in one step, sent
        as one event worth their number ``k`` (synapses add ``k w``; it counts as ``|k|`` spikes and
        ``|k|`` times the fan-out in synaptic operations), so that its count keeps up with inputs
        that jump by several thresholds in one step (burst spikes, Li & Zeng 2022; the rule is
        :mod:`biosnn.codings.rate.reference`, "Burst").  With ``match_levels`` and ``burst >= L``
        every layer's count equals its QCFS activation times ``L`` (up to float rounding), at any
        ``T = k L``.  Default ``None`` (or 1): one spike per step.  Max-pool gates pass bursts on as one event.

    Returns
    -------
    biosnn.conversion.snn.SNN
    """
    from biosnn.conversion.calibrate import calibrate
    from biosnn.frontends.torch_graph import trace
    from biosnn.conversion.inputs import POISSON_WHY, check_nonnegative
    from biosnn.conversion.snn import SNN
    from biosnn.metrics import ann_ops
    from biosnn.codings.rate.qcfs import init_thresholds, qcfs_modules
    qcfs = qcfs_modules(ann)
    if levels is not None and any(q.levels != levels for q in qcfs):
        raise ConversionError(f"levels={levels} differs from the levels {sorted({q.levels for q in qcfs})} the "
                              "model was prepared with; omit levels (convert reads them from the model)")
    if qcfs:
        init_thresholds(ann, calibration_array(calibration))
    graph = trace(ann, input_shape)
    if fold_pooling is None:
        fold_pooling = bool(qcfs)
    if fold_pooling not in (True, False):
        raise ConversionError(f"fold_pooling must be True, False or None, got {fold_pooling!r}")
    if fold_pooling:
        from biosnn.codings.rate.fold import fold_avgpool
        graph = fold_avgpool(graph)
    if input_mode == "poisson":
        check_nonnegative(calibration_array(calibration), "Rate coding", POISSON_WHY, "the calibration data")
    ops = ann_ops(graph)
    graph_n, thresholds = calibrate(graph, calibration_array(calibration), normalization=normalization,
                                    percentile=percentile, T=T, input_mode=input_mode, seed=seed)
    del graph  # one copy of the weights (the normalised one) while the spec is built
    if signed not in (True, False):
        raise ConversionError(f"signed must be True or False, got {signed!r}")
    from biosnn.codings.rate.reference import check_burst
    burst = check_burst(burst, signed)
    if match_levels not in (True, False):
        raise ConversionError(f"match_levels must be True or False, got {match_levels!r}")
    if match_levels:
        L = sorted({q.levels for q in qcfs})
        if len(L) != 1 or T % L[0] or not signed:
            raise ConversionError(f"match_levels needs a model prepared with prepare(model, 'rate', levels=L), "
                                  f"T a multiple of L and signed=True; got levels {L}, T={T}, signed={signed}")
        from biosnn.codings.rate.levels import spikes_worth
        graph_n, thresholds = spikes_worth(graph_n, thresholds, T // L[0])
    return SNN(graph_n, coding="rate", T=T, thresholds=thresholds, input_mode=input_mode, readout=readout,
               seed=seed, ann_ops=ops, name=name, v_init=0.5 if qcfs else 0.0, signed=bool(signed),
               max_count=L[0] if match_levels else None, burst=burst)
