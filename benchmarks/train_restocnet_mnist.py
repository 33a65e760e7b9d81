"""ReStoCNet on MNIST: 36C3-2P-128FC-10FC with stochastic-STDP binary kernels (Srinivasan & Roy 2019).

Full run (records its section through benchmarks/report.py, which re-renders BENCHMARKS.md; about 15-25 min
on the shared 2-core machine):

    BIOSNN_MNIST=/work/shared/data/mnist.npz OMP_NUM_THREADS=1 nice -n 10 \\
        .venv/bin/python benchmarks/train_restocnet_mnist.py

Smoke run (--quick: small sizes, --no-record: leave the results alone):

    BIOSNN_MNIST=/work/shared/data/mnist.npz .venv/bin/python benchmarks/train_restocnet_mnist.py --quick --no-record

What it does:

1. Kernels: ``--patches`` random 3x3 patches (mean intensity in ``[--min-mean, --max-mean]``) of the
   first ``--kernel-images`` training digits (the paper: 10 000) are presented one after the other to
   the Brian2 patch network of :mod:`biosnn.learning.stochastic_stdp` (36 kernel neurons, binary
   synapses with stochastic STDP, dropout among maps, homeostatic thresholds), on ``--backend``.
2. Features: the binary kernels (levels -1/+1, one scale per layer from the 99.9th percentile of the
   activations) in a rate-coded IF network, ``--T`` steps, 2x2 average pooling of the spikes:
   36 x 13 x 13 spike rates per image, for all training and test images, from the exact reference
   (:meth:`RestocFeatures.reference`, checked bit for bit against ``simulate_rate`` on
   ``--verify`` images), and from Brian2 (runtime) on the first ``--check`` test images.
3. Readout: 128FC-10FC (ReLU) trained with Adam on the training features (``--epochs``), test
   accuracy on all test images. The same readout on random binary kernels (the STDP network's
   start weights) is the control (``--control``).
4. Kernel memory: 1 bit per binary weight against 32 bits per weight of a full-precision kernel of
   the same shape.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def log(*a):
    print(*a, flush=True)


def readout_accuracy(features, x_tr, y_tr, x_te, y_te, args):
    """Train the 128FC-10FC readout on ``features`` of the images; test accuracy (and features of test)."""
    from biosnn.datasets import accuracy, train_classifier
    from biosnn.learning.restoc_network import readout_model
    f_tr = features.reference(x_tr, batch_size=args.ref_batch)
    f_te = features.reference(x_te, batch_size=args.ref_batch)
    model = train_classifier(readout_model(features.n_features, args.hidden, 10, seed=args.seed), f_tr, y_tr,
                             epochs=args.epochs, lr=args.lr, batch_size=args.batch, seed=args.seed)
    return accuracy(model, f_te, y_te), f_te


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", default=None, help="mnist.npz (default: $BIOSNN_MNIST)")
    p.add_argument("--arch", default="36C3-2P")
    p.add_argument("--kernel-images", type=int, default=10000)
    p.add_argument("--patches", type=int, default=5000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rule", type=json.loads, default={"gamma_anti": "0.1"},
                   help="stochastic STDP constants (JSON)")
    p.add_argument("--neuron", type=json.loads, default={"theta_plus": "0.4"},
                   help="patch network constants (JSON)")
    p.add_argument("--min-mean", type=float, default=0.05)
    p.add_argument("--max-mean", type=float, default=0.6)
    p.add_argument("--train-samples", type=int, default=20000)
    p.add_argument("--test-samples", type=int, default=10000)
    p.add_argument("--T", type=int, default=32)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--ref-batch", type=int, default=500)
    p.add_argument("--verify", type=int, default=200, help="images checked against simulate_rate")
    p.add_argument("--check", type=int, default=8, help="test images simulated by Brian2 (runtime)")
    p.add_argument("--control", action=argparse.BooleanOptionalAction, default=True,
                   help="also train the readout on the random start kernels")
    p.add_argument("--backend", default="cpp_standalone", help="Brian2 backend of the STDP network")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--no-record", action="store_true", help="do not record the section (BENCHMARKS.md)")
    args = p.parse_args(argv)
    if args.quick:
        args.kernel_images, args.patches, args.train_samples, args.test_samples = 1000, 2000, 3000, 1000
        args.epochs, args.verify, args.check = 3, 50, 2

    import torch
    torch.set_num_threads(1)
    from biosnn.datasets import load_mnist
    from biosnn.learning.restoc_network import RestocFeatures, compare_features, kernel_memory, \
        parse_architecture, train_conv_layers

    t_start, load_start = time.perf_counter(), os.getloadavg()[0]
    x_tr, y_tr = load_mnist("train", path=args.path)
    x_te, y_te = load_mnist("test", path=args.path)
    x_tr, y_tr = x_tr[:args.train_samples], y_tr[:args.train_samples]
    x_te, y_te = x_te[:args.test_samples], y_te[:args.test_samples]
    layers = parse_architecture(args.arch)

    t0 = time.perf_counter()
    kernels, runs = train_conv_layers(x_tr[:args.kernel_images], layers, patches_per_layer=args.patches,
                                      steps=args.steps, rule=args.rule, neuron=args.neuron, min_mean=args.min_mean,
                                      max_mean=args.max_mean,
                                      T=args.T, backend=args.backend, seed=args.seed)
    t_stdp = time.perf_counter() - t0
    run = runs[0]
    dead = int(np.sum(~np.any(run.kernels == 1, axis=1)))
    log(f"STDP ({args.backend}): {args.patches} patches x {args.steps} steps in {t_stdp:.1f} s "
        f"(simulation incl. build {run.wall_time_s:.1f} s); switched {100 * run.switched_fraction():.1f} %, "
        f"w_max fraction {100 * float(np.mean(run.kernels == 1)):.1f} %, spikes per kernel "
        f"{run.spikes_per_kernel.min()}..{run.spikes_per_kernel.max()}, kernels without any w_max synapse "
        f"{dead}")
    for k in range(min(6, len(run.kernels))):
        log(f"  kernel {k}: {run.kernels[k].reshape(-1, layers[0].kernel_size).astype(int).tolist()}")

    t0 = time.perf_counter()
    feats = RestocFeatures.build(kernels, layers, x_tr[:1000], T=args.T)
    n_v = min(args.verify, len(x_te))
    verified = bool(np.array_equal(feats.reference(x_te[:n_v]), feats.simulate_rate(x_te[:n_v])))
    acc, f_te = readout_accuracy(feats, x_tr, y_tr, x_te, y_te, args)
    t_main = time.perf_counter() - t0
    log(f"readout on STDP kernels: test accuracy {100 * acc:.2f} % ({len(x_te)} images), "
        f"features + training {t_main:.0f} s; fast reference == simulate_rate on {n_v} images: {verified}")

    t0 = time.perf_counter()
    n_c = min(args.check, len(x_te))
    chk = compare_features(feats.brian2(x_te[:n_c], backend="runtime", batch_size=n_c), f_te[:n_c], feats)
    t_b2 = time.perf_counter() - t0
    log(f"Brian2 runtime features on {n_c} test images: {100 * chk['equal_fraction']:.3f} % equal to the "
        f"reference, max difference {chk['max_spike_diff']:g} spike(s), {t_b2:.0f} s")

    acc_ctrl = None
    if args.control:
        t0 = time.perf_counter()
        ctrl = RestocFeatures.build([r.initial for r in runs], layers, x_tr[:1000], T=args.T)
        acc_ctrl, _ = readout_accuracy(ctrl, x_tr, y_tr, x_te, y_te, args)
        log(f"control, random binary kernels (the STDP start): {100 * acc_ctrl:.2f} % "
            f"({time.perf_counter() - t0:.0f} s)")
    mem = kernel_memory(layers, 1)
    total = time.perf_counter() - t_start
    log(f"kernel memory: {mem['binary_bits']} bits vs {mem['full_bits']} bits float32 -> {mem['compression']:.1f}x")
    log(f"total {total / 60:.1f} min")

    cmd = "BIOSNN_MNIST=/work/shared/data/mnist.npz OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python " \
          + " ".join(["benchmarks/train_restocnet_mnist.py"] + list(argv if argv is not None else sys.argv[1:]))
    text = f"""
