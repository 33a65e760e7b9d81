"""Unsupervised STDP training of Diehl & Cook (2015) in compiled chunks, with checkpoints.

``train(spec, x, y)`` presents the samples of ``x`` one after another to the
network of ``spec`` (``network_specs/diehl_cook_2015.yaml``) and returns a
:class:`TrainResult` whose ``spec`` carries the learned weights and adaptive
thresholds as arrays; ``evaluate(result.spec, x_test, y_test,
result.assignments)`` classifies with plasticity and ``theta`` frozen.

The training runs inside the simulator: one network of ``chunk``
presentation slots (:func:`biosnn.learning.network.chunk_spec`) is compiled
once and run again per chunk with the next samples, the weights, delays and
thresholds of the previous chunk's end (``Recording.final``) and a new
random phase of the Poisson sources.  After each chunk a checkpoint is
written atomically; a call with the same ``checkpoint`` resumes from it and
ends exactly where an uninterrupted run would.

Diehl & Cook's STDP rule runs with its postsynaptic traces on the neurons
and its presynaptic trace as the last arrival time of each synapse (the same
rule up to rounding, about 2.5 times less CPU time per sample; see
:func:`biosnn.learning.network.neuron_trace_rule`); ``traces="synapse"``
runs the spec's statements as written.

Inputs are images in ``[0, 1]`` (``biosnn.datasets``); the Poisson rate of a
pixel is ``x * 255 / 4`` Hz (the paper's pixel/8 times intensity 2, at most
63.75 Hz).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import resource
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from biosnn.errors import BackendError, BiosnnError, SpecError
from biosnn.learning.checkpoint import data_hash, load_checkpoint, save_checkpoint, spec_hashes
from biosnn.learning.labels import accuracy, assign_labels, class_response_sums, predict
from biosnn.learning.network import ChunkConfig, check_parts, chunk_spec, run_values, slot_steps
from biosnn.spec import model as m
from biosnn.spec.values import ArrayValue

__all__ = ["train", "evaluate", "TrainResult", "EvalResult", "ChunkInfo", "MAX_RATE_HZ", "trained_spec",
           "initial_state"]

#: Poisson rate of a white pixel (x = 1), Hz: 255 / 4.
MAX_RATE_HZ = 255.0 / 4.0
_N_CLASSES = 10
_SIMS: dict = {}


@dataclass(frozen=True)
class ChunkInfo:
    """What a chunk did (passed to the ``callback`` of :func:`train`).

    Attributes
    ----------
    chunk : int
        Index of the chunk (0-based, counted over the whole training).
    consumed : int
        Samples presented successfully so far (all chunks).
    total : int
        Samples to train on.
    slots : int
        Presentation slots of this chunk (repeats included).
    repeats : int
        Slots of this chunk repeated with a raised intensity.
    wall_s : float
        Wall time of this chunk's run, seconds.
    cpu_s : float
        CPU time of the compiled simulation of this chunk (child processes), seconds.
    profile : dict or None
        Seconds per code object of this chunk's run (``backend_options={"profile": True}``
        of ``cpp_standalone``), slowest first; ``None`` otherwise.
    """

    chunk: int
    consumed: int
    total: int
    slots: int
    repeats: int
    wall_s: float
    cpu_s: float = 0.0
    profile: dict | None = None


@dataclass(frozen=True)
class TrainResult:
    """The outcome of :func:`train`.

    Attributes
    ----------
    spec : NetworkSpec
        The input spec resized to the trained network, with the learned
        weights (``XeAe.weights``), delays and thresholds (``Ae.initial['theta']``)
        as arrays.
    assignments : ndarray of int or None
        Class of each excitatory neuron from the responses to the last
        ``assign_window`` training samples (``None`` without labels).
    samples : int
        Samples presented.
    chunks : int
        Chunk runs in total (resumed runs included).
    wall_s : float
        Wall time of this call (build, runs, checkpoints), seconds.
    sim_wall_s : float
        Wall time inside the simulator runs of this call, seconds.
    build_s : float
        Code generation and compilation time of this call, seconds.
    repeats : int
        Presentations repeated with a raised intensity (whole training).
    """

    spec: m.NetworkSpec
    assignments: np.ndarray | None
    samples: int
    chunks: int
    wall_s: float
    sim_wall_s: float
    build_s: float
    repeats: int
    config: ChunkConfig = field(repr=False, default=None)

    @property
    def weights(self) -> np.ndarray:
        """Learned input weights, shape ``(n_inputs, n_excitatory)``."""
        cfg = self.config
        return np.asarray(self.spec.projection("XeAe").weights.data).reshape(cfg.n_in, cfg.n_exc)

    @property
    def theta(self) -> np.ndarray:
        """Learned adaptive thresholds, volt, shape ``(n_excitatory,)``."""
        return self.spec.population("Ae").initial["theta"].si()


@dataclass(frozen=True)
class EvalResult:
    """The outcome of :func:`evaluate`.

    Attributes
    ----------
    responses : ndarray, shape (n_samples, n_excitatory)
        Spike counts of the accepted presentation of each sample.
    predictions : ndarray of int or None
        Predicted classes (``None`` without assignments).
    accuracy : float or None
        Fraction correct (``None`` without labels or assignments).
    assignments : ndarray of int or None
        The assignments used (computed from these responses when none were given).
    wall_s : float
        Wall time, seconds.
    """

    responses: np.ndarray
    predictions: np.ndarray | None
    accuracy: float | None
    assignments: np.ndarray | None
    wall_s: float


# ---------------------------------------------------------------------------
# Inputs and configuration


def _flat_inputs(x) -> np.ndarray:
    x = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] == 0:
        raise BiosnnError(f"x must be a non-empty batch of images (N, ...), got shape {x.shape}")
    flat = x.reshape(x.shape[0], -1)
    if flat.min() < 0 or flat.max() > 1:
        raise BiosnnError(f"pixel values must lie in [0, 1] (got {flat.min():g}..{flat.max():g}); "
                          "divide 8-bit images by 255")
    return flat


def _input_shape(x) -> tuple:
    shape = tuple(int(s) for s in np.shape(x)[1:])
    return shape if len(shape) == 3 else (1, 1, int(np.prod(shape))) if len(shape) == 1 else (1,) + shape


def _labels(y, n: int) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y, dtype=np.int64).reshape(-1)
    if y.shape != (n,) or y.min() < 0 or y.max() >= _N_CLASSES:
        raise BiosnnError(f"y must hold {n} labels in [0, {_N_CLASSES}), got shape {y.shape}")
    return y


def _config(spec: m.NetworkSpec, x, n_exc, chunk, protocol: dict) -> ChunkConfig:
    check_parts(spec)
    n_in = int(np.prod(np.shape(x)[1:]))
    n_exc = spec.population("Ae").size if n_exc is None else int(n_exc)
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise BiosnnError(f"chunk must be a positive number of presentation slots, got {chunk!r}")
    total = protocol.pop("weight_total", None)
    total = 78.0 * n_in / 784.0 if total is None else float(total)
    unknown = set(protocol) - {"presentation", "rest", "min_spikes", "intensity0", "intensity_step", "traces"}
    if unknown:
        raise BiosnnError(f"unknown protocol options {sorted(unknown)}; use presentation, rest, min_spikes, "
                          "intensity0, intensity_step, weight_total, traces")
    return ChunkConfig(n_exc=n_exc, n_in=n_in, slots=int(chunk), weight_total=total,
                       input_shape=_input_shape(x), **protocol)


def _resized(spec: m.NetworkSpec, cfg: ChunkConfig) -> m.NetworkSpec:
    """The spec with ``cfg``'s sizes (inputs, excitatory and inhibitory neurons)."""
    x = spec.node("X")
    tas = tuple(replace(t, values=ArrayValue(np.zeros((t.values.shape[0], cfg.n_in)), t.values.unit))
                if t.values.data.ndim == 2 and t.values.shape[1] == x.size else t for t in spec.timed_arrays)
    inputs = tuple(replace(i, size=cfg.n_in, shape=tuple(cfg.input_shape)) if i.name == "X" else i
                   for i in spec.inputs)
    pops = tuple(replace(p, size=cfg.n_exc) if p.name in ("Ae", "Ai") else p for p in spec.populations)
    try:   # arrays of a trained spec keep their sizes: a different n_exc or input size is an error
        return replace(spec, timed_arrays=tas, inputs=inputs, populations=pops)
    except SpecError as exc:
        raise SpecError(f"cannot resize '{spec.name}' to {cfg.n_in} inputs and {cfg.n_exc} excitatory neurons: "
                        f"{exc.message}", field=exc.field,
                        fix="give n_exc and images matching the trained spec, or start from the untrained spec") from None


