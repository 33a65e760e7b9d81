"""Model zoo x codings on MNIST: does each model convert, and how well does the SNN agree with its ANN?

Every model of :mod:`biosnn.testing.zoo` (LeNet-5, the PyTorch MNIST example with its in-``forward``
normalisation and log-softmax, VGG-11/16-BN, ResNet-20 with the akamaster ``F.avg_pool2d`` head,
torchvision-style ResNet-18, a DenseNet-style network, a MobileNet-style network; reduced widths for
the CPU) is trained briefly on MNIST (padded to 32x32 where the model takes 32x32), then prepared and
converted with every coding that allows its layers.  On ``--test`` test images the coding's exact
reference (numpy/torch; equal to the Brian2 run, see tests/test_zoo.py) gives: agreement with the
prepared ANN's predictions, accuracy, spikes and synaptic operations per image.

Rate coding also runs on the QCFS model (``biosnn.prepare(model, "rate", levels=L)``, Bu et al. 2022)
fine-tuned for ``--qcfs-epochs``, at ``--qcfs-T`` steps.

Run (records ``benchmarks/results/model_zoo.json`` and re-renders BENCHMARKS.md, :mod:`report`):

    BIOSNN_MNIST=/work/shared/data/mnist.npz nice -n 10 .venv/bin/python benchmarks/zoo.py

``--no-record`` prints only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import biosnn
from biosnn.codings.rate.qcfs import init_thresholds
from biosnn.datasets import accuracy, load_mnist, train_classifier
from biosnn.testing.zoo import INPUT_SIZE, ZOO, build, codings_for, evaluate

TITLE = "## Model zoo x codings (benchmarks/zoo.py)"
#: CPU widths (channels of the first stage)
WIDTH = {"lenet5": 6, "mnist_example": 8, "vgg11": 8, "vgg16": 8, "resnet20": 8, "resnet18": 8,
         "densenet": 4, "mobilenet": 4}


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    p = (size - x.shape[-1]) // 2
    return F.pad(torch.from_numpy(x), (p, p, p, p)).numpy() if p else x


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(ZOO), choices=list(ZOO))
    p.add_argument("--train", type=int, default=6000, help="training images (default 6000)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--test", type=int, default=300, help="test images compared (default 300)")
    p.add_argument("--calib", type=int, default=256, help="calibration images (default 256)")
    p.add_argument("--levels", type=int, default=8, help="QCFS quantisation levels L (default 8)")
    p.add_argument("--qcfs-T", type=int, nargs="+", default=[16, 32, 64], help="rate T for the QCFS models")
    p.add_argument("--qcfs-epochs", type=int, default=1, help="QCFS fine-tuning epochs (default 1)")
    p.add_argument("--qcfs-lr", type=float, default=3e-4, help="QCFS fine-tuning learning rate")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    load0 = os.getloadavg()[0]
    warnings.simplefilter("ignore")
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    x_train, y_train = x_train[:args.train], y_train[:args.train]
    x_test, y_test = x_test[:args.test], y_test[:args.test]
    rows = []
    t_all = time.time()
    for name in args.models:
        s = INPUT_SIZE[name]
        xtr, xte = _pad(x_train, s), _pad(x_test, s)
        t0 = time.time()
        model = build(name, WIDTH[name])
        model = train_classifier(model, xtr, y_train, epochs=args.epochs, batch_size=64)
        model.eval()
        acc = accuracy(model, xte, y_test)
        print(f"{name}: trained in {time.time() - t0:.0f} s, ANN accuracy {acc:.3f}", flush=True)
        runs = [(c, {}, None) for c in codings_for(name)]
        q = biosnn.prepare(model, "rate", levels=args.levels)
        init_thresholds(q, xtr[:args.calib])
        q = train_classifier(q.train(), xtr, y_train, epochs=args.qcfs_epochs, lr=args.qcfs_lr, batch_size=64).eval()
        runs[1:1] = [(f"rate QCFS L={args.levels} T={T}", dict(T=T, levels=args.levels), q) for T in args.qcfs_T]
        for coding, params, prepared in runs:
            t1 = time.time()
            try:
                r = evaluate(model, coding.split()[0], xtr[:args.calib], xte, (1, s, s), prepared=prepared, **params)
            except Exception as exc:  # a refusal is a result of the table
                rows.append((name, coding, None, f"{type(exc).__name__}: {str(exc)[:90]}"))
                print(f"  {coding}: {type(exc).__name__}: {exc}", flush=True)
                continue
            snn_acc = float(np.mean(r["snn_predictions"] == y_test))
            ann_acc = float(np.mean(r["ann"] == y_test))
            rows.append((name, coding, (acc, ann_acc, r["agreement"], snn_acc, r["spikes"], r["synops"]), None))
            print(f"  {coding}: agreement {r['agreement']:.3f}, prepared ANN {ann_acc:.3f}, SNN {snn_acc:.3f}, "
                  f"spikes {r['spikes']:.0f}, synops {r['synops'] or float('nan'):.0f} ({time.time() - t1:.0f} s)",
                  flush=True)
        if not args.no_record:   # after every model, so that an interrupted run leaves its table so far
            _record(args, rows, t_all, load0, done=args.models.index(name) + 1)


def _record(args, rows, t_all, load0, done):
    lines = [TITLE, "",
             f"{time.time() - t_all:.0f} s. Random-init models trained briefly (Adam, batch 64, {args.train} MNIST "
             f"images, {args.epochs} epoch(s)), widths " + ", ".join(f"{n} {WIDTH[n]}" for n in args.models)
             + "; default coding parameters (rate T=64 analog, TSC T=32, TPC 6 bits, TDSNN L=5, STC T=8 with "
             "weights rescaled from the calibration data); rate QCFS: `prepare(model, 'rate', levels=L)` "
             f"fine-tuned {args.qcfs_epochs} epoch(s) at lr {args.qcfs_lr:g}, converted with v(0) = theta/2; "
             f"{args.test} test images, {args.calib} calibration images; agreement = the coding's exact reference "
             "predicts the prepared ANN's class (for QCFS: the QCFS model's); spikes and synops per image.", "",
             "| model | coding | ANN acc | prepared ANN acc | agreement | SNN acc | spikes | synops |",
             "|---|---|---|---|---|---|---|---|"]
    for name, coding, vals, err in rows:
        if vals is None:
            lines.append(f"| {name} | {coding} | refused: {err} | | | | | |")
        else:
            acc, ann_acc, agree, snn_acc, spikes, synops = vals
            syn = "" if synops is None else f"{synops:.3g}"
            lines.append(f"| {name} | {coding} | {acc:.3f} | {ann_acc:.3f} | {agree:.3f} | {snn_acc:.3f} | "
                         f"{spikes:.3g} | {syn} |")
    if done < len(args.models):
        lines.append(f"\nInterrupted or running: {done} of {len(args.models)} models ({', '.join(args.models[done:])} "
                     "not measured).")
    text = "\n".join(lines) + "\n"
    print(text)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import report
    data = {"rows": [{"model": n, "coding": c, "error": e,
                      **({} if v is None else dict(zip(("ann_acc", "prepared_acc", "agreement", "snn_acc",
                                                        "spikes", "synops"), v)))}
                     for n, c, v, e in rows]}
    out = report.record("model_zoo", text, command=report.command_line(), script="benchmarks/zoo.py",
                        data=data, load=(load0, os.getloadavg()[0]))
    print(f"recorded {out}")


if __name__ == "__main__":
    sys.exit(main())
