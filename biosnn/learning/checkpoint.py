"""Atomic training checkpoints (``.npz``): written to a temporary file, then renamed over the old one.

A crash or Ctrl-C while writing leaves the previous checkpoint intact, since
:func:`os.replace` is atomic on POSIX file systems.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from biosnn.errors import BiosnnError

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(path: str | os.PathLike, arrays: dict, meta: dict) -> Path:
    """Write ``arrays`` (numpy arrays) and ``meta`` (JSON-serialisable) to ``path`` atomically.

    Parameters
    ----------
    path : path-like
        Target ``.npz`` file; its directory is created if needed.
    arrays : dict of str to ndarray
    meta : dict
        Stored as JSON under the key ``meta``.

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns
    -------
    arrays : dict of str to ndarray
    meta : dict

    Raises
    ------
    BiosnnError
        If the file cannot be read as a checkpoint.
    """
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {k: np.array(data[k]) for k in data.files if k != "meta"}
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise BiosnnError(f"cannot read checkpoint {path}: {exc}. Fix: delete it to start afresh, "
                          "or point --out to another directory") from None
    return arrays, meta
