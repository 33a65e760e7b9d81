"""Tests of biosnn.connectivity against torch's reference layers."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from biosnn.connectivity import (
    Connections,
    all_to_all,
    avgpool2d,
    conv2d,
    dense,
    explicit,
    maxpool2d_groups,
    one_to_one,
    random_p,
    to_dense_matrix,
)
from biosnn.errors import SpecError


def _assert_sorted(conn: Connections) -> None:
    key = conn.i.astype(np.int64) * conn.n_post + conn.j
    assert np.all(np.diff(key) >= 0), "synapses are not sorted by (i, j)"
    # Per-presynaptic target lists are contiguous and pre_indptr delimits them.
    indptr = conn.pre_indptr()
    assert indptr.shape == (conn.n_pre + 1,)
    assert indptr[-1] == conn.n_synapses
    for pre in np.unique(conn.i)[:20]:
        seg = slice(indptr[pre], indptr[pre + 1])
        assert np.all(conn.i[seg] == pre)
        assert np.sum(conn.i == pre) == indptr[pre + 1] - indptr[pre]


def _torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).to(torch.float64)


# ---------------------------------------------------------------------------
# Convolution
# ---------------------------------------------------------------------------

CONV_CASES = [
    # in_shape, out_c, (kh, kw), stride, padding, dilation, groups
    ((1, 5, 5), 1, (3, 3), 1, 0, 1, 1),
    ((3, 8, 7), 4, (3, 3), 1, 1, 1, 1),
    ((2, 9, 9), 3, (3, 2), 2, 0, 1, 1),
    ((2, 10, 11), 5, (5, 5), (2, 3), (2, 1), 1, 1),
    ((4, 9, 8), 6, (3, 3), 1, 2, 2, 2),
    ((4, 7, 7), 4, (3, 3), 2, 1, 1, 4),       # depthwise
    ((6, 12, 12), 4, (2, 3), (1, 2), (1, 0), (2, 1), 2),
    ((3, 6, 6), 2, (1, 1), 1, 0, 1, 1),       # pointwise
    ((2, 7, 9), 3, (3, 4), 1, "same", (1, 2), 1),
    ((2, 7, 9), 3, (3, 3), 2, "valid", 1, 1),
    ((1, 4, 4), 2, (4, 4), 1, 0, 1, 1),       # 1x1 output
    ((2, 3, 3), 2, (3, 3), 3, 2, 1, 1),       # stride larger than kernel overlap
]


@pytest.mark.parametrize("in_shape,out_c,ksize,stride,padding,dilation,groups", CONV_CASES)
def test_conv2d_matches_torch(in_shape, out_c, ksize, stride, padding, dilation, groups):
    rng = np.random.default_rng(hash((in_shape, out_c, ksize)) % 2**32)
    c = in_shape[0]
    kernel = rng.standard_normal((out_c, c // groups) + ksize)
    x = rng.standard_normal((1,) + in_shape)
    conn = conv2d(kernel, in_shape, stride=stride, padding=padding, dilation=dilation,
                  groups=groups)
    ref = F.conv2d(_torch(x), _torch(kernel), stride=stride, padding=padding,
                   dilation=dilation, groups=groups)
    assert conn.post_shape == tuple(ref.shape[1:])
    assert conn.pre_shape == in_shape
    assert conn.n_pre == math.prod(in_shape)
    assert conn.n_post == ref.numel()
    got = to_dense_matrix(conn) @ x.ravel()
    np.testing.assert_allclose(got, ref.flatten().numpy(), rtol=1e-12, atol=1e-12)
    # kernel_index maps each synapse back to its weight.
    np.testing.assert_array_equal(conn.weights, kernel.ravel()[conn.kernel_index])
    # No duplicated (pre, post) pairs in a convolution.
    key = conn.i * conn.n_post + conn.j
    assert np.unique(key).size == key.size
    _assert_sorted(conn)
    assert conn.i.dtype == np.int64 and conn.j.dtype == np.int64
    assert conn.kernel_index.dtype == np.int64 and conn.weights.dtype == np.float64


def test_conv2d_synapse_count_without_padding():
    kernel = np.ones((16, 6, 5, 5))
    conn = conv2d(kernel, (6, 28, 28))
    assert conn.post_shape == (16, 24, 24)
    assert conn.n_synapses == 16 * 24 * 24 * 6 * 25
    # Every postsynaptic neuron has exactly in_c * kh * kw inputs.
    assert np.all(np.bincount(conn.j, minlength=conn.n_post) == 150)


def test_conv2d_padding_taps_produce_no_synapse():
    conn = conv2d(np.ones((1, 1, 3, 3)), (1, 4, 4), padding=1)
    fan_in = np.bincount(conn.j, minlength=conn.n_post).reshape(4, 4)
    np.testing.assert_array_equal(fan_in, [[4, 6, 6, 4], [6, 9, 9, 6],
                                           [6, 9, 9, 6], [4, 6, 6, 4]])


def test_conv2d_accepts_torch_tensor_and_kernel_index_layout():
    layer = torch.nn.Conv2d(2, 3, kernel_size=(2, 3), bias=False).double()
    conn = conv2d(layer.weight, (2, 5, 6))
    w = layer.weight.detach().numpy()
    oc, ic, ky, kx = np.unravel_index(conn.kernel_index, w.shape)
    np.testing.assert_array_equal(conn.weights, w[oc, ic, ky, kx])
    # The kernel index is consistent with the geometry of each synapse.
    post_c = conn.j // (conn.post_shape[1] * conn.post_shape[2])
    pre_c = conn.i // (5 * 6)
    np.testing.assert_array_equal(oc, post_c)
    np.testing.assert_array_equal(ic, pre_c)
    pre_y = (conn.i % 30) // 6
    post_y = (conn.j % (conn.post_shape[1] * conn.post_shape[2])) // conn.post_shape[2]
    np.testing.assert_array_equal(pre_y - post_y, ky)


def test_conv2d_drop_zeros():
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((3, 2, 3, 3))
    kernel[rng.random(kernel.shape) < 0.5] = 0.0
    full = conv2d(kernel, (2, 6, 6), padding=1)
    pruned = conv2d(kernel, (2, 6, 6), padding=1, drop_zeros=True)
    assert pruned.n_synapses == np.count_nonzero(full.weights)
    assert np.all(pruned.weights != 0)
    np.testing.assert_array_equal(to_dense_matrix(pruned), to_dense_matrix(full))
    _assert_sorted(pruned)


def test_conv2d_speed_lenet_layer():
    kernel = np.random.default_rng(0).standard_normal((16, 6, 5, 5))
    conv2d(kernel, (6, 28, 28))  # warm-up
    # CPU time of this process, not wall time: other processes on a loaded machine do not count
    t0 = time.process_time()
    conn = conv2d(kernel, (6, 28, 28))
    elapsed = time.process_time() - t0
    assert conn.n_synapses == 16 * 24 * 24 * 150
    assert elapsed < 0.5, f"conv2d expansion took {elapsed:.3f} s of CPU time"


@pytest.mark.parametrize("kwargs,match", [
    (dict(kernel=np.ones((2, 3, 3, 3)), in_shape=(2, 5, 5)), "input channels"),
    (dict(kernel=np.ones((2, 1, 3, 3)), in_shape=(4, 5, 5), groups=3), "groups"),
    (dict(kernel=np.ones((2, 2, 3)), in_shape=(2, 5, 5)), "4-D"),
    (dict(kernel=np.ones((1, 1, 7, 7)), in_shape=(1, 5, 5)), "output height"),
    (dict(kernel=np.ones((1, 1, 3, 3)), in_shape=(1, 5, 5), stride=0), "stride"),
    (dict(kernel=np.ones((1, 1, 3, 3)), in_shape=(1, 5, 5), padding=-1), "padding"),
    (dict(kernel=np.ones((1, 1, 3, 3)), in_shape=(1, 5, 5), padding="same", stride=2),
     "same"),
    (dict(kernel=np.ones((1, 1, 3, 3)), in_shape=(1, 5)), r"\(C, H, W\)"),
    (dict(kernel=np.ones((1, 1, 3, 3)), in_shape=(1, -5, 5)), "positive"),
    (dict(kernel=np.full((1, 1, 3, 3), np.nan), in_shape=(1, 5, 5)), "NaN"),
])
def test_conv2d_bad_input(kwargs, match):
    with pytest.raises(SpecError, match=match) as info:
        conv2d(**kwargs)
    assert info.value.fix  # every error says what to do


# ---------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------

POOL_CASES = [
    # in_shape, kernel_size, stride, padding
    ((1, 4, 4), 2, None, 0),
    ((3, 9, 8), 3, 2, 1),
    ((2, 7, 10), (2, 3), (1, 2), (1, 1)),
    ((2, 6, 6), 2, 1, 1),
    ((4, 11, 11), 3, None, 0),   # leftover rows/columns dropped (ceil_mode=False)
    ((1, 5, 5), 5, 1, 2),
]


@pytest.mark.parametrize("in_shape,kernel_size,stride,padding", POOL_CASES)
def test_avgpool2d_matches_torch(in_shape, kernel_size, stride, padding):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1,) + in_shape)
    conn = avgpool2d(in_shape, kernel_size, stride=stride, padding=padding)
    ref = F.avg_pool2d(_torch(x), kernel_size, stride=stride, padding=padding)
    assert conn.post_shape == tuple(ref.shape[1:])
    got = to_dense_matrix(conn) @ x.ravel()
    np.testing.assert_allclose(got, ref.flatten().numpy(), rtol=1e-12, atol=1e-12)
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    assert conn.window_shape == (kh, kw) and conn.window_size == kh * kw
    np.testing.assert_array_equal(conn.weights, 1.0 / (kh * kw))
    assert conn.kernel_index.min() >= 0 and conn.kernel_index.max() < kh * kw
    _assert_sorted(conn)


@pytest.mark.parametrize("in_shape,kernel_size,stride,padding,dilation", [
    ((1, 4, 4), 2, None, 0, 1),
    ((3, 9, 8), 3, 2, 1, 1),
    ((2, 7, 10), (2, 3), (1, 2), (1, 1), 1),
    ((2, 10, 10), 3, 1, 1, 2),
    ((4, 11, 11), 3, None, 0, 1),
])
def test_maxpool2d_groups_match_torch(in_shape, kernel_size, stride, padding, dilation):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1,) + in_shape)
    conn = maxpool2d_groups(in_shape, kernel_size, stride=stride, padding=padding,
                            dilation=dilation)
    ref = F.max_pool2d(_torch(x), kernel_size, stride=stride, padding=padding,
                       dilation=dilation).flatten().numpy()
    assert conn.weights is None
    assert conn.n_post == ref.size
    # Max over each postsynaptic neuron's presynaptic set (vectorised segment max).
    got = np.full(conn.n_post, -np.inf)
    np.maximum.at(got, conn.j, x.ravel()[conn.i])
    np.testing.assert_array_equal(got, ref)
    # Same (i, j) structure as average pooling when that is defined (dilation 1).
    if dilation == 1:
        avg = avgpool2d(in_shape, kernel_size, stride=stride, padding=padding)
        np.testing.assert_array_equal(avg.i, conn.i)
        np.testing.assert_array_equal(avg.j, conn.j)
        np.testing.assert_array_equal(avg.kernel_index, conn.kernel_index)
    fan_in = np.bincount(conn.j, minlength=conn.n_post)
    assert fan_in.min() >= 1 and fan_in.max() <= conn.window_size
    _assert_sorted(conn)


@pytest.mark.parametrize("func", [avgpool2d, maxpool2d_groups])
@pytest.mark.parametrize("kwargs,match", [
    (dict(in_shape=(1, 4, 4), kernel_size=2, padding=2), "half the window"),
    (dict(in_shape=(1, 4, 4), kernel_size=5), "output height"),
    (dict(in_shape=(1, 4, 4), kernel_size=0), "kernel_size"),
    (dict(in_shape=(1, 4, 4), kernel_size=2, stride=(1, 0)), "stride"),
    (dict(in_shape=(0, 4, 4), kernel_size=2), "positive"),
])
def test_pool_bad_input(func, kwargs, match):
    with pytest.raises(SpecError, match=match):
        func(**kwargs)


# ---------------------------------------------------------------------------
# Dense / all-to-all / one-to-one / explicit
# ---------------------------------------------------------------------------

def test_dense_matches_linear():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((7, 11))
    x = rng.standard_normal((4, 11))
    conn = dense(w)
    assert (conn.n_pre, conn.n_post, conn.n_synapses) == (11, 7, 77)
    np.testing.assert_array_equal(to_dense_matrix(conn), w)
    np.testing.assert_allclose(x @ to_dense_matrix(conn).T, x @ w.T, rtol=1e-13)
    np.testing.assert_allclose(to_dense_matrix(conn) @ x[0],
                               F.linear(_torch(x[:1]), _torch(w)).numpy()[0], rtol=1e-12)
    np.testing.assert_array_equal(conn.weights, w[conn.j, conn.i])
    np.testing.assert_array_equal(conn.weights, w.ravel()[conn.kernel_index])
    _assert_sorted(conn)


def test_dense_torch_tensor_and_drop_zeros():
    layer = torch.nn.Linear(5, 3, bias=False)
    with torch.no_grad():
        layer.weight[0, :2] = 0.0
        layer.weight[2, 4] = 0.0
    conn = dense(layer.weight, drop_zeros=True)
    w = layer.weight.detach().numpy().astype(np.float64)
    assert conn.n_synapses == 15 - 3
    np.testing.assert_array_equal(to_dense_matrix(conn), w)
    assert dense(layer.weight).n_synapses == 15


def test_dense_bad_input():
    with pytest.raises(SpecError, match="2-D"):
        dense(np.ones(4))
    with pytest.raises(SpecError, match="NaN"):
        dense(np.array([[1.0, np.inf]]))


def test_all_to_all():
    conn = all_to_all(3, 4)
    assert conn.n_synapses == 12 and conn.weights is None
    np.testing.assert_array_equal(to_dense_matrix(conn), np.ones((4, 3)))
    _assert_sorted(conn)
    w = np.arange(12.0).reshape(3, 4)
    conn = all_to_all(3, 4, weights=w)
    np.testing.assert_array_equal(conn.weights, w[conn.i, conn.j])
    np.testing.assert_array_equal(to_dense_matrix(conn), w.T)
    np.testing.assert_array_equal(all_to_all(2, 2, weights=0.5).weights, [0.5] * 4)
    assert all_to_all(0, 5).n_synapses == 0
    with pytest.raises(SpecError, match=r"shape \(4, 3\)"):
        all_to_all(3, 4, weights=np.ones((4, 3)))
    with pytest.raises(SpecError, match=">= 0"):
        all_to_all(-1, 4)
    with pytest.raises(SpecError, match="integer"):
        all_to_all(2.5, 4)


def test_one_to_one():
    conn = one_to_one(5, weights=np.arange(5.0))
    np.testing.assert_array_equal(conn.i, np.arange(5))
    np.testing.assert_array_equal(conn.j, np.arange(5))
    np.testing.assert_array_equal(to_dense_matrix(conn), np.diag(np.arange(5.0)))
    assert one_to_one(3).weights is None
    with pytest.raises(SpecError, match="n must be >= 0"):
        one_to_one(-2)
    with pytest.raises(SpecError, match="weights"):
        one_to_one(3, weights=[1.0, 2.0])


def test_explicit_sorts_stably_and_keeps_weights_with_synapses():
    i = [2, 0, 2, 1, 0, 2]
    j = [1, 3, 0, 2, 3, 1]
    w = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0]
    conn = explicit(i, j, 3, 4, weights=w)
    np.testing.assert_array_equal(conn.i, [0, 0, 1, 2, 2, 2])
    np.testing.assert_array_equal(conn.j, [3, 3, 2, 0, 1, 1])
    # Duplicates (0, 3) and (2, 1) keep their input order (stable sort).
    np.testing.assert_array_equal(conn.weights, [20.0, 50.0, 40.0, 30.0, 10.0, 60.0])
    np.testing.assert_array_equal(conn.pre_indptr(), [0, 2, 3, 6])
    dense_m = to_dense_matrix(conn)
    assert dense_m[3, 0] == 70.0 and dense_m[1, 2] == 70.0  # duplicates summed
    _assert_sorted(conn)


def test_explicit_does_not_alias_or_mutate_input():
    i = np.array([1, 0])
    j = np.array([0, 1])
    conn = explicit(i, j, 2, 2)
    np.testing.assert_array_equal(i, [1, 0])
    i[0] = 0
    np.testing.assert_array_equal(conn.i, [0, 1])
    with pytest.raises(ValueError):
        conn.i[0] = 1  # read-only
    with pytest.raises(AttributeError):
        conn.n_pre = 3  # frozen


@pytest.mark.parametrize("args,match", [
    (([0, 3], [0, 1], 3, 2), r"index 3, outside \[0, 3\)"),
    (([0, -1], [0, 1], 3, 2), "index -1"),
    (([0, 1], [0, 2], 3, 2), r"j contains index 2"),
    (([0, 1], [0], 3, 2), "entries"),
    (([0.5, 1], [0, 1], 3, 2), "integers"),
    (([[0, 1]], [[0, 1]], 3, 2), "1-D"),
    (([0], [0], -3, 2), ">= 0"),
])
def test_explicit_bad_input(args, match):
    with pytest.raises(SpecError, match=match):
        explicit(*args)


def test_explicit_weight_length_mismatch():
    with pytest.raises(SpecError, match="one weight per synapse"):
        explicit([0, 1], [0, 1], 2, 2, weights=[1.0])


def test_connections_validates_shapes():
    z = np.zeros(4, dtype=np.int64)
    with pytest.raises(SpecError, match="post_shape"):
        Connections(z, z, None, None, 4, 4, post_shape=(2, 3))
    with pytest.raises(SpecError, match="kernel_index"):
        Connections(z, z, None, np.zeros(3, dtype=np.int64), 4, 4)


def test_to_dense_matrix_rejects_non_connections():
    with pytest.raises(SpecError, match="Connections"):
        to_dense_matrix(np.eye(3))


# ---------------------------------------------------------------------------
# Random connectivity
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("n_pre,n_post,p,autapses", [
    (200, 300, 0.1, True),
    (500, 500, 0.02, False),
    (50, 40, 0.9, True),
    (1000, 1000, 0.001, False),
])
def test_random_p_statistics(n_pre, n_post, p, autapses):
    conn = random_p(n_pre, n_post, p, np.random.default_rng(123), allow_autapses=autapses)
    n_pairs = n_pre * n_post - (0 if autapses else min(n_pre, n_post))
    mean = n_pairs * p
    sigma = math.sqrt(n_pairs * p * (1 - p))
    assert abs(conn.n_synapses - mean) < 5 * sigma
    key = conn.i * n_post + conn.j
    assert np.unique(key).size == key.size, "duplicate synapses"
    if not autapses:
        assert not np.any(conn.i == conn.j)
    assert conn.weights is None
    assert conn.i.min() >= 0 and conn.i.max() < n_pre
    assert conn.j.min() >= 0 and conn.j.max() < n_post
    _assert_sorted(conn)


def test_random_p_is_uniform_over_pre_and_post():
    n_pre, n_post, p = 400, 250, 0.05
    conn = random_p(n_pre, n_post, p, np.random.default_rng(5))
    # Out-degrees ~ Binomial(n_post, p), in-degrees ~ Binomial(n_pre, p).
    out_deg = np.bincount(conn.i, minlength=n_pre)
    in_deg = np.bincount(conn.j, minlength=n_post)
    assert abs(out_deg.mean() - n_post * p) < 5 * math.sqrt(n_post * p * (1 - p) / n_pre)
    assert abs(in_deg.mean() - n_pre * p) < 5 * math.sqrt(n_pre * p * (1 - p) / n_post)
    assert 0.6 < out_deg.var() / (n_post * p * (1 - p)) < 1.4
    assert 0.6 < in_deg.var() / (n_pre * p * (1 - p)) < 1.4


def test_random_p_reproducible():
    a = random_p(300, 200, 0.05, np.random.default_rng(42))
    b = random_p(300, 200, 0.05, np.random.default_rng(42))
    c = random_p(300, 200, 0.05, np.random.default_rng(43))
    np.testing.assert_array_equal(a.i, b.i)
    np.testing.assert_array_equal(a.j, b.j)
    assert a.n_synapses != c.n_synapses or not np.array_equal(a.j, c.j)
    d = random_p(300, 200, 0.05, 42)  # an int seed is accepted too
    np.testing.assert_array_equal(a.j, d.j)


def test_random_p_edge_probabilities():
    rng = np.random.default_rng(0)
    assert random_p(10, 10, 0.0, rng).n_synapses == 0
    full = random_p(4, 5, 1.0, rng)
    np.testing.assert_array_equal(to_dense_matrix(full), np.ones((5, 4)))
    no_self = random_p(4, 4, 1.0, rng, allow_autapses=False)
    np.testing.assert_array_equal(to_dense_matrix(no_self), 1 - np.eye(4))
    assert random_p(0, 10, 0.5, rng).n_synapses == 0


def test_random_p_large_sparse_is_memory_proportional_to_synapses():
    # 10^10 pairs: an O(n_pre * n_post) method would need tens of GB.
    n = 100_000
    t0 = time.perf_counter()
    conn = random_p(n, n, 1e-6, np.random.default_rng(9))
    assert time.perf_counter() - t0 < 2.0
    mean, sigma = n * n * 1e-6, math.sqrt(n * n * 1e-6)
    assert abs(conn.n_synapses - mean) < 5 * sigma
    _assert_sorted(conn)


@pytest.mark.parametrize("kwargs,match", [
    (dict(p=1.5), r"\[0, 1\]"),
    (dict(p=-0.1), r"\[0, 1\]"),
    (dict(p=float("nan")), r"\[0, 1\]"),
    (dict(p="0.1"), "number"),
    (dict(n_pre=-1), ">= 0"),
    (dict(rng=None), "Generator"),
])
def test_random_p_bad_input(kwargs, match):
    args = dict(n_pre=10, n_post=10, p=0.1, rng=np.random.default_rng(0))
    args.update(kwargs)
    with pytest.raises(SpecError, match=match):
        random_p(**args)


def test_maxpool_padding_limit_follows_torch_with_dilation():
    x = torch.zeros(1, 1, 9, 9, dtype=torch.float64)
    with pytest.raises(RuntimeError):
        F.max_pool2d(x, 3, stride=1, padding=2, dilation=2)
    with pytest.raises(SpecError, match="half the window"):
        maxpool2d_groups((1, 9, 9), 3, stride=1, padding=2, dilation=2)
