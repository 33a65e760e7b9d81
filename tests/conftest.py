"""Shared test setup: no progress bars in test output."""

import pytest


@pytest.fixture(autouse=True)
def _no_progress_bars(monkeypatch):
    monkeypatch.setenv("BIOSNN_PROGRESS", "0")
