"""Run a network spec
==================

Run a network spec from network_specs/ and write its recording and plots.

Command line::

    python examples/run_spec.py network_specs/cuba.yaml --duration 0.2 --backend runtime --out runs/cuba
"""

import argparse
from pathlib import Path

import biosnn
from biosnn.backends import get_backend
from biosnn.recording.formats import export
from biosnn.recording.plots import plot_recording


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("spec", nargs="?", default="network_specs/cuba.yaml")
    p.add_argument("--duration", type=float, default=0.2, help="seconds")
    p.add_argument("--backend", default="runtime")
    p.add_argument("--out", default="runs/example_spec")
    args = p.parse_args(argv)
    spec = biosnn.load(args.spec)
    rec = get_backend(args.backend).build(spec).run(duration=args.duration)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    export(rec, out / "spikes.h5")
    plots = plot_recording(rec, out)
    print(rec.summary())
    print("wrote", out / "spikes.h5", *plots)


if __name__ == "__main__":
    main()
