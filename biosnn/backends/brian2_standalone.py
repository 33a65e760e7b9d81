"""Brian2's C++ standalone device: compile once, run many times with ``run_args``.

The generated project goes to a build directory keyed by the network's
*structure* (sizes, equations, duration, device options; not the values of
arrays), under ``$BIOSNN_CACHE_DIR`` or ``~/.cache/biosnn/builds``.  Brian2
rewrites only changed source files, so building the same structure again -- in
this process or another -- re-generates code but does not recompile.  New
inputs, weights or initial values go to the compiled binary through
``device.run(run_args=...)``.

Compilation (:meth:`CppStandaloneBackend.build_project`): the code objects
(a converted ResNet-20 has 160 of them, each a file that includes Brian2's
headers) are compiled in a few unity translation units
(:func:`~biosnn.backends.brian2_cuda_build.write_unity_sources`, as for
brian2cuda), and the generated glue that runs once per run (``objects.cpp``:
array allocation and file input/output; ``main.cpp``: the run's sequence) at
``-O1`` (:data:`GLUE_FLAGS`) instead of ``-O3``: ``objects.cpp`` alone took
7-17 s at ``-O3``.  Make recompiles only what changed: Brian2 rewrites the
makefile on every build (biosnn's edits make it differ from Brian2's text), so
its time stamp is put back when the edited text is the same as before.

Templates: besides the clock fix (:data:`~biosnn.backends.brian2_templates.SAME_TIME_FIXES`), the thresholder
has no branch per neuron (:data:`BRANCHLESS_THRESHOLD`), and the operations and thresholder of a model with a
shared subexpression ``biosnn_idle`` loop over no neuron on the steps where it is nonzero (:data:`IDLE_LOOPS`:
the TSC and TDSNN layers outside their part of the sample window).  Without OpenMP threads, a neuron group's
operations, threshold and reset run in one vectorised code object where that changes no result
(:mod:`~biosnn.backends.brian2_fused`, ``fused_steps=False``: the separate code objects).

Run length: the duration of a ``cpp_standalone`` run (a spec without a protocol) is not compiled in:
``main.cpp`` reads it from ``$BIOSNN_DURATION_S`` (:func:`duration_from_environment`, :data:`DURATION_VARIABLE`), set
for every run of the build, and the structure key leaves the duration out, so networks that differ only in
their run's length (a TDSNN network's window is ``P T_il + 1`` steps) share one binary.

Brian2's standalone device is one object per process, so only one standalone
network can be *loaded* at a time; a :class:`StandaloneSimulation` whose device
was taken by a later build reloads itself (code generation, no compilation) the
next time it runs.
"""

from __future__ import annotations

import fcntl
import gc
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from biosnn.backends.base import _as_array_value, apply_overrides, split_key
from biosnn.backends.binary_hashes import binary_is_trusted, check_binary, record_binary, untrust_build
from biosnn.backends.brian2_network import (brian2_errors, build_objects, check_final_state, collect_recording,
                                            positive_duration, run_network)
from biosnn.backends.brian2_fused import fuse_neuron_steps
from biosnn.backends.brian2_runtime import brian2_prefs
from biosnn.backends.brian2_static import write_static_files
from biosnn.backends.brian2_cuda_build import DEFAULT_UNITY_UNITS, write_unity_sources
from biosnn.backends.brian2_templates import SAME_TIME_FIXES, sorted_clocks, templater_scope
from biosnn.backends.progress import STANDALONE_REPORT_CODE, ProgressBar, tail_progress
from biosnn.errors import BackendError
from biosnn.spec import model as m
from biosnn.spec.values import ArrayValue

__all__ = ["CppStandaloneBackend", "StandaloneSimulation", "cache_root", "structure_key", "profile_of",
           "GLUE_FLAGS", "glue_flags", "IDLE_LOOPS", "DURATION_VARIABLE", "duration_from_environment",
           "reads_duration_at_run_time", "build_directory"]

