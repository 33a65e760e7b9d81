"""Conversion speed ladder: LeNet-5 -> PyTorch's MNIST example -> VGG-style 32x32 -> ResNet-20 32x32, biosnn vs SpikingJelly.

Run (records ``benchmarks/results/convert_speed.json`` through ``report.record``, which re-renders
BENCHMARKS.md and ``benchmarks/figures/speed_ladder.png`` from ``data["ladder"]``)::

    BIOSNN_MNIST=/work/shared/data/mnist.npz nice -n 10 .venv/bin/python benchmarks/convert_speed.py

What it does, in one process, per network of ``--networks``:

1. The ANN, trained briefly on MNIST (``--train-samples`` images, ``--epochs``; cached in
   ``benchmarks/.cache``).  The 32x32 networks see MNIST padded by 2 pixels (1 channel).
2. For every coding of ``--codings`` (:data:`CODINGS`: rate at T = 32, tsc at T = 32, tpc with 6
   bits, tdsnn with L = 5; tpc and tdsnn through ``biosnn.prepare`` without fine-tuning, tpc's
   quantisers calibrated on the calibration images): ``biosnn.convert`` (calibration ``--calib``
   training images), then a warm-up ``snn.run`` of one batch on ``cpp_standalone`` into a fresh
   build directory (its build time = code generation + compile), then the timed ``snn.run`` of the
   network's test images with ``workers`` = every core (batches of ``SNN.run``'s default size,
   :func:`biosnn.conversion.snn.batch_plan`, one process of the compiled binary per batch; the run reuses the
   warm-up's build, as a second ``snn.run`` with the same batch layout does), then a second network
   of the same shape (other weights) built: its build time (code generation, no compilation when
   the cache keys on structure).  A coding that refuses a network (TDSNN: residual networks) gives
   a row saying why.
3. SpikingJelly ann2snn (rate, 99.9 % percentile) on the same ANN and images, torch threads =
   the same cores, for every T of ``--sj-T`` (batch 100).  The ratio is to SpikingJelly's fastest
   T whose accuracy reaches biosnn's (within 0.1 percentage points), "below" when none does.
   The summary "best coding at SpikingJelly's best accuracy" (:func:`best_codings`) takes, per
   network, SpikingJelly's fastest T at its highest accuracy and biosnn's fastest coding reaching
   that accuracy (within 0.1 points), from the rows of the table.
4. Peak memory: the resident memory of this process plus its children (the binaries),
   sampled every 0.1 s during conversion, build and run (a baseline of the imports included).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import biosnn  # noqa: E402
from biosnn.backends.parallel import available_cores  # noqa: E402
from biosnn.conversion.snn import batch_plan  # noqa: E402
from biosnn.datasets import load_mnist, train_classifier  # noqa: E402
from biosnn.errors import ConversionError  # noqa: E402
from convert_mnist_rate import CACHE, ann_predictions, spikingjelly_throughput  # noqa: E402
import report  # noqa: E402  (benchmarks/report.py)

#: coding -> conversion parameters
CODINGS = {"rate": {"T": 32, "normalization": "percentile"}, "tsc": {"T": 32}, "tpc": {"bits": 6},
           "tdsnn": {"L": 5.0}}
#: coding -> the parameters that go to ``biosnn.prepare`` (the rest go to ``biosnn.convert``)
PREPARE = {"tpc": ("bits",), "tdsnn": ("L",)}

def command() -> str:
    """This run's command line (environment variables that matter included)."""
    env = " ".join(f"{k}={os.environ[k]}" for k in ("BIOSNN_MNIST", "OMP_NUM_THREADS") if k in os.environ)
    script = os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)
    return " ".join(filter(None, [env, f".venv/bin/python {script}", *sys.argv[1:]]))


def log(msg=""):
    print(msg, flush=True)



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



