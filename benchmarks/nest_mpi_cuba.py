"""CUBA on NEST with MPI: ``mpirun -np 2`` gives the one-process spike trains, gathered into one Recording.

Runs the CUBA spec (``network_specs/cuba.yaml``: 4000 LIF neurons, 2 % connectivity, NESTML
translation of its neuron) with the same seed in three configurations, each in its own process(es):

* 1 process x 1 thread;
* 1 process x 2 threads (``local_num_threads=2``);
* ``mpirun -np 2``, 1 thread per rank.

NEST guarantees identical results for the same number of *virtual processes* (ranks x threads),
so the MPI run is compared with 1 process x 2 threads (2 virtual processes each); whether it also
equals 1 process x 1 thread is reported (it does when NEST draws no random numbers, as in CUBA,
whose random initial potentials and connectivity come from biosnn's numpy generator).  In the MPI
run every rank gathers all ranks' events (:mod:`biosnn.backends.nest_mpi`) and returns the whole
Recording; the worker checks that all ranks' recordings are identical.

Needs an MPI-enabled NEST (``scripts/build_nest_mpi.sh``; the PyPI wheel has no MPI) on
``PYTHONPATH``, mpi4py built against the same MPI, and ``mpirun``.  Every configuration uses that
NEST.  Prints wall time (simulation only, and the whole process) and synaptic events/s per
configuration and records its section through ``benchmarks/report.py``, which re-renders ``BENCHMARKS.md``
(``--no-record`` to leave it alone):

    PYTHONPATH=/opt/nest-mpi/lib/python3.12/site-packages BIOSNN_CACHE_DIR=/tmp/biosnn_cache_mpi \\
        nice -n 10 .venv/bin/python benchmarks/nest_mpi_cuba.py

The MPI configuration is launched as (root needs ``--allow-run-as-root``)::

    mpirun [--allow-run-as-root] --oversubscribe --bind-to none -np 2 \\
        .venv/bin/python benchmarks/nest_mpi_cuba.py --worker 1 OUT.npz
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_SPEC = ROOT / "network_specs" / "cuba.yaml"


def _digest(rec) -> str:
    """Hash of a recording's spike trains and state traces (meta, with its timings, left out)."""
    h = hashlib.sha256()
    for name in sorted(rec.spikes):
        tr = rec.spikes[name]
        h.update(name.encode() + tr.times.tobytes() + tr.indices.tobytes())
    for pop in sorted(rec.states):
        for var in sorted(rec.states[pop]):
            st = rec.states[pop][var]
            h.update(f"{pop}.{var}".encode() + st.times.tobytes() + st.values.tobytes())
    return h.hexdigest()


def synaptic_events(spec, rec) -> float:
    """Sum over projections of (spikes of the source) x (synapses) / (source size)."""
    from biosnn.spec.expand import expand_projection
    events = 0.0
    for proj in spec.projections:
        n_syn = len(expand_projection(spec, proj).i)
        events += len(rec.spikes[proj.source].times) * n_syn / spec.node(proj.source).size
    return events


def worker(spec_path: str, threads: int, duration: float | None, out: str) -> dict | None:
    """Build and run the spec on NEST (every rank); rank 0 saves the recording and returns the figures."""
    os.environ.setdefault("PYNEST_QUIET", "1")
    t0 = time.perf_counter()
    from biosnn import get_backend
    from biosnn.backends.nest_mpi import communicator
    from biosnn.spec import load_spec
    from biosnn.spec import model as m
    import nest
    spec = load_spec(spec_path)
    recorded = {mon.population for mon in spec.monitors if isinstance(mon, m.SpikeMonitor)}
    missing = [p.name for p in spec.populations if p.name not in recorded]
    if missing:
        raise SystemExit(f"every population needs a spike monitor for the comparison; {missing} have none")
    sim = get_backend("nest", local_num_threads=threads).build(spec)
    rec = sim.run(duration=duration, progress=False)
    total = time.perf_counter() - t0
    comm = communicator(nest)
    digests = comm.allgather(_digest(rec))
    if len(set(digests)) != 1:
        raise SystemExit(f"the ranks returned different recordings: {digests}")
    if comm.rank != 0:
        return None
    rec.save(out)
    run_s = float(rec.meta["wall_time_s"])
    events = synaptic_events(spec, rec)
    return {"processes": comm.size, "threads": threads, "virtual_processes": comm.size * threads,
            "have_mpi": bool(nest.build_info.get("have_mpi")), "nest": str(Path(nest.__file__).parent),
            "duration_s": rec.duration, "run_s": run_s, "build_s": float(rec.meta["build_time_s"]),
            "process_s": total, "events": events, "events_per_s": events / run_s,
            "spikes": {k: int(len(v.times)) for k, v in rec.spikes.items()},
            "rates_hz": {k: len(v.times) / v.size / rec.duration for k, v in rec.spikes.items()},
            "ranks_identical": True, "digest": digests[0][:16]}


def mpirun_prefix(n: int) -> list[str]:
    """``mpirun`` arguments for ``n`` local ranks (root needs Open MPI's explicit permission)."""
    exe = shutil.which("mpirun")
    if exe is None:
        raise SystemExit("mpirun not found: apt-get install openmpi-bin (scripts/build_nest_mpi.sh does)")
    root = ["--allow-run-as-root"] if os.geteuid() == 0 else []
    return [exe, *root, "--oversubscribe", "--bind-to", "none", "-np", str(n)]