#: Makefile lines appended by :func:`glue_flags`: the glue that runs once per run, compiled at ``-O1``.
GLUE_FLAGS = ("# biosnn: generated glue (array set-up, file input/output, the run's sequence) at -O1\n"
              "objects.o main.o: CXXFLAGS += -O1\n")

#: Fix of Brian2's ``threshold.cpp`` (see :func:`~biosnn.backends.brian2_templates.patched_templater`): without
#: refractoriness the neuron loop appends every index and advances the count by the condition, with no
#: branch per neuron (a rate-coded layer's spikes are irregular, so the branch was mispredicted at
#: every spike); the spike space holds the same events in the same order.
BRANCHLESS_THRESHOLD = (
    "threshold.cpp",
    r"if\(_cond\) \{\s*\{\{_eventspace\}\}\[_count\+\+\] = _idx;\s*\{% if _uses_refractory %\}\s*"
    r"\{\{not_refractory\}\}\[_idx\] = false;\s*\{\{lastspike\}\}\[_idx\] = \{\{t\}\};\s*\{% endif %\}\s*\}",
    "{% if _uses_refractory %}\n"
    "        if(_cond) {\n"
    "            {{_eventspace}}[_count++] = _idx;\n"
    "            {{not_refractory}}[_idx] = false;\n"
    "            {{lastspike}}[_idx] = {{t}};\n"
    "        }\n"
    "        {% else %}\n"
    "        {{_eventspace}}[_count] = _idx;\n"
    "        _count += _cond ? 1 : 0;\n"
    "        {% endif %}",
    "a branch per neuron, mispredicted at irregular spikes: append every index, advance the count by the condition")

#: Fix of Brian2's ``network.cpp``: the progress report read the clock (``clock_gettime``) before every code
#: object of every step (7 % of a rate-coded LeNet-5's run, ~45 objects per step); once per step now.
REPORT_PER_STEP = (
    "network.cpp", r"if \(report_func\)(?=\s*\{\s*current = )", "if (report_func && i == 0)",
    "the progress report read the clock before every code object: once per step")

_USES_IDLE = ("{% if 'biosnn_idle' in variables and variables['biosnn_idle'].scalar "
              "and variables['biosnn_idle'].__class__.__name__ == 'Subexpression' %}")

#: Fixes of Brian2's ``stateupdate.cpp`` (operations) and ``threshold.cpp``: a code object that uses a variable
#: ``biosnn_idle`` (a shared subexpression of the model, computed once per step in the scalar code) runs its
#: neuron loop over no neuron on steps where ``biosnn_idle`` is nonzero.  The model's author writes the code so
#: that it leaves every variable as it is on those steps (``biosnn_idle == 0 and ...`` in a threshold,
#: ``(1 - biosnn_idle)`` factors in an operation), so the results are those of the code as written (which the
#: runtime backend runs): only the loop is skipped.  Another kind of variable of that name (state variable,
#: per-neuron subexpression) is ignored.
IDLE_LOOPS = (
    ("stateupdate.cpp", r"const int _N = \{\{constant_or_scalar\('N', variables\['N'\]\)\}\};",
     "const int _N = " + _USES_IDLE + "biosnn_idle ? 0 : {% endif %}{{constant_or_scalar('N', variables['N'])}};",
     "an operation loops over every neuron on every step of its clock: none on the steps its model marks idle"),
    ("threshold.cpp", r"for\(size_t _idx=0; _idx<N; _idx\+\+\)",
     "for(size_t _idx=0; _idx<" + _USES_IDLE + "(biosnn_idle ? 0 : N){% else %}N{% endif %}; _idx++)",
     "a thresholder tests every neuron on every step: none on the steps its model marks idle"),
)

