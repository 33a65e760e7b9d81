"""Greedy unsupervised training of binary convolution kernels with stochastic STDP.

A convolution layer shares one kernel over all positions, so training the
kernel on every ``k x k`` window of an image is the same as training a *patch
network*: one output neuron per kernel (output map) that sees one ``k x k x C``
input patch.  Presenting random patches of the training images one after the
other trains the shared kernels (ReStoCNet, Srinivasan & Roy 2019).

The patch network (:func:`patch_network_spec`) runs many presentations in
one simulation (batching in time):

* ``patch_in``: one input neuron per patch pixel; at the start of each
  presentation window it loads its intensity ``x`` from the 2-D timed array
  ``x_in`` (one row per window) and then fires a Bernoulli spike with
  probability ``p_in * x`` in every step (rate coding);
* ``kernels``: one leaky integrate-and-fire neuron per kernel,
  ``dv/dt = -v/tau_m``, firing when ``v > v_th + theta`` and the map is not
  dropped out, reset ``v = 0``;
* ``stdp``: all-to-all binary synapses with the stochastic STDP rule of
  :func:`biosnn.models.plasticity_stochastic.stochastic_binary_stdp`;
* at each window start (``run_regularly``): ``v = 0``; the spike-pairing flags
  of the synapses are cleared; each map is dropped out with probability
  ``p_drop`` (``active = int(rand() >= p_drop)``, dropout among output maps,
  a proxy for lateral inhibition); homeostasis: ``theta`` grows by
  ``theta_plus`` at every spike and shrinks by ``theta_minus`` per window in
  which the map was active, so a map settles near
  ``theta_minus / theta_plus`` spikes per active window.

The learned binary kernels come back from the run's final state
(``rec.final["stdp.w"]``); :func:`train_kernels` returns them as an array and
never touches Brian2 objects.  :func:`pairing_spec` is the spike-pairing
protocol that measures the rule's switching probability against
:func:`expected_pairing_switch`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from biosnn.errors import SpecError
from biosnn.models.plasticity_stochastic import STOCHASTIC_STDP_DEFAULTS, stochastic_binary_stdp, \
    switching_probability
from biosnn.spec import model as m
from biosnn.spec.values import ArrayValue

__all__ = ["KernelTraining", "extract_patches", "patch_network_spec", "train_kernels", "pairing_spec",
           "expected_pairing_switch", "PATCH_NEURON_DEFAULTS"]

PATCH_NEURON_DEFAULTS = {"tau_m": "10*ms", "v_th": "4.0", "theta_plus": "0.2", "theta_minus": "0.1",
                         "theta_min": "-3.5", "p_drop": "0.5", "p_in": "0.3"}
"""Constants of the patch network's kernel neurons and inputs (dimensionless potentials)."""


def _merge(defaults: dict, given: dict, what: str) -> dict:
    unknown = set(given) - set(defaults)
    if unknown:
        raise SpecError(f"unknown {what} parameter(s) {sorted(unknown)}", fix=f"use some of {sorted(defaults)}")
    return {**defaults, **{k: str(v) for k, v in given.items()}}


