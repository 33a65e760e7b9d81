"""Batches in parallel processes of one compiled binary (``workers=``) and ``backend="auto"``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import biosnn
from biosnn.backends import registry as base
from biosnn.backends.parallel import available_cores, resolve_workers, run_batches
from biosnn.conversion.snn import batch_plan
from biosnn.errors import BackendError, ConversionError


def _cnn(seed=3):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 2 * 2, 10)).eval()


def _same(a, b):
    np.testing.assert_array_equal(a.predictions, b.predictions)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.layer_spikes.keys() == b.layer_spikes.keys()
    for k in a.layer_spikes:
        np.testing.assert_array_equal(a.layer_spikes[k], b.layer_spikes[k], err_msg=k)
        np.testing.assert_array_equal(a.layer_synops[k], b.layer_synops[k], err_msg=k)
    np.testing.assert_array_equal(a.input_events, b.input_events)


@pytest.mark.standalone
def test_workers_give_the_results_of_one_worker(digits, build_cache):
    """7 batches of 4 samples (the last padded) on 1 and on 3 processes of the same binary: identical, in order."""
    x, _, xt, _ = digits
    snn = biosnn.convert(_cnn(), "rate", calibration=x[:100], input_shape=(1, 8, 8), T=10)
    kw = dict(backend="cpp_standalone", batch_size=4, progress=False, cache_dir=build_cache)
    one = snn.run(xt[:26], workers=1, **kw)
    three = snn.run(xt[:26], workers=3, **kw)
    assert one.runs == three.runs == 7
    _same(one, three)
    assert one.spikes_per_sample.min() > 0 and len(np.unique(one.spikes_per_sample)) > 10  # order matters
    # the binary's input files of the parallel runs are gone, the build stays
    from biosnn.backends import get_backend
    sim = get_backend("cpp_standalone", cache_dir=build_cache).build(snn.spec_for(4))
    assert sim.compiled is False
    assert not list(sim.directory.glob("results_*"))
    # the runtime backend (one process) agrees
    _same(one, snn.run(xt[:26], backend="runtime", batch_size=13, progress=False))


@pytest.mark.standalone
def test_a_second_run_reuses_the_build(digits, build_cache, monkeypatch):
    """snn.run again with the same batch layout: no new build, identical results; after another network took
    Brian2's device, the kept build reloads itself and still agrees."""
    from biosnn.backends.brian2_standalone import StandaloneSimulation
    x, _, xt, _ = digits
    snn = biosnn.convert(_cnn(), "rate", calibration=x[:100], input_shape=(1, 8, 8), T=10)
    kw = dict(backend="cpp_standalone", batch_size=4, progress=False, cache_dir=build_cache, workers=2)
    first = snn.run(xt[:8], **kw)
    loads, load = [], StandaloneSimulation._load
    monkeypatch.setattr(StandaloneSimulation, "_load", lambda self: (loads.append(self), load(self))[1])
    again = snn.run(xt[:8], **kw)
    _same(first, again)
    assert loads == [] and again.compiled is False
    biosnn.convert(_cnn(seed=4), "rate", calibration=x[:100], input_shape=(1, 8, 8), T=10).run(xt[:4], **kw)
    assert len(loads) == 1
    _same(first, snn.run(xt[:8], **kw))
    assert len(loads) == 2 and loads[1] is next(iter(snn._sim_cache.values()))


@pytest.mark.standalone
def test_same_shape_network_compiles_nothing(digits, build_cache):
    """Other weights, same architecture: the binary is reused (no file compiled again), results still exact."""
    from biosnn.backends import get_backend
    from biosnn.backends.brian2_cuda_build import makefile_sources
    x, _, xt, _ = digits
    kw = dict(calibration=x[:100], input_shape=(1, 8, 8), T=10)
    first = get_backend("cpp_standalone", cache_dir=build_cache).build(biosnn.convert(_cnn(), "rate", **kw).spec_for(4))
    srcs = makefile_sources(first.directory)  # code objects compiled in unity units, not one file each
    assert "biosnn_unity_0.cpp" in srcs and not [s for s in srcs if s.startswith("code_objects/")]
    built = {p: p.stat().st_mtime_ns for p in [first.directory / "main", first.directory / "makefile",
                                               *first.directory.rglob("*.o")]}
    snn = biosnn.convert(_cnn(seed=4), "rate", **kw)
    sim = get_backend("cpp_standalone", cache_dir=build_cache).build(snn.spec_for(4))
    assert sim.directory == first.directory and sim.compiled is False
    assert {p: p.stat().st_mtime_ns for p in built} == built
    run = dict(batch_size=4, progress=False, workers=1)
    compiled = snn.run(xt[:8], backend="cpp_standalone", cache_dir=build_cache, **run)
    assert compiled.compiled is False
    _same(compiled, snn.run(xt[:8], backend="runtime", **run))


