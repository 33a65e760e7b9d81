"""Rate-coded LeNet-5 on MNIST: SNN accuracy vs time steps, and Brian2 vs SpikingJelly throughput.

Full run (about 9 min on one core of the shared 2-core x86-64 machine, training included, the Brian2
build cached; add ~30 s to 4 min for its compilation otherwise; records its section through
benchmarks/report.py, which re-renders BENCHMARKS.md):

    BIOSNN_MNIST=/work/shared/data/mnist.npz taskset -c 1 .venv/bin/python benchmarks/convert_mnist_rate.py

Smoke run (1-2 min once its model and Brian2 build are cached; add --no-record to leave the results alone):

    BIOSNN_MNIST=/work/shared/data/mnist.npz taskset -c 1 .venv/bin/python benchmarks/convert_mnist_rate.py --quick

What it does:

1. Trains LeNet-5 (``examples/convert_mnist.py``'s ``lenet5``; average pooling, and max pooling
   with ``--pools avg max``) on the 60k MNIST training images with Adam on the CPU (seed 0,
   3 epochs, ``biosnn.datasets.train_classifier``) and caches the state_dict in
   ``benchmarks/.cache/``, so a re-run skips training. Reports the ANN's test accuracy.
2. Accuracy vs time steps: for every T in ``--T`` and every normalisation (max, percentile 99.9,
   spike-norm) converts with ``biosnn.convert`` and evaluates test images with the exact
   discrete-time reference of ``biosnn.codings.rate.reference`` (what the Brian2 network computes).
   Running ``reference.simulate_rate`` itself for every cell would take ~2 h of one core (it
   recomputes the first convolution, in float64, every step), so the sweep uses
   :func:`reference_sweep`: the reference's own stepping code (``reference._Net``, the same torch
   float64 ops in the same order, same batches) with two savings that change no bit: the first
   layer's constant analog input current is computed once, and for the T-independent
   normalisations (max, percentile) one run to max(T) is read out at every T (the state after t
   steps does not depend on the T a run will end at; all T are powers of two, so ``v / T`` is exact).
   Its scores and spike counts are checked bit for bit against ``reference.simulate_rate`` on the
   first ``--verify`` test images for every (T, normalisation). Spike-norm thresholds depend on T,
   so each T is converted (``--spike-norm-calib`` training images) and simulated on its own.
   Test images per normalisation: ``--percentile-images`` (all 10k), ``--max-images`` and
   ``--spike-norm-images`` (fewer, for the compute budget); T above ``--long-T`` only on the first
   ``--long-T-images``; spike-norm only up to ``--spike-norm-max-T``. Differences to the ANN are
   always taken on the same images.
3. Throughput at T = ``--brian2-T`` (percentile): ``snn.run(backend="cpp_standalone",
   batch_size=--brian2-batch)`` on the first ``--brian2-images`` test images, with the build
   (code generation, plus compilation unless the structure is in the build cache; ``--fresh-build``
   forces it) and the runs of the compiled binary timed separately. Its predictions and per-layer
   spike counts are compared with the reference's. In the same process SpikingJelly's ann2snn
   (``Converter(RateCodingRecipe(loader, mode='99.9%'))``, single-step IF nodes, float32, CPU,
   1 thread, batch ``--sj-batch``) converts the same ANN and runs the same images.
4. Prints everything and records its Markdown section (``report.record('rate_mnist', ...)``: replaces
   ``benchmarks/results/rate_mnist.json``, re-renders ``BENCHMARKS.md``; ``--no-record``: don't).

``--quick`` trims: 1 training epoch on 10,000 images (cached separately), 500 test images
(250 for spike-norm and for T > 32), T in 8, 16, 32, 64, spike-norm calibrated on 64 images,
16 images verified, Brian2 and SpikingJelly on 200 images.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

import biosnn  # noqa: E402
from biosnn.codings.rate import reference as ref  # noqa: E402
from biosnn.datasets import accuracy, load_mnist, train_classifier  # noqa: E402
from convert_mnist import lenet5  # noqa: E402

import report  # noqa: E402  (benchmarks/report.py)

CACHE = ROOT / "benchmarks" / ".cache"
BENCH_DATE = "2026-11-23"
NORMS = ("max", "percentile", "spike-norm")


def log(msg: str = ""):
    print(msg, flush=True)


# --------------------------------------------------------------------------- ANN
def trained_lenet(pool: str, x_train, y_train, epochs: int, seed: int) -> tuple[torch.nn.Module, dict]:
    """LeNet-5 trained with Adam (lr 1e-3, batch 128), cached by pool/epochs/samples/seed."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"lenet5-{pool}-e{epochs}-n{len(x_train)}-seed{seed}.pt"
    torch.manual_seed(seed)
    model = lenet5(pool)
    info = {"cache": str(path.relative_to(ROOT))}
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        info["train_s"] = None
        log(f"[{pool}] loaded trained LeNet-5 from {info['cache']}")
    else:
        t0 = time.perf_counter()
        train_classifier(model, x_train, y_train, epochs=epochs, lr=1e-3, batch_size=128, seed=seed)
        info["train_s"] = time.perf_counter() - t0
        torch.save(model.state_dict(), path)
        log(f"[{pool}] trained LeNet-5 ({epochs} epochs, {len(x_train)} images) in {info['train_s']:.0f} s")
    return model.eval(), info


