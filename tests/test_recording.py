"""Tests of biosnn.recording, biosnn.recording.formats and biosnn.recording.plots (no simulation run)."""

from __future__ import annotations

import dataclasses
import doctest
import pickle

import h5py
import numpy as np
import pytest

import biosnn.recording.data
from biosnn.errors import BiosnnError
from biosnn.recording.formats import (
    export, from_neo, import_recording, load_npz, load_sonata, save_npz, save_sonata, to_neo,
)
from biosnn.recording.plots import plot_recording, raster_plot, rate_plot
from biosnn.recording import FinalState, Recording, RecordingError, SpikeTrains, StateTrace

DT = 1e-4


def make_recording(with_states: bool = True) -> Recording:
    """A recording shaped like a Brian2 run: times on the dt grid, ties in a step."""
    rng = np.random.default_rng(42)
    steps = rng.integers(0, 2000, 600)          # 0.2 s at 0.1 ms
    exc = SpikeTrains(times=steps * DT, indices=rng.integers(0, 40, 600), size=40)
    inh = SpikeTrains(times=[0.0101, 0.0101, 0.05], indices=[3, 1, 0], size=10)
    silent = SpikeTrains(times=[], indices=[], size=5)
    states = {}
    if with_states:
        t = np.arange(200) * DT                  # exact regular grid
        v = -0.065 + 0.002 * rng.normal(size=(200, 3))
        t_off = 0.0123 + np.arange(50) * 3e-4    # not reproducible as t0 + k*period
        g = 1e-9 * rng.random((50, 2))
        states = {"exc": {"v": StateTrace(t, v, [0, 7, 39], "volt"),
                          "g_e": StateTrace(t_off, g, [2, 5], "siemens")},
                  "inh": {"w": StateTrace(t[:4], np.ones((4, 1)), [9], "1")}}
    return Recording(spikes={"exc": exc, "inh": inh, "silent": silent}, states=states,
                     duration=0.2, dt=DT, meta={"backend": "runtime", "spec": "unit-test",
                                                "wall_time_s": 1.25},
                     final={"exc_inh.w": FinalState(1e-9 * rng.random(12), "siemens"),
                            "exc.theta": FinalState(rng.random(40) * 1e-3, "volt")})


@pytest.fixture(scope="module")
def rec() -> Recording:
    return make_recording()


# ---------------------------------------------------------------------------
# SpikeTrains / StateTrace / Recording basics


