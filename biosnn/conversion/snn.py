"""A converted spiking network: its spec, batched runs on any backend, and the figures of a run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from biosnn.frontends.torch_graph import LayerGraph
from biosnn.conversion.inputs import POISSON_WHY, check_nonnegative
from biosnn.codings.rate.spec import DT_MS, layer_populations, rate_network_spec
from biosnn.errors import ConversionError
from biosnn.spec import model as m
from biosnn.spec.replicas import replicate

__all__ = ["SNN", "SNNResult"]


class _GateOrderFilter:
    """Drop Brian2's order-of-execution warning for the max-pool gate code (the order is intended:
    each input spike is compared with the running maximum that earlier spikes of the step raised)."""

    def filter(self, record):
        return "c += 1 (in-place)" not in record.getMessage()


def _quiet_gate_warning():
    import logging
    for name in ("brian2.codegen.generators.base", "brian2.codegen.generators.numpy_generator"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _GateOrderFilter) for f in logger.filters):
            logger.addFilter(_GateOrderFilter())


@dataclass(frozen=True)
class SNNResult:
    """What one :meth:`SNN.run` over a data set measured.

    Attributes
    ----------
    predictions : ndarray (N,)
        Class per sample (argmax of ``scores``, ties to the lowest class).
    scores : ndarray (N, classes)
        Output readout: ``v / T`` of the integrating output layer, or output
        spike counts / T.
    layer_spikes : dict of str to ndarray (N,)
        Spikes per sample of every layer (keys: the torch layer names).
    layer_synops : dict of str to ndarray (N,)
        Synaptic operations per sample caused by each layer's spikes
        (spike x fan-out).
    wall_time_s : float
        Wall-clock time of the simulation (build included).
    """

    predictions: np.ndarray
    scores: np.ndarray
    layer_spikes: dict
    layer_synops: dict
    wall_time_s: float
    backend: str
    T: int
    input_events: np.ndarray = field(default=None)
    input_macs: np.ndarray = field(default=None)
    ann_macs: int = 0
    build_time_s: float = 0.0
    """Wall time of building the network (code generation, plus compilation unless cached; about 0 when
    the run reused the standalone build of an earlier run, see :meth:`SNN.run`)."""
    run_time_s: float = 0.0
    """Time the simulations themselves took (for standalone backends: the compiled binary's runs)."""
    runs: int = 0
    """Number of simulation runs (batches)."""
    compiled: bool = False
    """Whether this run compiled code (False when the build cache or an earlier run's build was reused)."""
    extras: dict = field(default_factory=dict)
    """Coding-specific figures per sample (e.g. additions and memory accesses of TSC), name -> ndarray (N,)."""

    @property
    def spikes_per_sample(self) -> np.ndarray:
        """Total spikes per sample over all spiking layers (the analog input excluded)."""
        return np.sum([v for v in self.layer_spikes.values()], axis=0)

    @property
    def synops_per_sample(self) -> np.ndarray:
        """Synaptic operations per sample (every spike times its fan-out; analog input excluded)."""
        return np.sum([v for v in self.layer_synops.values()], axis=0)

    def accuracy(self, labels) -> float:
        """Fraction of predictions equal to ``labels``."""
        labels = np.asarray(labels).reshape(-1)
        return float(np.mean(self.predictions == labels))

    def agreement(self, other_predictions) -> float:
        """Fraction of samples whose prediction equals ``other_predictions`` (e.g. the ANN's)."""
        return float(np.mean(self.predictions == np.asarray(other_predictions).reshape(-1)))

    def energy(self, e_ac: float = 0.9e-12, e_mac: float = 4.6e-12) -> dict:
        """Energy estimate per sample, SNN vs ANN (:func:`biosnn.metrics.energy_estimate`).

        Synaptic operations cost ``e_ac`` each (default 0.9 pJ, a 32-bit float
        add at 45 nm, Horowitz 2014); the analog input's first-layer MACs (done
        once per sample here) and the ANN's MACs cost ``e_mac`` (4.6 pJ).

        Returns
        -------
        dict
            ``snn_J`` (array, joules per sample), ``ann_J`` (joules per sample), ``ratio`` (ANN / SNN).
        """
        from biosnn.metrics import energy_estimate
        snn_macs = 0 if self.input_macs is None else self.input_macs
        return energy_estimate(self.synops_per_sample, self.ann_macs, e_ac=e_ac, e_mac=e_mac, snn_macs=snn_macs)

    @property
    def images_per_second(self) -> float:
        return len(self.predictions) / self.wall_time_s if self.wall_time_s > 0 else float("inf")


def batch_layout(replicas, backend: str, batch_size: int, n: int) -> tuple[int, int]:
    """``(copies, windows per copy)`` of a run of ``min(batch_size, n)`` samples (see :meth:`SNN.run`).

    >>> batch_layout(None, "cpp_standalone", 1000, 10000), batch_layout(None, "cuda_standalone", 1000, 10000)
    ((1, 1000), (128, 8))
    >>> batch_layout(4, "runtime", 256, 10)
    (4, 3)
    """
    per_run = min(batch_size, n)
    R = resolve_replicas(replicas, backend, per_run)
    return R, -(-per_run // R)


def window_table(samples: np.ndarray, replicas: int) -> np.ndarray:
    """The ``x_in`` table of one run: sample ``b`` -> copy ``b // windows``, window (row) ``b % windows``.

    ``samples`` has ``replicas * windows`` rows of ``n_in`` values; the table has one row per
    window and copy ``r``'s inputs in columns ``r * n_in ... (r + 1) * n_in - 1``.

    >>> window_table(np.arange(6.0).reshape(6, 1), 2)
    array([[0., 3.],
           [1., 4.],
           [2., 5.]])
    """
    n, n_in = samples.shape
    return samples.reshape(replicas, n // replicas, n_in).transpose(1, 0, 2).reshape(n // replicas, -1)


def resolve_replicas(replicas, backend: str, per_run: int) -> int:
    """Network copies per run: ``replicas``, or the backend's default (see :meth:`SNN.run`).

    >>> resolve_replicas(None, "cpp_standalone", 1000), resolve_replicas(None, "cuda_standalone", 1000)
    (1, 128)
    >>> resolve_replicas(4, "runtime", 10)
    4
    """
    if replicas is None:
        return min(per_run, 128) if backend == "cuda_standalone" else 1
    if isinstance(replicas, bool) or not isinstance(replicas, (int, np.integer)) or replicas < 1:
        raise ConversionError(f"replicas must be a positive integer, got {replicas!r}")
    if replicas > per_run:
        raise ConversionError(f"replicas ({replicas}) must not exceed the samples per run ({per_run}): "
                              "lower replicas or raise batch_size")
    return int(replicas)


#: Default samples per run (:func:`batch_plan`), and on ``cpp_standalone`` the least of a long share.
DEFAULT_BATCH = 256
#: On ``cpp_standalone``, a worker's share of more than ``4 * DEFAULT_BATCH`` samples goes in this many runs.
BATCHES_PER_WORKER = 4
#: On ``cpp_standalone``, at most this many samples per run.
MAX_BATCH = 2048
#: At most this many bytes of input table per run (``batch * inputs`` float64 values) by default.
INPUT_TABLE_BYTES = 64 * 2**20


def batch_plan(backend: str, batch_size, n: int, workers, backend_options: dict,
               n_in: int | None = None) -> tuple[str, int, int]:
    """``(backend, batch size, workers)`` of a run over ``n`` samples of ``n_in`` inputs (see :meth:`SNN.run`).

    ``backend="auto"`` is resolved (:func:`biosnn.backends.registry.resolve_backend`);
    ``workers`` applies to ``cpp_standalone`` (every core by default, divided by
    the OpenMP ``threads``), other backends get 1.  The default batch size is
    :data:`DEFAULT_BATCH` (256), or ``ceil(n / workers)`` when that is smaller, so
    that every worker has a batch.  On ``cpp_standalone``, where every run is a
    process start that reads and writes its arrays (about 12 ms: 12 % of a
    rate-coded LeNet-5 at 256 samples per run), a worker's share of more than
    1024 samples goes in :data:`BATCHES_PER_WORKER` runs (a progress bar still
    moves, an interrupted run loses at most one of them), at most
    :data:`MAX_BATCH` samples each.  The default never puts more than
    :data:`INPUT_TABLE_BYTES` (64 MiB) of inputs in one run (``n_in`` inputs of
    8 bytes per sample): a 224x224x3 image network runs 55 samples per run.

    >>> batch_plan("runtime", None, 1000, None, {})
    ('runtime', 256, 1)
    >>> batch_plan("cpp_standalone", None, 100, 4, {}), batch_plan("cpp_standalone", 30, 100, 4, {})
    (('cpp_standalone', 25, 4), ('cpp_standalone', 30, 4))
    >>> [batch_plan("cpp_standalone", None, n, 2, {}, n_in=784)[1] for n in (1000, 2048, 10_000, 60_000)]
    [256, 256, 1250, 2048]
    >>> batch_plan("cpp_standalone", None, 10_000, 2, {}, n_in=3 * 224 * 224)[1]
    55
    """
    from biosnn.backends.registry import resolve_backend
    from biosnn.backends.parallel import resolve_workers
    backend = resolve_backend(backend)
    workers = resolve_workers(workers, backend_options.get("threads", 0))
    if backend != "cpp_standalone":
        workers = 1
    if batch_size is None:
        share = -(-n // workers)
        batch_size = min(share, DEFAULT_BATCH)
        if backend == "cpp_standalone":
            batch_size = min(share, MAX_BATCH, max(DEFAULT_BATCH, -(-share // BATCHES_PER_WORKER)))
        if n_in:
            batch_size = min(batch_size, INPUT_TABLE_BYTES // (8 * int(n_in)))
        batch_size = max(1, batch_size)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ConversionError(f"batch_size must be a positive integer, got {batch_size!r}")
    return backend, batch_size, workers


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


class SNN:
    """A torch ANN converted to a spiking network (rate coding; the base of the other codings).

    Built by :func:`biosnn.convert`.  ``spec`` is the network for one sample
    window; :meth:`run` builds the same network for ``batch_size`` windows,
    compiles it once (standalone backends) and feeds the data set through it.

    Other codings subclass it and override :meth:`_build_spec` (and, if their
    window is not ``T`` steps long or their scores are scaled differently,
    :attr:`window_steps` and :meth:`_scores_from_potential`).  Their specs keep
    the conventions :meth:`run` relies on: a timed array ``x_in`` of shape
    ``(windows, n_in)`` with one row per sample window, a ``meter`` population
    with ``spk_last``/``ops_last`` monitored once per window (one neuron per
    metered population, in population order), and an output population that
    is either monitored for ``v_last`` once per window or by spikes (a coding
    that records the per-window values otherwise overrides
    :meth:`_window_states`: TDSNN reads them with spike monitors).
    """

    def __init__(self, graph: LayerGraph, *, coding: str, T: int, thresholds: dict, input_mode: str,
                 readout: str, seed: int | None, ann_ops: int, layer_names: dict | None = None,
                 name: str = "converted", v_init: float = 0.0, signed: bool = False,
                 max_count: int | None = None, burst: int | None = None):
        self.graph = graph
        self.coding = coding
        self.T = int(T)
        self.thresholds = dict(thresholds)
        self.input_mode = input_mode
        self.readout = readout
        self.seed = seed
        self.ann_ops = int(ann_ops)
        self.name = name
        self.v_init = float(v_init)
        self.signed = bool(signed)   # signed IF neurons (rate coding: biosnn.codings.rate.coding.convert)
        self.max_count = max_count   # their cap (match_levels)
        self.burst = burst           # their spikes per step (None: 1)
        self._spec_cache: dict[tuple[int, int], m.NetworkSpec] = {}
        self._sim_cache: dict[tuple, object] = {}   # (backend, options, spec id) -> standalone build
        self.spec = self.spec_for(1)

    @property
    def window_steps(self) -> int:
        """Time steps of one sample window (rate coding: ``T``)."""
        return self.T

    def _build_spec(self, windows: int) -> m.NetworkSpec:
        return rate_network_spec(self.graph, T=self.T, windows=windows, thresholds=self.thresholds,
                                 input_mode=self.input_mode, readout=self.readout, seed=self.seed,
                                 name=self.name, v_init=self.v_init, signed=self.signed,
                                 max_count=self.max_count, burst=self.burst)

    def reference(self, x, **options):
        """The exact numpy reference of this rate-coded network (:func:`~biosnn.codings.rate.reference.simulate_rate`).

        Parameters
        ----------
        x : array_like
            Raw inputs ``(N,) + input_shape``.
        **options
            Passed on (``batch_size``, ``record_trains``, ``score_steps``); the network's own
            parameters (``T``, thresholds, input mode, seed, readout, initial potential, signed
            neurons, their cap and burst) are taken from it.

        Returns
        -------
        RateResult
        """
        from biosnn.codings.rate.reference import simulate_rate
        return simulate_rate(self.graph, np.asarray(x), self.T, thresholds=self.thresholds,
                             input_mode=self.input_mode, seed=self.seed, readout=self.readout, v_init=self.v_init,
                             signed=self.signed, max_count=self.max_count, burst=self.burst, **options)

    def _window_states(self, rec, population: str, variable: str, windows: int) -> np.ndarray | None:
        """A variable's values at the end of each of a run's ``windows`` windows, ``(windows, neurons)``, or
        ``None`` where it is not recorded (rate coding: rows 1 .. ``windows`` of a state monitor sampling it at
        every window start; row 0 is the start of the run)."""
        states = rec.states.get(population, {})
        return np.asarray(states[variable].values)[1:windows + 1] if variable in states else None

    def _scores_from_potential(self, v_last: np.ndarray) -> np.ndarray:
        """Scores from the output layer's potential at the end of a window (rate: ``v / T``)."""
        return v_last / self.T

    def _scores_from_spikes(self, window: np.ndarray, step_in_window: np.ndarray, index: np.ndarray,
                            scores: np.ndarray) -> None:
        """Add output spikes to ``scores`` (rate: spike counts / T)."""
        np.add.at(scores, (window, index), 1.0 / self.T)

    def spec_for(self, windows: int, replicas: int = 1) -> m.NetworkSpec:
        """The network spec simulating ``windows`` samples per run in each of ``replicas`` copies (cached).

        Copy ``r``'s neurons are ``r * N ... (r + 1) * N - 1`` of every group
        (:func:`biosnn.spec.replicas.replicate`).
        """
        key = (windows, replicas)
        if key not in self._spec_cache:
            self._spec_cache[key] = (self._build_spec(windows) if replicas == 1
                                     else replicate(self.spec_for(windows), replicas))
        return self._spec_cache[key]

    def _simulation(self, backend: str, spec: m.NetworkSpec, backend_options: dict):
        """``spec`` built on ``backend`` and whether that compiled code; a standalone build of an earlier
        :meth:`run` is reused.

        A standalone simulation re-runs its binary with new inputs, and reloads
        itself when another build took Brian2's device, so a second
        :meth:`run` with the same batch layout and options skips code
        generation (0.5-0.7 s for a converted LeNet-5).  Other backends build
        afresh every time.
        """
        from biosnn.backends.brian2_standalone import StandaloneSimulation
        from biosnn.backends.registry import get_backend
        key = (backend, repr(sorted(backend_options.items())), id(spec))
        sim = self._sim_cache.get(key)
        if sim is not None and sim.spec is spec and (sim.directory / "main").is_file():
            return sim, False
        sim = get_backend(backend, **backend_options).build(spec)
        if isinstance(sim, StandaloneSimulation):
            self._sim_cache[key] = sim
        return sim, bool(getattr(sim, "compiled", False))

    def layer_populations(self) -> dict[str, str]:
        """Torch layer name -> population name in the spec."""
        return layer_populations(self.graph)

    def save(self, path) -> Path:
        """Write the spec (YAML + .npz); ``biosnn.load(path)`` reads it back."""
        return self.spec.save(path)

    def run(self, x, backend: str = "auto", batch_size: int | None = None, progress: bool = True,
            replicas: int | None = None, workers: int | None = None, **backend_options) -> SNNResult:
        """Simulate samples ``x`` (``(N, C, H, W)`` or ``(N, features)``) in batches.

        Parameters
        ----------
        x : torch.Tensor or ndarray
            Raw inputs, as the ANN takes them.
        backend : str
            ``auto`` (default: see :func:`biosnn.backends.registry.resolve_backend`),
            ``runtime``, ``cython``, ``cpp_standalone`` or ``cuda_standalone``.
        batch_size : int, optional
            Default: 256, or fewer so that every worker gets a batch; on
            ``cpp_standalone`` a worker's share of more than 1024 samples in 4
            runs (at most 2048 samples each); at most 64 MiB of inputs per run
            (:func:`batch_plan`).  Samples per simulation run: ``replicas`` copies of the network
            (:func:`biosnn.spec.replicas.replicate`) each simulate
            ``ceil(batch_size / replicas)`` sample windows one after the other
            (batching in time, the state reset between windows).  The data set
            is cut into such batches and the compiled binary is re-run with new
            inputs (no recompilation); a whole data set fits in one run when
            ``batch_size`` covers it.  Larger batches amortise the per-run
            start-up; memory grows with ``batch_size * inputs``.  On the
            standalone backends a later run with the same batch layout and
            backend options reuses this run's build (no code generation).
        progress : bool
            A progress bar over batches.
        replicas : int, optional
            Network copies side by side in one simulation (sample ``b`` of a
            batch goes to copy ``b // windows``, window ``b % windows``).  Default:
            1 on CPU backends (one copy, many windows: the fast route there);
            ``min(batch_size, 128)`` on ``cuda_standalone`` (copies fill the
            GPU, windows amortise its start-up).  With OpenMP threads on
            ``cpp_standalone``, copies give every time step enough work to share.
        workers : int, optional
            Processes running batches at once on ``cpp_standalone``, each a
            run of the same compiled binary (:mod:`biosnn.backends.parallel`);
            results are merged in sample order and equal one worker's.
            Default: every core this process may use, divided by the OpenMP
            ``threads``.  Other backends run one batch at a time.
        **backend_options
            Passed to :func:`biosnn.backends.get_backend` (``threads``, ``float32``, ...).
        """
        from biosnn.backends.parallel import run_batches
        _quiet_gate_warning()
        x = _to_numpy(x)
        n_in = self.graph.layers[0].size
        if x.ndim < 2 or int(np.prod(x.shape[1:])) != n_in:
            raise ConversionError(f"x must have shape (N,) + {self.graph.layers[0].out_shape}, got {x.shape}")
        n = x.shape[0]
        backend, batch_size, workers = batch_plan(backend, batch_size, n, workers, backend_options, n_in)
        flat = x.reshape(n, n_in) / self.graph.input_scale
        if self.input_mode == "poisson":
            check_nonnegative(flat, "Rate coding", POISSON_WHY)
        R, windows = batch_layout(replicas, backend, batch_size, n)
        per_run = R * windows
        spec = self.spec_for(windows, R)
        t0 = time.perf_counter()
        sim, compiled = self._simulation(backend, spec, backend_options)
        build_s, run_s = time.perf_counter() - t0, 0.0
        pops = self.layer_populations()
        meter_order = [pr.source for pr in spec.projections if pr.target == "meter"]
        out_pop = pops[self.graph.output]
        n_out = self.graph[self.graph.output].size
        scores = np.zeros((n, n_out))
        spikes = np.zeros((n, len(meter_order)))
        ops = np.zeros((n, len(meter_order)))

        def per_sample(v):
            """Rows (windows), columns (copy, unit) -> rows (copy, window) of samples."""
            return v.reshape(windows, R, -1).transpose(1, 0, 2).reshape(per_run, -1)

        from tqdm.auto import tqdm
        starts = range(0, n, per_run)
        import os
        show = progress and os.environ.get("BIOSNN_PROGRESS", "1") != "0"

        def batches():
            for s in starts:
                chunk = flat[s:s + per_run]
                if len(chunk) < per_run:
                    chunk = np.concatenate([chunk, np.zeros((per_run - len(chunk), n_in))])
                yield {"x_in": window_table(chunk, R)}

        bar = tqdm(zip(starts, run_batches(sim, batches(), workers)), total=len(starts),
                   desc=f"{self.name} on {backend}" + (f" x {workers}" if workers > 1 else ""), unit="batch",
                   disable=not show, leave=False)
        for s, rec in bar:
            k = min(per_run, n - s)
            run_s += float(rec.meta.get("wall_time_s", 0.0))
            spikes[s:s + k] = per_sample(self._window_states(rec, "meter", "spk_last", windows))[:k]
            ops[s:s + k] = per_sample(self._window_states(rec, "meter", "ops_last", windows))[:k]
            v_last = self._window_states(rec, out_pop, "v_last", windows)
            if v_last is not None:
                scores[s:s + k] = self._scores_from_potential(per_sample(v_last)[:k])
            else:
                st = rec.spikes[out_pop]
                step = np.rint(st.times / (DT_MS * 1e-3)).astype(np.int64)
                win = step // self.window_steps
                sample = (st.indices // n_out) * windows + win
                keep = (win < windows) & (sample < k)
                self._scores_from_spikes(sample[keep], step[keep] - win[keep] * self.window_steps,
                                         st.indices[keep] % n_out, scores[s:s + k])
        wall = time.perf_counter() - t0
        names = {p: layer for layer, p in pops.items()}
        layer_spikes, layer_synops = {}, {}
        input_events = input_macs = None
        for col, pname in enumerate(meter_order):
            lname = names[pname]
            if pname == "input" and self.input_mode == "analog":
                input_events, input_macs = spikes[:, col], ops[:, col]
                continue
            layer_spikes[lname] = spikes[:, col]
            layer_synops[lname] = ops[:, col]
        preds = np.argmax(scores, axis=1)
        return SNNResult(predictions=preds, scores=scores, layer_spikes=layer_spikes,
                         layer_synops=layer_synops, wall_time_s=wall, backend=backend, T=self.T,
                         build_time_s=build_s, run_time_s=run_s, runs=len(starts), compiled=compiled,
                         input_events=input_events, input_macs=input_macs, ann_macs=self.ann_ops)
