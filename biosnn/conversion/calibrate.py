"""Data-based weight normalisation and threshold balancing for rate conversion.

Two ways to make the IF network's firing rates match the ANN's ReLU
activations:

* **Weight normalisation** (Diehl et al. 2015; Rueckauer et al. 2017, robust
  percentile variant): measure a scale ``lambda_L`` per layer on calibration
  data (:func:`activation_scales`), then rescale weights and biases
  (:func:`normalize`) so that every IF neuron can use threshold 1 and the
  normalised activations ``a_L / lambda_L`` mostly lie in ``[0, 1]``.
* **Spike-norm** (Sengupta et al. 2019): keep the weights and set each layer's
  threshold to the maximal synaptic input it receives in the reference IF
  simulation, layer after layer (:func:`spike_norm_thresholds`).

:func:`calibrate` picks one of them by name.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from biosnn.frontends.torch_graph import LayerGraph, forward_numpy, snn_roles
from biosnn.errors import ConversionError

__all__ = ["activation_scales", "normalize", "spike_norm_thresholds", "calibrate", "NORMALIZATIONS"]

NORMALIZATIONS = ("percentile", "max", "spike-norm")


def _check_calib(graph: LayerGraph, x_calib) -> None:
    if x_calib is None or len(x_calib) == 0:
        raise ConversionError("calibration data is empty; pass a few hundred training samples "
                              f"of shape (N,) + {graph.input_shape}")


def _threshold(thresholds: Mapping[str, float], name: str) -> float:
    theta = float(thresholds.get(name, 1.0))
    if not (theta > 0 and np.isfinite(theta)):
        raise ConversionError(f"threshold of layer '{name}' must be positive and finite, got {theta}")
    return theta


def _effective_scales(graph: LayerGraph, scales: Mapping[str, float],
                      roles: Mapping[str, str],
                      thresholds: Mapping[str, float] | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """Output scales ``lambda`` and input divisors ``mu`` of every layer.

    Layer ``L``'s spikes represent ``a_L / lambda_L``; its synaptic input is
    divided by ``mu_L = lambda_L / theta_L`` (``theta_L = 1`` unless given).
    Rules that keep this consistent:

    * pooling layers have no weights to rescale: ``mu`` (max pool also
      ``lambda``) is the scale of their input; an average pool's IF neurons
      with threshold ``theta`` have ``lambda = mu * theta``;
    * a *virtual* residual branch takes the divisor ``mu`` of the ``add`` it
      feeds (its current is part of the add's input).
    """
    thresholds = thresholds or {}
    lam: dict[str, float] = {}
    mu: dict[str, float] = {}
    for layer in graph.layers:
        name = layer.name
        if layer.op in ("maxpool2d", "avgpool2d") and layer.ceiling is not None:
            raise ConversionError(
                f"layer '{name}' ({layer.module}) is a pooling with a clipped ReLU (ceiling {layer.ceiling:g}); "
                "pooling neurons do not clip. Fix: apply the clipped ReLU (ReLU6, Hardtanh, clamp, QCFS) before "
                "the pooling, or a plain ReLU after it")
        if layer.op == "maxpool2d":
            lam[name] = mu[name] = lam[layer.inputs[0]]
        elif layer.op == "avgpool2d":
            mu[name] = lam[layer.inputs[0]]
            lam[name] = mu[name] * _threshold(thresholds, name)
        elif roles[name] == "virtual":
            lam[name] = mu[name] = np.nan  # filled below
        else:
            if name not in scales:
                raise ConversionError(f"no scale given for layer '{name}' ({layer.module})")
            value = float(scales[name])
            if not (value > 0 and np.isfinite(value)):
                raise ConversionError(f"scale of layer '{name}' must be positive and finite, got {value}")
            lam[name] = value
            mu[name] = value / _threshold(thresholds, name)
    for layer in reversed(graph.layers):
        if roles[layer.name] == "virtual":
            targets = {mu[c] for c in graph.consumers(layer.name)}
            if len(targets) != 1:
                raise ConversionError(
                    f"residual branch '{layer.name}' ({layer.module}) feeds several add layers with "
                    "different scales; it cannot be normalised to all of them")
            lam[layer.name] = mu[layer.name] = targets.pop()
    return lam, mu


def activation_scales(graph: LayerGraph, x_calib, method: str = "percentile",
                      percentile: float = 99.9, batch_size: int = 256) -> dict[str, float]:
    """Per-layer activation scales ``lambda_L`` (Rueckauer et al. 2017).

    ``lambda_L`` is the maximum (``method="max"``, Diehl et al. 2015) or the
    ``percentile``-th percentile (robust normalisation) of the layer's
    positive ANN activations (the non-zero ones after its ReLU) over all
    calibration samples and units, as in SNN-toolbox.  The input layer's
    scale is the same statistic of the positive input values.  A layer that is never active
    gets 1.  Pooling layers get their input's scale, residual branches without
    ReLU (role ``"virtual"``) the scale of the add they feed.

    Parameters
    ----------
    graph : LayerGraph
        Traced network (not yet normalised).
    x_calib : array_like
        ``(N,) + graph.input_shape`` calibration inputs (typically training
        data).
    method : {"percentile", "max"}
        Statistic.
    percentile : float
        Percentile in ``(0, 100]`` for ``method="percentile"``.
    batch_size : int
        Samples evaluated together.

    Returns
    -------
    dict of str to float
        ``lambda_L`` for every layer (dimensionless, in activation units).
    """
    if method not in ("percentile", "max"):
        raise ConversionError(f"method must be 'percentile' or 'max', got {method!r}")
    if method == "percentile" and not (0 < float(percentile) <= 100):
        raise ConversionError(f"percentile must be in (0, 100], got {percentile!r}")
    _check_calib(graph, x_calib)
    roles = snn_roles(graph)
    pos: dict[str, list[np.ndarray]] = {name: [] for name in graph.names}
    for start in range(0, len(x_calib), int(batch_size)):
        acts = forward_numpy(graph, x_calib[start:start + int(batch_size)])
        for name, a in acts.items():
            a = a.ravel()
            pos[name].append(a[a > 0])
    raw: dict[str, float] = {}
    for name, chunks in pos.items():
        vals = np.concatenate(chunks)
        if graph[name].ceiling is not None:
            raw[name] = graph[name].ceiling   # a clipped ReLU: its ceiling is the scale (the IF rate saturates there)
        elif vals.size == 0:
            raw[name] = 1.0
        elif method == "max":
            raw[name] = float(vals.max())
        else:
            raw[name] = float(np.percentile(vals, percentile))
    return _effective_scales(graph, raw, roles)[0]


def normalize(graph: LayerGraph, scales: Mapping[str, float],
              thresholds: Mapping[str, float] | None = None) -> LayerGraph:
    """Rescale weights so that layer ``L``'s rate represents ``a_L / lambda_L``.

    With all thresholds 1 (the usual weight normalisation), for a linear/conv
    layer reading layer ``P``::

        W_L <- W_L * lambda_P / lambda_L,    b_L <- b_L / lambda_L

    and the input is divided by ``lambda_input`` (``input_scale`` of the new
    graph is multiplied by it).  Pooling layers are unchanged (they get their
    input's scale).  Residual ``add`` layers: both branches must arrive in
    the add's common scale ``lambda_add``.  A branch without ReLU (role
    ``"virtual"``, e.g. the second conv of a ResNet block or a 1x1-conv
    shortcut) gets ``lambda = lambda_add``, so its weights become
    ``W * lambda_P / lambda_add``; an identity shortcut from a spiking layer
    ``S`` is rescaled through the add's coefficient ``c_S <- c_S * lambda_S /
    lambda_add`` (a weight on the one-to-one shortcut synapses).  Then
    :func:`~biosnn.frontends.torch_graph.forward_numpy` of the result equals the
    original activations divided by the scales, and every IF neuron uses
    threshold 1.

    With thresholds ``theta_L`` (spike-norm), ``lambda_L`` above is replaced
    by ``mu_L = lambda_L / theta_L`` wherever it divides (``W_L * lambda_P /
    mu_L``, ``b_L / mu_L``, ``c_S * lambda_S / mu_add``); an IF neuron with
    threshold ``theta_L`` then fires at the rate ``a_L / lambda_L``.

    Parameters
    ----------
    graph : LayerGraph
        Traced network.
    scales : mapping of str to float
        ``lambda_L`` per layer, e.g. from :func:`activation_scales` (entries
        of pooling and virtual layers are ignored, see above).  An average
        pool's entry is ignored too: its scale is its input's times its
        threshold.
    thresholds : mapping of str to float, optional
        ``theta_L`` per IF layer the simulation will use (default 1).

    Returns
    -------
    LayerGraph
        A new graph; ``graph`` is unchanged.
    """
    roles = snn_roles(graph)
    lam, mu = _effective_scales(graph, scales, roles, thresholds)
    new = {}
    for layer in graph.layers:
        if layer.op in ("linear", "conv2d"):
            src = layer.inputs[0]
            new[layer.name] = layer.replace(weight=layer.weight * (lam[src] / mu[layer.name]),
                                            bias=layer.bias / mu[layer.name])
        elif layer.op == "add":
            coeff = np.array([c * lam[src] / mu[layer.name] for c, src in zip(layer.weight, layer.inputs)])
            new[layer.name] = layer.replace(weight=coeff)
        if layer.ceiling is not None:
            new[layer.name] = new.get(layer.name, layer).replace(ceiling=layer.ceiling / lam[layer.name])
    return graph.replace_layers(new, input_scale=graph.input_scale * lam[graph.input.name])


def _spiking_sources(graph: LayerGraph, name: str, roles: Mapping[str, str]) -> list[str]:
    """Layers whose spikes reach IF layer ``name`` (looking through virtual branches)."""
    out = []
    for src in graph[name].inputs:
        if roles[src] == "virtual":
            out.extend(_spiking_sources(graph, src, roles))
        else:
            out.append(src)
    return out


def spike_norm_thresholds(graph: LayerGraph, x_calib, T: int, input_mode: str = "analog",
                          seed: int | None = 0, batch_size: int = 256,
                          return_scales: bool = False):
    """Spike-norm threshold balancing (Sengupta et al. 2019, Algorithm 1).

    For each IF layer ``L`` in topological order: simulate the reference IF
    network (:mod:`biosnn.codings.rate.reference`) on the calibration data for
    ``T`` steps with the thresholds already fixed for the earlier layers, and
    set ``theta_L`` to the maximum over steps, samples and units of the
    synaptic input ``I_L(t) = W_L s_pre(t) + b_L'`` (for add layers the summed
    input of all branches); then freeze it and go on.  A layer whose input is
    never positive keeps threshold 1.  Max-pool gates and residual branches
    without ReLU have no threshold.

    Sengupta et al. use bias-free networks.  To keep biases consistent, the
    rate of layer ``L`` represents ``a_L / lambda_L`` with the cumulative
    scale ``lambda_L = mu_L * theta_L``, ``mu_L`` the largest scale among the
    layers whose spikes reach ``L`` (the input has scale 1), and the graph to
    simulate with these thresholds is ``normalize(graph, scales, thresholds)``
    (:func:`normalize`): its biases are divided by ``mu_L``; for a bias-free
    chain it equals ``graph``.  :func:`calibrate` does this.

    Parameters
    ----------
    graph : LayerGraph
        Traced network with its original (un-normalised) weights.
    x_calib : array_like
        ``(N,) + graph.input_shape`` calibration inputs.
    T : int
        Time steps per sample.
    input_mode : {"analog", "poisson"}
        Input as in :func:`~biosnn.codings.rate.reference.simulate_rate`.
    seed : int, optional
        Seed of the Poisson input.
    batch_size : int
        Samples simulated together.
    return_scales : bool
        Also return the scales ``lambda_L``.

    Returns
    -------
    thresholds : dict of str to float
        ``theta_L`` per IF layer, in the units of the layer's synaptic input.
    scales : dict of str to float
        Only with ``return_scales=True``: ``lambda_L`` per non-virtual layer.
    """
    from biosnn.codings.rate import reference as ref

    if input_mode not in ("analog", "poisson"):
        raise ConversionError(f"spike-norm input_mode must be 'analog' or 'poisson', got {input_mode!r}")
    ref._check_args(graph, T, input_mode, "spikes")
    _check_calib(graph, x_calib)
    T = int(T)
    roles = snn_roles(graph)
    ancestors: dict[str, set[str]] = {}
    for layer in graph.layers:
        anc = set(layer.inputs)
        for src in layer.inputs:
            anc |= ancestors[src]
        ancestors[layer.name] = anc
    if input_mode == "poisson" and seed is None:
        seed = int(np.random.SeedSequence().entropy % (2 ** 63))
    placeholder = {name: 1.0 for name in graph.names}
    lam: dict[str, float] = {}
    thresholds: dict[str, float] = {}
    for layer in graph.layers:
        name = layer.name
        role = roles[name]
        if role == "input":
            lam[name] = 1.0
        elif role == "maxpool":
            lam[name] = lam[layer.inputs[0]]
        if role != "if":
            continue
        mu = max(lam[src] for src in _spiking_sources(graph, name, roles))
        work = normalize(graph, {**placeholder, **lam, name: mu}, thresholds)
        net = ref._Net(work, thresholds)
        keep = ancestors[name] | {name}
        peak = -np.inf
        for start in range(0, len(x_calib), int(batch_size)):
            xb = x_calib[start:start + int(batch_size)]
            inp, _ = ref._input_source(work, xb, T, input_mode, seed, start)
            *_, m = ref._run(net, inp, T, "spikes", False, layers=keep, probe=name)
            peak = max(peak, m)
        theta = float(peak) if peak > 0 else 1.0
        thresholds[name] = theta
        lam[name] = mu * theta
    return (thresholds, lam) if return_scales else thresholds


def calibrate(graph: LayerGraph, x_calib, normalization: str = "percentile", percentile: float = 99.9,
              T: int | None = None, input_mode: str = "analog", seed: int | None = 0,
              batch_size: int = 256) -> tuple[LayerGraph, dict[str, float]]:
    """Prepare a traced graph for rate-coded simulation.

    Parameters
    ----------
    graph : LayerGraph
        Traced network.
    x_calib : array_like
        ``(N,) + graph.input_shape`` calibration inputs.
    normalization : {"percentile", "max", "spike-norm"}
        Weight normalisation (thresholds 1) or spike-norm threshold balancing
        (weights unchanged).
    percentile : float
        For ``"percentile"``.
    T : int, optional
        Time steps; required for ``"spike-norm"``.
    input_mode : {"analog", "poisson"}
        Input coding used by spike-norm's simulation.
    seed : int, optional
        Seed of spike-norm's Poisson input.
    batch_size : int
        Samples evaluated together.

    Returns
    -------
    graph : LayerGraph
        The graph to simulate.
    thresholds : dict of str to float
        ``theta_L`` per IF layer (all 1 after weight normalisation; the
        spike-norm thresholds otherwise, with the graph's biases and residual
        coefficients adapted as described in :func:`spike_norm_thresholds`).
    """
    if normalization in ("percentile", "max"):
        scales = activation_scales(graph, x_calib, method=normalization, percentile=percentile,
                                   batch_size=batch_size)
        out = normalize(graph, scales)
        roles = snn_roles(out)
        return out, {n: 1.0 for n, r in roles.items() if r == "if"}
    if normalization == "spike-norm":
        if T is None:
            raise ConversionError("normalization='spike-norm' needs the number of time steps T")
        clipped = [layer.name for layer in graph.layers if layer.ceiling is not None]
        if clipped:
            raise ConversionError(f"layers {clipped} have clipped ReLUs (ReLU6, Hardtanh, clamp, QCFS); spike-norm "
                                  "sets thresholds from simulated inputs and would not clip them. Fix: use "
                                  "normalization='percentile' or 'max' (the ceiling becomes the layer's scale)")
        thresholds, scales = spike_norm_thresholds(graph, x_calib, T, input_mode=input_mode, seed=seed,
                                                   batch_size=batch_size, return_scales=True)
        return normalize(graph, scales, thresholds), thresholds
    raise ConversionError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