def test_spike_trains_sorted_typed_and_read_only():
    times = np.array([0.003, 0.001, 0.002, 0.001])
    st = SpikeTrains(times=times, indices=[2, 1, 0, 0], size=3)
    assert st.times.tolist() == [0.001, 0.001, 0.002, 0.003]
    assert st.indices.tolist() == [0, 1, 0, 2]          # ties ordered by neuron index
    assert st.times.dtype == np.float64 and st.indices.dtype == np.int64
    assert len(st) == 4
    times[0] = 99.0                                     # the input is copied
    assert st.times.max() == 0.003
    with pytest.raises(ValueError, match="read-only"):
        st.times[0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        st.size = 5


def test_counts_rates_trains_hand_computed():
    st = SpikeTrains(times=[0.1, 0.2, 0.3, 0.25, 0.9], indices=[0, 0, 0, 2, 2], size=4)
    assert st.counts().tolist() == [3, 0, 2, 0]
    np.testing.assert_allclose(st.rates(2.0), [1.5, 0.0, 1.0, 0.0])
    trains = st.trains()
    assert len(trains) == 4
    assert trains[0].tolist() == [0.1, 0.2, 0.3]
    assert trains[1].size == 0
    assert trains[2].tolist() == [0.25, 0.9]
    with pytest.raises(BiosnnError, match="duration_s must be finite and > 0"):
        st.rates(0.0)


def test_population_rate_and_mean_rate_hand_computed():
    st = SpikeTrains(times=[0.005, 0.012, 0.013, 0.051, 0.0995], indices=[0, 1, 1, 0, 1],
                     size=2)
    rec = Recording(spikes={"p": st}, duration=0.1, dt=DT)
    centers, rate = rec.population_rate("p", 0.01)
    np.testing.assert_allclose(centers, 0.005 + 0.01 * np.arange(10))
    # count / (2 neurons * 0.01 s)
    np.testing.assert_allclose(rate, [50, 100, 0, 0, 0, 50, 0, 0, 0, 50])
    assert rec.mean_rate("p") == pytest.approx(5 / (2 * 0.1))     # 25 Hz
    assert rec.total_spikes() == 5


def test_population_rate_partial_last_bin_takes_spikes_at_end():
    st = SpikeTrains(times=[0.001, 0.024, 0.025], indices=[0, 0, 0], size=1)
    rec = Recording(spikes={"p": st}, duration=0.025, dt=DT)
    centers, rate = rec.population_rate("p", 0.01)
    np.testing.assert_allclose(centers, [0.005, 0.015, 0.0225])
    np.testing.assert_allclose(rate, [100.0, 0.0, 2 / 0.005])     # last bin is 5 ms wide
    with pytest.raises(BiosnnError, match="no spikes recorded for population 'q'.*'p'"):
        rec.population_rate("q", 0.01)


def test_summary_table(rec):
    text = rec.summary()
    assert "population" in text and "mean rate (Hz)" in text
    exc_line = next(line for line in text.splitlines() if line.startswith("exc "))
    assert exc_line.split() == ["exc", "40", "600", f"{600 / (40 * 0.2):.3f}"]
    assert "state exc.v: 3 neurons x 200 samples [volt]" in text


def test_recording_frozen_equality_and_pickle(rec):
    with pytest.raises(TypeError):
        rec.spikes["new"] = rec.spikes["exc"]          # read-only mapping
    with pytest.raises(TypeError):
        rec.states["exc"]["x"] = rec.states["exc"]["v"]
    assert rec.meta["wall_time_s"] == "1.25"            # numbers stored as strings
    assert make_recording() == rec
    assert dataclasses.replace(rec, meta={"backend": "cpp"}) != rec
    assert dataclasses.replace(rec, duration=0.3) != rec
    other_spikes = dict(rec.spikes, inh=SpikeTrains([0.0101], [3], 10))
    assert dataclasses.replace(rec, spikes=other_spikes) != rec
    assert pickle.loads(pickle.dumps(rec)) == rec


def test_state_trace_quantity_and_from_quantity():
    import brian2

    trace = StateTrace(np.arange(3) * DT, [[-0.07], [-0.069], [-0.068]], [4], "volt")
    q = trace.quantity()
    assert brian2.have_same_dimensions(q, brian2.volt)
    np.testing.assert_allclose(np.asarray(q / brian2.mV), [[-70.0], [-69.0], [-68.0]])
    g = StateTrace([0.0], [[2.0]], [0], "metre ** -2 * siemens").quantity()
    assert brian2.have_same_dimensions(g, brian2.siemens / brian2.metre ** 2)

    back = StateTrace.from_quantity(np.arange(2) * brian2.ms,
                                    np.array([[-65.0, -60.0], [-64.0, -59.0]]) * brian2.mV,
                                    [0, 3])
    assert back.unit == "volt"
    np.testing.assert_allclose(back.values, [[-0.065, -0.06], [-0.064, -0.059]])
    np.testing.assert_allclose(back.times, [0.0, 0.001])
    assert StateTrace.from_quantity([0.0], np.ones((1, 1)), [0]).unit == "1"


@pytest.mark.parametrize("kwargs, match", [
    (dict(times=[0.1, 0.2], indices=[0], size=2), "differ in length"),
    (dict(times=[0.1], indices=[2], size=2), "index 2 out of range.*size 2"),
    (dict(times=[-0.1], indices=[0], size=2), "must be >= 0 s"),
    (dict(times=[np.nan], indices=[0], size=2), "finite"),
    (dict(times=[0.1], indices=[0.5], size=2), "whole numbers"),
    (dict(times=[0.1], indices=[-1], size=2), "must be >= 0, got -1"),
    (dict(times=[0.1], indices=[0], size=-3), "size must be an integer >= 0"),
    (dict(times=[[0.1]], indices=[0], size=2), "1-D"),
])
def test_spike_trains_validation(kwargs, match):
    with pytest.raises(RecordingError, match=match):
        SpikeTrains(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(times=[0.0, 0.1], values=[[1.0], [2.0], [3.0]], indices=[0], unit="volt"),
     r"shape \(n_samples, n_recorded\) = \(2, 1\), got \(3, 1\)"),
    (dict(times=[0.0], values=[[1.0]], indices=[0], unit="mV"), "'mV' is not a coherent SI"),
    (dict(times=[0.0], values=[[1.0]], indices=[0], unit="volt; import os"),
     "not a valid unit expression"),
    (dict(times=[0.0], values=[[1.0]], indices=[0], unit="__import__('os')"),
     "not a unit expression"),
    (dict(times=[0.1, 0.1], values=[[1.0], [1.0]], indices=[0], unit="1"),
     "strictly increasing"),
    (dict(times=[0.0], values=[[1.0, 2.0]], indices=[3, 3], unit="1"), "unique"),
    (dict(times=[0.0], values=np.zeros((1, 0)), indices=[], unit="1"), "at least one neuron"),
])
def test_state_trace_validation(kwargs, match):
    with pytest.raises(RecordingError, match=match):
        StateTrace(**kwargs)


