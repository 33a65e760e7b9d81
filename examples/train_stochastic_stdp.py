"""Stochastic binary STDP kernels
==============================

Train binary convolution kernels with stochastic STDP and classify with a backprop readout.

ReStoCNet-style (Srinivasan & Roy 2019): the kernels of ``--arch`` (default
36C3-2P, the paper's MNIST network) learn from random image patches in a
Brian2 patch network with binary synapses (stochastic STDP, dropout among
output maps, homeostatic thresholds); a rate-coded spiking network with the
binary kernels extracts pooled spike-rate features; a ``--hidden``-unit
fully connected readout is trained on them with torch.  Brian2's features
are checked against the exact reference on ``--check`` test images.

Command line::

    python examples/train_stochastic_stdp.py                      # sklearn digits, small
    BIOSNN_MNIST=/path/mnist.npz python examples/train_stochastic_stdp.py --dataset mnist \\
        --maps 36 --patches 10000 --train-samples 60000

Prints the fraction of switched synapses, the readout accuracy, the Brian2 /
reference agreement and the kernel memory compression.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    p.add_argument("--path", default=None, help="mnist.npz (default: $BIOSNN_MNIST or the cache)")
    p.add_argument("--arch", default="8C3-2P", help="conv layers, paper notation (e.g. 36C3-2P)")
    p.add_argument("--patches", type=int, default=600, help="patch presentations per layer")
    p.add_argument("--kernel-images", type=int, default=1000, help="images the patches come from")
    p.add_argument("--train-samples", type=int, default=1000)
    p.add_argument("--test-samples", type=int, default=400)
    p.add_argument("--steps", type=int, default=20, help="time steps per patch presentation")
    p.add_argument("--max-mean", type=float, default=1.0, help="largest mean intensity of a patch")
    p.add_argument("--T", type=int, default=32, help="time steps of the feature extractor")
    p.add_argument("--hidden", type=int, default=128, help="hidden units of the readout (0: linear)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--check", type=int, default=4, help="test images checked on Brian2")
    p.add_argument("--backend", default="runtime", help="Brian2 backend of the STDP network and check")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from biosnn.datasets import load_digits, load_mnist
    from biosnn.learning.restoc_network import fit_restoc, parse_architecture

    layers = parse_architecture(args.arch)
    if args.dataset == "digits":
        x_tr, y_tr = load_digits("train")
        x_te, y_te = load_digits("test")
    else:
        x_tr, y_tr = load_mnist("train", path=args.path)
        x_te, y_te = load_mnist("test", path=args.path)
    x_tr, y_tr = x_tr[:args.train_samples], y_tr[:args.train_samples]
    x_te, y_te = x_te[:args.test_samples], y_te[:args.test_samples]
    t0 = time.perf_counter()
    res = fit_restoc(x_tr[:args.kernel_images], x_tr, y_tr, x_te, y_te, layers, patches_per_layer=args.patches,
                     steps=args.steps, max_mean=args.max_mean, T=args.T, hidden=args.hidden,
                     epochs=args.epochs, check_samples=args.check, stdp_backend=args.backend,
                     feature_backend=args.backend, seed=args.seed)
    print(f"architecture {args.arch}-{args.hidden}FC-10FC on {args.dataset}: {len(x_tr)} training, "
          f"{len(x_te)} test images; kernels from {args.patches} patches of "
          f"{min(len(x_tr), args.kernel_images)} images")
    for k, run in enumerate(res.runs):
        print(f"layer {k + 1}: switched synapses {100 * run.switched_fraction():.1f} %, "
              f"w_max fraction {100 * float(np.mean(run.kernels == run.kernels.max())):.1f} %, "
              f"spikes per kernel {run.spikes_per_kernel.mean():.0f}, STDP wall time {run.wall_time_s:.1f} s")
        if layers[k].kernel_size <= 5 and k == 0:
            for row, kern in enumerate(run.kernels[:4]):
                print(f"  kernel {row}: {kern.reshape(-1, layers[k].kernel_size).astype(int).tolist()}")
    print(f"readout accuracy {100 * res.test_accuracy:.2f} %")
    chk = res.brian2_check
    if chk["samples"]:
        print(f"Brian2 ({args.backend}) features on {chk['samples']} test images: "
              f"{100 * chk['equal_fraction']:.2f} % equal to the reference, "
              f"max difference {chk['max_spike_diff']:g} spike(s)")
    mem = res.memory
    print(f"kernel memory {mem['binary_bits']} bits binary vs {mem['full_bits']} bits float32: "
          f"compression {mem['compression']:.1f}x")
    print(f"wall time {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
