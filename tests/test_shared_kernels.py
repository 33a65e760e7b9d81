"""Converted convolutions keep a shared kernel (Conv2D) in every coding that can: same synapses, same weights.

The codings' own tests check their Brian2 runs (runtime and cpp_standalone) against
their exact references; this file checks the structure: which projections keep a
kernel, and that the kernel expands to exactly the per-synapse weights the coding
computes (so the simulations cannot differ).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import biosnn
from biosnn import connectivity as cx
from biosnn.backends.brian2_static import static_memory_bytes
from biosnn.conversion.connect import shared_kernel, weighted_connect
from biosnn.spec import Conv2D, Explicit
from biosnn.spec.expand import expand_projection


def _cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 6, 3, stride=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(6 * 2 * 2, 10))


CODINGS = {"rate": {"T": 16}, "tdsnn": {"L": 2}, "tsc": {"T": 8}, "tpc": {"bits": 4}}


@pytest.mark.parametrize("coding", sorted(CODINGS))
def test_conv_layers_keep_their_kernel(coding, digits):
    x = digits[0][:64]
    model = biosnn.prepare(_cnn(), coding, **{k: v for k, v in CODINGS[coding].items() if k in ("L", "bits")})
    snn = biosnn.convert(model, coding, calibration=x, input_shape=(1, 8, 8), **CODINGS[coding])
    spec = snn.spec_for(2)
    convs = [p for p in spec.projections if isinstance(p.connect, Conv2D)]
    # both convolutions (input -> conv1, pool -> conv2) keep their kernel: no per-synapse weights
    assert len(convs) == 2, [(p.name, type(p.connect).__name__) for p in spec.projections]
    kernels = sorted(p.connect.kernel.data.shape for p in convs)
    assert kernels == [(4, 1, 3, 3), (6, 4, 3, 3)]
    for proj in convs:
        assert proj.weights is None
        conn = expand_projection(spec, proj)
        assert len(conn.i) == len(conn.weights) > 0
        # storage: the kernel only, against a target + weight per synapse
        assert static_memory_bytes(len(conn.i), spec.node(proj.source).size, 4, proj.connect.kernel.data.size) \
            == proj.connect.kernel.data.size * 4
    # the linear layer stays explicit (or all-to-all) with its weights
    assert any(isinstance(p.connect, Explicit) and p.weights is not None for p in spec.projections)


def test_shared_kernel_is_exact_or_refused():
    rng = np.random.default_rng(0)
    kern = rng.normal(size=(3, 2, 2, 2))
    layer = type("L", (), {"op": "conv2d", "weight": kern,
                           "params": {"stride": (2, 1), "padding": (1, 0), "dilation": 1, "groups": 1}})()
    conns = cx.conv2d(kern, (2, 5, 4), stride=(2, 1), padding=(1, 0))
    # any per-entry transformation (sign, scale, fixed-point rounding) keeps a kernel
    w = np.round(-3.0 * np.asarray(conns.weights) * 8) / 8
    k = shared_kernel(layer, conns, w)
    np.testing.assert_array_equal(k.ravel()[conns.kernel_index], w)
    connect, weights = weighted_connect(layer, conns, w, shaped=True)
    assert isinstance(connect, Conv2D) and weights is None
    assert connect.stride == (2, 1) and connect.padding == (1, 0)
    again = cx.conv2d(connect.kernel.data, (2, 5, 4), stride=(2, 1), padding=(1, 0))
    np.testing.assert_array_equal(again.i, conns.i)
    np.testing.assert_array_equal(again.j, conns.j)
    np.testing.assert_array_equal(again.weights, w)
    # weights that differ within one kernel entry, unshaped populations, dilation: explicit synapses
    w2 = w.copy()
    w2[0] += 1.0
    assert shared_kernel(layer, conns, w2) is None
    connect, weights = weighted_connect(layer, conns, w2, shaped=True)
    assert isinstance(connect, Explicit)
    np.testing.assert_array_equal(weights.data, w2)
    assert isinstance(weighted_connect(layer, conns, w, shaped=False)[0], Explicit)
    layer.params = dict(layer.params, dilation=2)
    assert shared_kernel(layer, conns, w) is None