@pytest.mark.standalone
def test_run_batches_yields_in_order_and_reports_failures(digits, build_cache):
    x, _, xt, _ = digits
    snn = biosnn.convert(_cnn(), "rate", calibration=x[:100], input_shape=(1, 8, 8), T=10)
    from biosnn.backends import get_backend
    sim = get_backend("cpp_standalone", cache_dir=build_cache).build(snn.spec_for(4))
    flat = xt[:12].reshape(12, -1) / snn.graph.input_scale
    batches = [{"x_in": flat[4 * b:4 * b + 4]} for b in range(3)]
    inputs = sim.directory / "static_arrays"
    before = sorted(inputs.glob("init_x_in_values_*.dat"))
    recs = list(run_batches(sim, batches, workers=2))
    assert sorted(inputs.glob("init_x_in_values_*.dat")) == before   # the runs' input files are removed
    for b, rec in enumerate(recs):
        expect = sim.run(overrides=batches[b], progress=False)
        np.testing.assert_array_equal(rec.states["meter"]["spk_last"].values,
                                      expect.states["meter"]["spk_last"].values)
    with pytest.raises(BackendError, match="cannot override 'nope'"):
        list(run_batches(sim, batches[:1] + [{"nope": 1}], workers=2))
    assert not list(sim.directory.glob("results_*"))


def test_workers_and_batch_plan_are_checked():
    assert resolve_workers(None) == available_cores() >= 1
    assert resolve_workers(None, threads=available_cores()) == 1
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(BackendError, match="workers must be a positive integer"):
            resolve_workers(bad)
    assert batch_plan("cpp_standalone", None, 10, 4, {}) == ("cpp_standalone", 3, 4)
    assert batch_plan("cpp_standalone", None, 1024, 4, {}) == ("cpp_standalone", 256, 4)
    # a worker's long share in 4 runs (fewer process starts), at most 2048 samples, at most 64 MiB of inputs
    assert batch_plan("cpp_standalone", None, 10_000, 4, {}) == ("cpp_standalone", 625, 4)
    assert batch_plan("cpp_standalone", None, 100_000, 2, {})[1] == 2048
    assert batch_plan("cpp_standalone", None, 100_000, 2, {}, n_in=3 * 224 * 224)[1] == 55
    assert batch_plan("runtime", None, 10_000, 4, {}) == ("runtime", 256, 1)
    assert batch_plan("cpp_standalone", 3000, 10_000, 2, {}, n_in=10**6)[1] == 3000  # given: kept
    assert batch_plan("runtime", None, 10, 4, {}) == ("runtime", 10, 1)
    with pytest.raises(ConversionError, match="batch_size must be a positive integer"):
        batch_plan("runtime", 0, 10, None, {})


def test_auto_backend_choice(monkeypatch, capsys):
    monkeypatch.delenv("BIOSNN_BACKEND")
    monkeypatch.setattr(base, "_ANNOUNCED", set())
    import biosnn.backends.brian2_cuda as cuda
    monkeypatch.setattr(base, "available_backends", lambda: ["runtime", "cpp_standalone", "cuda_standalone"])
    monkeypatch.setattr(cuda, "gpu_visible", lambda: False)   # nvcc alone is not a GPU
    assert base.resolve_backend("auto") == "cpp_standalone"
    assert "chose cpp_standalone (a C++ compiler is on the PATH)" in capsys.readouterr().err
    assert base.resolve_backend("auto") == "cpp_standalone"
    assert capsys.readouterr().err == ""                        # said once
    monkeypatch.setattr(cuda, "gpu_visible", lambda: True)
    assert base.resolve_backend("auto") == "cuda_standalone"
    monkeypatch.setattr(base, "available_backends", lambda: ["runtime"])
    assert base.resolve_backend("auto") == "runtime"
    assert "no C++ compiler" in capsys.readouterr().err
    assert base.resolve_backend("cython") == "cython"
    monkeypatch.setenv("BIOSNN_BACKEND", "nope")
    with pytest.raises(BackendError, match=r"\$BIOSNN_BACKEND is 'nope'"):
        base.resolve_backend("auto")


def test_progress_watcher_ends_with_the_run(tmp_path):
    """The watcher of a standalone run's progress reads the last report and returns as soon as the run ends
    (it used to sleep out its poll period first: ~0.15 s per run, 0.2 s at most)."""
    import threading
    import time

    from biosnn.backends.progress import tail_progress

    class Bar:
        fractions = []

        def update(self, fraction):
            self.fractions.append(fraction)

    out = tmp_path / "stdout.txt"
    out.write_text("BIOSNN_PROGRESS 0.25\n")
    finished = threading.Event()
    watcher = threading.Thread(target=tail_progress, args=(out, Bar(), finished, 30.0), daemon=True)
    watcher.start()
    time.sleep(0.2)
    with out.open("a") as f:
        f.write("BIOSNN_PROGRESS 1\n")
    t0 = time.perf_counter()
    finished.set()
    watcher.join(timeout=10)
    assert not watcher.is_alive() and time.perf_counter() - t0 < 5
    assert Bar.fractions == [0.25, 1.0]
