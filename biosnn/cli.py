"""The ``biosnn`` command line.

``biosnn run network_specs/cuba.yaml --backend cpp_standalone --duration 0.5 --out runs/cuba``
runs a spec, writes the recording (``recording.npz``, SONATA ``spikes.h5``) and
plots (``raster.png``, ``rates.png``) and prints a summary.  ``biosnn demo``
runs the packaged demo on scikit-learn's digits (no download).  Bad input
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


def cmd_run(args) -> int:
    from biosnn.backends.base import get_backend
    from biosnn.export import save_sonata
    from biosnn.plots import plot_recording
    from biosnn.spec import load_spec

    spec = load_spec(args.spec)
    duration = _duration(args.duration)
    options = {}
    if args.threads is not None:
        if args.backend not in ("cpp_standalone",):
            raise BiosnnError("--threads applies to the cpp_standalone backend only")
        options["threads"] = args.threads
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
    run_demo(out=Path(args.out), backend=args.backend, samples=args.samples)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="biosnn", description="Biophysical spiking networks on Brian2.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a network spec (YAML) and write its recording and plots")
    r.add_argument("spec", help="path to a network spec, e.g. network_specs/cuba.yaml")
    r.add_argument("--backend", default="runtime",
                   help="runtime (numpy), cython, cpp_standalone or cuda_standalone (default: runtime)")
    r.add_argument("--duration", default=None, help="simulated time: seconds (0.5) or a quantity ('500*ms')")
    r.add_argument("--out", default=None, help="output directory (default: runs/<spec name>)")
    r.add_argument("--threads", type=int, default=None, help="OpenMP threads (cpp_standalone)")
    r.add_argument("--float32", action="store_true", help="single-precision state variables")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_run)
    d = sub.add_parser("demo", help="convert a CNN trained on scikit-learn digits to an SNN and run it")
    d.add_argument("--out", default="runs/demo", help="output directory")
    d.add_argument("--backend", default="runtime", help="backend for the SNN")
    d.add_argument("--samples", type=int, default=200, help="test samples to simulate")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv=None) -> int:
    """Entry point of the ``biosnn`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BiosnnError as exc:
        print(f"biosnn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("biosnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
