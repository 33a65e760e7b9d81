"""STC coding (STCSNN) of LeNet-5 on MNIST: accuracy over T x theta0 vs the ANN, and a Brian2 check.

Full run (records its section through benchmarks/report.py, which re-renders BENCHMARKS.md;
--help lists the knobs):

    BIOSNN_MNIST=/work/shared/data/mnist.npz nice -n 10 .venv/bin/python benchmarks/convert_mnist_stc.py

Smoke run (a few minutes; add --no-record to leave the results alone):

    BIOSNN_MNIST=/work/shared/data/mnist.npz .venv/bin/python benchmarks/convert_mnist_stc.py --quick --no-record

What it does:

1. Trains LeNet-5 with BatchNorm and average pooling (``examples/convert_stc.py``'s ``lenet5_bn``)
   as an ANN on the MNIST training images (Adam lr 2e-3, batch 64, seed 0, CPU, 1 torch thread)
   and caches the state_dict in ``benchmarks/.cache/``; reports its test accuracy.
2. For every (T, theta0) of the grid (tau = 2 steps, analog first layer): the same weights as an
   STCSNN (``biosnn.prepare(ann, "stc", ...)``), evaluated with the torch STCSNN forward pass (real
   STEB + conv + CAB, float32) on ``--direct-images`` test images ("direct conversion"). Cells within
   ``--tolerance`` pp of the ANN keep these weights; the others are fine-tuned from the ANN weights
   (``--ft-epochs`` epochs of Adam lr ``--ft-lr`` on ``--ft-images`` training images, the paper's
   ReLU + conv equivalent gradient). Every cell's reported accuracy is then measured on all test
   images; the table says which cells were fine-tuned.
3. Brian2 at ``--brian2-T`` / ``--brian2-theta0`` (the grid's model for that cell):
   ``biosnn.convert`` + ``snn.run(backend="cpp_standalone")`` on the first ``--brian2-images`` test
   images, compared with the float64 torch forward pass (``snn.reference``): largest score difference,
   predictions and per-layer spike counts. Images/s of the compiled binary (timed runs of the built
   simulation) and of ``snn.run`` end to end.
4. Prints everything and records its Markdown section (``report.record('stc_mnist', ...)``, which replaces
   ``benchmarks/results/stc_mnist.json`` and re-renders ``BENCHMARKS.md``; ``--no-record``: don't).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import biosnn  # noqa: E402
from biosnn.datasets import accuracy, load_mnist, train_classifier  # noqa: E402
from convert_mnist_rate import cpu_model  # noqa: E402
from convert_stc import lenet5_bn  # noqa: E402

import report  # noqa: E402  (benchmarks/report.py)

CACHE = ROOT / "benchmarks" / ".cache"


def log(msg: str = ""):
    print(msg, flush=True)


def trained_ann(x, y, epochs: int, seed: int):
    """LeNet-5-BN trained with Adam (lr 2e-3, batch 64), cached by epochs / images / seed."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"lenet5bn-avg-e{epochs}-n{len(x)}-seed{seed}.pt"
    torch.manual_seed(seed)
    model = lenet5_bn()
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        log(f"loaded the trained ANN from {path.relative_to(ROOT)}")
        return model.eval(), None
    t0 = time.perf_counter()
    train_classifier(model, x, y, epochs=epochs, lr=2e-3, batch_size=64, seed=seed)
    torch.save(model.state_dict(), path)
    log(f"trained the ANN ({epochs} epochs, {len(x)} images) in {time.perf_counter() - t0:.0f} s")
    return model.eval(), time.perf_counter() - t0


