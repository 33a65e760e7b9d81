"""Shared test setup: no progress bars, one torch thread, one build cache for standalone tests, digits data."""

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch):
    monkeypatch.setenv("BIOSNN_PROGRESS", "0")


@pytest.fixture(autouse=True)
def _runtime_by_default(monkeypatch):
    """``backend="auto"`` means the numpy runtime in tests (no compiles unless a test asks for a backend)."""
    monkeypatch.setenv("BIOSNN_BACKEND", "runtime")


@pytest.fixture(scope="session")
def build_cache(tmp_path_factory):
    """Compiled standalone builds shared by all tests (and xdist workers when $BIOSNN_CACHE_DIR is set)."""
    env = os.environ.get("BIOSNN_CACHE_DIR")
    if env:
        path = Path(env)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("builds")


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One torch thread per test worker (the CI machine's 2 cores are shared by 2 workers)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits():
    """scikit-learn digits as (x_train, y_train, x_test, y_test), images (N, 1, 8, 8) in [0, 1]."""
    from biosnn.datasets import load_digits
    x, y = load_digits("train")
    xt, yt = load_digits("test")
    return x, y, xt, yt


@pytest.fixture()
def tiny_net():
    """Linear(2, 1) with w = (0.5, 0.25), ReLU, Linear(1, 1) with w = 1, no biases: SNNs checkable by hand."""
    import torch
    import torch.nn as nn
    model = nn.Sequential(nn.Linear(2, 1, bias=False), nn.ReLU(), nn.Linear(1, 1, bias=False))
    with torch.no_grad():
        model[0].weight[:] = torch.tensor([[0.5, 0.25]])
        model[2].weight[:] = torch.tensor([[1.0]])
    return model


@pytest.fixture()
def residual_block():
    """A small residual CNN for 8x8 digits (seeded): conv - [conv - conv] + identity - linear."""
    import torch
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.c0 = nn.Conv2d(1, 4, 3, padding=1)
            self.c1 = nn.Conv2d(4, 4, 3, padding=1)
            self.c2 = nn.Conv2d(4, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 10)

        def forward(self, x):
            h = torch.relu(self.c0(x))
            out = torch.relu(self.c2(torch.relu(self.c1(h))) + h)
            return self.fc(out.flatten(1))

    torch.manual_seed(0)
    return Block().eval()
