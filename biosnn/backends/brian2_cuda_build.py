"""Compiling brian2cuda projects: unity translation units, every core, and reusable (carried) binaries.

brian2cuda writes one ``.cu`` file per code object (a converted LeNet-5 has 52
of them, plus 6 for the project), and every one of them includes Thrust and
curand: nvcc spends 10-15 s of CPU per file on these headers (``cudafe++``,
``cicc`` and the host compiler) and well under a second on the kernels.  This
module owns what biosnn changes about the compilation:

* **Unity units** (:func:`write_unity_sources`).  The code objects are
  compiled in a fixed number of translation units (``biosnn_unity_<k>.cu``):
  each code object's text goes into its own ``namespace _biosnn_<name>`` (its
  ``#include`` lines are hoisted, the macros it defines are undefined after
  it), and the functions its header declares (``void _run_<name>()`` ...) get
  global forwarders.  Code objects whose header declares anything else, or
  that open ``namespace brian``, stay separate files.  The grouping depends
  on the list of code objects only (not on the machine), so a project built
  here has the same sources everywhere.  Brian2's ``cpp_standalone`` code
  objects have the same form and are grouped the same way (``ext=".cpp"``,
  :meth:`biosnn.backends.brian2_standalone.CppStandaloneBackend.build_project`).
* **Every core** (:func:`make_jobs`): ``make -j<cores this process may use>``
  (``$BIOSNN_MAKE_JOBS`` overrides).
* **Fingerprints** (:func:`build_fingerprint`): a hash of the compiled sources,
  the project's headers and the compiler flags with absolute paths removed.
  A binary is reused when ``main`` and its fingerprint file
  (:data:`STAMP_NAME`) match the generated project, whatever the files' times,
  so a binary compiled on one machine runs on another after code generation
  only (see ``benchmarks/gpu_prebuild.py``).
"""

from __future__ import annotations

import hashlib
import os
import re
import resource
import subprocess
import time
from pathlib import Path

from biosnn.errors import BackendError

__all__ = ["DEFAULT_UNITY_UNITS", "STAMP_NAME", "make_jobs", "portable_host_flags", "unity_groups",
           "unity_part", "write_unity_sources", "makefile_sources", "build_fingerprint", "flags_fingerprint", "machine_free_flags",
           "compile_project"]

#: Translation units the code objects are grouped into (0: one file per code object).
DEFAULT_UNITY_UNITS = 8
#: The file next to ``main`` that holds the fingerprint of the sources it was compiled from.
STAMP_NAME = "main.biosnn-build"
UNITY_PREFIX = "biosnn_unity_"

_INCLUDE = re.compile(r"^\s*#\s*include\b")
_DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)")
_VOID_DECL = re.compile(r"^\s*void\s+(\w+)\s*\(\s*(?:void)?\s*\)\s*;\s*$")
_KERNEL_DECL = re.compile(r"^\s*__global__\s+void\s+(\w+)\s*\([^)]*\)\s*;\s*$")
_ANY_DECL = re.compile(r"\)\s*;\s*$")
_NAMESPACE_BRIAN = re.compile(r"\bnamespace\s+brian\s*\{")


def make_jobs() -> int:
    """Parallel make jobs: ``$BIOSNN_MAKE_JOBS``, else the cores this process may run on.

    Raises
    ------
    BackendError
        If ``$BIOSNN_MAKE_JOBS`` is not a positive integer.
    """
    env = os.environ.get("BIOSNN_MAKE_JOBS")
    if env:
        if not env.strip().isdigit() or int(env) < 1:
            raise BackendError(f"BIOSNN_MAKE_JOBS must be a positive integer, got {env!r}")
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def portable_host_flags(flags) -> list[str]:
    """A copy of host compiler flags without ``-march=native``/``-mtune=native``.

    brian2cuda's host code launches kernels and copies arrays; compiled for the
    build machine's processor, a binary may stop with an illegal instruction on
    the GPU machine's.

    Examples
    --------
    >>> portable_host_flags(["-O3", "-march=native", "-w"])
    ['-O3', '-w']
    """
    return [f for f in flags if f not in ("-march=native", "-mtune=native")]


def makefile_sources(directory) -> list[str]:
    """The ``SRCS`` list of a generated brian2cuda makefile.

    Raises
    ------
    BackendError
        If the makefile or its ``SRCS`` line is missing.
    """
    path = Path(directory) / "makefile"
    if not path.is_file():
        raise BackendError(f"brian2cuda wrote no makefile in {Path(directory)}")
    for line in path.read_text().splitlines():
        if line.startswith("SRCS ="):
            return line.split("=", 1)[1].split()
    raise BackendError(f"no 'SRCS =' line in {path}")