def best_codings(rows, sj_rows, tolerance=0.001):
    """Per network: biosnn's fastest coding reaching SpikingJelly's best accuracy, against that SpikingJelly run.

    SpikingJelly's reference is its fastest T among those with its highest accuracy; a coding
    reaches it when its accuracy is at least that minus ``tolerance``.  Networks without a
    SpikingJelly result are left out; when no coding reaches it, ``coding`` is ``None`` and
    ``closest`` is the most accurate coding.

    >>> rows = [{"network": "a", "coding": "rate", "acc": 0.90, "ips": 100.0},
    ...         {"network": "a", "coding": "tsc", "acc": 0.95, "ips": 50.0},
    ...         {"network": "a", "coding": "tdsnn", "error": "refused"}]
    >>> sj = {"a": [{"T": 16, "acc": 0.95, "ips": 20.0}, {"T": 32, "acc": 0.95, "ips": 10.0},
    ...             {"T": 8, "acc": 0.80, "ips": 40.0}]}
    >>> best = best_codings(rows, sj)["a"]
    >>> best["coding"], best["sj"]["T"], best["ratio"]
    ('tsc', 16, 2.5)
    >>> best_codings(rows, {"a": [{"T": 32, "acc": 0.99, "ips": 10.0}]})["a"]["closest"]["coding"]
    'tsc'
    """
    out = {}
    for name, srows in sj_rows.items():
        ok = [s for s in srows if "ips" in s]
        mine = [r for r in rows if r["network"] == name and "error" not in r]
        if not ok or not mine:
            continue
        top = max(s["acc"] for s in ok)
        sj = max((s for s in ok if s["acc"] == top), key=lambda s: s["ips"])
        reach = [r for r in mine if r["acc"] >= top - tolerance]
        if reach:
            best = max(reach, key=lambda r: r["ips"])
            out[name] = {"coding": best["coding"], "row": best, "sj": sj, "ratio": best["ips"] / sj["ips"]}
        else:
            out[name] = {"coding": None, "closest": max(mine, key=lambda r: (r["acc"], r["ips"])), "sj": sj,
                         "ratio": None}
    return out


def convert_coding(model, coding, calibration, input_shape):
    """``biosnn.convert`` with :data:`CODINGS`' parameters (TPC and TDSNN through ``biosnn.prepare`` first)."""
    params = dict(CODINGS[coding])
    prep = {k: params.pop(k) for k in PREPARE.get(coding, ())}
    if prep:
        model = biosnn.prepare(model, coding, **prep).eval()
        if coding == "tpc":
            from biosnn.codings import tpc
            tpc.calibrate(model, torch.as_tensor(calibration))
    return biosnn.convert(model, coding, calibration=calibration, input_shape=input_shape, **params)


# --------------------------------------------------------------------------- networks
def lenet5() -> nn.Module:
    """LeNet-5 with average pooling (``examples/convert_mnist.py``), 28x28."""
    from convert_mnist import lenet5 as make
    return make("avg")


def mnist_example() -> nn.Module:
    """PyTorch's MNIST example network (pytorch/examples mnist/main.py), 28x28: conv 32, conv 64, max pool, fc 128."""
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Dropout(0.25), nn.Flatten(), nn.Linear(9216, 128), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(128, 10))


def vgg_small() -> nn.Module:
    """VGG-style on 32x32 with BatchNorm: 2x conv 32, pool, 2x conv 64, pool, 2x conv 128, pool, fc 10 (avg pools)."""
    layers, ch = [], 1
    for v in (32, 32, "P", 64, 64, "P", 128, 128, "P"):
        if v == "P":
            layers.append(nn.AvgPool2d(2))
        else:
            layers += [nn.Conv2d(ch, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
            ch = v
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 4 * 4, 10))


