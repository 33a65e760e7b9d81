"""Conversion speed: every coding of LeNet-5/MNIST on Brian2 cpp_standalone vs SpikingJelly, in one run.

Full run (appends a section to BENCHMARKS.md)::

    BIOSNN_MNIST=/work/shared/data/mnist.npz .venv/bin/python benchmarks/convert_speed.py

Quick run (1000 test images, codings fine-tuned on 10k images for one epoch)::

    BIOSNN_MNIST=/work/shared/data/mnist.npz .venv/bin/python benchmarks/convert_speed.py --quick

What it does, in one process:

1. LeNet-5 with average pooling (``examples/convert_mnist.py``), trained on MNIST (cached in
   ``benchmarks/.cache`` by ``convert_mnist_rate.trained_lenet``).
2. For every coding in ``--codings``: ``biosnn.prepare(model, coding, **params)``; codings whose
   prepared model differs from the ANN (tdsnn, tpc, stc) are fine-tuned (``--finetune-epochs``,
   cached); ``biosnn.convert(...)``; a warm-up ``snn.run`` on ``--batch`` images (compiles the
   binary into a fresh build directory: the compile time), then the timed ``snn.run`` of
   ``--images`` test images on ``cpp_standalone`` with ``batch_size=--batch`` (code generation of
   the cached build included).  Reported: accuracy, agreement with the (prepared) ANN, images/s,
   spikes and synaptic events per image, synaptic events/s, bytes of synapse storage
   (biosnn's static-projection template, computed from the arrays it allocates), compile time.
3. SpikingJelly ann2snn (rate, 99.9 % percentile) on the same ANN and images, in the same
   process, for every T in ``--sj-T`` and batch size in ``--sj-batch``.  Two ratios per coding:
   to SpikingJelly at T = 32 / batch 100 (the fixed reference), and to SpikingJelly's *fastest
   setting that reaches the coding's accuracy* (at most 0.1 percentage points below it: the
   sampling noise of 10k images is about 0.15 pp); if no setting reaches it, to the most accurate
   one, marked "(below)".
4. A profile (``profile=True``) of the rate network on one batch: where the time goes,
   per Brian2 code object.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import biosnn  # noqa: E402
from biosnn.datasets import accuracy, load_mnist, train_classifier  # noqa: E402
from convert_mnist_rate import (CACHE, ann_predictions, append_section, cpu_model,  # noqa: E402
                                spikingjelly_throughput, trained_lenet)

#: coding -> (conversion parameters, whether the prepared model needs fine-tuning)
CODINGS = {
    "rate": ({"T": 32, "normalization": "percentile"}, False),
    "tdsnn": ({"L": 5}, True),
    "tsc": ({"T": 32}, False),
    "tpc": ({"bits": 8}, True),
    "stc": ({"T": 8, "theta0": 1.0, "tau": 2.0}, True),
}
PREPARE_KEYS = {"tdsnn": ("L",), "tpc": ("bits",), "stc": ("T", "theta0", "tau"), "tsc": (), "rate": ()}


def command() -> str:
    """This run's command line (environment variables that matter included)."""
    env = " ".join(f"{k}={os.environ[k]}" for k in ("BIOSNN_MNIST", "OMP_NUM_THREADS") if k in os.environ)
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    return " ".join(filter(None, [env, f".venv/bin/python {script}", *sys.argv[1:]]))


def log(msg=""):
    print(msg, flush=True)


def finetuned(model, coding, params, x, y, epochs, tag):
    """``biosnn.prepare`` + fine-tuning (cached)."""
    prep = biosnn.prepare(model, coding, **{k: params[k] for k in PREPARE_KEYS[coding] if k in params})
    if not CODINGS[coding][1] or epochs == 0:
        return prep.eval()
    path = CACHE / f"lenet5-{coding}-{json.dumps(params, sort_keys=True)}-{tag}-e{epochs}.pt"
    if path.exists():
        prep.load_state_dict(torch.load(path, weights_only=True))
    else:
        train_classifier(prep, x, y, epochs=epochs, lr=1e-4, batch_size=128, seed=0)
        torch.save(prep.state_dict(), path)
    return prep.eval()


def synapse_bytes(spec, float_bytes=8):
    """Bytes the static-projection template allocates for a spec's static projections."""
    from biosnn.backends.brian2_static import is_dense, static_memory_bytes, static_statements
    from biosnn.spec.expand import expand_projection
    from biosnn.spec.model import Conv2D
    total = n_syn = 0
    for proj in spec.projections:
        if static_statements(spec, proj) is None:
            continue
        conn = expand_projection(spec, proj)
        kernel = proj.connect.kernel.data.size if isinstance(proj.connect, Conv2D) else None
        n_pre, n_post = spec.node(proj.source).size, spec.node(proj.target).size
        total += static_memory_bytes(len(conn.i), n_pre, float_bytes, kernel,
                                     dense=kernel is None and is_dense(conn, n_pre, n_post))
        n_syn += len(conn.i)
    return total, n_syn