def ann_predictions(model, x) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(torch.as_tensor(x[s:s + 1000])).argmax(1)
                          for s in range(0, len(x), 1000)]).numpy()


# --------------------------------------------------------------------------- reference sweep
def reference_sweep(graph, thresholds, readout: str, x, Ts, batch_size: int = 256,
                    long_T: int | None = None, long_images: int | None = None) -> dict:
    """The reference simulation (analog input) read out after every t in ``Ts``.

    Same semantics and the same floating-point operations as
    ``reference.simulate_rate(graph, x, T, thresholds=..., readout=...,
    batch_size=batch_size)`` for each ``T`` in ``Ts``; see the module docstring.
    With ``long_T``: the steps beyond ``long_T`` are simulated only for the
    batches starting before image ``long_images`` (results for those T cover
    the first ``long_images`` images rounded up to whole batches).

    Returns ``{T: {"scores": (N_T, classes), "predictions": (N_T,), "layer_spikes": {layer: (N_T,)}}}``.
    """
    torch_ = torch
    net = ref._Net(graph, thresholds)
    Ts = sorted(set(int(t) for t in Ts))
    tmax = Ts[-1]
    order = [n for n in graph.names[1:] if net.roles[n] != "virtual"]
    out_layer = graph.output
    potential_out = readout == "potential"
    n = len(x)
    res = {T: {"scores": [], "layer_spikes": {}} for T in Ts}
    for start in range(0, n, int(batch_size)):
        xb = x[start:start + int(batch_size)]
        horizon = tmax
        if long_T is not None and long_images is not None and start >= long_images:
            horizon = max(t for t in Ts if t <= long_T)
        inp, _ = ref._input_source(graph, xb, horizon, "analog", None, start)
        x0 = inp(0)
        nb = x0.shape[0]
        v = {m: torch_.zeros(nb, graph[m].size, dtype=torch_.float64) for m in order if net.roles[m] == "if"}
        cum = {m: torch_.zeros(nb, graph[m].in_size, dtype=torch_.float64)
               for m in order if net.roles[m] == "maxpool"}
        peak = {m: torch_.zeros(nb, graph[m].size, dtype=torch_.float64) for m in cum}
        counts = {m: torch_.zeros(nb, graph[m].size, dtype=torch_.float64) for m in order}
        # constant synaptic input of IF layers fed by the analog input alone (computed once)
        const = {m: net.current(m, {"input": x0}) for m in order
                 if net.roles[m] == "if" and graph[m].op != "add" and tuple(graph[m].inputs) == ("input",)}
        for t in range(horizon):
            s = {"input": x0}
            for name in order:
                if net.roles[name] == "maxpool":
                    cum[name] += s[graph[name].inputs[0]]
                    new_peak = net.max_count(name, cum[name])
                    out = new_peak - peak[name]
                    peak[name] = new_peak
                else:
                    v[name] += const[name] if name in const else net.current(name, s)
                    if potential_out and name == out_layer:
                        out = torch_.zeros_like(v[name])
                    else:
                        theta = net.theta[name]
                        out = (v[name] >= theta).to(torch_.float64)
                        v[name] -= theta * out
                s[name] = out
                counts[name] += out
            T = t + 1
            if T in res:
                if potential_out and net.roles[out_layer] == "if":
                    res[T]["scores"].append(v[out_layer].numpy() / T)
                else:
                    res[T]["scores"].append(counts[out_layer].numpy() / T)
                for name in order:
                    if not (potential_out and name == out_layer):
                        res[T]["layer_spikes"].setdefault(name, []).append(
                            counts[name].sum(dim=1).numpy().round().astype(np.int64))
    out = {}
    for T in Ts:
        if not res[T]["scores"]:
            continue
        scores = np.concatenate(res[T]["scores"])
        out[T] = {"scores": scores, "predictions": np.argmax(scores, axis=1).astype(np.int64),
                  "layer_spikes": {k: np.concatenate(v_) for k, v_ in res[T]["layer_spikes"].items()}}
    return out


