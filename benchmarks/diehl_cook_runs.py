"""Table of finished ``biosnn train-stdp`` runs (Diehl & Cook): learning rate, seed, accuracy, repeats, time.

Each run directory holds what ``biosnn train-stdp ... --out DIR`` writes: ``accuracy.json``
(test accuracy, wall and CPU times), ``checkpoint.npz`` (its ``meta``: seed, samples,
presentations repeated with a higher input intensity) and ``trained.yaml`` (the spec with the
learned weights, whose XeAe parameters give the learning rates).  Used to compare one-epoch
runs that differ in a parameter or the seed; every row comes from a run's own files.

    .venv/bin/python benchmarks/diehl_cook_runs.py RUN_DIR [RUN_DIR ...] [--title TEXT] [--no-record]

Records the table through benchmarks/report.py (``--no-record``: don't), which re-renders BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def run_row(directory: Path) -> dict:
    """The figures of one run directory."""
    from biosnn.spec import load_spec
    acc = json.loads((directory / "accuracy.json").read_text())
    meta = json.loads(str(np.load(directory / "checkpoint.npz", allow_pickle=True)["meta"]))
    params = load_spec(directory / "trained.yaml").projection("XeAe").parameters
    model_params = load_spec(directory / "trained.yaml")
    smodel = model_params.synapse_model(model_params.projection("XeAe"))
    nu = {k: params.get(k, smodel.parameters.get(k)) for k in ("nu_ee_pre", "nu_ee_post")}
    ae = model_params.node("Ae").model
    timer = next((ln.strip() for ln in (getattr(ae, "equations", "") or "").splitlines() if "dtimer" in ln), None)
    return {"run": str(directory), "ae": ae if isinstance(ae, str) else f"inline ({timer})", "nu_ee_pre": nu["nu_ee_pre"], "nu_ee_post": nu["nu_ee_post"],
            "seed": meta.get("seed"), "samples": acc["train_samples"], "repeats": acc["repeated_presentations"],
            "accuracy": acc["test_accuracy"], "test_samples": acc["test_samples"],
            "train_wall_min": acc["train_wall_s"] / 60, "train_cpu_min": acc["train_cpu_s"] / 60,
            "labels": acc["labels_assigned_from"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--title", default="Diehl & Cook, one epoch: learning rate and seed")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    rows = [run_row(d) for d in args.runs]
    lines = [f"## {args.title} (`benchmarks/diehl_cook_runs.py`)\n",
             f"- Date: {datetime.date.today()}. Machine: {platform.machine()}, {os.cpu_count()} cores; each run on one "
             "core (`OMP_NUM_THREADS=1`), two runs side by side.",
             f"- Command: `{' '.join([Path(sys.executable).name] + sys.argv)}`",
             "- Each run: `biosnn train-stdp <spec> --dataset mnist --samples 60000 [--seed S] --out DIR` "
             "(400 neurons, cpp_standalone), test on all 10 000 MNIST test images, classes from the responses to "
             "the last 10 000 training presentations.\n",
             "| run | Ae model | nu_ee_pre | nu_ee_post | seed | samples | repeated presentations | test accuracy | "
             "training wall (min) | training CPU (min) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {Path(r['run']).name} | {r['ae']} | {r['nu_ee_pre']} | {r['nu_ee_post']} | {r['seed']} | {r['samples']} | "
                     f"{r['repeats']} | **{r['accuracy'] * 100:.2f} %** ({r['test_samples']}) | "
                     f"{r['train_wall_min']:.1f} | {r['train_cpu_min']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_record:
        import report  # benchmarks/report.py
        report.record("diehl_cook_runs", text, command=" ".join([Path(sys.executable).name] + sys.argv),
                      script="benchmarks/diehl_cook_runs.py", data={"runs": rows})


if __name__ == "__main__":
    main()
