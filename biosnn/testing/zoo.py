"""A zoo of common PyTorch architectures, written as people write them, for conversion tests.

Every builder takes ``width`` (channels of the first stage; the papers' widths
are the defaults of :data:`FULL_WIDTH`) and ``in_channels``, and returns an
``nn.Module`` for ``(N, in_channels, 32, 32)`` images with ``classes`` outputs
(:data:`INPUT_SIZE`: LeNet-5 and the PyTorch MNIST example take 28x28).  The
idioms are the original ones: ``F.avg_pool2d(out, out.size()[3])`` heads,
``out += identity`` with in-place ReLUs, ``torch.cat`` dense blocks, input
normalisation and a ``log_softmax`` inside ``forward``.

The models are exactly convertible by :func:`biosnn.frontends.torch_trace.trace`;
rate, TSC and TPC convert every one, TDSNN and STC convert chains of layers
(:data:`CHAINS`, no residual or dense connections; STC no max pooling either,
:data:`STC_CHAINS`), see :func:`codings_for`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ZOO", "FULL_WIDTH", "INPUT_SIZE", "CHAINS", "build", "lenet5", "mnist_example",
           "vgg", "resnet20", "resnet18", "densenet", "mobilenet", "randomize_batchnorm", "ann_classes"]


def lenet5(width: int = 6, in_channels: int = 1, classes: int = 10) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) with ReLU and average pooling, for 28x28 inputs (padded first conv)."""
    w1, w2 = width, width * 16 // 6
    return nn.Sequential(
        nn.Conv2d(in_channels, w1, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2),
        nn.Conv2d(w1, w2, 5), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(w2 * 5 * 5, 120 * width // 6), nn.ReLU(),
        nn.Linear(120 * width // 6, 84 * width // 6), nn.ReLU(),
        nn.Linear(84 * width // 6, classes))


class MNISTExample(nn.Module):
    """PyTorch's examples/mnist ``Net`` (normalisation moved into ``forward``, log-softmax output)."""

    def __init__(self, width: int = 32, in_channels: int = 1, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(2 * width * 12 * 12, 4 * width)
        self.fc2 = nn.Linear(4 * width, classes)

    def forward(self, x):
        x = (x - 0.1307) / 0.3081
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


def mnist_example(width: int = 32, in_channels: int = 1, classes: int = 10) -> nn.Module:
    return MNISTExample(width, in_channels, classes)


_VGG = {11: [1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"],
        16: [1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M"]}


class VGG(nn.Module):
    """CIFAR-style VGG with BatchNorm (kuangliu/pytorch-cifar layout; width = channels of the first stage)."""

    def __init__(self, depth: int = 11, width: int = 64, in_channels: int = 1, classes: int = 10):
        super().__init__()
        layers, c = [], in_channels
        for v in _VGG[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c, v * width, kernel_size=3, padding=1), nn.BatchNorm2d(v * width),
                           nn.ReLU(inplace=True)]
                c = v * width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, classes)

    def forward(self, x):
        out = self.features(x)
        out = out.view(out.size(0), -1)
        return self.classifier(out)


def vgg(depth: int = 11, width: int = 64, in_channels: int = 1, classes: int = 10) -> nn.Module:
    return VGG(depth, width, in_channels, classes)


class _AkamasterBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:   # option B (option A pads a strided slice)
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        out = F.relu(out)
        return out


class ResNet20(nn.Module):
    """CIFAR ResNet-20 as in akamaster/pytorch_resnet_cifar10 (shortcut option B), ``F.avg_pool2d`` head."""

    def __init__(self, width: int = 16, in_channels: int = 1, classes: int = 10, blocks: int = 3):
        super().__init__()
        self.in_planes = width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(width, blocks, 1)
        self.layer2 = self._make_layer(2 * width, blocks, 2)
        self.layer3 = self._make_layer(4 * width, blocks, 2)
        self.linear = nn.Linear(4 * width, classes)

    def _make_layer(self, planes, blocks, stride):
        layers = []
        for s in [stride] + [1] * (blocks - 1):
            layers.append(_AkamasterBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        return self.linear(out)


def resnet20(width: int = 16, in_channels: int = 1, classes: int = 10) -> nn.Module:
    return ResNet20(width, in_channels, classes)


class _TorchvisionBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class ResNet18(nn.Module):
    """torchvision's ResNet-18 layout (7x7/2 stem, 3x3/2 max pool, adaptive average pool) at 32x32."""

    def __init__(self, width: int = 64, in_channels: int = 1, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        layers, c = [], width
        for i, planes in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(_TorchvisionBlock(c, planes, stride), _TorchvisionBlock(planes, planes)))
            c = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def resnet18(width: int = 64, in_channels: int = 1, classes: int = 10) -> nn.Module:
    return ResNet18(width, in_channels, classes)


class _DenseLayer(nn.Module):
    def __init__(self, c_in, growth):
        super().__init__()
        self.conv = nn.Conv2d(c_in, growth, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(growth)

    def forward(self, x):
        return torch.cat([x, F.relu(self.bn(self.conv(x)))], 1)


class DenseNet(nn.Module):
    """A DenseNet-style network: dense blocks (``torch.cat`` of all earlier maps, post-activation
    conv-BN-ReLU layers) with 1x1-conv + average-pool transitions and a global average pool head."""

    def __init__(self, width: int = 12, in_channels: int = 1, classes: int = 10, layers: int = 3):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, 2 * width, 3, padding=1)
        blocks, c = [], 2 * width
        for b in range(3):
            dense = []
            for _ in range(layers):
                dense.append(_DenseLayer(c, width))
                c += width
            blocks.append(nn.Sequential(*dense))
            if b < 2:
                blocks.append(nn.Sequential(nn.Conv2d(c, c // 2, 1), nn.ReLU(), nn.AvgPool2d(2)))
                c //= 2
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        x = self.features(F.relu(self.stem(x)))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(x.flatten(1))


def densenet(width: int = 12, in_channels: int = 1, classes: int = 10) -> nn.Module:
    return DenseNet(width, in_channels, classes)


def _dw(c_in, c_out, stride):
    return nn.Sequential(
        nn.Conv2d(c_in, c_in, 3, stride, 1, groups=c_in, bias=False), nn.BatchNorm2d(c_in), nn.ReLU(inplace=True),
        nn.Conv2d(c_in, c_out, 1, 1, 0, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class MobileNet(nn.Module):
    """MobileNet(v1)-style: depthwise-separable blocks (3x3 depthwise + 1x1 pointwise, BN, ReLU)."""

    def __init__(self, width: int = 32, in_channels: int = 1, classes: int = 10):
        super().__init__()
        w = width
        self.model = nn.Sequential(
            nn.Sequential(nn.Conv2d(in_channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)),
            _dw(w, 2 * w, 1), _dw(2 * w, 4 * w, 2), _dw(4 * w, 4 * w, 1), _dw(4 * w, 8 * w, 2),
            _dw(8 * w, 8 * w, 1), _dw(8 * w, 16 * w, 2), _dw(16 * w, 16 * w, 1),
            nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(16 * w, classes)

    def forward(self, x):
        x = self.model(x)
        x = x.view(-1, self.fc.in_features)
        return self.fc(x)


def mobilenet(width: int = 32, in_channels: int = 1, classes: int = 10) -> nn.Module:
    return MobileNet(width, in_channels, classes)


#: name -> builder
ZOO = {"lenet5": lenet5, "mnist_example": mnist_example, "vgg11": lambda **k: vgg(11, **k),
       "vgg16": lambda **k: vgg(16, **k), "resnet20": resnet20, "resnet18": resnet18,
       "densenet": densenet, "mobilenet": mobilenet}

#: the papers' widths (channels of the first stage)
FULL_WIDTH = {"lenet5": 6, "mnist_example": 32, "vgg11": 64, "vgg16": 64, "resnet20": 16,
              "resnet18": 64, "densenet": 12, "mobilenet": 32}

#: input height = width of each model
INPUT_SIZE = {name: 28 if name in ("lenet5", "mnist_example") else 32 for name in ZOO}

#: models that are chains of layers (no residual or dense connections)
CHAINS = ("lenet5", "mnist_example", "vgg11", "vgg16", "mobilenet")

#: chains without max pooling (the stc coding has no max pooling)
STC_CHAINS = ("lenet5", "mobilenet")


def build(name: str, width: int | None = None, in_channels: int = 1, classes: int = 10,
          seed: int = 0) -> nn.Module:
    """Model ``name`` of :data:`ZOO` with seeded random weights (BatchNorm statistics randomised too)."""
    torch.manual_seed(seed)
    model = ZOO[name](width=width or FULL_WIDTH[name], in_channels=in_channels, classes=classes)
    return randomize_batchnorm(model, seed)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine parameters (seeded), eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
                m.bias.copy_(torch.rand(n, generator=g) * 0.2 - 0.05)
    return model.eval()


#: coding -> the codings' default parameters used by :func:`evaluate`
CODING_PARAMS = {"rate": dict(T=64), "tsc": dict(T=32), "tpc": dict(bits=6), "tdsnn": dict(L=5.0),
                 "stc": dict(T=8)}


def codings_for(name: str) -> tuple[str, ...]:
    """The codings that convert zoo model ``name`` (TDSNN and STC convert chains only, STC without max pooling)."""
    return ("rate", "tsc", "tpc", "tdsnn", "stc") if name in STC_CHAINS else \
        ("rate", "tsc", "tpc", "tdsnn") if name in CHAINS else ("rate", "tsc", "tpc")


def ann_classes(model: nn.Module, x) -> "np.ndarray":
    """Classes the ANN predicts for ``x``, computed in float64 like the SNN references.

    A float32 forward pass can put an activation on the other side of a quantisation step
    (TPC, QCFS) than the float64 references do: on a DenseNet, 2 of 200 images changed class
    that way, which read as a TPC network disagreeing with its exact reference.  The model is
    copied, not converted in place.
    """
    import copy

    import numpy as np

    with torch.no_grad():
        out = copy.deepcopy(model).double()(torch.as_tensor(np.asarray(x), dtype=torch.float64))
    return out.reshape(len(out), -1).argmax(1).numpy()


def evaluate(model: nn.Module, coding: str, x_calib, x_eval, input_shape: tuple, prepared: nn.Module | None = None,
             **params) -> dict:
    """Prepare, convert and simulate (exact numpy/torch reference) one model with one coding.

    Parameters
    ----------
    model : nn.Module
        A trained (or random) ANN.
    coding : str
        One of ``rate``, ``tsc``, ``tpc``, ``tdsnn``, ``stc``.
    x_calib, x_eval : array_like
        Calibration inputs and the inputs to compare on, ``(N,) + input_shape``.
    input_shape : tuple
    prepared : nn.Module, optional
        The model ``biosnn.prepare`` returned (e.g. fine-tuned); by default it is prepared
        here (STC with the calibration data, TPC calibrated).
    **params
        Coding parameters (default :data:`CODING_PARAMS`); ``levels`` for rate prepares a QCFS model.

    Returns
    -------
    dict
        ``agreement`` (fraction of ``x_eval`` where the SNN reference predicts the prepared
        ANN's class), ``ann`` / ``snn`` predictions, ``spikes`` and ``synops`` (mean per sample,
        reference), ``snn`` (the converted network) and ``prepared`` (the prepared ANN).
    """
    import numpy as np

    import biosnn
    from biosnn.codings import tpc

    params = {**CODING_PARAMS[coding], **params}
    xc = torch.as_tensor(np.asarray(x_calib), dtype=torch.float32)
    xe = torch.as_tensor(np.asarray(x_eval), dtype=torch.float32)
    prep_keys = {"tpc": ("bits",), "tdsnn": ("L",), "stc": ("T",), "rate": ("levels",)}.get(coding, ())
    prep_params = {k: v for k, v in params.items() if k in prep_keys}
    if prepared is None:
        extra = {"calibration": xc} if coding == "stc" else {}
        prepared = biosnn.prepare(model, coding, **prep_params, **extra).eval()
        if coding == "tpc":
            tpc.calibrate(prepared, xc)
    prepared = prepared.eval()
    params = {k: v for k, v in params.items() if k not in prep_params or coding == "rate"}
    ann = ann_classes(prepared, xe)
    snn = biosnn.convert(prepared, coding, calibration=xc, input_shape=input_shape, **params)
    ref = snn.reference(xe.numpy())
    preds, spikes, synops = _reference_totals(ref, len(xe))
    return dict(agreement=float(np.mean(preds == ann)), ann=ann, snn_predictions=preds,
                spikes=float(np.mean(spikes)), synops=None if synops is None else float(np.mean(synops)),
                snn=snn, prepared=prepared)


def _reference_totals(ref, n: int):
    """Predictions, spikes per sample and synaptic operations per sample (or None) of a coding's reference."""
    import numpy as np

    def per_sample(values):
        return sum(np.asarray(v, dtype=float).reshape(n, -1).sum(1) for v in values)

    if isinstance(ref, dict):                                   # STC
        return np.asarray(ref["predictions"]), per_sample(ref["layer_spikes"].values()), None
    if hasattr(ref, "counts"):                                  # rate
        return ref.predictions, per_sample(ref.events.values()), None     # negative spikes count too
    if hasattr(ref, "ops") and hasattr(ref, "saturated"):       # TDSNN: every neuron fires once
        syn = ref.ops.get("synaptic_additions")
        return ref.predictions, per_sample((s >= 0) for s in ref.steps.values()), syn
    syn = getattr(ref, "layer_synops", None) or getattr(ref, "layer_events", None)   # TPC / TSC
    return ref.predictions, per_sample(ref.layer_spikes.values()), per_sample(syn.values()) if syn else None