def verify_sweep(snn, x, Ts, batch_size) -> bool:
    """``reference_sweep`` == ``reference.simulate_rate`` bit for bit on ``x`` at every T."""
    fast = reference_sweep(snn.graph, snn.thresholds, snn.readout, x, Ts, batch_size)
    ok = True
    for T in Ts:
        slow = ref.simulate_rate(snn.graph, x, T, thresholds=snn.thresholds, readout=snn.readout,
                                 batch_size=batch_size)
        same = np.array_equal(fast[T]["scores"], slow.scores)
        same &= all(np.array_equal(fast[T]["layer_spikes"][k], slow.counts[k].sum(axis=1))
                    for k in fast[T]["layer_spikes"])
        ok &= bool(same)
        if not same:
            log(f"  VERIFY FAILED at T={T}")
    return ok


def accuracy_sweep(model, pool, x_train, x_test, y_test, ann_pred, args) -> tuple[list, dict]:
    rows, keep = [], {}
    calib = x_train[:args.calib]
    for norm in args.norms:
        n_img = min(args.images[norm], len(x_test))
        x, y, a = x_test[:n_img], y_test[:n_img], ann_pred[:n_img]
        t0 = time.perf_counter()
        verified = True
        conv_s = 0.0
        if norm == "spike-norm":
            Ts = [T for T in args.T if T <= args.spike_norm_max_T]
            results = {}
            for T in Ts:
                c0 = time.perf_counter()
                snn = biosnn.convert(biosnn.prepare(model, "rate"), coding="rate",
                                     calibration=x_train[:args.spike_norm_calib], input_shape=(1, 28, 28),
                                     T=T, normalization=norm, name=f"lenet5_{pool}")
                conv_s += time.perf_counter() - c0
                if args.verify:
                    verified &= verify_sweep(snn, x_test[:args.verify], [T], args.ref_batch)
                results[T] = reference_sweep(snn.graph, snn.thresholds, snn.readout, x, [T], args.ref_batch)[T]
                log(f"  [{pool}] spike-norm T={T}: {100 * np.mean(results[T]['predictions'] == y):.2f} % "
                    f"({time.perf_counter() - t0:.0f} s)")
        else:
            c0 = time.perf_counter()
            snn = biosnn.convert(biosnn.prepare(model, "rate"), coding="rate", calibration=calib,
                                 input_shape=(1, 28, 28), T=max(args.T), normalization=norm,
                                 percentile=99.9, name=f"lenet5_{pool}")
            conv_s += time.perf_counter() - c0
            if args.verify:
                verified &= verify_sweep(snn, x_test[:args.verify], args.T, args.ref_batch)
            results = reference_sweep(snn.graph, snn.thresholds, snn.readout, x, args.T, args.ref_batch,
                                      long_T=args.long_T, long_images=args.long_T_images)
        for T, r in sorted(results.items()):
            k = len(r["predictions"])
            acc = float(np.mean(r["predictions"] == y[:k]))
            ann_acc = float(np.mean(a[:k] == y[:k]))
            rows.append({"pool": pool, "norm": norm, "T": T, "n": k, "acc": acc, "ann_acc": ann_acc,
                         "agree": float(np.mean(r["predictions"] == a[:k])),
                         "diff_pp": 100 * (acc - ann_acc),
                         "spikes": float(np.mean(np.sum(list(r["layer_spikes"].values()), axis=0))),
                         "verified": verified})
            keep[(norm, T)] = r
        log(f"  [{pool}] {norm}: swept in {time.perf_counter() - t0:.0f} s (conversion {conv_s:.0f} s), "
            f"verified against simulate_rate: {verified}")
    return rows, keep


