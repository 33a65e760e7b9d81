"""Small datasets and a tiny deterministic training loop for conversion examples.

* :func:`load_digits`: scikit-learn's bundled 8x8 digits (offline).
* :func:`load_mnist`: MNIST from a Keras-style ``mnist.npz`` (local file, the
  ``BIOSNN_MNIST`` environment variable, the cache, or a download).
* :func:`train_classifier` / :func:`accuracy`: Adam + cross-entropy on the CPU.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from biosnn.errors import BiosnnError

__all__ = ["load_digits", "load_mnist", "mnist_path", "train_classifier", "accuracy", "MNIST_URL"]

#: Where :func:`load_mnist` downloads ``mnist.npz`` from (the Keras copy).
MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"

_SPLITS = ("train", "test")


def _check_split(split: str) -> None:
    if split not in _SPLITS:
        raise BiosnnError(f"split must be 'train' or 'test', got {split!r}")


def load_digits(split: str = "train", test_fraction: float = 0.25,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The scikit-learn 8x8 handwritten digits (1797 images, bundled, offline).

    Parameters
    ----------
    split : {"train", "test"}
        Which part of a stratified split.
    test_fraction : float
        Fraction of samples in the test split, in ``(0, 1)``.
    seed : int
        Seed of the split (the same seed gives disjoint train/test parts).

    Returns
    -------
    x : numpy.ndarray
        float32 ``(N, 1, 8, 8)``, pixel intensities scaled to ``[0, 1]``
        (the original 0..16 divided by 16).
    y : numpy.ndarray
        int64 ``(N,)`` labels 0..9.
    """
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    _check_split(split)
    if not 0 < test_fraction < 1:
        raise BiosnnError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    data = _sk_digits()
    x = (data.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=test_fraction, random_state=seed,
                                              stratify=y)
    return (x_tr, y_tr) if split == "train" else (x_te, y_te)


def mnist_path(path: str | os.PathLike | None = None) -> Path:
    """Where :func:`load_mnist` looks for ``mnist.npz``.

    Parameters
    ----------
    path : path-like, optional
        Explicit file.

    Returns
    -------
    pathlib.Path
        ``path`` if given, else ``$BIOSNN_MNIST`` if set, else
        ``~/.cache/biosnn/mnist.npz`` (the download target).
    """
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("BIOSNN_MNIST")
    if env:
        return Path(env).expanduser()
    return Path(os.path.expanduser("~")) / ".cache" / "biosnn" / "mnist.npz"