## ReStoCNet-style stochastic STDP, {args.arch}-{args.hidden}FC-10FC on MNIST (`benchmarks/train_restocnet_mnist.py`)

- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {platform.processor() or platform.machine()},
  {os.cpu_count()} cores shared with other jobs, no GPU; torch with 1 thread.
- Command: `{cmd}`
- Kernels: {layers[0].maps} binary 3x3 kernels learned by stochastic STDP (Brian2 {args.backend}) from
  {args.patches} patch presentations ({args.steps} steps each) of the first {args.kernel_images} training digits;
  dropout among maps p = 0.5, homeostatic thresholds; patch mean intensity in [{args.min_mean}, {args.max_mean}];
  rule constants {args.rule or 'default'}, patch-network constants {args.neuron or 'default'} (others: package
  defaults). Readout {args.hidden}FC-10FC trained by Adam
  ({args.epochs} epochs) on the pooled spike rates (T = {args.T}) of {len(x_tr)} training images.
- Features of all images come from the exact reference (checked equal to `simulate_rate` on {n_v} images:
  {verified}); Brian2 (runtime) on {n_c} test images: {100 * chk['equal_fraction']:.3f} % of the features equal
  to the reference's, the rest differ by at most {chk['max_spike_diff']:g} spike (threshold ties: Brian2 sums the
  synaptic inputs in another order).

| figure | value |
|---|---|
| test accuracy, STDP kernels ({len(x_te)} images) | **{100 * acc:.2f} %** (paper: 98.54 %) |
| test accuracy, random binary kernels (control) | {'-' if acc_ctrl is None else f'{100 * acc_ctrl:.2f} %'} |
| synapses switched by STDP / w_max fraction / all-w_min kernels | {100 * run.switched_fraction():.1f} % / {100 * float(np.mean(run.kernels == 1)):.1f} % / {dead} of {len(run.kernels)} |
| kernel memory, binary vs float32 (same shapes) | {mem['binary_bits']} vs {mem['full_bits']} bits = {mem['compression']:.1f}x (paper: 39.5x vs a prior full-precision conv SNN) |
| wall time: STDP / features + readout / total | {t_stdp:.0f} s / {t_main:.0f} s / {total / 60:.1f} min |
"""
    log(text)
    if not args.no_record:
        import report  # benchmarks/report.py
        data = {"accuracy": acc, "control_accuracy": acc_ctrl, "kernel_memory": report.scalars(mem),
                "switched_fraction": run.switched_fraction(), "stdp_s": t_stdp, "features_readout_s": t_main,
                "total_s": total}
        path = report.record("restocnet_mnist" + ("_quick" if args.quick else ""), text, command=cmd,
                             script="benchmarks/train_restocnet_mnist.py", data=data,
                             load=(load_start, os.getloadavg()[0]))
        log(f"recorded {path} and re-rendered BENCHMARKS.md")


if __name__ == "__main__":
    main()
