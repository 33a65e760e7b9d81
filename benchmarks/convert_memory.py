"""Memory of converting and running big converted networks: full-width VGG-11 on 32x32, VGG-16 on 224x224.

Run (records ``benchmarks/results/convert_memory.json`` through ``report.record``)::

    nice -n 10 .venv/bin/python benchmarks/convert_memory.py

Random weights (memory and time do not depend on training), rate coding, ``--T`` steps, calibration
on ``--calib`` random images.  Per network: ``biosnn.convert`` (tracing, calibration, the spec), then
``snn.run`` of ``--samples`` random images on cpp_standalone (code generation, compilation into a fresh
build directory, one run of the binary).  Peak resident memory of this process and of the binary
(sampled every 0.1 s), wall times per step, neurons and synapses (convolutions: kernels only).
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
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import biosnn  # noqa: E402
from convert_speed import PeakMemory, log, synapse_count, _rss_mb  # noqa: E402
import report  # noqa: E402  (benchmarks/report.py)

CFG = {"vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
       "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]}


def vgg(name: str, side: int) -> nn.Module:
    """torchvision-style VGG (no BatchNorm) with average pooling, ``side`` x ``side`` RGB input, 10 classes."""
    layers, ch = [], 3
    for v in CFG[name]:
        if v == "M":
            layers.append(nn.AvgPool2d(2))
        else:
            layers += [nn.Conv2d(ch, v, 3, padding=1), nn.ReLU()]
            ch = v
    s = side // 32
    head = [nn.Linear(512 * s * s, 10)] if side == 32 else [nn.Linear(512 * s * s, 4096), nn.ReLU(),
                                                            nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 10)]
    return nn.Sequential(*layers, nn.Flatten(), *head).eval()


def measure(name: str, side: int, args) -> dict:
    torch.manual_seed(0)
    model = vgg(name, side)
    x = torch.rand(max(args.calib, args.samples), 3, side, side)
    base = _rss_mb(os.getpid())
    out = {"network": f"{name.upper()} {side}x{side}", "baseline_mb": base}
    with PeakMemory() as conv:
        t0 = time.perf_counter()
        snn = biosnn.convert(model, "rate", calibration=x[:args.calib], input_shape=(3, side, side), T=args.T)
        out["convert_s"] = time.perf_counter() - t0
    out["convert_peak_mb"] = conv.peak
    out["neurons"] = int(sum(p.size for p in snn.spec.populations if p.name != "meter"))
    out["synapses"] = synapse_count(snn.spec)
    if args.no_run:
        return out
    with PeakMemory() as run:
        res = snn.run(x[:args.samples], backend="cpp_standalone", batch_size=args.samples, workers=1,
                      cache_dir=Path(args.cache_dir) if args.cache_dir else
                      Path(tempfile.mkdtemp(prefix=f"biosnn_mem_{name}_")), progress=False)
    out.update(build_s=res.build_time_s, run_s=res.run_time_s, run_peak_mb=run.peak,
               binary_peak_mb=run.peak_children, spikes=float(res.spikes_per_sample.mean()),
               synops=float(res.synops_per_sample.mean()))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=["vgg11:32", "vgg16:224"])
    ap.add_argument("--T", type=int, default=4)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--calib", type=int, default=4)
    ap.add_argument("--no-run", action="store_true", help="convert only")
    ap.add_argument("--cache-dir", default=None,
                    help="build directory to reuse (default: a fresh one, so build s includes the compilation)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    rows = []
    for item in args.networks:
        name, side = item.split(":")
        log(f"== {item}")
        try:
            rows.append(measure(name, int(side), args))
        except Exception as exc:  # noqa: BLE001  (reported, not hidden)
            rows.append({"network": item, "error": f"{type(exc).__name__}: {exc}"[:300]})
        log(str(rows[-1]))
    load_after = os.getloadavg()
    lines = ["## Conversion memory: full-width VGG-11 (32x32) and VGG-16 (224x224), rate coding\n",
             f"{os.cpu_count()} cores · load average (1/5/15 min) at start {'/'.join(f'{v:.1f}' for v in load_before)}, "
             f"at end {'/'.join(f'{v:.1f}' for v in load_after)}\n",
             f"Random weights, T = {args.T}, {args.samples} sample(s), cpp_standalone, one worker.  Peak resident "
             "memory sampled every 0.1 s: this Python process (torch + Brian2 imports included, \"baseline\") "
             "plus the compiled binary." + (" Builds reused from an earlier run's build directory (build s: code "
                                            "generation and whatever was left to compile)." if args.cache_dir else
                                            " Every build compiles in a fresh directory.") + "\n",
             "| network | neurons | synapses | baseline MB | convert s | convert peak MB | build s (compile) | "
             "run s | peak MB, process + binary | binary MB | spikes/sample | syn. events/sample |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['network']} | | | | | | | | | | | failed: {r['error']} |")
            continue
        lines.append(f"| {r['network']} | {r['neurons']:,} | {r['synapses']:,} | {r['baseline_mb']:.0f} | "
                     f"{r['convert_s']:.1f} | {r['convert_peak_mb']:.0f} | " +
                     (f"{r['build_s']:.0f} | {r['run_s']:.1f} | {r['run_peak_mb']:.0f} | {r['binary_peak_mb']:.0f} | "
                      f"{r['spikes']:.3g} | {r['synops']:.3g} |" if "build_s" in r else "not run | | | | | |"))
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_record:
        report.record("convert_memory", text, command=report.command_line(), script="benchmarks/convert_memory.py",
                      data={"rows": [report.scalars(r) for r in rows]}, load=(load_before[0], load_after[0]))


if __name__ == "__main__":
    main()
