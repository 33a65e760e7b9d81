"""Converted LeNet-5 (rate, T = 32) on brian2cuda's cuda_standalone, replicas x windows, vs SpikingJelly on the GPU.

On a machine with a CUDA GPU (one command, one process)::

    BIOSNN_MNIST=/path/to/mnist.npz .venv/bin/python benchmarks/convert_speed_cuda.py

1. LeNet-5 with average pooling (trained on MNIST, cached as in ``convert_mnist_rate.py``),
   converted with rate coding (T = 32, 99.9 % percentile balancing).
2. The network for ``--replicas`` R copies x ``--windows`` W sample windows
   (``snn.spec_for(W, R)``, :func:`biosnn.spec.replicas.replicate`) is generated and compiled with
   nvcc (brian2cuda, C++17, biosnn's static-projection kernels: the convolutions store their kernel
   only).  Reported: code
   generation + host-side set-up time (Python, building the Brian2 objects and writing the
   synapse files: biosnn creates no synapses on the host), nvcc time, bytes of synapse storage.
3. With a GPU: ``snn.run`` of ``--images`` test images, R x W per run of the binary (10k images =
   one run for R = W = 100): accuracy, agreement with the ANN, images/s, synaptic events/s.
   SpikingJelly ann2snn (rate, 99.9 %) on the same GPU, same ANN and images, T = 32, for every
   batch size in ``--sj-batch``: the ratio of images/s.
4. Without a GPU, step 3 is skipped and the section says so: the compile figures are still real.

The section is appended to BENCHMARKS.md with the date, the machine, the GPU and the command.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import biosnn  # noqa: E402
from biosnn.backends.brian2_cuda import gpu_visible  # noqa: E402
from biosnn.datasets import load_mnist  # noqa: E402
from convert_mnist_rate import (ann_predictions, cpu_model,  # noqa: E402
                                spikingjelly_throughput, trained_lenet)
from convert_speed import command, publish, synapse_bytes  # noqa: E402


def gpu_name() -> str:
    """The GPU torch sees, or 'no GPU'."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "no GPU"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--replicas", type=int, default=100, help="network copies in one group (R)")
    ap.add_argument("--windows", type=int, default=100, help="sample windows per copy and run (W)")
    ap.add_argument("--T", type=int, default=32)
    ap.add_argument("--calib", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=3, help="ANN training epochs")
    ap.add_argument("--float32", action="store_true", help="single-precision state variables")
    ap.add_argument("--sj-batch", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    n, R, W = args.images, args.replicas, args.windows
    model, _ = trained_lenet("avg", x_train, y_train, args.epochs, 0)
    ann_pred = ann_predictions(model, x_test[:n])
    snn = biosnn.convert(model, "rate", calibration=x_train[:args.calib], input_shape=(1, 28, 28), T=args.T,
                         normalization="percentile")
    cache_dir = Path(tempfile.mkdtemp(prefix="biosnn_cuda_speed_"))
    backend = biosnn.get_backend("cuda_standalone", cache_dir=cache_dir, float32=args.float32)
    t0 = time.perf_counter()
    spec = snn.spec_for(W, R)
    spec_s = time.perf_counter() - t0
    sim = backend.build(spec)
    make_s = sim.device.timers.get("compile", {}).get("make")
    codegen_s = sim.build_time_s - (make_s or 0.0)
    mem, n_syn = synapse_bytes(spec, float_bytes=4 if args.float32 else 8)
    print(f"R={R} W={W}: {n_syn} synapses, {mem / 1e6:.2f} MB synapse storage, spec {spec_s:.1f} s, "
          f"code generation + host set-up {codegen_s:.1f} s, nvcc {make_s} s", flush=True)
    res = None
    sj_rows = []
    if gpu_visible():
        t0 = time.perf_counter()
        res = snn.run(x_test[:n], backend="cuda_standalone", batch_size=R * W, replicas=R, progress=True,
                      cache_dir=cache_dir, float32=args.float32)
        wall = time.perf_counter() - t0
        for batch in args.sj_batch:
            sj_rows.append(spikingjelly_throughput(
                model, x_train, x_test, y_test, ann_pred, {"predictions": res.predictions},
                SimpleNamespace(brian2_images=n, sj_batch=batch, brian2_T=args.T, calib=args.calib,
                                device="cuda")))
            print(f"SpikingJelly batch {batch}: {sj_rows[-1]}", flush=True)
    total_s = time.perf_counter() - t_start
    lines = [f"## Converted LeNet-5 on cuda_standalone, replicas x windows (rate, T = {args.T})\n",
             f"{datetime.date.today()} · GPU: {gpu_name()} · host: {cpu_model()}, {os.cpu_count()} cores · "
             f"`{command()}` · {total_s / 60:.1f} min in all\n",
             f"{R} replicas x {W} windows = {R * W} images per run of one compiled binary, "
             f"{'float32' if args.float32 else 'float64'}; static projections on biosnn's CUDA kernels.\n",
             "| figure | value |", "|---|---|",
             f"| synapses (all replicas) | {n_syn} |",
             f"| synapse storage on the GPU (biosnn kernels) | {mem / 1e6:.2f} MB ({mem / max(n_syn, 1):.2f} B/syn.) |",
             f"| spec for R x W (Python) | {spec_s:.1f} s |",
             f"| code generation + host set-up (no synapse creation on the host: files read in main) | "
             f"{codegen_s:.1f} s |",
             f"| nvcc compile + link | {make_s if make_s is None else f'{make_s:.0f} s'} |"]
    if res is None:
        lines.append("| simulation | **not run: no CUDA GPU on this machine** (the binary was compiled for "
                     "compute capability 9.0 and needs a GPU) |")
    else:
        events = float(np.sum(res.synops_per_sample))
        lines += [f"| test images | {n} |",
                  f"| accuracy (ANN) | {res.accuracy(y_test[:n]) * 100:.2f} % ({np.mean(ann_pred == y_test[:n]) * 100:.2f} %) |",
                  f"| agreement with the ANN | {res.agreement(ann_pred) * 100:.2f} % |",
                  f"| wall time, 10k images (build cached) | {wall:.2f} s |",
                  f"| images/s | {n / wall:.1f} |",
                  f"| synaptic events/s | {events / wall:.3g} |"]
        for r in sj_rows:
            if "ips" in r:
                lines.append(f"| SpikingJelly on {r['device']}, batch {r['B']}: images/s (accuracy); biosnn / SJ | "
                             f"{r['ips']:.1f} ({r['acc'] * 100:.2f} %); {n / wall / r['ips']:.2f}x |")
            else:
                lines.append(f"| SpikingJelly | failed: {r.get('error')} |")
    publish(lines, record=not args.no_record)


if __name__ == "__main__":
    main()
