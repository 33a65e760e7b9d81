"""NEST vs Brian2 cpp_standalone on the same biosnn specs: wall time, synaptic events/s, memory.

Networks:

* CUBA (``network_specs/cuba.yaml``): 4000 LIF neurons, 2 % connectivity (320k synapses).
  Its neuron model has no built-in NEST counterpart, so NEST runs its NESTML translation
  (compiled once, cached under ``$BIOSNN_CACHE_DIR/nestml``).
* Brunel (2000, model A, synchronous irregular regime: g = 5, eta = 2): 10,000 LIF neurons
  (8000 exc, 2000 inh), 10 % connectivity (10 M recurrent synapses), J = 0.1 mV, delay 1.5 ms,
  external drive eta * nu_thr * C_E per neuron from 10 Poisson sources of 2 kHz each. The library
  ``lif`` maps onto ``iaf_psc_delta``.

Every (network, backend) pair runs in its own process, so that the peak resident memory
(``ru_maxrss`` of the process and its children, i.e. Brian2's standalone binary) is its own.
Times: ``build`` = spec -> simulator objects (Brian2: code generation + compilation, cached
between runs of this script; NEST: connection building and NESTML compilation if not cached),
``run`` = the simulation of ``--duration`` seconds of biological time. Synaptic events =
sum over projections of (spikes of the source) x (synapses of the projection) / (source size).

Usage (records its section through benchmarks/report.py, which re-renders BENCHMARKS.md; ``--no-record``
to leave it alone):

    BIOSNN_CACHE_DIR=/tmp/biosnn_cache_bench nice -n 10 .venv/bin/python benchmarks/nest_vs_brian2.py
    .venv/bin/python benchmarks/nest_vs_brian2.py --networks cuba --duration-cuba 0.2 --no-record
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def brunel_spec(n: int = 10000, p: float = 0.1, g: float = 5.0, eta: float = 2.0, seed: int = 1):
    """Brunel (2000) model A as a biosnn spec (``lif`` = ``iaf_psc_delta`` on NEST)."""
    import numpy as np
    from biosnn.spec import model as m
    from biosnn.spec.values import ArrayValue
    n_e, n_i = int(0.8 * n), n - int(0.8 * n)
    j_mv, tau_ms, theta_mv = 0.1, 20.0, 20.0
    c_e = int(p * n_e)
    # external drive per neuron eta * nu_thr * C_E (20 kHz), split over K Poisson sources per neuron so
    # that each source fires with probability < 1 per step (Brian2's PoissonGroup fires at most once)
    k = 10
    nu_ext = eta * theta_mv / (j_mv * c_e * tau_ms) * c_e * 1e3 / k
    params = {"E_L": "0*mV", "v_th": "20*mV", "v_reset": "10*mV", "tau_m": "20*ms", "tau_ref": "2*ms",
              "R_m": "100*Mohm"}
    pops = [m.Population(name, size, "lif", parameters=params, initial={"v": "rand()*20*mV"})
            for name, size in (("exc", n_e), ("inh", n_i))]
    inputs = [m.PoissonInput(f"ext_{name}", k * size, rates=ArrayValue(np.full(k * size, nu_ext), "Hz"))
              for name, size in (("exc", n_e), ("inh", n_i))]
    projs = [m.Projection(f"ext_to_{t}", f"ext_{t}", t, "delta_voltage",
                          connect=m.Explicit(ArrayValue(np.arange(k * size)), ArrayValue(np.arange(k * size) // k)),
                          weights=f"{j_mv}*mV", delay="1.5*ms") for t, size in (("exc", n_e), ("inh", n_i))]
    for s, w in (("exc", j_mv), ("inh", -g * j_mv)):
        for t in ("exc", "inh"):
            projs.append(m.Projection(f"{s}_{t}", s, t, "delta_voltage", connect=m.RandomP(p, allow_autapses=False),
                                      weights=f"{w}*mV", delay="1.5*ms"))
    return m.NetworkSpec(name="brunel", populations=pops, inputs=inputs, projections=projs,
                         monitors=[m.SpikeMonitor("exc"), m.SpikeMonitor("inh")], dt="0.1*ms",
                         duration="1*second", seed=seed)


def network(name: str):
    from biosnn.spec import load_spec
    if name == "cuba":
        return load_spec(ROOT / "network_specs" / "cuba.yaml")
    if name == "brunel":
        return brunel_spec()
    raise SystemExit(f"unknown network {name}")


def synapse_counts(spec) -> dict:
    """Synapses per projection (expanded exactly as the backends do)."""
    from biosnn.spec.expand import expand_projection
    return {p.name: len(expand_projection(spec, p).i) for p in spec.projections}


def cpu_seconds() -> float:
    """CPU time (user + system) of this process, all its threads, and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def worker(net: str, backend: str, threads: int, duration: float) -> dict:
    """Build and run one configuration; return its figures (runs in its own process)."""
    from biosnn import get_backend
    spec = network(net)
    counts = synapse_counts(spec)
    t0 = time.perf_counter()
    if backend == "nest":
        sim = get_backend("nest", local_num_threads=threads).build(spec)
        t1 = time.perf_counter()
        cpu0 = cpu_seconds()
        rec = sim.run(duration=duration, progress=False)
        run_cpu = cpu_seconds() - cpu0  # includes network construction (NEST builds in run)
        build_s = (t1 - t0) + float(rec.meta["build_time_s"])
        run_s = float(rec.meta["wall_time_s"])
    else:
        sim = get_backend("cpp_standalone", threads=threads).build(spec, duration=duration)
        t1 = time.perf_counter()
        cpu0 = cpu_seconds()
        rec = sim.run(progress=False)
        run_cpu = cpu_seconds() - cpu0  # the standalone binary: loading arrays, synapse creation, run
        build_s = t1 - t0
        run_s = float(rec.meta["wall_time_s"])
    spikes = {name: int(len(tr.times)) for name, tr in rec.spikes.items()}
    sizes = {p.name: p.size for p in spec.populations + spec.inputs}
    events = 0.0
    for proj in spec.projections:
        src_spikes = spikes.get(proj.source)
        if src_spikes is None:  # Poisson inputs are not recorded: expected count
            inp = next(i for i in spec.inputs if i.name == proj.source)
            src_spikes = float(inp.rates.si().sum()) * duration
        events += src_spikes * counts[proj.name] / sizes[proj.source]
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"net": net, "backend": backend, "threads": threads, "duration_s": duration,
            "synapses": int(sum(counts.values())), "build_s": build_s, "run_s": run_s,
            "rates_hz": {k: v / sizes[k] / duration for k, v in spikes.items()},
            "events": events, "events_per_s": events / run_s, "run_cpu_s": run_cpu,
            "peak_rss_mb": max(own, kids) / 1024}


