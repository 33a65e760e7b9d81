"""biosnn's static-projection template (cpp_standalone) against Brian2's stock Synapses and the runtime."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest

from biosnn.backends import get_backend
from biosnn.backends.brian2_static import (ConvGeometry, StaticStatement, channels_last, static_memory_bytes,
                                           static_statements)
from biosnn.spec import (AllToAll, ArrayValue, Conv2D, Explicit, NetworkSpec, NeuronModel, Operation, Population,
                         Projection, SpikeMonitor, SpikeTimesInput, StateMonitor)
from biosnn.spec.model import SynapseModel


def spec() -> NetworkSpec:
    """Every statement form: w, w * x_pre (per neuron and shared x), a constant, x_pre alone; every layout:
    all-to-all (dense), explicit (CSR target lists), conv kernels (plain, and strided + padded + grouped)
    channel-major (few output channels per group) and channels last (``biosnn_static_conv_hwc.cpp``:
    ``p_f`` stride 1 + padding, ``pr_g`` two replicas + stride 2 + groups + a presynaptic factor, ``a_h``
    a constant factor and one spike or two per step (adds in place or through the copy), ``pr_k`` two
    replicas + stride 1, ``p_four`` 4 output channels: copies one value at a time, the others 8: tiles of 8 x 8
    transposed in registers where the compiler can, with positions left over: 25 and 9 per channel, not 16),
    every source onto one target neuron (``*_mtr``: ``biosnn_static_reduce.cpp``).

    Each post-synaptic variable is written by one projection only: the order of projections within a
    schedule slot is Brian2's choice (by object name), which differs between the two implementations.
    """
    rng = np.random.default_rng(3)
    times = np.arange(40) * 0.5
    pairs = rng.choice(16 * 16, 40, replace=False)  # explicit synapses, unsorted, each pair once
    return NetworkSpec(
        "static_forms", dt="0.1*ms", duration="25*ms", seed=1,
        neuron_models={
            "src": NeuronModel("dq/dt = r : 1\nr : Hz (constant)\nx : 1\ns : 1 (shared)\ncount : 1",
                               threshold="q > 1", reset="q -= 1\ncount += 1"),
            "acc": NeuronModel("dv/dt = -v/(10*ms) : volt\nI : 1\nJ : 1\nK : 1\nn : 1\nm : 1\nx : 1",
                               threshold="v > 2*mV", reset="v = 0*mV")},
        synapse_models={
            "jump": SynapseModel("w : volt", on_pre="v_post += w"),
            "current": SynapseModel("w : 1", on_pre="I_post += w * x_pre\nJ_post += s_pre * w"),
            "count": SynapseModel("", on_pre="n_post += 1\nm_post += x_pre"),
            "stateful": SynapseModel("w : 1\nc : 1", on_pre="c += 1\nK_post += w"),
            "scaled": SynapseModel("w : 1", on_pre="I_post += w * x_pre"),
            "half": SynapseModel("w : volt", on_pre="v_post += w * 0.5"),
            "tally": SynapseModel("", on_pre="K_post += 0.3")},
        populations=[
            Population("a", 16, "src", shape=(1, 4, 4), initial={
                "x": ArrayValue(rng.random(16)), "r": ArrayValue(rng.uniform(100, 400, 16), "Hz")},
                operations=[Operation("s = 0.5 + 0.001 * t / ms")]),
            Population("b", 18, "acc", shape=(2, 3, 3), initial={"x": ArrayValue(rng.random(18))}),
            Population("c", 5, "acc"),
            Population("d", 16, "acc", shape=(4, 2, 2)),
            Population("e", 600, "acc"),
            # fast sources (20-50 % per step) for the channels-last convolutions
            Population("p", 75, "src", shape=(3, 5, 5), initial={"r": ArrayValue(rng.uniform(2e3, 5e3, 75), "Hz")}),
            Population("pr", 200, "src", shape=(2, 4, 5, 5), initial={
                "x": ArrayValue(rng.random(200)), "r": ArrayValue(rng.uniform(2e3, 5e3, 200), "Hz")}),
            Population("f", 200, "acc", shape=(8, 5, 5)),
            Population("g", 288, "acc", shape=(2, 16, 3, 3)),
            Population("h", 128, "acc", shape=(8, 4, 4)),
            Population("k", 400, "acc", shape=(2, 8, 5, 5)),
            Population("four", 100, "acc", shape=(4, 5, 5)),
            Population("mtr", 2, "acc"),
            Population("pool", 4, "acc")],
        inputs=[SpikeTimesInput("drive", 16, ArrayValue(np.arange(40) % 16), ArrayValue(times, "ms"))],
        projections=[
            Projection("a_b", "a", "b", "jump", Conv2D(ArrayValue(rng.normal(1, 0.5, (2, 1, 2, 2)), "mV"))),
            Projection("a_c", "a", "c", "current", AllToAll(), weights=ArrayValue(rng.random(80))),
            Projection("b_c", "b", "c", "count", AllToAll()),
            Projection("drive_c", "drive", "c", "jump", AllToAll(), weights=ArrayValue(np.full(80, 0.3), "mV")),
            Projection("b_c_stateful", "b", "c", "stateful", AllToAll(), weights=ArrayValue(np.ones(90))),
            Projection("b_d", "b", "d", "jump", Conv2D(ArrayValue(rng.normal(1, 0.5, (4, 1, 2, 2)), "mV"),
                                                       stride=2, padding=1, groups=2)),
            Projection("a_d", "a", "d", "current", Explicit(ArrayValue(pairs // 16), ArrayValue(pairs % 16)),
                       weights=ArrayValue(rng.random(40))),
            # long CSR rows (50 targets per source, spread over the 600): OpenMP target blocks
            Projection("b_e", "b", "e", "jump", Explicit(ArrayValue(np.repeat(np.arange(18), 50)),
                                                          ArrayValue(rng.integers(0, 600, 900))),
                       weights=ArrayValue(rng.normal(1, 0.5, 900), "mV")),
            Projection("p_f", "p", "f", "jump", Conv2D(ArrayValue(rng.normal(0.2, 0.5, (8, 3, 3, 3)), "mV"),
                                                       padding=1)),
            Projection("pr_g", "pr", "g", "scaled", Conv2D(ArrayValue(rng.normal(0, 1, (16, 2, 3, 3))), stride=2,
                                                           padding=1, groups=2)),
            Projection("a_h", "a", "h", "half", Conv2D(ArrayValue(rng.normal(1, 0.5, (8, 1, 3, 3)), "mV"),
                                                       padding=1)),
            Projection("pr_k", "pr", "k", "jump", Conv2D(ArrayValue(rng.normal(0.1, 0.5, (8, 4, 3, 3)), "mV"),
                                                         padding=1)),
        ] + [  # every source neuron onto one target neuron (biosnn_static_reduce.cpp, the rate coding's meters):
            # integer constants (one addition n * c), a non-integer constant, presynaptic factors, weights
            Projection(f"{src}_mtr", src, "mtr", model, Explicit(ArrayValue(np.arange(n)), ArrayValue(np.full(n, j))),
                       weights=ArrayValue(rng.normal(0.1, 0.3, n), "mV") if model == "jump" else None)
            for src, n, model, j in (("a", 16, "count", 1), ("b", 18, "count", 0), ("p", 75, "jump", 0),
                                     ("pr", 200, "tally", 1))] + [
            # one synapse per source neuron (average pooling): no row pointers
            Projection("p_pool", "p", "pool", "jump",
                       Explicit(ArrayValue(np.arange(75)), ArrayValue(np.arange(75) % 4)),
                       weights=ArrayValue(rng.normal(0.1, 0.3, 75), "mV")),
            Projection("p_four", "p", "four", "jump", Conv2D(ArrayValue(rng.normal(0.2, 0.5, (4, 3, 3, 3)), "mV"),
                                                       padding=1))],
        monitors=[SpikeMonitor("a"), SpikeMonitor("b"), SpikeMonitor("c"), SpikeMonitor("f"), SpikeMonitor("k"),
                  StateMonitor("b", ("v",)), StateMonitor("c", ("v", "I", "J", "K", "n", "m")),
                  StateMonitor("d", ("v", "I", "J")), StateMonitor("e", ("v",)), StateMonitor("f", ("v",)),
                  StateMonitor("g", ("I",)), StateMonitor("h", ("v",)), StateMonitor("k", ("v",)),
                  StateMonitor("four", ("v",)),
                  StateMonitor("mtr", ("v", "n", "m", "K")), StateMonitor("pool", ("v",))])


def native_vectors_of_8(itemsize: int) -> bool:
    """Whether Brian2's C++ compiler, with its flags, has native vectors of 8 values of ``itemsize`` bytes and
    ``__builtin_shufflevector`` (the condition of ``_biosnn_tr8`` in ``biosnn_static_conv_hwc.cpp``)."""
    import subprocess

    from brian2.codegen.cpp_prefs import get_compiler_and_args
    flags = get_compiler_and_args()[1]
    macros = subprocess.run(["g++", *flags, "-dM", "-E", "-x", "c++", "/dev/null"], capture_output=True, text=True,
                            check=True).stdout.split("\n")
    defined = {line.split()[1]: line.split()[2] if len(line.split()) > 2 else "" for line in macros if line.strip()}
    compiler = "__clang__" in defined or int(defined.get("__GNUC__", 0)) >= 12
    return compiler and ("__AVX512F__" if itemsize == 8 else "__AVX__") in defined


def tiles_in_registers(sim) -> set:
    """The channels-last convolutions of a built binary that transpose their copies in registers (their marker
    symbol ``biosnn_tr8_<code object>``)."""
    import subprocess
    symbols = subprocess.run(["nm", str(sim.directory / "main")], capture_output=True, text=True, check=True).stdout
    names = [line.split()[-1] for line in symbols.splitlines() if line.strip()]
    # (Brian2 numbers the code objects of a second build in one process: <name>_propagate_codeobject_1)
    return {re.sub(r"_propagate_codeobject(_\d+)?$", "", name.removeprefix("biosnn_tr8_"))
            for name in names if name.startswith("biosnn_tr8_")}


def test_which_projections_are_static():
    s = spec()
    forms = {p.name: static_statements(s, p) for p in s.projections}
    assert forms["a_b"] == (StaticStatement("v", True),)
    assert forms["a_c"] == (StaticStatement("I", True, pre="x"), StaticStatement("J", True, pre="s"))
    assert forms["b_c"] == (StaticStatement("n", False, const="1.0"), StaticStatement("m", False, pre="x"))
    assert forms["b_c_stateful"] is None          # synaptic state besides the weight: stock Synapses
    delayed = Projection("d", "a", "c", "jump", AllToAll(), weights="1*mV", delay="1*ms")
    assert static_statements(s, delayed) is None  # delays: stock Synapses
    # a convolution stores its kernel only; otherwise 4-byte targets + weights, row pointers
    assert static_memory_bytes(72, 16, 8, 8) == 8 * 8
    assert static_memory_bytes(80, 16, 4, None) == 80 * 8 + 4 * 17


def test_which_convolutions_take_the_channels_last_template():
    geo = ConvGeometry.of(Conv2D(ArrayValue(np.ones((8, 3, 3, 3)))), (3, 5, 5), (8, 3, 3))
    one, per_neuron = [StaticStatement("v", True)], [{"target_index": "_j"}]
    assert channels_last(geo, one, per_neuron, False, False)
    # brian2cuda keeps its one layout (biosnn_static_conv.cu); a recurrent convolution, a shared target,
    # two statements or a statement without the weight keep the channel-major template
    assert not channels_last(geo, one, per_neuron, False, True)
    assert not channels_last(geo, one, per_neuron, True, False)
    assert not channels_last(geo, one, [{"target_index": "0"}], False, False)
    assert not channels_last(geo, one * 2, per_neuron * 2, False, False)
    assert not channels_last(geo, [StaticStatement("n", False, const="1.0")], per_neuron, False, False)
    # runs of additions per kernel row: cout_g * kw with stride 1 (depthwise 3x3: 3), cout_g otherwise
    depthwise = ConvGeometry.of(Conv2D(ArrayValue(np.ones((8, 1, 3, 3))), groups=8), (8, 5, 5), (8, 3, 3))
    assert not channels_last(depthwise, one, per_neuron, False, False)
    strided = ConvGeometry.of(Conv2D(ArrayValue(np.ones((4, 3, 3, 3))), stride=2), (3, 5, 5), (4, 2, 2))
    assert not channels_last(strided, one, per_neuron, False, False)
    assert channels_last(replace(strided, sh=1, sw=1), one, per_neuron, False, False)


@pytest.mark.standalone
def test_static_template_equals_stock_synapses_and_runtime(build_cache):
    s = spec()
    ref = get_backend("runtime").build(s).run(progress=False)
    runs = {}
    for static in (True, False):
        sim = get_backend("cpp_standalone", cache_dir=build_cache, static_projections=static).build(s)
        generated = {p.name for p in (sim.directory / "code_objects").glob("*_propagate_codeobject.cpp")}
        assert ("a_c_propagate_codeobject.cpp" in generated) is static
        assert "b_c_stateful_propagate_codeobject.cpp" not in generated
        runs[static] = sim.run(progress=False, final_state=["a_b.w", "a_c.w"])
        if static:  # output channels innermost for long enough kernel rows (cout_g * kw, cout_g with stride 2)
            hwc = {p.name.removesuffix("_propagate_codeobject.cpp")
                   for p in (sim.directory / "code_objects").glob("*_propagate_codeobject.cpp")
                   if not p.name.startswith("before_run_") and "_wT_made" in p.read_text()}
            assert hwc == {"p_f", "pr_g", "a_h", "pr_k", "p_four"}
            # 8 output channels per group: the copies transpose 8 x 8 tiles in registers (a symbol in the
            # binary says so) wherever the compiler has native vectors of 8 doubles; 4 channels: never
            assert tiles_in_registers(sim) == ({"p_f", "pr_g", "a_h", "pr_k"} if native_vectors_of_8(8) else set())
            reduce = {p.name.removesuffix("_propagate_codeobject.cpp")
                      for p in (sim.directory / "code_objects").glob("*_propagate_codeobject.cpp")
                      if "BIOSNN_KEEP_ORDER(_acc)" in p.read_text()}
            assert reduce == {"a_mtr", "b_mtr", "p_mtr", "pr_mtr"}
            one = (sim.directory / "code_objects" / "p_pool_propagate_codeobject.cpp").read_text()
            assert "const int32_t _s = _i;" in one and "_end" not in one
        if static:
            renamed = sorted((sim.directory / "code_objects").glob("*_codeobject_1.cpp"))
        if static:  # one copy of the targets and weights in the binary: no Brian2 static array for them
            objects_cpp = (sim.directory / "objects.cpp").read_text()
            for array in ("_array_a_d__post", "_array_a_d_w", "_array_a_c_w", "_array_a_b_w"):
                assert f"_static_array_{array}" not in objects_cpp
                assert (sim.directory / "static_arrays" / f"biosnn_{array}").exists()
            # all-to-all stores its weights only, convolutions their kernel only: no target lists
            for name in ("a_c", "a_b", "b_d"):
                assert f"_array_{name}__post" not in objects_cpp
            assert "const int _num__array_a_b_w = 8;" in objects_cpp
            # weights given at run time replace the ones read from the file
            new_w = np.linspace(0.0, 1.0, 80)
            over = sim.run(progress=False, overrides={"a_c.w": new_w}, final_state=["a_c.w"])
            np.testing.assert_array_equal(over.final["a_c.w"].values, new_w)
    assert len(ref.spikes["c"]) > 5 and len(ref.spikes["b"]) > 5
    for pop in ("a", "b", "c", "f", "k"):  # same random numbers, same order of additions: identical runs
        for rec in runs.values():
            np.testing.assert_array_equal(rec.spikes[pop].indices, ref.spikes[pop].indices)
            np.testing.assert_allclose(rec.spikes[pop].times, ref.spikes[pop].times, atol=1e-12)
    channels_last = [("f", "v"), ("g", "I"), ("h", "v"), ("k", "v"), ("four", "v")]
    mtr = ref.states["mtr"]
    assert mtr["n"].values[-1].min() > 5 and mtr["K"].values[-1][1] > 20 and np.ptp(mtr["v"].values[:, 0]) > 0
    assert np.count_nonzero(np.diff(ref.states["pool"]["v"].values, axis=0)) > 100
    channels_last += [("mtr", "v"), ("mtr", "n"), ("mtr", "m"), ("mtr", "K"), ("pool", "v")]
    for pop, var in [("b", "v"), ("e", "v"), ("c", "v"), ("c", "I"), ("c", "J"), ("c", "K"), ("c", "n"), ("c", "m"),
                     ("d", "v"), ("d", "I"), ("d", "J")] + channels_last:
        np.testing.assert_array_equal(runs[True].states[pop][var].values, runs[False].states[pop][var].values)
        np.testing.assert_allclose(runs[True].states[pop][var].values, ref.states[pop][var].values,
                                   rtol=1e-12, atol=1e-15)
    assert np.count_nonzero(np.diff(ref.states["d"]["v"].values, axis=-1)) > 20  # the strided conv delivers
    for pop, var in channels_last:
        assert np.count_nonzero(np.diff(ref.states[pop][var].values, axis=-1)) > 100, pop
    assert len(ref.spikes["f"]) > 20 and len(ref.spikes["k"]) > 20
    # the shared conv kernel is the projection's weight variable (8 entries), per-synapse weights otherwise
    assert runs[True].final["a_b.w"].values.shape == (8,) and runs[False].final["a_b.w"].values.shape == (72,)
    np.testing.assert_array_equal(runs[True].final["a_c.w"].values, runs[False].final["a_c.w"].values)
    # OpenMP (2 threads): threads own blocks of targets (dense and CSR) or output channels (conv): no
    # atomics, same order of additions: bit-identical to one thread; a shared target variable (s_pre
    # read, J written per neuron: still blocked) would need atomics
    par = get_backend("cpp_standalone", cache_dir=build_cache, static_projections=True, threads=2).build(s)
    code = par.directory / "code_objects"
    for name in ("a_c", "b_d", "a_b", "b_c", "b_e", "p_f", "a_h"):
        text = (code / f"{name}_propagate_codeobject.cpp").read_text()
        assert "omp atomic" not in text and "omp parallel for schedule(static)" in text, name
    for name in ("pr_g", "pr_k"):  # channels last, replicas: threads own replicas
        text = (code / f"{name}_propagate_codeobject.cpp").read_text()
        assert "omp atomic" not in text and "omp parallel for schedule(dynamic, 1)" in text, name
    short = (code / "a_d_propagate_codeobject.cpp").read_text()  # 2.5 synapses per source: one thread
    assert "omp atomic" not in short and "omp parallel" not in short
    omp = par.run(progress=False)
    for pop in ("a", "b", "c", "f", "k"):
        np.testing.assert_array_equal(omp.spikes[pop].indices, ref.spikes[pop].indices)
    assert np.count_nonzero(runs[True].states["e"]["v"].values) > 1000  # the long rows deliver
    for pop, var in [("b", "v"), ("c", "v"), ("c", "I"), ("c", "J"), ("c", "n"), ("c", "m"), ("d", "v"), ("d", "I"),
                     ("d", "J"), ("e", "v")] + channels_last:
        np.testing.assert_array_equal(omp.states[pop][var].values, runs[True].states[pop][var].values)
    # building the same structure again in this process regenerates the same code: no renamed
    # code objects (``*_codeobject_1``), hence no recompilation.  (Brian2 objects that other tests of
    # this worker process keep alive may already have renamed the first build's objects: compare with it.)
    again = get_backend("cpp_standalone", cache_dir=build_cache, static_projections=True).build(s)
    assert again.compiled is False
    assert sorted((again.directory / "code_objects").glob("*_codeobject_1.cpp")) == renamed


@pytest.mark.standalone
def test_channels_last_convolutions_in_float32_with_kernels_set_between_runs(build_cache):
    """float32 (twice the SIMD lanes), and kernels changed between the two runs of one binary (a protocol):
    the channels-last template transposes the kernel again at the first step of every run, so both runs
    equal Brian2's stock Synapses bit for bit (each synapse there holds its own copy of the entry)."""
    from biosnn.spec import Segment
    s = spec().replace(protocol=(Segment("12.5*ms"), Segment("12.5*ms", {"p_f.w": "-0.5*w", "pr_g.w": "2*w"})))
    runs = {}
    for static in (True, False):
        sim = get_backend("cpp_standalone", cache_dir=build_cache, static_projections=static, float32=True).build(s)
        runs[static] = sim.run(progress=False)
        if static:
            code = (sim.directory / "code_objects" / "p_f_propagate_codeobject.cpp").read_text()
            assert "static std::vector<float> _buf_mem;" in code and "_wT_made" in code
            # floats: tiles of 8 x 8 in registers with 256-bit vectors (AVX)
            assert tiles_in_registers(sim) == ({"p_f", "pr_g", "a_h", "pr_k"} if native_vectors_of_8(4) else set())
    for pop, var in [("f", "v"), ("g", "I"), ("h", "v"), ("k", "v"), ("four", "v"), ("b", "v"), ("d", "v")]:
        np.testing.assert_array_equal(runs[True].states[pop][var].values, runs[False].states[pop][var].values)
    for pop in ("f", "k"):
        np.testing.assert_array_equal(runs[True].spikes[pop].indices, runs[False].spikes[pop].indices)
    # the second segment's kernel (-0.5 w, mostly negative) delivers: f's drive changes sign
    v = runs[True].states["f"]["v"].values  # (steps, neurons)
    assert v[75:125].mean() > 0 > v[-50:].mean()
