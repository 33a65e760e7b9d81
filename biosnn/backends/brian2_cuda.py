"""brian2cuda's ``cuda_standalone`` device: generate CUDA code, compile it with nvcc, run it on a GPU.

:class:`CudaStandaloneBackend` is :class:`~biosnn.backends.brian2_standalone.CppStandaloneBackend`
with brian2cuda's device, and the same build cache (one directory per network
structure).  biosnn applies the fixes that brian2cuda 1.0b1 needs with CUDA 13
itself, inside the backend's preference context, without editing installed
packages:

* **C++17.**  CUDA 13's Thrust and CUB refuse C++11.  Brian2's
  ``prefs.codegen.cpp.extra_compile_args_gcc`` (passed to the host compiler
  through ``-Xcompiler``) and brian2cuda's ``extra_compile_args_nvcc`` get
  ``-std=c++17`` in place of older standards.  brian2cuda's makefile
  template hard-codes ``-std=c++11``: its code objects get a templater with
  fixed templates for the time of the build (:func:`patched_templater`); the
  project is generated with ``compile=False``, its ``makefile`` checked (and
  rewritten if needed, :func:`patch_makefile`), then compiled with the
  device's own ``compile_source``.
* **Clock names.**  brian2cuda's ``synapses.cu`` template refers to
  ``defaultclock`` in its homogeneous-delay branch, which does not compile
  when no object uses Brian2's default clock (biosnn gives every network its
  own clock); the fixed template uses the synapses' clock.
* **Simultaneous clocks.**  ``network.cu`` counts clocks as simultaneous within
  ``1e-14`` s, less than a rounding error of ``t`` past 64 s: the fixed template
  uses Brian2 runtime's rule (:data:`~biosnn.backends.brian2_templates.SAME_TIME_FIXES`).
* **Reproducible code.**  The spike monitor template iterates over a dict
  built from a set, so the generated code differed between processes and
  the cache recompiled it every other build; the fixed template sorts it.
  Likewise a network's clocks are iterated in the order of their names
  (:func:`~biosnn.backends.brian2_templates.sorted_clocks`), not in the order of a set of objects: a binary
  compiled in one process (or on another machine) matches the code that
  another process generates.
* **No GPU at build time.**  Without a visible GPU, GPU detection is switched
  off and the code is compiled for compute capability 9.0 (or the one given),
  so a project can be compiled on a machine without a GPU and run elsewhere.
* **curand.**  When the CUDA toolkit has no curand (``curand.h``), the headers
  and library of the ``nvidia`` wheel that torch's CUDA build installs are
  used (:func:`wheel_curand_dirs`); the wheel ships only ``libcurand.so.<N>``,
  so an unversioned ``libcurand.so`` link for the linker's ``-lcurand`` is
  made in a directory of biosnn's (:func:`curand_link_dir`).

All preference changes are undone when the context ends.  Running a compiled
project needs a CUDA GPU; without one :meth:`CudaStandaloneSimulation.run`
raises a :class:`~biosnn.errors.BackendError` that says so.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np

from biosnn.backends.brian2_cuda_build import (DEFAULT_UNITY_UNITS, compile_project, portable_host_flags,
                                               write_unity_sources)
from biosnn.backends.brian2_runtime import brian2_prefs
from biosnn.backends.brian2_templates import SAME_TIME_FIXES, sorted_clocks, templater_scope
from biosnn.backends.brian2_templates import patched_templater as shared_patched_templater
from biosnn.backends.brian2_standalone import CppStandaloneBackend, StandaloneSimulation, cache_root
from biosnn.errors import BackendError
from biosnn.spec import model as m

__all__ = ["CudaStandaloneBackend", "CudaStandaloneSimulation", "CXX_STANDARD", "CC_ENV",
           "DEFAULT_COMPUTE_CAPABILITY", "TEMPLATE_FIXES", "use_cxx17", "patch_makefile", "patched_templater", "find_nvcc", "gpu_visible",
           "toolkit_has_curand", "wheel_curand_dirs", "curand_link_dir", "curand_runtime_dir", "no_gpu_message"]

#: The C++ standard CUDA 13's Thrust/CUB need (brian2cuda 1.0b1 asks for C++11).
CXX_STANDARD = "c++17"
#: Compute capability compiled for when no GPU can be detected (H100: 9.0).
DEFAULT_COMPUTE_CAPABILITY = 9.0
#: The lowest compute capability brian2cuda 1.0b1 supports.
MIN_COMPUTE_CAPABILITY = 5.0
#: Environment variable giving the compute capability when the constructor gets none
#: (e.g. ``9.0`` on the GPU machine, so that its builds match binaries compiled elsewhere).
CC_ENV = "BIOSNN_CUDA_COMPUTE_CAPABILITY"

_OLD_STD = re.compile(r"-std=(c|gnu)\+\+(98|03|0x|11|1y|14)(?![0-9A-Za-z])")
_LINK_DIR_NAME = "_cuda_lib"


# ---------------------------------------------------------------------------
# helpers (no nvcc needed)


def use_cxx17(flags) -> list[str]:
    """A copy of a list of compiler flags with older ``-std=`` flags replaced by ``-std=c++17``.

    Parameters
    ----------
    flags : iterable of str
        Compiler flags, e.g. Brian2's ``prefs.codegen.cpp.extra_compile_args_gcc``.

    Returns
    -------
    list of str
        A new list (the argument is not changed); flags without a ``-std=``
        option are kept as they are, none is added.

    Examples
    --------
    >>> use_cxx17(["-O3", "-std=c++11", "-w"])
    ['-O3', '-std=c++17', '-w']
    """
    return [_OLD_STD.sub(f"-std={CXX_STANDARD}", f) for f in flags]


def patch_makefile(path) -> bool:
    """Make a generated brian2cuda makefile compile with ``-std=c++17``.

    brian2cuda 1.0b1's makefile template hard-codes ``-std=c++11`` in
    ``NVCCFLAGS``; this rewrites every older ``-std=`` flag in the file.

    Parameters
    ----------
    path : str or Path
        The project's ``makefile``.

    Returns
    -------
    bool
        Whether the file was changed.

    Raises
    ------
    BackendError
        If the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise BackendError(f"brian2cuda wrote no makefile in {path.parent}")
    text = path.read_text()
    new = _OLD_STD.sub(f"-std={CXX_STANDARD}", text)
    if new == text:
        return False
    path.write_text(new)
    return True


