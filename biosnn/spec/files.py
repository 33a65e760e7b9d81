"""Reading a spec's files safely: the YAML file and its ``.npz`` side files.

A spec file comes from someone else, so reading it is bounded and confined:

- only regular files (no FIFO, device or directory), at most
  :data:`MAX_YAML_BYTES` of UTF-8 text;
- YAML with unique keys, at most :data:`MAX_DEPTH` levels of nesting and
  :data:`MAX_NODES` nodes *after* alias expansion (aliases are counted without
  expanding them), no recursive aliases;
- side files resolved (symlinks followed) and refused when they leave the
  spec's folder, unless the user allows it (``allow_outside``);
- arrays in a side file are sized from their ``.npy`` header before they are
  decompressed (:data:`MAX_ARRAY_BYTES` or the memory budget).

Error messages name the spec field and the file name the spec gave, never the
contents of another file.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from biosnn.errors import SpecError

__all__ = ["read_yaml", "SideFiles", "MAX_YAML_BYTES", "MAX_DEPTH", "MAX_NODES", "MAX_ARRAY_BYTES"]

MAX_YAML_BYTES = 16 * 2 ** 20
"""Largest spec file (bytes)."""
MAX_DEPTH = 40
"""Deepest YAML nesting."""
MAX_NODES = 2_000_000
"""Most YAML nodes after alias expansion (inline arrays included)."""
MAX_ARRAY_BYTES = 8 * 2 ** 30
"""Largest single array read from a side file (bytes); the memory budget may refuse less."""


def _regular_file(path: Path, what: str, field: str | None, file: str | None) -> os.stat_result:
    try:
        st = os.stat(path)
    except OSError:
        raise SpecError(f"{what} not found", field=field, file=file,
                        fix="check the path (it is relative to the spec file)") from None
    if not stat.S_ISREG(st.st_mode):
        raise SpecError(f"{what} is not a regular file", field=field, file=file,
                        fix="point to a plain file (not a directory, pipe or device)")
    return st


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and deep nesting (before its recursive composer sees it)."""

    def _too_deep(self):
        return yaml.scanner.ScannerError(None, None, f"the YAML is nested more than {MAX_DEPTH} levels deep",
                                         self.get_mark())

    def fetch_flow_collection_start(self, TokenClass):
        if self.flow_level >= MAX_DEPTH:
            raise self._too_deep()
        return super().fetch_flow_collection_start(TokenClass)

    def add_indent(self, column):
        if len(self.indents) >= MAX_DEPTH:
            raise self._too_deep()
        return super().add_indent(column)

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            try:
                key = self.construct_object(key_node, deep=True)
                hash(key)
            except TypeError:
                continue  # unhashable: SafeLoader reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {str(key)[:60]!r} (first at line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _check_graph(root) -> None:
    """Depth, expanded size and cycles of a composed YAML node graph, without expanding aliases."""
    sizes: dict[int, int] = {}
    state: dict[int, int] = {}  # 1 visiting, 2 done
    stack = [(root, 0, False)]
    while stack:
        node, depth, leaving = stack.pop()
        key = id(node)
        children = []
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if leaving:
            sizes[key] = min(1 + sum(sizes[id(c)] for c in children), MAX_NODES + 1)
            state[key] = 2
            continue
        if state.get(key) == 2:
            continue
        if state.get(key) == 1:
            raise _yaml_error("a YAML alias refers to itself (recursive structure)", node)
        if depth > MAX_DEPTH:
            raise _yaml_error(f"the YAML is nested more than {MAX_DEPTH} levels deep", node)
        state[key] = 1
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children)
    if sizes[id(root)] > MAX_NODES:
        raise _yaml_error(f"the YAML has more than {MAX_NODES} values once its aliases are expanded", root)


class _GraphError(Exception):
    def __init__(self, message, node):
        super().__init__(message)
        self.message, self.mark = message, node.start_mark


def _yaml_error(message, node):
    return _GraphError(message, node)


