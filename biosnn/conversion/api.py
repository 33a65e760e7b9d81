"""``biosnn.prepare`` and ``biosnn.convert``: torch ANN -> spiking network.

Each coding is a package of :mod:`biosnn.codings` (``rate``, ``tdsnn``,
``tsc``, ``tpc``, ``stc``), which provides

* ``PARAMS``: the names of its keyword parameters,
* ``prepare(model, **params) -> torch.nn.Module``: the model to (re)train,
* ``convert(ann, calibration, input_shape, **params) -> SNN``: the converted network.

:func:`prepare` and :func:`convert` check the coding and its parameter names
and hand over to that module.
"""

from __future__ import annotations

import gc

import importlib
import inspect

from biosnn.codings import CODINGS
from biosnn.errors import ConversionError

__all__ = ["prepare", "convert", "CODINGS", "coding_module"]


def coding_module(coding: str):
    """The module implementing ``coding`` (one of :data:`CODINGS`)."""
    if coding not in CODINGS:
        raise ConversionError(f"unknown coding '{coding}'; supported codings are {list(CODINGS)}")
    try:
        return importlib.import_module(f"biosnn.codings.{coding}")
    except ModuleNotFoundError as err:
        if err.name != f"biosnn.codings.{coding}":
            raise
        raise ConversionError(f"coding '{coding}' is not implemented in this version of biosnn") from None


def _check_params(module, coding: str, params: dict) -> None:
    unknown = set(params) - set(module.PARAMS)
    if unknown:
        raise ConversionError(f"unknown parameters {sorted(unknown)} for coding '{coding}'; "
                              f"use {sorted(module.PARAMS)}")


def prepare(model, coding: str = "rate", calibration=None, **params):
    """The torch model to (re)train for a coding.

    Parameters
    ----------
    model : torch.nn.Module
        A trained or untrained ANN.
    coding : str
        One of :data:`CODINGS`.
    calibration : torch.Tensor or ndarray, optional
        ``(N,) + input_shape`` training samples, for the codings whose
        prepared model takes its scales from data (``"stc"``: the weights are
        rescaled so that every spike train encodes its layer's activation range).
    **params
        Coding parameters (see each coding's module).

    Returns
    -------
    torch.nn.Module
        For ``"rate"``: an evaluation-mode copy of ``model`` (ReLU networks
        convert as they are), or with ``levels=L`` the QCFS model to fine-tune.
        Other codings return a model with the coding's activation (quantised,
        time-to-first-spike, ...) for fine-tuning.
    """
    module = coding_module(coding)
    _check_params(module, coding, params)
    if calibration is None:
        return module.prepare(model, **params)
    if "calibration" not in inspect.signature(module.prepare).parameters:
        raise ConversionError(f"prepare(..., '{coding}') takes no calibration data (the {coding} coding calibrates "
                              "in convert); omit calibration")
    return module.prepare(model, calibration=calibration, **params)


def convert(ann, coding: str = "rate", calibration=None, input_shape=None, **params):
    """Convert a trained torch ANN into a spiking network.

    Parameters
    ----------
    ann : torch.nn.Module
        ReLU network of ``Linear``, ``Conv2d``, ``AvgPool2d``, ``MaxPool2d``,
        ``Flatten``, ``BatchNorm`` (folded), ``Dropout``/``Identity`` (dropped)
        and residual additions (or the model :func:`prepare` returned).
    coding : str
        One of :data:`CODINGS`.
    calibration : torch.Tensor or ndarray
        ``(N,) + input_shape`` samples (a few hundred training inputs) for
        the per-layer scales / threshold balancing.
    input_shape : tuple
        Per-sample input shape, e.g. ``(1, 28, 28)``.
    **params
        Coding parameters; for ``"rate"`` see :func:`biosnn.codings.rate.coding.convert`
        (``T``, ``normalization``, ``percentile``, ``input_mode``, ``readout``, ``seed``, ``name``).

    Returns
    -------
    biosnn.conversion.snn.SNN
    """
    module = coding_module(coding)
    _check_params(module, coding, params)
    if calibration is None:
        raise ConversionError("convert needs calibration data (a few hundred training inputs) "
                              "for threshold balancing: pass calibration=x_train[:500]")
    if input_shape is None:
        raise ConversionError("convert needs input_shape, e.g. input_shape=(1, 28, 28)")
    snn = module.convert(ann, calibration, tuple(input_shape), **params)
    # tracing and calibration leave reference cycles (torch.fx modules, frames of caught exceptions) that
    # hold copies of the weights: free them before the network is built (tens of MB for a VGG)
    gc.collect()
    return snn
