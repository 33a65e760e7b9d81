"""Diehl & Cook STDP learning of digits
====================================

Unsupervised STDP learning of digits (Diehl & Cook 2015) with the Python API.

Trains the network of ``network_specs/diehl_cook_2015.yaml`` without labels,
assigns each excitatory neuron the class it answers most, and classifies the
held-out images by the assigned neurons' spike counts.  The default uses the
offline 8x8 scikit-learn digits (64 inputs) and a small network; ``--dataset
mnist`` runs the paper's setting (784 inputs; 400 neurons with ``--neurons 400``).

Command line::

    python examples/train_diehl_cook.py --samples 1000 --neurons 100
    python examples/train_diehl_cook.py --dataset mnist --samples 5000 --neurons 400 --chunk 1000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from biosnn.learning import evaluate, train
from biosnn.learning.figures import plot_receptive_fields
from biosnn.learning.report import drive_matched_weight_total, load_dataset
from biosnn.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits", choices=["digits", "mnist"])
    p.add_argument("--samples", type=int, default=1000, help="training presentations")
    p.add_argument("--neurons", type=int, default=100, help="excitatory neurons")
    p.add_argument("--chunk", type=int, default=250, help="presentation slots per compiled run")
    p.add_argument("--test-samples", type=int, default=450, help="held-out images to classify")
    p.add_argument("--backend", default="cpp_standalone")
    p.add_argument("--out", default="runs/train_diehl_cook", help="where the weight map goes")
    args = p.parse_args(argv)

    spec = load_spec(ROOT / "network_specs" / "diehl_cook_2015.yaml")
    x, y, xt, yt = load_dataset(args.dataset)
    total = drive_matched_weight_total(x) if args.dataset == "digits" else 78.0
    result = train(spec, x, y, samples=args.samples, n_exc=args.neurons, chunk=args.chunk,
                   backend=args.backend, weight_total=total, progress=False)
    print(f"trained {result.samples} samples, {result.repeats} repeated presentations, "
          f"{result.samples / result.sim_wall_s:.1f} samples/s simulated (build {result.build_s:.1f} s)")
    n = min(args.test_samples, len(xt))
    test = evaluate(result.spec, xt[:n], yt[:n], result.assignments, chunk=args.chunk, backend=args.backend,
                    weight_total=total, progress=False)
    print(f"neurons per class: {np.bincount(result.assignments, minlength=10).tolist()}")
    print(f"test accuracy: {100 * test.accuracy:.1f} % on {n} held-out images (chance 10 %)")
    out = Path(args.out)
    side = int(round(np.sqrt(result.config.n_in)))
    plot_receptive_fields(result.weights, (side, side), out / "weights.png", assignments=result.assignments)
    print(f"wrote {out / 'weights.png'}")


if __name__ == "__main__":
    main()
