"""Temporal pattern coding (TPC)
=============================

Temporal pattern coding: fine-tune a CNN with n-bit activations, convert it, run it in Brian2.

Command line::

    python examples/convert_tpc.py --dataset mnist --bits 4 8 --backend cpp_standalone
    python examples/convert_tpc.py --dataset digits --bits 4 --steps 3     # truncate one LSB

Trains a float CNN (LeNet-5 of examples/convert_mnist.py for MNIST, a small CNN for scikit-learn's
8x8 digits), then for every bit width n: ``biosnn.prepare(model, "tpc", bits=n)`` (activations
quantised to n bits, straight-through gradients), a short fine-tuning, ``biosnn.convert`` and a
Brian2 run of the test images.  Prints the accuracy of the quantised ANN and of the spiking
network, whether Brian2 reproduced the exact numpy reference on every image, spikes and synaptic
operations per image, and the wall time.  MNIST is read from --path, $BIOSNN_MNIST or the cache.
"""

import argparse
import copy
import time

import numpy as np
import torch
import torch.nn as nn

import biosnn
from biosnn.datasets import accuracy, load_digits, load_mnist, train_classifier


def digits_cnn() -> nn.Module:
    """conv 8@3x3 - avg pool - conv 16@3x3 - avg pool - fc 64 - fc 10 (ReLU) for 8x8 images."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(16 * 2 * 2, 64), nn.ReLU(), nn.Linear(64, 10))


def quantised_ann_predictions(qat: nn.Module, x) -> np.ndarray:
    """Predictions of the quantisation-aware model evaluated in float64 (the exact n-bit quantised ANN)."""
    with torch.no_grad():
        return copy.deepcopy(qat).double().eval()(torch.as_tensor(np.asarray(x, dtype=np.float64))).argmax(1).numpy()


def load(dataset: str, path, train_samples: int, test_samples: int):
    if dataset == "digits":
        (x, y), (xt, yt) = load_digits("train"), load_digits("test")
    else:
        (x, y), (xt, yt) = load_mnist("train", path), load_mnist("test", path)
    return x[:train_samples], y[:train_samples], xt[:test_samples], yt[:test_samples]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    p.add_argument("--path", default=None, help="mnist.npz (default: $BIOSNN_MNIST or the cache)")
    p.add_argument("--bits", type=int, nargs="+", default=[4, 8], help="bit widths n to convert")
    p.add_argument("--steps", type=int, default=None, help="time steps per window k <= n (default n)")
    p.add_argument("--epochs", type=int, default=10, help="float training epochs")
    p.add_argument("--finetune-epochs", type=int, default=2, help="quantisation-aware epochs per bit width")
    p.add_argument("--train-samples", type=int, default=60000)
    p.add_argument("--test-samples", type=int, default=200)
    p.add_argument("--backend", default="runtime")
    p.add_argument("--batch-size", type=int, default=500, help="samples per Brian2 run")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    x, y, xt, yt = load(args.dataset, args.path, args.train_samples, args.test_samples)
    input_shape = tuple(x.shape[1:])
    torch.manual_seed(args.seed)
    if args.dataset == "digits":
        model = digits_cnn()
    else:
        from convert_mnist import lenet5
        model = lenet5("avg")
    batch = 32 if args.dataset == "digits" else 128
    t0 = time.perf_counter()
    train_classifier(model, x, y, epochs=args.epochs, lr=1e-3, batch_size=batch, seed=args.seed)
    seconds = time.perf_counter() - t0
    print(f"float ANN accuracy     {100 * accuracy(model, xt, yt):.2f} %  (trained in {seconds:.0f} s)")
    for bits in args.bits:
        steps = bits if args.steps is None else min(args.steps, bits)
        qat = biosnn.prepare(copy.deepcopy(model), "tpc", bits=bits, steps=steps)
        train_classifier(qat, x, y, epochs=args.finetune_epochs, lr=2e-4, batch_size=batch, seed=args.seed)
        snn = biosnn.convert(qat, "tpc", calibration=x[:500], input_shape=input_shape, steps=steps,
                             name=f"tpc{bits}")
        res = snn.run(xt, backend=args.backend, batch_size=min(args.batch_size, len(xt)), progress=False)
        ref = snn.reference(xt)
        exact = (np.array_equal(res.scores, ref.scores)
                 and all(np.array_equal(res.layer_spikes[k], ref.layer_spikes[k]) for k in ref.layer_spikes))
        print(f"--- {bits} bits, {steps} steps per window ({snn.latency_steps} steps latency, {snn.plan.depth} stages)")
        qpred = quantised_ann_predictions(qat, xt)
        print(f"quantised ANN accuracy {100 * np.mean(qpred == yt):.2f} %  (float64; float32: "
              f"{100 * accuracy(qat, xt, yt):.2f} %)")
        print(f"TPC SNN accuracy       {100 * res.accuracy(yt):.2f} %")
        print(f"agreement with the quantised ANN {100 * res.agreement(qpred):.2f} %")
        print(f"Brian2 equals the exact reference on every image: {'yes' if exact else 'NO'}")
        print(f"spikes per image       {np.mean(res.spikes_per_sample):.0f}")
        print(f"synops per image       {np.mean(res.synops_per_sample):.0f}  (ANN MACs {snn.ann_ops})")
        print(f"wall time              {res.wall_time_s:.1f} s ({res.images_per_second:.1f} images/s, {args.backend})")


if __name__ == "__main__":
    main()
