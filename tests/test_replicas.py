"""``replicate``: code that depends on the copy is refused, per-copy inputs give exactly one copy's run.

Complements tests/test_replica_batching.py (replicate's layout rules, every coding through
``SNN.run(replicas=...)``, cpp_standalone): here the checks of code strings (indices, sizes,
timed-array columns), ``(H, W)`` shapes, replicating twice, the cached replicated specs of a
converted network, and replicated convolution/pooling with a different input in every copy on
the runtime and on NEST, against separate runs of one copy.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from torch import nn

import biosnn
from biosnn import connectivity as cx
from biosnn import get_backend
from biosnn.errors import SpecError
from biosnn.spec import (AllToAll, ArrayValue, Conv2D, NetworkSpec, Operation, PoissonInput, Pool2D, Population,
                         Projection, SpikeMonitor, SpikeTimesInput, StateMonitor, TimedArraySpec)
from biosnn.spec.expand import expand_projection
from biosnn.spec.model import NeuronModel, SynapseModel
from biosnn.spec.replicas import replicate

ACC = NeuronModel("v : volt\nx : 1", threshold="v > 1*mV", reset="v = 0*mV")


def _driven(op="x = drive(t, i)\nv += x * 0.6*mV", on_pre="v_post += w * gain(t, i)", weights="2*mV / N_incoming",
            **extra) -> NetworkSpec:
    """a (4 neurons, driven by a 2-D table) -> all-to-all, gain per source from another table -> b (3)."""
    rng = np.random.default_rng(1)
    return NetworkSpec(
        "driven", dt="0.1*ms", duration="3*ms",
        neuron_models={"acc": ACC}, synapse_models={"gained": SynapseModel("w : volt", on_pre=on_pre)},
        timed_arrays=(TimedArraySpec("drive", ArrayValue(rng.random((6, 4))), "0.5*ms"),
                      TimedArraySpec("gain", ArrayValue(rng.random((6, 4))), "0.5*ms")),
        populations=(Population("a", 4, "acc", operations=(Operation(op),)), Population("b", 3, "acc")),
        projections=(Projection("ab", "a", "b", "gained", AllToAll(), weights=weights),),
        monitors=(SpikeMonitor("a"), SpikeMonitor("b"), StateMonitor("b", ("v",))), **extra)


def _copy_spikes(rec, pop: str, r: int, n: int):
    """(times, indices within the copy) of copy ``r``'s spikes in ``pop`` (``n`` neurons per copy), time-sorted."""
    st = rec.spikes[pop]
    mine = (st.indices >= r * n) & (st.indices < (r + 1) * n)
    return sorted(zip(np.round(st.times[mine], 9), st.indices[mine] - r * n))


@pytest.mark.parametrize("change, field, message", [
    ({"op": "x = drive(t, i)\nv += i * 0.1*mV"}, r"populations\.a\.operations\[0\]",
     r"operation 0 of population 'a' uses i in line 'v \+= i \* 0\.1\*mV': i numbers the neurons of all copies"),
    ({"op": "x = drive(t, i) * N"}, r"populations\.a\.operations\[0\]",
     r"uses N in line 'x = drive\(t, i\) \* N': N counts the neurons \(in a projection"),
    ({"on_pre": "v_post += w * (j + 1)"}, r"projections\.ab\.model\.on_pre",
     r"the on_pre of projection 'ab' uses j in line 'v_post \+= w \* \(j \+ 1\)'"),
    ({"on_pre": "v_post += w * 8 / N"}, r"projections\.ab\.model\.on_pre",
     r"uses N in line 'v_post \+= w \* 8 / N': N counts the neurons \(in a projection: the synapses\)"),
    ({"op": "x = drive(t, 0)"}, r"populations\.a\.operations\[0\]",
     r"reads the 2-D timed array 'drive' as 'drive\(t, 0\)' in line 'x = drive\(t, 0\)': with replicas each copy"),
    ({"op": "x = drive(t, i % 2)"}, r"populations\.a\.operations\[0\]", r"as 'drive\(t, i % 2\)'"),
    ({"weights": "8*mV / N"}, r"projections\.ab\.weights", r"weights = '8\*mV / N' uses N: N counts"),
    ({"inputs": (PoissonInput("q", 4, "(i + 1) * Hz"),)}, r"inputs\.q\.rates",
     r"the rates of input 'q' uses i in line '\(i \+ 1\) \* Hz'"),
], ids=["i-in-operation", "N-in-operation", "j-in-on_pre", "N-in-on_pre", "constant-column", "computed-column",
        "N-in-weights", "i-in-poisson-rates"])
def test_code_that_depends_on_the_copy_is_refused_with_its_line(change, field, message):
    spec = _driven(**change)
    with pytest.raises(SpecError, match=field + r".*" + message):
        replicate(spec, 2)
    assert replicate(spec, 1) is spec  # one copy is always exact


