"""Shared test setup: no progress bars in test output; one build cache for standalone tests."""

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch):
    monkeypatch.setenv("BIOSNN_PROGRESS", "0")


@pytest.fixture(scope="session")
def build_cache(tmp_path_factory):
    """Compiled standalone builds shared by all tests (and xdist workers when $BIOSNN_CACHE_DIR is set)."""
    env = os.environ.get("BIOSNN_CACHE_DIR")
    if env:
        path = Path(env)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("builds")