def initial_state(spec: m.NetworkSpec, cfg: ChunkConfig) -> dict:
    """Initial input weights, delays (s) and thresholds (V) of the resized ``spec``.

    Arrays in the spec are taken as they are; expressions (``rand()*0.3``)
    are evaluated by Brian2's runtime backend with the spec's seed (one time
    step of a network with silent inputs).
    """
    spec = _resized(spec, cfg)
    xeae, ae = spec.projection("XeAe"), spec.population("Ae")
    n_syn = cfg.n_in * cfg.n_exc
    arrays = {"w": xeae.weights, "delay": xeae.delay, "theta": ae.initial.get("theta")}
    if any(not isinstance(v, ArrayValue) for v in arrays.values()):
        # Brian2 keeps delays on the synaptic pathway, out of reach of final_state: draw them into
        # a copy variable 'delay_value' instead (same expression, same seed)
        from biosnn.backends.registry import get_backend
        stdp = spec.synapse_model(xeae)
        unit = "second" if xeae.delay is not None else "1"
        probe = replace(xeae, model=replace(stdp, equations=stdp.equations + f"\ndelay_value : {unit}"), delay=None,
                        initial={**xeae.initial, "delay_value": xeae.delay if xeae.delay is not None else "0"})
        quiet = replace(spec, inputs=tuple(
            m.PoissonInput(i.name, i.size, ArrayValue(np.zeros(i.size), "Hz"), i.shape) if i.name == "X" else i
            for i in spec.inputs), timed_arrays=(), monitors=(),
            projections=tuple(probe if p.name == "XeAe" else p for p in spec.projections))
        rec = get_backend("runtime").build(quiet).run(duration=spec.dt_seconds(), progress=False,
                                                     final_state=["XeAe.w", "XeAe.delay_value", "Ae.theta"])
        evaluated = {"w": rec.final["XeAe.w"], "delay": rec.final["XeAe.delay_value"],
                     "theta": rec.final["Ae.theta"]}
        arrays = {k: v if isinstance(v, ArrayValue) else ArrayValue(evaluated[k].values, evaluated[k].unit)
                  for k, v in arrays.items()}
    out = {k: np.asarray(v.si(), dtype=np.float64).reshape(-1) for k, v in arrays.items()}
    if out["delay"].size == 1:
        out["delay"] = np.full(n_syn, out["delay"][0])
    if out["theta"].size == 1:
        out["theta"] = np.full(cfg.n_exc, out["theta"][0])
    return out


