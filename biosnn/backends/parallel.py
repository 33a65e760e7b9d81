"""Many runs of one compiled standalone binary at once: a process per run, results in run order.

A converted network simulates a data set in batches of sample windows; every
batch is a run of the same compiled ``cpp_standalone`` binary with other inputs
(``run_args``).  :func:`run_batches` starts up to ``workers`` such runs as
separate processes, each with its own results directory and input files, and
yields their recordings in the order of the batches, so the merged results do
not depend on the number of workers.

Brian2's ``device.run`` runs one process at a time (it changes the working
directory and keeps one results directory on the device), so the processes
are started here, with the command line ``device.run`` would give them:
``--results_dir <dir>`` plus ``<variable>=<value or file>`` per run argument,
the files written into the project's ``static_arrays`` the way Brian2 writes
them.  Reading a finished run goes through the device again (one at a time).

Other backends (runtime, cuda_standalone: one GPU) run the batches one after
the other.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from biosnn.errors import BackendError

__all__ = ["available_cores", "resolve_workers", "run_batches"]


def available_cores() -> int:
    """CPU cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` where it is missing)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers, threads: int = 0) -> int:
    """Parallel processes for ``workers`` (``None``: every core, divided by the OpenMP ``threads`` per process).

    >>> resolve_workers(3)
    3
    >>> resolve_workers(None) == max(1, available_cores())
    True
    """
    if workers is None:
        return max(1, available_cores() // max(1, int(threads or 0)))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise BackendError(f"workers must be a positive integer (processes running batches at once), "
                           f"got {workers!r}")
    return workers


def _parallel_capable(sim) -> bool:
    from biosnn.backends.brian2_standalone import StandaloneSimulation
    return type(sim) is StandaloneSimulation and sim.backend.device_name == "cpp_standalone"


def run_batches(sim, overrides: Iterable[Mapping], workers: int = 1) -> Iterator:
    """Run ``sim`` once per mapping of ``overrides``; yield the recordings in that order.

    Parameters
    ----------
    sim : Simulation
        A built simulation.  ``cpp_standalone`` simulations run up to
        ``workers`` processes of their binary at once; others (and
        ``workers=1``) run one batch after the other with ``sim.run``.
    overrides : iterable of mapping
        The overrides of each run (read lazily: a batch's inputs are made when
        a process is free for it).
    workers : int
        Processes at once (see :func:`resolve_workers`).

    Yields
    ------
    Recording
        One per run, in the order of ``overrides``; ``meta["wall_time_s"]`` is
        that process's own wall time.

    Raises
    ------
    BackendError
        When a run fails (its batch index and output tail named); the other
        processes are stopped.
    """
    workers = resolve_workers(workers)
    if workers == 1 or not _parallel_capable(sim):
        for ov in overrides:
            yield sim.run(overrides=ov, progress=False)
        return
    yield from _ProcessPool(sim, workers).run(overrides)


class _ProcessPool:
    """Processes of one compiled ``cpp_standalone`` binary (see :func:`run_batches`)."""

    def __init__(self, sim, workers: int):
        self.sim = sim
        self.workers = workers
        self.file_users: dict[Path, int] = {}   # input files this pool wrote -> runs still reading them

    def run(self, overrides: Iterable[Mapping]) -> Iterator:
        from biosnn.backends.brian2_standalone import _ACTIVE, _LOCK
        sim = self.sim
        source = iter(enumerate(overrides))
        running: dict[int, tuple] = {}   # batch -> (process, results dir, files, names, start)
        finished: dict[int, tuple] = {}  # batch -> (results dir, files, names, wall)
        exhausted, next_out = False, 0
        with _LOCK:
            if _ACTIVE.get(sim.backend.device_name) is not sim or sim.objects is None:
                sim._load()
            # results directories (86 files each for a converted LeNet-5: 6-7 ms of unlinking per run) are deleted
            # by one thread while the main thread waits for binaries, all of them before this returns
            self.deleter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="biosnn-delete")
            try:
                while True:
                    while not exhausted and len(running) + len(finished) < self.workers:
                        item = next(source, None)
                        if item is None:
                            exhausted = True
                        else:
                            running[item[0]] = self._start(item[1])
                    if next_out in finished:
                        results, files, names, wall = finished.pop(next_out)
                        rec = self._collect(results, names, wall)
                        self._release(files)
                        next_out += 1
                        yield rec
                        continue
                    if not running:
                        if exhausted:
                            return
                        continue
                    done = [b for b, r in running.items() if r[0].poll() is not None]
                    if not done:
                        time.sleep(0.002)
                        continue
                    for b in done:
                        proc, results, files, names, t0 = running.pop(b)
                        wall = time.perf_counter() - t0
                        if proc.returncode != 0:
                            out = results / "stdout.txt"
                            tail = out.read_text()[-2000:] if out.exists() else ""
                            raise BackendError(f"the compiled '{sim.spec.name}' failed on batch {b} "
                                               f"(exit status {proc.returncode}; project directory "
                                               f"{sim.directory}):\n{tail}")
                        finished[b] = (results, files, names, wall)
            finally:
                import shutil
                for proc, results, files, _, _ in running.values():
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                    shutil.rmtree(results, ignore_errors=True)
                    self._release(files)
                for results, files, _, _ in finished.values():
                    shutil.rmtree(results, ignore_errors=True)
                    self._release(files)
                self.deleter.shutdown(wait=True)

    # -- one process ---------------------------------------------------------
    def _arguments(self, overrides: Mapping) -> tuple[list[str], list[Path], set[str]]:
        """The binary's run arguments for ``overrides``, as ``device.run`` writes them.

        Returns the arguments, the input files they name, and the
        ``owner.variable`` names they set.
        """
        from brian2.input.timedarray import TimedArray
        from brian2.utils.filelock import FileLock
        sim = self.sim
        device = sim.device
        args, files, names = [], [], set()
        for key, value in sim._run_args(overrides).items():
            if isinstance(key, TimedArray):
                name, text, value_name, values = device._prepare_timed_array_run_arg(key, value)
            else:
                name, text, value_name, values = device._prepare_variableview_run_arg(key, value)
            if value_name:
                path = sim.directory / "static_arrays" / value_name
                with FileLock(str(path) + ".lock"):
                    if not path.exists():
                        values.tofile(path)
                        self.file_users[path] = 0
                if path in self.file_users:
                    self.file_users[path] += 1
                    files.append(path)
            args.append(f"{name}={text}")
            names.add(name)
        return args, files, names

    def _start(self, overrides: Mapping) -> tuple:
        from brian2 import prefs
        sim = self.sim
        args, files, names = self._arguments(overrides)
        results = sim.directory / f"results_{uuid.uuid4().hex[:12]}"
        results.mkdir(parents=True)
        cmd = prefs.devices.cpp_standalone.run_cmd_unix
        cmd = [cmd] if isinstance(cmd, str) else list(cmd)
        env = dict(os.environ)
        env.update(prefs["devices.cpp_standalone.run_environment_variables"])
        env.update(sim.device.run_environment_variables)
        with open(results / "stdout.txt", "w") as out:
            proc = subprocess.Popen(cmd + ["--results_dir", os.path.join(str(results.resolve()), "")] + args,
                                    cwd=sim.directory, stdout=out, stderr=subprocess.STDOUT, env=env)
        return proc, results, files, names, time.perf_counter()

    def _collect(self, results: Path, names: set[str], wall: float):
        """Point the device at a finished run's results and read them (``device.run`` does the same)."""
        sim = self.sim
        device = sim.device
        device.results_dir = os.path.join(str(results.resolve()), "")
        device.has_been_run = True
        for var in list(device.array_cache):
            try:
                if hasattr(var.owner, "name") and f"{var.owner.name}.{var.name}" in names:
                    device.array_cache[var] = None
            except ReferenceError:
                pass
        for clock in device.clocks:
            device.array_cache[clock.variables["t"]] = None
        from brian2.groups.group import Group
        checked = set()
        for var in device.arrays:
            owner = var.owner
            try:
                if isinstance(owner, Group) and owner.name not in checked:
                    owner._check_for_invalid_states()
                    checked.add(owner.name)
            except ReferenceError:
                pass
        return sim.recording(results, wall, remove=self._remove)

    def _remove(self, results: Path):
        import shutil
        self.deleter.submit(shutil.rmtree, results, ignore_errors=True)

    def _release(self, files: list[Path]):
        """Delete input files this pool wrote once no run reads them any more."""
        for path in files:
            self.file_users[path] -= 1
            if self.file_users[path] == 0:
                del self.file_users[path]
                path.unlink(missing_ok=True)  # now: a later run may write the same file
