"""Compile time of converted VGG-style and ResNet-20 networks on cpp_standalone: unity units vs one file per code object.

Run (records ``benchmarks/results/compile_time.json`` through ``report.record``)::

    nice -n 10 .venv/bin/python benchmarks/compile_time.py

Per network of ``--networks`` (the ladder's, :mod:`convert_speed`; random weights: compile time does not
depend on them), rate coding at T = 32, batch of 4 windows, in one process, alternating:

1. ``unity_units=0``: Brian2's project as it writes it, one translation unit per code object;
2. ``unity_units=8`` (the default): the code objects in 8 translation units.

Each build goes to a fresh build directory (build s = code generation + make, every core), then a
second network of the same shape with other weights is built into the same directory: its build
time (code generation only) and whether make wrote a new binary.  Both columns compile the glue
(``objects.cpp``, ``main.cpp``) at ``-O1``.  The load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))

import biosnn  # noqa: E402
from biosnn.backends import get_backend  # noqa: E402
from convert_speed import NETWORKS, log, other_weights  # noqa: E402
import report  # noqa: E402  (benchmarks/report.py)


def build(model, side: int, units: int, cache_dir: Path):
    """Convert ``model`` and build its spec (4 windows); ``(simulation, seconds)``."""
    x = np.random.default_rng(0).random((16, 1, side, side)).astype(np.float32)
    snn = biosnn.convert(model, "rate", calibration=x, input_shape=(1, side, side), T=32,
                         normalization="percentile")
    t0 = time.perf_counter()
    sim = get_backend("cpp_standalone", cache_dir=cache_dir, unity_units=units).build(snn.spec_for(4))
    return sim, time.perf_counter() - t0


def measure(name: str, units: int) -> dict:
    make, side, _, label = NETWORKS[name]
    torch.manual_seed(0)
    model = make().eval()
    cache = Path(tempfile.mkdtemp(prefix=f"biosnn_compile_{name}_"))
    load = os.getloadavg()[0]
    sim, first = build(model, side, units, cache)
    again, second = build(other_weights(model), side, units, cache)
    n_objects = len(list((sim.directory / "code_objects").glob("*.cpp")))
    return {"network": label, "units": units, "code_objects": n_objects, "build_s": first,
            "second_s": second, "second_compiled": bool(again.compiled), "same_dir": again.directory == sim.directory,
            "load": load}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=["vgg_small", "resnet20"], choices=list(NETWORKS))
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    rows = []
    for name in args.networks:
        for units in (0, 8):
            rows.append(measure(name, units))
            log(str(rows[-1]))
    load_after = os.getloadavg()
    lines = ["## Compile time of converted networks (cpp_standalone): unity translation units\n",
             f"{os.cpu_count()} cores · load average (1/5/15 min) at start {'/'.join(f'{v:.1f}' for v in load_before)}, "
             f"at end {'/'.join(f'{v:.1f}' for v in load_after)} (a machine shared with other jobs: the "
             "two columns ran alternately in one process)\n",
             "Rate coding, T = 32, 4 windows per run, random weights.  Build s: code generation + make "
             "(every core) into a fresh build directory.  2nd same-shape build: the same architecture with "
             "other weights, built afterwards into the same directory (code generation only when make "
             "writes no new binary).  Glue (objects.cpp, main.cpp) at -O1 in both.\n",
             "| network | code objects | build s, one file each | build s, 8 unity units | ratio | "
             "2nd same-shape build s (compiled?) | load at start |",
             "|---|---|---|---|---|---|---|"]
    for k in range(0, len(rows), 2):
        a, b = rows[k], rows[k + 1]
        lines.append(f"| {a['network']} | {a['code_objects']} | {a['build_s']:.1f} | {b['build_s']:.1f} | "
                     f"{a['build_s'] / b['build_s']:.2f}x | {b['second_s']:.1f} "
                     f"({'compiled!' if b['second_compiled'] else 'nothing compiled'}) | {b['load']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_record:
        report.record("compile_time", text, command=report.command_line(), script="benchmarks/compile_time.py",
                      data={"rows": [report.scalars(r) for r in rows]}, load=(load_before[0], load_after[0]))


if __name__ == "__main__":
    main()
