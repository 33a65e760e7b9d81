"""Backends by name: a table of names to modules, each imported only when asked for.

Backends import :mod:`biosnn.backends.base`; nothing here is imported by them,
so choosing a backend by name creates no import circle.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

from biosnn.backends.base import Backend
from biosnn.errors import BackendError

__all__ = ["BACKEND_NAMES", "available_backends", "get_backend", "resolve_backend"]

#: name -> (module, class, keyword arguments, pip extra that provides it, module that must be importable)
_TABLE = {
    "runtime": ("biosnn.backends.brian2_runtime", "RuntimeBackend", {"target": "numpy"}, None, None),
    "numpy": ("biosnn.backends.brian2_runtime", "RuntimeBackend", {"target": "numpy"}, None, None),
    "cython": ("biosnn.backends.brian2_runtime", "RuntimeBackend", {"target": "cython"}, None, None),
    "cpp_standalone": ("biosnn.backends.brian2_standalone", "CppStandaloneBackend", {}, None, None),
    "cuda_standalone": ("biosnn.backends.brian2_cuda", "CudaStandaloneBackend", {}, "cuda", "brian2cuda"),
    "nest": ("biosnn.backends.nest", "NestBackend", {}, "nest", "nest"),
}

BACKEND_NAMES = ("auto", "runtime", "cython", "cpp_standalone", "cuda_standalone", "nest")


def _module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def available_backends() -> list[str]:
    """Names of the backends that can run on this machine.

    ``cuda_standalone`` is listed when brian2cuda and nvcc are installed (a GPU
    is needed to *run*, not to build); ``nest`` when NEST is installed.
    """
    import shutil
    names = ["runtime"]
    if _module_available("Cython") and (shutil.which("gcc") or shutil.which("cc")):
        names.append("cython")
    if shutil.which("g++") or shutil.which("c++"):
        names.append("cpp_standalone")
    if _module_available("brian2cuda") and shutil.which("nvcc"):
        names.append("cuda_standalone")
    if _module_available("nest"):
        names.append("nest")
    return names


_ANNOUNCED: set[str] = set()


def resolve_backend(name: str) -> str:
    """``name``, or for ``"auto"`` the fastest backend this machine runs.

    ``cuda_standalone`` when a CUDA GPU is visible (``nvidia-smi -L`` lists
    one, or ``/dev/nvidia<N>`` exists; not merely ``nvcc``) and brian2cuda and
    nvcc are installed; else ``cpp_standalone`` when a C++ compiler is on the
    PATH; else ``runtime``.  The choice is logged once per process (logger
    ``biosnn.backends``, level INFO, and on stderr).  ``$BIOSNN_BACKEND``, when
    set to a backend name, replaces the automatic choice.

    Raises
    ------
    BackendError
        If ``$BIOSNN_BACKEND`` names no backend.
    """
    if name != "auto":
        return name
    forced = os.environ.get("BIOSNN_BACKEND", "auto")
    if forced != "auto":
        if forced not in BACKEND_NAMES:
            raise BackendError(f"$BIOSNN_BACKEND is '{forced}'; use one of {list(BACKEND_NAMES)}")
        return forced
    names = available_backends()
    choice = "runtime"
    if "cuda_standalone" in names:
        from biosnn.backends.brian2_cuda import gpu_visible
        if gpu_visible():
            choice = "cuda_standalone"
    if choice == "runtime" and "cpp_standalone" in names:
        choice = "cpp_standalone"
    if choice not in _ANNOUNCED:
        _ANNOUNCED.add(choice)
        import logging
        import sys
        why = {"cuda_standalone": "a CUDA GPU is visible", "cpp_standalone": "a C++ compiler is on the PATH",
               "runtime": "no C++ compiler found"}[choice]
        msg = f"biosnn: backend 'auto' chose {choice} ({why}); pass backend= to choose another"
        logging.getLogger("biosnn.backends").info(msg)
        print(msg, file=sys.stderr)
    return choice


def get_backend(name: str, **options) -> Backend:
    """A backend by name.

    Parameters
    ----------
    name : {"auto", "runtime", "cython", "cpp_standalone", "cuda_standalone", "nest"}
        ``auto`` picks one (:func:`resolve_backend`), ``runtime`` is Brian2's runtime mode with numpy code generation,
        ``cython`` the same with Cython, ``cpp_standalone`` Brian2's C++
        standalone device (options ``threads``, ``float32``, ``cache_dir``),
        ``cuda_standalone`` brian2cuda (same options plus
        ``compute_capability``), ``nest`` NEST 3 (options ``local_num_threads``,
        ``cache_dir``; models without a built-in NEST counterpart are
        translated to NESTML and compiled once).
    **options
        Passed to the backend.

    Raises
    ------
    BackendError
        For an unknown name or a backend that cannot run here.
    """
    name = resolve_backend(name)
    if name not in _TABLE:
        raise BackendError(f"unknown backend '{name}'; use one of {list(BACKEND_NAMES)} "
                           f"(available here: {available_backends()})")
    module_name, class_name, defaults, extra, needs = _TABLE[name]
    if needs is not None and not _module_available(needs):
        hint = " (and CUDA's nvcc on the PATH)" if name == "cuda_standalone" else \
            f" (or use one of {available_backends()})"
        raise BackendError(f"the {name} backend needs {needs}: pip install 'biosnn[{extra}]'{hint}")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**defaults, **options)