def _st():
    return SpikeTrains([0.01], [0], 3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(spikes={"p": SpikeTrains([0.3], [0], 3)}, duration=0.2, dt=DT),
     "spike at 0.3 s is after the end of the run"),
    (dict(spikes={"p": _st()}, duration=0.0, dt=DT), "duration must be finite and > 0"),
    (dict(spikes={"p": _st()}, duration=0.2, dt=-1.0), "dt must be finite and > 0"),
    (dict(spikes={"p": _st()}, duration="1 s", dt=DT), "duration must be a number"),
    (dict(spikes={"a/b": _st()}, duration=0.2, dt=DT), "without '/'"),
    (dict(spikes={"p": [0.1]}, duration=0.2, dt=DT), r"spikes\['p'\] must be a SpikeTrains"),
    (dict(spikes={"p": _st()}, duration=0.2, dt=DT, meta={"k": [1]}), r"meta\['k'\]"),
    (dict(spikes={"p": _st()}, duration=0.2, dt=DT,
          states={"p": {"v": StateTrace([0.0], [[0.0]], [3], "volt")}}),
     "recorded neuron 3 is out of range for population 'p' of size 3"),
    (dict(spikes={"p": _st()}, duration=0.2, dt=DT,
          states={"p": {"v": StateTrace([0.5], [[0.0]], [0], "volt")}}),
     "sample at 0.5 s is after the end"),
])
def test_recording_validation(kwargs, match):
    with pytest.raises(BiosnnError, match=match):
        Recording(**kwargs)


def test_spike_in_last_step_is_allowed():
    rec = Recording(spikes={"p": SpikeTrains([0.2 + DT], [0], 1)}, duration=0.2, dt=DT)
    assert rec.total_spikes() == 1


def test_doctests_in_recording_module():
    result = doctest.testmod(biosnn.recording.data)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------
# npz


