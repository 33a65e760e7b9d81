"""The ``biosnn`` command line.

``biosnn run network_specs/cuba.yaml --backend cpp_standalone --duration 0.5 --out runs/cuba``
runs a spec (``biosnn run model.nir --input x.npy --flavor snntorch``: a NIR graph, spikes per node
into ``spikes.npz``; ``biosnn export-nir spec.yaml model.nir`` writes an imported spec back),
writes the recording (``recording.npz``, SONATA ``spikes.h5``) and
plots (``raster.png``, ``rates.png``) and prints a summary.  ``biosnn demo``
runs the packaged demo on scikit-learn's digits (no download).
``biosnn train-stdp network_specs/diehl_cook_2015.yaml --dataset mnist --samples 60000 --out runs/dc``
trains the Diehl & Cook (2015) network with STDP (resumable), tests it and
writes the weight map and an accuracy report.  Bad input
gives a one-paragraph error and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from biosnn.errors import BiosnnError

__all__ = ["main"]


def _duration(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    from brian2 import second
    from brian2.units.fundamentalunits import have_same_dimensions
    from biosnn.spec.values import parse_quantity
    q = parse_quantity(text, what="duration", field="--duration")
    if not have_same_dimensions(q, second) or float(q) <= 0:
        raise BiosnnError(f"--duration must be a positive time such as 0.5 (seconds) or '500*ms', got '{text}'")
    return float(q)


def cmd_run_nir(args) -> int:
    """``biosnn run model.nir --input x.npy [--dt 1e-4] [--flavor snntorch]``: spikes per NIR node."""
    import numpy as np

    from biosnn.frontends.nir import run_nir
    for flag in ("duration", "threads", "param"):
        if getattr(args, flag):
            raise BiosnnError(f"--{flag} does not apply to NIR graphs: their length is the input's T rows")
    if args.float32:
        raise BiosnnError("--float32 does not apply to NIR graphs")
    if args.input is None:
        raise BiosnnError("running a NIR graph needs --input x.npy: an array (T, *input_shape), one row per step")
    path = Path(args.input)
    if not path.is_file():
        raise BiosnnError(f"--input file '{path}' does not exist")
    x = np.load(path, allow_pickle=False)
    t0 = time.perf_counter()
    from biosnn.backends.registry import resolve_backend
    args.backend = resolve_backend(args.backend)
    spikes = run_nir(args.spec, x, dt=args.dt, flavor=args.flavor, backend=args.backend)
    wall = time.perf_counter() - t0
    out = Path(args.out) if args.out else Path("runs") / Path(args.spec).stem
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "spikes.npz", **spikes)
    for name, arr in spikes.items():
        what = "spikes" if name != "output" or arr.dtype == np.uint8 else "sum of values"
        print(f"{name}: shape {arr.shape}, {what} {float(arr.sum()):g}")
    print(f"wall time: {wall:.2f} s (import + build + run) on {args.backend}")
    print(f"wrote {out / 'spikes.npz'} (NIR node name -> (T, *shape) array; 'output': what reaches the Output)")
    return 0


def cmd_export_nir(args) -> int:
    """``biosnn export-nir spec.yaml out.nir``: write a spec made by from_nir back as a NIR file."""
    import nir

    from biosnn.frontends.nir import to_nir
    from biosnn.spec import load_spec
    graph = to_nir(load_spec(args.spec))
    nir.write(args.out, graph)
    print(f"wrote {args.out}: {len(graph.nodes)} nodes, {len(graph.edges)} edges")
    return 0


def _memory_limit(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise BiosnnError(f"--memory-limit must be a positive number of bytes (e.g. 8e9) or inf, got '{text}'")
    return value


def _load(args):
    """The spec of ``args.spec``, read with the command's --allow-outside (--memory-limit is set in main)."""
    from biosnn.spec import load_spec
    return load_spec(args.spec, allow_outside=args.allow_outside, memory_limit=_memory_limit(args.memory_limit))


