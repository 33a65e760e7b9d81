"""STC: decaying-threshold spike trains
====================================

Train a CNN, fine-tune it as an STCSNN (decaying-threshold spike trains), run it in Brian2.

Command line::

    python examples/convert_stc.py --dataset mnist --T 8 --theta0 1 --backend cpp_standalone

Spatio-temporal conversion blocks (Xu et al., STCSNN): every ReLU becomes a spike train encoding
block (IF neurons starting at the value to encode, threshold theta0 * exp(-t / tau), reset by
subtraction), the next layer is its synapse and a current accumulator sums the synaptic currents
weighted by the thresholds. The script trains the ANN (BatchNorm, average pooling), reports its
accuracy and the accuracy of the same weights as an STCSNN, fine-tunes the STCSNN with the paper's
equivalent gradient (ReLU + conv), converts it to Brian2 and runs test images there, checking
every score against the torch forward pass.

Data: MNIST from --path, $BIOSNN_MNIST or ~/.cache/biosnn/mnist.npz (downloaded there when missing
and online), or scikit-learn's 8x8 digits (--dataset digits, offline).
"""

import argparse
import time

import numpy as np
import torch
import torch.nn as nn

import biosnn
from biosnn.datasets import accuracy, load_digits, load_mnist, train_classifier


def lenet5_bn() -> nn.Module:
    """LeNet-5 with BatchNorm and average pooling (28x28 input, 10 classes)."""
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.BatchNorm1d(120), nn.ReLU(),
        nn.Linear(120, 84), nn.BatchNorm1d(84), nn.ReLU(), nn.Linear(84, 10))


def digits_cnn_bn() -> nn.Module:
    """A small CNN with BatchNorm and average pooling for the 8x8 digits."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(16 * 2 * 2, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["mnist", "digits"], default="mnist")
    p.add_argument("--path", default=None, help="mnist.npz (default: $BIOSNN_MNIST or the cache)")
    p.add_argument("--epochs", type=int, default=3, help="ANN training epochs")
    p.add_argument("--finetune-epochs", type=int, default=1, help="STCSNN fine-tuning epochs (0: convert directly)")
    p.add_argument("--lr", type=float, default=2e-3, help="ANN learning rate (Adam); fine-tuning uses lr/10")
    p.add_argument("--train-samples", type=int, default=60000)
    p.add_argument("--test-samples", type=int, default=10000)
    p.add_argument("--T", type=int, default=8, help="time steps per block")
    p.add_argument("--theta0", type=float, default=1.0, help="initial threshold")
    p.add_argument("--tau", type=float, default=2.0, help="threshold decay time constant (steps)")
    p.add_argument("--first-layer", choices=["analog", "spiking"], default="analog")
    p.add_argument("--backend", default="cpp_standalone")
    p.add_argument("--brian2-samples", type=int, default=1000, help="test images simulated in Brian2")
    p.add_argument("--batch-size", type=int, default=500, help="sample windows per Brian2 run")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    if args.dataset == "mnist":
        (x_train, y_train), (x_test, y_test) = load_mnist("train", args.path), load_mnist("test", args.path)
        make, shape = lenet5_bn, (1, 28, 28)
    else:
        (x_train, y_train), (x_test, y_test) = load_digits("train"), load_digits("test")
        make, shape = digits_cnn_bn, (1, 8, 8)
    x_train, y_train = x_train[:args.train_samples], y_train[:args.train_samples]
    x_test, y_test = x_test[:args.test_samples], y_test[:args.test_samples]
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    ann = train_classifier(make(), x_train, y_train, epochs=args.epochs, lr=args.lr, batch_size=64, seed=args.seed)
    print(f"trained the ANN in {time.perf_counter() - t0:.0f} s")

    stc = biosnn.prepare(ann, "stc", T=args.T, theta0=args.theta0, tau=args.tau, first_layer=args.first_layer)
    direct = accuracy(stc, x_test, y_test, batch_size=500)
    if args.finetune_epochs > 0:
        t0 = time.perf_counter()
        train_classifier(stc, x_train, y_train, epochs=args.finetune_epochs, lr=args.lr / 10, batch_size=64,
                         seed=args.seed + 1)
        print(f"fine-tuned the STCSNN in {time.perf_counter() - t0:.0f} s")
    stc_acc = accuracy(stc, x_test, y_test, batch_size=500)

    snn = biosnn.convert(stc, "stc", calibration=x_train[:500], input_shape=shape, name=f"stc_{args.dataset}")
    n = min(args.brian2_samples, len(x_test))
    res = snn.run(x_test[:n], backend=args.backend, batch_size=min(args.batch_size, n))
    ref = snn.reference(x_test[:n])
    same_spikes = all(np.array_equal(res.layer_spikes[k], ref["layer_spikes"][k]) for k in res.layer_spikes)
    print(f"ANN accuracy            {100 * accuracy(ann, x_test, y_test):.2f} %  ({len(x_test)} test images)")
    print(f"STCSNN accuracy, direct {100 * direct:.2f} %  (ANN weights, T = {args.T}, theta0 = {args.theta0:g}, "
          f"tau = {args.tau:g})")
    print(f"STCSNN accuracy         {100 * stc_acc:.2f} %  (after {args.finetune_epochs} fine-tuning epochs, torch)")
    print(f"Brian2 accuracy         {100 * res.accuracy(y_test[:n]):.2f} %  ({n} images, {args.backend}, "
          f"{snn.window_steps} steps per image)")
    print(f"Brian2 vs torch         max |score diff| {np.max(np.abs(res.scores - ref['scores'])):.1e}, "
          f"predictions equal {np.array_equal(res.predictions, ref['predictions'])}, "
          f"spike counts equal {same_spikes}")
    print(f"spikes per image        {np.mean(res.spikes_per_sample):.0f}")
    print(f"synops per image        {np.mean(res.synops_per_sample):.0f}  (+ {snn.cab_macs} CAB MACs; "
          f"ANN MACs {snn.ann_ops})")
    print("STEB inputs above sum(theta) " + ", ".join(f"{k}: {100 * v:.2f} %" for k, v in snn.saturation.items()))
    print(f"wall time               {res.wall_time_s:.1f} s ({res.images_per_second:.1f} images/s)")
    return res


if __name__ == "__main__":
    main()