def run_configuration(net, backend, threads, duration) -> dict:
    cmd = [sys.executable, __file__, "--worker", net, backend, str(threads), str(duration)]
    # passive OpenMP waiting: on a shared (oversubscribed) machine spinning threads wait for
    # descheduled ones, which made NEST with 2 threads 30x slower than with 1 here
    env = dict(os.environ, OMP_NUM_THREADS=str(max(threads, 1)), OMP_WAIT_POLICY="PASSIVE",
               PYNEST_QUIET="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{net} on {backend} ({threads} threads) failed")
    return json.loads(lines[-1])


def table(results) -> str:
    rows = ["| network | simulator | threads | synapses | bio time (s) | build (s) | run (s) | "
            "rates (Hz) | synaptic events/s (wall) | CPU s of the run call | peak memory (MB) |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rates = ", ".join(f"{k} {v:.2f}" for k, v in r["rates_hz"].items())
        sim = "NEST 3.10" if r["backend"] == "nest" else "Brian2 cpp_standalone"
        rows.append(f"| {r['net']} | {sim} | {r['threads']} | {r['synapses']:,} | {r['duration_s']} | "
                    f"{r['build_s']:.1f} | {r['run_s']:.1f} | {rates} | {r['events_per_s']:.3g} | "
                    f"{r['run_cpu_s']:.1f} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(rows)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", nargs=4, metavar=("NET", "BACKEND", "THREADS", "DURATION"),
                   help=argparse.SUPPRESS)
    p.add_argument("--networks", nargs="+", default=["cuba", "brunel"], choices=["cuba", "brunel"])
    p.add_argument("--duration-cuba", type=float, default=1.0, help="biological seconds for CUBA")
    p.add_argument("--duration-brunel", type=float, default=0.5, help="biological seconds for Brunel")
    p.add_argument("--nest-threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--include-json", default=None,
                   help="file with JSON result lines of an earlier (partial) run to include in the table")
    p.add_argument("--no-record", action="store_true", help="do not record the section (BENCHMARKS.md)")
    args = p.parse_args(argv)
    if args.worker:
        net, backend, threads, duration = args.worker
        print(json.dumps(worker(net, backend, int(threads), float(duration))))
        return 0
    results, load_start = [], os.getloadavg()[0]
    if args.include_json:
        results = [json.loads(ln) for ln in Path(args.include_json).read_text().splitlines() if ln.startswith("{")]
    for net in args.networks:
        duration = args.duration_cuba if net == "cuba" else args.duration_brunel
        configs = [("cpp_standalone", 0)] + [("nest", t) for t in args.nest_threads]
        for backend, threads in configs:
            r = run_configuration(net, backend, threads, duration)
            print(json.dumps(r), flush=True)
            results.append(r)
    text = table(results)
    print(text)
    if not args.no_record:
        cmd = "python benchmarks/nest_vs_brian2.py " + " ".join(argv if argv is not None else sys.argv[1:])
        section = (f"## NEST vs Brian2 cpp_standalone ({datetime.date.today().isoformat()})\n\n"
                   f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared, loaded); "
                   f"command: `{cmd.strip()}`. Each row is one process; build = code generation and compilation "
                   "(Brian2) or network construction (NEST, plus NESTML compilation when not cached); run = the "
                   "simulation only (NEST: after Prepare). Brian2 ran single-threaded (its synaptic "
                   "propagation is serial). Events: spikes x synapses per source. CPU s: user + system time "
                   "of the whole run call (NEST: network construction included; Brian2: the binary, i.e. "
                   "array loading and synapse creation included); on this shared machine wall times are "
                   "inflated by other jobs, CPU times much less so.\n\n" + text + "\n")
        import report  # benchmarks/report.py
        path = report.record("nest_vs_brian2", section, command=cmd.strip(), script="benchmarks/nest_vs_brian2.py",
                             data={"results": results}, load=(load_start, os.getloadavg()[0]))
        print(f"recorded {path} and re-rendered BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
