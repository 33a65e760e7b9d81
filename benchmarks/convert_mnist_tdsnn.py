"""TDSNN (reverse coding, Zhang et al. AAAI 2019) LeNet-5 on MNIST: errors for L = 1, 2, 3, 5, the paper's
Table 2 operation counts, and Brian2 cpp_standalone throughput.

Full run (records its section through benchmarks/report.py, which re-renders BENCHMARKS.md):

    BIOSNN_MNIST=/work/shared/data/mnist.npz nice -n 10 .venv/bin/python benchmarks/convert_mnist_tdsnn.py

Smoke run (add --no-record to leave the results alone):

    BIOSNN_MNIST=/work/shared/data/mnist.npz .venv/bin/python benchmarks/convert_mnist_tdsnn.py --quick --no-record

What it does:

1. Trains LeNet-5 with max pooling (``examples/convert_mnist.py``'s ``lenet5("max")``; the paper's LeNet
   is Caffe's, larger) on the 60k training images: Adam lr 1e-3, batch 128, seed 0, ``--epochs`` epochs,
   cached in ``benchmarks/.cache/`` (``convert_mnist_rate.trained_lenet``). Reports the ANN's test error.
2. For every L in ``--L``: ``biosnn.prepare(model, "tdsnn", L=L)`` (G before every weighted layer),
   re-trained for ``--retrain-epochs`` epochs (Adam lr ``--retrain-lr``, cached), test error of the
   re-trained float32 torch model ("G-ANN"); ``biosnn.convert`` with ``--calib`` training images
   (period ``T_il`` = 1 + largest calibration spike step + 2); SNN error on all test images with the
   discrete-time reference ``biosnn.codings.tdsnn.reference.simulate_tdsnn(exact=False)`` (the network
   Brian2 simulates, with one matrix product per layer) and its per-image operation counts (additions from
   synaptic events, ticking neurons and biases; multiplications from the leak), against the ANN's (Table 2
   of the paper).
   The first ``--verify`` test images are also simulated with ``simulate_tdsnn(exact=True)`` (Brian2's
   float operations in Brian2's order) and every spike step is compared with the fast path.
3. Brian2 ``cpp_standalone`` on the first ``--brian2-images`` test images for every L in ``--brian2-L``
   (default 5 only: every L is another structure to compile, minutes each on a loaded machine): ``snn.run``
   (build incl. compilation unless cached), compared with the exact simulation (predictions, scores bit for
   bit, every operation count, one spike per neuron); images/s of the compiled binary alone, from the run
   times it reports (``Recording.meta['wall_time_s']`` of each run of ``--brian2-batch`` sample windows).
4. Prints everything and records its Markdown section (``report.record('tdsnn_mnist', ...)``, which replaces
   ``benchmarks/results/tdsnn_mnist.json`` and re-renders ``BENCHMARKS.md``; ``--no-record``: don't).

``--quick``: 1 epoch on 10,000 training images, re-training 1 epoch, 500 test images, L in 2 and 5,
100 images simulated exactly and in Brian2 (L = 5).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import biosnn  # noqa: E402
from biosnn.datasets import accuracy, load_mnist, train_classifier  # noqa: E402
from convert_mnist_rate import (CACHE, ann_predictions, cpu_model, log,  # noqa: E402
                                trained_lenet)

import report  # noqa: E402  (benchmarks/report.py)

PAPER = ("Zhang et al. 2019, Caffe LeNet (conv 20@5x5, pool, conv 50@5x5, pool, ip 500, ip 10), L = 5: "
         "DNN error 0.84 %, SNN error 0.92 %; DNN 2239k multiplications / 2235k additions, SNN 1920k / "
         "3194k: DNN/SNN 1.17x (mult), 0.7x (add), 0.875x (total); accuracy 98.47 % (L = 1) to 99.08 % (L = 5)")


def retrained(model, L: float, x, y, args) -> torch.nn.Module:
    """``prepare(model, "tdsnn", L)`` re-trained (Adam, batch 128), cached by L/epochs/samples/lr/seed."""
    path = CACHE / (f"lenet5-max-e{args.epochs}-n{len(x)}-tdsnn-L{L:g}-e{args.retrain_epochs}"
                    f"-lr{args.retrain_lr:g}-seed{args.seed}.pt")
    prepared = biosnn.prepare(model, "tdsnn", L=L)
    if path.exists():
        prepared.load_state_dict(torch.load(path, weights_only=True))
        log(f"[L={L:g}] loaded re-trained G-ANN from {path.relative_to(ROOT)}")
        return prepared.eval(), None
    t0 = time.perf_counter()
    train_classifier(prepared, x, y, epochs=args.retrain_epochs, lr=args.retrain_lr, batch_size=128, seed=args.seed)
    torch.save(prepared.state_dict(), path)
    took = time.perf_counter() - t0
    log(f"[L={L:g}] re-trained with G ({args.retrain_epochs} epochs) in {took:.0f} s")
    return prepared.eval(), took


def brian2_check(snn, exact, x, args) -> dict:
    """``snn.run`` on cpp_standalone against the exact reference; the compiled binary's own run time is
    ``SNNResult.run_time_s``."""
    n, B = len(x), min(args.brian2_batch, len(x))
    res = snn.run(x, backend="cpp_standalone", batch_size=B, progress=False)
    binary_s = res.run_time_s
    return {"n": n, "B": B, "runs": res.runs, "e2e_s": res.wall_time_s, "binary_s": binary_s,
            "ips": n / binary_s, "same_pred": bool(np.array_equal(res.predictions, exact.predictions[:n])),
            "same_ops": all(np.array_equal(res.extras[k], v[:n]) for k, v in exact.ops.items()),
            "same_scores": bool(np.array_equal(res.scores, exact.scores[:n])),
            "once": all(np.array_equal(c, np.full(n, snn.graph[k].size)) for k, c in res.layer_spikes.items())}


def evaluate(model, L, x_train, y_train, x_test, y_test, args) -> dict:
    prepared, train_s = retrained(model, L, x_train, y_train, args)
    row = {"L": L, "train_s": train_s, "gann32_acc": accuracy(prepared, x_test, y_test)}
    with torch.no_grad():
        torch_pred = ann_predictions(prepared, x_test)
    snn = biosnn.convert(prepared, "tdsnn", calibration=x_train[:args.calib], input_shape=(1, 28, 28),
                         name=f"lenet5_tdsnn_L{L:g}")
    g_pred = np.argmax(snn.g_ann(x_test, batch_size=args.ref_batch), axis=1)
    t0 = time.perf_counter()
    ref = snn.reference(x_test, batch_size=args.ref_batch, exact=False)
    row.update(ref_s=time.perf_counter() - t0, T_il=snn.T_il, window=snn.T, calib_max=snn.calibration_max_step,
               acc=float(np.mean(ref.predictions == y_test)), gann64_acc=float(np.mean(g_pred == y_test)),
               agree_g64=float(np.mean(ref.predictions == g_pred)),
               agree_torch=float(np.mean(ref.predictions == torch_pred)),
               saturated=int(sum(int(s.sum()) for s in ref.saturated.values())),
               ops={k: float(np.mean(v)) for k, v in ref.ops.items()},
               spikes=int(sum(v.shape[1] for v in ref.steps.values())),
               ann_mult=snn.ann_multiplications, ann_add=snn.ann_additions)
    nv = min(args.verify, len(x_test))
    t0 = time.perf_counter()
    exact = snn.reference(x_test[:nv], batch_size=args.ref_batch)
    row.update(verify_n=nv, verify_s=time.perf_counter() - t0,
               fast_equal=all(np.array_equal(exact.steps[k], v[:nv]) for k, v in ref.steps.items())
               and bool(np.array_equal(exact.predictions, ref.predictions[:nv])))
    log(f"[L={L:g}] T_il={snn.T_il} ({snn.T} steps/image): G-ANN error {100 * (1 - row['gann32_acc']):.2f} %, "
        f"SNN error {100 * (1 - row['acc']):.2f} % (reference {row['ref_s']:.0f} s), agreement with the float64 "
        f"G-ANN {100 * row['agree_g64']:.2f} %, saturated neurons {row['saturated']}; every spike step equal to the "
        f"exact simulation on {nv} images: {row['fast_equal']} ({row['verify_s']:.0f} s)")
    if L in args.brian2_L:
        row["b2"] = b2 = brian2_check(snn, exact, x_test[:min(args.brian2_images, nv)], args)
        log(f"[L={L:g}] Brian2 cpp_standalone on {b2['n']} images: predictions equal {b2['same_pred']}, scores "
            f"bit for bit {b2['same_scores']}, operation counts equal {b2['same_ops']}, one spike per neuron "
            f"{b2['once']}; snn.run {b2['e2e_s']:.1f} s, binary {b2['binary_s']:.2f} s = {b2['ips']:.0f} images/s")
    return row


def _took(seconds) -> str:
    return "loaded from the cache of an earlier invocation" if seconds is None else f"{seconds:.0f} s"


def _k(v: float) -> str:
    return f"{v / 1e3:,.1f}k"


def markdown(args, argv, ann_acc, ann_info, rows, total_s, load_start) -> str:
    env = [f"{k}={os.environ[k]}" for k in ("BIOSNN_MNIST", "BIOSNN_CACHE_DIR") if os.environ.get(k)]
    cmd = " ".join(env + ["nice -n 10", ".venv/bin/python", "benchmarks/convert_mnist_tdsnn.py"] + list(argv))
    n = args.test_samples
    lines = [f"## TDSNN reverse coding (Zhang et al. 2019), LeNet-5 on MNIST{' (--quick)' if args.quick else ''}", "",
             f"- Date: {date.today().isoformat()}. Machine: {platform.processor() or platform.machine()} "
             f"({cpu_model()}), {os.cpu_count()} cores shared with other jobs (1-min load average "
             f"{load_start:.1f} at start, {os.getloadavg()[0]:.1f} at end), no GPU; torch 1 thread. Python "
             f"{platform.python_version()}, torch {torch.__version__}, brian2 {__import__('brian2').__version__}.",
             f"- Command (total {total_s / 60:.1f} min, cached models included): `{cmd}`",
             f"- ANN: LeNet-5 with max pooling (`examples/convert_mnist.py`), Adam lr 1e-3, batch 128, {args.epochs} "
             f"epochs on {args.train_samples} images ({_took(ann_info['train_s'])}). Re-training with G: "
             f"{args.retrain_epochs} epoch(s), Adam lr {args.retrain_lr:g} ("
             + ", ".join(f"L = {r['L']:g}: {_took(r['train_s'])}" for r in rows)
             + f"). Calibration (period length): {args.calib} training images.",
             f"- Errors on {n} test images. SNN error: the discrete-time reference `simulate_tdsnn(exact=False)` "
             f"(one matrix product per layer for the inhibitory-period sums; every spike step equal to the exact "
             f"simulation, which does Brian2's float operations, on the first {rows[0]['verify_n']} test images: "
             f"{'yes' if all(r['fast_equal'] for r in rows) else 'NO'}). G-ANN: the re-trained float32 torch model.",
             f"- Paper: {PAPER}.", "",
             "| L | T_il (steps) | steps per image | ANN error | G-ANN error | SNN error | SNN = G-ANN (float64) | "
             "SNN = G-ANN (torch float32) | saturated neurons |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['L']:g} | {r['T_il']} | {r['window']} | {100 * (1 - ann_acc):.2f} % | "
                     f"{100 * (1 - r['gann32_acc']):.2f} % | **{100 * (1 - r['acc']):.2f} %** | "
                     f"{100 * r['agree_g64']:.2f} % | {100 * r['agree_torch']:.2f} % | {r['saturated']} |")
    lines += ["", "Operations per image (the paper's Table 2; SNN: mean over the test images; additions = synaptic "
              "events incl. spikes into max-pool neurons (the paper counts pooling comparisons as additions) + one "
              "per tick and not-yet-fired neuron + biases; multiplications = leak, per LIF neuron T_il steps up to "
              "its release plus one per active step until it fires; the DNN does M N multiplications and (M - 1) N "
              "+ N (bias) additions per layer and (M - 1) N max-pool comparisons):", "",
              "| L | DNN mult | DNN add | SNN mult | SNN add (synaptic / ticking / bias) | ticks | spikes | "
              "DNN/SNN mult | DNN/SNN add | DNN/SNN total |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o = r["ops"]
        dm, da = r["ann_mult"], r["ann_add"]
        lines.append(f"| {r['L']:g} | {_k(dm)} | {_k(da)} | {_k(o['multiplications'])} | {_k(o['additions'])} "
                     f"({_k(o['synaptic_additions'])} / {_k(o['tick_additions'])} / {_k(o['bias_additions'])}) | "
                     f"{o['ticks']:.1f} | {r['spikes']:,} | {dm / o['multiplications']:.2f}x | "
                     f"{da / o['additions']:.2f}x | {(dm + da) / (o['multiplications'] + o['additions']):.2f}x |")
    b2rows = [r for r in rows if "b2" in r]
    if b2rows:
        lines += ["", "Brian2 cpp_standalone (`snn.run(backend='cpp_standalone')`), first test images, against the "
                  "exact simulation:", "",
                  "| L | images | predictions / scores bit for bit / all operation counts / one spike per neuron | "
                  "snn.run end to end | compiled binary only | images/s (binary) |", "|---|---|---|---|---|---|"]
        for r in b2rows:
            b = r["b2"]
            yes = " / ".join("yes" if b[k] else "NO" for k in ("same_pred", "same_scores", "same_ops", "once"))
            lines.append(f"| {r['L']:g} | {b['n']} | {yes} | {b['e2e_s']:.1f} s (code generation and compilation "
                         f"unless cached) | {b['binary_s']:.2f} s ({b['runs']} runs of {b['B']} windows) | "
                         f"{b['ips']:.0f} |")
    lines += ["", ""]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small smoke run (see above)")
    p.add_argument("--L", type=float, nargs="+", default=None, help="leak constants (1 2 3 5; --quick 2 5)")
    p.add_argument("--epochs", type=int, default=None, help="ANN training epochs (3; --quick 1)")
    p.add_argument("--retrain-epochs", type=int, default=1, help="re-training epochs with G")
    p.add_argument("--retrain-lr", type=float, default=5e-4)
    p.add_argument("--train-samples", type=int, default=None, help="(60000; --quick 10000)")
    p.add_argument("--test-samples", type=int, default=None, help="(10000; --quick 500)")
    p.add_argument("--calib", type=int, default=1000, help="calibration images (period length)")
    p.add_argument("--ref-batch", type=int, default=500, help="reference batch size")
    p.add_argument("--verify", type=int, default=None,
                   help="test images also simulated exactly (Brian2's float operations) (300; --quick 100)")
    p.add_argument("--brian2-L", type=float, nargs="*", default=[5.0], help="L run in Brian2 (5)")
    p.add_argument("--brian2-images", type=int, default=None, help="at most --verify (300; --quick 100)")
    p.add_argument("--brian2-batch", type=int, default=100, help="sample windows per Brian2 run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-only", action="store_true", help="train and cache the ANN and the G-ANNs, then stop")
    p.add_argument("--no-record", action="store_true", help="do not record the section (BENCHMARKS.md)")
    args = p.parse_args(argv)
    defaults = {"L": ([1.0, 2.0, 3.0, 5.0], [2.0, 5.0]), "epochs": (3, 1), "train_samples": (60000, 10000),
                "test_samples": (10000, 500), "brian2_images": (300, 100), "verify": (300, 100)}
    for k, (full, quick) in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, quick if args.quick else full)
    torch.set_num_threads(1)
    os.environ.setdefault("BIOSNN_PROGRESS", "0")
    load_start = os.getloadavg()[0]
    t_start = time.perf_counter()

    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    x_train, y_train = x_train[:args.train_samples], y_train[:args.train_samples]
    x_test, y_test = x_test[:args.test_samples], y_test[:args.test_samples]
    model, info = trained_lenet("max", x_train, y_train, args.epochs, args.seed)
    if args.train_only:
        for L in args.L:
            retrained(model, L, x_train, y_train, args)
        return
    ann_acc = accuracy(model, x_test, y_test)
    log(f"ANN (LeNet-5, max pooling) test error {100 * (1 - ann_acc):.2f} % ({len(x_test)} images)")
    rows = [evaluate(model, L, x_train, y_train, x_test, y_test, args) for L in args.L]

    text = markdown(args, argv, ann_acc, info, rows, time.perf_counter() - t_start, load_start)
    log("\n" + text)
    if not args.no_record:
        data = {"ann_accuracy": ann_acc, "rows": [report.scalars(r) for r in rows]}
        path = report.record("tdsnn_mnist" + ("_quick" if args.quick else ""), text,
                             command=report.command_line([__file__] + list(argv)),
                             script="benchmarks/convert_mnist_tdsnn.py", data=data,
                             load=(load_start, os.getloadavg()[0]))
        log(f"recorded {path} and re-rendered BENCHMARKS.md")


if __name__ == "__main__":
    main()
