"""Temporal pattern coding (TPC) of LeNet-5 on MNIST: Table I of Rueckauer & Liu (IJCNN 2021).

Full run (records its section through benchmarks/report.py, which re-renders BENCHMARKS.md):

    BIOSNN_MNIST=/work/shared/data/mnist.npz nice -n 10 .venv/bin/python benchmarks/convert_mnist_tpc.py

Smoke run: add ``--quick`` (10k training images, 1 fine-tuning epoch on 10k, 1000 test images,
Brian2 on 200 images of one bit width) and ``--no-record``.

What it does:

1. The float LeNet-5 (``examples/convert_mnist.py``'s ``lenet5``, average pooling) trained by
   ``benchmarks/convert_mnist_rate.py`` (Adam lr 1e-3, batch 128, seed 0, 3 epochs on the 60k
   training images; cached in ``benchmarks/.cache/``, trained here when missing); its test error.
2. For every n in ``--bits``: ``biosnn.prepare(model, "tpc", bits=n)`` (activations and input
   quantised to n bits, straight-through estimator, scales from a running 99.9th percentile),
   fine-tuned ``--finetune-epochs`` epochs on the first ``--finetune-images`` training images
   (Adam lr 2e-4, batch 128; cached; the float model gets the same extra training for the ANN
   row), converted with
   ``biosnn.convert``.  On all test images: the error of the quantised torch model (float32, as
   trained), the error of the TPC network from its exact reference
   (``biosnn.codings.tpc.reference.simulate_tpc``: the quantised ANN in fixed point, which the
   Brian2 network reproduces bit for bit), their agreement, spikes and synaptic operations per
   image (input spikes included; operations = spikes x fan-out).
3. LSB truncation at inference: the ``max(--bits)``-bit model run with k < n steps per window.
4. Brian2 ``cpp_standalone`` for each n in ``--brian2-bits`` (default 8) on the first ``--brian2-images`` test
   images: build (code generation + compilation unless cached) and the compiled binary's runs timed
   separately, predictions / scores / per-layer spike and operation counts compared with the
   reference.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "examples"))

import biosnn  # noqa: E402
from biosnn.datasets import load_mnist, train_classifier  # noqa: E402
from convert_mnist_rate import (CACHE, ann_predictions, cpu_model, log,  # noqa: E402
                                trained_lenet)

import report  # noqa: E402  (benchmarks/report.py)

#: Rueckauer & Liu 2021, Table I, MNIST LeNet-5 (error %, operations 1e6).
PAPER = {"ANN": (0.72, 2.35), 2: (90.26, 0.07), 3: (59.52, 0.45), 4: (1.26, 0.87), 5: (0.81, 1.33),
         6: (0.76, 1.78), 8: (0.75, 2.70)}


def finetuned(model, bits: int | None, x_train, y_train, epochs: int, tag: str):
    """``prepare(model, "tpc", bits)`` (``bits=None``: the float model itself) trained ``epochs`` more
    epochs (Adam lr 2e-4, batch 128, seed 0); the state (scales included) is cached."""
    qat = copy.deepcopy(model) if bits is None else biosnn.prepare(copy.deepcopy(model), "tpc", bits=bits)
    what = "float" if bits is None else f"tpc{bits}"
    path = CACHE / f"lenet5-avg-{what}-ft{epochs}-n{len(x_train)}-{tag}.pt"
    if path.exists():
        qat.load_state_dict(torch.load(path, weights_only=True))
        log(f"[{what}] loaded the fine-tuned model from {path.relative_to(ROOT)}")
        return qat.eval()
    t0 = time.perf_counter()
    train_classifier(qat, x_train, y_train, epochs=epochs, lr=2e-4, batch_size=128, seed=0)
    torch.save(qat.state_dict(), path)
    log(f"[{what}] fine-tuned {epochs} epoch(s) on {len(x_train)} images in {time.perf_counter() - t0:.0f} s")
    return qat.eval()


def evaluate(qat, bits: int, steps: int, x_train, x_test, y_test) -> dict:
    """Reference run of the converted network on all test images, and the quantised torch model."""
    snn = biosnn.convert(qat, "tpc", calibration=x_train[:500], input_shape=(1, 28, 28), steps=steps,
                         name=f"lenet5_tpc{bits}")
    t0 = time.perf_counter()
    ref = snn.reference(x_test)
    ref_s = time.perf_counter() - t0
    qpred = ann_predictions(qat, x_test) if steps == bits else None
    ops = sum(ref.layer_synops.values())
    spikes = sum(ref.layer_spikes.values())
    return {"bits": bits, "steps": steps, "snn": snn, "ref": ref, "ref_s": ref_s,
            "err": 100 * float(np.mean(ref.predictions != y_test)),
            "q_err": None if qpred is None else 100 * float(np.mean(qpred != y_test)),
            "agree_q": None if qpred is None else 100 * float(np.mean(qpred == ref.predictions)),
            "ops": float(np.mean(ops)), "ops_sd": float(np.std(ops)), "spikes": float(np.mean(spikes)),
            "latency": snn.latency_steps}


def brian2_run(row: dict, x_test, y_test, images: int, batch: int) -> dict:
    snn, ref = row["snn"], row["ref"]
    x = x_test[:images]
    res = snn.run(x, backend="cpp_standalone", batch_size=min(batch, images), progress=False)
    exact = (np.array_equal(res.scores, ref.scores[:images])
             and all(np.array_equal(res.layer_spikes[k], ref.layer_spikes[k][:images])
                     and np.array_equal(res.layer_synops[k], ref.layer_synops[k][:images]) for k in ref.layer_spikes))
    sim_s = res.run_time_s
    out = {"bits": row["bits"], "images": images, "windows": min(batch, images) + snn.plan.depth - 1,
           "build_s": res.build_time_s, "sim_s": sim_s, "wall_s": res.wall_time_s, "runs": res.runs,
           "ips": images / sim_s, "ips_e2e": res.images_per_second, "exact": exact,
           "agree_ref": 100 * float(np.mean(res.predictions == ref.predictions[:images])),
           "err": 100 * float(np.mean(res.predictions != y_test[:images]))}
    log(f"  Brian2 {row['bits']} bits: {images} images, build {out['build_s']:.1f} s, {out['runs']} binary runs "
        f"{sim_s:.1f} s ({out['ips']:.0f} images/s), end to end {res.wall_time_s:.1f} s; equal to the "
        f"reference: {'yes' if exact else 'NO'}")
    return out


def this_command(argv) -> str:
    """The command line of this run."""
    return report.command_line([__file__, *argv])


def markdown(args, argv, ann, rows, trunc, b2, total_s, load) -> str:
    date = datetime.date.today().isoformat()
    n_test = len(rows[0]["ref"].predictions)
    lines = [
        "## Temporal pattern coding (TPC) of LeNet-5 on MNIST: Table I of Rueckauer & Liu (2021)", "",
        f"- Date: {date}. Machine: {cpu_model()}, {os.cpu_count()} cores (shared; 1-min load average at start / "
        f"end {load[0]:.1f} / {load[1]:.1f}), torch 1 thread. Total {total_s / 60:.1f} min.",
        f"- Command: `{this_command(argv)}`",
        f"- ANN: LeNet-5 (`examples/convert_mnist.py`, average pooling; {ann['neurons']:,} neurons, "
        f"{ann['params']:,} parameters), "
        f"{ann['info']}: test error {ann['base_err']:.2f} %. TPC models: `biosnn.prepare(model, \"tpc\", bits=n)` "
        f"fine-tuned {args.finetune_epochs} epoch(s) on {args.train_images} training images (Adam lr 2e-4, batch "
        "128, seed 0); scales from the quantisers' running 99.9th percentile; input quantised too. The ANN row "
        "is the float model after the same extra training (so that the rows differ only in the quantisation).",
        f"- Error and operations on {n_test} test images from the exact reference of the TPC network "
        "(`codings.tpc.reference.simulate_tpc`, which Brian2 reproduces bit for bit: see the Brian2 table). "
        "Operations: synaptic events per image (spikes x fan-out, input spikes included; mean +- sd); "
        "the ANN's are multiply-accumulates. The paper's LeNet-5 has 8k neurons and 213k parameters "
        "and counts 2.35 M ANN operations; ours has 0.41 M MACs, so compare errors and the TPC/ANN "
        "operation ratio, not absolute operations.", "",
        "| encoding | error [%] | quantised ANN error [%] (torch float32) | agreement SNN / quantised ANN | "
        "operations per image [1e6] | ops / ANN MACs | spikes per image | latency [steps] | paper error [%] | "
        "paper ops [1e6] |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| ANN (float) | {ann['err']:.2f} | - | - | {ann['macs'] / 1e6:.3f} | 1 | - | - | {PAPER['ANN'][0]:.2f} | "
        f"{PAPER['ANN'][1]:.2f} |"]
    for r in rows:
        p = PAPER.get(r["bits"], ("-", "-"))
        lines.append(f"| TPC {r['bits']} bit | {r['err']:.2f} | {r['q_err']:.2f} | {r['agree_q']:.2f} % | "
                     f"{r['ops'] / 1e6:.3f} +- {r['ops_sd'] / 1e6:.3f} | {r['ops'] / ann['macs']:.2f} | "
                     f"{r['spikes']:.0f} | {r['latency']} | {p[0]} | {p[1]} |")
    if trunc:
        n = trunc[0]["bits"]
        lines += ["", f"LSB truncation at inference ({n}-bit model, k < n steps per window, no re-training; "
                      "each layer sends only the k most significant bits of its code):", "",
                  "| steps k | error [%] | operations per image [1e6] | spikes per image | latency [steps] |",
                  "|---|---|---|---|---|"]
        for r in trunc:
            lines.append(f"| {r['steps']} | {r['err']:.2f} | {r['ops'] / 1e6:.3f} | {r['spikes']:.0f} | "
                         f"{r['latency']} |")
    if b2:
        lines += ["", "Brian2 `cpp_standalone` (one thread): pipelined TPC network, one sample per window of n "
                      "steps; a run simulates `windows` windows (the batch plus depth - 1 to flush the pipeline). "
                      "Build = code generation plus compilation unless cached.", "",
                  "| bits | images | windows per run | build [s] | binary runs [s] | images/s (binary) | "
                  "images/s (end to end) | error [%] | equal to the reference (scores, per-layer spikes and ops) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for b in b2:
            lines.append(f"| {b['bits']} | {b['images']} | {b['windows']} | {b['build_s']:.1f} | "
                         f"{b['sim_s']:.1f} ({b['runs']} runs) | {b['ips']:.0f} | {b['ips_e2e']:.0f} | {b['err']:.2f} | "
                         f"{'yes' if b['exact'] else 'NO'} ({b['agree_ref']:.2f} % same predictions) |")
    lines += ["", ""]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small smoke run (see above)")
    p.add_argument("--bits", type=int, nargs="+", default=[4, 5, 6, 8])
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--finetune-images", type=int, default=20000, help="training images used for fine-tuning")
    p.add_argument("--test-images", type=int, default=10000)
    p.add_argument("--brian2-bits", type=int, nargs="*", default=[8])
    p.add_argument("--brian2-images", type=int, default=10000)
    p.add_argument("--brian2-batch", type=int, default=2000, help="samples per Brian2 run")
    p.add_argument("--path", default=None, help="mnist.npz (default: $BIOSNN_MNIST or the cache)")
    p.add_argument("--no-record", action="store_true", help="do not record the section (BENCHMARKS.md)")
    args = p.parse_args(argv)
    if args.quick:
        args.test_images, args.brian2_images, args.brian2_bits = 1000, 200, args.brian2_bits[-1:]
    torch.set_num_threads(1)
    t_start, load0 = time.perf_counter(), os.getloadavg()[0]
    x_train, y_train = load_mnist("train", args.path)
    x_test, y_test = load_mnist("test", args.path)
    x_test, y_test = x_test[:args.test_images], y_test[:args.test_images]
    n_float = 10000 if args.quick else len(x_train)
    n_ft = min(args.finetune_images, n_float)
    model, info = trained_lenet("avg", x_train[:n_float], y_train[:n_float], 1 if args.quick else 3, 0)
    args.train_images = n_ft
    from biosnn.frontends.torch_graph import trace
    from biosnn.metrics import ann_ops
    ann_pred = ann_predictions(model, x_test)
    graph = trace(model, (1, 28, 28))
    ann = {"err": 100 * float(np.mean(ann_pred != y_test)), "macs": ann_ops(graph),
           "neurons": sum(layer.size for layer in graph.layers[1:]),
           "params": sum(int(t.numel()) for t in model.parameters()),
           "info": f"{'1 epoch on 10k' if args.quick else '3 epochs on 60k'} training images, cached as "
                   f"`{info['cache']}`"}
    tag = "quick" if args.quick else "full"
    ann["base_err"] = ann["err"]
    ann_pred = ann_predictions(finetuned(model, None, x_train[:n_ft], y_train[:n_ft], args.finetune_epochs, tag),
                               x_test)
    ann["err"] = 100 * float(np.mean(ann_pred != y_test))
    log(f"float ANN: error {ann['base_err']:.2f} %, after the same fine-tuning as the TPC models "
        f"{ann['err']:.2f} %; {ann['macs']} MACs per image")
    rows, models = [], {}
    for bits in args.bits:
        qat = finetuned(model, bits, x_train[:n_ft], y_train[:n_ft], args.finetune_epochs, tag)
        models[bits] = qat
        row = evaluate(qat, bits, bits, x_train, x_test, y_test)
        rows.append(row)
        log(f"[{bits} bits] TPC error {row['err']:.2f} % (quantised ANN float32 {row['q_err']:.2f} %, agreement "
            f"{row['agree_q']:.2f} %), {row['ops'] / 1e6:.3f} M operations and {row['spikes']:.0f} spikes per image "
            f"(reference {row['ref_s']:.1f} s)")
    top = max(args.bits)
    trunc = []
    for steps in range(top - 1, max(top - 5, 0), -1):
        trunc.append(evaluate(models[top], top, steps, x_train, x_test, y_test))
        log(f"[{top} bits, {steps} steps] error {trunc[-1]['err']:.2f} %, {trunc[-1]['ops'] / 1e6:.3f} M operations")
    b2 = []
    for bits in args.brian2_bits:
        row = next(r for r in rows if r["bits"] == bits)
        b2.append(brian2_run(row, x_test, y_test, min(args.brian2_images, len(x_test)), args.brian2_batch))
    total = time.perf_counter() - t_start
    text = markdown(args, argv, ann, rows, trunc, b2, total, (load0, os.getloadavg()[0]))
    print(text)
    if not args.no_record:
        plain = ("bits", "steps", "err", "q_err", "agree_q", "ops", "ops_sd", "spikes", "latency", "ref_s")
        data = {"ann": ann, "tpc": [{k: r[k] for k in plain} for r in rows],
                "truncated": [{k: r[k] for k in plain} for r in trunc], "brian2": [report.scalars(b) for b in b2],
                "accuracy_vs_T": [] if args.quick else [
                    {"series": "TPC (fine-tuned per bit width)", "label": f"{r['bits']} bit", "T": r["bits"],
                     "steps": r["latency"], "accuracy_pct": 100 - r["err"], "images": len(x_test)} for r in rows]}
        path = report.record("tpc_mnist" + ("_quick" if args.quick else ""), text, command=this_command(argv),
                             script="benchmarks/convert_mnist_tpc.py", data=data, load=(load0, os.getloadavg()[0]))
        log(f"recorded {path} and re-rendered BENCHMARKS.md")


if __name__ == "__main__":
    main()
