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
  the ratio of seconds per sample is the speed-up.

Appends a section to BENCHMARKS.md.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/train_diehl_cook.py \\
        --train-samples 6000 --test-samples 10000 --loop-samples 3
"""

from __future__ import annotations

import argparse
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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train-samples", type=int, default=6000)
    p.add_argument("--test-samples", type=int, default=10000)
    p.add_argument("--loop-samples", type=int, default=3)
    p.add_argument("--neurons", type=int, default=400)
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--mnist", default=os.environ.get("BIOSNN_MNIST", "/work/shared/data/mnist.npz"))
    p.add_argument("--out", default="runs/bench_diehl_cook")
    p.add_argument("--no-append", action="store_true", help="do not append to BENCHMARKS.md")
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

    t0 = time.perf_counter()
    child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = train(spec, x, y, samples=args.train_samples, n_exc=args.neurons, chunk=args.chunk,
                   checkpoint=out / "checkpoint.npz", progress=False,
                   callback=lambda i: print(f"  chunk {i.chunk}: {i.consumed}/{i.total} samples, "
                                            f"{i.repeats} repeats, {i.wall_s:.1f} s", flush=True))
    train_wall = time.perf_counter() - t0
    child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time of the compiled binary's runs (compilation happened earlier or is excluded when cached)
    cpu_per_sample = (child1.ru_utime + child1.ru_stime - child0.ru_utime - child0.ru_stime) / result.samples
    per_s = result.samples / result.sim_wall_s
    print(f"biosnn chunked cpp_standalone: {per_s:.2f} samples/s over {result.samples} samples "
          f"(build {result.build_s:.1f} s, total {train_wall:.1f} s)", flush=True)

    t0 = time.perf_counter()
    n_test = min(args.test_samples, len(xt))
    test = evaluate(result.spec, xt[:n_test], yt[:n_test], result.assignments, chunk=args.chunk, progress=False)
    test_wall = time.perf_counter() - t0
    print(f"test accuracy: {100 * test.accuracy:.2f} % on {n_test} test images ({test_wall:.1f} s)", flush=True)
    plot_receptive_fields(result.weights, (28, 28), out / "weights.png", assignments=result.assignments)

    epoch_min = EPOCH / per_s / 60
    epoch_cpu_min = EPOCH * cpu_per_sample / 60
    ratio = loop_s * per_s
    ratio_cpu = loop_cpu / cpu_per_sample
    load_after = os.getloadavg()
    rows = [
        ("excitatory neurons", f"{args.neurons}"),
        ("training samples (MNIST, in order)", f"{result.samples} ({result.repeats} repeated presentations)"),
        ("chunk (slots per compiled run)", f"{args.chunk}"),
        ("biosnn throughput, training (sim wall time only, loaded machine)", f"{per_s:.2f} samples/s"),
        ("biosnn CPU time per training sample (compiled binary, repeats included)", f"{1e3 * cpu_per_sample:.1f} ms"),
        ("build (code generation; compile when not cached)", f"{result.build_s:.1f} s"),
        ("60 000-sample epoch, **extrapolated** from wall throughput (loaded machine)", f"{epoch_min:.1f} min"),
        ("60 000-sample epoch, **extrapolated** from CPU time (one idle core)", f"{epoch_cpu_min:.1f} min"),
        ("Brian2 example approach (runtime numpy, run() per presentation, 150 ms rest)",
         f"{loop_s:.2f} s/sample wall, {loop_cpu:.2f} s/sample CPU ({args.loop_samples} samples)"),
        ("speed-up biosnn / Brian2 loop, wall (both on the loaded machine)", f"**{ratio:.0f}x**"),
        ("speed-up biosnn / Brian2 loop, CPU time", f"**{ratio_cpu:.0f}x**"),
        (f"test accuracy, {n_test} MNIST test images (classes from training responses)",
         f"**{100 * test.accuracy:.2f} %**"),
        ("test wall time", f"{test_wall:.1f} s ({n_test / test_wall:.2f} images/s)"),
    ]
    for k, v in rows:
        print(f"{k}: {v}")
    if args.no_append:
        return
    text = [f"\n\n## Diehl & Cook (2015) STDP training on MNIST (benchmarks/train_diehl_cook.py)\n",
            f"- Date: {date.today().isoformat()}. Machine: {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, shared with other jobs (load average {load_before[0]:.1f} before, "
            f"{load_after[0]:.1f} after). Python {platform.python_version()}, cpp_standalone, 1 thread.",
            "- Command:\n\n  ```\n  " + cmd + "\n  ```\n",
            "- Protocol: 350 ms presentation, state reset instantly instead of the 150 ms rest (the Brian2 "
            "loop simulates the rest), dt 0.5 ms, < 5 spikes: intensity + 1 and repeat, weights normalised "
            "to 78 per neuron before every presentation.\n",
            "| figure | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    with open(ROOT / "BENCHMARKS.md", "a") as fh:
        fh.write("\n".join(text) + "\n")


if __name__ == "__main__":
    main()
