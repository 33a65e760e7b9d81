"""A ReStoCNet-style binary convolutional SNN: STDP-trained kernels, spiking features, backprop readout.

Srinivasan & Roy (2019): convolution layers with *binary* kernels trained
greedily, layer after layer, by stochastic STDP
(:mod:`biosnn.learning.stochastic_stdp`); their spiking, pooled activations
feed fully connected layers trained by backpropagation (here: torch, on the
pooled spike rates).  For MNIST the paper's network is 36C3-2P-128FC-10FC.

Feature extraction is a rate-coded spiking network: each convolution layer's
binary kernel, mapped to two levels (``levels``, default ``{-1, +1}``) and
scaled by one factor per layer (data-based normalisation), drives IF neurons
with reset by subtraction for ``T`` steps; ``p x p`` average pooling of their
spikes gives the features (spikes per step).  It is built with the package's
rate conversion (:func:`biosnn.convert`), so the Brian2 network and its exact
numpy reference (:func:`biosnn.codings.rate.reference.simulate_rate`) are the
same definition; bulk features for large data sets come from the reference
(:meth:`RestocFeatures.reference`) and a Brian2 run checks it on a subset
(:meth:`RestocFeatures.brian2`).

Kernel memory: a binary kernel needs 1 bit per weight against 32 bits for a
full-precision kernel of the same shape (:func:`kernel_memory`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from biosnn.errors import SpecError
from biosnn.learning.stochastic_stdp import KernelTraining, extract_patches, train_kernels

__all__ = ["ConvLayer", "RestocFeatures", "RestocResult", "binary_conv_model", "train_conv_layers",
           "readout_model", "kernel_memory", "fit_restoc", "parse_architecture", "compare_features"]


@dataclass(frozen=True)
class ConvLayer:
    """One binary convolution layer ``<maps>C<kernel_size>-<pool>P``.

    Attributes
    ----------
    maps : int
        Output maps (kernels).
    kernel_size : int
        Square kernel side ``k``.
    pool : int
        Side of the average pooling after it (1: none).
    """

    maps: int
    kernel_size: int = 3
    pool: int = 2

    def __post_init__(self):
        for name in ("maps", "kernel_size", "pool"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise SpecError(f"ConvLayer.{name} must be a positive integer, got {value!r}",
                                fix="e.g. ConvLayer(36, 3, 2) for 36C3-2P")


def binary_conv_model(kernels: list[np.ndarray], layers: list[ConvLayer], in_channels: int,
                      levels: tuple[float, float] = (-1.0, 1.0), w_max: float = 1.0):
    """The torch model (conv, ReLU, avg pool per layer) whose converted SNN extracts the features.

    Parameters
    ----------
    kernels : list of numpy.ndarray
        Per layer, ``(maps, C*k*k)`` binary weights (``w_max`` = the upper level).
    layers : list of ConvLayer
        The layers' shapes.
    in_channels : int
        Channels of the images.
    levels : (float, float)
        Values of the low and high binary weight in the feature extractor.
    w_max : float
        The high binary value in ``kernels``.

    Returns
    -------
    torch.nn.Sequential
    """
    import torch

    if len(kernels) != len(layers):
        raise SpecError(f"{len(kernels)} kernel arrays for {len(layers)} layers",
                        fix="give one kernel array per ConvLayer")
    mods, c = [], int(in_channels)
    for kern, layer in zip(kernels, layers):
        kern = np.asarray(kern, dtype=np.float64)
        if kern.shape != (layer.maps, c * layer.kernel_size ** 2):
            raise SpecError(f"kernels of shape {kern.shape} do not fit {layer} on {c} channels",
                            fix=f"give ({layer.maps}, {c * layer.kernel_size ** 2}) weights")
        conv = torch.nn.Conv2d(c, layer.maps, layer.kernel_size, bias=False)
        value = np.where(kern >= w_max, levels[1], levels[0]).reshape(conv.weight.shape)
        with torch.no_grad():
            conv.weight.copy_(torch.as_tensor(value, dtype=torch.float32))
        mods += [conv, torch.nn.ReLU()]
        if layer.pool > 1:
            mods.append(torch.nn.AvgPool2d(layer.pool))
        c = layer.maps
    return torch.nn.Sequential(*mods).eval()


@dataclass
class RestocFeatures:
    """The spiking feature extractor of trained binary conv layers (a converted rate SNN).

    Attributes
    ----------
    snn : biosnn.conversion.snn.SNN
        The Brian2-runnable network (output: pooled potential of the last layer).
    T : int
        Time steps per image.
    shape : tuple of int
        ``(maps, H, W)`` of the features.
    """

    snn: object
    T: int
    shape: tuple = field(default=())

    @classmethod
    def build(cls, kernels, layers, calibration, *, T: int = 32, levels=(-1.0, 1.0), w_max: float = 1.0,
              percentile: float = 99.9, name: str = "restoc_features") -> "RestocFeatures":
        """Convert the binary conv layers into a rate-coded SNN (analog input, IF neurons).

        Parameters
        ----------
        kernels, layers, levels, w_max
            As for :func:`binary_conv_model`.
        calibration : array_like
            ``(N, C, H, W)`` images for the per-layer scale (threshold balancing).
        T : int
            Time steps per image.
        percentile : float
            Activation percentile that maps to one spike per step.
        name : str
            Network name.
        """
        import torch

        import biosnn
        x = np.asarray(calibration, dtype=np.float32)
        if x.ndim != 4:
            raise SpecError(f"calibration images must be (N, C, H, W), got {x.shape}", fix="add the channel axis")
        model = binary_conv_model(kernels, layers, x.shape[1], levels=levels, w_max=w_max)
        snn = biosnn.convert(model, "rate", calibration=x, input_shape=x.shape[1:], T=T,
                             normalization="percentile", percentile=percentile, readout="potential",
                             name=name)
        with torch.no_grad():
            out = model(torch.as_tensor(x[:1])).shape[1:]
        return cls(snn=snn, T=int(T), shape=tuple(out))

    @property
    def n_features(self) -> int:
        return int(np.prod(self.shape))

    def reference(self, x, batch_size: int = 256) -> np.ndarray:
        """Pooled spike rates (spikes per step) from the exact reference, ``(N, n_features)``.

        This is :func:`biosnn.codings.rate.reference.simulate_rate` (analog
        input, potential readout: ``v_out(T) / T`` of the last layer) with two
        savings that change no bit: the first layer's input current is
        constant (analog input), so it is computed once per batch instead of
        in every step; and an average-pooling output layer integrates the
        window means of 0/1 spikes, all exact multiples of ``1/pool**2``, so
        ``sum_t pool(s_t) = pool(sum_t s_t)`` exactly and it is applied once to
        the spike counts.  With one convolution layer, neurons with equal input
        currents are stepped once (:meth:`_if_counts`).  The tests check
        equality with ``simulate_rate``.
        """
        import torch

        from biosnn.codings.rate.reference import _Net
        graph = self.snn.graph
        net = _Net(graph, self.snn.thresholds)
        order = list(graph.names[1:])
        out_layer = graph[graph.output]
        pooled_out = out_layer.op == "avgpool2d" and len(order) > 1 and out_layer.inputs[0] == order[-2]
        stepped = order[:-1] if pooled_out else order
        xs = np.asarray(x, dtype=np.float64).reshape(len(x), -1) / graph.input_scale
        out = []
        for start in range(0, len(xs), int(batch_size)):
            s_in = torch.from_numpy(np.ascontiguousarray(xs[start:start + int(batch_size)]))
            first = net.current(order[0], {"input": s_in})
            if pooled_out and len(order) == 2:
                count = self._if_counts(first, net.theta[order[0]])
                out.append((net.current(graph.output, {order[0]: count}) / self.T).numpy())
                continue
            v = {n: torch.zeros(len(s_in), graph[n].size, dtype=torch.float64) for n in order}
            count = torch.zeros(len(s_in), graph[order[-2]].size, dtype=torch.float64) if pooled_out else None
            for _ in range(self.T):
                s = {"input": s_in}
                for name in stepped:
                    v[name] += first if name == order[0] else net.current(name, s)
                    if name == graph.output:
                        continue
                    s[name] = (v[name] >= net.theta[name]).to(torch.float64)
                    v[name] -= net.theta[name] * s[name]
                if pooled_out:
                    count += s[order[-2]]
            if pooled_out:
                v[graph.output] = net.current(graph.output, {order[-2]: count})
            out.append((v[graph.output] / self.T).numpy())
        return np.concatenate(out)

    def _if_counts(self, current, theta: float):
        """Spike counts after ``T`` steps of IF neurons with constant input ``current`` (reference ops).

        Neurons with the same input value take the same steps bit for bit,
        so each distinct value (binary kernels on quantised pixels give few)
        is stepped once and the counts are scattered back.
        """
        import torch
        values, inverse = torch.unique(current, return_inverse=True)
        v = torch.zeros_like(values)
        count = torch.zeros_like(values)
        for _ in range(self.T):
            v += values
            s = (v >= theta).to(torch.float64)
            v -= theta * s
            count += s
        return count[inverse]

    def simulate_rate(self, x, batch_size: int = 256) -> np.ndarray:
        """The same features from :func:`biosnn.codings.rate.reference.simulate_rate` itself (slower)."""
        from biosnn.codings.rate.reference import simulate_rate
        return simulate_rate(self.snn.graph, np.asarray(x, dtype=np.float64), self.T, self.snn.thresholds,
                             input_mode="analog", readout="potential", batch_size=batch_size).scores

    def brian2(self, x, backend: str = "runtime", batch_size: int = 32, **options) -> np.ndarray:
        """The same features simulated by Brian2 (``backend``), ``(N, n_features)``."""
        return self.snn.run(np.asarray(x, dtype=np.float64), backend=backend, batch_size=batch_size,
                            progress=False, **options).scores


def compare_features(brian2, reference, features: RestocFeatures) -> dict:
    """Compare Brian2 features with the reference's.

    The two sum a neuron's synaptic inputs in different orders, so a
    potential that reaches the threshold *exactly* in one (frequent with
    binary kernels and quantised pixels) can fall a rounding error short in
    the other and spike one step later; a pooled feature then differs by one
    spike.  Returns ``samples``, ``equal_fraction`` (of all features),
    ``max_abs_diff`` (spikes per step) and ``max_spike_diff`` (in spikes of
    one pooled unit, i.e. ``max_abs_diff * T * pool**2``).
    """
    b2, ref = np.asarray(brian2, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    diff = np.abs(b2 - ref)
    out = features.snn.graph[features.snn.graph.output]
    pool = int(np.prod(out.params["kernel_size"])) if out.op == "avgpool2d" else 1
    return {"samples": len(ref), "equal_fraction": float(np.mean(diff == 0)),
            "max_abs_diff": float(diff.max()), "max_spike_diff": float(np.round(diff.max() * features.T * pool, 6))}


def train_conv_layers(images, layers: list[ConvLayer], *, patches_per_layer: int = 10000, steps: int = 20,
                      rule: dict | None = None, neuron: dict | None = None, T: int = 32,
                      levels=(-1.0, 1.0), min_mean: float = 0.05, max_mean: float = 1.0, backend: str = "runtime",
                      seed: int = 0, **backend_options) -> tuple[list[np.ndarray], list[KernelTraining]]:
    """Train binary conv layers greedily, layer by layer, with stochastic STDP.

    Layer 1 learns from random patches of ``images``; layer ``L > 1`` from
    patches of the pooled spike rates of layers ``1..L-1`` (already trained,
    frozen), computed by the reference spiking feature extractor.

    Parameters
    ----------
    images : array_like
        ``(N, C, H, W)`` training images in ``[0, 1]``.
    layers : list of ConvLayer
    patches_per_layer : int
        Patch presentations per layer.
    steps : int
        Time steps per presentation.
    rule, neuron : dict, optional
        Constants of the rule and the patch network (see
        :func:`~biosnn.learning.stochastic_stdp.patch_network_spec`).
    T, levels
        Feature extractor settings used for the inputs of deeper layers.
    min_mean, max_mean : float
        Range of the mean intensity of the patches presented.
    backend : str
        Brian2 backend of the patch network.
    seed : int
        Seed of patches, start weights and Brian2.
    **backend_options
        For :func:`biosnn.backends.get_backend`.

    Returns
    -------
    kernels : list of numpy.ndarray
        ``(maps, C*k*k)`` binary weights per layer.
    runs : list of KernelTraining
        The training runs.
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4:
        raise SpecError(f"images must be (N, C, H, W), got {x.shape}", fix="add the channel axis")
    kernels, runs = [], []
    inputs = x
    w_max = float((rule or {}).get("w_max", 1.0))
    for depth, layer in enumerate(layers):
        if depth > 0:
            feats = RestocFeatures.build(kernels, layers[:depth], x[:min(len(x), 500)], T=T, levels=levels,
                                         w_max=w_max)
            inputs = np.clip(feats.reference(x).reshape((len(x),) + feats.shape), 0.0, 1.0)
        patches = extract_patches(inputs, layer.kernel_size, patches_per_layer, min_mean=min_mean,
                                  max_mean=max_mean, seed=seed + depth)
        run = train_kernels(patches, layer.maps, steps=steps, rule=rule, neuron=neuron, backend=backend,
                            seed=seed + depth, **backend_options)
        kernels.append(run.kernels)
        runs.append(run)
    return kernels, runs


