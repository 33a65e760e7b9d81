"""Model zoo x codings on MNIST: does each model convert, and how well does the SNN agree with its ANN?

Every model of :mod:`biosnn.testing.zoo` (LeNet-5, the PyTorch MNIST example with its in-``forward``
normalisation and log-softmax, VGG-11/16-BN, ResNet-20 with the akamaster ``F.avg_pool2d`` head,
torchvision-style ResNet-18, a DenseNet-style network, a MobileNet-style network; reduced widths for
the CPU) is trained briefly on MNIST (padded to 32x32 where the model takes 32x32), then prepared and
converted with every coding that allows its layers.  On ``--test`` test images the coding's exact
reference (numpy/torch; equal to the Brian2 run, see tests/test_zoo.py) gives: agreement with the
prepared ANN's predictions, accuracy, spikes and synaptic operations per image.  A coding that does not
allow a model's layers gets a row "refused: <the ConversionError's reason>".

Rate coding runs on the model as it is (``prepare(model, "rate")``) and on the QCFS model
(``biosnn.prepare(model, "rate", levels=L)``, Bu et al. 2022, average pools folded into their readers)
fine-tuned for ``--qcfs-epochs``, and the QCFS model with signed IF neurons (``signed=True``), each at every
``--T``: one reference run of ``max(T)`` steps gives
the scores after each shorter window too (the dynamics do not depend on ``T``).  The signed QCFS model
also converts with ``match_levels=True`` (one run per ``T``, a multiple of ``L``), and with
``match_levels=True, burst=L`` (up to ``L`` spikes per neuron and step in one event: the SNN then
computes the QCFS network exactly, up to float rounding).

``--models`` runs a part of the zoo: the recorded table keeps the rows of the other models from
earlier runs with the same settings (stated in the table), so the zoo can be measured in parts.

Run (records ``benchmarks/results/model_zoo.json`` and re-renders BENCHMARKS.md, :mod:`report`):

    BIOSNN_MNIST=/work/shared/data/mnist.npz nice -n 10 .venv/bin/python benchmarks/zoo.py

or in parts (one model per run; the table keeps the other models' rows):

    for m in lenet5 mnist_example mobilenet resnet20 vgg11 densenet resnet18 vgg16; do
        BIOSNN_MNIST=/work/shared/data/mnist.npz nice -n 10 .venv/bin/python benchmarks/zoo.py --models $m; done

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
from biosnn.codings.rate.qcfs import init_thresholds, qcfs_modules, with_levels
from biosnn.datasets import accuracy, load_mnist, train_classifier
from biosnn.errors import ConversionError
from biosnn.testing.zoo import INPUT_SIZE, ZOO, ann_classes, build, codings_for, evaluate

TITLE = "## Model zoo x codings (benchmarks/zoo.py)"
#: the codings tried on every model besides rate (a model whose layers a coding does not allow gets a
#: "refused" row with the reason of the ConversionError)
OTHER_CODINGS = ("tsc", "tpc", "tdsnn", "stc")
#: CPU widths (channels of the first stage)
WIDTH = {"lenet5": 6, "mnist_example": 8, "vgg11": 8, "vgg16": 8, "resnet20": 8, "resnet18": 8,
         "densenet": 8, "mobilenet": 8}


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    p = (size - x.shape[-1]) // 2
    return F.pad(torch.from_numpy(x), (p, p, p, p)).numpy() if p else x


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(ZOO), choices=list(ZOO))
    p.add_argument("--train", type=int, default=10000, help="training images (default 10000)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--test", type=int, default=200, help="test images compared (default 200)")
    p.add_argument("--calib", type=int, default=256, help="calibration images (default 256)")
    p.add_argument("--levels", type=int, default=8, help="QCFS quantisation levels L (default 8)")
    p.add_argument("--T", type=int, nargs="+", default=[8, 16, 32, 64], help="rate T (plain and QCFS)")
    p.add_argument("--qcfs-epochs", type=int, default=3, help="QCFS fine-tuning epochs (default 3)")
    p.add_argument("--qcfs-lr", type=float, default=1e-3, help="QCFS fine-tuning learning rate (default 1e-3)")
    p.add_argument("--no-record", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
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
        q = biosnn.prepare(model, "rate", levels=args.levels)
        init_thresholds(q, xtr[:args.calib])
        q = train_classifier(q.train(), xtr, y_train, epochs=args.qcfs_epochs, lr=args.qcfs_lr, batch_size=64).eval()
        L = args.levels
        for label, prepared, signed in (("rate", biosnn.prepare(model, "rate"), False),
                                        (f"rate QCFS L={L}", q, False),
                                        (f"rate QCFS signed L={L}", q, True),
                                        (f"rate QCFS signed match_levels L={L}", q, "match"),
                                        (f"rate QCFS signed match_levels burst={L} L={L}", q, ("match", L))):
            t1 = time.time()
            try:
                runs = _rate_runs(prepared, xtr[:args.calib], xte, (1, s, s), args.T, signed)
            except ConversionError as exc:   # a refusal is a result of the table
                rows.append((name, label, None, _reason(exc)))
                print(f"  {label}: refused: {exc}", flush=True)
                continue
            for T, r in runs.items():
                snn_acc = float(np.mean(r["snn"] == y_test))
                ann_acc = float(np.mean(r["ann"] == y_test))
                rows.append((name, f"{label} T={T}", (acc, ann_acc, r["agreement"], r["agreement_LT"], snn_acc,
                                                       r["spikes"], None), None))
                lt = "" if r["agreement_LT"] is None else f" (L=T: {r['agreement_LT']:.3f})"
                print(f"  {label} T={T}: agreement {r['agreement']:.3f}{lt}, prepared ANN {ann_acc:.3f}, "
                      f"SNN {snn_acc:.3f}, spikes {r['spikes']:.0f}", flush=True)
            print(f"  ({time.time() - t1:.0f} s)", flush=True)
        for coding in OTHER_CODINGS:
            t1 = time.time()
            try:
                r = evaluate(model, coding, xtr[:args.calib], xte, (1, s, s))
            except ConversionError as exc:  # a refusal is a result of the table
                rows.append((name, coding, None, _reason(exc)))
                print(f"  {coding}: refused: {exc}", flush=True)
                if coding in codings_for(name):
                    raise RuntimeError(f"{name} should convert with {coding} (biosnn.testing.zoo.codings_for)") \
                        from exc
                continue
            if coding not in codings_for(name):
                raise RuntimeError(f"{name} converts with {coding}: update biosnn.testing.zoo.codings_for")
            snn_acc = float(np.mean(r["snn_predictions"] == y_test))
            ann_acc = float(np.mean(r["ann"] == y_test))
            rows.append((name, coding, (acc, ann_acc, r["agreement"], None, snn_acc, r["spikes"], r["synops"]), None))
            print(f"  {coding}: agreement {r['agreement']:.3f}, prepared ANN {ann_acc:.3f}, SNN {snn_acc:.3f}, "
                  f"spikes {r['spikes']:.0f}, synops {r['synops'] or float('nan'):.0f} ({time.time() - t1:.0f} s)",
                  flush=True)
        if not args.no_record:   # after every model, so that an interrupted run leaves its table so far
            _record(args, rows, t_all, load0, done=args.models.index(name) + 1)


def _reason(exc: ConversionError) -> str:
    """The first sentence of a refusal, for a table cell."""
    text = " ".join(str(exc).split()).replace("|", "/")
    first = text.split(". ")[0].split("; ")[0]
    return first if len(first) <= 160 else first[:157] + "..."


def _rate_runs(prepared, x_calib, x_eval, input_shape, Ts, signed=False) -> dict:
    """Rate coding of ``prepared`` at every ``T`` of ``Ts`` from one reference run of ``max(Ts)`` steps
    (``signed=True``: with signed IF neurons; ``"match"``: signed with ``match_levels``, one run per ``T``
    that is a multiple of the QCFS levels; ``("match", B)``: also ``burst=B``)."""
    xe = torch.as_tensor(np.asarray(x_eval), dtype=torch.float32)
    ann = ann_classes(prepared, xe)
    match = signed == "match" or isinstance(signed, tuple)
    if match:   # the network depends on T: one run per T (a multiple of L)
        L = qcfs_modules(prepared)[0].levels
        burst = {"burst": signed[1]} if isinstance(signed, tuple) else {}
        runs = {T: _rate_ref(prepared, x_calib, xe, input_shape, T, [T], signed=True, match_levels=True, **burst)
                for T in Ts if T % L == 0}
    else:
        ref = _rate_ref(prepared, x_calib, xe, input_shape, max(Ts), Ts, **({"signed": True} if signed else {}))
        runs = {T: ref for T in Ts}
    out = {}
    for T, ref in sorted(runs.items()):
        pred = np.argmax(ref.step_scores[T], axis=1)
        agree_lt = None
        if qcfs_modules(prepared) and not match:   # the ANN that T steps compute exactly in the first layer: QCFS with L = T
            ann_t = ann_classes(with_levels(prepared, T), xe)
            agree_lt = float(np.mean(pred == ann_t))
        out[T] = dict(agreement=float(np.mean(pred == ann)), agreement_LT=agree_lt, ann=ann, snn=pred,
                      spikes=float(np.mean(ref.step_spikes[T])))
    return out


def _rate_ref(prepared, x_calib, xe, input_shape, T, score_steps, **kw):
    """The exact reference of ``prepared`` converted with ``T`` and the conversion parameters ``kw``."""
    snn = biosnn.convert(prepared, "rate", calibration=torch.as_tensor(np.asarray(x_calib)), input_shape=input_shape,
                         T=T, **kw)
    return snn.reference(xe.numpy(), score_steps=score_steps)


def _settings(args) -> dict:
    return {k: getattr(args, k) for k in ("train", "epochs", "test", "calib", "levels", "T", "qcfs_epochs", "qcfs_lr")}


def _earlier_rows(args) -> list:
    """Rows of the recorded table, when it was measured with the same settings (:func:`_record` keeps those of
    the models this run has not measured yet)."""
    import json

    path = Path(__file__).resolve().parent / "results" / "model_zoo.json"
    try:
        data = json.loads(path.read_text())["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if data.get("settings") != _settings(args):
        return []
    return [(r["model"], r["coding"], None if r["error"] else tuple(r.get(k) for k in _KEYS), r["error"])
            for r in data["rows"]]


_KEYS = ("ann_acc", "prepared_acc", "agreement", "agreement_LT", "snn_acc", "spikes", "synops")


def _record(args, rows, t_all, load0, done):
    done = {r[0] for r in rows}
    rows = [r for r in _earlier_rows(args) if r[0] not in done] + rows
    order = {n: i for i, n in enumerate(ZOO)}
    rows.sort(key=lambda r: order[r[0]])    # stable: each model's rows keep their order
    lines = [TITLE, "",
             f"Last part {time.time() - t_all:.0f} s ({', '.join(args.models)}). Random-init models trained briefly "
             f"(Adam, batch 64, {args.train} MNIST images, {args.epochs} epoch(s); 32x32 models on images padded "
             "to 32x32), reduced widths (channels of the first stage) " + ", ".join(f"{n} {WIDTH[n]}" for n in ZOO)
             + "; default coding parameters (rate analog, percentile 99.9 normalisation, potential readout; "
             "TSC T=32, TPC 6 bits, TDSNN L=5, STC T=8 with weights rescaled from the calibration data); "
             "rate: the model as it is; rate QCFS: `prepare(model, 'rate', levels=L)` "
             f"fine-tuned {args.qcfs_epochs} epoch(s) at lr {args.qcfs_lr:g}, converted with v(0) = theta/2 and "
             "average pools folded into their readers; rate QCFS signed: the same model converted with signed IF "
             "neurons (`signed=True`, negative spikes; max pools as signed gates); signed match_levels: "
             "also `match_levels=True` (spikes worth T/L threshold steps: the SNN quantises to the model's L "
             "levels; one run per T); signed match_levels burst=L: also `burst=L` (up to L spikes of one sign "
             "per neuron and step, sent as one event worth their number and counted as that many spikes: each "
             "layer's count is its QCFS activation times L after every step); the other rate rows at each T come "
             f"from one reference run of max(T) steps (scores after T steps); {args.test} test images, "
             f"{args.calib} calibration images; agreement = the coding's exact reference predicts the prepared "
             "ANN's class, the ANN evaluated in float64 like the references (for QCFS: the QCFS model's, L "
             "levels); agreement L=T (QCFS rows): with the same QCFS "
             "model evaluated with L = T levels (`qcfs.with_levels`, thresholds kept), the ANN that T steps "
             "compute exactly in the first layer; spikes (for signed neurons: of either sign) and synops per "
             "image. Settings: " + repr(_settings(args)) + ".", "",
             "| model | coding | ANN acc | prepared ANN acc | agreement | agreement L=T | SNN acc | spikes | synops |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, coding, vals, err in rows:
        if vals is None:
            lines.append(f"| {name} | {coding} | refused: {err} | | | | | | |")
        else:
            acc, ann_acc, agree, agree_lt, snn_acc, spikes, synops = vals
            lt = "" if agree_lt is None else f"{agree_lt:.3f}"
            syn = "" if synops is None else f"{synops:.3g}"
            lines.append(f"| {name} | {coding} | {acc:.3f} | {ann_acc:.3f} | {agree:.3f} | {lt} | {snn_acc:.3f} | "
                         f"{spikes:.3g} | {syn} |")
    missing = [n for n in ZOO if n not in {r[0] for r in rows}]
    if missing:
        lines.append(f"\nNot measured yet: {', '.join(missing)}.")
    no_burst = [n for n in ZOO if n not in missing and not any(r[0] == n and "burst" in r[1] for r in rows)]
    if no_burst:   # measured before the burst rows were added
        lines.append(f"\nNo burst rows yet (measured before they were added): {', '.join(no_burst)}.")
    text = "\n".join(lines) + "\n"
    print(text)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import report
    data = {"settings": _settings(args),
            "rows": [{"model": n, "coding": c, "error": e, **({} if v is None else dict(zip(_KEYS, v)))}
                     for n, c, v, e in rows]}
    out = report.record("model_zoo", text, command=report.command_line(), script="benchmarks/zoo.py",
                        data=data, load=(load0, os.getloadavg()[0]))
    print(f"recorded {out}")


if __name__ == "__main__":
    sys.exit(main())