def unity_groups(names, units: int) -> list[list[str]]:
    """Split code object files into ``units`` groups (sorted names dealt round-robin; no empty group).

    Examples
    --------
    >>> unity_groups(["c", "a", "b", "d", "e"], 2)
    [['a', 'c', 'e'], ['b', 'd']]
    """
    names = sorted(names)
    units = min(int(units), len(names))
    return [names[k::units] for k in range(units)] if units > 0 else []


def _take_kernel(body: str, name: str) -> tuple[str, str] | None:
    """Cut the definition of ``__global__ void name(...) {...}`` out of ``body``: (rest, definition) or None."""
    head = re.search(r"__global__\s+void\s+" + re.escape(name) + r"\s*\(", body)
    if head is None:
        return None
    open_ = body.find("{", head.end())
    if open_ < 0 or ";" in body[head.end():open_]:
        return None
    depth = 0
    for pos in range(open_, len(body)):
        depth += {"{": 1, "}": -1}.get(body[pos], 0)
        if depth == 0:
            return body[:head.start()] + body[pos + 1:], body[head.start():pos + 1]
    return None


def unity_part(cu_text: str, h_text: str, namespace: str) -> tuple[list[str], str] | None:
    """One code object's text for a unity unit: ``(include lines, wrapped text)``, or None if it must stay alone.

    The text goes into ``namespace``; host functions that the header declares
    (``void name()``) get global forwarders; kernels that the header declares
    (``__global__ void name(...)``, launched by other code objects) are moved
    out of the namespace, with ``using namespace`` inside their body.

    Parameters
    ----------
    cu_text, h_text : str
        The code object's ``.cu`` and ``.h`` files.
    namespace : str
        The namespace its text is wrapped in (unique in the project: names in it link externally).

    Returns
    -------
    (list of str, str) or None
        None when the header declares anything else, or the code opens ``namespace brian``.
    """
    functions, kernels = [], []
    for line in h_text.splitlines():
        decl, kernel = _VOID_DECL.match(line), _KERNEL_DECL.match(line)
        if decl:
            functions.append(decl.group(1))
        elif kernel:
            kernels.append(kernel.group(1))
        elif _ANY_DECL.search(line) and not line.lstrip().startswith(("//", "#")):
            return None
    if _NAMESPACE_BRIAN.search(cu_text):
        return None
    includes, body, macros = [], [], []
    for line in cu_text.splitlines():
        if _INCLUDE.match(line):
            includes.append(line.strip())
            continue
        body.append(line)
        define = _DEFINE.match(line)
        if define and define.group(1) not in macros:
            macros.append(define.group(1))
    body = "\n".join(body)
    moved = []
    for name in kernels:
        cut = _take_kernel(body, name)
        if cut is None:
            return None
        body, definition = cut
        brace = definition.index("{")
        moved.append(definition[:brace + 1] + f"\n    using namespace {namespace};" + definition[brace + 1:])
    text = [f"namespace {namespace} {{", body, f"}}  // namespace {namespace}", *moved]
    text += [f"void {f}() {{ {namespace}::{f}(); }}" for f in functions]
    text += [f"#undef {name}" for name in macros]
    return includes, "\n".join(text) + "\n"


def _write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


def write_unity_sources(directory, units: int = DEFAULT_UNITY_UNITS, ext: str = ".cu") -> list[str]:
    """Group a generated project's code objects into ``units`` translation units and point the makefile at them.

    Files are written only when their text changes (make then keeps the
    objects compiled earlier).  ``units=0`` leaves the project as the device
    wrote it.

    Parameters
    ----------
    directory : str or Path
        The project directory (after ``device.build(compile=False)``).
    units : int
        Number of unity translation units.
    ext : str
        The code objects' file extension: ``".cu"`` (brian2cuda) or ``".cpp"``
        (Brian2's ``cpp_standalone``, whose code objects have the same form).

    Returns
    -------
    list of str
        The makefile's new ``SRCS``.
    """
    directory = Path(directory)
    sources = makefile_sources(directory)
    objects = [s for s in sources if s.startswith("code_objects/") and s.endswith(ext)]
    if units <= 0 or not objects:
        return sources
    header_macros = set()
    for h in directory.rglob("*.h"):
        header_macros.update(m.group(1) for m in map(_DEFINE.match, h.read_text(errors="replace").splitlines())
                             if m)
    alone, new_sources = [], []
    for k, group in enumerate(unity_groups(objects, units)):
        includes, parts = [], []
        for src in group:
            cu, h = directory / src, (directory / src).with_suffix(".h")
            part = unity_part(cu.read_text(), h.read_text() if h.is_file() else "", f"_biosnn_{cu.stem}")
            if part is None:
                alone.append(src)
                continue
            inc, text = part
            includes += [i for i in inc if i not in includes]
            # macros the project's headers define stay defined (a code object may repeat them)
            text = "\n".join(line for line in text.splitlines()
                             if not (line.startswith("#undef ") and line.split()[1] in header_macros)) + "\n"
            parts.append(f"// ---- {src}\n{text}")
        if not parts:
            continue
        name = f"{UNITY_PREFIX}{k}{ext}"
        _write_if_changed(directory / name, "// biosnn unity translation unit (generated)\n"
                          + "\n".join(includes) + "\n\n" + "\n".join(parts))
        new_sources.append(name)
    new_sources += alone + [s for s in sources if s not in objects]
    makefile = directory / "makefile"
    lines = makefile.read_text().splitlines(keepends=True)
    text = "".join(f"SRCS = {' '.join(new_sources)}\n" if line.startswith("SRCS =") else line for line in lines)
    _write_if_changed(makefile, text)
    for stale in directory.glob(f"{UNITY_PREFIX}*{ext}"):  # units of an earlier, larger grouping
        if stale.name not in new_sources:
            stale.unlink()
    return new_sources