def readout_model(n_features: int, hidden: int = 128, n_classes: int = 10, seed: int = 0):
    """The fully connected readout ``<hidden>FC-<n_classes>FC`` (ReLU), trained by backprop on features."""
    import torch
    torch.manual_seed(int(seed))
    layers = [torch.nn.Linear(int(n_features), int(hidden)), torch.nn.ReLU(),
              torch.nn.Linear(int(hidden), int(n_classes))] if hidden else \
        [torch.nn.Linear(int(n_features), int(n_classes))]
    return torch.nn.Sequential(*layers)


def kernel_memory(layers: list[ConvLayer], in_channels: int, full_precision_bits: int = 32) -> dict:
    """Kernel memory of the binary layers against full-precision kernels of the same shapes.

    Returns
    -------
    dict
        ``weights`` (count), ``binary_bits`` (1 per weight), ``full_bits``
        (``full_precision_bits`` per weight) and ``compression`` (their ratio).
    """
    n, c = 0, int(in_channels)
    for layer in layers:
        n += layer.maps * c * layer.kernel_size ** 2
        c = layer.maps
    return {"weights": n, "binary_bits": n, "full_bits": n * int(full_precision_bits),
            "compression": float(full_precision_bits)}


def parse_architecture(text: str) -> list[ConvLayer]:
    """Conv layers from the paper's notation, e.g. ``"36C3-2P"`` or ``"32C3-2P-64C3-2P"``.

    Fully connected parts (``128FC``) are ignored here (they are the readout).
    """
    import re
    layers: list[ConvLayer] = []
    for part in str(text).split("-"):
        conv, pool = re.fullmatch(r"(\d+)C(\d+)", part), re.fullmatch(r"(\d+)P", part)
        if conv:
            layers.append(ConvLayer(int(conv.group(1)), int(conv.group(2)), 1))
        elif pool and layers:
            layers[-1] = ConvLayer(layers[-1].maps, layers[-1].kernel_size, int(pool.group(1)))
        elif not re.fullmatch(r"\d+FC", part):
            raise SpecError(f"cannot read '{part}' in architecture '{text}'",
                            fix="write e.g. 36C3-2P-128FC-10FC (conv, pooling, fully connected)")
    if not layers:
        raise SpecError(f"architecture '{text}' has no convolution layer", fix="write e.g. 36C3-2P")
    return layers


