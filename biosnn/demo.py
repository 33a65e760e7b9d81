"""The packaged demo: a CNN on scikit-learn's digits, converted to a rate-coded SNN and simulated.

Runs offline (the digits ship with scikit-learn) in about a minute on a laptop
CPU: trains the ANN, converts it (IF neurons, 99.9th-percentile threshold
balancing), simulates the test samples in Brian2, and prints ANN vs SNN
accuracy, agreement, spikes and synaptic operations per image; writes a plot
of accuracy and spike counts.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

__all__ = ["digits_cnn", "run_demo"]


def digits_cnn():
    """A small LeNet-style CNN for 8x8 digits (conv-relu-avgpool-conv-relu-linear)."""
    import torch.nn as nn
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 32), nn.ReLU(), nn.Linear(32, 10))


def run_demo(out: Path = Path("runs/demo"), backend: str = "auto", samples: int = 200, T: int = 32,
             seed: int = 0, workers: int | None = None) -> dict:
    """Train, convert, simulate; print and return the figures.

    Parameters
    ----------
    out : Path
        Where the plot and the converted spec are written.
    backend : str
        Simulation backend for the SNN (``auto``: see :func:`biosnn.backends.base.resolve_backend`).
    samples : int
        Test samples to simulate (at most the 450 of the digits test split).
    T : int
        Time steps per sample.
    seed : int
        Seed of training.
    workers : int, optional
        Parallel processes on cpp_standalone (default: every core; see :meth:`biosnn.conversion.snn.SNN.run`).

    Returns
    -------
    dict
        ``ann_accuracy``, ``snn_accuracy``, ``agreement``, ``spikes_per_image``,
        ``synops_per_image``, ``ann_macs``, ``wall_time_s``.
    """
    import torch
    import biosnn
    from biosnn.datasets import accuracy, load_digits, train_classifier
    from biosnn.spec.expand import projection_size

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train = load_digits("train")
    x_test, y_test = load_digits("test")
    x_test, y_test = x_test[:samples], y_test[:samples]
    print(f"training a CNN on scikit-learn digits ({len(x_train)} train / {len(x_test)} test images)...")
    torch.manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small model: one thread is faster than two fighting for a small CPU
    try:
        model = train_classifier(digits_cnn(), x_train, y_train, epochs=40, lr=1e-2, batch_size=64, seed=seed)
    finally:
        torch.set_num_threads(threads)
    ann_acc = accuracy(model, x_test, y_test)
    with torch.no_grad():
        ann_pred = model(torch.as_tensor(x_test)).argmax(1).numpy()
    ann = biosnn.prepare(model, coding="rate")
    snn = biosnn.convert(ann, coding="rate", calibration=torch.as_tensor(x_train[:500]),
                         input_shape=(1, 8, 8), T=T, name="digits_demo")
    snn.save(out / "digits_demo.yaml")
    print(f"converted: {len(snn.spec.populations)} populations, "
          f"{sum(projection_size(snn.spec, p) for p in snn.spec.projections)} synapses; "
          f"simulating {len(x_test)} images x {T} steps on '{backend}'...")
    t0 = time.perf_counter()
    res = snn.run(x_test, backend=backend, workers=workers)
    wall = time.perf_counter() - t0
    figures = {
        "ann_accuracy": ann_acc, "snn_accuracy": res.accuracy(y_test), "agreement": res.agreement(ann_pred),
        "spikes_per_image": float(res.spikes_per_sample.mean()),
        "synops_per_image": float(res.synops_per_sample.mean()), "ann_macs": snn.ann_ops, "wall_time_s": wall,
    }
    print(f"ANN accuracy        {100 * figures['ann_accuracy']:.2f} %")
    print(f"SNN accuracy        {100 * figures['snn_accuracy']:.2f} %  (T = {T} steps)")
    print(f"agreement SNN/ANN   {100 * figures['agreement']:.2f} % of images")
    print(f"spikes per image    {figures['spikes_per_image']:.0f}")
    print(f"synops per image    {figures['synops_per_image']:.0f}  (ANN: {figures['ann_macs']} MACs)")
    print(f"simulation          {wall:.1f} s ({len(x_test) / wall:.1f} images/s on {backend})")
    _plot(res, figures, out / "demo.png", {name: snn.graph[name].op for name in res.layer_spikes})
    print(f"wrote {out / 'demo.png'} and {out / 'digits_demo.yaml'}")
    return figures


def _plot(res, figures, path: Path, ops: dict):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(9, 3.4))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ax1.bar(["ANN", "SNN"], [100 * figures["ann_accuracy"], 100 * figures["snn_accuracy"]], color=["#777", "#2a6"])
    ax1.set_ylim(0, 100)
    ax1.set_ylabel("test accuracy (%)")
    ax1.set_title(f"digits, T = {res.T} steps (agreement {100 * figures['agreement']:.1f} %)")
    names = list(res.layer_spikes)
    ax2.bar([f"{n}\n{ops[n]}" for n in names], [float(np.mean(res.layer_spikes[n])) for n in names], color="#36c")
    ax2.set_ylabel("spikes per image")
    ax2.set_xlabel("layer")
    ax2.set_title("spikes per layer")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