class _Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        # ReLU as modules, not F.relu: SpikingJelly's converter replaces nn.ReLU modules only and
        # refuses function nodes (it could not convert this network before)
        self.r1, self.r2 = nn.ReLU(), nn.ReLU()
        self.short = None
        if stride != 1 or cin != cout:  # option B: 1x1 convolution
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = self.r1(self.b1(self.c1(x)))
        return self.r2(self.b2(self.c2(h)) + (x if self.short is None else self.short(x)))


class ResNet20(nn.Module):
    """ResNet-20 (He et al. 2016, CIFAR variant: 16-32-64 channels, 3x3 blocks each), 1x32x32 input."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for k in range(3):
                blocks.append(_Block(cin, cout, stride if k == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


#: name -> (builder, input side, test images, label)
NETWORKS = {
    "lenet5": (lenet5, 28, 10000, "LeNet-5 (avg pool)"),
    "mnist_example": (mnist_example, 28, 1000, "PyTorch MNIST example (max pool)"),
    "vgg_small": (vgg_small, 32, 1000, "VGG-style 32x32 (BN, avg pool)"),
    "resnet20": (ResNet20, 32, 100, "ResNet-20 32x32 (BN, option-B shortcuts)"),
}


def images(x, side):
    """MNIST (N, 1, 28, 28) padded to ``side`` x ``side``."""
    pad = (side - x.shape[-1]) // 2
    return np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else x


def trained(name, x, y, epochs, n_train):
    make, side, _, _ = NETWORKS[name]
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"ladder-{name}-e{epochs}-n{n_train}.pt"
    torch.manual_seed(0)
    model = make()
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        t0 = time.perf_counter()
        train_classifier(model, images(x[:n_train], side), y[:n_train], epochs=epochs, lr=1e-3, batch_size=128, seed=0)
        torch.save(model.state_dict(), path)
        log(f"[{name}] trained in {time.perf_counter() - t0:.0f} s")
    return model.eval()


def other_weights(model):
    """The same architecture with other weights (a second network of the same shape)."""
    m2 = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m2.parameters():
            p.mul_(0.9).add_(0.01 * torch.randn(p.shape, generator=g))
    return m2.eval()


# --------------------------------------------------------------------------- measuring
def _rss_mb(pid) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _children(pid) -> list[int]:
    """The compiled binaries (``main``) this process runs; forked helpers (sharing its pages) are left out."""
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
    except OSError:
        pass
    keep = []
    for c in out:
        try:
            if os.path.basename(os.readlink(f"/proc/{c}/exe")) == "main":
                keep.append(c)
        except OSError:
            pass
    return keep


class PeakMemory:
    """Peak resident memory (MB) of this process plus the binaries it runs, sampled every ``period`` s."""

    def __init__(self, period=0.1):
        self.period, self.peak, self.peak_children = period, 0.0, 0.0
        self._stop = threading.Event()

    def _sample(self):
        me = os.getpid()
        while not self._stop.is_set():
            kids = sum(_rss_mb(c) for c in _children(me))
            self.peak = max(self.peak, _rss_mb(me) + kids)
            self.peak_children = max(self.peak_children, kids)
            self._stop.wait(self.period)

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def synapse_count(spec) -> int:
    """Synapses of a spec's projections (the meters excluded), convolutions from their geometry."""
    from biosnn.spec.expand import projection_size
    return sum(projection_size(spec, p) for p in spec.projections if p.target != "meter")


def synapse_bytes(spec, float_bytes=8):
    """Bytes the static-projection template allocates for a spec's static projections, and the synapses."""
    from biosnn.backends.brian2_static import is_dense, static_memory_bytes, static_statements
    from biosnn.spec.expand import expand_projection, projection_size
    from biosnn.spec.model import AllToAll, Conv2D
    total = n_syn = 0
    for proj in spec.projections:
        if static_statements(spec, proj) is None:
            continue
        n = projection_size(spec, proj)
        n_pre, n_post = spec.node(proj.source).size, spec.node(proj.target).size
        if isinstance(proj.connect, Conv2D):
            total += static_memory_bytes(n, n_pre, float_bytes, proj.connect.kernel.data.size)
        elif isinstance(proj.connect, AllToAll) and n == n_pre * n_post:
            total += static_memory_bytes(n, n_pre, float_bytes, None, dense=True)
        else:
            conn = expand_projection(spec, proj)
            total += static_memory_bytes(n, n_pre, float_bytes, None, dense=is_dense(conn, n_pre, n_post))
        n_syn += n
    return total, n_syn


