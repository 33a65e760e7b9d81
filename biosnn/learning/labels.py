"""Label assignment and classification by the excitatory neurons' responses (Diehl & Cook 2015).

Each excitatory neuron is assigned the class to whose samples it responded
most strongly on average; a sample is classified as the class whose assigned
neurons fire most on average (the paper's ``get_new_assignments`` and
``get_recognized_number_ranking``).
"""

from __future__ import annotations

import numpy as np

from biosnn.errors import BiosnnError

__all__ = ["class_response_sums", "assign_labels", "predict", "accuracy"]


def class_response_sums(responses: np.ndarray, labels: np.ndarray, n_classes: int = 10):
    """Summed responses per class.

    Parameters
    ----------
    responses : ndarray, shape (n_samples, n_neurons)
        Spike counts of each neuron per sample.
    labels : ndarray, shape (n_samples,)
        Integer classes in ``[0, n_classes)``.
    n_classes : int

    Returns
    -------
    sums : ndarray, shape (n_neurons, n_classes)
        Spikes of each neuron summed over the samples of each class.
    counts : ndarray, shape (n_classes,)
        Samples per class.
    """
    responses = np.asarray(responses, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if responses.ndim != 2 or labels.shape != (responses.shape[0],):
        raise BiosnnError(f"responses must be (n_samples, n_neurons) and labels (n_samples,), got "
                          f"{responses.shape} and {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise BiosnnError(f"labels must be in [0, {n_classes}), got {labels.min()}..{labels.max()}")
    onehot = np.eye(n_classes)[labels]                    # (n_samples, n_classes)
    return responses.T @ onehot, onehot.sum(axis=0)


def assign_labels(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Class of each neuron: the class with the highest average response.

    Parameters
    ----------
    sums : ndarray, shape (n_neurons, n_classes)
        From :func:`class_response_sums` (or summed over several blocks).
    counts : ndarray, shape (n_classes,)
        Samples per class behind ``sums``.

    Returns
    -------
    ndarray of int, shape (n_neurons,)
        Neurons that never fired get class 0 (as in the paper's code); classes
        without samples are never assigned.
    """
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() == 0:
        raise BiosnnError("no labelled responses to assign classes from; present labelled samples first")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.where(counts > 0, counts, 1), -np.inf)
    return np.argmax(mean, axis=1).astype(np.int64)


def predict(responses: np.ndarray, assignments: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """Class of each sample: the class whose assigned neurons have the highest mean spike count.

    Parameters
    ----------
    responses : ndarray, shape (n_samples, n_neurons)
    assignments : ndarray, shape (n_neurons,)
    n_classes : int

    Returns
    -------
    ndarray of int, shape (n_samples,)
        Classes without assigned neurons score 0.
    """
    responses = np.asarray(responses, dtype=np.float64)
    assignments = np.asarray(assignments, dtype=np.int64)
    if responses.ndim != 2 or responses.shape[1] != assignments.shape[0]:
        raise BiosnnError(f"responses {responses.shape} do not match {assignments.shape[0]} assigned neurons")
    onehot = np.eye(n_classes)[assignments]               # (n_neurons, n_classes)
    n_per_class = onehot.sum(axis=0)
    scores = (responses @ onehot) / np.where(n_per_class > 0, n_per_class, 1)
    return np.argmax(scores, axis=1).astype(np.int64)


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of correct predictions."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or predictions.size == 0:
        raise BiosnnError(f"predictions {predictions.shape} and labels {labels.shape} must be equal, non-empty")
    return float(np.mean(predictions == labels))