# --------------------------------------------------------------------------- Brian2
def brian2_throughput(model, x_train, x_test, y_test, ann_pred, ref_result, args) -> dict:
    """One ``snn.run`` on cpp_standalone, with the build (code generation + compilation) and the
    runs of the compiled binary timed separately (``SNNResult.build_time_s`` / ``run_time_s``)."""
    from biosnn.backends import brian2_standalone as bs
    n, B, T = args.brian2_images, min(args.brian2_batch, args.brian2_images), args.brian2_T
    x, y = x_test[:n], y_test[:n]
    snn = biosnn.convert(biosnn.prepare(model, "rate"), coding="rate", calibration=x_train[:args.calib],
                         input_shape=(1, 28, 28), T=T, normalization="percentile", name="lenet5_avg")
    spec = snn.spec_for(B)
    backend = bs.CppStandaloneBackend()
    build_dir = bs.build_directory(backend, spec)
    if args.fresh_build and build_dir.exists():
        import shutil
        shutil.rmtree(build_dir)
    cached = (build_dir / "main").exists()
    log(f"  Brian2 cpp_standalone: {n} images, T={T}, {B} sample windows per run, build dir {build_dir} "
        f"({'already compiled' if cached else 'will compile'})")
    res = snn.run(x, backend="cpp_standalone", batch_size=B, progress=False)
    build_s, sim_s = res.build_time_s, res.run_time_s
    log(f"  snn.run {res.wall_time_s:.1f} s end to end = build {build_s:.1f} s "
        f"({'compile included' if not cached else 'cached binary'}) + {res.runs} binary runs "
        f"{sim_s:.1f} s (+ {res.wall_time_s - build_s - sim_s:.1f} s other)")
    common = sorted(set(res.layer_spikes) & set(ref_result["layer_spikes"]))
    spikes_equal = all(np.array_equal(res.layer_spikes[k].round().astype(np.int64),
                                      ref_result["layer_spikes"][k][:n]) for k in common)
    return {"n": n, "B": B, "T": T, "wall_s": res.wall_time_s, "build_s": build_s, "sim_s": sim_s,
            "runs": res.runs, "compiled": not cached, "ips": n / sim_s,
            "ips_e2e": res.images_per_second, "acc": res.accuracy(y), "agree_ann": res.agreement(ann_pred[:n]),
            "agree_ref": float(np.mean(res.predictions == ref_result["predictions"][:n])),
            "spikes_equal_ref": spikes_equal, "layers_compared": len(common),
            "max_score_diff": float(np.max(np.abs(res.scores - ref_result["scores"][:n]))),
            "spikes": float(np.mean(res.spikes_per_sample)), "synops": float(np.mean(res.synops_per_sample)),
            "ann_ops": snn.ann_ops}


# --------------------------------------------------------------------------- SpikingJelly
def spikingjelly_throughput(model, x_train, x_test, y_test, ann_pred, ref_result, args) -> dict:
    try:
        import spikingjelly
        from spikingjelly.activation_based import ann2snn, functional
    except Exception as exc:  # noqa: BLE001
        return {"error": f"import spikingjelly failed: {type(exc).__name__}: {exc}"}
    import logging
    logging.getLogger("spikingjelly").setLevel(logging.WARNING)
    n, B, T = args.brian2_images, min(args.sj_batch, args.brian2_images), args.brian2_T
    dev = getattr(args, "device", "cpu")  # "cuda": SpikingJelly on the GPU (the GPU benchmark)
    x, y = torch.as_tensor(x_test[:n]).to(dev), y_test[:n]
    try:
        calib = torch.utils.data.TensorDataset(torch.as_tensor(x_train[:args.calib]),
                                               torch.zeros(args.calib, dtype=torch.long))
        loader = torch.utils.data.DataLoader(calib, batch_size=100, shuffle=False)
        c0 = time.perf_counter()
        recipe = ann2snn.RateCodingRecipe(dataloader=loader, mode="99.9%")
        sj = ann2snn.Converter(recipe, device=dev).convert(copy.deepcopy(model).to(dev)).eval()
        conv_s = time.perf_counter() - c0
        preds = []
        t0 = time.perf_counter()
        with torch.no_grad():
            for s in range(0, n, B):
                xb = x[s:s + B]
                functional.reset_net(sj)
                out = 0
                for _ in range(T):
                    out = out + sj(xb)
                preds.append(out.argmax(1))
        if dev != "cpu":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        pred = torch.cat(preds).cpu().numpy()
    except Exception as exc:  # noqa: BLE001
        return {"error": f"SpikingJelly {spikingjelly.__version__ if hasattr(spikingjelly, '__version__') else ''} "
                         f"failed: {type(exc).__name__}: {exc}"}
    from importlib.metadata import version
    return {"version": version("spikingjelly"), "device": dev, "n": n, "B": B, "T": T, "wall_s": wall,
            "convert_s": conv_s,
            "ips": n / wall, "acc": float(np.mean(pred == y)), "agree_ann": float(np.mean(pred == ann_pred[:n])),
            "agree_biosnn": float(np.mean(pred == ref_result["predictions"][:n]))}


