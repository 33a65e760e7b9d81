"""Checks of the inputs a converted network receives."""

from __future__ import annotations

import numpy as np

from biosnn.errors import ConversionError

__all__ = ["check_nonnegative", "POISSON_WHY"]

#: Why rate coding with Poisson inputs cannot take negative inputs (for :func:`check_nonnegative`).
POISSON_WHY = ("with input_mode='poisson' sends Bernoulli spikes with probability x per step, "
               "never for x <= 0")


def check_nonnegative(x, coding: str, why: str, where: str = "the input") -> None:
    """Raise :class:`ConversionError` if ``x`` has negative values a coding cannot represent.

    Parameters
    ----------
    x : ndarray
        Inputs (already divided by the graph's input scale, or raw: the sign is the same).
    coding : str
        The coding's name for the message, e.g. ``"TSC"``.
    why : str
        What the coding makes of an input value, e.g. ``"encodes each input value as an interval
        of non-negative length"``.
    where : str
        Which inputs, e.g. ``"the calibration data"``.
    """
    lo = float(np.min(x)) if np.size(x) else 0.0
    if lo < 0:
        raise ConversionError(
            f"{coding} {why}, but {where} has negative values (down to {lo:.4g}); it would silently "
            "treat them as 0. Fix: shift or rescale the inputs to be >= 0 (e.g. pixel intensities in "
            "[0, 1] instead of (x - mean) / std) when training and converting, or use a coding that takes "
            "signed inputs (rate with input_mode='analog', STC with first_layer='analog').")
