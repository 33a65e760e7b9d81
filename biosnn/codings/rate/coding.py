"""Rate coding: IF neurons with reset by subtraction and threshold balancing.

Rueckauer et al. 2017 (data-based max / percentile normalisation) and
Sengupta et al. 2019 (spike-norm); the network is built by
:func:`biosnn.codings.rate.spec.rate_network_spec` and its exact
reference is :func:`biosnn.codings.rate.reference.simulate_rate`.
"""

from __future__ import annotations

import copy

import numpy as np

__all__ = ["PARAMS", "prepare", "convert"]

PARAMS = ("T", "normalization", "percentile", "input_mode", "readout", "seed", "name")


def prepare(model, **params):
    """An evaluation-mode copy of ``model``: ReLU networks need no re-training for rate coding.

    ``params`` (the conversion parameters, checked by :func:`biosnn.prepare`) change nothing here.
    """
    return copy.deepcopy(model).eval()


def calibration_array(calibration) -> np.ndarray:
    """Calibration data as a float numpy array (accepts torch tensors)."""
    if hasattr(calibration, "detach"):
        return calibration.detach().cpu().numpy()
    return np.asarray(calibration)


def convert(ann, calibration, input_shape, *, T: int = 64, normalization: str = "percentile",
            percentile: float = 99.9, input_mode: str = "analog", readout: str = "potential",
            seed: int | None = 0, name: str = "converted"):
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

    Returns
    -------
    biosnn.conversion.snn.SNN
    """
    from biosnn.conversion.calibrate import calibrate
    from biosnn.frontends.torch_graph import trace
    from biosnn.conversion.inputs import POISSON_WHY, check_nonnegative
    from biosnn.conversion.snn import SNN
    from biosnn.metrics import ann_ops
    graph = trace(ann, input_shape)
    if input_mode == "poisson":
        check_nonnegative(calibration_array(calibration), "Rate coding", POISSON_WHY, "the calibration data")
    graph_n, thresholds = calibrate(graph, calibration_array(calibration), normalization=normalization,
                                    percentile=percentile, T=T, input_mode=input_mode, seed=seed)
    return SNN(graph_n, coding="rate", T=T, thresholds=thresholds, input_mode=input_mode, readout=readout,
               seed=seed, ann_ops=ann_ops(graph), name=name)
