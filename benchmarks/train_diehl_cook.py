"""Diehl & Cook (2015) STDP training on MNIST: chunked cpp_standalone training vs Brian2's per-sample loop.

Measures, in one run on this machine:

* biosnn: ``biosnn.learning.train`` (one compiled network of ``--chunk``
  presentation slots, re-run per chunk) on the first ``--train-samples``
  MNIST training images: samples per second, and the time of a 60 000-sample
  epoch *extrapolated* from it (labelled as such);
* the test accuracy of the trained network on ``--test-samples`` test images
  (classes assigned from the responses during training, theta frozen);
* Brian2's own example approach on ``--loop-samples`` images: the same
  network in runtime mode, a Python loop with one ``run(350 ms)`` and one
  ``run(150 ms)`` rest per sample, the weights normalised and the rates set
  from Python between runs (as in the Brian2 port of the authors' code);
  the ratio of seconds per sample is the speed-up;
* a profile of one chunk of ``--profile-samples`` presentations for both
  forms of the STDP rule (``traces="synapse"``: the spec's event-driven
  traces on every synapse; ``"neuron"``: the default, post traces on the
  neurons and the pre trace as arrival time): CPU time per sample and the
  seconds per code object (Brian2's ``profile=True``, wall clock);
* with ``--full-run DIR``, the figures of a ``biosnn train-stdp`` run
  (``DIR/accuracy.json``) instead of training ``--train-samples`` here.

Records its section through benchmarks/report.py (``--no-record``: don't), which re-renders BENCHMARKS.md.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/train_diehl_cook.py \\
        --train-samples 6000 --test-samples 10000 --loop-samples 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from biosnn.datasets import load_mnist  # noqa: E402
from biosnn.learning import evaluate, train  # noqa: E402
from biosnn.learning.figures import plot_receptive_fields  # noqa: E402
from biosnn.spec import load_spec  # noqa: E402
from biosnn.spec.values import ArrayValue  # noqa: E402

EPOCH = 60000


def brian2_loop(spec, x, n_exc: int, presentation=0.35, rest=0.15, min_spikes=5, total=78.0):
    """Seconds per sample of Brian2's example approach: runtime mode, one ``run()`` per presentation."""
    import brian2 as b2
    from biosnn.backends.brian2_network import build_objects
    from biosnn.learning.diehl_cook import _resized, initial_state
    from biosnn.learning.network import ChunkConfig

    cfg = ChunkConfig(n_exc=n_exc, n_in=784, slots=1)
    net_spec = _resized(spec, cfg)
    net_spec = net_spec.replace(inputs=tuple(
        i.__class__(i.name, i.size, ArrayValue(np.zeros(i.size), "Hz"), i.shape) for i in net_spec.inputs),
        timed_arrays=())
    init = initial_state(spec, cfg)
    b2.prefs.codegen.target = "numpy"
    objs = build_objects(net_spec)
    net0 = objs.network
    net0.run(0.5 * b2.ms, namespace={})   # code generation outside the timing
    xe, syn, mon = objs.groups["X"], objs.synapses["XeAe"], objs.spike_monitors["Ae"]
    syn.w = init["w"]
    net = objs.network
    t0, c0 = time.perf_counter(), time.process_time()
    shown = 0
    for img in x:
        intensity = 2.0
        while True:
            w = np.asarray(syn.w[:]).reshape(784, n_exc)          # normalise columns (Python side)
            syn.w = (w * (total / w.sum(axis=0))).reshape(-1)
            before = mon.num_spikes
            xe.rates = img.reshape(-1) * 255 / 8 * intensity * b2.Hz
            net.run(presentation * b2.second, namespace={})
            xe.rates = 0 * b2.Hz
            net.run(rest * b2.second, namespace={})
            shown += 1
            if mon.num_spikes - before >= min_spikes:
                break
            intensity += 1
    return (time.perf_counter() - t0) / len(x), (time.process_time() - c0) / len(x), shown


def profile_forms(spec, x, y, n_samples: int, n_exc: int) -> dict:
    """CPU seconds per sample and seconds per code object of one chunk, per form of the STDP rule."""
    out = {}
    for form in ("synapse", "neuron"):
        infos = []
        result = train(spec, x[:n_samples], y[:n_samples], n_exc=n_exc, chunk=n_samples, traces=form,
                       backend_options={"profile": True}, progress=False, callback=infos.append)
        info = infos[-1]
        out[form] = {"cpu_ms": 1e3 * info.cpu_s / result.samples, "wall_ms": 1e3 * info.wall_s / result.samples,
                     "slots": info.slots, "profile": info.profile}
        print(f"profile, traces={form}: {out[form]['cpu_ms']:.1f} ms CPU per sample "
              f"({n_samples} samples, {info.slots} slots)", flush=True)
    return out