def _download(url: str, dest: Path) -> None:
    import urllib.error
    import urllib.request

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".mnist-", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh, urllib.request.urlopen(url, timeout=60) as resp:
            while chunk := resp.read(1 << 20):
                fh.write(chunk)
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise BiosnnError(
            f"MNIST is not available locally and downloading {url} failed ({exc}). Fix: download "
            f"mnist.npz on a machine with network access and pass load_mnist(path=...), set "
            f"BIOSNN_MNIST=/path/to/mnist.npz, or copy it to {dest}.") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_mnist(split: str = "train", path: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST from a Keras-format ``mnist.npz``.

    The file (keys ``x_train``, ``y_train``, ``x_test``, ``y_test``, uint8)
    is read from ``path``, else ``$BIOSNN_MNIST``, else
    ``~/.cache/biosnn/mnist.npz``; if none is given and the cache file is
    missing it is downloaded from :data:`MNIST_URL` to the cache.

    Parameters
    ----------
    split : {"train", "test"}
        60000 training or 10000 test images.
    path : path-like, optional
        Explicit ``mnist.npz``.

    Returns
    -------
    x : numpy.ndarray
        float32 ``(N, 1, 28, 28)`` in ``[0, 1]`` (uint8 / 255).
    y : numpy.ndarray
        int64 ``(N,)`` labels.

    Raises
    ------
    biosnn.errors.BiosnnError
        An explicit path or ``$BIOSNN_MNIST`` does not exist, the file lacks
        the keys, or the download fails.
    """
    _check_split(split)
    file = mnist_path(path)
    explicit = path is not None or bool(os.environ.get("BIOSNN_MNIST"))
    if not file.exists():
        if explicit:
            source = "path" if path is not None else "BIOSNN_MNIST"
            raise BiosnnError(f"MNIST file {file} (from {source}) does not exist. Fix: point it to a "
                              "Keras-format mnist.npz with x_train, y_train, x_test, y_test.")
        _download(MNIST_URL, file)
    try:
        with np.load(file) as data:
            missing = [k for k in (f"x_{split}", f"y_{split}") if k not in data.files]
            if missing:
                raise BiosnnError(f"{file} has no array {', '.join(repr(k) for k in missing)}; "
                                  "expected keys x_train, y_train, x_test, y_test")
            x = np.asarray(data[f"x_{split}"])
            y = np.asarray(data[f"y_{split}"])
    except (OSError, ValueError, EOFError) as exc:
        raise BiosnnError(f"cannot read {file} as an .npz file: {exc}") from None
    if x.ndim != 3 or x.shape[0] != y.shape[0]:
        raise BiosnnError(f"{file}: x_{split} has shape {x.shape} and y_{split} {y.shape}; expected "
                          "(N, 28, 28) images and (N,) labels")
    scale = 255.0 if x.dtype == np.uint8 or x.max() > 1 else 1.0
    x = (x.astype(np.float32) / np.float32(scale))[:, None]
    return x, y.astype(np.int64)


def train_classifier(model, x, y, epochs: int = 10, lr: float = 1e-3, batch_size: int = 64,
                     seed: int = 0, weight_decay: float = 0.0):
    """Train a classifier with Adam and cross-entropy on the CPU, deterministically.

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits ``(N, n_classes)``; trained in place.
    x : array_like or torch.Tensor
        ``(N, ...)`` inputs (converted to float32).
    y : array_like or torch.Tensor
        ``(N,)`` integer labels.
    epochs : int
        Passes over the data.
    lr : float
        Adam learning rate.
    batch_size : int
        Minibatch size.
    seed : int
        Seeds the shuffling and any randomness in the model (dropout).  Weight
        initialisation happens before this call: seed torch before building
        the model for full reproducibility.
    weight_decay : float
        Adam weight decay.

    Returns
    -------
    torch.nn.Module
        The trained ``model``, in eval mode.
    """
    import torch

    xt = torch.as_tensor(np.asarray(x, dtype=np.float32) if not torch.is_tensor(x) else x).float().cpu()
    yt = torch.as_tensor(np.asarray(y) if not torch.is_tensor(y) else y).long().cpu()
    if xt.shape[0] != yt.shape[0]:
        raise BiosnnError(f"x has {xt.shape[0]} samples but y has {yt.shape[0]}")
    model = model.cpu()
    gen = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    n = xt.shape[0]
    for _ in range(int(epochs)):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, int(batch_size)):
            idx = perm[start:start + int(batch_size)]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
    return model.eval()


def accuracy(model, x, y, batch_size: int = 1024) -> float:
    """Classification accuracy of ``model`` (eval mode, no grad) on ``(x, y)``.

    Parameters
    ----------
    model : torch.nn.Module
        Returns logits.
    x, y : array_like or torch.Tensor
        Inputs ``(N, ...)`` and integer labels ``(N,)``.
    batch_size : int
        Samples per forward pass.

    Returns
    -------
    float
        Fraction of correct predictions in ``[0, 1]``.
    """
    import torch

    xt = torch.as_tensor(np.asarray(x, dtype=np.float32) if not torch.is_tensor(x) else x).float()
    yt = np.asarray(y.cpu() if torch.is_tensor(y) else y)
    device = next(iter(model.parameters()), torch.empty(0)).device
    was_training = model.training
    model.eval()
    preds = []
    with torch.no_grad():
        for start in range(0, xt.shape[0], int(batch_size)):
            batch = xt[start:start + int(batch_size)].to(device)
            preds.append(model(batch).argmax(dim=1).cpu().numpy())
    model.train(was_training)
    return float(np.mean(np.concatenate(preds) == yt))
