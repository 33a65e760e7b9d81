"""Brian2 runtime mode (numpy or Cython code generation)."""

from __future__ import annotations

import time
from contextlib import contextmanager

from biosnn.backends.brian2_network import (brian2_errors, build_objects, collect_recording, run_network,
                                            run_request)
from biosnn.backends.progress import ProgressBar
from biosnn.errors import BackendError
from biosnn.spec import model as m

__all__ = ["RuntimeBackend", "RuntimeSimulation", "brian2_prefs"]


@contextmanager
def brian2_prefs(**values):
    """Set Brian2 preferences (dotted names with '__' for '.') for a block, then restore them."""
    from brian2 import prefs
    names = {k.replace("__", "."): v for k, v in values.items()}
    old = {k: prefs[k] for k in names}
    try:
        for k, v in names.items():
            prefs[k] = v
        yield
    finally:
        for k, v in old.items():
            prefs[k] = v


@contextmanager
def runtime_device():
    """Make Brian2's runtime device the active one for a block (standalone builds may have changed it)."""
    from brian2.devices.device import get_device, set_device
    previous = get_device()
    if previous.__class__.__name__ != "RuntimeDevice":
        set_device("runtime")
    try:
        yield
    finally:
        if previous.__class__.__name__ != "RuntimeDevice":
            from brian2.devices.device import active_device  # noqa: F401
            set_device(previous, build_on_run=False)


class RuntimeBackend:
    """Brian2 runtime mode.

    Parameters
    ----------
    target : {"numpy", "cython"}
        Brian2's code generation target.
    float32 : bool
        Use single precision (``prefs.core.default_float_dtype``).
    """

    def __init__(self, target: str = "numpy", float32: bool = False):
        if target not in ("numpy", "cython"):
            raise BackendError(f"unknown runtime target '{target}'; use 'numpy' or 'cython'")
        self.target = target
        self.float32 = float32
        self.name = "runtime" if target == "numpy" else "cython"

    def _prefs(self):
        import numpy as np
        return brian2_prefs(codegen__target=self.target,
                            core__default_float_dtype=np.float32 if self.float32 else np.float64)

    def build(self, spec: m.NetworkSpec) -> "RuntimeSimulation":
        """Create the Brian2 objects (runtime mode compiles lazily, at the first run)."""
        return RuntimeSimulation(self, spec)


class RuntimeSimulation:
    """A spec built for Brian2's runtime mode.

    Each :meth:`run` starts from the spec's initial state (the objects are
    built again with the run's overrides applied to the spec; numpy code is
    generated quickly and Cython code is cached by Brian2).
    """

    def __init__(self, backend: RuntimeBackend, spec: m.NetworkSpec):
        self.backend = backend
        self.spec = spec
        self.build_time_s = 0.0

    def run(self, duration: float | None = None, overrides=None, progress: bool = True, final_state=None):
        """Run from the spec's initial state (see :meth:`biosnn.backends.base.Simulation.run`)."""
        from brian2 import second
        spec, final_keys, duration_s = run_request(self.spec, duration, overrides, final_state)
        bar = ProgressBar(progress, f"{spec.name} ({self.backend.name})", duration_s)
        t0 = time.perf_counter()
        with runtime_device(), self.backend._prefs():
            objs = build_objects(spec)
            t1 = time.perf_counter()
            try:
                with brian2_errors(f"run '{spec.name}'"):
                    run_network(objs, spec, duration_s, report=bar.brian2_report, report_period=0.5 * second)
            finally:
                bar.close()
            t2 = time.perf_counter()
            rec = collect_recording(objs, spec, duration_s, {
                "backend": self.backend.name, "spec": spec.name, "build_time_s": f"{t1 - t0:.3f}",
                "wall_time_s": f"{t2 - t1:.3f}"}, final_keys)
        return rec