def find_nvcc() -> str | None:
    """Path of CUDA's ``nvcc`` as brian2cuda looks for it, or None.

    Looks at ``$CUDA_PATH/bin``, the ``PATH``, ``/usr/local/cuda/bin`` and
    ``/opt/cuda/bin``.
    """
    candidates = []
    if os.environ.get("CUDA_PATH"):
        candidates.append(Path(os.environ["CUDA_PATH"]) / "bin" / "nvcc")
    on_path = shutil.which("nvcc")
    if on_path:
        candidates.append(Path(on_path))
    candidates += [Path("/usr/local/cuda/bin/nvcc"), Path("/opt/cuda/bin/nvcc")]
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return None


def gpu_visible() -> bool:
    """Whether a CUDA GPU is visible to this process.

    ``CUDA_VISIBLE_DEVICES`` set to ``""`` or ``-1`` hides all GPUs; otherwise
    ``nvidia-smi -L`` decides when it is installed, else the presence of
    ``/dev/nvidia<N>``.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return False
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            pass
        else:
            return out.returncode == 0 and "GPU" in out.stdout
    return any(Path("/dev").glob("nvidia[0-9]*"))


def _toolkit_roots(nvcc: str | None = None) -> list[Path]:
    roots = []
    if os.environ.get("CUDA_PATH"):
        roots.append(Path(os.environ["CUDA_PATH"]))
    if nvcc:
        roots.append(Path(os.path.realpath(nvcc)).parent.parent)
    return roots + [Path("/usr/local/cuda"), Path("/opt/cuda")]


def toolkit_has_curand(nvcc: str | None = None) -> bool:
    """Whether the CUDA toolkit of ``nvcc`` (or a standard one) has curand's headers.

    Parameters
    ----------
    nvcc : str, optional
        Path of ``nvcc`` (default :func:`find_nvcc`).
    """
    for root in [*_toolkit_roots(nvcc or find_nvcc()), Path("/usr")]:
        if (root / "include" / "curand.h").is_file():
            return True
        if any(root.glob("targets/*/include/curand.h")):
            return True
    return False


def wheel_curand_dirs() -> tuple[Path, Path] | None:
    """curand's include and library directories in the ``nvidia`` wheel (torch's CUDA build).

    Returns
    -------
    (Path, Path) or None
        ``(include_dir, lib_dir)`` of the first of ``nvidia/cu13``, ``nvidia/cu12``,
        ``nvidia/curand`` that holds ``include/curand.h`` and a
        ``lib/libcurand.so*``; None when the wheel is not installed.
    """
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        for sub in ("cu13", "cu12", "curand"):
            root = Path(base) / sub
            if (root / "include" / "curand.h").is_file() and any((root / "lib").glob("libcurand.so*")):
                return root / "include", root / "lib"
    return None


def curand_runtime_dir(nvcc: str | None = None) -> Path | None:
    """A directory holding ``libcurand.so.<N>`` for running a compiled project, or None.

    The CUDA toolkit's library directories first (``lib64``, ``lib``,
    ``targets/*/lib``), then the ``nvidia`` wheel's.  A binary compiled on
    another machine records that machine's library path; running it with this
    directory on ``LD_LIBRARY_PATH`` finds curand here.
    """
    nvcc = nvcc or find_nvcc()
    for root in _toolkit_roots(nvcc):
        for lib in (root / "lib64", root / "lib", *sorted(root.glob("targets/*/lib"))):
            if any(lib.glob("libcurand.so*")):
                return lib
    dirs = wheel_curand_dirs()
    return dirs[1] if dirs else None


