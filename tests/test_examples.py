"""Every script in examples/ runs (as a script, on small data) and prints its figures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.py"))


def _run(args, tmp_path, env_extra=None):
    env = dict(os.environ, BIOSNN_PROGRESS="0", OMP_NUM_THREADS="1", **(env_extra or {}))
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.fixture()
def tiny_mnist(tmp_path):
    """An mnist.npz in the real layout (uint8, 28x28), made from scikit-learn digits (offline)."""
    from sklearn.datasets import load_digits
    d = load_digits()
    img = np.kron(d.images / 16.0, np.ones((3, 3)))  # 24x24
    img = np.pad(img, ((0, 0), (2, 2), (2, 2)))
    x = (img * 255).astype(np.uint8)
    y = d.target.astype(np.uint8)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x[:1200], y_train=y[:1200], x_test=x[1200:], y_test=y[1200:])
    return path


def test_every_example_is_tested():
    """Each script in examples/ is run by some test module (named there as ``examples/<script>``)."""
    tests_text = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    untested = [name for name in EXAMPLES if f"examples/{name}" not in tests_text]
    assert EXAMPLES and not untested, f"examples without a test: {untested}"


def test_run_spec_example(tmp_path):
    out = _run(["examples/run_spec.py", "network_specs/cuba.yaml", "--duration", "0.02", "--out", str(tmp_path)],
               tmp_path)
    assert "exc" in out and (tmp_path / "spikes.h5").exists() and (tmp_path / "raster.png").exists()


def test_convert_digits_example(tmp_path):
    out = _run(["examples/convert_digits.py", "--samples", "30", "--T", "16", "--out", str(tmp_path)], tmp_path)
    assert "SNN accuracy" in out and "agreement SNN/ANN" in out
    assert (tmp_path / "demo.png").stat().st_size > 5000
    acc = float(out.split("SNN accuracy")[1].split("%")[0])
    assert acc > 50.0  # well above chance (10 %)


def test_convert_mnist_example(tmp_path, tiny_mnist):
    out = _run(["examples/convert_mnist.py", "--path", str(tiny_mnist), "--epochs", "2", "--train-samples", "1000",
                "--test-samples", "40", "--T", "16", "--backend", "runtime", "--pool", "max"], tmp_path)
    for key in ("ANN accuracy", "SNN accuracy", "agreement with ANN", "spikes per image", "synops per image",
                "wall time"):
        assert key in out
    agreement = float(out.split("agreement with ANN")[1].split("%")[0])
    assert agreement > 50.0
