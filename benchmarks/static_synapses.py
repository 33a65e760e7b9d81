"""Memory and speed of static synapses: biosnn's template vs Brian2's stock ``Synapses`` (cpp_standalone).

A Poisson source drives an all-to-all projection of ``n x n`` static synapses
(``v_post += w``, weights given per synapse) onto non-spiking integrators.
For two sizes, each configuration is built once (compilation) and then run in
a *fresh* process.  The compiled binary is started through a small launcher
(Brian2's ``run_cmd_unix`` preference) that reads the binary's own peak RSS
with ``wait4``; bytes per synapse are the slope between the two sizes, so the
binary's fixed memory cancels out.  (``RUSAGE_CHILDREN`` of the Python process
would count Python's own memory in forked helper processes: an earlier version
of this benchmark did that and reported 60 bytes per synapse.)

Synaptic events per second are given twice: input spikes x fan-out divided by
the binary's run time (everything: Poisson source, monitor, propagation) and
divided by the propagation code objects' time alone (Brian2's profiling).

Run::

    python benchmarks/static_synapses.py [--sizes 2000 3000] [--threads 0 2]

Prints a table and records it through benchmarks/report.py (``--no-record``: don't), which re-renders
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, sys, tempfile, time
import brian2
import numpy as np
from biosnn.backends import get_backend
from biosnn.spec import AllToAll, ArrayValue, NetworkSpec, NeuronModel, PoissonInput, Population, Projection, SpikeMonitor
from biosnn.spec.model import SynapseModel
n, static, threads, float32, cache = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
spec = NetworkSpec(f"static_bench_{n}", dt="0.1*ms", duration="200*ms", seed=1,
    populations=[Population("post", n, NeuronModel("v : 1"))],
    inputs=[PoissonInput("src", n, "50*Hz")],
    synapse_models={"jump": SynapseModel("w : 1", on_pre="v_post += w")},
    projections=[Projection("src_post", "src", "post", "jump", AllToAll(),
                            weights=ArrayValue(np.full(n * n, 1e-3)))],
    monitors=[SpikeMonitor("src")])
be = get_backend("cpp_standalone", cache_dir=cache, static_projections=static, threads=threads, float32=float32,
                 profile=True)
sim = be.build(spec)
rss_file = tempfile.mktemp(prefix="biosnn_rss_")
brian2.prefs.devices.cpp_standalone.run_cmd_unix = [sys.executable, "-c", LAUNCH, rss_file, "./main"]
rec = sim.run(progress=False)
wall = float(rec.meta["wall_time_s"])
rss = int(open(rss_file).read()) * 1024
os.unlink(rss_file)
from biosnn.backends.brian2_standalone import profile_of
propagate = sum(t for name, t in profile_of(rec).items() if name.startswith("src_post"))
print(json.dumps({"n": n, "synapses": n * n, "spikes": len(rec.spikes["src"]), "wall_s": wall,
                  "propagate_s": propagate, "rss_bytes": rss, "compiled": sim.compiled}))
"""

#: runs the binary (argv[2:]) and writes its own peak RSS (kB) to argv[1]
LAUNCH = ("import os, sys\n"
          "pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)\n"
          "_, status, usage = os.wait4(pid, 0)\n"
          "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
          "sys.exit(os.waitstatus_to_exitcode(status))\n")


def child(n, static, threads, float32, cache):
    args = [sys.executable, "-c", f"LAUNCH = {LAUNCH!r}\n" + CHILD, str(n), "1" if static else "0", str(threads),
            "1" if float32 else "0", cache]
    env = dict(os.environ, BIOSNN_PROGRESS="0")
    out = subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[2000, 3000], help="two n (n*n synapses)")
    ap.add_argument("--threads", type=int, nargs="+", default=[0], help="OpenMP thread counts to time")
    ap.add_argument("--cache", default=None, help="build directory (default: a temporary one)")
    ap.add_argument("--no-record", action="store_true", help="do not record the section (BENCHMARKS.md)")
    args = ap.parse_args()
    load_start = os.getloadavg()[0]
    cache = args.cache or tempfile.mkdtemp(prefix="biosnn_static_bench_")
    rows = []
    for static in (False, True):
        for float32 in (False, True):
            for threads in args.threads:
                res = []
                for n in args.sizes:
                    child(n, static, threads, float32, cache)        # compile (if needed)
                    res.append(child(n, static, threads, float32, cache))  # measured in a fresh process
                a, b = res
                per_syn = (b["rss_bytes"] - a["rss_bytes"]) / (b["synapses"] - a["synapses"])
                events = b["spikes"] * args.sizes[1]
                rows.append({"templates": "biosnn static" if static else "Brian2 stock",
                             "float": "float32" if float32 else "float64", "threads": threads,
                             "bytes_per_synapse": per_syn, "events_per_s": events / b["wall_s"],
                             "propagate_events_per_s": events / b["propagate_s"],
                             "wall_s": b["wall_s"], "synapses": b["synapses"]})
                print(rows[-1], flush=True)
    stock = {(r["float"], r["threads"]): r for r in rows if r["templates"] == "Brian2 stock"}
    lines = ["| templates | float | threads | bytes / synapse | events / s (whole run) | events / s "
             "(propagation) | propagation speed vs stock | run (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = r["propagate_events_per_s"] / stock[(r["float"], r["threads"])]["propagate_events_per_s"]
        lines.append(f"| {r['templates']} | {r['float']} | {r['threads']} | {r['bytes_per_synapse']:.1f} | "
                     f"{r['events_per_s']:.3g} | {r['propagate_events_per_s']:.3g} | {ratio:.2f}x | "
                     f"{r['wall_s']:.2f} |")
    table = "\n".join(lines)
    print(table)
    cmd = "python benchmarks/static_synapses.py " + " ".join(sys.argv[1:])
    if args.no_record:
        return
    import report  # benchmarks/report.py
    report.record("static_synapses",
                  f"## Static synapses: biosnn template vs Brian2 stock (cpp_standalone)\n\n"
                  f"{datetime.date.today()} · {platform.processor() or platform.machine()}, {os.cpu_count()} cores · "
                  f"`{cmd}`\n\nPoisson 50 Hz -> all-to-all, n = {args.sizes}; bytes per synapse = slope of the "
                  f"compiled binary's own peak RSS (wait4) between the two sizes (fresh process, build cached); "
                  f"propagation time from Brian2's profiling.\n\n{table}\n",
                  command=cmd, script="benchmarks/static_synapses.py", data={"sizes": args.sizes, "rows": rows},
                  load=(load_start, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
