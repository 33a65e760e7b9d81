"""Convolution propagation alone on cpp_standalone: the channel-major template vs the channels-last one.

Every case is a static convolution ``v_post += w`` from a Poisson source of shape ``(R, C, H, W)``
(``--rate`` Hz per neuron, dt = 1 ms) onto non-spiking integrators of shape ``(R, O, Ho, Wo)``
(``R`` = ``--replicas`` replicas, one kernel).  All cases are projections of one network, built
twice per float type and thread count: with ``templates/biosnn_static_conv.cpp`` (channel-major:
per spike, output channel, then kernel taps with a range test each) and with
``templates/biosnn_static_conv_hwc.cpp`` (output channels innermost in a channels-last scratch
copy, one vectorised loop per kernel row; :data:`biosnn.backends.brian2_static.CHANNELS_LAST_MIN_RUN`
set to 1 so that every case takes it, depthwise included, to show where it does not pay).  The two
builds run alternately ``--repeats`` times in one process; a case's propagation time is the least
of its code object's times (Brian2's profiling), its synaptic events the input spikes times each
spiking neuron's fan-out (taps inside the output, times the output channels of its group).
Events per second per core: events / propagation time / threads (1 without OpenMP).  The two
templates give bit-identical sums (``tests/test_static_projections.py``); the run checks it here too.

``--before REV``: a third build, the channels-last template as git revision ``REV`` has it (its
``biosnn/backends/templates/`` read with ``git show``, rendered by this checkout's Brian2 code objects
in the same process), run alternately with the other two: the template before vs after a change,
side by side under the same load.

``--perf-runs N`` (with ``--threads 0``): also each channels-last build's CPU time per convolution, from
``perf record`` (Linux perf, 4000 samples per second of CPU time, in a child process that runs the
cached build N times; two such children per layout, alternating, the fewer samples kept): a
descheduled binary takes no samples, so on a loaded machine this measure holds where the code
objects' wall-clock times (Brian2's profiling) do not.

``--lenet N``: also the rate-coded LeNet-5 of ``benchmarks/convert_speed.py`` (T = 32, its cached
ANN), both templates side by side: images per second of ``snn.run`` on N test images with every core
as workers (best of two alternating runs each), and one profiled run of 100 windows on one core
without OpenMP: each convolution's propagation time and its synaptic events per second per core
(events: its source's recorded spikes times their fan-out).

Run::

    nice -n 10 python benchmarks/conv_propagation.py [--threads 0 2] [--floats 64 32] [--replicas 8] [--lenet 300]
        [--before main]

Prints the table and records it through ``benchmarks/report.py`` (``--no-record``: don't).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import biosnn.backends.brian2_static as static  # noqa: E402
from biosnn.backends import get_backend  # noqa: E402
from biosnn.backends.brian2_standalone import profile_of  # noqa: E402
from biosnn.spec import (ArrayValue, Conv2D, NetworkSpec, NeuronModel, PoissonInput, Population,  # noqa: E402
                         Projection, SpikeMonitor, StateMonitor)
from biosnn.spec.model import SynapseModel  # noqa: E402

import report  # noqa: E402  (benchmarks/report.py)

#: name -> (C, H, W, O, kernel side, stride, padding, groups)
CASES = {
    "lenet_conv1": (1, 28, 28, 6, 5, 1, 2, 1),
    "lenet_conv2": (6, 14, 14, 16, 5, 1, 0, 1),
    "vgg_conv": (32, 16, 16, 64, 3, 1, 1, 1),
    "strided": (16, 16, 16, 32, 3, 2, 1, 1),
    "grouped": (32, 16, 16, 32, 3, 1, 1, 4),
    "depthwise": (32, 16, 16, 32, 3, 1, 1, 32),
}


def out_side(n, k, s, p):
    return (n + 2 * p - k) // s + 1


def fanout(case, R) -> np.ndarray:
    """Synapses of every input neuron (replica-major, channel-major), from the geometry."""
    C, H, W, O, k, s, p, g = CASES[case]

    def taps(n):
        no = out_side(n, k, s, p)
        pos = np.arange(n)[:, None] + p - np.arange(k)[None, :]  # oy * s for each ky
        return ((pos >= 0) & (pos % s == 0) & (pos // s < no)).sum(axis=1)

    per = np.outer(taps(H), taps(W)) * (O // g)
    return np.tile(per.ravel(), R * C)


def by_default(case) -> bool:
    """Whether the default threshold takes the channels-last template for ``case``."""
    C, H, W, O, k, s, p, g = CASES[case]
    geo = static.ConvGeometry(C, H, W, out_side(H, k, s, p), out_side(W, k, s, p), k, k, s, s, p, p, C // g, O // g)
    return static.channels_last(geo, [static.StaticStatement("v", True)], [{"target_index": "_j"}], False, False)


def spec(R, rate, duration_ms, float_label) -> NetworkSpec:
    rng = np.random.default_rng(0)
    pops, inputs, projs = [], [], []
    for name, (C, H, W, O, k, s, p, g) in CASES.items():
        Ho, Wo = out_side(H, k, s, p), out_side(W, k, s, p)
        inputs.append(PoissonInput(f"{name}_in", R * C * H * W, f"{rate}*Hz", shape=(R, C, H, W)))
        pops.append(Population(f"{name}_out", R * O * Ho * Wo, "acc", shape=(R, O, Ho, Wo)))
        kernel = rng.normal(0, 1, (O, C // g, k, k))
        projs.append(Projection(f"{name}_conv", f"{name}_in", f"{name}_out", "jump",
                                Conv2D(ArrayValue(kernel), stride=s, padding=p, groups=g)))
    return NetworkSpec(f"conv_bench_{float_label}", dt="1*ms", duration=f"{duration_ms}*ms", seed=1,
                       neuron_models={"acc": NeuronModel("v : 1")},
                       synapse_models={"jump": SynapseModel("w : 1", on_pre="v_post += w")},
                       populations=pops, inputs=inputs, projections=projs,
                       monitors=[SpikeMonitor(f"{c}_in") for c in CASES]
                       + [StateMonitor(f"{c}_out", ("v",), indices=tuple(range(0, 64, 7))) for c in CASES])


@contextlib.contextmanager
def min_run(value):
    """Set the channels-last threshold for a build or run (the template is chosen when code is generated)."""
    before = static.CHANNELS_LAST_MIN_RUN
    static.CHANNELS_LAST_MIN_RUN = value
    try:
        yield
    finally:
        static.CHANNELS_LAST_MIN_RUN = before


#: template -> threshold that selects it for every case
LAYOUTS = {"channel-major": 10 ** 9, "channels-last": 1}


def layouts(before: str | None) -> dict:
    """``{label: (threshold, git revision of the templates or None)}``: the two templates, and the channels-last
    template of revision ``before`` (labelled ``channels-last@<before>``) when given."""
    out = {"channel-major": (LAYOUTS["channel-major"], None)}
    if before:
        out[f"channels-last@{before}"] = (LAYOUTS["channels-last"], before)
    out["channels-last"] = (LAYOUTS["channels-last"], None)
    return out


@contextlib.contextmanager
def layout_of(threshold, rev):
    """Generate code with the channels-last threshold ``threshold`` and the templates of git revision ``rev``
    (``None``: this checkout's)."""
    from jinja2 import ChoiceLoader, FileSystemLoader
    code_object = static._classes()[0]
    original = code_object.templater
    if rev is not None:
        folder = Path(tempfile.mkdtemp(prefix="biosnn_templates_"))
        names = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", rev, "biosnn/backends/templates/"],
                               capture_output=True, text=True, check=True).stdout.split()
        for name in names:
            (folder / Path(name).name).write_text(subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{rev}:{name}"], capture_output=True, text=True, check=True).stdout)
        templater = original.derive((), templates_dir=())  # a new Templater (its own Jinja environment)
        templater.env.loader = ChoiceLoader([FileSystemLoader(str(folder)), templater.env.loader])  # `rev` first
        code_object.templater = templater
    try:
        with min_run(threshold):
            yield
    finally:
        code_object.templater = original


def measure(s, threads, float32, repeats, cache, before=None):
    """``{layout: {case: (seconds, events)}}``, the least of ``repeats`` alternating runs; checks equal sums."""
    sims = {}
    for layout, (thr, rev) in layouts(before).items():
        with layout_of(thr, rev):
            sims[layout] = get_backend("cpp_standalone", cache_dir=cache / layout, threads=threads,
                                       float32=float32, profile=True).build(s)
            text = (sims[layout].directory / "code_objects" / "vgg_conv_conv_propagate_codeobject.cpp").read_text()
            assert ("_wT_made" in text) == (layout != "channel-major"), layout
    best = {layout: {} for layout in sims}
    states = {}
    for _ in range(repeats):
        for layout, (thr, rev) in layouts(before).items():
            with layout_of(thr, rev):
                rec = sims[layout].run(progress=False)
            prof = profile_of(rec)
            for case in CASES:
                t = prof[f"{case}_conv_propagate_codeobject"]
                events = int(fanout(case, s.node(f"{case}_in").shape[0])[rec.spikes[f"{case}_in"].indices].sum())
                old = best[layout].get(case)
                best[layout][case] = (min(t, old[0]) if old else t, events)
                states[(layout, case)] = rec.states[f"{case}_out"]["v"].values
    for case in CASES:  # same input spikes, same sums
        for layout in sims:
            np.testing.assert_array_equal(states[("channel-major", case)], states[(layout, case)])
    return best


#: perf's sampling frequency (samples per second of CPU time) for ``--perf-runs``
PERF_HZ = 4000


def perf_seconds(args, names, bits: int, cache: Path) -> dict:
    """``{layout: {case: CPU seconds}}`` of the convolutions of the builds ``names`` over ``args.perf_runs`` runs,
    sampled by ``perf record`` in a child process (``--replay``) that runs the cached build; two rounds, the layouts
    alternating, the fewer samples kept."""
    best = {layout: {} for layout in names}
    for _, layout in [(k, layout) for k in range(2) for layout in names]:
        data = Path(tempfile.mkstemp(prefix="biosnn_perf_", suffix=".data")[1])
        replay = [sys.executable, str(Path(__file__).resolve()), "--replay", layout, "--floats", str(bits),
                  "--replicas", str(args.replicas), "--rate", str(args.rate), "--duration-ms", str(args.duration_ms),
                  "--cache", str(cache), "--perf-runs", str(args.perf_runs)] + (
                      ["--before", args.before] if args.before else [])
        subprocess.run(["perf", "record", "-q", "-F", str(PERF_HZ), "-o", str(data), "--", *replay], check=True,
                       capture_output=True)
        report_text = subprocess.run(["perf", "report", "-i", str(data), "--comm", "main", "--sort", "sym", "-F",
                                      "sample,sym", "--stdio", "-q"], capture_output=True, text=True,
                                     check=True).stdout
        data.unlink()
        for case in CASES:
            n = sum(int(line.split()[0]) for line in report_text.splitlines() if line.strip()
                    and line.split()[-1].split("::")[-1] == f"_run_{case}_conv_propagate_codeobject")
            best[layout][case] = min(best[layout].get(case, n), n) if n else best[layout].get(case, 0)
    return {layout: {case: n / PERF_HZ for case, n in cases.items()} for layout, cases in best.items()}


def replay(args):
    """``--replay LAYOUT``: run the cached build of ``LAYOUT`` ``--perf-runs`` times (under ``perf record``)."""
    bits = args.floats[0]
    thr, rev = layouts(args.before)[args.replay]
    with layout_of(thr, rev):
        sim = get_backend("cpp_standalone", cache_dir=Path(args.cache) / args.replay, threads=0,
                          float32=bits == 32, profile=True).build(spec(args.replicas, args.rate, args.duration_ms,
                                                                         f"f{bits}"))
        for _ in range(args.perf_runs):
            sim.run(progress=False)


def lenet(n_images, cache, before=None):
    """The converted rate LeNet-5 (T = 32), both templates: whole-run images/s and per-convolution events/s/core."""
    import math
    import time

    import biosnn
    from biosnn.backends.parallel import available_cores
    from biosnn.conversion.snn import window_table
    from biosnn.datasets import load_mnist
    from biosnn.spec.expand import expand_projection
    from convert_speed import CODINGS, images, trained
    x_train, y_train = load_mnist("train")
    x_test, _ = load_mnist("test")
    model = trained("lenet5", x_train, y_train, 2, 10000)  # convert_speed.py --epochs 2
    snn = biosnn.convert(model, "rate", calibration=images(x_train[:200], 28), input_shape=(1, 28, 28),
                         **CODINGS["rate"])
    cores = available_cores()
    xt = x_test[:n_images]
    batch = max(1, min(256, math.ceil(n_images / cores)))
    walls = {layout: [] for layout in layouts(before)}
    for rep in range(3):  # a warm-up (build), then two timed runs each, alternating
        for layout, (thr, rev) in layouts(before).items():
            with layout_of(thr, rev):
                kw = dict(backend="cpp_standalone", batch_size=batch, cache_dir=cache / f"lenet-{layout}",
                          progress=False)
                res = snn.run(xt[:batch] if rep == 0 else xt, workers=1 if rep == 0 else cores, **kw)
            if rep:
                walls[layout].append(res.wall_time_s)
    ips = {layout: n_images / min(w) for layout, w in walls.items()}
    # profiled: 100 windows, one copy, one core
    W = 100
    spec = snn.spec_for(W, 1)
    convs = [p for p in spec.projections if type(p.connect).__name__ == "Conv2D"]
    spec = spec.replace(monitors=tuple(spec.monitors) + tuple(SpikeMonitor(p.source) for p in convs))
    fan = {p.name: np.bincount(np.asarray(expand_projection(spec, p).i), minlength=spec.node(p.source).size)
           for p in convs}
    table = window_table(np.asarray(x_test[:W], dtype=np.float64).reshape(W, -1) / snn.graph.input_scale, 1)
    prof = {}
    for layout, (thr, rev) in layouts(before).items():
        with layout_of(thr, rev):
            sim = get_backend("cpp_standalone", cache_dir=cache / f"lenet-prof-{layout}", profile=True).build(spec)
            best = None
            for _ in range(2):
                t0 = time.perf_counter()
                rec = sim.run(overrides={"x_in": table}, progress=False)
                wall = time.perf_counter() - t0
                p = profile_of(rec)
                if best is None or wall < best[0]:
                    best = (wall, p, rec)
        wall, p, rec = best
        prof[layout] = {"wall_s": wall, "all_code_s": sum(p.values()), "top": dict(list(p.items())[:6]), "convs": {
            c.name: {"s": p[f"{c.name}_propagate_codeobject"],
                     "events": int(fan[c.name][rec.spikes[c.source].indices].sum())} for c in convs}}
    return {"images": n_images, "cores": cores, "batch": batch, "images_per_s": ips, "profile": prof,
            "profile_windows": W}


def lenet_lines(res, base="channel-major") -> list[str]:
    """The LeNet-5 part of the section: the channels-last template against the layout ``base``."""
    old, new = res["profile"][base], res["profile"]["channels-last"]
    ips_old, ips_new = res["images_per_s"][base], res["images_per_s"]["channels-last"]
    lines = ["", f"Rate LeNet-5 (T = 32, `convert_speed.py`'s ANN), {res['images']} test images, "
             f"`snn.run(workers={res['cores']}, batch_size={res['batch']})`: **{ips_old:.1f} -> {ips_new:.1f} "
             f"images/s ({ips_new / ips_old:.2f}x)** (best of two alternating runs).  One profiled run of "
             f"{res['profile_windows']} windows on one core (no OpenMP):", "",
             f"| convolution | events | {base} s | channels-last s | {base} events/s/core | "
             "channels-last events/s/core | ratio |", "|---|---|---|---|---|---|---|"]
    for name, o in old["convs"].items():
        n = new["convs"][name]
        lines.append(f"| {name} | {o['events']:.3g} | {o['s']:.3f} | {n['s']:.3f} | {o['events'] / o['s']:.3g} | "
                     f"{n['events'] / n['s']:.3g} | {o['s'] / n['s']:.2f}x |")
    lines.append(f"| all code objects (s) / whole run (s) | | {old['all_code_s']:.2f} / {old['wall_s']:.2f} | "
                 f"{new['all_code_s']:.2f} / {new['wall_s']:.2f} | | | {old['wall_s'] / new['wall_s']:.2f}x |")
    lines += ["", "Slowest code objects with the channels-last template (s): " + ", ".join(
        f"{k.removesuffix('_codeobject')} {v:.3f}" for k, v in new["top"].items())]
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[0, 2], help="OpenMP threads (0: none)")
    ap.add_argument("--floats", type=int, nargs="*", default=[64, 32], choices=[64, 32])
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--rate", type=float, default=100.0, help="input rate, Hz (dt = 1 ms)")
    ap.add_argument("--duration-ms", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cache", default=None, help="build directory (default: a temporary one)")
    ap.add_argument("--lenet", type=int, default=0, help="also the converted LeNet-5 on this many test images")
    ap.add_argument("--before", default=None, metavar="REV",
                    help="also the channels-last template of this git revision (e.g. main), side by side")
    ap.add_argument("--perf-runs", type=int, default=0,
                    help="also CPU time per convolution by `perf record` over this many runs (threads 0 only)")
    ap.add_argument("--replay", default=None, help=argparse.SUPPRESS)  # perf_seconds' child process
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    if args.replay:
        return replay(args)
    uptime_start = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    load_start = os.getloadavg()[0]
    cache = Path(args.cache or tempfile.mkdtemp(prefix="biosnn_conv_bench_"))
    rows = []
    for bits in args.floats:
        s = spec(args.replicas, args.rate, args.duration_ms, f"f{bits}")
        for threads in args.threads:
            best = measure(s, threads, bits == 32, args.repeats, cache, args.before)
            cpu = perf_seconds(args, [layout for layout in layouts(args.before) if layout != "channel-major"], bits,
                               cache) if args.perf_runs and threads == 0 else {}
            for case in CASES:
                (t_old, ev), (t_new, _) = best["channel-major"][case], best["channels-last"][case]
                cores = max(1, threads)
                rows.append({"case": case, "float": f"float{bits}", "threads": threads, "events": ev,
                             "old_s": t_old, "new_s": t_new, "old_eps_core": ev / t_old / cores,
                             "new_eps_core": ev / t_new / cores, "ratio": t_old / t_new,
                             "cout_g": CASES[case][3] // CASES[case][7], "default_channels_last": by_default(case)})
                if args.before:
                    t_before = best[f"channels-last@{args.before}"][case][0]
                    rows[-1].update(before_s=t_before, before_eps_core=ev / t_before / cores,
                                    ratio_before=t_before / t_new)
                if cpu and args.before:
                    c_old, c_new = cpu[f"channels-last@{args.before}"][case], cpu["channels-last"][case]
                    rows[-1].update(before_cpu_s=c_old, new_cpu_s=c_new,
                                    before_eps_cpu=ev * args.perf_runs / c_old if c_old else None,
                                    new_eps_cpu=ev * args.perf_runs / c_new if c_new else None,
                                    ratio_before_cpu=c_old / c_new if c_new else None)
                print(rows[-1], flush=True)
    net = lenet(args.lenet, cache, args.before) if args.lenet else None
    uptime_end = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    b = f"channels-last@{args.before}" if args.before else None
    lines = ["| case | C,H,W -> O (k, stride, pad, groups) | out channels / group | float | threads | "
             "events | channel-major events/s/core | " + (f"{b} events/s/core | " if b else "")
             + "channels-last events/s/core | channels-last / channel-major | "
             + (f"channels-last / {b} | " if b else "") + "default template |",
             "|---|---|---|---|---|---|---|---|---|---|" + ("---|---|" if b else "")]
    for r in rows:
        C, H, W, O, k, s, p, g = CASES[r["case"]]
        lines.append(f"| {r['case']} | {C},{H},{W} -> {O} ({k}x{k}, {s}, {p}, {g}) | {r['cout_g']} | {r['float']} | "
                     f"{r['threads']} | {r['events']:.3g} | {r['old_eps_core']:.3g} | "
                     + (f"{r['before_eps_core']:.3g} | " if b else "") + f"{r['new_eps_core']:.3g} | "
                     f"{r['ratio']:.2f}x | " + (f"{r['ratio_before']:.2f}x | " if b else "")
                     + f"{'channels-last' if r['default_channels_last'] else 'channel-major'} |")
    sampled = [r for r in rows if r.get("new_cpu_s")]
    if sampled:
        lines += ["", f"CPU time sampled by `perf record` ({PERF_HZ} Hz, {args.perf_runs} runs of each build, the "
                  "fewer samples of two alternating children; one core):", "",
                  f"| case | float | {b} CPU s | channels-last CPU s | {b} events/CPU-s | channels-last events/CPU-s | "
                  f"channels-last / {b} |", "|---|---|---|---|---|---|---|"]
        for r in sampled:
            lines.append(f"| {r['case']} | {r['float']} | {r['before_cpu_s']:.3f} | {r['new_cpu_s']:.3f} | "
                         f"{r['before_eps_cpu']:.3g} | {r['new_eps_cpu']:.3g} | {r['ratio_before_cpu']:.2f}x |")
    if net:
        lines += lenet_lines(net, b or "channel-major")
    table = "\n".join(lines)
    print(table)
    print(f"uptime at start: {uptime_start}\nuptime at end:   {uptime_end}")
    if args.no_record:
        return
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.before or "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    before_note = "" if not args.before else (
        f" `channels-last@{args.before}`: the channels-last template of git revision `{args.before}` (commit "
        f"{commit}), built and run alternately with the other two in the same process.")
    busy = max(load_start, os.getloadavg()[0]) > (os.cpu_count() or 1)
    note = (" **The 1-min load exceeded the cores: OpenMP rows then mostly measure threads waiting for "
            "descheduled threads at every step's barrier.**" if busy and any(args.threads) else "")
    text = (f"## Convolution propagation: channel-major vs channels-last template (cpp_standalone)\n\n"
            f"{report.cpu_model()}, {os.cpu_count()} cores · uptime at start `{uptime_start}`, at end "
            f"`{uptime_end}` (a shared machine: the ratios are side by side in one process) · "
            f"Poisson {args.rate:g} Hz inputs, dt = 1 ms, {args.duration_ms} steps, R = {args.replicas} replicas; "
            f"propagation time: the code object's own (Brian2 profiling), least of {args.repeats} alternating "
            f"runs; every case takes the channels-last template here (by default only runs of at least "
            f"{static.CHANNELS_LAST_MIN_RUN} additions per kernel row do: out channels per group x kernel width "
            f"with stride 1, out channels per group otherwise); sums checked bit-identical.{note}{before_note}"
            f"\n\n{table}\n")
    report.record("conv_propagation", text, command=report.command_line(), script="benchmarks/conv_propagation.py",
                  data={"rows": rows, "replicas": args.replicas, "rate_hz": args.rate, "lenet": net,
                        "uptime": [uptime_start, uptime_end]},
                  load=(load_start, os.getloadavg()[0]))


if __name__ == "__main__":
    main()
