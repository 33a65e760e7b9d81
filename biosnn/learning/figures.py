"""Figures of learned weights: receptive fields of the excitatory neurons tiled in a grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from biosnn.errors import BiosnnError
from biosnn.recording.plots import _figure, _save

__all__ = ["receptive_field_grid", "plot_receptive_fields"]


def receptive_field_grid(weights: np.ndarray, image_shape: tuple[int, int], columns: int | None = None,
                         gap: int = 1) -> np.ndarray:
    """Tile each neuron's input weights as an image.

    Parameters
    ----------
    weights : ndarray, shape (n_inputs, n_neurons)
        Input weights (``n_inputs = H * W``).
    image_shape : (int, int)
        ``(H, W)`` of one receptive field.
    columns : int, optional
        Tiles per row (default ``ceil(sqrt(n_neurons))``).
    gap : int
        Pixels between tiles (filled with NaN).

    Returns
    -------
    ndarray
        ``(rows*(H+gap) - gap, columns*(W+gap) - gap)`` image, NaN between tiles.
    """
    weights = np.asarray(weights, dtype=np.float64)
    h, w = (int(s) for s in image_shape)
    if weights.ndim != 2 or weights.shape[0] != h * w:
        raise BiosnnError(f"weights must be (H*W, n_neurons) = ({h * w}, n), got {weights.shape}")
    n = weights.shape[1]
    cols = int(np.ceil(np.sqrt(n))) if columns is None else int(columns)
    rows = int(np.ceil(n / cols))
    grid = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan)
    for k in range(n):
        r, c = divmod(k, cols)
        grid[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = weights[:, k].reshape(h, w)
    return grid


def plot_receptive_fields(weights: np.ndarray, image_shape: tuple[int, int], path: str | Path | None = None,
                          title: str = "", assignments: np.ndarray | None = None):
    """Receptive fields of all excitatory neurons in one image (PNG when ``path`` is given).

    Parameters
    ----------
    weights : ndarray, shape (n_inputs, n_neurons)
    image_shape : (int, int)
    path : path-like, optional
    title : str
    assignments : ndarray of int, optional
        Class of each neuron, written in the corner of its tile (small grids only).

    Returns
    -------
    matplotlib.figure.Figure
    """
    grid = receptive_field_grid(weights, image_shape)
    n = np.asarray(weights).shape[1]
    size = min(12.0, max(4.0, grid.shape[1] / 20))
    fig = _figure(size, size * grid.shape[0] / grid.shape[1] + 0.6)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(grid, cmap="hot_r", interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"input weights of {n} excitatory neurons")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="weight")
    if assignments is not None and n <= 400:
        h, w = image_shape
        cols = int(np.ceil(np.sqrt(n)))
        for k, label in enumerate(np.asarray(assignments)):
            r, c = divmod(k, cols)
            ax.text(c * (w + 1), r * (h + 1), str(int(label)), color="#1f77b4", fontsize=5, va="top")
    fig.tight_layout()
    _save(fig, path)
    return fig