def run_coding(coding, model, data, args, cache_dir, threads=0):
    x_train, y_train, x_test, y_test = data
    params = dict(CODINGS[coding][0])
    n = args.images
    t0 = time.perf_counter()
    prep = finetuned(model, coding, params, x_train[:args.finetune_samples], y_train[:args.finetune_samples],
                     args.finetune_epochs, f"n{args.finetune_samples}")
    tune_s = time.perf_counter() - t0
    ann_pred = ann_predictions(prep, x_test[:n])
    snn = biosnn.convert(prep, coding, calibration=x_train[:args.calib], input_shape=(1, 28, 28), **params)
    B = min(args.batch, n)
    t0 = time.perf_counter()
    snn.run(x_test[:B], backend="cpp_standalone", batch_size=B, progress=False, cache_dir=cache_dir,
            threads=threads, replicas=args.replicas)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = snn.run(x_test[:n], backend="cpp_standalone", batch_size=B, progress=True, cache_dir=cache_dir,
                  threads=threads, replicas=args.replicas)
    wall = time.perf_counter() - t0
    mem, n_syn = synapse_bytes(snn.spec_for(-(-B // args.replicas), args.replicas))
    events = float(np.sum(res.synops_per_sample))
    return {"coding": coding, "threads": threads, "params": params, "n": n, "B": B, "acc_ann": float(np.mean(ann_pred == y_test[:n])),
            "acc": res.accuracy(y_test[:n]), "agree": res.agreement(ann_pred), "wall_s": wall, "ips": n / wall,
            "spikes": float(np.mean(res.spikes_per_sample)), "synops": float(np.mean(res.synops_per_sample)),
            "events_per_s": events / wall, "compile_s": compile_s, "tune_s": tune_s,
            "syn_bytes": mem, "synapses": n_syn}


def profile_rate(model, data, args, cache_dir):
    from biosnn.backends.brian2_standalone import profile_of
    x_train, _, x_test, _ = data
    snn = biosnn.convert(model, "rate", calibration=x_train[:args.calib], input_shape=(1, 28, 28),
                         **CODINGS["rate"][0])
    B = min(args.batch, args.images)
    spec = snn.spec_for(B)
    sim = biosnn.get_backend("cpp_standalone", cache_dir=cache_dir, profile=True).build(spec)
    flat = np.asarray(x_test[:B], dtype=np.float64).reshape(B, -1) / snn.graph.input_scale
    rec = sim.run(overrides={"x_in": flat}, progress=False)
    prof = profile_of(rec)
    total = sum(prof.values())
    return [(k, v, v / total) for k, v in list(prof.items())[:8]], total


def sj_at_accuracy(sj_rows, acc, tolerance=0.001):
    """SpikingJelly's fastest setting with accuracy >= ``acc - tolerance``, else its most accurate one.

    >>> rows = [{"T": 8, "B": 100, "acc": 0.90, "ips": 900.0}, {"T": 32, "B": 100, "acc": 0.975, "ips": 300.0},
    ...         {"T": 64, "B": 100, "acc": 0.976, "ips": 150.0}]
    >>> sj_at_accuracy(rows, 0.9755)["T"], sj_at_accuracy(rows, 0.99)["T"]
    (32, 64)
    """
    ok = [r for r in sj_rows if "ips" in r]
    if not ok:
        return None
    reach = [r for r in ok if r["acc"] >= acc - tolerance]
    return max(reach, key=lambda r: r["ips"]) if reach else max(ok, key=lambda r: (r["acc"], r["ips"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--codings", nargs="+", default=list(CODINGS), choices=list(CODINGS))
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=1000, help="sample windows per run of the binary")
    ap.add_argument("--calib", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=3, help="ANN training epochs")
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--finetune-samples", type=int, default=60000)
    ap.add_argument("--sj-T", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--sj-batch", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--quick", action="store_true", help="1000 images, fine-tuning on 10k")
    ap.add_argument("--threads", type=int, nargs="+", default=[0],
                    help="OpenMP threads of the Brian2 binary (0: no OpenMP); every coding runs at each")
    ap.add_argument("--replicas", type=int, default=1,
                    help="network copies per run (batch = replicas x windows); gives OpenMP threads work per step")
    ap.add_argument("--no-sj", action="store_true", help="skip SpikingJelly (ratios then n/a)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.images, args.finetune_samples = 1000, 10000
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    data = (x_train, y_train, x_test, y_test)
    model, _ = trained_lenet("avg", x_train, y_train, args.epochs, 0)
    log(f"ANN accuracy {accuracy(model, x_test, y_test) * 100:.2f} %")
    cache_dir = Path(tempfile.mkdtemp(prefix="biosnn_speed_"))
    rows = []
    for coding in args.codings:
        for threads in args.threads:
            log(f"== {coding}, threads {threads}")
            try:
                rows.append(run_coding(coding, model, data, args, cache_dir, threads))
                log(json.dumps(rows[-1]))
            except Exception as exc:  # noqa: BLE001  (a coding that fails is reported, not hidden)
                rows.append({"coding": coding, "threads": threads, "error": f"{type(exc).__name__}: {exc}"})
                log(f"  failed: {rows[-1]['error']}")
    ann_pred = ann_predictions(model, x_test[:args.images])
    sj_rows = []
    for T in ([] if args.no_sj else args.sj_T):
        for batch in args.sj_batch:
            sj_rows.append(spikingjelly_throughput(
                model, x_train, x_test, y_test, ann_pred, {"predictions": ann_pred},
                SimpleNamespace(brian2_images=args.images, sj_batch=batch, brian2_T=T, calib=args.calib)))
            log(f"SpikingJelly T={T} batch={batch}: {sj_rows[-1]}")
    sj = next((r for r in sj_rows if r.get("T") == 32 and r.get("B") == min(100, args.images)),
              sj_rows[0] if sj_rows else {"error": "not run (--no-sj)"})
    prof, prof_total = profile_rate(model, data, args, cache_dir)
    total_s = time.perf_counter() - t_start
    sj_ips = sj.get("ips")
    lines = [f"## Conversion speed: every coding on cpp_standalone vs SpikingJelly (LeNet-5, MNIST)\n",
             f"{datetime.date.today()} · {cpu_model()}, {os.cpu_count()} cores (SpikingJelly: 1 torch thread; Brian2: "
             f"OpenMP threads {args.threads}, 0 = none) · "
             f"`{command()}` · {total_s / 60:.1f} min in all\n",
             f"{args.images} test images; Brian2 runs {args.batch} samples ({args.replicas} network copies x "
             f"{-(-args.batch // args.replicas)} sample windows) per run of one compiled binary "
             "(static projections on biosnn's template); SpikingJelly "
             + (f"{sj.get('version')} ann2snn rate 99.9 %, reference setting T = {sj['T']}, batch {sj['B']}: "
                f"{sj_ips:.1f} images/s, accuracy {sj['acc'] * 100:.2f} %." if sj_ips else f"failed: {sj.get('error')}")
             + "\n",
             "| SpikingJelly T | batch | accuracy | images/s |", "|---|---|---|---|"]
    lines += [f"| {r['T']} | {r['B']} | {r['acc'] * 100:.2f} % | {r['ips']:.1f} |" for r in sj_rows if "ips" in r]
    lines += ["", "| coding | OpenMP threads | params | ANN acc | SNN acc | agreement | images/s | ratio to SJ T=32 | ratio to SJ "
              "fastest at equal accuracy | spikes/img | syn. events/img | events/s | synapse bytes (per syn.) | "
              "compile s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['coding']} | {r['threads']} | | | | | | | | | | | failed: {r['error'][:120]} |")
            continue
        ratio = f"{r['ips'] / sj_ips:.2f}x" if sj_ips else "n/a"
        equal = sj_at_accuracy(sj_rows, r["acc"])
        ratio_eq = (f"{r['ips'] / equal['ips']:.2f}x (T={equal['T']}, b={equal['B']}"
                    f"{', below' if equal['acc'] < r['acc'] - 0.001 else ''})") if equal else "n/a"
        lines.append(
            f"| {r['coding']} | {r['threads']} | {', '.join(f'{k}={v}' for k, v in r['params'].items())} | {r['acc_ann'] * 100:.2f} % | "
            f"{r['acc'] * 100:.2f} % | {r['agree'] * 100:.2f} % | {r['ips']:.1f} | {ratio} | {ratio_eq} | "
            f"{r['spikes']:.0f} | "
            f"{r['synops']:.3g} | {r['events_per_s']:.3g} | {r['syn_bytes'] / 1e6:.2f} MB "
            f"({r['syn_bytes'] / max(r['synapses'], 1):.1f}) | {r['compile_s']:.0f} |")
    lines += ["", f"Profile of the rate network (T = 32, one run of {min(args.batch, args.images)} windows, "
              f"{prof_total:.2f} s in code objects):", "",
              "| code object | s | share |", "|---|---|---|"]
    lines += [f"| {k} | {v:.3f} | {f * 100:.1f} % |" for k, v, f in prof]
    publish(lines, record=not args.no_record)


def publish(lines, record: bool):
    """Print a Markdown section and, if ``record``, append it to BENCHMARKS.md."""
    text = "\n".join(lines) + "\n"
    print(text)
    if record:
        append_section(text, ROOT / "BENCHMARKS.md")


if __name__ == "__main__":
    main()
