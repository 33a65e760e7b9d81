"""NIR export: an MNIST CNN converted by biosnn (rate coding), written to a .nir file and re-imported by SpikingJelly.

Trains ``Conv(1, 8, 5) - AvgPool 2 - Conv(8, 16, 5) - AvgPool 2 - Linear(256, 10)`` (ReLUs) on MNIST for
``--epochs``, converts it with ``biosnn.convert(model, "rate", T=...)``, runs the SNN in biosnn on the first
``--samples`` test images, exports it with ``biosnn.to_nir`` to a file, re-imports the file with
SpikingJelly 2.0's ``import_from_nir`` (float64) and runs it there with the same input (the image every step):

* as imported: SpikingJelly builds ``IFNode(v_reset=0)`` from NIR's IF, which resets to ``v_reset``, where the
  rate coding subtracts the threshold; the table gives the agreement of the predictions;
* biosnn on NEST: the file run with ``run_nir(path, x, backend="nest")`` for the first ``--nest-samples``
  images (:mod:`biosnn.frontends.nir.nest_plan`), compared with the SNN's predictions and spike counts;
* with the IF nodes set to SpikingJelly's soft reset (``v_reset=None``), as the graph's metadata says
  (``reset="subtract"``, ``threshold=">="``, which SpikingJelly uses): predictions, hidden-layer spike counts and
  scores compared with biosnn's.

snnTorch 1.0's ``import_from_nir`` cannot take the graph: it asserts ``r == 1`` for an IF node (NIR's ``r`` is
``1/dt``) and builds ``Leaky(beta=0.9)`` for it.  Records a section in BENCHMARKS.md (``--no-record``: don't).
MNIST: ``BIOSNN_MNIST`` or ``--mnist`` (see :func:`biosnn.datasets.load_mnist`).

    python benchmarks/nir_convert_mnist.py --epochs 1 --samples 1000 --steps 32
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
import warnings

import numpy as np


def _sj_run(net, x, T, torch):
    """Outputs ``(T, N, 10)`` and hidden IF spike counts per sample of a SpikingJelly graph for constant input."""
    counts = {}
    handles = [mod.register_forward_hook(lambda m, i, o, name=name: counts.__setitem__(
        name, counts.get(name, 0) + o[0].detach().reshape(len(x), -1).sum(1).numpy()))
        for name, mod in net.named_modules() if type(mod).__name__ == "_NIRStatefulModule"]
    state, outs = None, []
    xt = torch.tensor(x, dtype=torch.float64)
    with torch.no_grad():
        for _ in range(T):
            o, state = net(xt, state)
            outs.append(o.numpy())
    for h in handles:
        h.remove()
    return np.array(outs), counts


def _nest(path, xs, ours, T, pops):
    """Run the exported file on NEST, one image at a time; compare with the SNN's predictions and counts."""
    os.environ.setdefault("PYNEST_QUIET", "1")
    from biosnn import get_backend
    from biosnn.frontends.nir import run_nir
    be = get_backend("nest", cache_dir=os.path.join(os.environ.get("BIOSNN_CACHE_DIR", tempfile.gettempdir()),
                                                    "nestml"))
    t0 = time.perf_counter()
    same, preds, diff = True, [], 0.0
    for k, x in enumerate(xs):
        res = run_nir(path, np.repeat(x[None], T, axis=0), backend=be)
        scores = res["output"].sum(0) / T
        preds.append(int(np.argmax(scores)))
        diff = max(diff, float(np.abs(scores - ours.scores[k]).max()))
        for layer, counts in ours.layer_spikes.items():
            same &= int(res[pops[layer]].sum()) == int(counts[k])
    return {"samples": len(xs), "agreement": float(np.mean(np.array(preds) == ours.predictions[:len(xs)])),
            "counts_identical": bool(same), "max_score_diff": diff, "wall_s": time.perf_counter() - t0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--backend", default="cpp_standalone")
    ap.add_argument("--mnist", default=None)
    ap.add_argument("--nest-samples", type=int, default=5, help="test images also run on NEST from the .nir file")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    load_start = os.getloadavg()[0]
    warnings.filterwarnings("ignore")
    import nir
    import torch
    import torch.nn as nn
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    import biosnn
    from biosnn.datasets import accuracy, load_mnist, train_classifier
    from biosnn.frontends.nir.snn_export import DT
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x, y = load_mnist("train", args.mnist)
    xt, yt = load_mnist("test", args.mnist)
    xt, yt = np.asarray(xt[:args.samples], dtype=np.float64), np.asarray(yt[:args.samples])
    model = nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(8, 16, 5), nn.ReLU(),
                          nn.AvgPool2d(2), nn.Flatten(), nn.Linear(256, 10))
    t0 = time.perf_counter()
    train_classifier(model, x, y, epochs=args.epochs)
    train_s = time.perf_counter() - t0
    ann_acc = accuracy(model, xt, yt)
    T = args.steps
    snn = biosnn.convert(model, "rate", calibration=x[:500], input_shape=(1, 28, 28), T=T)
    t0 = time.perf_counter()
    ours = snn.run(xt, backend=args.backend, progress=False)
    ours_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mnist_cnn.nir")
        nir.write(path, biosnn.to_nir(snn))
        size = os.path.getsize(path)
        net = import_from_nir(path, dt=DT, dtype=torch.float64)
        nest_rows = _nest(path, xt[:args.nest_samples], ours, T, snn.layer_populations()) if args.nest_samples else None
    t0 = time.perf_counter()
    hard, _ = _sj_run(net, xt, T, torch)
    sj_s = time.perf_counter() - t0
    for mod in net.modules():
        if type(mod).__name__ == "IFNode":
            mod.v_reset = None
    soft, counts = _sj_run(net, xt, T, torch)
    pred_hard, pred_soft = hard.sum(0).argmax(1), soft.sum(0).argmax(1)
    hidden = [k for k in ours.layer_spikes]  # torch layer names in order; SpikingJelly's IF nodes L1, L2, ...
    sj_counts = [counts[k] for k in sorted(counts, key=lambda s: int(s[1:]))]
    same_counts = all(np.array_equal(a, ours.layer_spikes[k]) for a, k in zip(sj_counts, hidden))
    differing = sum(int(np.sum(a != ours.layer_spikes[k])) for a, k in zip(sj_counts, hidden))
    score_diff = float(np.abs(soft.sum(0) / T - ours.scores).max())
    n = len(yt)
    rows = {"ann_accuracy": ann_acc, "snn_accuracy": ours.accuracy(yt),
            "sj_hard_accuracy": float(np.mean(pred_hard == yt)),
            "sj_hard_agreement": float(np.mean(pred_hard == ours.predictions)),
            "sj_soft_accuracy": float(np.mean(pred_soft == yt)),
            "sj_soft_agreement": float(np.mean(pred_soft == ours.predictions)),
            "hidden_counts_identical": bool(same_counts), "hidden_counts_differing": differing,
            "max_score_diff": score_diff, "biosnn_s": ours_s, "spikingjelly_s": sj_s, "train_s": train_s,
            "nir_bytes": size, "samples": n, "steps": T, "backend": ours.backend, "nest": nest_rows}
    lines = ["| run | accuracy | predictions equal to biosnn's SNN | hidden spike counts | wall (s) |",
             "|---|---|---|---|---|",
             f"| ANN (torch) | {ann_acc:.4f} | - | - | - |",
             f"| biosnn SNN, {ours.backend} (build + run) | {rows['snn_accuracy']:.4f} | - | "
             f"{int(sum(ours.layer_spikes[k].sum() for k in hidden))} | {ours_s:.1f} |",
             f"| SpikingJelly, NIR file as imported (IF reset to 0) | {rows['sj_hard_accuracy']:.4f} | "
             f"{rows['sj_hard_agreement']:.4f} | - | {sj_s:.1f} |",
             f"| SpikingJelly, IF soft reset (the file's metadata) | {rows['sj_soft_accuracy']:.4f} | "
             f"{rows['sj_soft_agreement']:.4f} | {'identical' if same_counts else f'{differing} differ'}; "
             f"max score difference {score_diff:.1e} | - |"]
    if nest_rows:
        lines.append(f"| biosnn on NEST, `run_nir(file, backend='nest')`, first {nest_rows['samples']} images | - | "
                     f"{nest_rows['agreement']:.4f} | {'identical' if nest_rows['counts_identical'] else 'differ'}; "
                     f"max score difference {nest_rows['max_score_diff']:.1e} | {nest_rows['wall_s']:.1f} |")
    table = "\n".join(lines)
    print(table)
    cmd = "python benchmarks/nir_convert_mnist.py " + " ".join(sys.argv[1:])
    if not args.no_record:
        sys.path.insert(0, os.path.dirname(__file__))
        import report  # benchmarks/report.py
        report.record(
            "nir_convert_mnist",
            f"## NIR export: a converted MNIST CNN re-imported by SpikingJelly\n\n"
            f"{datetime.date.today()} · {platform.processor() or platform.machine()}, {os.cpu_count()} cores · "
            f"`{cmd}`\n\nConv(8,5)-AvgPool-Conv(16,5)-AvgPool-Linear trained {args.epochs} epoch(s) "
            f"({train_s:.0f} s), rate-coded with T={T}, first {n} test images; `biosnn.to_nir` -> {size} byte .nir "
            f"file -> SpikingJelly 2.0 `import_from_nir(dt=1e-3, dtype=float64)`, the image as input every step, "
            f"scores = Output summed over the steps. NIR's IF resets to `v_reset`; the rate coding subtracts the "
            f"threshold (stored in the file's metadata), so SpikingJelly's import as is differs on some samples; "
            f"with its IF nodes switched to soft reset it computes the same network. Simulation wall time, biosnn "
            f"{ours.backend} (cached build) / SpikingJelly (torch float64, 1 thread), same images: "
            f"{ours_s / sj_s:.2g}. NEST runs the file one image at a time (network built per image). "
            f"snnTorch 1.0's importer "
            f"refuses the IF nodes (asserts `r == 1`; NIR's `r` is 1/dt) and would build `Leaky(beta=0.9)`."
            f"\n\n{table}\n",
            command=cmd, script="benchmarks/nir_convert_mnist.py", data=rows,
            load=(load_start, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