def _version_key(path: Path):
    suffix = path.name[len("libcurand.so"):].lstrip(".")
    return tuple(int(p) if p.isdigit() else -1 for p in suffix.split(".") if p)


def curand_link_dir(lib_dir, link_dir) -> Path:
    """A directory with an unversioned ``libcurand.so`` link to the newest ``libcurand.so.<N>``.

    The linker's ``-lcurand`` looks for ``libcurand.so``; the ``nvidia`` wheel
    ships only the versioned library.  The link is made atomically (safe with
    several processes) and kept when it already points to the right file.

    Parameters
    ----------
    lib_dir : str or Path
        Directory holding ``libcurand.so.<N>``.
    link_dir : str or Path
        A directory of biosnn's to hold the link (created if needed).

    Returns
    -------
    Path
        ``link_dir``.

    Raises
    ------
    BackendError
        If ``lib_dir`` has no curand library.
    """
    lib_dir, link_dir = Path(lib_dir), Path(link_dir)
    libs = sorted((p for p in lib_dir.glob("libcurand.so.*") if p.is_file()), key=_version_key)
    if not libs:
        if (lib_dir / "libcurand.so").exists():
            return lib_dir
        raise BackendError(f"no libcurand.so* in {lib_dir}")
    target = libs[-1].resolve()
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / "libcurand.so"
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return link_dir
    tmp = link_dir / f".libcurand.so.{os.getpid()}.tmp"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    return link_dir


def no_gpu_message(directory) -> str:
    """The error message of a run on a machine without a CUDA GPU."""
    return f"no CUDA GPU: the project compiled in {directory}; run it on a machine with a GPU"


def _brian2cuda_available() -> bool:
    return importlib.util.find_spec("brian2cuda") is not None