def trained_spec(spec: m.NetworkSpec, cfg: ChunkConfig, w, delay, theta) -> m.NetworkSpec:
    """``spec`` resized to ``cfg`` with weights, delays (s) and thresholds (V) as arrays."""
    spec = _resized(spec, cfg)
    ae = spec.population("Ae")
    spec = spec.with_population("Ae", initial={**ae.initial, "theta": ArrayValue(np.asarray(theta) * 1e3, "mV")})
    return spec.with_projection("XeAe", weights=ArrayValue(np.asarray(w, dtype=np.float64)),
                                delay=ArrayValue(np.asarray(delay, dtype=np.float64), "second"))


# ---------------------------------------------------------------------------
# Running chunks


class _Chunks:
    """The compiled chunk network and one run of it."""

    def __init__(self, spec: m.NetworkSpec, cfg: ChunkConfig, delay: np.ndarray, backend: str, options: dict):
        from biosnn.backends.registry import get_backend
        self.cfg = cfg
        self.spec = chunk_spec(spec, cfg, delay)
        self.steps = slot_steps(self.spec, cfg)
        self.dt = self.spec.dt_seconds()
        # the per-synapse form of the rule gates with a copy of the weights; the neuron-trace form needs none
        self.w_fix = "w_fix" in self.spec.synapse_model(self.spec.projection("XeAe")).equations
        # the whole chunk spec, arrays included: a build is reused only for exactly this network
        key = (backend, tuple(sorted(options.items())), hashlib.sha1(pickle.dumps(self.spec, protocol=4)).hexdigest())
        t0 = time.perf_counter()
        if key not in _SIMS:
            _SIMS.clear()   # one compiled network per process is enough (and Brian2 holds one device)
            _SIMS[key] = get_backend(backend, **options).build(self.spec)
        self.sim = _SIMS[key]
        self.build_s = time.perf_counter() - t0

    def run(self, rates: np.ndarray, w, theta, *, plastic: bool, intensity: float, phase: np.ndarray):
        """Run one chunk.

        Returns (responses per slot, sample index per slot, accepted mask, final values, wall seconds,
        ``{"cpu_s": CPU seconds of child processes, "profile": seconds per code object or None}``).
        """
        cfg = self.cfg
        n = cfg.n_exc
        flag = np.full(n, 1.0 if plastic else 0.0)
        overrides = {f"ctl.{name}": ArrayValue([float(value)]) for name, value in run_values(cfg).items()}
        overrides.update({"stim": ArrayValue(rates, "Hz"), "X.phase": ArrayValue(phase),
                          "ctl.intensity": ArrayValue([intensity]), "Ae.plastic": ArrayValue(flag),
                          "Ae.wtotal": ArrayValue(np.full(n, cfg.weight_total)),
                          "XeAe.w": ArrayValue(w), "Ae.theta": ArrayValue(theta, "volt"),
                          "Ae.theta_fix": ArrayValue(theta, "volt")})
        if self.w_fix:
            overrides["XeAe.w_fix"] = ArrayValue(w)
        t0, c0 = time.perf_counter(), _child_cpu_seconds()
        rec = self.sim.run(overrides=overrides, progress=False,
                           final_state=["XeAe.w", "Ae.theta", "ctl.k", "ctl.intensity"])
        wall = time.perf_counter() - t0
        timing = {"cpu_s": _child_cpu_seconds() - c0,
                  "profile": json.loads(rec.meta["profile"]) if "profile" in rec.meta else None}
        ctl = rec.states["ctl"]
        k = np.rint(ctl["k"].values[:, 0]).astype(np.int64)
        count_last = np.rint(ctl["count_last"].values[:, 0]).astype(np.int64)
        if k.shape[0] != cfg.slots + 1:
            raise BackendError(f"the controller was recorded {k.shape[0]} times, expected {cfg.slots + 1}")
        spikes = rec.spikes["Ae"]
        slot = np.rint(spikes.times / self.dt).astype(np.int64) // self.steps
        keep = slot < cfg.slots
        responses = np.zeros((cfg.slots, n), dtype=np.int64)
        np.add.at(responses, (slot[keep], spikes.indices[keep]), 1)
        bad = np.nonzero(responses.sum(axis=1) != count_last[1:])[0]
        if bad.size:
            s = bad[0]
            raise BackendError(f"internal error: in slot {s} the controller counted {count_last[s + 1]} excitatory "
                               f"spikes, the spike monitor {responses[s].sum()} ({bad.size} slots differ; steps "
                               f"{sorted(np.rint(spikes.times[slot == s] / self.dt).astype(int) - s * self.steps)})")
        accepted = count_last[1:] >= cfg.min_spikes
        final = {"w": rec.final["XeAe.w"].values, "theta": rec.final["Ae.theta"].values,
                 "k": int(round(rec.final["ctl.k"].values[0])),
                 "intensity": float(rec.final["ctl.intensity"].values[0])}
        return responses, k[:-1], accepted, final, wall, timing