def test_per_copy_table_columns_give_each_copy_its_own_run():
    """Copy r reading columns r*N..(r+1)*N-1 (neurons and synapses) runs exactly as one copy given those columns."""
    R, spec = 3, _driven()
    rep = replicate(spec, R)
    assert rep.projection("ab").weights == "2*mV / N_incoming"  # fan-in is the same in every copy
    assert rep.monitors[2].indices is None  # "all neurons" stays "all"
    rng = np.random.default_rng(7)
    drive, gain = rng.random((6, 4 * R)) * 2, rng.random((6, 4 * R))
    big = get_backend("runtime").build(rep).run(overrides={"drive": drive, "gain": gain}, progress=False)
    sim = get_backend("runtime").build(spec)
    for r in range(R):
        cols = slice(4 * r, 4 * (r + 1))
        one = sim.run(overrides={"drive": drive[:, cols], "gain": gain[:, cols]}, progress=False)
        for pop, n in (("a", 4), ("b", 3)):
            assert _copy_spikes(big, pop, r, n) == _copy_spikes(one, pop, 0, n)
        assert len(one.spikes["b"].times) > 0
        np.testing.assert_array_equal(big.states["b"]["v"].values[:, 3 * r:3 * (r + 1)], one.states["b"]["v"].values)


def _image_net(shape_in=(6, 6), seed=0) -> NetworkSpec:
    """Spike-time image (H, W) -> 3x3 conv (2 maps) -> 2x2 pooling, LIF neurons (runs on Brian2 and NEST)."""
    rng = np.random.default_rng(seed)
    idx, times = rng.integers(0, 36, size=40), np.sort(rng.uniform(0, 40, size=40)).round(1)
    kernel = np.random.default_rng(3).uniform(0.5, 4.0, size=(2, 1, 3, 3))
    return NetworkSpec(
        "image", dt="0.1*ms", duration="60*ms",
        inputs=(SpikeTimesInput("img", 36, ArrayValue(idx), ArrayValue(times, "ms"), shape=shape_in),),
        populations=(Population("c1", 32, "lif", shape=(2, 4, 4), initial={"v": "-65*mV"}),
                     Population("p1", 8, "lif", shape=(2, 2, 2), initial={"v": "-65*mV"})),
        projections=(Projection("conv", "img", "c1", "delta_voltage", Conv2D(ArrayValue(kernel, "mV"))),
                     Projection("pool", "c1", "p1", "delta_voltage", Pool2D(2, weight="16*mV"))),
        monitors=(SpikeMonitor("c1"), SpikeMonitor("p1")))


def test_hw_shapes_and_replicating_twice():
    spec = _image_net()
    six, twice = replicate(spec, 6), replicate(replicate(spec, 2), 3)
    assert six.node("img").shape == (6, 1, 6, 6) and six.node("p1").shape == (6, 2, 2, 2)
    for rep in (six, twice):
        assert rep.node("c1").shape == (6, 2, 4, 4) and rep.node("c1").size == 192
        for proj in spec.projections:
            tiled = cx.replicated(expand_projection(spec, proj), 6)
            got = expand_projection(rep, rep.projection(proj.name))
            np.testing.assert_array_equal(got.i, tiled.i)
            np.testing.assert_array_equal(got.j, tiled.j)
            np.testing.assert_array_equal(got.weights, tiled.weights)
    for a, b in zip(six.inputs[0].indices.data, twice.inputs[0].indices.data):
        assert a == b


@pytest.mark.parametrize("backend", ["runtime", "nest"])
def test_replicated_conv_and_pool_with_an_image_per_copy(backend):
    """Conv2D/Pool2D on (R, C, H, W) shapes: copy r's spikes are those of one copy shown image r."""
    if backend == "nest":
        os.environ.setdefault("PYNEST_QUIET", "1")
        pytest.importorskip("nest")
    R = 3
    singles = [_image_net(seed=r) for r in range(R)]
    rep = replicate(singles[0], R)
    idx = np.concatenate([s.inputs[0].indices.data + 36 * r for r, s in enumerate(singles)])
    times = np.concatenate([s.inputs[0].times.data for s in singles])
    order = np.argsort(times, kind="stable")
    rep = rep.replace(inputs=(dataclasses.replace(rep.inputs[0], indices=ArrayValue(idx[order]),
                                                  times=ArrayValue(times[order], "ms")),))
    big = get_backend(backend).build(rep).run(progress=False)
    for r, spec in enumerate(singles):
        one = get_backend(backend).build(spec).run(progress=False)
        for pop, n in (("c1", 32), ("p1", 8)):
            assert len(one.spikes[pop].times) > 0
            assert _copy_spikes(big, pop, r, n) == _copy_spikes(one, pop, 0, n)


def test_converted_network_caches_its_replicated_specs(digits):
    torch.manual_seed(0)
    ann = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    snn = biosnn.convert(biosnn.prepare(ann, "rate"), "rate", calibration=digits[0][:32], input_shape=(1, 8, 8), T=4)
    spec = snn.spec_for(5, 3)
    assert snn.spec_for(5, 3) is spec and snn.spec_for(5) is snn.spec_for(5, 1)
    one = snn.spec_for(5)
    assert [p.size for p in spec.populations] == [3 * p.size for p in one.populations]
    x_in = next(ta for ta in spec.timed_arrays if ta.name == "x_in")
    assert x_in.values.data.shape == (5, 3 * 64)
    res = snn.run(digits[2][:7], "runtime", batch_size=6, replicas=3, progress=False)
    ref = snn.run(digits[2][:7], "runtime", batch_size=7, progress=False)
    np.testing.assert_array_equal(res.predictions, ref.predictions)
    np.testing.assert_allclose(res.scores, ref.scores, rtol=0, atol=1e-9)