#: Fixes to brian2cuda 1.0b1's templates: (template, regex, replacement, why).
TEMPLATE_FIXES = (
    ("makefile", _OLD_STD.pattern, f"-std={CXX_STANDARD}",
     "NVCCFLAGS hard-codes -std=c++11, which CUDA 13's Thrust/CUB refuse"),
    ("synapses.cu", r"\bdefaultclock\.timestep\[0\]", "{{owner.clock.name}}.timestep[0]",
     "the homogeneous-delay branch names 'defaultclock' instead of the synapses' clock, "
     "which does not compile when no object uses Brian2's defaultclock"),
    ("spikemonitor.cu", r"record_variables\.values\(\)\s*\|\s*first", "(record_variables|dictsort|first)[1]",
     "Brian2 builds record_variables from a set, so its order (and the generated code) changes "
     "with Python's string hashing and every other build recompiles the monitor"),
    ("spikemonitor.cu", r"record_variables\.items\(\)", "record_variables|dictsort",
     "same: iterate the recorded variables in sorted order"),
    *SAME_TIME_FIXES,
)

def patched_templater(templater):
    """A copy of brian2cuda's templater whose templates have :data:`TEMPLATE_FIXES` applied
    (:func:`biosnn.backends.brian2_templates.patched_templater`; cached per original).

    Parameters
    ----------
    templater : brian2.codegen.templates.Templater
        ``brian2cuda.codeobject.CUDAStandaloneCodeObject.templater``.
    """
    return shared_patched_templater(templater, TEMPLATE_FIXES)


def _templater_scope():
    """Let brian2cuda's code objects use :func:`patched_templater` for a block."""
    from brian2cuda.codeobject import CUDAStandaloneCodeObject
    return templater_scope(CUDAStandaloneCodeObject, TEMPLATE_FIXES)


class _Brian2cudaInfoFilter:
    """Drops brian2cuda's messages below WARNING (a ``logging`` filter)."""

    @staticmethod
    def filter(record) -> bool:
        return record.levelno >= 30 or not record.name.startswith(("brian2cuda", "brian2.brian2cuda"))


@contextmanager
def _quiet_brian2cuda():
    """Keep brian2cuda's INFO messages (dozens per build) off the console for a block.

    They still go to Brian2's debug log file; only Brian2's console handler is filtered.
    """
    from brian2.utils.logger import BrianLogger
    handler = BrianLogger.console_handler
    if handler is None:
        yield
        return
    handler.addFilter(_Brian2cudaInfoFilter)
    try:
        yield
    finally:
        handler.removeFilter(_Brian2cudaInfoFilter)


@contextmanager
def _gpu_selection_scope(detect: bool):
    """Without GPU detection, let brian2cuda choose its GPU anew and restore its cache afterwards.

    brian2cuda caches the selected GPU id and compute capability in a module
    global; a build with detection off must neither use nor leave such values.
    """
    if detect:
        yield
        return
    from brian2cuda.utils import gputools
    saved = dict(gputools._gpu_selection)
    gputools.reset_gpu_selection()
    try:
        yield
    finally:
        gputools.restore_gpu_selection(saved)


# ---------------------------------------------------------------------------
# the backend