def _child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _rates(x_flat: np.ndarray, order: np.ndarray, start: int, stop: int, slots: int) -> np.ndarray:
    """Stimulus rows (Hz) for samples ``start..stop`` of ``order``; rows past ``stop`` are silent."""
    rows = np.zeros((slots, x_flat.shape[1]))
    n = min(stop - start, slots)
    if n > 0:
        rows[:n] = x_flat[order[start:start + n]] * MAX_RATE_HZ
    return rows


def _phase(seed: int, stream: int, chunk: int, n: int) -> np.ndarray:
    return np.random.default_rng([seed, stream, chunk]).random(n)


def _progress_bar(enabled: bool, total: int, initial: int, desc: str):
    if not enabled or os.environ.get("BIOSNN_PROGRESS", "1") == "0":
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="sample", file=sys.stderr)


# ---------------------------------------------------------------------------
# Training


def _checkpoint_meta(spec, cfg, samples, seed, n_data, data) -> dict:
    return {"spec": spec.name, "spec_hashes": spec_hashes(spec), "data_hash": data_hash(*data), "n_exc": cfg.n_exc, "n_in": cfg.n_in, "slots": cfg.slots,
            "presentation": cfg.presentation, "rest": cfg.rest, "min_spikes": cfg.min_spikes,
            "intensity0": cfg.intensity0, "intensity_step": cfg.intensity_step,
            "weight_total": cfg.weight_total, "traces": cfg.traces, "samples": int(samples), "seed": int(seed),
            "n_data": int(n_data)}