def extract_patches(images, kernel_size: int, n: int, *, min_mean: float = 0.05, max_mean: float = 1.0,
                    seed: int | None = 0) -> np.ndarray:
    """Random ``k x k`` patches of images, skipping nearly blank ones.

    Parameters
    ----------
    images : array_like
        ``(N, C, H, W)`` or ``(N, H, W)`` intensities in ``[0, 1]``.
    kernel_size : int
        ``k``.
    n : int
        Number of patches.
    min_mean, max_mean : float
        Only patches whose mean intensity lies in ``[min_mean, max_mean]``
        are drawn (blank background teaches nothing; with ``max_mean < 1``
        patches inside thick strokes are left out and edges dominate).
    seed : int, optional
        Seed of the patch positions.

    Returns
    -------
    numpy.ndarray
        ``(n, C*k*k)`` float64 patches in the layout of a ``(C, k, k)`` kernel.
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise SpecError(f"images must have shape (N, C, H, W) or (N, H, W), got {x.shape}",
                        fix="pass a batch of images")
    k = int(kernel_size)
    if not 1 <= k <= min(x.shape[2:]):
        raise SpecError(f"kernel_size must be between 1 and {min(x.shape[2:])}, got {kernel_size}",
                        fix="choose a kernel smaller than the images")
    from numpy.lib.stride_tricks import sliding_window_view
    windows = sliding_window_view(x, (k, k), axis=(2, 3))           # N, C, H', W', k, k
    windows = windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1] * k * k)
    mean = windows.mean(axis=1)
    keep = np.flatnonzero((mean >= min_mean) & (mean <= max_mean))
    if keep.size == 0:
        raise SpecError(f"no patch has a mean intensity in [{min_mean}, {max_mean}]",
                        fix="widen the range min_mean..max_mean")
    rng = np.random.default_rng(seed)
    return np.array(windows[rng.choice(keep, size=int(n), replace=keep.size < n)])


def patch_network_spec(n_kernels: int, n_inputs: int, windows: int, *, steps: int = 20, dt_ms: float = 1.0,
                       initial_weights=None, rule: dict | None = None, neuron: dict | None = None,
                       seed: int | None = 0, name: str = "stochastic_stdp_patches") -> m.NetworkSpec:
    """The patch network that trains ``n_kernels`` binary kernels (see the module docstring).

    Parameters
    ----------
    n_kernels : int
        Output maps (kernels).
    n_inputs : int
        Pixels of one patch, ``C*k*k``.
    windows : int
        Presentations per run (rows of the timed array ``x_in``).
    steps : int
        Time steps per presentation.
    dt_ms : float
        Time step in ms.
    initial_weights : array_like, optional
        ``(n_kernels, n_inputs)`` binary start weights (default: each synapse
        ``w_max`` with probability 1/2, drawn from ``seed``).
    rule : dict, optional
        Constants of the stochastic STDP rule (see
        :data:`~biosnn.models.plasticity_stochastic.STOCHASTIC_STDP_DEFAULTS`).
    neuron : dict, optional
        Constants of :data:`PATCH_NEURON_DEFAULTS`.
    seed : int, optional
        Seed of Brian2's random numbers and of the default start weights.
    name : str
        Spec name.

    Returns
    -------
    NetworkSpec
        Synapse ``s`` of projection ``stdp`` joins input ``s % n_inputs`` to
        kernel ``s // n_inputs``; inputs go in with ``overrides={"x_in": ...}``.
    """
    for value, what in ((n_kernels, "n_kernels"), (n_inputs, "n_inputs"), (windows, "windows"), (steps, "steps")):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise SpecError(f"{what} must be a positive integer, got {value!r}", fix=f"give {what} >= 1")
    rule = _merge(STOCHASTIC_STDP_DEFAULTS, rule or {}, "stochastic STDP")
    neuron = _merge(PATCH_NEURON_DEFAULTS, neuron or {}, "patch neuron")
    synapse = stochastic_binary_stdp(**rule)   # validates the rule's constants
    w_min, w_max = float(rule["w_min"]), float(rule["w_max"])
    if initial_weights is None:
        rng = np.random.default_rng(seed)
        initial_weights = np.where(rng.random((n_kernels, n_inputs)) < 0.5, w_max, w_min)
    w0 = np.asarray(initial_weights, dtype=np.float64)
    if w0.shape != (n_kernels, n_inputs):
        raise SpecError(f"initial_weights has shape {w0.shape}, expected {(n_kernels, n_inputs)}",
                        fix="give one row of patch weights per kernel")
    window = f"{steps * dt_ms!r}*ms"
    pre = np.tile(np.arange(n_inputs), n_kernels)
    post = np.repeat(np.arange(n_kernels), n_inputs)
    inputs = m.Population(
        "patch_in", n_inputs, m.NeuronModel("x : 1", threshold="rand() < p_in * x",
                                            description="Bernoulli spikes with probability p_in * x per step"),
        parameters={"p_in": neuron["p_in"]},
        operations=[m.Operation("x = x_in(t, i)", dt=window, when="start")])
    kernels = m.Population(
        "kernels", n_kernels,
        m.NeuronModel("dv/dt = -v/tau_m : 1\ntheta : 1\nactive : 1",
                      threshold="v > v_th + theta and active > 0.5", reset="v = 0\ntheta += theta_plus",
                      method="exact", description="leaky IF kernel neuron with homeostatic threshold and dropout"),
        parameters={k: neuron[k] for k in ("tau_m", "v_th", "theta_plus", "theta_minus", "theta_min", "p_drop")},
        operations=[m.Operation("theta = clip(theta - theta_minus * active, theta_min, 1e9)\nv = 0\n"
                                "active = int(rand() >= p_drop)", dt=window, when="start")])
    stdp = m.Projection("stdp", "patch_in", "kernels", synapse, m.Explicit(ArrayValue(pre), ArrayValue(post)),
                        weights=ArrayValue(w0.reshape(-1)),
                        operations=[m.Operation("pre_seen = 0\npost_seen = 0", dt=window, when="start")])
    return m.NetworkSpec(
        name, populations=[inputs, kernels], projections=[stdp], monitors=[m.SpikeMonitor("kernels")],
        dt=f"{dt_ms!r}*ms", duration=f"{windows * steps * dt_ms!r}*ms", seed=seed,
        timed_arrays=[m.TimedArraySpec("x_in", ArrayValue(np.zeros((windows, n_inputs))), window)],
        description=f"Stochastic-STDP patch network: {n_kernels} binary kernels of {n_inputs} inputs, "
                    f"{windows} presentations of {steps} steps.")


@dataclass(frozen=True)
class KernelTraining:
    """Result of :func:`train_kernels`.

    Attributes
    ----------
    kernels : numpy.ndarray
        ``(n_kernels, n_inputs)`` learned binary weights (values ``w_min`` / ``w_max``).
    initial : numpy.ndarray
        The start weights, same layout.
    theta : numpy.ndarray
        Homeostatic threshold offsets at the end of training.
    spikes_per_kernel : numpy.ndarray
        Spikes of each kernel neuron over all presentations.
    spec : NetworkSpec
        The patch network that was run (with its start weights).
    wall_time_s : float
        Wall-clock time of the simulation.
    """

    kernels: np.ndarray
    initial: np.ndarray
    theta: np.ndarray
    spikes_per_kernel: np.ndarray
    spec: m.NetworkSpec
    wall_time_s: float

    def switched_fraction(self) -> float:
        """Fraction of synapses whose binary value differs from the start."""
        return float(np.mean(self.kernels != self.initial))


def train_kernels(patches, n_kernels: int, *, steps: int = 20, dt_ms: float = 1.0, rule: dict | None = None,
                  neuron: dict | None = None, initial_weights=None, backend: str = "runtime", seed: int | None = 0,
                  progress: bool = False, **backend_options) -> KernelTraining:
    """Train binary kernels on patches with stochastic STDP (one simulation of all presentations).

    Parameters
    ----------
    patches : array_like
        ``(n_presentations, C*k*k)`` intensities in ``[0, 1]``, e.g. from
        :func:`extract_patches`.
    n_kernels : int
        Number of kernels (output maps).
    steps, dt_ms, rule, neuron, initial_weights, seed
        As for :func:`patch_network_spec`.
    backend : str
        Brian2 backend name (``runtime``, ``cython``, ``cpp_standalone``, ...).
    progress : bool
        Show a progress bar.
    **backend_options
        Passed to :func:`biosnn.backends.get_backend` (e.g. ``cache_dir``).

    Returns
    -------
    KernelTraining
    """
    import time

    from biosnn.backends.registry import get_backend
    x = np.asarray(patches, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise SpecError(f"patches must have shape (n_presentations, n_inputs), got {x.shape}",
                        fix="flatten each patch into one row")
    if np.any(x < 0) or np.any(x > 1):
        raise SpecError("patch intensities must lie in [0, 1]", fix="scale the images to [0, 1]")
    spec = patch_network_spec(n_kernels, x.shape[1], x.shape[0], steps=steps, dt_ms=dt_ms,
                              initial_weights=initial_weights, rule=rule, neuron=neuron, seed=seed)
    initial = np.asarray(spec.projection("stdp").weights.data, dtype=np.float64).reshape(n_kernels, x.shape[1])
    t0 = time.perf_counter()
    rec = get_backend(backend, **backend_options).build(spec).run(
        overrides={"x_in": x}, progress=progress, final_state=["stdp.w", "stdp.i", "stdp.j", "kernels.theta"])
    wall = time.perf_counter() - t0
    kernels = np.zeros_like(initial)
    kernels[rec.final["stdp.j"].values.astype(int), rec.final["stdp.i"].values.astype(int)] = \
        rec.final["stdp.w"].values
    return KernelTraining(kernels=kernels, initial=initial, theta=rec.final["kernels.theta"].values,
                          spikes_per_kernel=rec.spikes["kernels"].counts(), spec=spec, wall_time_s=wall)


def pairing_spec(delta_t_ms, trials: int, *, rule: dict | None = None, t0_ms: float = 50.0, dt_ms: float = 0.1,
                 seed: int | None = 0, name: str = "stochastic_stdp_pairing") -> m.NetworkSpec:
    """One spike pair per synapse, to measure the switching probability against ``Dt = t_post - t_pre``.

    For each entry of ``delta_t_ms`` there are ``trials`` synapses starting at
    ``w_min`` and ``trials`` starting at ``w_max`` (synapse index
    ``(2*k + start)*trials + r`` for difference ``k``, start 0/1 and trial
    ``r``), each between its own pre and post neuron; the pre neuron fires
    once at ``t0``, the post neuron at ``t0 + Dt`` (``Dt = inf``: the post
    neuron fires at ``t0`` and the pre neuron never).

    Parameters
    ----------
    delta_t_ms : array_like
        Spike-time differences in ms (multiples of ``dt_ms``; ``inf`` allowed).
    trials : int
        Synapses per difference and start value.
    rule : dict, optional
        Constants of the stochastic STDP rule.
    t0_ms, dt_ms : float
        Pre spike time and time step (ms).
    seed : int, optional
        Seed of Brian2's random numbers.
    name : str
        Spec name.

    Returns
    -------
    NetworkSpec
        Read the weights after the run with ``final_state=["pairs.w"]``.
    """
    d = np.asarray(delta_t_ms, dtype=np.float64).reshape(-1)
    finite = d[np.isfinite(d)]
    if d.size == 0 or np.any(np.isnan(d)) or (finite.size and t0_ms + finite.min() < 0):
        raise SpecError(f"delta_t_ms must be numbers (or inf) with t0_ms + delta_t >= 0, got {d}",
                        fix="raise t0_ms or use smaller negative differences")
    rule = _merge(STOCHASTIC_STDP_DEFAULTS, rule or {}, "stochastic STDP")
    synapse = stochastic_binary_stdp(**rule)
    n = 2 * d.size * int(trials)
    dk = np.repeat(d, 2 * int(trials))
    start = np.tile(np.repeat([0, 1], int(trials)), d.size)
    never = 1e6  # ms: a spike that never comes within the run
    t_pre = np.where(np.isfinite(dk), t0_ms, never)
    t_post = np.where(np.isfinite(dk), t0_ms + np.where(np.isfinite(dk), dk, 0.0), t0_ms)
    clock = m.NeuronModel("t_fire : second (constant)\nv : 1", threshold="abs(t - t_fire) < 0.5*dt", refractory="1*ms",
                          description="fires once, at t_fire")
    w0 = np.where(start == 1, float(rule["w_max"]), float(rule["w_min"]))
    idx = ArrayValue(np.arange(n))
    end = t0_ms + (finite.max() if finite.size else 0.0) + 5.0
    return m.NetworkSpec(
        name, populations=[m.Population("pre", n, clock, initial={"t_fire": ArrayValue(t_pre, "ms")}),
                           m.Population("post", n, clock, initial={"t_fire": ArrayValue(t_post, "ms")})],
        projections=[m.Projection("pairs", "pre", "post", synapse, m.Explicit(idx, idx), weights=ArrayValue(w0))],
        dt=f"{dt_ms!r}*ms", duration=f"{float(max(end, t0_ms + 5.0))!r}*ms", seed=seed,
        description=f"Spike-pairing protocol: {d.size} time differences x {trials} trials x 2 start values.")


def expected_pairing_switch(delta_t_ms, **rule) -> tuple[np.ndarray, np.ndarray]:
    """Switching probabilities of the :func:`pairing_spec` protocol.

    A single pair with ``Dt >= 0`` switches ``w_min -> w_max`` with
    ``p_pot(Dt)`` and ``w_max -> w_min`` with ``p_dep(Dt)``.  With ``Dt < 0``
    the post spike comes first and has no pre spike before it (anti-Hebbian,
    ``p_dep(inf) = gamma_anti``); then the pre spike depresses with the
    Hebbian ``p_dep(Dt)``, so ``w_max -> w_min`` with
    ``1 - (1 - gamma_anti)(1 - p_dep(Dt))`` and never ``w_min -> w_max``.

    Parameters
    ----------
    delta_t_ms : array_like
        Differences in ms (``inf``: no pre spike).
    **rule
        Constants of the rule.

    Returns
    -------
    up, down : numpy.ndarray
        Probabilities of ``w_min -> w_max`` and ``w_max -> w_min``.
    """
    d = np.asarray(delta_t_ms, dtype=np.float64) * 1e-3
    p_pot, p_dep = switching_probability(d, **rule)
    _, p_never = switching_probability(np.inf, **rule)
    down = np.where(d < 0, 1.0 - (1.0 - p_never) * (1.0 - p_dep), p_dep)
    return np.where(d < 0, 0.0, p_pot), down