def _spec_options(parser) -> None:
    parser.add_argument("--allow-outside", action="store_true",
                        help="read array files outside the spec's folder (only for specs you trust)")
    parser.add_argument("--memory-limit", default=None, metavar="BYTES",
                        help="memory the network may need (default: what the machine has available; inf: no check)")


def cmd_run(args) -> int:
    if str(args.spec).endswith(".nir"):
        return cmd_run_nir(args)
    for flag in ("dt", "input"):
        if getattr(args, flag) is not None:
            raise BiosnnError(f"--{flag} applies to NIR graphs (model.nir) only")
    from biosnn.backends.registry import get_backend, resolve_backend
    from biosnn.recording.formats import save_sonata
    from biosnn.recording.plots import plot_recording
    from biosnn.spec.parameters import set_parameters

    spec = set_parameters(_load(args), args.param)
    duration = _duration(args.duration)
    args.backend = resolve_backend(args.backend)
    options = {}
    if args.threads is not None:
        if args.backend == "nest":
            options["local_num_threads"] = args.threads
        elif args.backend == "cpp_standalone":
            options["threads"] = args.threads
        else:
            raise BiosnnError("--threads applies to the cpp_standalone and nest backends only")
    if args.float32:
        options["float32"] = True
    backend = get_backend(args.backend, **options)
    out = Path(args.out) if args.out else Path("runs") / spec.name
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.backend in ("cpp_standalone", "cuda_standalone"):
        print(f"building {spec.name} with {args.backend} (compiles once, then cached)...", file=sys.stderr)
        sim = backend.build(spec, duration=duration)
        rec = sim.run(progress=not args.no_progress)
    else:
        sim = backend.build(spec)
        rec = sim.run(duration=duration, progress=not args.no_progress)
    wall = time.perf_counter() - t0
    rec.save(out / "recording.npz")
    save_sonata(rec, out / "spikes.h5")
    plots = plot_recording(rec, out)
    print(rec.summary())
    print(f"wall time: {wall:.2f} s (build + run) on {args.backend}")
    print(f"wrote {out / 'recording.npz'}, {out / 'spikes.h5'}, " + ", ".join(str(p) for p in plots))
    return 0


def cmd_demo(args) -> int:
    from biosnn.demo import run_demo
    run_demo(out=Path(args.out), backend=args.backend, samples=args.samples, workers=args.workers)
    return 0