def grid(ann, ann_acc_n, x_train, y_train, x_test, y_test, args) -> tuple[list, dict]:
    """Direct-conversion accuracy of every cell; fine-tuning where it is off by more than the tolerance."""
    rows, models = [], {}
    nd = min(args.direct_images, len(x_test))
    for theta0 in args.theta0:
        for T in args.T:
            t0 = time.perf_counter()
            stc = biosnn.prepare(ann, "stc", T=T, theta0=theta0, tau=args.tau).eval()
            direct = accuracy(stc, x_test[:nd], y_test[:nd], batch_size=500)
            row = {"T": T, "theta0": theta0, "direct": direct, "n_direct": nd,
                   "ann_direct": ann_acc_n(nd), "tuned": False}
            if 100 * (direct - row["ann_direct"]) >= -args.tolerance:
                full = direct if nd == len(x_test) else accuracy(stc, x_test, y_test, batch_size=500)
                row.update(acc=full, n=len(x_test))
            else:
                f0 = time.perf_counter()
                train_classifier(stc, x_train[:args.ft_images], y_train[:args.ft_images], epochs=args.ft_epochs,
                                 lr=args.ft_lr, batch_size=64, seed=args.seed + 1)
                row["ft_s"] = time.perf_counter() - f0
                row.update(tuned=True, acc=accuracy(stc, x_test, y_test, batch_size=500), n=len(x_test))
            row["ann"] = ann_acc_n(row["n"])
            row["s"] = time.perf_counter() - t0
            rows.append(row)
            models[(T, theta0)] = stc
            log(f"  theta0={theta0:<4g} T={T:<3d} direct {100 * direct:6.2f} % ({nd} images)"
                + (f", fine-tuned {100 * row['acc']:6.2f} % ({row['n']} images)" if row["tuned"] else "")
                + f", ANN {100 * row['ann']:.2f} %  [{row['s']:.0f} s]")
    return rows, models


def brian2_check(stc, x_train, x_test, y_test, args) -> dict:
    """cpp_standalone run of one setting, against the float64 torch forward pass; images/s.

    One ``snn.run`` (one build: building the same structure twice in one process regenerates the
    code with renamed objects and recompiles); ``SNNResult.run_time_s`` is the compiled binary's runs,
    the rest of the wall time is the build (code generation, plus compilation unless the binary is in
    the build cache).
    """
    from biosnn.backends import brian2_standalone as bs
    n = min(args.brian2_images, len(x_test))
    B = min(args.brian2_batch, n)
    x, y = x_test[:n], y_test[:n]
    snn = biosnn.convert(stc, "stc", calibration=x_train[:500], input_shape=(1, 28, 28), name="stc_lenet5")
    spec = snn.spec_for(B)
    cached = (bs.build_directory(bs.CppStandaloneBackend(), spec) / "main").exists()
    res = snn.run(x, backend="cpp_standalone", batch_size=B, progress=False)
    t0 = time.perf_counter()
    ref = snn.reference(x)
    ref_s = time.perf_counter() - t0
    sim_s = res.run_time_s
    spikes_equal = all(np.array_equal(res.layer_spikes[k], ref["layer_spikes"][k]) for k in res.layer_spikes)
    return {"n": n, "B": B, "T": snn.T, "theta0": snn.theta0, "W": snn.window_steps,
            "build_s": res.wall_time_s - sim_s, "compiled": not cached, "sim_s": sim_s, "runs": res.runs,
            "ips": n / sim_s, "e2e_s": res.wall_time_s, "ips_e2e": res.images_per_second, "acc": res.accuracy(y),
            "ref_acc": float(np.mean(ref["predictions"] == y)), "ref_s": ref_s,
            "max_diff": float(np.max(np.abs(res.scores - ref["scores"]))),
            "pred_equal": bool(np.array_equal(res.predictions, ref["predictions"])), "spikes_equal": spikes_equal,
            "layers": len(res.layer_spikes), "spikes": float(np.mean(res.spikes_per_sample)),
            "synops": float(np.mean(res.synops_per_sample)), "input_macs": float(np.mean(res.input_macs)),
            "cab_macs": snn.cab_macs, "ann_ops": snn.ann_ops, "saturation": snn.saturation}


