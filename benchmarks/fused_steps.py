"""Fused neuron steps on cpp_standalone: the rate-coded LeNet-5 and PyTorch MNIST example, fused vs Brian2's
separate code objects (operations, thresholder, resetter), in one run.

The networks of ``benchmarks/convert_speed.py`` (same training, rate coding T = 32, percentile
normalisation) run one binary at a time (``workers=1``: events per second of one core) over the same
test images, once with ``fused_steps=True`` and once with ``fused_steps=False``; the two builds are
timed in turns (``--repeats`` rounds, the fastest of each kept) so that the machine's load hits both
alike.  Both give the same scores bit for bit (checked).  A profiled run of each (Brian2's
``profile=True``) gives the seconds of the neuron-step code objects (``*_op1``, ``*_spike_thresholder``,
``*_spike_resetter``: the fused step runs in the thresholder's code object).

    BIOSNN_MNIST=/path/to/mnist.npz .venv/bin/python benchmarks/fused_steps.py [--images 1024] [--repeats 3]

Records its table through benchmarks/report.py (``--no-record``: don't).
"""

from __future__ import annotations

import argparse
import datetime
import os
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from biosnn.backends import get_backend  # noqa: E402
from biosnn.backends.brian2_standalone import profile_of  # noqa: E402
from biosnn.conversion.snn import window_table  # noqa: E402
from biosnn.datasets import load_mnist  # noqa: E402
from convert_speed import NETWORKS, convert_coding, images, trained  # noqa: E402

import report  # noqa: E402  (benchmarks/report.py)

_STEP = ("_op1_codeobject", "_spike_thresholder_codeobject", "_spike_resetter_codeobject")


def step_seconds(profile: dict) -> float:
    """Seconds of a profile's neuron-step code objects (operations in the groups slot, thresholders, resetters)."""
    return sum(s for name, s in profile.items() if name.endswith(_STEP))


def children_cpu_s() -> float:
    """User + system CPU seconds of this process's finished children (the compiled binaries)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(name, x_train, y_train, x_test, n, batch, repeats, cache):
    _, side, _, _ = NETWORKS[name]
    model = trained(name, x_train, y_train, 2, 10000)
    snn = convert_coding(model, "rate", images(x_train[:200], side), (1, side, side))
    xt = images(x_test[:n], side)
    kw = dict(backend="cpp_standalone", batch_size=batch, cache_dir=cache, progress=False, workers=1)
    best, results, profiles = {}, {}, {}
    spec = snn.spec_for(batch, 1)  # one replica, ``batch`` windows: the profiled runs
    table = window_table(np.asarray(xt[:batch], dtype=np.float64).reshape(batch, -1) / snn.graph.input_scale, 1)
    for fused in (True, False):
        snn.run(xt[:batch], fused_steps=fused, **kw)  # build (or load) and warm
        sim = get_backend("cpp_standalone", cache_dir=cache, profile=True, fused_steps=fused).build(spec)
        profiles[fused] = profile_of(sim.run(overrides={"x_in": table}, progress=False))
    cpu = {}
    for _ in range(repeats):
        for fused in (True, False):
            before = children_cpu_s()
            res = snn.run(xt, fused_steps=fused, **kw)
            cpu[fused] = min(cpu.get(fused, np.inf), children_cpu_s() - before)
            results[fused] = res
            best[fused] = min(best.get(fused, np.inf), res.wall_time_s)
    if not np.array_equal(results[True].scores, results[False].scores):
        raise SystemExit(f"{name}: fused and separate code objects gave different scores")
    events = float(np.sum(results[True].synops_per_sample))
    row = {"network": name, "images": n, "batch": batch, "events": events,
           "wall_fused_s": best[True], "wall_stock_s": best[False],
           "events_per_s_fused": events / best[True], "events_per_s_stock": events / best[False],
           "speedup": best[False] / best[True], "cpu_fused_s": cpu[True], "cpu_stock_s": cpu[False],
           "events_per_cpu_s_fused": events / cpu[True], "events_per_cpu_s_stock": events / cpu[False],
           "cpu_speedup": cpu[False] / cpu[True]}
    row.update(step_fused_s=step_seconds(profiles[True]), step_stock_s=step_seconds(profiles[False]),
               objects_fused_s=sum(profiles[True].values()), objects_stock_s=sum(profiles[False].values()),
               profile_fused=profiles[True], profile_stock=profiles[False])
    print({k: v for k, v in row.items() if not k.startswith("profile")}, flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--networks", nargs="+", default=["lenet5", "mnist_example"])
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]
    x_train, y_train = load_mnist("train")
    x_test, _ = load_mnist("test")
    cache = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix="biosnn_fused_"))
    rows = [measure(name, x_train, y_train, x_test, args.images, args.batch, args.repeats, cache)
            for name in args.networks]
    load_end = os.getloadavg()[0]
    lines = ["## Fused neuron steps: rate coding, fused vs separate code objects (`benchmarks/fused_steps.py`)\n",
             f"{datetime.date.today()} · {report.cpu_model()}, {os.cpu_count()} cores · load {load_start:.1f} -> "
             f"{load_end:.1f} · `{report.command_line()}`\n",
             "One binary at a time, T = 32, the fastest of the turns (wall: the whole run, binary start and file "
             "input/output included; CPU: the binaries' user + system seconds, which the machine's other load "
             "does not lengthen); scores equal bit for bit. Neuron steps: Brian2's profile of one batch, the "
             "code objects of the groups' operations, thresholders and resetters (fused: the thresholders).\n",
             "| network | images | wall separate (s) | wall fused (s) | CPU separate (s) | CPU fused (s) | "
             "speed-up (CPU) | events per CPU second, separate | fused | neuron steps separate (s) | fused (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['network']} | {r['images']} | {r['wall_stock_s']:.2f} | {r['wall_fused_s']:.2f} | "
                     f"{r['cpu_stock_s']:.2f} | {r['cpu_fused_s']:.2f} | {r['cpu_speedup']:.2f}x | "
                     f"{r['events_per_cpu_s_stock']:.3g} | {r['events_per_cpu_s_fused']:.3g} | "
                     f"{r['step_stock_s']:.3f} | {r['step_fused_s']:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_record:
        report.record("fused_steps", text, command=report.command_line(), script="benchmarks/fused_steps.py",
                      data={"rows": rows}, load=(load_start, load_end))


if __name__ == "__main__":
    main()