def cmd_train_stdp(args) -> int:
    from biosnn.learning.report import train_and_report
    from biosnn.spec.parameters import set_parameters

    spec = set_parameters(_load(args), args.param)
    protocol = {"rest": args.rest, "traces": args.traces, "restart": args.restart}
    if args.weight_total is not None:
        protocol["weight_total"] = args.weight_total
    train_and_report(spec, dataset=args.dataset, out=args.out, samples=args.samples, n_exc=args.neurons,
                     test_samples=args.test_samples, label_samples=args.label_samples, chunk=args.chunk,
                     backend=args.backend, seed=args.seed, progress=not args.no_progress,
                     mnist_path=args.mnist, **protocol)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="biosnn", description="Biophysical spiking networks on Brian2.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a network spec (YAML) and write its recording and plots")
    r.add_argument("spec", help="path to a network spec, e.g. network_specs/cuba.yaml, or a NIR graph (model.nir)")
    r.add_argument("--input", default=None, help="NIR graphs: .npy input (T, *input_shape), one row per step")
    r.add_argument("--dt", type=float, default=None,
                   help="NIR graphs: time step in seconds (default: the producer's, see --flavor)")
    r.add_argument("--flavor", default="auto",
                   help="NIR graphs: auto, nir, snntorch, norse, spikingjelly, sinabs or rockpool (default auto)")
    r.add_argument("--backend", default="auto",
                   help="auto, runtime (numpy), cython, cpp_standalone, cuda_standalone or nest (default: auto: "
                        "cuda_standalone with a GPU, cpp_standalone with a C++ compiler, else runtime)")
    r.add_argument("--duration", default=None, help="simulated time: seconds (0.5) or a quantity ('500*ms')")
    r.add_argument("--out", default=None, help="output directory (default: runs/<spec name>)")
    r.add_argument("--threads", type=int, default=None, help="threads (cpp_standalone: OpenMP; nest: local_num_threads)")
    r.add_argument("--float32", action="store_true", help="single-precision state variables")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.add_argument("--param", action="append", default=[], metavar="OWNER.PARAMETER=VALUE",
                   help="set a model parameter: OWNER.PARAMETER=VALUE (a population or projection; repeatable), e.g. XeAe.nu_ee_post=0.02")
    _spec_options(r)
    r.set_defaults(func=cmd_run)
    e = sub.add_parser("export-nir", help="write a spec imported from NIR (YAML) back as a NIR file")
    e.add_argument("spec", help="network spec (YAML) made by biosnn.from_nir")
    e.add_argument("out", help="output .nir file")
    e.set_defaults(func=cmd_export_nir)
    d = sub.add_parser("demo", help="convert a CNN trained on scikit-learn digits to an SNN and run it")
    d.add_argument("--out", default="runs/demo", help="output directory")
    d.add_argument("--backend", default="auto", help="backend for the SNN (default: auto)")
    d.add_argument("--workers", type=int, default=None,
                   help="processes running batches of samples at once on cpp_standalone (default: every core)")
    d.add_argument("--samples", type=int, default=200, help="test samples to simulate")
    d.set_defaults(func=cmd_demo)
    t = sub.add_parser("train-stdp", help="train a Diehl & Cook (2015) network with STDP, test it, report accuracy")
    t.add_argument("spec", help="network spec, e.g. network_specs/diehl_cook_2015.yaml")
    t.add_argument("--dataset", default="mnist", choices=["mnist", "digits"],
                   help="mnist (28x28, 784 inputs) or digits (scikit-learn 8x8, 64 inputs, offline)")
    t.add_argument("--samples", type=int, default=None, help="training presentations (default: one epoch)")
    t.add_argument("--out", required=True, help="output directory; a run with the same --out resumes")
    t.add_argument("--backend", default="cpp_standalone", help="cpp_standalone (default) or runtime")
    t.add_argument("--neurons", type=int, default=None, help="excitatory neurons (default: the spec's)")
    t.add_argument("--test-samples", type=int, default=None, help="test images (default: the whole test set)")
    t.add_argument("--label-samples", type=int, default=0,
                   help="assign neuron classes from the frozen responses to this many training images "
                        "(default 0: from the responses during training)")
    t.add_argument("--chunk", type=int, default=1000, help="presentation slots per compiled run (default 1000)")
    t.add_argument("--rest", type=float, default=0.0,
                   help="rest after each presentation, seconds (default 0: instant reset; the paper 0.15)")
    t.add_argument("--weight-total", type=float, default=None,
                   help="input weight sum per neuron (default 78 for mnist, drive-matched for digits)")
    t.add_argument("--traces", default="auto", choices=["auto", "neuron", "synapse"],
                   help="where Diehl & Cook's STDP traces live: neuron (exact and faster), synapse (the rule as "
                        "written), auto (default: neuron for that rule)")
    t.add_argument("--seed", type=int, default=None, help="seed of the Poisson inputs (default: the spec's)")
    t.add_argument("--mnist", default=None, help="path of mnist.npz (default: $BIOSNN_MNIST or the cache)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--param", action="append", default=[], metavar="OWNER.PARAMETER=VALUE",
                   help="set a model parameter: OWNER.PARAMETER=VALUE (a population or projection; repeatable), e.g. XeAe.nu_ee_post=0.02")
    t.add_argument("--restart", action="store_true",
                   help="delete the checkpoint in --out and train from the start")
    _spec_options(t)
    t.set_defaults(func=cmd_train_stdp)
    return p


def main(argv=None) -> int:
    """Entry point of the ``biosnn`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from biosnn.spec.budget import memory_limit
        with memory_limit(_memory_limit(getattr(args, "memory_limit", None))):  # every spec the command builds
            return args.func(args)
    except BiosnnError as exc:
        print(f"biosnn: error: {' '.join(str(exc).split())}", file=sys.stderr)  # one paragraph
        return 2
    except KeyboardInterrupt:
        print("biosnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