class CudaStandaloneBackend(CppStandaloneBackend):
    """brian2cuda's ``cuda_standalone`` device (generate, compile with nvcc, run on a GPU).

    Parameters
    ----------
    float32 : bool
        Single precision state variables (``prefs.core.default_float_dtype``).
    cache_dir : str or Path, optional
        Where compiled builds are kept (default
        :func:`~biosnn.backends.brian2_standalone.cache_root`); the
        ``libcurand.so`` link goes to its ``_cuda_lib`` subdirectory.
    compute_capability : float, optional
        GPU architecture to compile for (e.g. ``8.0``, ``9.0``; given, GPU
        detection is off and the first GPU runs the code).  None:
        ``$BIOSNN_CUDA_COMPUTE_CAPABILITY`` if set, else the
        visible GPU's, detected by brian2cuda, or
        :data:`DEFAULT_COMPUTE_CAPABILITY` with detection off when no GPU is
        visible (compiling on a machine without a GPU).
    static_projections : bool
        Propagate static projections (no plasticity, no delay) with biosnn's
        CUDA kernels (:mod:`biosnn.backends.brian2_static`: a block per spiking
        source neuron, atomic additions, CSR targets, dense rows or computed
        convolution taps with a shared kernel) instead of brian2cuda's
        ``Synapses`` (spike queue, per-synapse index and weight arrays).
    unity_units : int
        Compile the code objects in this many translation units
        (:func:`~biosnn.backends.brian2_cuda_build.write_unity_sources`; nvcc
        spends most of its time on the headers every file includes); 0: one
        file per code object, as brian2cuda writes them.

    Raises
    ------
    BackendError
        If brian2cuda is not installed or ``compute_capability`` is invalid.

    Notes
    -----
    :meth:`build` generates and compiles (it needs nvcc, not a GPU) with
    ``make -j<cores>``; the returned simulation's ``run`` needs a CUDA GPU.
    A project directory whose ``main`` was compiled from the same sources and
    flags (its fingerprint file, :data:`~biosnn.backends.brian2_cuda_build.STAMP_NAME`)
    is not compiled again, also when the binary was built on another machine.
    Host code is compiled without ``-march=native`` so that binaries run on
    any x86-64 machine with the GPU they were compiled for.
    """

    device_name = "cuda_standalone"
    name = "cuda_standalone"

    def __init__(self, float32: bool = False, cache_dir=None, compute_capability: float | None = None,
                 static_projections: bool = True, unity_units: int = DEFAULT_UNITY_UNITS):
        if not _brian2cuda_available():
            raise BackendError("the cuda_standalone backend needs brian2cuda: "
                               "pip install 'biosnn[cuda]' (and CUDA's nvcc on the PATH)")
        super().__init__(threads=0, float32=float32, cache_dir=cache_dir, static_projections=static_projections,
                         unity_units=unity_units)
        if compute_capability is None and os.environ.get(CC_ENV):
            try:
                compute_capability = float(os.environ[CC_ENV])
            except ValueError:
                raise BackendError(f"${CC_ENV} must be a number such as 9.0, got "
                                   f"{os.environ[CC_ENV]!r}") from None
        if compute_capability is not None:
            if isinstance(compute_capability, bool) or not isinstance(compute_capability, (int, float)):
                raise BackendError(f"compute_capability must be a number such as 9.0, got "
                                   f"{compute_capability!r}")
            compute_capability = float(compute_capability)
            if compute_capability < MIN_COMPUTE_CAPABILITY:
                raise BackendError(f"compute_capability {compute_capability} is below the minimum "
                                   f"{MIN_COMPUTE_CAPABILITY} that brian2cuda supports")
        self.compute_capability = compute_capability
        self.last_compile: dict = {}
        self._gpu: bool | None = None

    # -- environment ---------------------------------------------------------
    def gpu_present(self) -> bool:
        """Whether a CUDA GPU is visible (:func:`gpu_visible`, asked once per backend)."""
        if self._gpu is None:
            self._gpu = gpu_visible()
        return self._gpu

    def check_toolchain(self) -> str:
        """Path of nvcc; raises :class:`BackendError` when brian2cuda or nvcc is missing."""
        if not _brian2cuda_available():
            raise BackendError("the cuda_standalone backend needs brian2cuda: "
                               "pip install 'biosnn[cuda]'")
        nvcc = find_nvcc()
        if nvcc is None:
            raise BackendError("the cuda_standalone backend needs CUDA's nvcc to compile: install the "
                               "CUDA toolkit and put nvcc on the PATH (or set CUDA_PATH)")
        return nvcc

    def link_dir(self) -> Path:
        """biosnn's directory for the unversioned ``libcurand.so`` link."""
        return (self.cache_dir or cache_root()) / _LINK_DIR_NAME

    def curand_dirs(self) -> tuple[Path, Path, Path] | None:
        """``(include_dir, lib_dir, link_dir)`` of the wheel's curand, or None when not needed.

        None when the CUDA toolkit has curand itself; raises
        :class:`BackendError` when neither has it.
        """
        if toolkit_has_curand():
            return None
        dirs = wheel_curand_dirs()
        if dirs is None:
            raise BackendError("curand was found neither in the CUDA toolkit nor in the 'nvidia' "
                               "wheel (pip install torch's CUDA build, or install CUDA's curand)")
        include, lib = dirs
        return include, lib, curand_link_dir(lib, self.link_dir())

    def _arch(self) -> tuple[bool, float | None]:
        """(detect GPUs, compute capability preference).

        A given compute capability switches detection off (the first GPU runs
        the code): the generated project is then the same with and without a GPU.
        """
        if self.compute_capability is not None:
            return False, self.compute_capability
        if self.gpu_present():
            return True, None
        return False, DEFAULT_COMPUTE_CAPABILITY

    # -- hooks of CppStandaloneBackend --------------------------------------
    def options(self) -> dict:
        """Everything that changes the generated code (part of the build directory's key)."""
        import brian2cuda
        detect, cc = self._arch()
        return {"float32": self.float32, "device": self.device_name, "static_projections": self.static_projections,
                "compute_capability": cc if cc is not None else "detected",
                "cxx": CXX_STANDARD, "brian2cuda": brian2cuda.__version__, "unity_units": self.unity_units}

    @contextmanager
    def prefs(self):
        """Brian2/brian2cuda preferences for building and running, restored afterwards."""
        import brian2cuda  # noqa: F401  (registers the device and its preferences)
        from brian2 import prefs
        cuda = prefs.devices.cuda_standalone.cuda_backend
        detect, cc = self._arch()
        values = {
            # new lists: brian2cuda changes the nvcc flags list in place while writing the makefile
            "codegen__cpp__extra_compile_args_gcc":
                portable_host_flags(use_cxx17(prefs.codegen.cpp.extra_compile_args_gcc)),
            "devices__cuda_standalone__cuda_backend__extra_compile_args_nvcc":
                use_cxx17(cuda.extra_compile_args_nvcc),
            "devices__cuda_standalone__cuda_backend__detect_gpus": detect,
            "devices__cuda_standalone__cuda_backend__compute_capability": cc,
        }
        if not detect:
            values["devices__cuda_standalone__cuda_backend__gpu_id"] = cuda.gpu_id or 0
        curand = self.curand_dirs()
        if curand is not None:
            include, lib, link = (str(d) for d in curand)
            values["codegen__cpp__include_dirs"] = [*prefs.codegen.cpp.include_dirs, include]
            values["codegen__cpp__library_dirs"] = [*prefs.codegen.cpp.library_dirs, link, lib]
            values["codegen__cpp__runtime_library_dirs"] = [*prefs.codegen.cpp.runtime_library_dirs, lib]
        runtime = curand_runtime_dir()
        if runtime is not None:
            env = dict(prefs.devices.cpp_standalone.run_environment_variables)
            path = os.environ.get("LD_LIBRARY_PATH", "")
            env["LD_LIBRARY_PATH"] = f"{runtime}:{path}" if path else str(runtime)
            values["devices__cpp_standalone__run_environment_variables"] = env
        with ExitStack() as stack:
            stack.enter_context(brian2_prefs(
                core__default_float_dtype=np.float32 if self.float32 else np.float64))
            stack.enter_context(brian2_prefs(**values))
            stack.enter_context(_gpu_selection_scope(detect))
            stack.enter_context(_templater_scope())
            stack.enter_context(sorted_clocks())
            stack.enter_context(_quiet_brian2cuda())
            yield

    def activate_device(self):
        """Make brian2cuda's device the active one (fresh, ``build_on_run=False``)."""
        import gc

        import brian2cuda  # noqa: F401
        device = super().activate_device()
        # The previous network's objects were only dropped by the device's reinit: collect them
        # now, or Brian2 still sees their names and numbers the new ones ('lif_1', ...), which
        # changes every generated file and makes nvcc recompile the whole cached project.
        gc.collect()
        return device

    def build_project(self, device, directory: Path):
        """Generate the project, make sure its makefile asks for C++17, group it in unity units, compile it.

        Compiling is skipped when the binary's fingerprint matches
        (:func:`~biosnn.backends.brian2_cuda_build.compile_project`); the
        outcome is kept in :attr:`last_compile` and the make time in the
        device's ``timers["compile"]["make"]``.

        Parameters
        ----------
        device : brian2cuda.device.CUDAStandaloneDevice
            The active device, after the network's ``run`` generated its code objects.
        directory : Path
            The project directory.

        Raises
        ------
        BackendError
            When nvcc or make fails, with the end of their output.
        """
        directory = Path(directory)
        device.build(directory=str(directory), compile=False, run=False, with_output=False)
        patch_makefile(directory / "makefile")
        write_unity_sources(directory, self.unity_units)
        self.last_compile = compile_project(directory)
        device.timers.setdefault("compile", {})["make"] = self.last_compile["make_s"]

    def build(self, spec: m.NetworkSpec, duration: float | None = None) -> "CudaStandaloneSimulation":
        """Generate and compile ``spec`` with nvcc (no GPU needed); run it with ``.run()``.

        Parameters
        ----------
        spec : NetworkSpec
            The network.
        duration : float, optional
            Simulated time in seconds (default: the spec's).

        Raises
        ------
        BackendError
            If brian2cuda or nvcc is missing, or code generation or compilation fails.
        """
        self.check_toolchain()
        return CudaStandaloneSimulation(self, spec, duration)


