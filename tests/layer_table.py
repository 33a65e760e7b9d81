"""Tiny models, one per row of README's supported-layer table (used by tests/test_layer_table.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CODINGS = ("rate", "tsc", "tpc", "tdsnn", "stc")


def _seq(*mid, head=None):
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), *mid, nn.Flatten(),
                         head or nn.Linear(3 * 16, 4))


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1), nn.Linear(3 * 64, 4)

    def forward(self, x):
        h = F.relu(self.a(x))
        return self.fc(torch.flatten(F.relu(h + self.b(h)), 1))


class _Cat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 2, 3, padding=1), nn.Linear(5 * 64, 4)

    def forward(self, x):
        h = F.relu(self.a(x))
        return self.fc(torch.cat([h, F.relu(self.b(h))], 1).flatten(1))


class _Normalised(nn.Module):
    def __init__(self):
        super().__init__()
        self.c, self.fc = nn.Conv2d(1, 3, 3), nn.Linear(3 * 36, 4)

    def forward(self, x):
        return self.fc(F.relu(self.c((x - 0.13) / 0.31)).flatten(1))


def _clipped():
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU6(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(3 * 16, 4))


#: README row label -> model builder (input (1, 8, 8))
ROWS = {
    "`Linear`, `Conv2d` (zero padding, groups), `BatchNorm` after them (folded), `ReLU`, `Flatten`, `Dropout`":
        lambda: nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Dropout(),
                              nn.Flatten(), nn.Linear(3 * 64, 4)),
    "`AvgPool2d`, `AdaptiveAvgPool2d` (dividing), `x.mean((2, 3))`": lambda: _seq(nn.AvgPool2d(2)),
    "`MaxPool2d`, `AdaptiveMaxPool2d` (dividing), `x.amax((2, 3))`": lambda: _seq(nn.MaxPool2d(2)),
    "`ReLU6`, `Hardtanh(0, a)`, `clamp(0, a)`, QCFS (the ceiling is the layer's scale)":
        _clipped,
    "residual `a + b`, `a - b`, `out += identity`": _Residual,
    "`torch.cat` along channels": _Cat,
    "`(x - mean) / std`, `x / 255`, `BatchNorm` on the input (folded into the first layer)": _Normalised,
    "final `Softmax` / `log_softmax` (dropped, with a warning)": lambda: nn.Sequential(_seq(nn.AvgPool2d(2)),
                                                                                         nn.Softmax(1)),
}