# --------------------------------------------------------------------------- report
def target_verdict(rows) -> str:
    """Is some conversion within 0.3 pp of the ANN (on the same images) at T <= 128?"""
    best = {}
    for r in rows:
        if r["T"] <= 128 and r["diff_pp"] >= -0.3:
            key = (r["pool"], r["norm"])
            if key not in best or r["T"] < best[key]["T"]:
                best[key] = r
    if best:
        return "**met**: " + "; ".join(
            f"{k[0]}-pool {k[1]} from T = {v['T']} ({v['diff_pp']:+.2f} pp on {v['n']} test images)"
            for k, v in sorted(best.items())) + "."
    closest = max((r for r in rows if r["T"] <= 128), key=lambda r: r["diff_pp"], default=None)
    return "**not met**" + (f"; closest: {closest['pool']}-pool {closest['norm']} at T = {closest['T']} "
                            f"({closest['diff_pp']:+.2f} pp on {closest['n']} test images)." if closest else ".")


def cpu_model() -> str:
    return report.cpu_model()


def command_line(argv) -> str:
    return report.command_line([__file__, *argv])


def markdown(args, argv, anns, rows, target, b2, sj, total_s) -> str:
    lines = [f"## Rate-coded LeNet-5 on MNIST: accuracy vs time steps, Brian2 vs SpikingJelly (CPU)"
             f"{' (--quick)' if args.quick else ''}", ""]
    lines += [f"- Date: {BENCH_DATE}. Machine: 2-core x86-64 CPU ({cpu_model()}), no GPU; run pinned to one "
              f"core, torch 1 thread. Python {platform.python_version()}, torch {torch.__version__}, "
              f"brian2 {__import__('brian2').__version__}.",
              f"- Command (total {total_s / 60:.1f} min): `{command_line(argv)}`",
              f"- Machine load (1-min load average at start / end): {args.load_start:.1f} / {os.getloadavg()[0]:.1f} "
              f"on 2 cores (shared machine: timings are noisy).",
              f"- ANN: LeNet-5 (`examples/convert_mnist.py`), Adam lr 1e-3, batch 128, seed 0, "
              f"{args.epochs} epochs on {args.train_samples} training images, CPU; state_dict cached in "
              f"`benchmarks/.cache/`. Test accuracy ({args.test_samples} test images): "
              + ", ".join(f"{p}-pool {100 * a['acc']:.2f} %" for p, a in anns.items()) + ".",
              ""]
    if rows:
        n_of = {norm: sorted({r["n"] for r in rows if r["norm"] == norm}) for norm in args.norms}
        lines += ["### SNN accuracy vs time steps", "",
                  f"Rate coding, IF neurons with reset by subtraction, analog input current, potential readout. "
                  f"Max / percentile (99.9) weight normalisation calibrated on {args.calib} training images; "
                  f"spike-norm thresholds from {args.spike_norm_calib} training images, per T. "
                  f"Every cell is simulated with the exact discrete-time reference `biosnn.codings.rate.reference` "
                  f"(the network the Brian2 backends build: tests show Brian2 reproduces its spike counts and "
                  f"scores exactly; the throughput part below checks it again). The sweep reuses the reference's "
                  f"stepping code with the constant first-layer current computed once and one run per "
                  f"normalisation read out at every T; its scores and spike counts equal "
                  f"`reference.simulate_rate` bit for bit on the first {args.verify} test images at every "
                  f"(T, normalisation): {'yes' if all(r['verified'] for r in rows) else 'NO (see log)'}. "
                  f"Cells: SNN accuracy / agreement with the ANN (per image) / SNN minus ANN (on the same "
                  f"images) in percentage points. Test images per cell (compute budget: one core): "
                  + ", ".join(f"{norm} {'/'.join(str(n) for n in reversed(n_of[norm]))}" for norm in args.norms)
                  + f" (percentile and max above T = {args.long_T}: the first {args.long_T_images}; "
                  f"spike-norm only up to T = {args.spike_norm_max_T}); '-': not run.", ""]
    for pool in anns:
        prow = [r for r in rows if r["pool"] == pool]
        if not prow:
            continue

        def cell(norm, T, fmt):
            r = next((r for r in prow if r["norm"] == norm and r["T"] == T), None)
            return "-" if r is None else fmt(r)

        lines += [f"**{pool} pooling** (ANN {100 * anns[pool]['acc']:.2f} % on {args.test_samples})", "",
                  "| T | " + " | ".join(args.norms) + " |", "|---|" + "---|" * len(args.norms)]
        for T in args.T:
            lines.append(f"| {T} | " + " | ".join(cell(n, T, lambda r: f"{100 * r['acc']:.2f} / {100 * r['agree']:.2f}"
                                                           f" / {r['diff_pp']:+.2f}" + ("" if r["n"] == args.test_samples
                                                                                       else f" ({r['n']})"))
                                                  for n in args.norms) + " |")
        lines += ["", f"Spikes per image ({pool} pooling):", "",
                  "| T | " + " | ".join(args.norms) + " |", "|---|" + "---|" * len(args.norms)]
        for T in args.T:
            lines.append(f"| {T} | " + " | ".join(cell(n, T, lambda r: f"{r['spikes']:,.0f}") for n in args.norms) + " |")
        lines.append("")
    if rows:
        lines += [f"**Target** (rate-coded LeNet within 0.3 pp of the ANN at <= 128 steps): {target}", ""]
    if b2:
        lines += ["### Throughput: Brian2 cpp_standalone vs SpikingJelly ann2snn", "",
                  f"Same trained avg-pool LeNet-5, T = {b2['T']}, first {b2['n']} test images, CPU, one core.", "",
                  "| route | images/s | accuracy | agreement | notes |", "|---|---|---|---|---|",
                  f"| biosnn `snn.run(backend='cpp_standalone', batch_size={b2['B']})` (percentile 99.9): "
                  f"compiled binary only ({b2['runs']} runs of {b2['B']} sample windows) | {b2['ips']:.1f} | "
                  f"{100 * b2['acc']:.2f} % | {100 * b2['agree_ref']:.2f} % with the reference, "
                  f"{100 * b2['agree_ann']:.2f} % with the ANN | binary runs {b2['sim_s']:.1f} s; build "
                  f"{b2['build_s']:.1f} s ({'code generation + compilation' if b2['compiled'] else 'code generation; binary from the build cache, no compilation'}); "
                  f"end to end {b2['wall_s']:.1f} s = {b2['ips_e2e']:.1f} images/s. Per-layer spike counts equal "
                  f"the reference's on every image: {'yes' if b2['spikes_equal_ref'] else 'NO'} "
                  f"({b2['layers_compared']} layers); max abs(score - reference) {b2['max_score_diff']:.1e}. "
                  f"{b2['spikes']:,.0f} spikes and {b2['synops']:,.0f} synaptic events per image "
                  f"(ANN: {b2['ann_ops']:,} MACs) |"]
        if sj.get("error"):
            lines.append(f"| SpikingJelly | - | - | - | could not run: {sj['error']} |")
        else:
            lines.append(f"| SpikingJelly {sj['version']} ann2snn, `Converter(RateCodingRecipe(loader, mode='99.9%'))`,"
                         f" single-step IFNode, float32, batch {sj['B']} | {sj['ips']:.1f} | {100 * sj['acc']:.2f} % | "
                         f"{100 * sj['agree_biosnn']:.2f} % with biosnn, {100 * sj['agree_ann']:.2f} % with the ANN | "
                         f"conversion {sj['convert_s']:.1f} s, simulation {sj['wall_s']:.1f} s; its own thresholds "
                         f"(99.9th percentile of all activations incl. zeros, momentum over 100-image batches) |")
            lines += ["", f"biosnn (Brian2, compiled binary) / SpikingJelly images/s: **{b2['ips'] / sj['ips']:.3f}** "
                          + (f"(SpikingJelly {sj['ips'] / b2['ips']:.1f}x faster" if sj["ips"] > b2["ips"]
                             else f"(Brian2's binary {b2['ips'] / sj['ips']:.1f}x faster") + "; end to end with the build: "
                          + f"{b2['ips_e2e'] / sj['ips']:.3f})."]
    lines += ["", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small smoke run (see above)")
    p.add_argument("--pools", nargs="+", choices=["avg", "max"], default=["avg"])
    p.add_argument("--epochs", type=int, default=None, help="training epochs (3; --quick 1)")
    p.add_argument("--train-samples", type=int, default=None, help="(60000; --quick 10000)")
    p.add_argument("--test-samples", type=int, default=None, help="test images loaded (10000; --quick 500)")
    p.add_argument("--T", type=int, nargs="+", default=None, help="time steps (8 .. 256; --quick 8 .. 64)")
    p.add_argument("--norms", nargs="+", choices=NORMS, default=list(NORMS))
    p.add_argument("--percentile-images", type=int, default=None, help="test images for percentile (10000; --quick 500)")
    p.add_argument("--max-images", type=int, default=None, help="test images for max (2000; --quick 500)")
    p.add_argument("--spike-norm-images", type=int, default=None, help="test images for spike-norm (1000; --quick 250)")
    p.add_argument("--long-T", type=int, default=None,
                   help="T above this are simulated only on the first --long-T-images images (128; --quick 32)")
    p.add_argument("--long-T-images", type=int, default=None, help="(2000; --quick 250)")
    p.add_argument("--spike-norm-max-T", type=int, default=None, help="largest T for spike-norm (128; --quick 64)")
    p.add_argument("--calib", type=int, default=1000, help="calibration images for max/percentile")
    p.add_argument("--spike-norm-calib", type=int, default=None, help="calibration images of spike-norm (100; --quick 64)")
    p.add_argument("--verify", type=int, default=None, help="test images checked against simulate_rate (32; --quick 16)")
    p.add_argument("--ref-batch", type=int, default=250, help="reference batch size")
    p.add_argument("--brian2-images", type=int, default=None, help="(2000; --quick 200)")
    p.add_argument("--brian2-batch", type=int, default=None, help="sample windows per Brian2 run (100; --quick 100)")
    p.add_argument("--brian2-T", type=int, default=32)
    p.add_argument("--sj-batch", type=int, default=1000, help="SpikingJelly batch size")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--fresh-build", action="store_true", help="delete the Brian2 build first (measure compile)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-record", action="store_true", help="do not record the section (BENCHMARKS.md)")
    args = p.parse_args(argv)
    q = args.quick
    defaults = {"epochs": (3, 1), "train_samples": (60000, 10000), "test_samples": (10000, 500),
                "T": ([8, 16, 32, 64, 128, 256], [8, 16, 32, 64]), "spike_norm_calib": (100, 64),
                "percentile_images": (10000, 500), "max_images": (2000, 500), "spike_norm_images": (1000, 250),
                "long_T": (128, 32), "long_T_images": (2000, 250), "spike_norm_max_T": (128, 64),
                "verify": (32, 16), "brian2_images": (2000, 200), "brian2_batch": (100, 100)}
    for k, (full, quick) in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, quick if q else full)
    args.images = {"percentile": args.percentile_images, "max": args.max_images,
                   "spike-norm": args.spike_norm_images}
    args.T = sorted(set(args.T))
    torch.set_num_threads(1)
    os.environ.setdefault("BIOSNN_PROGRESS", "0")
    args.load_start = os.getloadavg()[0]
    t_start = time.perf_counter()

    x_train, y_train = load_mnist("train")
    x_all, y_all = load_mnist("test")
    x_test, y_test = x_all, y_all
    x_train, y_train = x_train[:args.train_samples], y_train[:args.train_samples]
    x_test, y_test = x_test[:args.test_samples], y_test[:args.test_samples]

    anns, rows, models, ref_keep = {}, [], {}, {}
    for pool in args.pools:
        model, info = trained_lenet(pool, x_train, y_train, args.epochs, args.seed)
        ann_pred = ann_predictions(model, x_test)
        info["acc"] = accuracy(model, x_test, y_test)
        info["pred"] = ann_pred
        anns[pool], models[pool] = info, model
        log(f"[{pool}] ANN test accuracy {100 * info['acc']:.2f} % ({len(x_test)} images)")
        r, keep = accuracy_sweep(model, pool, x_train, x_test, y_test, ann_pred, args)
        rows += r
        ref_keep[pool] = keep

    log("\nSNN accuracy / agreement with ANN / SNN-ANN (pp), exact reference:")
    for r in rows:
        log(f"  {r['pool']:3s} {r['norm']:10s} T={r['T']:4d}  {100 * r['acc']:6.2f} %  "
            f"{100 * r['agree']:6.2f} %  {r['diff_pp']:+6.2f} pp  {r['spikes']:10,.0f} spikes/image")
    target = target_verdict(rows)
    log(f"Target (within 0.3 pp of the ANN at T <= 128): {target}")

    b2, sj = {}, {}
    if not args.skip_throughput:
        if "avg" not in models:
            model, info = trained_lenet("avg", x_train, y_train, args.epochs, args.seed)
            models["avg"] = model
            anns.setdefault("avg", {**info, "acc": accuracy(model, x_test, y_test),
                                    "pred": ann_predictions(model, x_test)})
        refr = ref_keep.get("avg", {}).get(("percentile", args.brian2_T))
        if refr is None or args.brian2_images > len(x_test):
            snn = biosnn.convert(biosnn.prepare(models["avg"], "rate"), coding="rate",
                                 calibration=x_train[:args.calib], input_shape=(1, 28, 28), T=args.brian2_T,
                                 normalization="percentile")
            refr = reference_sweep(snn.graph, snn.thresholds, snn.readout, x_all[:args.brian2_images],
                                   [args.brian2_T], args.ref_batch)[args.brian2_T]
        ann_pred_b = ann_predictions(models["avg"], x_all[:args.brian2_images])
        log("\nThroughput:")
        b2 = brian2_throughput(models["avg"], x_train, x_all, y_all, ann_pred_b, refr, args)
        log(f"  Brian2: {b2['ips']:.1f} images/s warm, accuracy {100 * b2['acc']:.2f} %, agreement with the "
            f"reference {100 * b2['agree_ref']:.2f} %, spike counts equal: {b2['spikes_equal_ref']}, "
            f"{b2['spikes']:,.0f} spikes, {b2['synops']:,.0f} synops per image")
        sj = spikingjelly_throughput(models["avg"], x_train, x_all, y_all, ann_pred_b, refr, args)
        if sj.get("error"):
            log(f"  SpikingJelly: {sj['error']}")
        else:
            log(f"  SpikingJelly {sj['version']}: {sj['ips']:.1f} images/s, accuracy {100 * sj['acc']:.2f} %, "
                f"agreement with biosnn {100 * sj['agree_biosnn']:.2f} %; biosnn/SpikingJelly = "
                f"{b2['ips'] / sj['ips']:.4f}")

    total = time.perf_counter() - t_start
    text = markdown(args, argv, anns, rows, target, b2, sj, total)
    log("\n" + text)
    if not args.no_record:
        pct = [r for r in rows if r["pool"] == "avg" and r["norm"] == "percentile"]
        data = {"rows": rows, "brian2": report.scalars(b2), "spikingjelly": report.scalars(sj),
                "accuracy_vs_T": [] if args.quick else [
                    {"series": "rate, 99.9th percentile", "label": None if r["n"] == args.test_samples
                     else f"{r['n']} images", "T": r["T"], "steps": r["T"], "accuracy_pct": 100 * r["acc"],
                     "images": r["n"]} for r in pct]}
        path = report.record("rate_mnist" + ("_quick" if args.quick else ""), text, command=command_line(argv),
                             script="benchmarks/convert_mnist_rate.py", data=data,
                             load=(args.load_start, os.getloadavg()[0]))
        log(f"recorded {path} and re-rendered BENCHMARKS.md")
    log(f"total {total / 60:.1f} min")


if __name__ == "__main__":
    main()
