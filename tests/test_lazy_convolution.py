"""Convolutions without synapse lists: ConvConnections, projection_size, scaled_connect (memory grows with kernels)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from biosnn import connectivity as cx
from biosnn.conversion.connect import scaled_connect, weighted_connect
from biosnn.errors import SpecError
from biosnn.spec import model as m
from biosnn.spec.expand import expand_projection, projection_size
from biosnn.spec.values import ArrayValue

GEOMETRIES = [  # (kernel shape, in shape, stride, padding, dilation, groups)
    ((4, 2, 3, 3), (2, 7, 6), 1, 1, 1, 1),
    ((6, 1, 3, 2), (3, 9, 8), (2, 1), (1, 0), 1, 3),
    ((2, 3, 5, 5), (3, 6, 6), 2, 2, 1, 1),
    ((2, 1, 3, 3), (1, 8, 8), 1, 2, 2, 1),
]


@pytest.mark.parametrize("shape,in_shape,stride,padding,dilation,groups", GEOMETRIES)
def test_lazy_convolution_equals_the_synapse_lists(shape, in_shape, stride, padding, dilation, groups):
    kernel = np.random.default_rng(0).normal(size=shape)
    full = cx.conv2d(kernel, in_shape, stride, padding, dilation, groups)
    lazy = cx.conv2d(kernel, in_shape, stride, padding, dilation, groups, lazy=True)
    assert (lazy.n_pre, lazy.n_post, lazy.post_shape) == (full.n_pre, full.n_post, full.post_shape)
    assert len(lazy) == len(full.i) > 0
    np.testing.assert_array_equal(lazy.fanout(), np.bincount(full.i, minlength=full.n_pre))
    np.testing.assert_array_equal(cx.out_degree(lazy), cx.out_degree(full))
    np.testing.assert_array_equal(lazy.pre_indptr(), full.pre_indptr())
    assert lazy._expanded is None   # nothing above made the lists
    for name in ("i", "j", "weights", "kernel_index"):
        np.testing.assert_array_equal(getattr(lazy, name), getattr(full, name), err_msg=name)
    used = np.zeros(kernel[0, 0].shape, dtype=bool)
    used.ravel()[np.unique(full.kernel_index % used.size)] = True
    np.testing.assert_array_equal(lazy.used_taps(), used)


def test_scaled_connect_keeps_the_kernel_without_lists():
    kernel = np.random.default_rng(1).normal(size=(3, 2, 3, 3))
    layer = SimpleNamespace(op="conv2d", weight=kernel, params={"stride": (1, 2), "padding": (1, 1), "dilation": (1, 1),
                                                                "groups": 1})
    lazy = cx.conv2d(kernel, (2, 1, 5), stride=(1, 2), padding=1, lazy=True)
    full = cx.conv2d(kernel, (2, 1, 5), stride=(1, 2), padding=1)
    got, values = scaled_connect(layer, lazy, 0.5, shaped=True)
    want, _ = weighted_connect(layer, full, 0.5 * full.weights, shaped=True)
    assert values is None and lazy._expanded is None
    np.testing.assert_array_equal(got.kernel.data, want.kernel.data)
    # one input row: only the kernel's middle row makes synapses; the others are 0 in both
    np.testing.assert_array_equal(lazy.used_taps(), [[False] * 3, [True] * 3, [False] * 3])
    # not shaped: explicit synapses with per-synapse weights
    connect, values = scaled_connect(layer, lazy, 0.5, shaped=False)
    assert isinstance(connect, m.Explicit)
    np.testing.assert_array_equal(values.data, 0.5 * full.weights)


def test_dense_layer_is_all_to_all_weights_without_lists():
    """A Linear layer: the matrix only (no i/j lists), an AllToAll spec in the synapse order of the lists."""
    w = np.random.default_rng(2).normal(size=(3, 5))
    lazy, full = cx.dense(w, lazy=True), cx.dense(w)
    assert len(lazy) == len(full.i) == 15 and lazy.n_pre == 5 and lazy.n_post == 3
    np.testing.assert_array_equal(cx.out_degree(lazy), cx.out_degree(full))
    np.testing.assert_array_equal(lazy.pre_indptr(), full.pre_indptr())
    layer = SimpleNamespace(op="linear", weight=w, params={})
    connect, values = scaled_connect(layer, lazy, -0.5, shaped=False)
    assert isinstance(connect, m.AllToAll) and lazy._expanded is None
    np.testing.assert_array_equal(values.data, -0.5 * full.weights)
    spec = m.NetworkSpec("fc", populations=[m.Population("a", 5, m.NeuronModel("v : 1")),
                                            m.Population("b", 3, m.NeuronModel("v : 1"))],
                         projections=[m.Projection("ab", "a", "b", m.SynapseModel("w : 1", on_pre="v_post += w"),
                                                   connect, weights=values)], duration="1*ms")
    got = expand_projection(spec, spec.projections[0])  # the order the weights are given in
    np.testing.assert_array_equal(got.i, full.i)
    np.testing.assert_array_equal(got.j, full.j)
    for name in ("i", "j", "weights", "kernel_index"):  # read: the lists are made
        np.testing.assert_array_equal(getattr(lazy, name), getattr(full, name), err_msg=name)
    np.testing.assert_array_equal(cx.to_dense_matrix(lazy), w)


def test_read_only_weights_are_shared_not_copied():
    """A layer's read-only weight is the spec's kernel at scale 1 (one copy of a VGG's weights, not three)."""
    kernel = np.random.default_rng(3).normal(size=(2, 1, 3, 3))
    kernel.setflags(write=False)
    layer = SimpleNamespace(op="conv2d", weight=kernel, params={"stride": (1, 1), "padding": (1, 1),
                                                                "dilation": (1, 1), "groups": 1})
    lazy = cx.conv2d(kernel, (1, 4, 4), padding=1, lazy=True)
    assert scaled_connect(layer, lazy, 1.0, shaped=True)[0].kernel.data is kernel
    scaled = scaled_connect(layer, lazy, 2.0, shaped=True)[0].kernel.data
    assert not np.shares_memory(scaled, kernel) and np.array_equal(scaled, 2.0 * kernel)
    writable = np.ones(3)
    value = ArrayValue(writable)
    writable[0] = 5.0  # a writable array is copied: the value does not change
    assert value.data.tolist() == [1.0, 1.0, 1.0] and not value.data.flags.writeable


def _conv_spec(target_size):
    neuron = m.NeuronModel("v : 1")
    kernel = ArrayValue(np.ones((4, 1, 3, 3)))
    return m.NetworkSpec("conv", populations=[m.Population("a", 36, neuron, shape=(1, 6, 6)),
                                              m.Population("b", target_size, neuron)],
                         projections=[m.Projection("ab", "a", "b", m.SynapseModel("w : 1", on_pre="v_post += w"),
                                                   m.Conv2D(kernel))], duration="1*ms")


def test_projection_size_counts_a_convolution_from_its_geometry():
    spec = _conv_spec(4 * 4 * 4)
    proj = spec.projections[0]
    assert projection_size(spec, proj) == len(expand_projection(spec, proj).i) == 4 * 16 * 9
    with pytest.raises(SpecError, match="the convolution gives .* neurons but target 'b' has 50"):
        _conv_spec(50)


def test_memory_budget_counts_a_kernel_and_checks_the_lists_when_made():
    """A convolution's spec costs its kernel; a backend that makes the synapse lists is refused above the limit."""
    from biosnn.spec.budget import check_spec_size, memory_limit
    spec = _conv_spec(4 * 4 * 4)
    proj = spec.projections[0]
    with memory_limit(15000):  # bytes: the neurons (12 kB) and the 36-entry kernel fit, 576 synapses (18 kB) not
        assert check_spec_size(spec)["synapses"] >= 576
        with pytest.raises(SpecError, match=r"the synapse lists of convolution 'ab' \(576 synapses\) needs about"):
            expand_projection(spec, proj)
        assert projection_size(spec, proj) == 576  # counted without the lists
