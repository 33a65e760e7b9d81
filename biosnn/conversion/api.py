"""``biosnn.prepare`` and ``biosnn.convert``: torch ANN -> spiking network."""

from __future__ import annotations

import copy

import numpy as np

from biosnn.errors import ConversionError

__all__ = ["prepare", "convert", "CODINGS", "IMPLEMENTED_CODINGS"]

CODINGS = ("rate", "tdsnn", "tsc", "tpc", "stc")
IMPLEMENTED_CODINGS = ("rate",)
_RATE_PARAMS = {"T", "normalization", "percentile", "input_mode", "readout", "seed", "name"}


def _check_coding(coding: str):
    if coding not in CODINGS:
        raise ConversionError(f"unknown coding '{coding}'; supported codings are {list(CODINGS)}")
    if coding not in IMPLEMENTED_CODINGS:
        raise ConversionError(f"coding '{coding}' is not implemented in this version of biosnn; "
                              f"available: {list(IMPLEMENTED_CODINGS)}")


def prepare(model, coding: str = "rate", **params):
    """The torch model to (re)train for a coding.

    Parameters
    ----------
    model : torch.nn.Module
        A trained or untrained ANN.
    coding : str
        One of :data:`CODINGS`.
    **params
        Coding parameters.

    Returns
    -------
    torch.nn.Module
        For ``"rate"``: an evaluation-mode copy of ``model`` (rate coding needs
        no special training: ReLU networks convert as they are).
    """
    _check_coding(coding)
    unknown = set(params) - _RATE_PARAMS
    if unknown:
        raise ConversionError(f"unknown parameters {sorted(unknown)} for coding 'rate'; "
                              f"use {sorted(_RATE_PARAMS)}")
    return copy.deepcopy(model).eval()


def convert(ann, coding: str = "rate", calibration=None, input_shape=None, *, T: int = 64,
            normalization: str = "percentile", percentile: float = 99.9, input_mode: str = "analog",
            readout: str = "potential", seed: int | None = 0, name: str = "converted"):
    """Convert a trained torch ANN into a spiking network.

    Parameters
    ----------
    ann : torch.nn.Module
        ReLU network of ``Linear``, ``Conv2d``, ``AvgPool2d``, ``MaxPool2d``,
        ``Flatten``, ``BatchNorm`` (folded), ``Dropout``/``Identity`` (dropped)
        and residual additions.
    coding : str
        ``"rate"`` (IF neurons, reset by subtraction).
    calibration : torch.Tensor or ndarray
        ``(N,) + input_shape`` samples for threshold balancing (a few hundred
        training samples).
    input_shape : tuple
        Per-sample input shape, e.g. ``(1, 28, 28)``.
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

    Returns
    -------
    biosnn.conversion.snn.SNN
    """
    _check_coding(coding)
    if calibration is None:
        raise ConversionError("convert needs calibration data (a few hundred training inputs) "
                              "for threshold balancing: pass calibration=x_train[:500]")
    if input_shape is None:
        raise ConversionError("convert needs input_shape, e.g. input_shape=(1, 28, 28)")
    from biosnn.conversion.calibrate import calibrate
    from biosnn.conversion.graph import trace
    from biosnn.conversion.snn import SNN
    from biosnn.metrics import ann_ops
    graph = trace(ann, tuple(input_shape))
    x_calib = calibration.detach().cpu().numpy() if hasattr(calibration, "detach") else np.asarray(calibration)
    graph_n, thresholds = calibrate(graph, x_calib, normalization=normalization, percentile=percentile,
                                    T=T, input_mode=input_mode, seed=seed)
    return SNN(graph_n, coding=coding, T=T, thresholds=thresholds, input_mode=input_mode, readout=readout,
               seed=seed, ann_ops=ann_ops(graph), name=name)