def test_npz_round_trip(rec, tmp_path):
    path = save_npz(rec, tmp_path / "run.npz")
    back = load_npz(path)
    assert back == rec
    assert list(back.spikes) == ["exc", "inh", "silent"]
    assert back.states["exc"]["g_e"].unit == "siemens"
    assert dict(back.meta) == {"backend": "runtime", "spec": "unit-test", "wall_time_s": "1.25"}
    assert back.final["exc_inh.w"].unit == "siemens" and back.final["exc.theta"] == rec.final["exc.theta"]
    # Recording.save / load dispatch on the suffix
    rec.save(tmp_path / "again.npz")
    assert Recording.load(tmp_path / "again.npz") == rec


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "plain.npz", x=np.arange(3))
    with pytest.raises(BiosnnError, match="plain.npz' is not a biosnn recording"):
        load_npz(tmp_path / "plain.npz")
    with pytest.raises(BiosnnError, match="missing.npz' does not exist"):
        load_npz(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(BiosnnError, match="junk.npz' is not a readable"):
        load_npz(tmp_path / "junk.npz")


# ---------------------------------------------------------------------------
# SONATA


def test_sonata_round_trip_and_layout(rec, tmp_path):
    path = save_sonata(rec, tmp_path / "spikes.h5")
    assert load_sonata(path) == rec
    assert Recording.load(path) == rec
    with h5py.File(path, "r") as f:
        assert int(f.attrs["magic"]) == 0x0A7A
        assert list(f.attrs["version"]) == [0, 1]
        assert set(f["spikes"]) == {"exc", "inh", "silent"}
        grp = f["spikes/exc"]
        ts, ids = grp["timestamps"], grp["node_ids"]
        assert ts.dtype == np.float64 and ids.dtype == np.uint64
        assert ts.attrs["units"] == "ms"
        np.testing.assert_allclose(ts[()], rec.spikes["exc"].times * 1e3, rtol=1e-15)
        assert np.all(np.diff(ts[()]) >= 0)                     # sorted by time
        np.testing.assert_array_equal(ids[()], rec.spikes["exc"].indices)
        enum = h5py.check_enum_dtype(grp.attrs.get_id("sorting").dtype)
        assert enum == {"none": 0, "by_id": 1, "by_time": 2}
        assert grp.attrs["sorting"] == enum["by_time"]
        assert f["spikes/silent/timestamps"].shape == (0,)
        assert f["biosnn"].attrs["dt_s"] == DT
        assert f["biosnn/states/exc/v/values"].attrs["units"] == "volt"
        # the ms conversion is inexact for some times: their exact seconds are kept
        assert f["biosnn/spike_time_fix/exc/positions"].shape[0] > 0


def test_sonata_foreign_file_and_errors(tmp_path):
    path = tmp_path / "bmtk.h5"
    with h5py.File(path, "w") as f:
        grp = f.create_group("spikes/v1")
        ts = grp.create_dataset("timestamps", data=np.array([12.5, 3.0, 40.0]))
        ts.attrs["units"] = "ms"
        grp.create_dataset("node_ids", data=np.array([7, 2, 7], dtype=np.uint64))
    with pytest.raises(BiosnnError, match="bmtk.h5' has no '/biosnn' group.*dt="):
        load_sonata(path)
    rec = load_sonata(path, dt=DT)
    st = rec.spikes["v1"]
    np.testing.assert_allclose(st.times, [0.003, 0.0125, 0.04])
    assert st.indices.tolist() == [2, 7, 7]
    assert st.size == 8                                  # largest node id + 1
    assert rec.duration == pytest.approx(0.04)
    assert load_sonata(path, dt=DT, duration=1.0, sizes={"v1": 100}).spikes["v1"].size == 100

    empty = tmp_path / "nospikes.h5"
    with h5py.File(empty, "w") as f:
        f.create_group("report")
    with pytest.raises(BiosnnError, match="nospikes.h5' is not a SONATA spike file.*'/spikes'"):
        load_sonata(empty)


# ---------------------------------------------------------------------------
# Neo


def test_neo_structure_and_round_trip(rec):
    import neo
    import quantities as pq

    block = to_neo(rec)
    assert len(block.segments) == 1
    seg = block.segments[0]
    assert len(seg.spiketrains) == 40 + 10 + 5              # one per neuron
    by_key = {(t.annotations["population"], t.annotations["neuron_index"]): t
              for t in seg.spiketrains}
    inh3 = by_key[("inh", 3)]
    np.testing.assert_array_equal(inh3.rescale(pq.s).magnitude, [0.0101])
    assert float(inh3.t_stop.rescale(pq.s)) == rec.duration
    assert len(by_key[("silent", 4)]) == 0
    assert sum(len(t) for t in seg.spiketrains) == rec.total_spikes()
    v = next(s for s in seg.analogsignals if s.name == "exc.v")
    assert isinstance(v, neo.AnalogSignal) and v.units == pq.V
    assert float(v.sampling_period.rescale(pq.s)) == DT
    assert v.array_annotations["neuron_index"].tolist() == [0, 7, 39]
    g = next(s for s in seg.irregularlysampledsignals if s.name == "exc.g_e")
    assert g.units == pq.S
    assert from_neo(block) == rec


def test_from_neo_foreign_block():
    import neo
    import quantities as pq

    block = neo.Block()
    seg = neo.Segment()
    block.segments.append(seg)
    seg.spiketrains.append(neo.SpikeTrain([5.0, 15.0] * pq.ms, t_stop=100 * pq.ms))
    seg.spiketrains.append(neo.SpikeTrain([7.5] * pq.ms, t_stop=100 * pq.ms))
    seg.analogsignals.append(neo.AnalogSignal(np.array([[-70.0], [-65.0]]), units="mV",
                                              sampling_rate=10 * pq.kHz, name="vm"))
    rec = from_neo(block)
    st = rec.spikes["neo"]
    assert st.size == 2
    np.testing.assert_allclose(st.times, [0.005, 0.0075, 0.015])
    assert st.indices.tolist() == [0, 1, 0]
    assert rec.duration == pytest.approx(0.1) and rec.dt == pytest.approx(1e-4)
    trace = rec.states["vm"]["vm"]
    assert trace.unit == "volt"
    np.testing.assert_allclose(trace.values, [[-0.070], [-0.065]])

    two = neo.Block()
    two.segments.extend([neo.Segment(), neo.Segment()])
    with pytest.raises(BiosnnError, match="exactly one Segment, got 2"):
        from_neo(two)


# ---------------------------------------------------------------------------
# export dispatch


@pytest.mark.parametrize("suffix", [".npz", ".h5", ".hdf5", ".pkl"])
def test_export_import_by_suffix(rec, tmp_path, suffix):
    path = export(rec, tmp_path / f"run{suffix}")
    assert path.stat().st_size > 0
    assert import_recording(path) == rec


def test_unknown_suffix_lists_supported(rec, tmp_path):
    with pytest.raises(BiosnnError, match=r"unknown suffix '\.csv'; supported: .*\.npz.*\.h5"):
        export(rec, tmp_path / "run.csv")
    with pytest.raises(BiosnnError, match=r"Recording.save supports \.npz, \.h5, \.hdf5"):
        rec.save(tmp_path / "run.pkl")


# ---------------------------------------------------------------------------
# plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_recording_writes_pngs(rec, tmp_path):
    paths = plot_recording(rec, tmp_path / "figs")
    assert [p.name for p in paths] == ["raster.png", "rates.png", "states.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == PNG_MAGIC
        assert 5_000 < len(data) < 3_000_000
    no_states = plot_recording(make_recording(with_states=False), tmp_path / "figs2")
    assert [p.name for p in no_states] == ["raster.png", "rates.png"]


def test_raster_plot_panels_and_subsampling(rec):
    fig = raster_plot(rec, populations=["inh", "exc"], max_spikes=100)
    axes = fig.get_axes()
    assert [ax.get_ylabel().split("\n")[0] for ax in axes] == ["inh", "exc"]
    drawn = sum(len(line.get_xdata()) for ax in axes for line in ax.get_lines())
    assert drawn <= 100
    assert "showing" in fig._suptitle.get_text()
    full = raster_plot(rec, populations=["inh"])
    assert "showing" not in full._suptitle.get_text()
    line = full.get_axes()[0].get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), [10.1, 10.1, 50.0])    # ms
    np.testing.assert_array_equal(line.get_ydata(), [1, 3, 0])
    with pytest.raises(BiosnnError, match="unknown population.*'nope'"):
        raster_plot(rec, populations=["nope"])


def test_rate_plot_lines_match_population_rate(rec):
    fig = rate_plot(rec, bin_ms=10.0)
    lines = fig.get_axes()[0].get_lines()
    assert len(lines) == 3
    centers, rate = rec.population_rate("exc", 0.01)
    np.testing.assert_allclose(lines[0].get_xdata(), centers * 1e3)
    np.testing.assert_allclose(lines[0].get_ydata(), rate)


def test_final_state_validation_and_overrides():
    with pytest.raises(RecordingError, match="final keys must look like"):
        Recording(spikes={}, duration=0.1, dt=DT, final={"w": FinalState([1.0], "1")})
    with pytest.raises(RecordingError, match="must be a FinalState"):
        Recording(spikes={}, duration=0.1, dt=DT, final={"p.w": np.ones(3)})
    with pytest.raises(RecordingError, match="1-D"):
        FinalState(np.ones((2, 2)), "1")
    rec = Recording(spikes={}, duration=0.1, dt=DT, final={"p.w": FinalState([1e-9, 2e-9], "siemens")})
    ov = rec.final_overrides()["p.w"]
    assert ov.unit == "siemens" and list(ov.data) == [1e-9, 2e-9]