def _profile_rows(forms: dict, top: int = 6) -> list[tuple[str, str]]:
    rows = []
    for form, label in (("synapse", "before: rule as written (traces on every synapse)"),
                        ("neuron", "after: post traces on Ae, pre trace as arrival time")):
        prof = forms[form]["profile"]
        total = sum(prof.values())
        parts = ", ".join(f"{k.replace('_codeobject', '')} {100 * v / total:.0f} %"
                          for k, v in list(prof.items())[:top])
        rows.append((f"profile {label}: CPU per sample; share of code-object time",
                     f"{forms[form]['cpu_ms']:.1f} ms; {parts}"))
    speed_up = forms["synapse"]["cpu_ms"] / forms["neuron"]["cpu_ms"]
    rows.append(("speed-up of the rule's form, CPU time", f"{speed_up:.2f}x"))
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-samples", type=int, default=6000)
    p.add_argument("--test-samples", type=int, default=10000)
    p.add_argument("--loop-samples", type=int, default=3)
    p.add_argument("--profile-samples", type=int, default=200,
                   help="presentations of the profiled chunk per form of the rule (0: no profile)")
    p.add_argument("--full-run", default=None,
                   help="output directory of a 'biosnn train-stdp' run: report its accuracy.json instead of training")
    p.add_argument("--neurons", type=int, default=400)
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--mnist", default=os.environ.get("BIOSNN_MNIST", "/work/shared/data/mnist.npz"))
    p.add_argument("--out", default="runs/bench_diehl_cook")
    p.add_argument("--no-record", action="store_true", help="do not record the section (BENCHMARKS.md)")
    args = p.parse_args(argv)
    cmd = "OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/train_diehl_cook.py " + " ".join(
        sys.argv[1:] if argv is None else argv)

    spec = load_spec(ROOT / "network_specs" / "diehl_cook_2015.yaml")
    x, y = load_mnist("train", args.mnist)
    xt, yt = load_mnist("test", args.mnist)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()

    t0 = time.perf_counter()
    loop_s, loop_cpu, loop_shown = brian2_loop(spec, x[:args.loop_samples], args.neurons)
    loop_wall = time.perf_counter() - t0
    print(f"Brian2 loop (runtime, one run() per presentation): {loop_s:.2f} s/sample wall, {loop_cpu:.2f} s/sample "
          f"CPU ({args.loop_samples} samples, {loop_shown} presentations, {loop_wall:.1f} s)", flush=True)
    forms = profile_forms(spec, x, y, args.profile_samples, args.neurons) if args.profile_samples > 0 else None

    if args.full_run:
        rep = json.loads((Path(args.full_run) / "accuracy.json").read_text())
        # a resumed run reports the samples of its own call (figures per sample are of this call)
        samples, repeats, n_test, acc = (rep.get("trained_this_call", rep["train_samples"]),
                                         rep["repeated_presentations"], rep["test_samples"], rep["test_accuracy"])
        train_wall, sim_wall, build_s = rep["train_wall_s"], rep["train_sim_wall_s"], rep["build_s"]
        train_cpu, test_wall, chunk = rep.get("train_cpu_s"), rep["test_wall_s"], rep["chunk"]
        source = f"`biosnn train-stdp` run in {args.full_run} (accuracy.json)"
    else:
        t0 = time.perf_counter()
        child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = train(spec, x, y, samples=args.train_samples, n_exc=args.neurons, chunk=args.chunk,
                       checkpoint=out / "checkpoint.npz", progress=False,
                       callback=lambda i: print(f"  chunk {i.chunk}: {i.consumed}/{i.total} samples, "
                                                f"{i.repeats} repeats, {i.wall_s:.1f} s", flush=True))
        train_wall = time.perf_counter() - t0
        child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        # CPU time of the compiled binary's runs and of the compiler when the build was not cached
        train_cpu = child1.ru_utime + child1.ru_stime - child0.ru_utime - child0.ru_stime
        samples, repeats, sim_wall, build_s, chunk = (result.samples, result.repeats, result.sim_wall_s,
                                                      result.build_s, args.chunk)
        t0 = time.perf_counter()
        n_test = min(args.test_samples, len(xt))
        test = evaluate(result.spec, xt[:n_test], yt[:n_test], result.assignments, chunk=args.chunk, progress=False)
        test_wall, acc = time.perf_counter() - t0, test.accuracy
        plot_receptive_fields(result.weights, (28, 28), out / "weights.png", assignments=result.assignments)
        source = "trained by this script"
    print(f"test accuracy: {100 * acc:.2f} % on {n_test} test images ({test_wall:.1f} s)", flush=True)

    per_s = samples / sim_wall
    rows = [
        ("excitatory neurons", f"{args.neurons}"),
        ("training", source),
        ("training samples (MNIST, in order)", f"{samples} ({repeats} repeated presentations)"),
        ("chunk (slots per compiled run)", f"{chunk}"),
        ("training wall time (build, runs, checkpoints; loaded machine)", f"{train_wall / 60:.1f} min"),
        ("wall time per training sample (simulation only / all)",
         f"{1e3 / per_s:.1f} ms / {1e3 * train_wall / samples:.1f} ms"),
    ]
    measured = "measured" if samples == EPOCH else f"**extrapolated** from {samples} samples"
    rows.append((f"60 000-sample epoch, wall ({measured}; loaded machine)",
                 f"{EPOCH * train_wall / samples / 60:.1f} min"))
    if train_cpu is not None:
        rows.append((f"60 000-sample epoch, CPU time ({measured})", f"{EPOCH * train_cpu / samples / 60:.1f} min"))
        rows.append(("CPU time per training sample (this process and children: runs, compile when not cached)",
                     f"{1e3 * train_cpu / samples:.1f} ms ({train_cpu / 60:.1f} min in all)"))
    rows += [
        ("build (code generation; compile when not cached)", f"{build_s:.1f} s"),
        ("Brian2 example approach (runtime numpy, run() per presentation, 150 ms rest)",
         f"{loop_s:.2f} s/sample wall, {loop_cpu:.2f} s/sample CPU ({args.loop_samples} samples)"),
        ("speed-up biosnn / Brian2 loop, wall per sample (both on the loaded machine)", f"**{loop_s * per_s:.0f}x**"),
    ]
    if train_cpu is not None:
        rows.append(("speed-up biosnn / Brian2 loop, CPU time per sample",
                     f"**{loop_cpu * samples / train_cpu:.0f}x**"))
    rows += [
        (f"test accuracy, {n_test} MNIST test images (classes from training responses)", f"**{100 * acc:.2f} %**"),
        ("test wall time", f"{test_wall:.1f} s ({n_test / test_wall:.2f} images/s)"),
    ]
    if forms is not None:
        rows += _profile_rows(forms)
    load_after = os.getloadavg()
    for k, v in rows:
        print(f"{k}: {v}")
    if args.no_record:
        return
    text = [f"## Diehl & Cook (2015) STDP training on MNIST (benchmarks/train_diehl_cook.py)\n",
            f"- Date: {date.today().isoformat()}. Machine: {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, shared with other jobs (load average {load_before[0]:.1f} before, "
            f"{load_after[0]:.1f} after). Python {platform.python_version()}, cpp_standalone, 1 thread.",
            "- Command:\n\n  ```\n  " + cmd + "\n  ```\n",
            "- Protocol: 350 ms presentation, state reset instantly instead of the 150 ms rest (the Brian2 "
            "loop simulates the rest), dt 0.5 ms, < 5 spikes: intensity + 1 and repeat, weights normalised "
            "to 78 per neuron before every presentation.\n",
            "| figure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    import report  # benchmarks/report.py
    data = {"samples": samples, "repeats": repeats, "test_samples": n_test, "test_accuracy": acc,
            "train_wall_s": train_wall, "train_cpu_s": train_cpu, "sim_wall_s": sim_wall, "build_s": build_s,
            "brian2_loop_s_per_sample": loop_s, "brian2_loop_cpu_s_per_sample": loop_cpu, "table": rows}
    report.record("diehl_cook_training", "\n".join(text) + "\n", command=cmd, script="benchmarks/train_diehl_cook.py",
                  data=data, load=(load_before[0], load_after[0]))


if __name__ == "__main__":
    main()
