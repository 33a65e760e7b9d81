"""Where OpenMP threads help and where they cost: the rate-coded LeNet-5 per code object, 1 thread vs N.

One batch of MNIST test images (``--replicas`` R copies x ``--windows`` W windows, T = 32) runs on
cpp_standalone with Brian2's profiling, once per thread count; the table gives each code
object's time, so the gain of biosnn's static-projection templates (threads own target blocks,
output channels or replicas, no atomics) and the cost of OpenMP regions in Brian2's own code
objects (thresholds, operations, resets: one parallel region each, every time step) stand side
by side.  Images per second of the whole run are given too.

    BIOSNN_MNIST=/path/to/mnist.npz .venv/bin/python benchmarks/openmp_profile.py [--threads 0 2] [--replicas 8]

Records the table through benchmarks/report.py (``--no-record``: don't), which re-renders BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import biosnn  # noqa: E402
from biosnn.backends.brian2_standalone import profile_of  # noqa: E402
from biosnn.datasets import load_mnist  # noqa: E402
from biosnn.conversion.snn import window_table  # noqa: E402
from convert_mnist_rate import cpu_model, trained_lenet  # noqa: E402

import report  # noqa: E402  (benchmarks/report.py)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[0, 2], help="0: no OpenMP")
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--windows", type=int, default=125)
    ap.add_argument("--top", type=int, default=10, help="code objects listed")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load_start = os.getloadavg()[0]
    x_train, y_train = load_mnist("train")
    x_test, _ = load_mnist("test")
    model, _ = trained_lenet("avg", x_train, y_train, 3, 0)
    snn = biosnn.convert(model, "rate", calibration=x_train[:500], input_shape=(1, 28, 28), T=32,
                         normalization="percentile")
    R, W = args.replicas, args.windows
    spec = snn.spec_for(W, R)
    flat = np.asarray(x_test[:R * W], dtype=np.float64).reshape(R * W, -1) / snn.graph.input_scale
    table = window_table(flat, R)
    cache = Path(tempfile.mkdtemp(prefix="biosnn_omp_"))
    profiles, walls = {}, {}
    for threads in args.threads:
        sim = biosnn.get_backend("cpp_standalone", cache_dir=cache, profile=True, threads=threads).build(spec)
        sim.run(overrides={"x_in": table}, progress=False)  # warm (files, page cache)
        t0 = time.perf_counter()
        rec = sim.run(overrides={"x_in": table}, progress=False)
        walls[threads] = time.perf_counter() - t0
        profiles[threads] = profile_of(rec)
        print(f"threads {threads}: {walls[threads]:.2f} s for {R * W} images, "
              f"code objects {sum(profiles[threads].values()):.2f} s", flush=True)
    first = args.threads[0]
    names = list(profiles[first])[:args.top]
    head = " | ".join(f"{t} threads (s)" if t else "no OpenMP (s)" for t in args.threads)
    lines = [f"## OpenMP per code object: rate LeNet-5, {R} replicas x {W} windows (`benchmarks/openmp_profile.py`)\n",
             f"{datetime.date.today()} · {cpu_model()}, {os.cpu_count()} cores · `{report.command_line()}`\n",
             f"| code object | {head} |", "|---|" + "---|" * len(args.threads)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{profiles[t].get(name, 0.0):.3f}" for t in args.threads) + " |")
    lines.append("| **all code objects** | " + " | ".join(f"**{sum(profiles[t].values()):.2f}**"
                                                     for t in args.threads) + " |")
    lines.append("| images/s (whole run, binary start included) | " + " | ".join(
        f"{R * W / walls[t]:.0f}" for t in args.threads) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_record:
        report.record("openmp_profile", text, command=report.command_line(), script="benchmarks/openmp_profile.py",
                      data={"profiles": {str(t): p for t, p in profiles.items()},
                            "images_per_s": {str(t): R * W / walls[t] for t in args.threads}},
                      load=(load_start, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
