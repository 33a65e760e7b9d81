"""TDSNN reverse coding
====================

TDSNN reverse coding (Zhang et al., AAAI 2019): train a CNN, re-train it with G, convert, run in Brian2.

Command line::

    python examples/convert_tdsnn.py --L 5 --backend cpp_standalone          # LeNet-5 on MNIST
    python examples/convert_tdsnn.py --dataset digits --L 2 --backend runtime  # small CNN, offline

1. trains the ANN (ReLU; LeNet-5 with max pooling for MNIST, biosnn.demo.digits_cnn for digits);
2. ``biosnn.prepare(model, "tdsnn", L=...)`` puts G(x) = exp(ceil(L ln(x+1))/L) before every weighted
   layer; the copy is re-trained;
3. ``biosnn.convert(..., "tdsnn")``: LIF neurons with leak exp(-1/L), a ticking neuron per layer, every
   neuron fires once, at step ceil(L ln(x+1)) of its layer's active period;
4. evaluates the SNN on the test samples with the exact discrete-time reference, runs the first
   --brian2-samples in Brian2 and checks that Brian2 gives the reference's predictions and operation counts.

MNIST is read from --path, $BIOSNN_MNIST or ~/.cache/biosnn/mnist.npz. Prints ANN / G-ANN / SNN accuracy,
the period length, and additions and multiplications per image (SNN vs ANN, Table 2 of the paper).
"""

import argparse
import time

import numpy as np
import torch

import biosnn
from biosnn.datasets import accuracy, load_digits, load_mnist, train_classifier


def data(dataset: str, path, train_samples: int, test_samples: int):
    if dataset == "digits":
        (x, y), (xt, yt) = load_digits("train"), load_digits("test")
    else:
        (x, y), (xt, yt) = load_mnist("train", path), load_mnist("test", path)
    return x[:train_samples], y[:train_samples], xt[:test_samples], yt[:test_samples]


def model_for(dataset: str):
    if dataset == "digits":
        from biosnn.demo import digits_cnn
        return digits_cnn()
    from convert_mnist import lenet5  # examples/convert_mnist.py, next to this script
    return lenet5("max")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["mnist", "digits"], default="mnist")
    p.add_argument("--path", default=None, help="mnist.npz (default: $BIOSNN_MNIST or the cache)")
    p.add_argument("--L", type=float, default=5.0, help="leak constant in time steps (paper: 1 to 5)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs of the ReLU ANN")
    p.add_argument("--retrain-epochs", type=int, default=1, help="re-training epochs with G")
    p.add_argument("--train-samples", type=int, default=60000)
    p.add_argument("--test-samples", type=int, default=10000, help="evaluated with the exact reference")
    p.add_argument("--brian2-samples", type=int, default=200, help="also simulated in Brian2")
    p.add_argument("--backend", default="cpp_standalone")
    p.add_argument("--batch-size", type=int, default=100, help="sample windows per Brian2 run")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    digits = args.dataset == "digits"
    x, y, xt, yt = data(args.dataset, args.path, args.train_samples, args.test_samples)
    lr = 1e-2 if digits else 1e-3
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = train_classifier(model_for(args.dataset), x, y, epochs=args.epochs, lr=lr, batch_size=64 if digits else 128,
                             seed=args.seed)
    prepared = train_classifier(biosnn.prepare(model, "tdsnn", L=args.L), x, y, epochs=args.retrain_epochs,
                                lr=lr / 3, batch_size=64 if digits else 128, seed=args.seed)
    print(f"trained and re-trained in {time.perf_counter() - t0:.0f} s")

    snn = biosnn.convert(prepared, "tdsnn", calibration=x[:1000], input_shape=x.shape[1:], name=f"tdsnn_{args.dataset}")
    t0 = time.perf_counter()
    ref = snn.reference(xt)
    ref_s = time.perf_counter() - t0
    g_pred = np.argmax(snn.g_ann(xt), axis=1)
    print(f"ANN accuracy          {100 * accuracy(model, xt, yt):.2f} %")
    print(f"G-ANN accuracy        {100 * accuracy(prepared, xt, yt):.2f} %  (re-trained with G, L = {args.L:g})")
    print(f"SNN accuracy          {100 * np.mean(ref.predictions == yt):.2f} %  (exact reference, {len(xt)} samples, "
          f"{ref_s:.1f} s; agreement with the float64 G-ANN {100 * np.mean(ref.predictions == g_pred):.2f} %)")
    print(f"period T_il           {snn.T_il} steps (largest calibration spike step {snn.calibration_max_step}); "
          f"{snn.T} steps per sample; saturated neurons {sum(int(s.sum()) for s in ref.saturated.values())}")

    n = min(args.brian2_samples, len(xt))
    res = snn.run(xt[:n], backend=args.backend, batch_size=min(args.batch_size, n))
    same = bool(np.array_equal(res.predictions, ref.predictions[:n])
                and all(np.array_equal(res.extras[k], v[:n]) for k, v in ref.ops.items()))
    print(f"Brian2 equals the reference: {'yes' if same else 'NO'} (predictions and operation counts, {n} samples, "
          f"{args.backend}, {res.wall_time_s:.1f} s = {res.images_per_second:.1f} images/s incl. build)")
    ops = {k: float(np.mean(v)) for k, v in ref.ops.items()}
    print(f"spikes per image      {np.mean(res.spikes_per_sample):,.0f} (every neuron once) + "
          f"{ops['ticks']:.1f} ticks")
    print(f"additions per image   {ops['additions']:,.0f} (synaptic {ops['synaptic_additions']:,.0f}, ticking "
          f"{ops['tick_additions']:,.0f}, bias {ops['bias_additions']:,.0f}); ANN {snn.ann_additions:,}")
    print(f"multiplications per image {ops['multiplications']:,.0f} (leak); ANN {snn.ann_multiplications:,}")
    return res


if __name__ == "__main__":
    main()
