"""Converted LeNet-5 on brian2cuda's cuda_standalone, replicas x windows, vs SpikingJelly on the same GPU.

On a machine with a CUDA GPU (one process; part of ``benchmarks/gpu_check.py``)::

    BIOSNN_MNIST=/path/to/mnist.npz python benchmarks/convert_speed_cuda.py --json lenet.json

1. LeNet-5 with average pooling (trained on MNIST, cached as in ``convert_mnist_rate.py``).
2. Per coding in ``--codings`` (rate T = 32 with 99.9 % percentile balancing; tdsnn, tpc: the
   prepared model, fine-tuned and cached as in ``convert_speed.py``): the network for ``--replicas``
   R copies x ``--windows`` W sample windows (``snn.spec_for(W, R)``) is built: code generation,
   static arrays and nvcc (``make -j<cores>``), or only code generation when a binary compiled
   elsewhere is in the build cache (``benchmarks/gpu_prebuild.py``; reported as "reused").
3. With a GPU: ``snn.run`` of ``--images`` test images, R x W per run of the binary (10k images =
   one run for R = W = 100): accuracy, agreement with the ANN, the binary's run time (loading its
   arrays, starting the GPU, simulating) and the wall time with code generation, images/s and
   synaptic events/s of the binary's runs, bytes of synapse storage.  SpikingJelly ann2snn (rate, 99.9 %) of the same ANN on the
   same GPU and images, T = 32, for every batch size in ``--sj-batch``: the ratio of images/s.
4. Without a GPU: ``--cpu-fallback`` (the GPU check's dry run) runs step 3 on cpp_standalone and
   SpikingJelly on the CPU, so that every line of the script runs; otherwise step 3 is skipped.

Figures go to ``--json`` (read by ``benchmarks/gpu_report.py``, which writes the BENCHMARKS.md
section) and are printed; builds go to ``$BIOSNN_CACHE_DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))

import biosnn  # noqa: E402
from biosnn.backends.brian2_cuda import gpu_visible  # noqa: E402
from biosnn.datasets import load_mnist, train_classifier  # noqa: E402
from convert_mnist_rate import CACHE, ann_predictions, spikingjelly_throughput, trained_lenet  # noqa: E402
from convert_speed import synapse_bytes  # noqa: E402

#: coding -> (conversion parameters, whether the prepared model needs fine-tuning); the LeNet-5 codings
#: measured on the GPU (and prebuilt by gpu_prebuild.py)
CODINGS = {
    "rate": ({"T": 32, "normalization": "percentile"}, False),
    "tdsnn": ({"L": 5}, True),
    "tsc": ({"T": 32}, False),
    "tpc": ({"bits": 8}, True),
    "stc": ({"T": 8, "theta0": 1.0, "tau": 2.0}, True),
}
PREPARE_KEYS = {"tdsnn": ("L",), "tpc": ("bits",), "stc": ("T", "theta0", "tau"), "tsc": (), "rate": ()}


def finetuned(model, coding, params, x, y, epochs, tag):
    """``biosnn.prepare`` + fine-tuning (cached in ``benchmarks/.cache``)."""
    prep = biosnn.prepare(model, coding, **{k: params[k] for k in PREPARE_KEYS[coding] if k in params})
    if not CODINGS[coding][1] or epochs == 0:
        return prep.eval()
    path = CACHE / f"lenet5-{coding}-{json.dumps(params, sort_keys=True)}-{tag}-e{epochs}.pt"
    if path.exists():
        prep.load_state_dict(torch.load(path, weights_only=True))
    else:
        train_classifier(prep, x, y, epochs=epochs, lr=1e-4, batch_size=128, seed=0)
        torch.save(prep.state_dict(), path)
    return prep.eval()


def gpu_name() -> str:
    """The GPU torch sees, or 'no GPU'."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"


