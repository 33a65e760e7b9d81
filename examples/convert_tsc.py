"""Temporal switch coding (TSC)
============================

Convert a trained CNN to a temporal-switch-coded (TSC) SNN and compare it with the ANN and rate coding.

Command line::

    python examples/convert_tsc.py --T 8 16 32 --samples 200                 # scikit-learn digits (offline)
    python examples/convert_tsc.py --dataset mnist --T 16 32 --samples 500 --backend cpp_standalone

Trains a small CNN on digits (or LeNet-5 from examples/convert_mnist.py on MNIST: --path, $BIOSNN_MNIST
or the cache), converts it with biosnn.convert(..., "tsc", T=...) for every --T and with rate coding at
--rate-T, runs the first --samples test images through Brian2 and prints, per coding: accuracy,
agreement with the ANN, spikes, memory accesses and additions per image (TSC: synaptic additions =
memory accesses, plus one v += I per neuron and integration step; rate: one addition per synaptic event).
"""

import argparse
import time

import numpy as np
import torch

import biosnn
from biosnn.datasets import accuracy, load_digits, load_mnist, train_classifier


def data_and_model(args):
    """(x_train, y_train, x_test, y_test, untrained model, input shape, learning rate) for --dataset."""
    if args.dataset == "digits":
        from biosnn.demo import digits_cnn
        x, y = load_digits("train")
        xt, yt = load_digits("test")
        return x, y, xt, yt, digits_cnn(), (1, 8, 8), 1e-2
    from convert_mnist import lenet5
    x, y = load_mnist("train", args.path)
    xt, yt = load_mnist("test", args.path)
    return x[:args.train_samples], y[:args.train_samples], xt, yt, lenet5(args.pool), (1, 28, 28), 1e-3


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["digits", "mnist"], default="digits")
    p.add_argument("--path", default=None, help="mnist.npz (default: $BIOSNN_MNIST or the cache)")
    p.add_argument("--pool", choices=["avg", "max"], default="max", help="LeNet-5 pooling (MNIST)")
    p.add_argument("--train-samples", type=int, default=60000, help="MNIST training images")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--T", type=int, nargs="+", default=[8, 16, 32], help="TSC steps per period")
    p.add_argument("--rate-T", type=int, default=64, help="time steps of the rate-coded comparison")
    p.add_argument("--samples", type=int, default=200, help="test images simulated in Brian2")
    p.add_argument("--backend", default="runtime")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    x, y, xt, yt, model, shape, lr = data_and_model(args)
    xt, yt = xt[:args.samples], yt[:args.samples]
    t0 = time.perf_counter()
    model = train_classifier(model, x, y, epochs=args.epochs, lr=lr, batch_size=64, seed=args.seed)
    with torch.no_grad():
        ann_pred = model(torch.as_tensor(xt)).argmax(1).numpy()
    print(f"trained in {time.perf_counter() - t0:.0f} s; ANN accuracy {100 * accuracy(model, xt, yt):.2f} % "
          f"on {len(xt)} test images")
    batch = min(args.batch_size, len(xt))
    rows = []
    for T in args.T:
        snn = biosnn.convert(biosnn.prepare(model, "tsc"), "tsc", calibration=x[:500], input_shape=shape, T=T,
                             name=f"tsc_{args.dataset}")
        res = snn.run(xt, backend=args.backend, batch_size=batch)
        ex = res.extras
        rows.append((f"TSC T={T}", res, np.mean(ex["memory_accesses"]), np.mean(ex["synaptic_additions"]),
                     np.mean(ex["additions"]), snn.window_steps))
    rate = biosnn.convert(biosnn.prepare(model, "rate"), "rate", calibration=x[:500], input_shape=shape,
                          T=args.rate_T, name=f"rate_{args.dataset}")
    rres = rate.run(xt, backend=args.backend, batch_size=batch)
    rate_adds = float(np.mean(rres.synops_per_sample))
    rows.append((f"rate T={args.rate_T}", rres, rate_adds, rate_adds, None, args.rate_T))
    for label, res, mem, syn, total, steps in rows:
        total_txt = "" if total is None else f", all additions {total:,.0f}"
        print(f"{label}: accuracy {100 * res.accuracy(yt):.2f} %, agreement {100 * res.agreement(ann_pred):.2f} %, "
              f"spikes {np.mean(res.spikes_per_sample):,.0f}, memory accesses {mem:,.0f}, "
              f"synaptic additions {syn:,.0f}{total_txt} per image; {steps} steps per image, "
              f"{res.images_per_second:.1f} images/s ({args.backend})")
    for label, res, mem, syn, total, steps in rows[:-1]:
        print(f"rate T={args.rate_T} / {label}: {rate_adds / syn:.1f}x the synaptic additions, "
              f"{np.mean(rres.spikes_per_sample) / np.mean(res.spikes_per_sample):.1f}x the spikes "
              "(rate coding's analog input current and its MACs not counted)")
    return rows


if __name__ == "__main__":
    main()
