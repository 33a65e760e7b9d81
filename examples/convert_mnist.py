"""Rate-coded LeNet-5 on MNIST
===========================

Train a LeNet-5-style CNN on MNIST, convert it to a rate-coded SNN, run the test set in Brian2.

Command line::

    python examples/convert_mnist.py --backend cpp_standalone --T 64 --pool max

MNIST is read from --path, $BIOSNN_MNIST or ~/.cache/biosnn/mnist.npz (downloaded there when
missing and online). Prints ANN vs SNN accuracy, per-sample agreement with the ANN, spikes and
synaptic operations per image, and the wall time.
"""

import argparse
import time

import numpy as np
import torch
import torch.nn as nn

import biosnn
from biosnn.datasets import accuracy, load_mnist, train_classifier


def lenet5(pool: str = "avg") -> nn.Module:
    """LeNet-5 (conv 6@5x5 - pool - conv 16@5x5 - pool - fc 120 - fc 84 - fc 10), ReLU."""
    Pool = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), Pool(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), Pool(2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--path", default=None, help="mnist.npz (default: $BIOSNN_MNIST or the cache)")
    p.add_argument("--pool", choices=["avg", "max"], default="avg")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--train-samples", type=int, default=60000)
    p.add_argument("--test-samples", type=int, default=10000)
    p.add_argument("--T", type=int, default=64, help="time steps per image")
    p.add_argument("--normalization", default="percentile", choices=["percentile", "max", "spike-norm"])
    p.add_argument("--backend", default="cpp_standalone")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    x_train, y_train = load_mnist("train", args.path)
    x_test, y_test = load_mnist("test", args.path)
    x_train, y_train = x_train[:args.train_samples], y_train[:args.train_samples]
    x_test, y_test = x_test[:args.test_samples], y_test[:args.test_samples]
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = train_classifier(lenet5(args.pool), x_train, y_train, epochs=args.epochs, lr=1e-3,
                             batch_size=128, seed=args.seed)
    print(f"trained LeNet-5 ({args.pool} pooling) in {time.perf_counter() - t0:.0f} s")
    ann_acc = accuracy(model, x_test, y_test)
    with torch.no_grad():
        ann_pred = model(torch.as_tensor(x_test)).argmax(1).numpy()

    snn = biosnn.convert(biosnn.prepare(model, "rate"), coding="rate", calibration=x_train[:1000],
                         input_shape=(1, 28, 28), T=args.T, normalization=args.normalization, name="lenet5")
    res = snn.run(x_test, backend=args.backend, batch_size=min(args.batch_size, len(x_test)))
    print(f"ANN accuracy          {100 * ann_acc:.2f} %")
    print(f"SNN accuracy          {100 * res.accuracy(y_test):.2f} %  (T = {args.T}, {args.normalization})")
    print(f"agreement with ANN    {100 * res.agreement(ann_pred):.2f} %")
    print(f"spikes per image      {np.mean(res.spikes_per_sample):.0f}")
    print(f"synops per image      {np.mean(res.synops_per_sample):.0f}  (ANN MACs {snn.ann_ops})")
    print(f"wall time             {res.wall_time_s:.1f} s ({res.images_per_second:.1f} images/s, {args.backend})")
    return res


if __name__ == "__main__":
    main()