def run_biosnn(name, coding, model, data, args, cores):
    x_train, _, x_test, y_test = data
    _, side, n, _ = NETWORKS[name]
    n = min(n, args.max_images) if args.max_images else n
    xt, yt = images(x_test[:n], side), y_test[:n]
    cache_dir = Path(args.cache_dir) if args.cache_dir else Path(tempfile.mkdtemp(prefix=f"biosnn_ladder_{name}_"))
    batch = batch_plan("cpp_standalone", None, n, cores, {}, n_in=side * side)[1]  # the library's default
    kw = dict(backend="cpp_standalone", batch_size=batch, cache_dir=cache_dir, progress=False,
              float32=args.float32)
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        snn = convert_coding(model, coding, images(x_train[:args.calib], side), (1, side, side))
        convert_s = time.perf_counter() - t0
        warm = snn.run(xt[:batch], workers=1, **kw)
        res = snn.run(xt, workers=cores, **kw)
    snn2 = convert_coding(other_weights(model), coding, images(x_train[:args.calib], side), (1, side, side))
    again = snn2.run(xt[:batch], workers=1, **kw)
    ann = ann_predictions(model, xt)
    events = float(np.sum(res.synops_per_sample))
    syn_bytes, n_syn = synapse_bytes(snn.spec)
    return {"network": name, "coding": coding, "n": n, "batch": batch, "workers": cores,
            "acc_ann": float(np.mean(ann == yt)), "acc": res.accuracy(yt), "agree": res.agreement(ann),
            "ips": n / res.wall_time_s, "wall_s": res.wall_time_s, "synops": float(np.mean(res.synops_per_sample)),
            "events_per_s_core": events / res.wall_time_s / cores, "synapses": n_syn, "syn_bytes": syn_bytes,
            "convert_s": convert_s, "compile_s": warm.build_time_s, "second_build_s": again.build_time_s,
            "second_compiled": again.compiled, "peak_mb": mem.peak, "peak_children_mb": mem.peak_children,
            "neurons": int(sum(p.size for p in snn.spec.populations if p.name != "meter"))}


def run_sj(name, model, data, args, cores, ann_pred):
    x_train, _, x_test, y_test = data
    _, side, n, _ = NETWORKS[name]
    n = min(n, args.max_images) if args.max_images else n
    before = torch.get_num_threads()
    torch.set_num_threads(cores)
    rows = []
    try:
        for T in args.sj_T:
            with PeakMemory() as mem:
                r = spikingjelly_throughput(model, images(x_train[:args.calib], side), images(x_test[:n], side), y_test[:n],
                                            ann_pred, {"predictions": ann_pred},
                                            SimpleNamespace(brian2_images=n, sj_batch=100, brian2_T=T, calib=args.calib))
            r["peak_mb"] = mem.peak
            rows.append(r)
            log(f"  SpikingJelly T={T}: {json.dumps(r)}")
    finally:
        torch.set_num_threads(before)
    return rows