# --------------------------------------------------------------------------- report
def command_line(argv) -> str:
    env = f"BIOSNN_MNIST={os.environ['BIOSNN_MNIST']} " if os.environ.get("BIOSNN_MNIST") else ""
    exe = os.path.relpath(sys.executable, Path.cwd()) if sys.executable.startswith(str(ROOT)) else sys.executable
    return env + " ".join([exe, os.path.relpath(__file__, Path.cwd())] + [shlex.quote(a) for a in argv])


def _table(rows, args, key: str) -> list[str]:
    lines = ["| theta0 \\ T | " + " | ".join(str(T) for T in args.T) + " |",
             "|---|" + "---|" * len(args.T)]
    for theta0 in args.theta0:
        cells = []
        for T in args.T:
            r = next(r for r in rows if r["T"] == T and r["theta0"] == theta0)
            if key == "direct":
                cells.append(f"{100 * r['direct']:.2f} ({100 * (r['direct'] - r['ann_direct']):+.2f})")
            else:
                mark = "ft" if r["tuned"] else "direct"
                cells.append(f"{100 * r['acc']:.2f} ({100 * (r['acc'] - r['ann']):+.2f}) {mark}")
        lines.append(f"| {theta0:g} | " + " | ".join(cells) + " |")
    return lines