def train(spec: m.NetworkSpec, x, y=None, *, samples: int | None = None, n_exc: int | None = None,
          chunk: int = 1000, backend: str = "cpp_standalone", backend_options: dict | None = None,
          checkpoint: str | Path | None = None, seed: int | None = None,
          callback: Callable[[ChunkInfo], None] | None = None, progress: bool = True,
          assign_window: int = 10000, restart: bool = False, **protocol) -> TrainResult:
    """Train a Diehl & Cook network without supervision on images ``x``.

    Parameters
    ----------
    spec : NetworkSpec
        The network (``network_specs/diehl_cook_2015.yaml`` or a trained
        spec, to continue training).
    x : array_like, shape (N, C, H, W) or (N, n_inputs)
        Images with pixel values in ``[0, 1]``; the input layer gets one
        Poisson source per pixel (rate ``x*255/4`` Hz).
    y : array_like of int, optional
        Labels, only used to assign classes to neurons (``TrainResult.assignments``).
    samples : int, optional
        Presentations to train on (default ``len(x)``, one epoch); samples are
        taken in order, cycling through ``x``.
    n_exc : int, optional
        Excitatory neurons (default: the spec's ``Ae`` size).
    chunk : int
        Presentation slots per compiled run (repeats included).
    backend : str
        ``cpp_standalone`` (compiles once) or ``runtime``.
    backend_options : dict, optional
        Passed to :func:`biosnn.get_backend`.
    checkpoint : path-like, optional
        ``.npz`` written after every chunk; if it exists, training resumes from it
        (with the same settings; a larger ``samples`` continues the training).
    seed : int, optional
        Seed of the Poisson sources' per-chunk random phases (default the spec's seed or 0).
    callback : callable, optional
        Called with a :class:`ChunkInfo` after every chunk's checkpoint.
    progress : bool
        Show a progress bar over samples.
    assign_window : int
        Neuron classes are assigned from the responses to the last this many
        training samples (rounded to whole chunks).
    restart : bool
        Delete ``checkpoint`` first and train from the start (a checkpoint of
        another spec, other parameters or data is otherwise refused).
    **protocol
        ``presentation`` (0.35 s), ``rest`` (0 s: instant reset instead of the
        paper's 0.15 s), ``min_spikes`` (5), ``intensity0`` (2),
        ``intensity_step`` (1), ``weight_total`` (78 * n_inputs / 784),
        ``traces`` (``"auto"``: where the STDP traces live, see
        :class:`biosnn.learning.network.ChunkConfig`).

    Returns
    -------
    TrainResult
    """
    t_start = time.perf_counter()
    x_flat = _flat_inputs(x)
    labels = _labels(y, x_flat.shape[0])
    cfg = _config(spec, x, n_exc, chunk, dict(protocol))
    samples = x_flat.shape[0] if samples is None else int(samples)
    if samples < 1:
        raise BiosnnError(f"samples must be positive, got {samples}")
    seed = (spec.seed or 0) if seed is None else int(seed)
    meta = _checkpoint_meta(spec, cfg, samples, seed, x_flat.shape[0], (x_flat, labels))
    if restart and checkpoint is not None and Path(checkpoint).exists():
        Path(checkpoint).unlink()
    state = _resume(checkpoint, meta)
    if state is None:
        init = initial_state(spec, cfg)
        state = {"w": init["w"], "delay": init["delay"], "theta": init["theta"], "intensity": cfg.intensity0,
                 "consumed": 0, "chunk": 0, "repeats": 0, "sums": np.zeros((0, cfg.n_exc, _N_CLASSES)),
                 "counts": np.zeros((0, _N_CLASSES))}
    chunks = _Chunks(spec, cfg, state["delay"], backend, dict(backend_options or {}))
    order = np.arange(samples) % x_flat.shape[0]
    bar = _progress_bar(progress, samples, state["consumed"], f"STDP training ({cfg.n_exc} neurons)")
    sim_wall = 0.0
    try:
        while state["consumed"] < samples:
            c0 = state["consumed"]
            rows = _rates(x_flat, order, c0, samples, cfg.slots)
            responses, k, accepted, final, wall, timing = chunks.run(
                rows, state["w"], state["theta"], plastic=True, intensity=state["intensity"],
                phase=_phase(seed, 0, state["chunk"], cfg.n_in))
            sim_wall += wall
            done = min(final["k"], samples - c0)
            if done == 0:
                raise BackendError(f"no sample reached {cfg.min_spikes} excitatory spikes in {cfg.slots} slots; "
                                   "the network is silent (check the weights, or raise intensity_step)")
            real = accepted & (k < samples - c0)
            sums, counts = (class_response_sums(responses[real], labels[order[c0 + k[real]]], _N_CLASSES)
                            if labels is not None else (np.zeros((cfg.n_exc, _N_CLASSES)), np.zeros(_N_CLASSES)))
            repeats = int(np.sum(~accepted & (k < samples - c0)))
            # silent padding rows after the last sample raise the intensity every slot: a training that
            # continues later starts its next sample at the starting intensity instead
            intensity = final["intensity"] if c0 + done < min(samples, c0 + cfg.slots) else cfg.intensity0
            state.update(w=final["w"], theta=final["theta"], intensity=intensity, consumed=c0 + done,
                         chunk=state["chunk"] + 1, repeats=state["repeats"] + repeats,
                         sums=np.concatenate([state["sums"], sums[None]]),
                         counts=np.concatenate([state["counts"], counts[None]]))
            if checkpoint is not None:
                _save(checkpoint, state, meta)
            if bar is not None:
                bar.update(done)
            if callback is not None:
                callback(ChunkInfo(state["chunk"] - 1, state["consumed"], samples, cfg.slots, repeats, wall,
                                   timing["cpu_s"], timing["profile"]))
    finally:
        if bar is not None:
            bar.close()
    assignments = None
    if labels is not None:
        n_chunks = max(1, int(np.ceil(assign_window / cfg.slots)))
        assignments = assign_labels(state["sums"][-n_chunks:].sum(axis=0), state["counts"][-n_chunks:].sum(axis=0))
    return TrainResult(spec=trained_spec(spec, cfg, state["w"], state["delay"], state["theta"]),
                       assignments=assignments, samples=state["consumed"], chunks=state["chunk"],
                       wall_s=time.perf_counter() - t_start, sim_wall_s=sim_wall, build_s=chunks.build_s,
                       repeats=state["repeats"], config=cfg)