def read_yaml(path: Path) -> Any:
    """The data of a YAML spec file, read within the limits of this module.

    Raises
    ------
    SpecError
        Naming the file, with the line where YAML problems are.
    """
    file = str(path)
    st = _regular_file(path, "spec file", None, file)
    if st.st_size > MAX_YAML_BYTES:
        raise SpecError(f"the spec file has {st.st_size} bytes (at most {MAX_YAML_BYTES})", file=file,
                        fix="keep arrays in a side .npz file (see save_spec)")
    with open(path, "rb") as fh:
        raw = fh.read(MAX_YAML_BYTES + 1)
    if len(raw) > MAX_YAML_BYTES:
        raise SpecError(f"the spec file has more than {MAX_YAML_BYTES} bytes", file=file,
                        fix="keep arrays in a side .npz file (see save_spec)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"the spec file is not UTF-8 text (byte {exc.start})", file=file,
                        fix="save it as UTF-8 text") from None
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_graph(node)
        return loader.construct_document(node)
    except _GraphError as exc:
        raise SpecError(f"{exc.message} (line {exc.mark.line + 1})", file=file,
                        fix="write the spec out plainly, without deep nesting or alias bombs") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"YAML syntax error{where}: {problem}", file=file,
                        fix="check indentation and quoting (quote strings that contain ':'); "
                            "every key once per mapping") from None
    except RecursionError:
        raise SpecError("the YAML is nested too deeply", file=file,
                        fix="write the spec out plainly, without deep nesting") from None
    finally:
        if loader is not None:
            loader.dispose()


class SideFiles:
    """The ``.npz`` side files of one spec, confined to its folder.

    Parameters
    ----------
    base : Path
        The spec's folder.
    spec_file : str, optional
        The spec file (for error messages).
    allow_outside : bool
        Read side files outside ``base`` (absolute paths, ``..``, symlinks leaving it).
    """

    def __init__(self, base: Path, spec_file: str | None = None, allow_outside: bool = False):
        self.base = base.resolve()
        self.file = spec_file
        self.allow_outside = allow_outside
        self._open: dict[Path, Any] = {}

    def _err(self, message, field, fix):
        return SpecError(message, field=field, file=self.file, fix=fix)

    def array(self, name: Any, key: Any, field: str) -> np.ndarray:
        """Array ``key`` of side file ``name`` (as the spec wrote them)."""
        if not isinstance(name, str) or not name or "\0" in name:
            raise self._err(f"array file must be a file name, got {str(name)[:60]!r}", field,
                            "write e.g. file: weights.npz")
        if not isinstance(key, str) or not key:
            raise self._err(f"array key must be text, got {str(key)[:60]!r}", field, "write e.g. key: w")
        try:
            path = (self.base / name).resolve()
        except (OSError, RuntimeError, ValueError):
            raise self._err(f"array file '{name[:100]}' cannot be resolved", field,
                            "give a path relative to the spec file") from None
        if not self.allow_outside and not path.is_relative_to(self.base):
            raise self._err(f"array file '{name[:100]}' is outside the spec's folder", field,
                            "keep side files next to the spec file, or allow it explicitly "
                            "(biosnn.load(path, allow_outside=True), or --allow-outside)")
        npz = self._open.get(path)
        if npz is None:
            if not path.exists():
                raise self._err(f"array file '{name[:100]}' not found (looked for {path})", field,
                                "put the .npz next to the spec file or correct the relative path")
            _regular_file(path, f"array file '{name[:100]}'", field, self.file)
            try:
                npz = np.load(path, allow_pickle=False)
            except Exception:  # noqa: BLE001 - any damage of a foreign file is the spec's problem
                raise self._err(f"cannot read array file '{name[:100]}': not a .npz archive", field,
                                "write it with numpy.savez") from None
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise self._err(f"cannot read array file '{name[:100]}': not a .npz archive", field,
                                "write it with numpy.savez (a .npz, not a .npy)")
            self._open[path] = npz
        if key not in npz.files:
            raise self._err(f"array '{key[:100]}' is not in '{name[:100]}'", field,
                            f"use one of {sorted(npz.files)[:10]}")
        try:
            with npz.zip.open(f"{key}.npy") as fh:
                version = np.lib.format.read_magic(fh)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(fh)
            nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if nbytes > MAX_ARRAY_BYTES:
                raise self._err(f"array '{key[:100]}' in '{name[:100]}' has {nbytes} bytes (at most "
                                f"{MAX_ARRAY_BYTES})", field, "split or shrink the array")
            from biosnn.spec.budget import check_bytes
            check_bytes(nbytes, f"array '{key[:60]}' of '{name[:100]}'", field, self.file)
            return npz[key]
        except SpecError:
            raise
        except (ValueError, OSError, KeyError, zipfile.BadZipFile, EOFError, TypeError):
            raise self._err(f"array '{key[:100]}' in '{name[:100]}' is damaged or not a plain numeric array",
                            field, "write it again with numpy.savez (no object arrays)") from None

    def close(self) -> None:
        for npz in self._open.values():
            npz.close()
        self._open.clear()