class CudaStandaloneSimulation(StandaloneSimulation):
    """A compiled brian2cuda project; :meth:`run` needs a CUDA GPU.

    Attributes
    ----------
    compiled : bool
        Whether nvcc ran for this build (False: the binary was reused, e.g. one compiled elsewhere).
    make_s, make_cpu_s : float or None
        Wall and CPU seconds of make and the compilers (None when nothing was compiled).
    make_jobs : int
        Parallel make jobs.
    """

    def _load(self):
        super()._load()
        info = self.backend.last_compile
        self.compiled = bool(info.get("compiled"))
        self.make_s = info.get("make_s")
        self.make_cpu_s = info.get("make_cpu_s")
        self.make_jobs = info.get("jobs")

    def run(self, duration: float | None = None, overrides=None, progress: bool = True, final_state=None):
        """Run the compiled binary (see :meth:`biosnn.backends.base.Simulation.run`).

        Raises
        ------
        BackendError
            ``no CUDA GPU: ...`` when the binary fails and no GPU is visible (it
            stops at ``cudaSetDevice``); other failures as in the C++ backend.
        """
        existing = set(self.directory.glob("results_*"))
        library_path = os.environ.get("LD_LIBRARY_PATH")  # Brian2 sets it for the binary and leaves it
        try:
            return super().run(duration, overrides, progress, final_state)
        except BackendError as exc:
            cause = exc.__cause__
            if isinstance(cause, RuntimeError) and not self.backend.gpu_present():
                # no run can succeed on this machine: drop the failed run's empty results
                for d in set(self.directory.glob("results_*")) - existing:
                    shutil.rmtree(d, ignore_errors=True)
                raise BackendError(no_gpu_message(self.directory)) from exc
            raise
        finally:
            if library_path is None:
                os.environ.pop("LD_LIBRARY_PATH", None)
            else:
                os.environ["LD_LIBRARY_PATH"] = library_path
