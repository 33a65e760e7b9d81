"""Tests of the cuda_standalone backend (brian2cuda): helpers without nvcc, and ONE nvcc build.

The build test (marked ``cuda``) generates and compiles a small network with
nvcc, which takes minutes on a 2-core machine; it is the only nvcc run in this
file.  Set ``BIOSNN_CUDA_TEST_CACHE`` to a directory to keep its build between
sessions (a second session then only regenerates code).  Without a GPU the
compiled binary cannot run: the test checks that ``run`` says so clearly.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from biosnn.backends import brian2_cuda as bc
from biosnn.backends.brian2_standalone import CppStandaloneBackend
from biosnn.backends.brian2_cuda import (CudaStandaloneBackend, CudaStandaloneSimulation, curand_link_dir,
                                         find_nvcc, gpu_visible, patch_makefile, use_cxx17)
from biosnn.errors import BackendError
from biosnn.spec import (AllToAll, ArrayValue, Conv2D, Explicit, NetworkSpec, NeuronModel, PoissonInput, Population,
                         Projection, RandomP, SpikeMonitor, SpikeTimesInput, StateMonitor)
from biosnn.spec.model import SynapseModel

HAS_BRIAN2CUDA = importlib.util.find_spec("brian2cuda") is not None
needs_brian2cuda = pytest.mark.skipif(not HAS_BRIAN2CUDA,
                                      reason="brian2cuda is not installed (pip install 'biosnn[cuda]')")

PREF_NAMES = (
    "codegen.cpp.extra_compile_args_gcc",
    "codegen.cpp.include_dirs",
    "codegen.cpp.library_dirs",
    "codegen.cpp.runtime_library_dirs",
    "core.default_float_dtype",
    "devices.cuda_standalone.cuda_backend.extra_compile_args_nvcc",
    "devices.cuda_standalone.cuda_backend.detect_gpus",
    "devices.cuda_standalone.cuda_backend.compute_capability",
    "devices.cuda_standalone.cuda_backend.gpu_id",
    "devices.cpp_standalone.run_environment_variables",
)


def _prefs_snapshot() -> dict:
    import brian2cuda  # noqa: F401  (registers its preferences)
    from brian2 import prefs
    return {name: copy.deepcopy(prefs[name]) for name in PREF_NAMES}


def _small_spec() -> NetworkSpec:
    """Two independent parts in one project (one nvcc build for both).

    * 100 LIF neurons driven by 200 Poisson sources through a random projection
      with a delay (brian2cuda's own ``Synapses``, its homogeneous-delay branch);
    * a deterministic part of static projections, propagated by biosnn's CUDA
      kernels: spike times (``drive``, shape (1, 6, 6)) -> a 3x3 convolution
      (shared kernel) -> ``fmap`` (2, 4, 4) -> all-to-all (dense rows) and a
      constant statement -> ``out`` (6), plus explicit synapses (CSR) from
      ``drive`` to ``out``.  Integer weights and integrate-and-fire without
      leak: sums are exact in any order of (atomic) addition, so a GPU run
      must equal the CPU's exactly.
    """
    rng = np.random.default_rng(5)
    steps = np.sort(rng.choice(200 * 36, 300, replace=False))  # distinct (step, neuron) pairs
    pairs = rng.choice(36 * 6, 60, replace=False)
    return NetworkSpec(
        name="cuda_small", dt="0.1*ms", duration="100*ms", seed=3,
        neuron_models={"cnt": NeuronModel("v : 1\nn : 1", threshold="v > 2.5", reset="v -= 3")},
        synapse_models={"add": SynapseModel("w : 1", on_pre="v_post += w"),
                        "count": SynapseModel("", on_pre="n_post += 1")},
        populations=(Population("lif", 100, "lif", initial={"v": "-65*mV"}),
                     Population("fmap", 32, "cnt", shape=(2, 4, 4)), Population("out", 6, "cnt")),
        inputs=(PoissonInput("noise", 200, "20*Hz"),
                SpikeTimesInput("drive", 36, ArrayValue(steps % 36), ArrayValue((steps // 36) * 0.1, "ms"),
                                shape=(1, 6, 6))),
        projections=(
            Projection("inp", "noise", "lif", "delta_voltage", RandomP(0.1), weights="2*mV", delay="1*ms"),
            Projection("conv", "drive", "fmap", "add",
                       Conv2D(ArrayValue(rng.integers(0, 3, (2, 1, 3, 3)).astype(float)))),
            Projection("dense", "fmap", "out", "add", AllToAll(),
                       weights=ArrayValue(rng.integers(-1, 3, 192).astype(float))),
            Projection("csr", "drive", "out", "add", Explicit(ArrayValue(pairs // 6), ArrayValue(pairs % 6)),
                       weights=ArrayValue(rng.integers(0, 2, 60).astype(float))),
            Projection("cnt", "fmap", "out", "count", AllToAll())),
        monitors=(SpikeMonitor("lif"), SpikeMonitor("fmap"), SpikeMonitor("out"), StateMonitor("out", ("v", "n"))),
    )


def _fake_curand(root: Path) -> tuple[Path, Path]:
    include, lib = root / "include", root / "lib"
    include.mkdir(parents=True)
    lib.mkdir()
    (include / "curand.h").write_text("/* curand */\n")
    (lib / "libcurand.so.10").write_text("not really a library")
    return include, lib


# ---------------------------------------------------------------------------
# helpers (no brian2cuda, no nvcc)


def test_use_cxx17_replaces_old_standards_and_copies():
    flags = ["-w", "-O3", "-std=c++11", "-march=native"]
    out = use_cxx17(flags)
    assert out == ["-w", "-O3", "-std=c++17", "-march=native"]
    assert flags[2] == "-std=c++11"  # the argument is not changed
    assert use_cxx17(["-std=gnu++14", "-std=c++0x"]) == ["-std=c++17", "-std=c++17"]
    assert use_cxx17(["-std=c++17", "-std=c++20", "-O2"]) == ["-std=c++17", "-std=c++20", "-O2"]
    assert use_cxx17([]) == []


def test_patch_makefile(tmp_path):
    mk = tmp_path / "makefile"
    mk.write_text('NVCCFLAGS = -I. -std=c++11 -arch=sm_90 -Xcompiler "-O3 -std=c++11"\n')
    assert patch_makefile(mk) is True
    text = mk.read_text()
    assert "c++11" not in text and text.count("-std=c++17") == 2
    assert patch_makefile(mk) is False  # already fine
    with pytest.raises(BackendError, match="no makefile"):
        patch_makefile(tmp_path / "missing" / "makefile")


def test_curand_link_dir_makes_unversioned_link(tmp_path):
    _, lib = _fake_curand(tmp_path / "wheel")
    (lib / "libcurand.so.9").write_text("older")
    link_dir = curand_link_dir(lib, tmp_path / "links")
    link = link_dir / "libcurand.so"
    assert link.is_symlink()
    assert Path(os.readlink(link)) == (lib / "libcurand.so.10").resolve()  # the newest version
    assert curand_link_dir(lib, tmp_path / "links") == link_dir  # idempotent
    assert sorted(p.name for p in link_dir.iterdir()) == ["libcurand.so"]  # no stray temporary link
    with pytest.raises(BackendError, match="no libcurand"):
        curand_link_dir(tmp_path / "links" / "nothing", tmp_path / "links2")


def test_wheel_curand_dirs_finds_torch_nvidia_wheel():
    dirs = bc.wheel_curand_dirs()
    if importlib.util.find_spec("nvidia") is None:
        assert dirs is None
        pytest.skip("the 'nvidia' wheel (torch's CUDA build) is not installed")
    if dirs is None:
        pytest.skip("the 'nvidia' wheel has no curand")
    include, lib = dirs
    assert (include / "curand.h").is_file()
    assert any(lib.glob("libcurand.so.*"))


def test_gpu_visible_respects_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_visible() is False
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpu_visible() is False


def test_run_without_gpu_gives_clear_error(monkeypatch, tmp_path):
    """The no-GPU message replaces a failed run of the binary (no build needed)."""
    from biosnn.backends.brian2_standalone import StandaloneSimulation

    def failing_run(self, duration=None, overrides=None, progress=True, final_state=None):
        try:
            raise RuntimeError("Project run failed (project directory: x)")
        except RuntimeError as exc:
            raise BackendError("the compiled 'x' failed") from exc

    monkeypatch.setattr(StandaloneSimulation, "run", failing_run)
    sim = object.__new__(CudaStandaloneSimulation)
    sim.directory = tmp_path
    sim.backend = type("B", (), {"gpu_present": lambda self: False})()
    with pytest.raises(BackendError, match=rf"no CUDA GPU: the project compiled in {re.escape(str(tmp_path))}; "
                                           "run it on a machine with a GPU"):
        sim.run()
    sim.backend = type("B", (), {"gpu_present": lambda self: True})()
    with pytest.raises(BackendError, match="the compiled 'x' failed"):
        sim.run()

    def other_error(self, duration=None, overrides=None, progress=True, final_state=None):
        raise BackendError("this build simulates 0.1 s")

    monkeypatch.setattr(StandaloneSimulation, "run", other_error)
    sim.backend = type("B", (), {"gpu_present": lambda self: False})()
    with pytest.raises(BackendError, match="this build simulates"):
        sim.run()

    def sets_library_path(self, duration=None, overrides=None, progress=True, final_state=None):
        os.environ["LD_LIBRARY_PATH"] = "/curand/lib:/before"  # what Brian2 does for the binary
        return "recording"

    monkeypatch.setattr(StandaloneSimulation, "run", sets_library_path)
    monkeypatch.setenv("LD_LIBRARY_PATH", "/before")
    assert sim.run() == "recording" and os.environ["LD_LIBRARY_PATH"] == "/before"  # restored
    monkeypatch.delenv("LD_LIBRARY_PATH")
    assert sim.run() == "recording" and "LD_LIBRARY_PATH" not in os.environ


# ---------------------------------------------------------------------------
# the backend's preferences (brian2cuda needed, no nvcc run)


def test_missing_brian2cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(bc, "_brian2cuda_available", lambda: False)
    with pytest.raises(BackendError, match="needs brian2cuda"):
        CudaStandaloneBackend()


@needs_brian2cuda
def test_missing_nvcc_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(bc, "find_nvcc", lambda: None)
    backend = CudaStandaloneBackend(cache_dir=tmp_path)
    with pytest.raises(BackendError, match="needs CUDA's nvcc"):
        backend.build(_small_spec())


@needs_brian2cuda
def test_get_backend_and_options(monkeypatch, tmp_path):
    from biosnn.backends.registry import get_backend
    monkeypatch.setattr(bc, "gpu_visible", lambda: False)
    backend = get_backend("cuda_standalone", cache_dir=tmp_path, float32=True)
    assert isinstance(backend, CudaStandaloneBackend)
    assert backend.name == backend.device_name == "cuda_standalone"
    opts = backend.options()
    assert opts["compute_capability"] == 9.0 and opts["float32"] is True and opts["cxx"] == "c++17"
    assert CudaStandaloneBackend(compute_capability=8).options()["compute_capability"] == 8.0
    for bad in (4.0, "9.0", True):
        with pytest.raises(BackendError, match="compute_capability"):
            CudaStandaloneBackend(compute_capability=bad)


@needs_brian2cuda
def test_prefs_without_gpu_are_set_and_restored(monkeypatch, tmp_path):
    import numpy as np
    from brian2 import prefs
    from brian2cuda.codeobject import CUDAStandaloneCodeObject
    from brian2cuda.utils import gputools

    include, lib = _fake_curand(tmp_path / "wheel")
    monkeypatch.setattr(bc, "gpu_visible", lambda: False)
    monkeypatch.setattr(bc, "toolkit_has_curand", lambda nvcc=None: False)
    monkeypatch.setattr(bc, "wheel_curand_dirs", lambda: (include, lib))
    backend = CudaStandaloneBackend(cache_dir=tmp_path / "cache", float32=True)
    before = _prefs_snapshot()
    gcc_list = prefs["codegen.cpp.extra_compile_args_gcc"]
    templater = CUDAStandaloneCodeObject.templater
    selection = dict(gputools._gpu_selection)
    with backend.prefs():
        cuda = prefs.devices.cuda_standalone.cuda_backend
        assert "-std=c++17" in prefs.codegen.cpp.extra_compile_args_gcc
        assert not any("c++11" in f for f in prefs.codegen.cpp.extra_compile_args_gcc)
        assert cuda.detect_gpus is False and cuda.compute_capability == 9.0 and cuda.gpu_id == 0
        assert prefs.core.default_float_dtype is np.float32
        link = backend.link_dir()
        assert (link / "libcurand.so").is_symlink()
        assert str(include) in prefs.codegen.cpp.include_dirs
        assert {str(link), str(lib)} <= set(prefs.codegen.cpp.library_dirs)
        assert str(lib) in prefs.codegen.cpp.runtime_library_dirs
        # the binary finds curand where this machine has it, wherever it was compiled
        run_env = prefs.devices.cpp_standalone.run_environment_variables
        assert run_env["LD_LIBRARY_PATH"].split(":")[0] == str(bc.curand_runtime_dir())
        assert "-march=native" not in prefs.codegen.cpp.extra_compile_args_gcc
        assert CUDAStandaloneCodeObject.templater is not templater
        makefile = CUDAStandaloneCodeObject.templater.env.loader.get_source(
            CUDAStandaloneCodeObject.templater.env, "makefile")[0]
        assert "-std=c++17" in makefile and "c++11" not in makefile
        # brian2cuda changes this list in place while writing the makefile: it must be a copy
        cuda.extra_compile_args_nvcc.append("-changed-in-place")
    assert _prefs_snapshot() == before
    assert prefs["codegen.cpp.extra_compile_args_gcc"] is gcc_list
    assert CUDAStandaloneCodeObject.templater is templater
    assert dict(gputools._gpu_selection) == selection

    with pytest.raises(ZeroDivisionError):  # restored after errors, too
        with backend.prefs():
            1 / 0
    assert _prefs_snapshot() == before


@needs_brian2cuda
def test_prefs_with_gpu_detect_and_toolkit_curand(monkeypatch, tmp_path):
    from brian2 import prefs
    monkeypatch.setattr(bc, "gpu_visible", lambda: True)
    monkeypatch.setattr(bc, "toolkit_has_curand", lambda nvcc=None: True)
    before = _prefs_snapshot()
    with CudaStandaloneBackend(cache_dir=tmp_path).prefs():
        cuda = prefs.devices.cuda_standalone.cuda_backend
        assert cuda.detect_gpus is True and cuda.compute_capability is None
        assert prefs.codegen.cpp.include_dirs == before["codegen.cpp.include_dirs"]
    with CudaStandaloneBackend(cache_dir=tmp_path, compute_capability=8.0).prefs():
        cuda = prefs.devices.cuda_standalone.cuda_backend
        # a given architecture: no detection, the same generated code with and without a GPU
        assert cuda.compute_capability == 8.0 and cuda.detect_gpus is False and cuda.gpu_id == 0
        assert "-march=native" not in prefs.codegen.cpp.extra_compile_args_gcc
    assert _prefs_snapshot() == before
    assert not (tmp_path / "_cuda_lib").exists()


@needs_brian2cuda
def test_compute_capability_from_environment_and_unity_units(monkeypatch, tmp_path):
    monkeypatch.setattr(bc, "gpu_visible", lambda: True)
    monkeypatch.setenv(bc.CC_ENV, "9.0")
    backend = CudaStandaloneBackend(cache_dir=tmp_path)
    assert backend.compute_capability == 9.0 and backend._arch() == (False, 9.0)
    assert backend.options()["compute_capability"] == 9.0 and backend.options()["unity_units"] == 8
    assert CudaStandaloneBackend(compute_capability=8.0).compute_capability == 8.0  # the argument wins
    monkeypatch.setenv(bc.CC_ENV, "sm_90")
    with pytest.raises(BackendError, match=r"\$BIOSNN_CUDA_COMPUTE_CAPABILITY must be a number such as 9.0, got 'sm_90'"):
        CudaStandaloneBackend()
    monkeypatch.delenv(bc.CC_ENV)
    assert CudaStandaloneBackend()._arch() == (True, None)  # a visible GPU is detected
    assert CudaStandaloneBackend(unity_units=0).options()["unity_units"] == 0
    for bad in (-1, 2.5, True):
        with pytest.raises(BackendError, match="unity_units must be a non-negative integer"):
            CudaStandaloneBackend(unity_units=bad)


def test_curand_runtime_dir_prefers_the_toolkit(monkeypatch, tmp_path):
    toolkit = tmp_path / "cuda"
    (toolkit / "bin").mkdir(parents=True)
    (toolkit / "lib64").mkdir()
    (toolkit / "bin" / "nvcc").write_text("")
    monkeypatch.setenv("CUDA_PATH", str(toolkit))
    _, wheel_lib = _fake_curand(tmp_path / "wheel")
    monkeypatch.setattr(bc, "wheel_curand_dirs", lambda: (wheel_lib.parent / "include", wheel_lib))
    monkeypatch.setattr(bc, "_toolkit_roots", lambda nvcc=None: [toolkit])
    assert bc.curand_runtime_dir(str(toolkit / "bin" / "nvcc")) == wheel_lib  # the toolkit has none
    (toolkit / "lib64" / "libcurand.so.10").write_text("")
    assert bc.curand_runtime_dir(str(toolkit / "bin" / "nvcc")) == toolkit / "lib64"
    monkeypatch.setattr(bc, "wheel_curand_dirs", lambda: None)
    (toolkit / "lib64" / "libcurand.so.10").unlink()
    assert bc.curand_runtime_dir(str(toolkit / "bin" / "nvcc")) is None


@needs_brian2cuda
def test_patched_templater_fixes_clock_name():
    from brian2cuda.codeobject import CUDAStandaloneCodeObject
    templater = bc.patched_templater(CUDAStandaloneCodeObject.templater)
    assert bc.patched_templater(CUDAStandaloneCodeObject.templater) is templater
    src = templater.env.loader.get_source(templater.env, "synapses.cu")[0]
    assert "defaultclock.timestep" not in src
    assert "{{owner.clock.name}}.timestep[0] >=" in src
    monitor = templater.env.loader.get_source(templater.env, "spikemonitor.cu")[0]
    assert "record_variables.items()" not in monitor and "record_variables|dictsort" in monitor
    for name in ("synapses", "spikemonitor", "makefile"):  # the fixed templates parse
        assert getattr(templater, name) is not None


# ---------------------------------------------------------------------------
# the one nvcc build


@pytest.mark.cuda
@needs_brian2cuda
@pytest.mark.skipif(find_nvcc() is None, reason="CUDA's nvcc is not installed")
def test_generate_and_compile_cuda(tmp_path_factory):
    from brian2 import prefs
    from brian2cuda.codeobject import CUDAStandaloneCodeObject

    cache = os.environ.get("BIOSNN_CUDA_TEST_CACHE") or tmp_path_factory.mktemp("cuda_builds")
    before = _prefs_snapshot()
    gcc_before = list(prefs.codegen.cpp.extra_compile_args_gcc)
    templater = CUDAStandaloneCodeObject.templater

    # one unity translation unit (default 8): nvcc compiles 7 files instead of 14 (about 2.5x less CPU time
    # here); every grouped code object then shares one unit, the strictest case for the unity namespaces
    # (the grouping into several units is compiled by tests/test_cuda_build.py)
    backend = CudaStandaloneBackend(cache_dir=cache, unity_units=1)
    sim = backend.build(_small_spec())
    make_s = sim.device.timers.get("compile", {}).get("make")
    print(f"\ncuda_small: build (codegen + nvcc) {sim.build_time_s:.1f} s, nvcc/make "
          f"{make_s if make_s is None else round(make_s, 1)} s, compiled now: {sim.compiled}")

    # the binary and a C++17 makefile
    binary = sim.directory / "main"
    assert binary.is_file() and os.access(binary, os.X_OK)
    assert [p.name for p in sim.directory.glob("biosnn_unity_*.cu")] == ["biosnn_unity_0.cu"]
    makefile = (sim.directory / "makefile").read_text()
    nvccflags = next(line for line in makefile.splitlines() if line.startswith("NVCCFLAGS"))
    assert "-std=c++17" in nvccflags and "c++11" not in makefile
    # the synapses' code uses biosnn's clock, not an undeclared defaultclock
    assert "defaultclock" not in (sim.directory / "code_objects" / "inp_pre_codeobject.cu").read_text()
    # static projections: biosnn's kernels, no per-synapse arrays for the convolution and the all-to-all
    # projection, targets and weights read from biosnn's files and copied to the GPU in main
    code = sim.directory / "code_objects"
    for name, marker in [("conv", "_kidx = ((_o * 1 + _cg) * 3 + _ky) * 3 + _kx"), ("dense", "_row + _j"),
                         ("csr", "_ptr_array_csr__post[_s]"), ("cnt", "(double)(1.0)")]:
        kernel = (code / f"{name}_propagate_codeobject.cu").read_text()
        assert marker in kernel and "atomicAdd(" in kernel and "_k += gridDim.x" in kernel
        assert not (code / f"{name}_pre_codeobject.cu").exists()
    objects_cu = (sim.directory / "objects.cu").read_text()
    assert "_array_conv__post" not in objects_cu and "_array_dense__post" not in objects_cu
    main_cu = (sim.directory / "main.cu").read_text()
    for array in ("_array_conv_w", "_array_dense_w", "_array_csr_w", "_array_csr__post"):
        assert (sim.directory / "static_arrays" / f"biosnn_{array}").is_file()
        assert f"cudaMemcpy(brian::dev{array}, brian::{array}" in main_cu
    if shutil.which("ldd"):  # curand (and everything else) resolves at load time, as the backend runs it
        env = dict(os.environ)
        runtime = bc.curand_runtime_dir()
        if runtime is not None:  # a binary compiled on another machine records that machine's curand path
            env["LD_LIBRARY_PATH"] = f"{runtime}:{env.get('LD_LIBRARY_PATH', '')}"
        ldd = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, env=env).stdout
        assert "libcurand" in ldd and "not found" not in ldd

    # building the same structure again regenerates identical code: nothing is recompiled
    stamp = binary.stat().st_mtime_ns
    again = backend.build(_small_spec())
    assert again.directory == sim.directory and not again.compiled
    assert binary.stat().st_mtime_ns == stamp

    # preferences and brian2cuda's templates are back as they were
    assert list(prefs.codegen.cpp.extra_compile_args_gcc) == gcc_before
    assert _prefs_snapshot() == before
    assert CUDAStandaloneCodeObject.templater is templater

    if gpu_visible():
        rec = again.run(progress=False)
        assert rec.spikes["lif"].counts().shape == (100,)
        # the deterministic static part equals the CPU's exactly (integer sums)
        cpu = CppStandaloneBackend(cache_dir=cache).build(_small_spec()).run(progress=False)
        assert len(cpu.spikes["out"]) > 10
        for pop in ("fmap", "out"):
            order = np.lexsort((rec.spikes[pop].indices, rec.spikes[pop].times))
            ref = np.lexsort((cpu.spikes[pop].indices, cpu.spikes[pop].times))
            np.testing.assert_array_equal(rec.spikes[pop].indices[order], cpu.spikes[pop].indices[ref])
            np.testing.assert_allclose(rec.spikes[pop].times[order], cpu.spikes[pop].times[ref], atol=1e-12)
        for var in ("v", "n"):
            np.testing.assert_array_equal(rec.states["out"][var].values, cpu.states["out"][var].values)
    else:
        with pytest.raises(BackendError, match=rf"no CUDA GPU: the project compiled in "
                                               rf"{re.escape(str(sim.directory))}; run it on a machine"):
            again.run(progress=False)
        assert _prefs_snapshot() == before


# ---------------------------------------------------------------------------
# on a GPU only (the GPU check, benchmarks/gpu_check.py): no nvcc build without one


@pytest.mark.cuda
@needs_brian2cuda
@pytest.mark.skipif(not gpu_visible(), reason="needs a CUDA GPU (run by benchmarks/gpu_check.py on the GPU machine)")
def test_digits_cnn_cuda_equals_cpp_per_sample(digits, build_cache, tmp_path_factory):
    """A trained digits CNN, rate-coded (T = 32), 10 replicas x 20 windows: cuda_standalone equals cpp_standalone.

    Sample by sample: the same prediction, scores within 1e-9 (the GPU adds with atomics, in another
    order) and the same spike and synaptic-event counts per layer.
    """
    import biosnn
    import torch
    from biosnn.datasets import train_classifier
    from biosnn.demo import digits_cnn
    x, y, xt, yt = digits
    model = train_classifier(digits_cnn(), x, y, epochs=40, lr=1e-2, batch_size=64, seed=0)
    with torch.no_grad():
        ann_pred = model(torch.as_tensor(xt[:200])).argmax(1).numpy()
    snn = biosnn.convert(biosnn.prepare(model, "rate"), "rate", calibration=x[:500], input_shape=(1, 8, 8), T=32)
    cache = os.environ.get("BIOSNN_CUDA_TEST_CACHE") or tmp_path_factory.mktemp("cuda_builds")
    cpu = snn.run(xt[:200], "cpp_standalone", batch_size=200, replicas=10, progress=False, cache_dir=build_cache)
    gpu = snn.run(xt[:200], "cuda_standalone", batch_size=200, replicas=10, progress=False, cache_dir=cache)
    print(f"\ndigits CNN: agreement with the ANN {gpu.agreement(ann_pred):.3f}, "
          f"spikes/sample {gpu.spikes_per_sample.mean():.0f}")
    assert gpu.agreement(ann_pred) >= 0.9
    np.testing.assert_array_equal(gpu.predictions, cpu.predictions)
    np.testing.assert_allclose(gpu.scores, cpu.scores, rtol=0, atol=1e-9)
    assert gpu.layer_spikes.keys() == cpu.layer_spikes.keys()
    for key in cpu.layer_spikes:
        np.testing.assert_array_equal(gpu.layer_spikes[key], cpu.layer_spikes[key])
        np.testing.assert_array_equal(gpu.layer_synops[key], cpu.layer_synops[key])


@needs_brian2cuda
def test_network_clocks_are_iterated_by_name_in_the_backend_scope(tmp_path):
    """brian2cuda writes one main.cu line per clock in the order of ``net._clocks``: sorted by name, not by address."""
    from brian2 import Clock, Network, NeuronGroup, ms
    from brian2.core.network import Network as NetworkClass
    clocks = [Clock(dt=d * 0.1 * ms, name=f"clk_{k}") for k, d in zip("dcab", (1, 2, 3, 4))]
    net = Network(*[NeuronGroup(1, "v : 1", clock=c, name=f"g_{c.name}") for c in clocks])
    with CudaStandaloneBackend(cache_dir=tmp_path).prefs():
        net._clocks = set(clocks)
        assert [c.name for c in net._clocks] == ["clk_a", "clk_b", "clk_c", "clk_d"]
        assert len(net._clocks) == 4 and min(net._clocks, key=lambda c: c.name).name == "clk_a"
    assert "_clocks" not in NetworkClass.__dict__  # the class is as before
    assert [c.name for c in net._clocks] == ["clk_a", "clk_b", "clk_c", "clk_d"]  # the value stays readable