# --------------------------------------------------------------------------- report
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    ap.add_argument("--codings", nargs="+", default=list(CODINGS), choices=list(CODINGS))
    ap.add_argument("--max-images", type=int, default=None, help="cap the test images of every network")
    ap.add_argument("--calib", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--train-samples", type=int, default=10000)
    ap.add_argument("--sj-T", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--cache-dir", default=None,
                    help="build directory to reuse (default: a fresh one per network, so compile s is a whole compile)")
    ap.add_argument("--float32", action="store_true",
                    help="simulate biosnn in float32 (SpikingJelly's precision); default float64, "
                         "the precision of the exact references")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    cores = available_cores()
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    x_train, y_train = load_mnist("train")
    x_test, y_test = load_mnist("test")
    data = (x_train, y_train, x_test, y_test)
    rows, sj_rows = [], {}
    torch.set_num_threads(cores)
    for name in args.networks:
        model = trained(name, x_train, y_train, args.epochs, args.train_samples)
        torch.set_num_threads(cores)
        for coding in args.codings:
            log(f"== {name}, {coding}")
            try:
                rows.append(run_biosnn(name, coding, model, data, args, cores))
                log(json.dumps(rows[-1]))
            except ConversionError as exc:  # the coding does not convert this network: a result of the table
                rows.append({"network": name, "coding": coding, "error": f"refused: {exc}"[:300]})
                log(f"  {rows[-1]['error']}")
            except Exception as exc:  # noqa: BLE001  (a failure is reported, not hidden)
                rows.append({"network": name, "coding": coding,
                             "error": f"failed: {type(exc).__name__}: {exc}"[:300]})
                log(f"  {rows[-1]['error']}")
        _, side, n, _ = NETWORKS[name]
        n = min(n, args.max_images) if args.max_images else n
        ann_pred = ann_predictions(model, images(x_test[:n], side))
        sj_rows[name] = run_sj(name, model, data, args, cores, ann_pred)
    load_after = os.getloadavg()
    total_s = time.perf_counter() - t_start
    sj_version = next((r.get("version") for v in sj_rows.values() for r in v if "version" in r), "n/a")
    lines = ["## Conversion speed: a ladder of networks on every core, biosnn cpp_standalone vs SpikingJelly", "",
             f"{cores} cores · load average (1/5/15 min) at start {'/'.join(f'{v:.1f}' for v in load_before)}, at end "
             f"{'/'.join(f'{v:.1f}' for v in load_after)}: a machine shared with other jobs, so absolute figures are "
             f"low and noisy; the ratios are side by side in one process · {total_s / 60:.1f} min in all", "",
             f"biosnn: `snn.run(backend='cpp_standalone', workers={cores}, float32={args.float32})`, one compiled binary per network, batches "
             f"of sample windows in {cores} parallel processes.  SpikingJelly {sj_version} ann2snn (rate, 99.9 %), "
             f"{cores} torch threads, batch 100, T in {args.sj_T}.  ANNs trained {args.epochs} epoch(s) on "
             f"{args.train_samples} MNIST images (the 32x32 networks: MNIST padded to 32x32, one channel).  \"SJ at "
             "equal accuracy\": SpikingJelly's fastest T reaching biosnn's accuracy on the same images (\"below\": "
             "none does; then its most accurate T).  Peak memory: this process and its children (the binaries), "
             "imports included.  Compile s: the first build (code generation + compilation" + (
                 ", resumed in a build directory an interrupted run had started: not a whole compile" if args.cache_dir
                 else "") + "); 2nd same-shape build: "
             "a network of the same architecture with other weights, built afterwards (code generation only when "
             "the build cache hits).", "",
             "| network | coding | neurons | synapses | images | ANN acc | SNN acc | biosnn images/s | SJ at equal "
             "acc: T, acc, images/s | ratio | SJ T=32 images/s | ratio to SJ T=32 | syn. events/img | events/s per "
             "core | convert s | compile s | 2nd same-shape build s | peak MB (binaries) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    ladder = []
    for r in rows:
        if "error" in r:
            why = r["error"].split(";")[0] if r["error"].startswith("refused") else r["error"]  # the reason, not the fix
            lines.append(f"| {NETWORKS[r['network']][3]} | {r['coding']} | {why[:200]} | | | | | | | | | | | | | | | |")
            continue
        best = sj_at_accuracy(sj_rows.get(r["network"], []), r["acc"])
        sj32 = next((s for s in sj_rows.get(r["network"], []) if s.get("T") == 32 and "ips" in s), None)
        eq = (f"T={best['T']}, {best['acc'] * 100:.1f} %, {best['ips']:.1f}"
              f"{' (below)' if best['acc'] < r['acc'] - 0.001 else ''}") if best else "n/a"
        ratio = f"{r['ips'] / best['ips']:.2f}x" if best else "n/a"
        lines.append(
            f"| {NETWORKS[r['network']][3]} | {r['coding']} | {r['neurons']:,} | {r['synapses']:,} | {r['n']} | "
            f"{r['acc_ann'] * 100:.1f} % | {r['acc'] * 100:.1f} % | {r['ips']:.2f} | {eq} | {ratio} | ")
        lines[-1] += (f"{sj32['ips']:.1f} | {r['ips'] / sj32['ips']:.2f}x | " if sj32 else "n/a | n/a | ") + (
            f"{r['synops']:.3g} | {r['events_per_s_core']:.3g} | {r['convert_s']:.1f} | {r['compile_s']:.0f} | "
            f"{r['second_build_s']:.1f}{' (compiled!)' if r['second_compiled'] else ''} | "
            f"{r['peak_mb']:.0f} ({r['peak_children_mb']:.0f}) |")
        ladder.append({"network": r["network"], "synapses": r["synapses"], "coding": r["coding"],
                       "images_per_s": r["ips"], "sj_images_per_s": best["ips"] if best else None})
    lines += ["", "Best coding at SpikingJelly's best accuracy (per network: SpikingJelly's fastest T at its "
              "highest accuracy; biosnn's fastest coding reaching that accuracy within 0.1 points):", "",
              "| network | SJ best: T, acc, images/s | biosnn best coding: acc, images/s | ratio |", "|---|---|---|---|"]
    best = best_codings(rows, sj_rows)
    if not best:
        lines.append("| (no network with both a SpikingJelly result and a biosnn row) | | | |")
    for name, b in best.items():
        sj = b["sj"]
        if b["coding"] is None:
            c = b["closest"]
            mine = f"none reaches it (closest: {c['coding']}, {c['acc'] * 100:.1f} %, {c['ips']:.1f})"
        else:
            mine = f"{b['coding']}, {b['row']['acc'] * 100:.1f} %, {b['row']['ips']:.1f}"
        lines.append(f"| {NETWORKS[name][3]} | T={sj['T']}, {sj['acc'] * 100:.1f} %, {sj['ips']:.1f} | {mine} | "
                     + (f"{b['ratio']:.2f}x |" if b["ratio"] is not None else "n/a |"))
    lines += ["", "SpikingJelly per T (accuracy %, images/s, peak MB):", "",
              "| network | " + " | ".join(f"T={T}" for T in args.sj_T) + " |", "|---|" + "---|" * len(args.sj_T)]
    for name, srows in sj_rows.items():
        cells = [f"{s['acc'] * 100:.1f} %, {s['ips']:.1f}, {s['peak_mb']:.0f}" if "ips" in s else
                 f"failed: {s.get('error', '')[:80]}" for s in srows]
        lines.append(f"| {NETWORKS[name][3]} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_record:
        report.record("convert_speed", text, command=report.command_line(), script="benchmarks/convert_speed.py",
                      data={"ladder": ladder, "rows": [report.scalars(r) for r in rows],
                            "best_coding": {k: {"coding": b["coding"], "ratio": b["ratio"], "sj_T": b["sj"]["T"]}
                                            for k, b in best.items()},
                            "spikingjelly": {k: [report.scalars(s) for s in v] for k, v in sj_rows.items()}},
                      load=(load_before[0], load_after[0]))


if __name__ == "__main__":
    main()
