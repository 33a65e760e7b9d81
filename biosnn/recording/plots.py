"""Figures of a :class:`~biosnn.recording.Recording`: raster, rates, states.

Figures are built on :class:`matplotlib.figure.Figure` directly (Agg
canvas), never through ``pyplot``, so no global figure state is created or
leaked and nothing needs a display.  Every function returns the ``Figure``
and writes a PNG when given a path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from biosnn.recording.data import Recording, RecordingError

__all__ = ["raster_plot", "rate_plot", "state_plot", "plot_recording"]

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")

# Display scaling of SI values: unit string -> (label, factor).
_DISPLAY = {"volt": ("mV", 1e3), "amp": ("nA", 1e9), "siemens": ("nS", 1e9),
            "second": ("ms", 1e3), "farad": ("pF", 1e12), "ohm": ("MΩ", 1e-6)}

_DPI = 110


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path | None) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=_DPI)


def _select(rec: Recording, populations: Iterable[str] | None) -> list[str]:
    if populations is None:
        return list(rec.spikes)
    if isinstance(populations, str):
        populations = [populations]
    chosen = list(populations)
    unknown = [p for p in chosen if p not in rec.spikes]
    if unknown:
        known = ", ".join(repr(p) for p in rec.spikes) or "none"
        raise RecordingError(f"cannot plot unknown population(s) {', '.join(map(repr, unknown))} "
                             f"(populations: {known})")
    return chosen


def _title(rec: Recording, what: str) -> str:
    name = rec.meta.get("spec") or rec.meta.get("name")
    backend = rec.meta.get("backend")
    parts = [what] + ([name] if name else []) + ([f"backend {backend}"] if backend else [])
    return " — ".join(parts) + f" ({rec.duration * 1e3:g} ms)"


def raster_plot(rec: Recording, path: str | Path | None = None,
                populations: Sequence[str] | None = None,
                max_spikes: int = 200_000) -> Figure:
    """Spike raster: one panel per population, time (ms) against neuron index.

    Parameters
    ----------
    rec : Recording
        The recording.
    path : str or pathlib.Path, optional
        Where to write the PNG.
    populations : sequence of str, optional
        Populations to show, in this order; default all.
    max_spikes : int, optional
        Most spikes drawn in total.  Above it, a fixed-seed random subset is
        drawn (each population thinned by the same fraction) and the title
        says so.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if isinstance(max_spikes, bool) or not isinstance(max_spikes, (int, np.integer)) \
            or max_spikes < 1:
        raise RecordingError(f"max_spikes must be a positive integer, got {max_spikes!r}")
    pops = _select(rec, populations)
    total = sum(len(rec.spikes[p]) for p in pops)
    fraction = min(1.0, max_spikes / total) if total else 1.0
    n_panels = max(1, len(pops))
    sizes = [max(rec.spikes[p].size, 1) for p in pops] or [1]
    # panel heights follow population size, within limits so small ones stay legible
    ratios = np.clip(np.asarray(sizes, float) / max(sizes), 0.25, 1.0)
    fig = _figure(10.0, min(2.0 + 1.6 * n_panels, 12.0))
    axes = fig.subplots(n_panels, 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": ratios})[:, 0]
    rng = np.random.default_rng(0)
    shown = 0
    for k, (ax, pop) in enumerate(zip(axes, pops)):
        st = rec.spikes[pop]
        times, idx = st.times, st.indices
        if fraction < 1.0 and len(st):
            keep = np.sort(rng.choice(len(st), size=int(len(st) * fraction), replace=False))
            times, idx = times[keep], idx[keep]
        shown += times.size
        dense = times.size > 20_000
        ax.plot(times * 1e3, idx, linestyle="none", marker="." if dense else "|",
                markersize=1.0 if dense else 4.0, color=_COLORS[k % len(_COLORS)],
                rasterized=True)
        ax.set_ylim(-0.5, max(st.size, 1) - 0.5)
        ax.set_ylabel(f"{pop}\nneuron")
        rate = rec.mean_rate(pop)
        ax.text(1.0, 1.0, f"{len(st)} spikes, {rate:.2f} Hz", transform=ax.transAxes,
                ha="right", va="bottom", fontsize=8)
    if not pops:
        axes[0].text(0.5, 0.5, "no populations recorded", ha="center", va="center",
                     transform=axes[0].transAxes)
    axes[-1].set_xlim(0, rec.duration * 1e3)
    axes[-1].set_xlabel("time (ms)")
    title = _title(rec, "Spike raster")
    if shown < total:
        title += f"\nshowing {shown} of {total} spikes"
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    return fig


def rate_plot(rec: Recording, path: str | Path | None = None, bin_ms: float = 5.0) -> Figure:
    """Population firing rate over time, one line per population.

    Parameters
    ----------
    rec : Recording
        The recording.
    path : str or pathlib.Path, optional
        Where to write the PNG.
    bin_ms : float, optional
        Bin width in milliseconds (ms).

    Returns
    -------
    matplotlib.figure.Figure
        Rate in hertz (Hz) against time (ms), see
        :meth:`Recording.population_rate`.
    """
    fig = _figure(10.0, 4.0)
    ax = fig.add_subplot(1, 1, 1)
    for k, pop in enumerate(rec.spikes):
        centers, rate = rec.population_rate(pop, bin_ms * 1e-3)
        ax.plot(centers * 1e3, rate, color=_COLORS[k % len(_COLORS)], lw=1.2,
                label=f"{pop} (mean {rec.mean_rate(pop):.2f} Hz)")
    if rec.spikes:
        ax.legend(loc="upper right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no populations recorded", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_xlim(0, rec.duration * 1e3)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("time (ms)")
    ax.set_ylabel(f"rate (Hz), {bin_ms:g} ms bins")
    ax.set_title(_title(rec, "Population rate"))
    fig.tight_layout()
    _save(fig, path)
    return fig


def state_plot(rec: Recording, path: str | Path | None = None, max_traces: int = 5) -> Figure:
    """Recorded state variables: one panel per population and variable.

    Parameters
    ----------
    rec : Recording
        The recording.
    path : str or pathlib.Path, optional
        Where to write the PNG.
    max_traces : int, optional
        Most neurons drawn per panel (the first recorded ones).

    Returns
    -------
    matplotlib.figure.Figure
        Values against time (ms); volts shown in mV, amps in nA, siemens in
        nS, other units in SI.
    """
    panels = [(pop, var, trace) for pop, variables in rec.states.items()
              for var, trace in variables.items()]
    fig = _figure(10.0, min(1.5 + 2.0 * max(len(panels), 1), 14.0))
    axes = fig.subplots(max(len(panels), 1), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (pop, var, trace) in zip(axes, panels):
        label, factor = _DISPLAY.get(trace.unit, (trace.unit, 1.0))
        for j in range(min(max_traces, trace.indices.size)):
            ax.plot(trace.times * 1e3, trace.values[:, j] * factor, lw=0.9,
                    color=_COLORS[j % len(_COLORS)], label=f"neuron {trace.indices[j]}")
        ax.set_ylabel(f"{pop}.{var}\n({label})")
        ax.legend(loc="upper right", fontsize=7)
    if not panels:
        axes[0].text(0.5, 0.5, "no state variables recorded", ha="center", va="center",
                     transform=axes[0].transAxes)
    axes[-1].set_xlim(0, rec.duration * 1e3)
    axes[-1].set_xlabel("time (ms)")
    fig.suptitle(_title(rec, "State variables"))
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_recording(rec: Recording, out_dir: str | Path) -> list[Path]:
    """Write the standard figures of a recording.

    Parameters
    ----------
    rec : Recording
        The recording.
    out_dir : str or pathlib.Path
        Directory (created if needed).

    Returns
    -------
    list of pathlib.Path
        ``raster.png``, ``rates.png`` and, when states were recorded,
        ``states.png``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "raster.png", out / "rates.png"]
    raster_plot(rec, written[0])
    rate_plot(rec, written[1])
    if any(len(v) for v in rec.states.values()):
        written.append(out / "states.png")
        state_plot(rec, written[2])
    return written