@dataclass
class RestocResult:
    """Result of :func:`fit_restoc`.

    Attributes
    ----------
    kernels : list of numpy.ndarray
        Learned binary kernels per layer, ``(maps, C*k*k)``.
    runs : list of KernelTraining
        The STDP runs.
    features : RestocFeatures
        The spiking feature extractor.
    readout : torch.nn.Module
        The trained fully connected readout.
    test_accuracy : float
        Readout accuracy on the test features (reference features).
    memory : dict
        :func:`kernel_memory`.
    brian2_check : dict
        :func:`compare_features` of Brian2's features against the
        reference's on the first test images.
    times : dict
        Wall-clock seconds of the stages.
    """

    kernels: list
    runs: list
    features: RestocFeatures
    readout: object
    test_accuracy: float
    memory: dict
    brian2_check: dict
    times: dict


def fit_restoc(x_kernel, x_train, y_train, x_test, y_test, layers: list[ConvLayer], *,
               patches_per_layer: int = 10000, steps: int = 20, rule: dict | None = None,
               neuron: dict | None = None, min_mean: float = 0.05, max_mean: float = 1.0, T: int = 32,
               levels=(-1.0, 1.0), hidden: int = 128, epochs: int = 10, lr: float = 1e-3,
               check_samples: int = 4, stdp_backend: str = "runtime", feature_backend: str = "runtime",
               seed: int = 0, **backend_options) -> RestocResult:
    """The whole ReStoCNet pipeline: STDP kernels, spiking features, backprop readout, Brian2 check.

    Parameters
    ----------
    x_kernel : array_like
        ``(N, C, H, W)`` images the kernels learn from (the paper: 10 000 MNIST digits).
    x_train, y_train, x_test, y_test : array_like
        Data for the readout (features from the exact reference).
    layers : list of ConvLayer
        Convolution layers (see :func:`parse_architecture`).
    patches_per_layer, steps, rule, neuron, min_mean, max_mean
        Kernel training (:func:`train_conv_layers`).
    T, levels
        Feature extractor (:meth:`RestocFeatures.build`).
    hidden : int
        Hidden units of the readout (0: a single linear layer).
    epochs, lr : int, float
        Adam training of the readout (:func:`biosnn.datasets.train_classifier`).
    check_samples : int
        Test images whose features Brian2 computes (``feature_backend``) and
        that are compared with the reference (0: no check).
    stdp_backend, feature_backend : str
        Brian2 backends of the patch network and of the feature check.
    seed : int
        Seed of everything random.
    **backend_options
        For :func:`biosnn.backends.get_backend`.

    Returns
    -------
    RestocResult
    """
    import time

    from biosnn.datasets import accuracy, train_classifier
    times = {}
    t0 = time.perf_counter()
    kernels, runs = train_conv_layers(x_kernel, layers, patches_per_layer=patches_per_layer, steps=steps,
                                      rule=rule, neuron=neuron, T=T, levels=levels, min_mean=min_mean,
                                      max_mean=max_mean, backend=stdp_backend, seed=seed, **backend_options)
    times["stdp_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    x_train = np.asarray(x_train, dtype=np.float32)
    w_max = float((rule or {}).get("w_max", 1.0))
    feats = RestocFeatures.build(kernels, layers, x_train[:1000], T=T, levels=levels, w_max=w_max)
    f_train, f_test = feats.reference(x_train), feats.reference(x_test)
    times["features_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = train_classifier(readout_model(feats.n_features, hidden, int(np.max(y_train)) + 1, seed=seed),
                             f_train, y_train, epochs=epochs, lr=lr, seed=seed)
    acc = accuracy(model, f_test, y_test)
    times["readout_s"] = time.perf_counter() - t0
    check = {"samples": 0}
    if check_samples:
        t0 = time.perf_counter()
        n = min(int(check_samples), len(f_test))
        b2 = feats.brian2(np.asarray(x_test)[:n], backend=feature_backend, batch_size=n, **backend_options)
        check = compare_features(b2, f_test[:n], feats)
        times["brian2_check_s"] = time.perf_counter() - t0
    return RestocResult(kernels=kernels, runs=runs, features=feats, readout=model, test_accuracy=acc,
                        memory=kernel_memory(layers, np.asarray(x_kernel).shape[1]), brian2_check=check,
                        times=times)
