"""Hashes of compiled standalone binaries: recorded at build, checked before every run.

A build cache (``$BIOSNN_CACHE_DIR``) may be shared or damaged; biosnn never
runs a ``main`` it did not see being built.  After a build, the SHA-256 of the
binary is recorded *outside* the cache, in a per-user folder
(``$BIOSNN_HASH_DIR`` or ``~/.cache/biosnn/binary_hashes``), keyed by the build
directory.  A binary without a matching record is rebuilt from scratch (its
object files are deleted too) before it is used, and a binary that changes
between build and run is refused.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from biosnn.errors import BackendError

__all__ = ["record_binary", "binary_is_trusted", "untrust_build", "check_binary"]


def _record(directory: Path) -> Path:
    root = Path(os.environ.get("BIOSNN_HASH_DIR") or Path.home() / ".cache" / "biosnn" / "binary_hashes")
    key = hashlib.sha256(str(Path(directory).resolve()).encode()).hexdigest()[:24]
    return root / f"{Path(directory).name[:80]}-{key}.sha256"


def _hash(path: Path) -> str | None:
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_binary(directory: Path, name: str = "main") -> None:
    """Record the hash of ``directory/name`` (call right after building it)."""
    digest = _hash(Path(directory) / name)
    if digest is None:
        return
    rec = _record(directory)
    rec.parent.mkdir(parents=True, exist_ok=True)
    tmp = rec.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(digest + "\n")
    os.replace(tmp, rec)


def binary_is_trusted(directory: Path, name: str = "main") -> bool:
    """Whether ``directory/name`` exists and matches its recorded hash."""
    rec = _record(directory)
    try:
        expected = rec.read_text().strip()
    except OSError:
        return False
    return expected == _hash(Path(directory) / name)


def untrust_build(directory: Path, name: str = "main") -> None:
    """Delete an unrecorded binary and the object files beside it, so the next build compiles afresh."""
    directory = Path(directory)
    for path in [directory / name, *directory.rglob("*.o")]:
        try:
            path.unlink()
        except OSError:
            pass


def check_binary(directory: Path, name: str = "main") -> None:
    """Refuse to run ``directory/name`` unless it is the binary recorded at build (absent: nothing to refuse)."""
    if (Path(directory) / name).exists() and not binary_is_trusted(directory, name):
        raise BackendError(f"the compiled binary {Path(directory) / name} is not the one biosnn built (it changed "
                           "or has no recorded hash); refusing to run it. Fix: delete that build directory "
                           "and build again")
