"""``biosnn train-stdp``: train a Diehl & Cook network on a data set, test it and write a report.

Outputs in ``out``: ``checkpoint.npz`` (after every chunk; a new call with
the same ``out`` resumes from it), ``trained.yaml`` (+ ``.npz``: the spec
with learned weights and thresholds), ``weights.png`` (receptive fields) and
``accuracy.json``.
"""

from __future__ import annotations

import json
import platform
import resource
import time
from pathlib import Path

import numpy as np

from biosnn.errors import BiosnnError
from biosnn.learning.checkpoint import load_checkpoint
from biosnn.learning.diehl_cook import evaluate, train
from biosnn.learning.figures import plot_receptive_fields

__all__ = ["load_dataset", "drive_matched_weight_total", "train_and_report", "DATASETS", "MNIST_MEAN_PIXEL"]

DATASETS = ("mnist", "digits")

#: Mean pixel value of the MNIST training images (in [0, 1]).
MNIST_MEAN_PIXEL = 0.1307


def load_dataset(name: str, mnist_path=None):
    """``(x_train, y_train, x_test, y_test)`` of ``mnist`` (28x28, 784 inputs) or ``digits``.

    ``digits`` are scikit-learn's 8x8 images (bundled, offline) fed to an input
    layer of 64 sources (not upsampled).
    """
    from biosnn.datasets import load_digits, load_mnist
    if name == "mnist":
        return (*load_mnist("train", mnist_path), *load_mnist("test", mnist_path))
    if name == "digits":
        return (*load_digits("train"), *load_digits("test"))
    raise BiosnnError(f"unknown dataset '{name}'; use one of {list(DATASETS)}")


def drive_matched_weight_total(x) -> float:
    """Weight sum per excitatory neuron that gives the same mean input drive as the paper's 78 on MNIST.

    The drive of a neuron is about ``weight_total * mean pixel``; the paper's
    78 on MNIST (mean pixel 0.1307) is kept: ``78 * 0.1307 / mean(x)``
    (78 for MNIST, about 33 for the 8x8 digits, whose strokes fill more of the image).
    """
    mean = float(np.mean(x))
    if mean <= 0:
        raise BiosnnError("the images are blank (mean pixel 0); nothing to learn from")
    return 78.0 * MNIST_MEAN_PIXEL / mean


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the compiled simulations, the compiler), seconds."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def train_and_report(spec, *, dataset: str, out, samples: int | None = None, n_exc: int | None = None,
                     test_samples: int | None = None, label_samples: int = 0, chunk: int = 1000,
                     backend: str = "cpp_standalone", seed: int | None = None, progress: bool = True,
                     mnist_path=None, log=print, restart: bool = False, **protocol) -> dict:
    """Train, assign labels, test, and write checkpoint, trained spec, weight map and ``accuracy.json``.

    Parameters
    ----------
    spec : NetworkSpec
        The Diehl & Cook network.
    dataset : {"mnist", "digits"}
    out : path-like
        Output directory (resumes from ``out/checkpoint.npz`` when present).
    samples : int, optional
        Training presentations (default one epoch).
    n_exc : int, optional
        Excitatory neurons (default the spec's).
    test_samples : int, optional
        Test images (default the whole test set).
    label_samples : int
        If positive, neurons get their classes from the frozen network's
        responses to this many training images; otherwise from the responses
        during the last 10 000 training presentations.
    chunk, backend, seed, progress, **protocol
        See :func:`biosnn.learning.train`.
    log : callable
        Receives progress lines.
    restart : bool
        Start afresh, deleting ``out/checkpoint.npz``.

    Returns
    -------
    dict
        The report written to ``accuracy.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x, y, xt, yt = load_dataset(dataset, mnist_path)
    if dataset == "digits" and "weight_total" not in protocol:
        protocol["weight_total"] = drive_matched_weight_total(x)
    n_test = len(xt) if test_samples is None else min(int(test_samples), len(xt))
    checkpoint = out / "checkpoint.npz"
    if restart and checkpoint.exists():
        checkpoint.unlink()
    resumed_at = load_checkpoint(checkpoint)[1].get("consumed", 0) if checkpoint.exists() else 0
    t0, c0 = time.perf_counter(), _cpu_seconds()
    result = train(spec, x, y, samples=samples, n_exc=n_exc, chunk=chunk, backend=backend,
                   checkpoint=checkpoint, seed=seed, progress=progress, **protocol)
    train_wall, train_cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    log(f"trained {result.samples} samples ({result.repeats} repeated presentations) in {train_wall:.1f} s "
        f"({result.sim_wall_s:.1f} s simulating this call, build {result.build_s:.1f} s)")
    assignments, assigned_from = result.assignments, "training responses (last 10000 presentations)"
    if label_samples > 0:
        n_lab = min(int(label_samples), len(x))
        lab = evaluate(result.spec, x[:n_lab], y[:n_lab], chunk=chunk, backend=backend, seed=seed,
                       progress=progress, **protocol)
        assignments, assigned_from = lab.assignments, f"frozen responses to {n_lab} training images"
    c0 = _cpu_seconds()
    test = evaluate(result.spec, xt[:n_test], yt[:n_test], assignments, chunk=chunk, backend=backend,
                    seed=seed, progress=progress, **protocol)
    test_cpu = _cpu_seconds() - c0
    result.spec.save(out / "trained.yaml")
    cfg = result.config
    plot_receptive_fields(result.weights, cfg.input_shape[-2:], out / "weights.png", assignments=assignments,
                          title=f"Diehl & Cook, {cfg.n_exc} neurons, {result.samples} {dataset} samples")
    report = {
        "dataset": dataset, "neurons": cfg.n_exc, "inputs": cfg.n_in, "train_samples": result.samples,
        "repeated_presentations": result.repeats, "test_samples": n_test, "test_accuracy": test.accuracy,
        "labels_assigned_from": assigned_from, "backend": backend, "chunk": cfg.slots,
        "presentation_s": cfg.presentation, "rest_s": cfg.rest, "weight_total": cfg.weight_total,
        "train_wall_s": round(train_wall, 2), "train_sim_wall_s": round(result.sim_wall_s, 2),
        "build_s": round(result.build_s, 2), "test_wall_s": round(test.wall_s, 2),
        "train_cpu_s": round(train_cpu, 2), "test_cpu_s": round(test_cpu, 2),
        "resumed_at": resumed_at, "trained_this_call": result.samples - resumed_at,
        "samples_per_s": (round((result.samples - resumed_at) / result.sim_wall_s, 3) if result.sim_wall_s > 0
                          else None),
        "machine": f"{platform.processor() or platform.machine()}",
        "class_counts_of_neurons": np.bincount(assignments, minlength=10).tolist(),
    }
    (out / "accuracy.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"test accuracy: {100 * test.accuracy:.2f} % on {n_test} {dataset} test images "
        f"(labels from {assigned_from})")
    log(f"wrote {out / 'accuracy.json'}, {out / 'weights.png'}, {out / 'trained.yaml'}, {out / 'checkpoint.npz'}")
    return report