def markdown(args, argv, ann_info, rows, b2, total_s) -> str:
    nd = min(args.direct_images, args.test_samples)
    lines = [f"## STC coding (STCSNN, decaying thresholds): LeNet-5 on MNIST, T x theta0 grid, Brian2 check (CPU)"
             f"{' (--quick)' if args.quick else ''}", "",
             f"- Date: {datetime.date.today().isoformat()}. Machine: {os.cpu_count()}-core "
             f"{platform.machine()} CPU ({cpu_model()}), no GPU; torch 1 thread, `nice -n 10`. Python "
             f"{platform.python_version()}, torch {torch.__version__}, brian2 {__import__('brian2').__version__}.",
             f"- Command (total {total_s / 60:.1f} min): `{command_line(argv)}`",
             f"- Machine load (1-min load average at start / end): {args.load_start:.1f} / {os.getloadavg()[0]:.1f} "
             "on the shared machine (timings are noisy).",
             f"- ANN: LeNet-5 with BatchNorm and 2x2 average pooling (`examples/convert_stc.py`'s `lenet5_bn`), "
             f"Adam lr 2e-3, batch 64, seed 0, {args.epochs} epochs on {args.train_samples} training images; "
             f"test accuracy {100 * ann_info['acc']:.2f} % ({args.test_samples} test images). Control: the ANN "
             f"trained further with the STCSNN cells' fine-tuning schedule (below), as an ANN: "
             f"{100 * ann_info['acc_ft']:.2f} %; differences in the tables are to the ANN without it.",
             f"- STCSNN: every ReLU is a STEB (T steps, theta_t = theta0 exp(-t / tau), tau = {args.tau:g} steps, "
             "reset by subtraction), the next conv / linear layer its synapse, a CAB sums the currents weighted "
             "by theta_t; analog first convolution (as in the paper), BatchNorm between blocks; accuracies from "
             "the torch STCSNN forward pass (`biosnn.prepare(ann, 'stc', ...)`, real spikes, float32).", ""]
    lines += ["### Direct conversion (the ANN's weights), accuracy % (difference to the ANN, pp)", "",
              f"On the first {nd} test images (ANN on the same images: {100 * rows[0]['ann_direct']:.2f} %).", ""]
    lines += _table(rows, args, "direct")
    n_ft = sum(r["tuned"] for r in rows)
    lines += ["", f"### Reported accuracy % on all {args.test_samples} test images (difference to the ANN, pp)", "",
              f"`direct`: the direct conversion above was within {args.tolerance:g} pp of the ANN and is kept; "
              f"`ft`: fine-tuned from the ANN weights ({args.ft_epochs} epoch(s) of Adam lr {args.ft_lr:g}, "
              f"batch 64, on the first {args.ft_images} training images, with the paper's ReLU + conv equivalent "
              f"gradient and real spikes in the forward pass). {n_ft} of {len(rows)} cells fine-tuned.", ""]
    lines += _table(rows, args, "acc")
    if b2:
        build = ("code generation and compilation" if b2["compiled"]
                 else "code generation; binary from the build cache")
        sat = ", ".join(f"{k}: {100 * v:.2f} %" for k, v in b2["saturation"].items())
        lines += ["", f"### Brian2 cpp_standalone at T = {b2['T']}, theta0 = {b2['theta0']:g} "
                      f"({b2['W']} steps per image)", "",
                  "| figure | value |", "|---|---|",
                  f"| images | first {b2['n']} test images, {b2['B']} sample windows per binary run |",
                  f"| Brian2 == torch float64 forward | max abs(score difference) {b2['max_diff']:.1e}; predictions "
                  f"equal: {'yes' if b2['pred_equal'] else 'NO'}; spike counts of all {b2['layers']} STEB layers "
                  f"equal on every image: {'yes' if b2['spikes_equal'] else 'NO'} |",
                  f"| accuracy on these images | Brian2 {100 * b2['acc']:.2f} %, torch {100 * b2['ref_acc']:.2f} % |",
                  f"| images/s, compiled binary | {b2['ips']:.1f} ({b2['runs']} binary runs, {b2['sim_s']:.1f} s for "
                  f"{b2['n']} images, inputs written and results read included) |",
                  f"| build | {b2['build_s']:.1f} s ({build}) |",
                  f"| images/s, `snn.run` end to end | {b2['ips_e2e']:.1f} ({b2['e2e_s']:.1f} s, build included) |",
                  f"| torch float64 reference | {b2['n'] / b2['ref_s']:.1f} images/s |",
                  f"| per image | {b2['spikes']:,.0f} spikes, {b2['synops']:,.0f} synaptic events (composed pool + "
                  f"conv synapses), {b2['input_macs']:,.0f} analog first-layer MACs, {b2['cab_macs']:,} CAB MACs; "
                  f"ANN {b2['ann_ops']:,} MACs |",
                  f"| STEB inputs above sum(theta) (calibration, 500 training images) | {sat} |"]
    lines += ["", ""]
    return "\n".join(lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small smoke run")
    p.add_argument("--epochs", type=int, default=None, help="ANN epochs (2; --quick 1)")
    p.add_argument("--train-samples", type=int, default=None, help="(60000; --quick 10000)")
    p.add_argument("--test-samples", type=int, default=None, help="(10000; --quick 1000)")
    p.add_argument("--T", type=int, nargs="+", default=None, help="time steps per block (4 6 8 12 16; --quick 4 8)")
    p.add_argument("--theta0", type=float, nargs="+", default=None, help="(0.4 0.8 1 2; --quick 0.4 1)")
    p.add_argument("--tau", type=float, default=2.0)
    p.add_argument("--direct-images", type=int, default=None,
                   help="test images for the direct conversion (2000; --quick 500)")
    p.add_argument("--tolerance", type=float, default=0.3, help="pp below the ANN kept without fine-tuning")
    p.add_argument("--ft-images", type=int, default=None, help="fine-tuning images (5000; --quick 2000)")
    p.add_argument("--ft-epochs", type=int, default=1)
    p.add_argument("--ft-lr", type=float, default=2e-4)
    p.add_argument("--brian2-T", type=int, default=8)
    p.add_argument("--brian2-theta0", type=float, default=1.0)
    p.add_argument("--brian2-images", type=int, default=None, help="(1000; --quick 200)")
    p.add_argument("--brian2-batch", type=int, default=500)
    p.add_argument("--skip-brian2", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-record", action="store_true", help="do not record the section (BENCHMARKS.md)")
    args = p.parse_args(argv)
    defaults = {"epochs": (2, 1), "train_samples": (60000, 10000), "test_samples": (10000, 1000),
                "T": ([4, 6, 8, 12, 16], [4, 8]), "theta0": ([0.4, 0.8, 1.0, 2.0], [0.4, 1.0]),
                "direct_images": (2000, 500), "ft_images": (5000, 2000), "brian2_images": (1000, 200)}
    unset = [k for k in defaults if getattr(args, k) is None]
    vars(args).update({k: defaults[k][int(args.quick)] for k in unset})  # (full, quick) pairs
    t_start, args.load_start = time.perf_counter(), os.getloadavg()[0]
    torch.set_num_threads(1)
    os.environ.setdefault("BIOSNN_PROGRESS", "0")

    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    x_train, y_train = x_train[:args.train_samples], y_train[:args.train_samples]
    x_test, y_test = x_test[:args.test_samples], y_test[:args.test_samples]
    ann, _ = trained_ann(x_train, y_train, args.epochs, args.seed)
    with torch.no_grad():
        ann_pred = torch.cat([ann(torch.as_tensor(x_test[s:s + 1000])).argmax(1)
                              for s in range(0, len(x_test), 1000)]).numpy()
    ann_info = {"acc": float(np.mean(ann_pred == y_test))}
    control = train_classifier(copy.deepcopy(ann), x_train[:args.ft_images], y_train[:args.ft_images],
                               epochs=args.ft_epochs, lr=args.ft_lr, batch_size=64, seed=args.seed + 1)
    ann_info["acc_ft"] = accuracy(control, x_test, y_test)
    log(f"ANN test accuracy {100 * ann_info['acc']:.2f} % ({len(x_test)} images); after the fine-tuning "
        f"schedule of the STCSNN cells (as an ANN): {100 * ann_info['acc_ft']:.2f} %")

    def ann_acc_n(n):
        return float(np.mean(ann_pred[:n] == y_test[:n]))

    log(f"grid T={args.T} x theta0={args.theta0} (tau={args.tau:g}):")
    rows, models = grid(ann, ann_acc_n, x_train, y_train, x_test, y_test, args)
    b2 = {}
    if not args.skip_brian2:
        key = (args.brian2_T, args.brian2_theta0)
        stc = models.get(key) or biosnn.prepare(ann, "stc", T=args.brian2_T, theta0=args.brian2_theta0,
                                                tau=args.tau).eval()
        log(f"Brian2 cpp_standalone at T={key[0]}, theta0={key[1]:g}:")
        b2 = brian2_check(stc, x_train, x_test, y_test, args)
        log(f"  {b2['ips']:.1f} images/s (binary), {b2['ips_e2e']:.1f} end to end; max |score diff| "
            f"{b2['max_diff']:.1e}, predictions equal {b2['pred_equal']}, spike counts equal {b2['spikes_equal']}, "
            f"accuracy {100 * b2['acc']:.2f} %")
    minutes = (time.perf_counter() - t_start) / 60
    section = markdown(args, argv, ann_info, rows, b2, 60 * minutes)
    print("", section, sep="\n", flush=True)
    if args.no_record:
        log(f"not recorded (--no-record); {minutes:.1f} min")
    else:
        from biosnn.codings.stc.torch_model import STCBlock
        stebs = sum(isinstance(m, STCBlock) for m in biosnn.prepare(ann, "stc").modules())  # T steps each
        data = {"ann": ann_info, "grid": [report.scalars(r) for r in rows], "brian2": report.scalars(b2),
                "accuracy_vs_T": [] if args.quick else [
                    {"series": "STC theta0=1 (own BatchNorm LeNet-5)",
                     "label": f"T={r['T']}" + (" ft" if r["tuned"] else ""),
                     "T": r["T"], "steps": stebs * r["T"], "accuracy_pct": 100 * r["acc"], "images": r["n"]}
                    for r in rows if r["theta0"] == 1.0]}
        path = report.record("stc_mnist" + ("_quick" if args.quick else ""), section,
                             command=command_line(argv), script="benchmarks/convert_mnist_stc.py", data=data,
                             load=(args.load_start, os.getloadavg()[0]))
        log(f"recorded {path} and re-rendered BENCHMARKS.md; {minutes:.1f} min")


if __name__ == "__main__":
    main()