#: Environment variable from which a ``cpp_standalone`` binary reads its run's duration (seconds, ``repr`` of a
#: float: ``strtod`` reads it back exactly); see :func:`duration_from_environment`.
DURATION_VARIABLE = "BIOSNN_DURATION_S"

_RUN_LINE = re.compile(r"^(\s*\w+\.run\()([-+0-9.eE]+|inf|nan)(, )", re.MULTILINE)

_DURATION_FUNCTION = f"""
// biosnn: the run's duration (seconds) comes from ${DURATION_VARIABLE}, so that builds of other durations
// share this binary (biosnn.backends.brian2_standalone.duration_from_environment)
#include <cstdlib>
static double biosnn_duration_s()
{{
    const char* text = std::getenv("{DURATION_VARIABLE}");
    char* end = nullptr;
    const double value = text ? std::strtod(text, &end) : -1.0;
    if (text == nullptr || end == text || *end != '\\0' || !(value > 0.0))
    {{
        std::cerr << "biosnn: set {DURATION_VARIABLE} to the run's duration in seconds" << std::endl;
        std::exit(2);
    }}
    return value;
}}
"""


def duration_from_environment(main_cpp: Path) -> bool:
    """Make a generated ``main.cpp`` read its run's duration from :data:`DURATION_VARIABLE` (once).

    The project must have one ``Network.run`` (a spec without a protocol); its literal duration becomes
    ``biosnn_duration_s()``, a function added before ``main`` that stops the binary with an error when
    the variable is missing or not a positive number.  Returns whether the file changed.
    """
    text = main_cpp.read_text()
    if "biosnn_duration_s()" in text:
        return False
    runs = _RUN_LINE.findall(text)
    marker = "int main(int argc, char **argv)"
    if len(runs) != 1 or text.count(marker) != 1:
        raise BackendError(f"{main_cpp} does not have the one network run and main function expected of "
                           "Brian2's C++ standalone device; the run's duration cannot be read at run time")
    text = _RUN_LINE.sub(lambda mo: mo.group(1) + "biosnn_duration_s()" + mo.group(3), text)
    main_cpp.write_text(text.replace(marker, _DURATION_FUNCTION + "\n" + marker))
    return True


_LOCK = threading.RLock()
_ACTIVE: dict[str, "StandaloneSimulation | None"] = {}


