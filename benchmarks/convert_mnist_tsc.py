"""Temporal Switch Coding (TSC) vs rate coding: LeNet-5 on MNIST, accuracy and operation counts per image.

Full run (records its section through benchmarks/report.py, which re-renders BENCHMARKS.md):

    BIOSNN_MNIST=/work/shared/data/mnist.npz nice -n 10 .venv/bin/python benchmarks/convert_mnist_tsc.py

Smoke run (a few minutes; --no-record leaves the results alone):

    BIOSNN_MNIST=/work/shared/data/mnist.npz .venv/bin/python benchmarks/convert_mnist_tsc.py --quick --no-record

What it does:

1. LeNet-5 (``examples/convert_mnist.py``'s ``lenet5``) trained as in ``benchmarks/convert_mnist_rate.py``
   (Adam, lr 1e-3, batch 128, seed 0, 3 epochs on the 60k training images, CPU; the state_dict is shared
   with that benchmark through ``benchmarks/.cache/``, so both compare the same ANN).
2. TSC for every T in ``--T`` (99.9th-percentile normalisation on ``--calib`` training images, rounding
   to the nearest step): accuracy, agreement with the ANN, spikes, memory accesses, synaptic and neuron
   additions per image and latency (steps per image) on all test images, from the exact reference
   ``biosnn.codings.tsc.reference.simulate_tsc`` (the network the Brian2 spec builds; the tests and
   step 4 check that Brian2 reproduces it).
3. Rate coding of the same ANN (``biosnn.convert(..., "rate", T=...)``, percentile 99.9, analog input
   current, potential readout) for every T in ``--rate-T`` on the first ``--rate-images`` test images,
   from the exact reference ``biosnn.codings.rate.reference.simulate_rate`` (the figures ``SNN.run``
   reports: ``synops_per_sample`` = its synaptic additions and memory accesses; neuron additions: one
   ``v += I + b`` per IF neuron and step).  TSC is reported on the same images next to it.
4. Brian2 ``cpp_standalone``: the TSC network at ``--brian2-T`` on the first ``--brian2-images`` test images
   (``snn.run``, ``--brian2-batch`` sample windows per run), images/s, and its predictions, scores, per-layer
   spikes and memory accesses compared with the reference; with ``--rate-brian2`` also the rate network
   at ``--rate-brian2-T`` on the same images.
5. Prints everything and records its Markdown section (``report.record('tsc_mnist', ...)``, which replaces
   ``benchmarks/results/tsc_mnist.json`` and re-renders ``BENCHMARKS.md``; ``--no-record``: don't).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import biosnn  # noqa: E402
from biosnn.frontends.torch_graph import snn_roles  # noqa: E402
from biosnn.codings.rate.reference import simulate_rate  # noqa: E402
from biosnn.datasets import load_mnist  # noqa: E402
from biosnn.metrics import synops  # noqa: E402
from convert_mnist_rate import ann_predictions, cpu_model, log, trained_lenet  # noqa: E402

import report  # noqa: E402  (benchmarks/report.py)


def figures(pred, y, ann, spikes, mem, syn_add, neuron_add, steps, input_add=0) -> dict:
    """One row: accuracy, agreement, SNN - ANN (pp) and per-image means (``input_add``: the synaptic
    additions caused by input spikes)."""
    n = len(pred)
    acc, ann_acc = float(np.mean(pred == y[:n])), float(np.mean(ann[:n] == y[:n]))
    return {"n": n, "acc": acc, "agree": float(np.mean(pred == ann[:n])), "diff_pp": 100 * (acc - ann_acc),
            "spikes": float(np.mean(spikes)), "mem": float(np.mean(mem)), "syn_add": float(np.mean(syn_add)),
            "neuron_add": float(np.mean(neuron_add)), "steps": int(steps),
            "hidden_add": float(np.mean(syn_add) - np.mean(input_add))}


def tsc_rows(model, x_train, x, y, ann, args) -> tuple[dict, dict]:
    """TSC reference at every T on ``x``: {T: row} and {T: result}."""
    rows, results = {}, {}
    for T in args.T:
        t0 = time.perf_counter()
        snn = biosnn.convert(biosnn.prepare(model, "tsc"), "tsc", calibration=x_train[:args.calib],
                             input_shape=(1, 28, 28), T=T, percentile=99.9, name="lenet5_tsc")
        r = snn.reference(x, batch_size=500)
        results[T] = r
        rows[T] = figures(r.predictions, y, ann, r.spikes_per_sample, r.memory_accesses, r.synaptic_additions,
                          np.full(len(x), r.neuron_additions), snn.window_steps, r.layer_events["input"])
        log(f"  TSC T={T:3d}: {100 * rows[T]['acc']:.2f} % ({rows[T]['diff_pp']:+.2f} pp), "
            f"{rows[T]['spikes']:,.0f} spikes, {rows[T]['mem']:,.0f} memory accesses, "
            f"{rows[T]['syn_add'] + rows[T]['neuron_add']:,.0f} additions per image "
            f"({time.perf_counter() - t0:.0f} s)")
    return rows, results


def rate_rows(model, x_train, x, y, ann, args) -> dict:
    """Rate-coded reference at every T on ``x``: {T: row}."""
    rows = {}
    for T in args.rate_T:
        t0 = time.perf_counter()
        snn = biosnn.convert(biosnn.prepare(model, "rate"), "rate", calibration=x_train[:args.calib],
                             input_shape=(1, 28, 28), T=T, normalization="percentile", percentile=99.9)
        r = simulate_rate(snn.graph, x, T, thresholds=snn.thresholds, readout=snn.readout, batch_size=250)
        counts = {k: v for k, v in r.counts.items() if k != snn.graph.output}
        events = synops(counts, snn.graph)
        if_neurons = sum(snn.graph[k].size for k, role in snn_roles(snn.graph).items()
                         if role == "if")
        rows[T] = figures(r.predictions, y, ann, sum(c.sum(axis=1) for c in counts.values()), events, events,
                          np.full(len(x), T * if_neurons), T)
        log(f"  rate T={T:3d}: {100 * rows[T]['acc']:.2f} % ({rows[T]['diff_pp']:+.2f} pp), "
            f"{rows[T]['spikes']:,.0f} spikes, {rows[T]['syn_add']:,.0f} synaptic additions per image "
            f"({time.perf_counter() - t0:.0f} s)")
    return rows


def brian2_run(snn, x, B: int) -> tuple:
    """Compile (timed), then ``snn.run`` on cpp_standalone with the cached binary.

    No reference to the first build is kept: Brian2 objects alive during the second build would make
    Brian2 rename the new ones (``_1``) and recompile."""
    from biosnn.backends import get_backend
    t0 = time.perf_counter()
    compiled = get_backend("cpp_standalone").build(snn.spec_for(B)).compiled
    build_s = time.perf_counter() - t0
    gc.collect()
    res = snn.run(x, backend="cpp_standalone", batch_size=B, progress=False)
    return res, build_s, compiled


def brian2_tsc(model, x_train, x, y, ann, args) -> dict:
    n, B, T = len(x), min(args.brian2_batch, len(x)), args.brian2_T
    snn = biosnn.convert(biosnn.prepare(model, "tsc"), "tsc", calibration=x_train[:args.calib],
                         input_shape=(1, 28, 28), T=T, percentile=99.9, name="lenet5_tsc")
    res, build_s, compiled = brian2_run(snn, x, B)
    ref = snn.reference(x, batch_size=500)
    same = {"predictions": bool(np.array_equal(res.predictions, ref.predictions)),
            "spikes": all(np.array_equal(res.layer_spikes[k], ref.layer_spikes[k]) for k in ref.layer_spikes),
            "memory accesses": bool(np.array_equal(res.extras["memory_accesses"], ref.memory_accesses))}
    out = {"coding": "TSC", "T": T, "n": n, "B": B, "steps": snn.window_steps, "build_s": build_s,
           "compiled": compiled, "wall_s": res.wall_time_s, "ips": res.images_per_second,
           "acc": res.accuracy(y), "agree_ann": res.agreement(ann[:n]), "same": same,
           "max_score_diff": float(np.abs(res.scores - ref.scores).max()),
           "spikes": float(np.mean(res.spikes_per_sample)), "mem": float(np.mean(res.extras["memory_accesses"]))}
    log(f"  Brian2 TSC T={T}: {out['ips']:.1f} images/s (snn.run on {n} images, build {build_s:.0f} s "
        f"{'with compilation' if compiled else 'from the build cache'} before it), equal to the reference: "
        f"{same}, max |score - reference| {out['max_score_diff']:.1e}")
    return out


def brian2_rate(model, x_train, x, y, ann, args) -> dict:
    n, B, T = len(x), min(args.brian2_batch, len(x)), args.rate_brian2_T
    snn = biosnn.convert(biosnn.prepare(model, "rate"), "rate", calibration=x_train[:args.calib],
                         input_shape=(1, 28, 28), T=T, normalization="percentile", percentile=99.9,
                         name="lenet5_rate")
    res, build_s, compiled = brian2_run(snn, x, B)
    out = {"coding": "rate", "T": T, "n": n, "B": B, "steps": T, "build_s": build_s, "compiled": compiled,
           "wall_s": res.wall_time_s, "ips": res.images_per_second, "acc": res.accuracy(y),
           "agree_ann": res.agreement(ann[:n]), "spikes": float(np.mean(res.spikes_per_sample)),
           "mem": float(np.mean(res.synops_per_sample))}
    log(f"  Brian2 rate T={T}: {out['ips']:.1f} images/s (build {build_s:.0f} s)")
    return out


def first_within(rows: dict, pp: float):
    """Smallest T whose accuracy is within ``pp`` percentage points of the ANN (or the largest T)."""
    ok = [T for T, r in sorted(rows.items()) if r["diff_pp"] >= -pp - 1e-9]  # -0.5000000000000004 is -0.5
    return (ok[0], True) if ok else (max(rows), False)


def table(rows: dict, label: str) -> list[str]:
    out = []
    for T, r in sorted(rows.items()):
        total = r["syn_add"] + r["neuron_add"]
        out.append(f"| {label} | {T} | {r['steps']} | {100 * r['acc']:.2f} % | {r['diff_pp']:+.2f} | "
                   f"{100 * r['agree']:.2f} % | {r['spikes']:,.0f} | {r['mem']:,.0f} | {r['syn_add']:,.0f} | "
                   f"{r['hidden_add']:,.0f} | {r['neuron_add']:,.0f} | {total:,.0f} |")
    return out


HEADER = ["| coding | T | steps / image | accuracy | SNN - ANN (pp) | agreement with ANN | spikes | "
          "memory accesses | synaptic additions | of which not from input spikes | neuron additions | all additions |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]


def markdown(args, argv, ann_acc, full, sub, rate, b2, total_s) -> str:
    cmd = " ".join(([f"BIOSNN_MNIST={os.environ['BIOSNN_MNIST']}"] if os.environ.get("BIOSNN_MNIST") else [])
                   + [os.path.relpath(sys.executable, ROOT), "benchmarks/convert_mnist_tsc.py"]
                   + [shlex.quote(a) for a in argv])
    n_rate = next(iter(rate.values()))["n"]
    L = [f"## Temporal Switch Coding vs rate coding: LeNet-5 ({args.pool} pooling) on MNIST"
         f"{' (--quick)' if args.quick else ''}", "",
         f"- Date: {datetime.date.today().isoformat()}. Machine: {os.cpu_count()}-core x86-64 CPU ({cpu_model()}; "
         f"`platform.processor()` = '{platform.processor()}'), no GPU, torch 1 thread. Python "
         f"{platform.python_version()}, torch {torch.__version__}, brian2 {__import__('brian2').__version__}.",
         f"- Command (total {total_s / 60:.1f} min): `{cmd}`",
         f"- Load (1-min average) at start / end: {args.load_start:.1f} / {os.getloadavg()[0]:.1f} on "
         f"{os.cpu_count()} cores (shared machine: timings are noisy).",
         f"- ANN: LeNet-5 of `examples/convert_mnist.py` ({args.pool} pooling), the state_dict of "
         f"`benchmarks/convert_mnist_rate.py` (`benchmarks/.cache/`: {args.epochs} epochs on "
         f"{args.train_samples} training images); test accuracy {100 * ann_acc:.2f} % ({args.test_samples} images).",
         f"- Both codings: 99.9th-percentile normalisation on {args.calib} training images. TSC: "
         "`biosnn.convert(model, \"tsc\", T=...)`, intervals rounded to the nearest step, one period of T steps "
         "per layer stage (latency = steps / image). Rate: `biosnn.convert(model, \"rate\", T=...)`, analog "
         "input current (its first-layer MACs, done once per image, are not in the table), potential readout.",
         "- Counts per image. TSC: every spike costs one memory access (weight fetch) and one addition per "
         "outgoing synapse (at most two per synapse: on and off); neuron additions = one `v += I` per neuron "
         "and integration step. Rate: synaptic additions = memory accesses = `synops_per_sample`; neuron "
         "additions = one `v += I + b` per IF neuron and step. Spikes: TSC includes the input's on/off spikes, "
         "rate has no input spikes.", ""]
    L += [f"### TSC on all {next(iter(full.values()))['n']} test images (exact reference)", ""] + HEADER + \
        table(full, "TSC") + [""]
    L += [f"### TSC next to rate coding on the first {n_rate} test images (exact references)", ""] + HEADER + \
        table(sub, "TSC") + table(rate, "rate") + [""]
    t_tsc, ok_tsc = first_within(sub, args.match_pp)
    t_rate, ok_rate = first_within(rate, args.match_pp)
    rt, ts = rate[t_rate], sub[t_tsc]
    missed = " (not reached; largest T)"
    L += [f"Smallest T within {args.match_pp} pp of the ANN on these images: TSC T = {t_tsc}"
          f"{'' if ok_tsc else missed}, rate T = {t_rate}{'' if ok_rate else missed}. "
          f"There rate coding needs **{rt['syn_add'] / ts['syn_add']:.1f}x** the synaptic additions and memory "
          f"accesses of TSC ({rt['hidden_add'] / ts['hidden_add']:.1f}x leaving out the synaptic additions of "
          f"TSC's input spikes, which rate coding's analog input replaces by its first-layer MACs), "
          f"{(rt['syn_add'] + rt['neuron_add']) / (ts['syn_add'] + ts['neuron_add']):.1f}x "
          f"all additions, {rt['spikes'] / ts['spikes']:.1f}x the spikes and {rt['steps'] / ts['steps']:.2f}x "
          f"the steps per image (Han & Roy 2020 report 30-60x fewer additions and memory accesses than rate "
          f"coding for VGG/ResNet on CIFAR and ImageNet).", ""]
    if b2:
        L += ["### Brian2 cpp_standalone", "",
              "| network | T | steps / image | images | windows per run | images/s (snn.run) | build before it | "
              "accuracy | agreement with ANN | spikes | memory accesses / synops | equal to the reference |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in b2:
            same = r.get("same")
            same_txt = "-" if same is None else ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in same.items()) + \
                f"; max abs(score diff) {r['max_score_diff']:.1e}"
            L.append(f"| {r['coding']} | {r['T']} | {r['steps']} | {r['n']} | {r['B']} | {r['ips']:.1f} | "
                     f"{r['build_s']:.0f} s ({'compiled' if r['compiled'] else 'binary from the build cache'}) | "
                     f"{100 * r['acc']:.2f} % | {100 * r['agree_ann']:.2f} % | {r['spikes']:,.0f} | "
                     f"{r['mem']:,.0f} | {same_txt} |")
        L += ["", "images/s = images / wall time of `snn.run` (code generation and the runs of the compiled "
              "binary; the compilation is the build before it).", ""]
    return "\n".join(L) + "\n"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small smoke run")
    p.add_argument("--pool", choices=["avg", "max"], default="avg")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--train-samples", type=int, default=60000)
    p.add_argument("--test-samples", type=int, default=None, help="(10000; --quick 1000)")
    p.add_argument("--T", type=int, nargs="+", default=[4, 8, 16, 32, 64], help="TSC steps per period")
    p.add_argument("--rate-T", type=int, nargs="+", default=None, help="rate time steps (16 32 64 128; --quick 16 32)")
    p.add_argument("--rate-images", type=int, default=None, help="(1000; --quick 100)")
    p.add_argument("--match-pp", type=float, default=0.5, help="accuracy margin for the additions ratio")
    p.add_argument("--calib", type=int, default=1000)
    p.add_argument("--brian2-T", type=int, default=16)
    p.add_argument("--brian2-images", type=int, default=None, help="(1000; --quick 100)")
    p.add_argument("--brian2-batch", type=int, default=250)
    p.add_argument("--rate-brian2", action="store_true", help="also run the rate network on cpp_standalone")
    p.add_argument("--rate-brian2-T", type=int, default=64)
    p.add_argument("--skip-brian2", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-record", action="store_true", help="do not record the section (BENCHMARKS.md)")
    args = p.parse_args(argv)
    for k, full, quick in (("test_samples", 10000, 1000), ("rate_T", [16, 32, 64, 128], [16, 32]),
                           ("rate_images", 1000, 100), ("brian2_images", 1000, 100)):
        if getattr(args, k) is None:
            setattr(args, k, quick if args.quick else full)
    torch.set_num_threads(1)
    os.environ.setdefault("BIOSNN_PROGRESS", "0")
    args.load_start = os.getloadavg()[0]
    t_start = time.perf_counter()

    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    x_test, y_test = x_test[:args.test_samples], y_test[:args.test_samples]
    model, _ = trained_lenet(args.pool, x_train[:args.train_samples], y_train[:args.train_samples],
                             args.epochs, args.seed)
    ann = ann_predictions(model, x_test)
    ann_acc = float(np.mean(ann == y_test))
    log(f"ANN test accuracy {100 * ann_acc:.2f} % ({len(x_test)} images)")

    log("TSC, all test images:")
    full, results = tsc_rows(model, x_train, x_test, y_test, ann, args)
    k = min(args.rate_images, len(x_test))
    sub = {}
    for T, r in results.items():
        sub[T] = figures(r.predictions[:k], y_test, ann, r.spikes_per_sample[:k], r.memory_accesses[:k],
                         r.synaptic_additions[:k], np.full(k, r.neuron_additions), full[T]["steps"],
                         r.layer_events["input"][:k])
    log(f"rate coding, first {k} test images:")
    rate = rate_rows(model, x_train, x_test[:k], y_test[:k], ann[:k], args)
    b2 = []
    if not args.skip_brian2:
        m = min(args.brian2_images, len(x_test))
        b2.append(brian2_tsc(model, x_train, x_test[:m], y_test[:m], ann[:m], args))
        if args.rate_brian2:
            b2.append(brian2_rate(model, x_train, x_test[:m], y_test[:m], ann[:m], args))
    text = markdown(args, argv, ann_acc, full, sub, rate, b2, time.perf_counter() - t_start)
    log("\n" + text)
    if not args.no_record:
        data = {"ann_accuracy": ann_acc, "tsc_all_images": {str(T): r for T, r in full.items()},
                "tsc_subset": {str(T): r for T, r in sub.items()}, "rate_subset": {str(T): r for T, r in rate.items()},
                "brian2": [report.scalars(b) for b in b2],
                "accuracy_vs_T": [] if args.quick else [
                    {"series": "TSC", "label": f"T={T}", "T": T, "steps": r["steps"], "accuracy_pct": 100 * r["acc"],
                     "images": r["n"]} for T, r in sorted(full.items())]}
        path = report.record("tsc_mnist" + ("_quick" if args.quick else ""), text,
                             command=report.command_line([__file__] + list(argv)),
                             script="benchmarks/convert_mnist_tsc.py", data=data,
                             load=(args.load_start, os.getloadavg()[0]))
        log(f"recorded {path} and re-rendered BENCHMARKS.md")


if __name__ == "__main__":
    main()