def run_configuration(label, launch, spec, threads, duration, out) -> dict:
    cmd = [*launch, sys.executable, __file__, "--worker", str(threads), str(out), "--spec", str(spec)]
    if duration is not None:
        cmd += ["--duration", str(duration)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY="PASSIVE")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{label} failed ({shlex.join(cmd)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(lines[-1])
    result.update(label=label, command=shlex.join(cmd), launcher_wall_s=wall)
    return result


def same_spikes(a, b) -> bool:
    return set(a.spikes) == set(b.spikes) and all(
        np.array_equal(a.spikes[k].times, b.spikes[k].times) and np.array_equal(a.spikes[k].indices,
                                                                              b.spikes[k].indices)
        for k in a.spikes)


def check_mpi_nest():
    probe = subprocess.run([sys.executable, "-c", "import nest, json; print(json.dumps("
                            "[bool(nest.build_info.get('have_mpi')), nest.__file__]))"],
                           capture_output=True, text=True, env=dict(os.environ, PYNEST_QUIET="1"))
    lines = [ln for ln in probe.stdout.splitlines() if ln.startswith("[")]
    if probe.returncode != 0 or not lines:
        raise SystemExit(f"cannot import nest:\n{probe.stderr[-2000:]}")
    have_mpi, path = json.loads(lines[-1])
    path = str(Path(path).parent)
    if not have_mpi:
        raise SystemExit(f"the NEST at {path} has no MPI (the PyPI wheel has none): build one with "
                         "scripts/build_nest_mpi.sh and put its site-packages on PYTHONPATH")
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", nargs=2, metavar=("THREADS", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--spec", default=str(DEFAULT_SPEC), help="network spec (default: CUBA)")
    p.add_argument("--duration", type=float, default=None, help="biological seconds (default: the spec's)")
    p.add_argument("--np", type=int, default=2, help="MPI ranks of the MPI configuration")
    p.add_argument("--no-record", action="store_true", help="do not record the section (BENCHMARKS.md)")
    p.add_argument("--note", default="", help="a sentence to add to the BENCHMARKS.md section")
    args = p.parse_args(argv)
    if args.worker:
        result = worker(args.spec, int(args.worker[0]), args.duration, args.worker[1])
        if result is not None:
            print(json.dumps(result), flush=True)
        return 0

    from biosnn.recording import Recording
    nest_path, load_start = check_mpi_nest(), os.getloadavg()[0]
    configs = [("1 process x 1 thread", [], 1),
               (f"1 process x {args.np} threads", [], args.np),  # the module is compiled once, before mpirun
               (f"mpirun -np {args.np} x 1 thread", mpirun_prefix(args.np), 1)]
    results, recs = [], []
    with tempfile.TemporaryDirectory(prefix="nest_mpi_cuba_") as tmp:
        for k, (label, launch, threads) in enumerate(configs):
            out = Path(tmp) / f"rec{k}.npz"
            r = run_configuration(label, launch, args.spec, threads, args.duration, out)
            print(json.dumps(r), flush=True)
            results.append(r)
            recs.append(Recording.load(out))
    one, threaded, mpi = recs
    equal_vp = same_spikes(mpi, threaded)
    equal_single = same_spikes(mpi, one)
    rows = ["| configuration | virtual processes | bio time (s) | spikes (exc, inh) | run (s) | "
            "process wall (s) | synaptic events/s (run) | recording digest |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        spikes = ", ".join(str(v) for v in r["spikes"].values())
        rows.append(f"| {r['label']} | {r['virtual_processes']} | {r['duration_s']:g} | {spikes} | "
                    f"{r['run_s']:.2f} | {r['launcher_wall_s']:.1f} | {r['events_per_s']:.3g} | {r['digest']} |")
    verdict = (f"merged spike trains of `mpirun -np {args.np}` (1 thread each) "
               f"{'EQUAL' if equal_vp else 'DIFFER FROM'} those of 1 process x {args.np} threads (same virtual "
               f"processes, same seed); versus 1 process x 1 thread they "
               f"{'are also equal' if equal_single else 'differ'}; all ranks returned identical recordings")
    text = "\n".join(rows) + "\n\n" + verdict + "\n"
    print(text)
    if not args.no_record:
        given = list(argv if argv is not None else sys.argv[1:])
        for flag in ("--note",):  # the note is in the text
            while flag in given:
                k = given.index(flag)
                del given[k:k + 2]
        cmd = shlex.join(["python", "benchmarks/nest_mpi_cuba.py", *given])
        today = datetime.date.today().isoformat()
        section = (f"## NEST with MPI: CUBA on {args.np} ranks vs one process ({today})\n\n"
                   f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared, loaded); "
                   f"command: `{cmd}` with an MPI-enabled NEST ({nest_path}, built by "
                   f"`scripts/build_nest_mpi.sh`) on PYTHONPATH; spec `{Path(args.spec).name}`, seed of the spec. "
                   f"MPI run: `{shlex.join(mpirun_prefix(args.np))} python benchmarks/nest_mpi_cuba.py --worker 1 "
                   "OUT.npz`. run = NEST simulation only; process wall = the whole process (imports, NESTML "
                   "module load, network construction, gathering, saving). Events: spikes x synapses per "
                   "source." + (f" {args.note}" if args.note else "") + "\n\n" + text)
        import report  # benchmarks/report.py
        path = report.record("nest_mpi_cuba", section, command=cmd, script="benchmarks/nest_mpi_cuba.py",
                             data={"results": results, "equal_virtual_processes": equal_vp,
                                   "equal_single_process": equal_single}, load=(load_start, os.getloadavg()[0]))
        print(f"recorded {path} and re-rendered BENCHMARKS.md")
    return 0 if equal_vp else 1


if __name__ == "__main__":
    raise SystemExit(main())
