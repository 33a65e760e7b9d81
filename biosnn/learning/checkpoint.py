"""Atomic training checkpoints (``.npz``): written to a temporary file, then renamed over the old one.

A crash or Ctrl-C while writing leaves the previous checkpoint intact, since
:func:`os.replace` is atomic on POSIX file systems; temporary files left by a
killed process are removed by the next save.  A checkpoint records content
hashes of what it was trained from (:func:`spec_hashes`, :func:`data_hash`),
so a resume with another spec, other ``--param`` values or other data is
refused, naming what differs.  A damaged file gives a clean error naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from biosnn.errors import BiosnnError

__all__ = ["save_checkpoint", "load_checkpoint", "spec_hashes", "data_hash"]


def _digest(*chunks: bytes) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(len(c).to_bytes(8, "little"))
        h.update(c)
    return h.hexdigest()[:16]


def spec_hashes(spec) -> dict[str, str]:
    """Content hashes of a spec, one per part (``namespace``, ``populations.Ae``, ...).

    Everything that defines the network is covered: equations, parameters
    (``--param`` values included, since they are part of the spec), sizes,
    connectivity and every array's unit, dtype, shape and bytes.
    """
    from biosnn.spec.yaml_io import spec_to_dict
    data, arrays = spec_to_dict(spec, "arrays.npz")
    data = {k: v for k, v in data.items() if k != "description"}
    parts: dict[str, object] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key not in ("namespace",):
            parts.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            parts[key] = value
    out = {}
    for part, value in parts.items():
        text = json.dumps(value, sort_keys=True, default=str)
        keys = sorted(k for k in arrays if k == part or k.startswith(part + "."))
        out[part] = _digest(text.encode(), *(f"{k}:{arrays[k].dtype.str}:{arrays[k].shape}".encode()
                                             + np.ascontiguousarray(arrays[k]).tobytes() for k in keys))
    return out


def data_hash(*arrays) -> str:
    """A content hash of training data (dtype, shape and bytes of each array; ``None`` entries allowed)."""
    chunks = []
    for a in arrays:
        if a is None:
            chunks.append(b"none")
            continue
        a = np.ascontiguousarray(a)
        chunks.append(f"{a.dtype.str}:{a.shape}".encode() + a.tobytes())
    return _digest(*chunks)


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
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed process
        try:
            stale.unlink()
        except OSError:
            pass
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
        if not Path(path).is_file():
            raise ValueError("not a regular file")
        with np.load(Path(path), allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("not a .npz archive")
            meta = json.loads(str(data["meta"]))
            if not isinstance(meta, dict):
                raise ValueError("its metadata is not a mapping")
            arrays = {k: np.array(data[k]) for k in data.files if k != "meta"}
    except Exception as exc:  # noqa: BLE001 - a damaged file can fail in zipfile, zlib, numpy or json
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise BiosnnError(f"cannot read checkpoint {path}: it is damaged or not a biosnn checkpoint "
                          f"({type(exc).__name__}: {reason}). Fix: delete it (or pass --restart) to start "
                          "afresh, or point --out to another directory") from None
    return arrays, meta
