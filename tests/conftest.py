"""Shared test setup: no progress bars, one torch thread, one build cache for standalone tests, digits data;
the order and grouping of the tests on ``pytest -n 2`` (xdist)."""

import os
from pathlib import Path

import pytest

# Rough seconds of a test with this marker in a fresh CI (2 workers on 2 cores): only the weights that order
# the test modules, heaviest first.  Unmarked tests count 1 s.
MARKER_SECONDS = {"cuda": 100, "cython": 100, "docs": 60, "nestml": 30, "standalone": 30}
# Modules run as one part per backend parameter, not as one part (each part is as long as a whole module
# elsewhere: NESTML modules and cpp_standalone builds of a dozen of Brian2's examples).
SPLIT_BY_BACKEND = {"test_brian2_examples.py": ("runtime", "cpp_standalone", "nest")}


def _part(nodeid: str) -> str:
    """The part of the test run a test belongs to: its module, or its module and backend (``SPLIT_BY_BACKEND``)."""
    module, _, name = nodeid.partition("::")
    param = name.partition("[")[2].rstrip("]")
    if param in SPLIT_BY_BACKEND.get(Path(module).name, ()):
        return f"{module}[{param}]"
    return module


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Order the parts (modules; ``SPLIT_BY_BACKEND``) heaviest first by ``MARKER_SECONDS``, keeping each together.

    With ``-n 2`` the parts go to the workers whole and in this order (``--dist loadscope
    --no-loadscope-reorder`` in pyproject's addopts, :func:`pytest_xdist_make_scheduler`): a module's fixtures (a
    trained network, NEST runs, a reference simulation) are computed once, on one worker, and the end of the
    run is short modules shared between the two workers, not one long compile running alone.  (Not
    ``--dist loadgroup``: with pytest 9.2 and xdist 3.8 its groups are silently ignored, as xdist renames
    ``item._nodeid``, which ``item.nodeid`` no longer reads.)
    """
    parts: dict[str, list] = {}
    for item in items:
        parts.setdefault(_part(item.nodeid), []).append(item)

    def seconds(part):
        return sum(max([MARKER_SECONDS.get(m.name, 0) for m in it.iter_markers()] + [1]) for it in parts[part])

    items[:] = [it for p in sorted(parts, key=seconds, reverse=True) for it in parts[p]]  # stable sort


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's scheduling by scope (``--dist loadscope``) with :func:`_part` as the scope."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class PartScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return _part(nodeid)
    return PartScheduling(config, log)


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