def run_coding(coding: str, model, data, args, backend: str) -> dict:
    """Build and (on ``backend``) run one coding of LeNet-5; its figures."""
    x_train, y_train, x_test, y_test = data
    n, R, W = args.images, args.replicas, args.windows
    params = dict(CODINGS[coding][0])
    if coding == "rate":
        params["T"] = args.T
    prep = finetuned(model, coding, params, x_train[:10000], y_train[:10000], args.finetune_epochs, "n10000")
    if coding == "tpc" and args.finetune_epochs == 0:  # not fine-tuned (dry run): scales from data instead
        from biosnn.codings.tpc import calibrate
        calibrate(prep, x_train[:args.calib])
    ann_pred = ann_predictions(prep, x_test[:n])
    snn = biosnn.convert(prep, coding, calibration=x_train[:args.calib], input_shape=(1, 28, 28), **params)
    t0 = time.perf_counter()
    spec = snn.spec_for(W, R)
    out = {"coding": coding, "params": params, "replicas": R, "windows": W, "spec_s": time.perf_counter() - t0}
    opts = {"float32": args.float32}
    mem, n_syn = synapse_bytes(spec, float_bytes=4 if args.float32 else 8)
    out.update(synapses=n_syn, syn_bytes=mem)
    if backend == "cuda_standalone" or args.build_without_gpu:
        sim = biosnn.get_backend("cuda_standalone", **opts).build(spec)
        out.update(cuda_build_s=sim.build_time_s, make_s=sim.make_s, make_cpu_s=sim.make_cpu_s, make_jobs=sim.make_jobs,
                   compiled=sim.compiled, build_dir=sim.directory.name)
        print(f"{coding}: R={R} W={W}: {n_syn} synapses, {mem / 1e6:.2f} MB, build {sim.build_time_s:.1f} s "
              f"(nvcc {'%.0f s' % sim.make_s if sim.compiled else 'not run: binary reused'})", flush=True)
        del sim
    if backend is None:
        return out
    if backend != "cuda_standalone":
        opts = {}  # the dry run's CPU stand-in
    t0 = time.perf_counter()
    res = snn.run(x_test[:n], backend=backend, batch_size=R * W, replicas=R, progress=False, **opts)
    wall = time.perf_counter() - t0
    events = float(np.sum(res.synops_per_sample))
    # images/s and events/s from the compiled binary's runs (loading its arrays, the GPU's start and the
    # simulation); wall_s adds code generation and writing the arrays of the cached build
    run_s = res.run_time_s
    out.update(backend=backend, images=n, wall_s=wall, run_s=run_s, build_s=res.build_time_s, runs=res.runs,
               ips=n / run_s, ips_wall=n / wall, events_per_s=events / run_s,
               synops_per_image=events / n, acc=res.accuracy(y_test[:n]),
               acc_ann=float(np.mean(ann_pred == y_test[:n])), agree=res.agreement(ann_pred),
               predictions=res.predictions.tolist())
    print(f"{coding} on {backend}: {n} images in {run_s:.2f} s of binary runs ({wall:.2f} s with code generation) "
          f"= {n / run_s:.1f} images/s, {events / run_s:.3g} synaptic events/s, accuracy {out['acc'] * 100:.2f} % "
          f"(ANN {out['acc_ann'] * 100:.2f} %)", flush=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codings", nargs="+", default=["rate", "tdsnn", "tpc"], choices=["rate", "tdsnn", "tpc"])
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--replicas", type=int, default=100, help="network copies in one group (R)")
    ap.add_argument("--windows", type=int, default=100, help="sample windows per copy and run (W)")
    ap.add_argument("--T", type=int, default=32, help="time steps of the rate coding")
    ap.add_argument("--calib", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=3, help="ANN training epochs")
    ap.add_argument("--train-samples", type=int, default=60000, help="ANN training images")
    ap.add_argument("--finetune-epochs", type=int, default=1, help="fine-tuning of tdsnn/tpc (10k images)")
    ap.add_argument("--float32", action="store_true", help="single-precision state variables")
    ap.add_argument("--sj-batch", type=int, nargs="*", default=[100, 1000, 10000])
    ap.add_argument("--cpu-fallback", action="store_true",
                    help="without a GPU, run on cpp_standalone and SpikingJelly on the CPU (dry run)")
    ap.add_argument("--build-without-gpu", action="store_true", help="without a GPU, still compile with nvcc")
    ap.add_argument("--json", type=Path, help="write the figures to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    gpu = gpu_visible() and torch.cuda.is_available()
    backend = "cuda_standalone" if gpu else ("cpp_standalone" if args.cpu_fallback else None)
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    data = (x_train, y_train, x_test, y_test)
    n_train = args.train_samples
    model, _ = trained_lenet("avg", x_train[:n_train], y_train[:n_train], args.epochs, 0)
    result = {"gpu": gpu_name(), "backend": backend, "codings": {}, "spikingjelly": []}

    def save():
        if args.json:
            args.json.write_text(json.dumps(result, indent=1))

    for coding in args.codings:
        result["codings"][coding] = run_coding(coding, model, data, args, backend)
        save()
        rate = result["codings"][coding]
        if coding == "rate" and backend is not None:
            n = args.images
            ann_pred = ann_predictions(model, x_test[:n])
            for batch in args.sj_batch:
                row = spikingjelly_throughput(
                    model, x_train, x_test, y_test, ann_pred, {"predictions": np.asarray(rate["predictions"])},
                    SimpleNamespace(brian2_images=n, sj_batch=batch, brian2_T=args.T, calib=args.calib,
                                    device="cuda" if gpu else "cpu"))
                result["spikingjelly"].append(row)
                print(f"SpikingJelly batch {batch}: {row}", flush=True)
                save()
    for r in result["codings"].values():
        r.pop("predictions", None)
    save()
    return result


if __name__ == "__main__":
    main()
