"""Datasets and the tiny training helper (biosnn.datasets)."""

from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from biosnn import datasets
from biosnn.datasets import accuracy, load_digits, load_mnist, mnist_path, train_classifier
from biosnn.errors import BiosnnError

SHARED_MNIST = Path("/work/shared/data/mnist.npz")


def _write_npz(path: Path, n_train: int = 12, n_test: int = 5, **override) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return arrays


@pytest.fixture
def no_mnist_env(monkeypatch, tmp_path):
    monkeypatch.delenv("BIOSNN_MNIST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home" / ".cache" / "biosnn" / "mnist.npz"


# --------------------------------------------------------------------------- digits


def test_load_digits_shapes_ranges_and_split():
    x_tr, y_tr = load_digits("train")
    x_te, y_te = load_digits("test")
    assert x_tr.shape == (1347, 1, 8, 8) and x_te.shape == (450, 1, 8, 8)
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.int64
    assert x_tr.min() == 0.0 and x_tr.max() == 1.0
    assert set(np.unique(y_te)) == set(range(10))
    # disjoint, deterministic, stratified
    rows_tr = {r.tobytes() for r in x_tr.reshape(len(x_tr), -1)}
    overlap = sum(r.tobytes() in rows_tr for r in x_te.reshape(len(x_te), -1))
    assert overlap <= 2            # the raw dataset contains a few duplicate images
    x2, y2 = load_digits("train")
    np.testing.assert_array_equal(x_tr, x2)
    np.testing.assert_array_equal(y_tr, y2)
    x3, _ = load_digits("train", seed=1)
    assert not np.array_equal(x_tr, x3)
    x4, _ = load_digits("test", test_fraction=0.5)
    assert len(x4) == 899
    counts = np.bincount(y_te, minlength=10)
    assert counts.min() >= 43 and counts.max() <= 47


def test_load_digits_bad_arguments():
    with pytest.raises(BiosnnError, match="split must be 'train' or 'test'"):
        load_digits("val")
    with pytest.raises(BiosnnError, match="test_fraction"):
        load_digits("train", test_fraction=1.5)


# --------------------------------------------------------------------------- MNIST


def test_load_mnist_from_explicit_path(tmp_path, no_mnist_env):
    arrays = _write_npz(tmp_path / "m.npz")
    x, y = load_mnist("train", path=tmp_path / "m.npz")
    assert x.shape == (12, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (12,) and y.dtype == np.int64
    np.testing.assert_allclose(x[:, 0] * 255, arrays["x_train"], atol=1e-4)
    np.testing.assert_array_equal(y, arrays["y_train"])
    assert 0.0 <= x.min() and x.max() <= 1.0
    xt, yt = load_mnist("test", path=str(tmp_path / "m.npz"))
    assert xt.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(yt, arrays["y_test"])


def test_load_mnist_from_env_and_cache(tmp_path, monkeypatch, no_mnist_env):
    _write_npz(tmp_path / "env.npz", n_train=3)
    monkeypatch.setenv("BIOSNN_MNIST", str(tmp_path / "env.npz"))
    assert mnist_path() == tmp_path / "env.npz"
    assert load_mnist("train")[0].shape == (3, 1, 28, 28)
    monkeypatch.delenv("BIOSNN_MNIST")
    _write_npz(no_mnist_env, n_train=4)
    assert mnist_path() == no_mnist_env
    assert load_mnist("train")[0].shape == (4, 1, 28, 28)


def test_load_mnist_missing_explicit_file_and_bad_file(tmp_path, monkeypatch, no_mnist_env):
    with pytest.raises(BiosnnError, match=r"does not exist.*x_train"):
        load_mnist("train", path=tmp_path / "nope.npz")
    monkeypatch.setenv("BIOSNN_MNIST", str(tmp_path / "nope.npz"))
    with pytest.raises(BiosnnError, match=r"from BIOSNN_MNIST\) does not exist"):
        load_mnist("train")
    _write_npz(tmp_path / "partial.npz", x_test=None)
    with pytest.raises(BiosnnError, match="has no array 'x_test'"):
        load_mnist("test", path=tmp_path / "partial.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(BiosnnError, match="cannot read"):
        load_mnist("train", path=tmp_path / "junk.npz")
    with pytest.raises(BiosnnError, match="split must be"):
        load_mnist("validation", path=tmp_path / "partial.npz")


def test_load_mnist_download_failure_is_a_clear_error(monkeypatch, no_mnist_env):
    def offline(url, timeout=None):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(BiosnnError, match=r"downloading https://storage\.googleapis\.com/.*mnist\.npz "
                                          r"failed .*BIOSNN_MNIST"):
        load_mnist("train")
    assert not no_mnist_env.exists()
    assert list(no_mnist_env.parent.iterdir()) == []        # no partial file left behind


def test_load_mnist_downloads_to_cache(tmp_path, monkeypatch, no_mnist_env):
    buf = io.BytesIO()
    arrays = _write_npz(tmp_path / "src.npz", n_train=2)
    buf.write((tmp_path / "src.npz").read_bytes())
    seen = []

    def fake_urlopen(url, timeout=None):
        seen.append(url)
        return io.BytesIO(buf.getvalue())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    x, y = load_mnist("train")
    assert seen == [datasets.MNIST_URL]
    assert no_mnist_env.exists()
    np.testing.assert_array_equal(y, arrays["y_train"])
    load_mnist("test")                                       # second call reads the cache
    assert len(seen) == 1


@pytest.mark.skipif(not SHARED_MNIST.exists(), reason="no shared MNIST copy")
def test_shared_mnist_file():
    x, y = load_mnist("test", path=SHARED_MNIST)
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (10000,) and set(np.unique(y)) == set(range(10))
    assert x.min() == 0.0 and x.max() == 1.0
    assert 0.1 < float(x.mean()) < 0.15                      # MNIST mean intensity ~0.13


# --------------------------------------------------------------------------- training


def test_train_classifier_is_deterministic_and_learns():
    torch = pytest.importorskip("torch")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x_tr, y_tr = load_digits("train")
        x_te, y_te = load_digits("test")

        def run(seed):
            torch.manual_seed(123)
            model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                        torch.nn.Dropout(0.1), torch.nn.Linear(32, 10))
            return train_classifier(model, x_tr, y_tr, epochs=3, lr=1e-2, batch_size=64, seed=seed)

        m1, m2, m3 = run(0), run(0), run(1)
        assert not m1.training
        for p1, p2 in zip(m1.parameters(), m2.parameters()):
            assert torch.equal(p1, p2)
        assert any(not torch.equal(p1, p3) for p1, p3 in zip(m1.parameters(), m3.parameters()))
        acc = accuracy(m1, x_te, y_te)
        assert 0.85 < acc <= 1.0
        assert accuracy(m1, torch.from_numpy(x_te), torch.from_numpy(y_te)) == acc
        with pytest.raises(BiosnnError, match="x has 10 samples but y has 9"):
            train_classifier(m1, x_tr[:10], y_tr[:9], epochs=1)
    finally:
        torch.set_num_threads(old)


def test_mnist_path_expands_user(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("BIOSNN_MNIST", raising=False)
    assert mnist_path("~/m.npz") == tmp_path / "m.npz"
    assert mnist_path() == tmp_path / ".cache" / "biosnn" / "mnist.npz"
    assert os.fspath(mnist_path()).endswith("mnist.npz")
