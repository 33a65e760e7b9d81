"""Fused neuron steps on cpp_standalone (biosnn.backends.brian2_fused): the same spikes and state bit for bit
as Brian2's separate code objects, fused only where that holds.  The codings' networks are compared with
their exact references on cpp_standalone (fused by default) in their own test files."""

from __future__ import annotations

import numpy as np
import pytest

from biosnn.backends import get_backend
from biosnn.backends.brian2_fused import FusedStep, fuse_neuron_steps
from biosnn.spec import (AllToAll, ArrayValue, NetworkSpec, NeuronModel, Operation, Population, Projection,
                         SpikeMonitor, SpikeTimesInput)
from biosnn.spec.model import SynapseModel

_IF = "v : 1\nI : 1\nb : 1 (constant)\nc : 1"


def _spec() -> NetworkSpec:
    """``fast``: a converted layer's layout (operation, threshold and reset in the groups slot, propagation
    after them): all fused.  ``slow``: Brian2's default schedule, a spike monitor recording ``v`` (in the
    thresholds slot, before the resets slot) and a projection reading ``v_pre``: the operation and the
    threshold fused, the reset not.  ``odd``: 70 neurons (64 in the vectorised loop, 6 in the scalar one),
    a reset with two statements and a temporary."""
    rng = np.random.default_rng(5)
    n_in, times = 30, (np.arange(60) // 2) * 1.0
    return NetworkSpec(
        "fused", dt="1*ms", duration="40*ms", seed=2,
        neuron_models={"ifn": NeuronModel(_IF, threshold="v >= theta", reset="v -= theta"),
                       "idle_thr": NeuronModel(_IF + "\nbiosnn_idle = int(t > 25*ms) : 1 (shared)",
                                               threshold="biosnn_idle == 0 and v >= theta", reset="v -= theta"),
                       "ifn2": NeuronModel(_IF, threshold="v > theta", reset="x = v * 0.5\nv = x - theta\nc += 1")},
        synapse_models={"cur": SynapseModel("w : 1", on_pre="I_post += w"),
                        "readv": SynapseModel("w : 1", on_pre="I_post += w * v_pre")},
        populations=[
            Population("fast", 200, "ifn", parameters={"theta": "0.9"}, order=1,
                       initial={"b": ArrayValue(rng.normal(0.05, 0.1, 200))},
                       operations=[Operation("v += I + b\nI = 0", when="groups", order=10)]),
            Population("slow", 100, "ifn", parameters={"theta": "1.1"},
                       initial={"b": ArrayValue(rng.normal(0.05, 0.1, 100))},
                       operations=[Operation("v += I + b\nI = 0", when="groups")]),
            Population("odd", 70, "ifn2", parameters={"theta": "0.7"}, order=2,
                       initial={"b": ArrayValue(rng.normal(0.02, 0.1, 70))},
                       operations=[Operation("v += I + b\nI = 0", when="groups", order=20)]),
            Population("sink", 10, "ifn", parameters={"theta": "1e9"}),
            # a shared subexpression biosnn_idle (brian2_standalone.IDLE_LOOPS): used by the threshold only
            # (the operation runs on idle steps, the threshold not), and by every block (no neuron on idle steps)
            Population("part", 90, "idle_thr", parameters={"theta": "0.8"}, order=3,
                       initial={"b": ArrayValue(rng.normal(0.05, 0.1, 90))},
                       operations=[Operation("v += I + b\nI = 0", when="groups", order=30)]),
            Population("whole", 90, "idle_thr", parameters={"theta": "0.8"}, order=4,
                       initial={"b": ArrayValue(rng.normal(0.05, 0.1, 90))},
                       operations=[Operation("v += (1 - biosnn_idle) * (I + b)\nI = I * biosnn_idle", when="groups",
                                             order=40)])],
        inputs=[SpikeTimesInput("drive", n_in, ArrayValue(np.arange(60) % n_in), ArrayValue(times, "ms"),
                                period="30*ms")],
        projections=[
            Projection("drive_fast", "drive", "fast", "cur", AllToAll(), weights=ArrayValue(rng.random(n_in * 200))),
            Projection("drive_slow", "drive", "slow", "cur", AllToAll(), weights=ArrayValue(rng.random(n_in * 100))),
            Projection("fast_odd", "fast", "odd", "cur", AllToAll(), weights=ArrayValue(rng.normal(0.05, 0.2, 14000)),
                       order=1),
            Projection("slow_sink", "slow", "sink", "readv", AllToAll(), weights=ArrayValue(rng.random(1000))),
            Projection("drive_part", "drive", "part", "cur", AllToAll(), weights=ArrayValue(rng.random(n_in * 90))),
            Projection("drive_whole", "drive", "whole", "cur", AllToAll(), weights=ArrayValue(rng.random(n_in * 90)))],
        monitors=[SpikeMonitor("fast"), SpikeMonitor("slow", variables=("v",)), SpikeMonitor("odd"),
                  SpikeMonitor("part"), SpikeMonitor("whole")])


@pytest.fixture(scope="module")
def runs(build_cache):
    spec = _spec()
    final = [f"{p}.{v}" for p in ("fast", "slow", "odd", "sink", "part", "whole") for v in ("v", "I", "c")]
    out = {}
    for fused in (True, False):
        sim = get_backend("cpp_standalone", cache_dir=build_cache, fused_steps=fused).build(spec)
        out[fused] = sim, sim.run(progress=False, final_state=final)
    return out


@pytest.mark.standalone
def test_fused_steps_equal_the_separate_code_objects_bit_for_bit(runs):
    (_, fused), (_, stock) = runs[True], runs[False]
    for name in ("fast", "slow", "odd", "part", "whole"):
        assert len(stock.spikes[name].times) > 20, name   # the test needs spikes
        np.testing.assert_array_equal(fused.spikes[name].times, stock.spikes[name].times, err_msg=name)
        np.testing.assert_array_equal(fused.spikes[name].indices, stock.spikes[name].indices, err_msg=name)
    np.testing.assert_array_equal(fused.spike_values["slow"]["v"].values, stock.spike_values["slow"]["v"].values)
    for key, value in stock.final.items():
        np.testing.assert_array_equal(fused.final[key].values, value.values, err_msg=key)


@pytest.mark.standalone
def test_the_fused_template_runs_where_legal_and_only_there(runs):
    (sim, _), (stock_sim, _) = runs[True], runs[False]
    # sink's reset passes what lies between (slow_sink adds into sink's I, reads slow's v); slow's does not
    assert sim.fused_steps == [FusedStep("fast", ("fast_op0",), True), FusedStep("odd", ("odd_op0",), True),
                               FusedStep("part", ("part_op0",), True), FusedStep("whole", ("whole_op0",), True),
                               FusedStep("sink", (), True), FusedStep("slow", ("slow_op0",), False)]
    assert stock_sim.fused_steps == []
    main = (sim.directory / "main.cpp").read_text()
    for name in ("fast", "odd"):
        assert f"_run_{name}_op0_codeobject)" not in main and f"_run_{name}_spike_resetter_codeobject)" not in main
        code = (sim.directory / "code_objects" / f"{name}_spike_thresholder_codeobject.cpp").read_text()
        assert "_biosnn_events" in code and "BIOSNN_FUSED_AVX512" in code
    assert "_run_slow_spike_resetter_codeobject)" in main and "_run_slow_op0_codeobject)" not in main
    assert "_run_fast_spike_resetter_codeobject)" in (stock_sim.directory / "main.cpp").read_text()
    code = {name: (sim.directory / "code_objects" / f"{name}_spike_thresholder_codeobject.cpp").read_text()
            for name in ("part", "whole")}
    assert "if (!biosnn_idle)" in code["part"] and "biosnn_idle ? 0 : N" not in code["part"]
    assert "biosnn_idle ? 0 : N" in code["whole"] and "if (!biosnn_idle)" not in code["whole"]


def test_refusals_without_compiling():
    """Refractoriness, a shared variable written, two blocks drawing random numbers, an operation on another
    clock: nothing of those fused (decided on the Brian2 objects, runtime device)."""
    import gc

    import brian2 as b2
    warn = b2.prefs.logging.warn_for_unused_objects
    b2.prefs.logging.warn_for_unused_objects = False   # the objects never run
    try:
        g = b2.NeuronGroup(4, "v : 1\ns : 1 (shared)", threshold="v > 1", reset="v = 0", refractory=2 * b2.ms,
                           name="refr")
        h = b2.NeuronGroup(4, "v : 1", threshold="v > rand()", reset="v = 0", name="plain")
        ops = [h.run_regularly("v += rand()", when="groups", name="plain_rand")]
        k = b2.NeuronGroup(4, "v : 1", threshold="v > 1", reset="v = 0", name="other")
        ops.append(k.run_regularly("v += 0.5", dt=2 * b2.ms, when="groups", name="other_slow"))
        q = b2.NeuronGroup(4, "v : 1\ns : 1 (shared)", threshold="v > s", reset="v = 0", name="shared")
        ops.append(q.run_regularly("s = 1\nv += 0.5", when="groups", name="shared_write"))
        steps = fuse_neuron_steps(b2.Network(g, h, k, q, *ops))
        # the threshold (rand()) and reset of plain, the threshold and reset of other and shared
        assert {s.group: s for s in steps} == {name: FusedStep(name, (), True) for name in ("plain", "other", "shared")}
        assert all(op.active for op in ops)
        del g, h, k, q, ops
        gc.collect()
    finally:
        b2.prefs.logging.warn_for_unused_objects = warn
