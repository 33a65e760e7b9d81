"""Replicas x windows: ``replicate`` (spec level) and ``SNN.run(replicas=...)`` for every coding.

R copies of a converted network in one simulation must give exactly what one copy gives
sample by sample (predictions, scores, per-layer spikes and synaptic operations), on the
runtime and on cpp_standalone (whose convolution template keeps one kernel for all copies).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import biosnn
from biosnn import connectivity as cx
from biosnn.backends.brian2_static import ConvGeometry
from biosnn.errors import ConversionError, SpecError
from biosnn.spec import (ArrayValue, Conv2D, Explicit, NetworkSpec, OneToOne, Operation, Pool2D, Population, Projection,
                         SpikeMonitor, SpikeTimesInput, StateMonitor, TimedArraySpec, load_spec, save_spec)
from biosnn.spec.expand import expand_projection
from biosnn.spec.model import NeuronModel
from biosnn.spec.replicas import replicate


def _spec(weights="1*mV") -> NetworkSpec:
    rng = np.random.default_rng(0)
    return NetworkSpec(
        "rep", dt="0.1*ms", duration="5*ms", seed=2,
        neuron_models={"acc": NeuronModel("v : volt\nx : 1", threshold="v > 1*mV", reset="v = 0*mV")},
        timed_arrays=(TimedArraySpec("drive", ArrayValue(rng.random((3, 16))), "1*ms"),),
        populations=(Population("a", 16, "acc", shape=(1, 4, 4), initial={"x": ArrayValue(np.arange(16.0))},
                                operations=()),
                     Population("b", 18, "acc", shape=(2, 3, 3)),
                     Population("c", 8, "acc", shape=(2, 2, 2)),
                     Population("d", 5, "lif")),
        inputs=(SpikeTimesInput("s", 5, ArrayValue(np.array([0, 3, 1])), ArrayValue(np.array([1.0, 1.0, 2.5]), "ms")),),
        projections=(Projection("ab", "a", "b", "delta_voltage", Conv2D(ArrayValue(rng.normal(size=(2, 1, 2, 2)), "mV"))),
                     Projection("bc", "b", "c", "delta_voltage", Pool2D((2, 2), stride=(1, 1), weight="0.25*mV")),
                     Projection("sd", "s", "d", "delta_voltage", OneToOne(), weights=weights),
                     Projection("ad", "a", "d", "delta_voltage", Explicit(ArrayValue([0, 2, 5]), ArrayValue([4, 0, 1])),
                                weights=ArrayValue(np.array([1.0, 2.0, 3.0]), "mV"))),
        monitors=(SpikeMonitor("d"), StateMonitor("b", ("v",), indices=(0, 5))),
    )


def test_replicate_sizes_shapes_inputs_tables_monitors(tmp_path):
    spec = _spec()
    rep = replicate(spec, 3)
    assert replicate(spec, 1) is spec
    assert [p.size for p in rep.populations] == [48, 54, 24, 15]
    assert rep.node("a").shape == (3, 1, 4, 4) and rep.node("d").shape is None
    np.testing.assert_array_equal(rep.node("a").initial["x"].data, np.tile(np.arange(16.0), 3))
    # spike times: every copy fires its own sources at the same times
    s = rep.node("s")
    assert s.size == 15
    assert sorted(zip(s.times.data.tolist(), s.indices.data.tolist())) == sorted(
        (t, i + 5 * r) for r in range(3) for t, i in [(1.0, 0), (1.0, 3), (2.5, 1)])
    # 2-D timed arrays: columns per copy
    np.testing.assert_array_equal(rep.timed_arrays[0].values.data, np.tile(spec.timed_arrays[0].values.data, (1, 3)))
    assert rep.monitors[1].indices == (0, 5, 18, 23, 36, 41)
    # every projection expands to the block-diagonal copies of one copy's synapses, in (i, j) order
    for proj in spec.projections:
        one, three = expand_projection(spec, proj), expand_projection(rep, rep.projection(proj.name))
        tiled = cx.replicated(one, 3)
        np.testing.assert_array_equal(three.i, tiled.i)
        np.testing.assert_array_equal(three.j, tiled.j)
        assert np.all(np.diff(three.i * three.n_post + three.j) >= 0)
    # Conv2D and Pool2D keep their rule; the rest becomes explicit with copied weights
    assert isinstance(rep.projection("ab").connect, Conv2D) and isinstance(rep.projection("bc").connect, Pool2D)
    np.testing.assert_array_equal(rep.projection("ad").weights.data, np.tile([1.0, 2.0, 3.0], 3))
    assert rep.projection("sd").weights == "1*mV"
    # the convolution's geometry knows the copies: one kernel for all
    conn = expand_projection(rep, rep.projection("ab"))
    geo = ConvGeometry.of(rep.projection("ab").connect, conn.pre_shape, conn.post_shape)
    assert (geo.R, geo.n_synapses()) == (3, len(conn.i))
    # a replicated spec is a spec like any other: file round trip
    back = load_spec(save_spec(rep, tmp_path / "rep.yaml"))
    assert back.node("b").shape == (3, 2, 3, 3) and back.monitors[1].indices == rep.monitors[1].indices


def test_replicate_refuses_what_cannot_be_copied_exactly():
    with pytest.raises(SpecError, match=r"replicas must be a positive integer, got 0"):
        replicate(_spec(), 0)
    with pytest.raises(SpecError, match=r"uses the indices i/j or random numbers: the copies would differ"):
        replicate(_spec(weights="1*mV * (i + 1)"), 2)
    with pytest.raises(SpecError, match=r"uses the indices i/j or random numbers"):
        replicate(_spec(weights="rand()*mV"), 2)
    odd = _spec().replace(populations=tuple(
        p if p.name != "d" else Population("d", 5, "acc", operations=(Operation("x = drive(t, i)"),)) for p in _spec().populations))
    with pytest.raises(SpecError, match=r"timed array 'drive' has 16 columns but is read by groups of \[5\] neurons"):
        replicate(odd, 2)


def _cnn(pool: str):
    torch.manual_seed(0)
    Pool = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), Pool(2), nn.Conv2d(4, 6, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(24, 10))


CASES = {"rate-avg": ("rate", "avg", {"T": 12}), "rate-max-spikes": ("rate", "max", {"T": 12, "readout": "spikes"}),
         "tdsnn": ("tdsnn", "max", {"L": 2}), "tsc": ("tsc", "avg", {"T": 6}), "tpc": ("tpc", "avg", {"bits": 4}),
         "stc": ("stc", "avg", {"T": 4})}


def _snn(case, digits):
    coding, pool, params = CASES[case]
    prep = {k: v for k, v in params.items() if k in ("L", "bits", "T") and coding in ("tdsnn", "tpc", "stc")}
    return biosnn.convert(biosnn.prepare(_cnn(pool), coding, **prep), coding, calibration=digits[0][:64],
                          input_shape=(1, 8, 8), **params)


def _assert_same(a, b):
    np.testing.assert_array_equal(a.predictions, b.predictions)
    np.testing.assert_allclose(a.scores, b.scores, rtol=0, atol=1e-9)
    assert a.layer_spikes.keys() == b.layer_spikes.keys() and a.layer_synops.keys() == b.layer_synops.keys()
    for key in a.layer_spikes:
        np.testing.assert_array_equal(a.layer_spikes[key], b.layer_spikes[key])
        np.testing.assert_array_equal(a.layer_synops[key], b.layer_synops[key])


@pytest.mark.parametrize("case", sorted(CASES))
def test_replicas_equal_one_copy_sample_by_sample(case, digits):
    snn = _snn(case, digits)
    x = digits[2][:11]
    one = snn.run(x, "runtime", batch_size=5, progress=False)
    assert one.layer_spikes and sum(v.sum() for v in one.layer_spikes.values()) > 0
    for batch, R in [(5, 2), (11, 3)]:  # uneven: padded copies and windows
        _assert_same(one, snn.run(x, "runtime", batch_size=batch, replicas=R, progress=False))


def test_replicas_argument_errors(digits):
    snn = _snn("rate-avg", digits)
    x = digits[2][:4]
    with pytest.raises(ConversionError, match=r"replicas must be a positive integer, got 0"):
        snn.run(x, "runtime", replicas=0, progress=False)
    with pytest.raises(ConversionError, match=r"replicas \(8\) must not exceed the samples per run \(4\)"):
        snn.run(x, "runtime", batch_size=4, replicas=8, progress=False)


@pytest.mark.standalone
def test_cpp_standalone_replicas_with_threads_equal_runtime(digits, build_cache):
    """Replicated convolutions on the implicit-conv template (one kernel, R copies), 2 OpenMP threads."""
    snn = _snn("rate-avg", digits)
    x = digits[2][:9]
    ref = snn.run(x, "runtime", batch_size=9, progress=False)
    res = snn.run(x, "cpp_standalone", batch_size=9, replicas=3, progress=False, cache_dir=build_cache, threads=2)
    _assert_same(ref, res)