def machine_free_flags(line: str) -> str:
    """A makefile flags line without this machine's paths (include, library and run-path options).

    Examples
    --------
    >>> machine_free_flags('LFLAGS = -lcurand -I. -L/opt/x/lib -Xlinker --enable-new-dtags -Xlinker -rpath,/opt/x/lib')
    'LFLAGS = -lcurand -I.'
    >>> machine_free_flags('NVCCFLAGS = -arch=sm_90 -Xcompiler "-I/a/include -w -O3"')
    'NVCCFLAGS = -arch=sm_90 -Xcompiler " -w -O3"'
    """
    line = re.sub(r"-Xlinker\s+--enable-new-dtags|-Xlinker\s+-rpath,\S+", "", line)
    line = re.sub(r"-[IL]\s*/[^\s\"']*", "", line)
    return " ".join(line.split())


def _makefile_flags(directory: Path) -> str:
    keep = []
    for line in (directory / "makefile").read_text().splitlines():
        if line.split("=", 1)[0].strip() in ("NVCCFLAGS", "LFLAGS", "CXXFLAGS", "LDFLAGS"):
            keep.append(machine_free_flags(line))
    return "\n".join(keep)


def flags_fingerprint(directory) -> str:
    """A hash of the makefile's compiler and linker flags with absolute paths removed."""
    return hashlib.sha256(_makefile_flags(Path(directory)).encode()).hexdigest()[:16]


def build_fingerprint(directory) -> str:
    """A hash of what the binary is compiled from: sources, the project's headers, flags (no absolute paths)."""
    directory = Path(directory)
    h = hashlib.sha256(_makefile_flags(directory).encode())
    files = set(makefile_sources(directory))
    files.update(str(p.relative_to(directory)) for p in directory.rglob("*.h")
                 if not p.relative_to(directory).parts[0].startswith("results"))
    for name in sorted(files):
        h.update(name.encode() + b"\0" + (directory / name).read_bytes() + b"\0")
    return h.hexdigest()[:32]


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def compile_project(directory, jobs: int | None = None) -> dict:
    """Compile a generated project with make, or reuse its binary when the fingerprint matches.

    Parameters
    ----------
    directory : str or Path
        The project directory (makefile written).
    jobs : int, optional
        Parallel make jobs (default :func:`make_jobs`).

    Returns
    -------
    dict
        ``{"compiled": bool, "make_s": wall seconds or None, "make_cpu_s": CPU seconds of make and
        the compilers or None, "jobs": int, "fingerprint": str}`` (None: nothing compiled).

    Raises
    ------
    BackendError
        When make fails (with the end of its output) or writes no binary.
    """
    directory = Path(directory)
    jobs = jobs or make_jobs()
    fingerprint = build_fingerprint(directory)
    binary, stamp = directory / "main", directory / STAMP_NAME
    if binary.is_file() and stamp.is_file():
        old = stamp.read_text().split()
        if old and old[0] == fingerprint:
            return {"compiled": False, "make_s": None, "make_cpu_s": None, "jobs": jobs, "fingerprint": fingerprint}
        if len(old) > 1 and old[1] != flags_fingerprint(directory):
            # other flags: make's time stamps would keep objects compiled with the old ones
            for obj in directory.rglob("*.o"):
                obj.unlink()
    binary.unlink(missing_ok=True)
    t0, cpu0 = time.perf_counter(), _children_cpu_s()
    out = subprocess.run(["make", f"-j{jobs}"], cwd=directory, capture_output=True, text=True)
    make_s, make_cpu_s = time.perf_counter() - t0, _children_cpu_s() - cpu0
    if out.returncode != 0 or not binary.is_file():
        log = (out.stdout + out.stderr)[-3000:]
        raise BackendError(f"nvcc/make failed in {directory} (exit {out.returncode}):\n{log}")
    stamp.write_text(f"{fingerprint} {flags_fingerprint(directory)}\n")
    return {"compiled": True, "make_s": make_s, "make_cpu_s": make_cpu_s, "jobs": jobs, "fingerprint": fingerprint}