def cache_root() -> Path:
    """Root directory of compiled builds (``$BIOSNN_CACHE_DIR`` or ``~/.cache/biosnn/builds``)."""
    env = os.environ.get("BIOSNN_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "biosnn" / "builds"


def _structure(obj):
    """The spec as nested plain data, arrays replaced by shape/dtype/unit."""
    from dataclasses import fields, is_dataclass
    if isinstance(obj, ArrayValue):
        return {"array": list(obj.shape), "dtype": obj.data.dtype.str, "unit": obj.unit}
    if is_dataclass(obj):
        return {"_": type(obj).__name__, **{f.name: _structure(getattr(obj, f.name)) for f in fields(obj)
                                            if f.name != "description"}}
    if isinstance(obj, dict) or hasattr(obj, "items"):
        return {str(k): _structure(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_structure(v) for v in obj]
    return obj


def structure_key(spec: m.NetworkSpec, duration_s: float | None, options: dict) -> str:
    """A hash of everything that changes the generated code of a spec (``duration_s=None``: a build whose
    duration is read at run time, :func:`duration_from_environment`; the spec's duration is left out too)."""
    import brian2
    structure = _structure(spec)
    if duration_s is None:
        structure.pop("duration")
    data = {"spec": structure, "duration": "run time" if duration_s is None else repr(float(duration_s)),
            "options": options, "brian2": brian2.__version__}
    # the number of synapses and random connectivity are data, but sizes of explicit
    # connectivity arrays are data too: they do not change the code
    return hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_profile(path: Path) -> str:
    """Brian2's ``profiling_info.txt`` (``name seconds`` per line) as a JSON object, slowest first."""
    times = {}
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                times[parts[0]] = float(parts[1])
    return json.dumps(dict(sorted(times.items(), key=lambda kv: -kv[1])))


def profile_of(rec) -> dict[str, float]:
    """Seconds per code object of a run made with ``profile=True`` (slowest first)."""
    if "profile" not in rec.meta:
        raise BackendError("this recording has no profile: build with "
                           "get_backend('cpp_standalone', profile=True)")
    return json.loads(rec.meta["profile"])


def glue_flags(makefile: Path) -> bool:
    """Append :data:`GLUE_FLAGS` to a generated makefile (once); return whether it changed."""
    text = makefile.read_text()
    if text.endswith(GLUE_FLAGS):
        return False
    makefile.write_text(text + ("" if text.endswith("\n") else "\n") + GLUE_FLAGS)
    return True


def _mtime(path: Path):
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


@contextmanager
def _dir_lock(directory: Path):
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".biosnn.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def reads_duration_at_run_time(backend, spec: m.NetworkSpec) -> bool:
    """Whether ``spec``'s binary on ``backend`` reads its run's duration at run time
    (:func:`duration_from_environment`): ``cpp_standalone``, a spec with one run (no protocol)."""
    return backend.device_name == "cpp_standalone" and not spec.protocol


def build_directory(backend, spec: m.NetworkSpec, duration_s: float | None = None) -> Path:
    """The build directory of ``spec`` on a standalone ``backend`` (simulating ``duration_s`` seconds, default the
    spec's): ``<cache>/<name>-<device>-<structure key>``, the duration left out where it is read at run time."""
    if reads_duration_at_run_time(backend, spec):
        duration_s = None
    elif duration_s is None:
        duration_s = spec.duration_seconds()
    root = backend.cache_dir or cache_root()
    return root / f"{spec.name}-{backend.device_name}-{structure_key(spec, duration_s, backend.options())}"


class CppStandaloneBackend:
    """Brian2's ``cpp_standalone`` device.

    Parameters
    ----------
    threads : int
        OpenMP threads (0: none, Brian2's default).
    float32 : bool
        Single precision state variables.
    cache_dir : str or Path, optional
        Where compiled builds are kept (default :func:`cache_root`).
    static_projections : bool
        Propagate static projections (no plasticity, no delay: all of a
        converted network's synapses) with biosnn's own template
        (:mod:`biosnn.backends.brian2_static`: CSR target lists, 8-12 bytes per
        synapse, no spike queue, OpenMP) instead of Brian2's ``Synapses``
        (default ``True``; ``False`` uses Brian2's stock templates only).
    profile : bool
        Time every code object (Brian2's ``profile=True``); each run's
        recording then carries ``meta["profile"]``, a JSON object
        ``{code object: seconds}`` (see :func:`profile_of`).
    unity_units : int
        Compile the code objects in this many translation units (default 8;
        0: one file per code object, as Brian2 writes them).
    fused_steps : bool
        Run a neuron group's operations, threshold and reset in one vectorised
        loop where that cannot change a result
        (:func:`~biosnn.backends.brian2_fused.fuse_neuron_steps`; default
        ``True``, only without OpenMP threads; ``False``: Brian2's separate
        code objects).
    """

    device_name = "cpp_standalone"
    name = "cpp_standalone"

    def __init__(self, threads: int = 0, float32: bool = False, cache_dir=None, static_projections: bool = True,
                 profile: bool = False, unity_units: int = DEFAULT_UNITY_UNITS, fused_steps: bool = True):
        if not isinstance(threads, int) or threads < 0:
            raise BackendError(f"threads must be a non-negative integer, got {threads!r}")
        if not isinstance(static_projections, bool):
            raise BackendError(f"static_projections must be True or False, got {static_projections!r}")
        if isinstance(unity_units, bool) or not isinstance(unity_units, int) or unity_units < 0:
            raise BackendError(f"unity_units must be a non-negative integer, got {unity_units!r}")
        if not isinstance(fused_steps, bool):
            raise BackendError(f"fused_steps must be True or False, got {fused_steps!r}")
        self.unity_units = unity_units
        self.fused_steps = fused_steps
        self.static_projections = static_projections
        self.profile = bool(profile)
        self.threads = threads
        self.float32 = float32
        self.cache_dir = Path(cache_dir) if cache_dir else None

    # hooks for subclasses (CUDA) -------------------------------------------
    def options(self) -> dict:
        return {"threads": self.threads, "float32": self.float32, "device": self.device_name,
                "static_projections": self.static_projections, "profile": self.profile,
                "unity_units": self.unity_units, "glue": GLUE_FLAGS, "fused_steps": self.fuses_steps()}

    def fuses_steps(self) -> bool:
        """Whether builds fuse neuron steps (:mod:`~biosnn.backends.brian2_fused`): ``fused_steps``, on
        ``cpp_standalone`` without OpenMP threads."""
        return self.fused_steps and self.threads == 0 and self.device_name == "cpp_standalone"

    @contextmanager
    def prefs(self):
        """Brian2 preferences and fixed templates (:data:`~biosnn.backends.brian2_templates.SAME_TIME_FIXES`),
        clocks in the order of their names (:func:`~biosnn.backends.brian2_templates.sorted_clocks`)
        for building and running, restored afterwards."""
        from brian2.devices.cpp_standalone.codeobject import CPPStandaloneCodeObject
        with brian2_prefs(devices__cpp_standalone__openmp_threads=self.threads,
                          core__default_float_dtype=np.float32 if self.float32 else np.float64), \
                templater_scope(CPPStandaloneCodeObject,
                                SAME_TIME_FIXES + (BRANCHLESS_THRESHOLD, *IDLE_LOOPS, REPORT_PER_STEP)), \
                sorted_clocks():
            yield

    def activate_device(self):
        from brian2.devices.device import all_devices, set_device
        device = all_devices[self.device_name]
        device.reinit()
        set_device(device, build_on_run=False)
        return device

    def build_project(self, device, directory: Path, runtime_duration: bool = False):
        """Generate the project, group its code objects in unity units, compile what changed with make.

        Parameters
        ----------
        device : brian2.devices.cpp_standalone.CPPStandaloneDevice
            The active device, after the network's ``run`` generated its code objects.
        directory : Path
            The project directory.
        runtime_duration : bool
            ``main.cpp`` reads the run's duration at run time (:func:`duration_from_environment`).
        """
        from brian2.codegen.cpp_prefs import get_compiler_and_args
        makefile = Path(directory) / "makefile"
        main_cpp = Path(directory) / "main.cpp"
        edited = [(makefile, glue_flags)]
        if runtime_duration:
            edited.append((main_cpp, duration_from_environment))
        before = {path: (path.read_text(), path.stat().st_mtime_ns) for path, _ in edited if path.is_file()}
        device.build(directory=str(directory), compile=False, run=False, with_output=False)
        write_unity_sources(directory, self.unity_units, ext=".cpp")
        for path, edit in edited:
            edit(path)
            # Brian2 rewrites a file whose text differs from its own (biosnn's edits); the same edited text
            # as before gets its time stamp back, so that make keeps the objects
            if path in before and path.read_text() == before[path][0]:
                os.utime(path, ns=(before[path][1], before[path][1]))
        device.compile_source(str(directory), get_compiler_and_args()[0], debug=False, clean=False)

    def build(self, spec: m.NetworkSpec, duration: float | None = None) -> "StandaloneSimulation":
        """Generate and compile ``spec`` (simulating ``duration`` seconds, default the spec's)."""
        return StandaloneSimulation(self, spec, duration)


class StandaloneSimulation:
    """A compiled standalone network. :meth:`run` re-runs the binary with new values."""

    def __init__(self, backend: CppStandaloneBackend, spec: m.NetworkSpec, duration: float | None = None):
        self.backend = backend
        self.spec = spec
        self.duration_s = positive_duration(spec.duration_seconds() if duration is None else duration)
        self.runtime_duration = reads_duration_at_run_time(backend, spec)
        self.directory = build_directory(backend, spec, self.duration_s)
        self.objects = None
        self.device = None
        self.build_time_s = 0.0
        self.compiled = False
        self._load()

    # -- loading -----------------------------------------------------------
    def _release(self):
        """Drop the Brian2 objects (the next :meth:`_load` collects them, once, before building new ones)."""
        self.objects = None

    def _load(self):
        from brian2 import second
        from brian2.devices.device import set_device
        with _LOCK:
            previous = _ACTIVE.get(self.backend.device_name)
            if previous is not None and previous is not self:
                previous._release()
            t0 = time.perf_counter()
            compiled = False
            try:
                with self.backend.prefs():
                    self.objects = None
                    device = self.backend.activate_device()
                    if self.runtime_duration:
                        device.run_environment_variables[DURATION_VARIABLE] = repr(self.duration_s)
                    gc.collect()  # objects of an earlier build would make Brian2 rename ours (lif_1): recompiles
                    objs = build_objects(self.spec, static=self.backend.static_projections)
                    #: what :func:`~biosnn.backends.brian2_fused.fuse_neuron_steps` fused (``[]``: nothing)
                    self.fused_steps = fuse_neuron_steps(objs.network) if self.backend.fuses_steps() else []
                    with brian2_errors(f"generate code for '{self.spec.name}'"):
                        run_network(objs, self.spec, self.duration_s, report=STANDALONE_REPORT_CODE,
                                    report_period=1 * second, profile=self.backend.profile)
                    with _dir_lock(self.directory):
                        if not binary_is_trusted(self.directory):
                            untrust_build(self.directory)  # a binary biosnn did not build: compile afresh
                        before = _mtime(self.directory / "main")
                        try:
                            if self.runtime_duration:
                                self.backend.build_project(device, self.directory, runtime_duration=True)
                            else:
                                self.backend.build_project(device, self.directory)
                            if before is None or _mtime(self.directory / "main") != before:
                                compiled = True  # make wrote a new binary
                                record_binary(self.directory)
                            write_static_files(objs.network.objects, self.directory)
                        except (RuntimeError, OSError) as exc:
                            raise BackendError(
                                f"compiling '{self.spec.name}' with {self.backend.device_name} failed: {exc} "
                                f"(project directory: {self.directory})") from exc
            finally:
                set_device("runtime")
            self.objects = objs
            self.device = device
            self.build_time_s = time.perf_counter() - t0
            self.compiled = compiled
            _ACTIVE[self.backend.device_name] = self

    # -- running -----------------------------------------------------------
    def _same_table(self, key: str, value) -> ArrayValue | None:
        """The values of a timed-array override with the compiled table's shape and unit, else ``None``.

        Such values (numeric: :class:`~biosnn.spec.values.ArrayValue` checks
        them) cannot change whether the spec is valid, since the network's
        checks read a table's shape and unit only; so the whole spec is not
        checked again (:func:`~biosnn.backends.base.apply_overrides` does,
        0.15 s per batch for a converted LeNet-5).
        """
        old = next((t.values for t in self.spec.timed_arrays if t.name == key), None)
        if old is None:
            old = next((i.values for i in self.spec.inputs if isinstance(i, m.CurrentInput) and i.name == key), None)
        if old is None:
            return None
        values = _as_array_value(value, old, key)
        return values if values.shape == old.shape and values.unit == old.unit else None

    def _run_args(self, overrides) -> dict:
        if not overrides:
            return {}
        tables = {key: self._same_table(key, value) for key, value in overrides.items()}
        new = apply_overrides(self.spec, {k: v for k, v in overrides.items() if tables[k] is None})
        args = {}
        for key in overrides:
            part, var = split_key(self.spec, key)
            if var is None:
                ta = self.objects.timed_arrays[part]
                values = tables[key]
                if values is None:
                    values = next((t.values for t in new.timed_arrays if t.name == part), None)
                if values is None:
                    values = next(i.values for i in new.inputs if i.name == part)
                args[ta] = values.quantity()
            elif part in self.objects.groups:
                value = new.population(part).initial[var]
                args[getattr(self.objects.groups[part], var)] = value.quantity()
            else:
                proj = new.projection(part)
                value = proj.weights if var == proj.weight_var else proj.delay if var == "delay" \
                    else proj.initial[var]
                n = self.objects.n_synapses[part]
                if value.shape != (n,):
                    raise BackendError(f"override '{key}' has shape {value.shape}, the projection has "
                                       f"{n} synapses")
                args[getattr(self.objects.synapses[part], var)] = value.quantity()
        return args

    def run(self, duration: float | None = None, overrides=None, progress: bool = True, final_state=None):
        """Run the compiled binary (see :meth:`biosnn.backends.base.Simulation.run`)."""
        final_keys = check_final_state(self.spec, final_state)
        if duration is not None and abs(float(duration) - self.duration_s) > 1e-12:
            raise BackendError(f"this build simulates {self.duration_s} s; build again with "
                               f"duration={duration} to simulate another duration")
        with _LOCK:
            if _ACTIVE.get(self.backend.device_name) is not self or self.objects is None:
                self._load()
            run_args = self._run_args(overrides)
            results = f"results_{uuid.uuid4().hex[:12]}"
            bar = ProgressBar(progress, f"{self.spec.name} ({self.backend.name})", self.duration_s)
            finished = threading.Event()
            results_dir = self.directory / results
            watcher = None
            if bar.bar is not None:  # no bar (progress=False, BIOSNN_PROGRESS=0): nothing to follow
                watcher = threading.Thread(target=tail_progress, args=(results_dir / "stdout.txt", bar, finished),
                                           daemon=True)
                watcher.start()
            t0 = time.perf_counter()
            try:
                with self.backend.prefs(), brian2_errors(f"run '{self.spec.name}'"):
                    check_binary(self.directory)
                    try:
                        self.device.run(directory=str(self.directory), results_directory=results,
                                        with_output=False, run_args=run_args)
                    except RuntimeError as exc:
                        out = results_dir / "stdout.txt"
                        tail = out.read_text()[-2000:] if out.exists() else ""
                        shutil.rmtree(results_dir, ignore_errors=True)
                        raise BackendError(f"the compiled '{self.spec.name}' failed: {exc}\n{tail}") from exc
                wall = time.perf_counter() - t0
            finally:
                finished.set()
                if watcher is not None:
                    watcher.join()
                bar.close()
            return self.recording(results_dir, wall, final_keys)

    def recording(self, results_dir: Path, wall_s: float, final_keys=(), remove=None):
        """Read a finished run's results directory into a Recording, then delete the directory.

        The device must hold this simulation's objects (call under the module lock).
        ``remove``: a callable that deletes the directory instead (the parallel
        runs delete in a thread, while the main thread waits for binaries).
        """
        try:
            meta = {"backend": self.backend.name, "spec": self.spec.name,
                    "build_time_s": f"{self.build_time_s:.3f}", "wall_time_s": f"{wall_s:.3f}",
                    "compiled": str(self.compiled), "build_dir": str(self.directory)}
            if self.backend.profile:
                meta["profile"] = _read_profile(results_dir / "profiling_info.txt")
            return collect_recording(self.objects, self.spec, self.duration_s, meta, final_keys)
        finally:
            if remove is None:
                shutil.rmtree(results_dir, ignore_errors=True)
            else:
                remove(results_dir)