def _save(path, state: dict, meta: dict) -> None:
    arrays = {k: np.asarray(state[k]) for k in ("w", "delay", "theta", "sums", "counts")}
    save_checkpoint(path, arrays, {**meta, "consumed": int(state["consumed"]), "chunk": int(state["chunk"]),
                                   "repeats": int(state["repeats"]), "intensity": float(state["intensity"])})


def _resume(path, meta: dict) -> dict | None:
    if path is None or not Path(path).exists():
        return None
    arrays, saved = load_checkpoint(path)
    # more samples than before continue the training; every other setting must be the same
    skip = {"samples", "spec_hashes", "data_hash"}
    differs = {k: (saved.get(k), v) for k, v in meta.items() if saved.get(k) != v and k not in skip}
    details = []
    old_parts, new_parts = saved.get("spec_hashes"), meta["spec_hashes"]
    if not isinstance(old_parts, dict):
        details.append("spec: the checkpoint has no spec hash (written by an older biosnn)")
    elif old_parts != new_parts:
        changed = sorted(k for k in set(old_parts) | set(new_parts) if old_parts.get(k) != new_parts.get(k))
        details.append(f"spec: {', '.join(changed[:8])} changed (the spec file or --param values)")
    if saved.get("data_hash") != meta["data_hash"]:
        details.append("training data: other images or labels")
    consumed = saved.get("consumed", 0)
    if isinstance(consumed, int) and consumed > meta["samples"]:
        differs["samples"] = (consumed, meta["samples"])
    details += [f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(differs.items())]
    if details:
        raise BiosnnError(f"checkpoint {path} belongs to another training run ({'; '.join(details)}). Fix: use "
                          "the same spec, data and settings, pass --restart (train(..., restart=True)) to "
                          "start afresh, or use another output directory")
    try:
        state = {k: arrays[k] for k in ("w", "delay", "theta", "sums", "counts")}
        state.update(consumed=int(saved["consumed"]), chunk=int(saved["chunk"]), repeats=int(saved["repeats"]),
                     intensity=float(saved["intensity"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BiosnnError(f"cannot read checkpoint {path}: it lacks {exc} or has a wrong type. Fix: delete it "
                          "(or pass --restart) to start afresh") from None
    return state


# ---------------------------------------------------------------------------
# Testing


def evaluate(spec: m.NetworkSpec, x, y=None, assignments=None, *, chunk: int = 1000,
             backend: str = "cpp_standalone", backend_options: dict | None = None, seed: int | None = None,
             progress: bool = True, **protocol) -> EvalResult:
    """Responses of a (trained) network with plasticity and thresholds frozen, and its accuracy.

    Parameters
    ----------
    spec : NetworkSpec
        Usually ``TrainResult.spec``.
    x : array_like
        Images in ``[0, 1]`` (as for :func:`train`).
    y : array_like of int, optional
        Labels: with ``assignments``, the accuracy is computed; without, the
        neurons are assigned classes from these responses (a labelled subset).
    assignments : ndarray of int, optional
        Class of each excitatory neuron (``TrainResult.assignments``).
    chunk : int
        Presentation slots per run (give the value used in training to reuse its compiled network).
    backend, backend_options, seed, progress, **protocol
        As for :func:`train`.

    Returns
    -------
    EvalResult
    """
    t_start = time.perf_counter()
    x_flat = _flat_inputs(x)
    labels = _labels(y, x_flat.shape[0])
    cfg = _config(spec, x, None, chunk, dict(protocol))
    seed = (spec.seed or 0) if seed is None else int(seed)
    init = initial_state(spec, cfg)
    chunks = _Chunks(spec, cfg, init["delay"], backend, dict(backend_options or {}))
    n = x_flat.shape[0]
    order = np.arange(n)
    responses = np.zeros((n, cfg.n_exc), dtype=np.int64)
    consumed, c, intensity = 0, 0, cfg.intensity0
    bar = _progress_bar(progress, n, 0, "STDP testing")
    try:
        while consumed < n:
            rows = _rates(x_flat, order, consumed, n, cfg.slots)
            resp, k, accepted, final, _, _ = chunks.run(rows, init["w"], init["theta"], plastic=False,
                                                     intensity=intensity, phase=_phase(seed, 1, c, cfg.n_in))
            done = min(final["k"], n - consumed)
            if done == 0:
                raise BackendError(f"no test sample reached {cfg.min_spikes} excitatory spikes in {cfg.slots} slots")
            real = accepted & (k < n - consumed)
            responses[consumed + k[real]] = resp[real]
            consumed += done
            c += 1
            intensity = final["intensity"]
            if bar is not None:
                bar.update(done)
    finally:
        if bar is not None:
            bar.close()
    if assignments is None and labels is not None:
        assignments = assign_labels(*class_response_sums(responses, labels, _N_CLASSES))
    preds = predict(responses, assignments, _N_CLASSES) if assignments is not None else None
    acc = accuracy(preds, labels) if preds is not None and labels is not None else None
    return EvalResult(responses=responses, predictions=preds, accuracy=acc,
                      assignments=None if assignments is None else np.asarray(assignments),
                      wall_s=time.perf_counter() - t_start)
