"""Writing and reading :class:`~biosnn.recording.Recording` objects.

Formats
-------
``.npz``
    :func:`save_npz` / :func:`load_npz`: numpy archive, lossless, no pickle.
``.h5`` / ``.hdf5``
    :func:`save_sonata` / :func:`load_sonata`: the SONATA spike-file layout
    (readable by bmtk, libsonata, NEST's SONATA tools) plus a ``/biosnn``
    group with what SONATA has no place for; lossless.
``.pkl`` (and ``.nix`` when the ``nixio`` package is installed)
    Neo files via :func:`to_neo` / :func:`from_neo`.

:func:`export` and :func:`import_recording` pick the format from the suffix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from biosnn.recording.data import (
    FinalState, Recording, RecordingError, SpikeTrains, SpikeValues, StateTrace, _eval_unit, _unit_from_dims,
)

__all__ = [
    "save_npz", "load_npz", "save_sonata", "load_sonata", "to_neo", "from_neo",
    "export", "import_recording", "supported_suffixes",
]

FORMAT_NAME = "biosnn-recording"
FORMAT_VERSION = 1
_NPZ_HEADER = "__biosnn_header__"

# SONATA conventions (SONATA developer guide, "Spike file" and "HDF5"):
# root attributes magic/version; /spikes/<population> group with an enum
# attribute "sorting"; timestamps (double, attribute units) and node_ids (uint64).
SONATA_MAGIC = 0x0A7A
SONATA_VERSION = (0, 1)
_SORTING = {"none": 0, "by_id": 1, "by_time": 2}


def _path(path: str | Path) -> Path:
    return Path(path)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise RecordingError(f"cannot read recording: file '{path}' does not exist")
    return path


def _rebuild(path: Path, **kwargs: Any) -> Recording:
    """Construct a Recording, naming the file when its content is invalid."""
    try:
        return Recording(**kwargs)
    except RecordingError as exc:
        raise RecordingError(f"file '{path}': {exc}") from None


# ---------------------------------------------------------------------------
# npz


def _numbered(nested):
    """``(k, population, variable, item)`` over a population -> variable -> item mapping, ``k`` from 0."""
    return enumerate((pop, var, item) for pop, variables in nested.items() for var, item in variables.items())


def save_npz(rec: Recording, path: str | Path) -> Path:
    """Write a recording as a compressed numpy archive (lossless).

    Parameters
    ----------
    rec : Recording
        The recording.
    path : str or pathlib.Path
        Target file, written exactly there (no suffix is added).

    Returns
    -------
    pathlib.Path
        The path written.

    Notes
    -----
    A JSON header (entry ``__biosnn_header__``) lists populations, sizes,
    variables, units, ``duration`` and ``dt`` (seconds) and ``meta``; arrays
    are stored as ``spikes_<k>_times`` (s), ``spikes_<k>_indices``,
    ``states_<k>_times`` (s), ``states_<k>_values`` (SI) and
    ``states_<k>_indices``, ``final_<k>`` (SI) for the end-of-run values
    of :attr:`Recording.final`, ``spike_values_<k>`` (SI) and
    ``rates_<k>_{times,values}`` (s, Hz).  Loading needs no pickle.
    """
    path = _path(path)
    arrays: dict[str, np.ndarray] = {}
    header: dict[str, Any] = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                              "duration_s": rec.duration, "dt_s": rec.dt,
                              "meta": dict(rec.meta), "spikes": [], "states": []}
    for k, (name, st) in enumerate(rec.spikes.items()):
        header["spikes"].append({"population": name, "size": st.size, "key": f"spikes_{k}"})
        arrays[f"spikes_{k}_times"] = st.times
        arrays[f"spikes_{k}_indices"] = st.indices
    for k, (pop, var, trace) in _numbered(rec.states):
        header["states"].append({"population": pop, "variable": var, "unit": trace.unit,
                                 "key": f"states_{k}"})
        arrays[f"states_{k}_times"] = trace.times
        arrays[f"states_{k}_values"] = trace.values
        arrays[f"states_{k}_indices"] = trace.indices
    header["final"] = []
    for k, (key, fs) in enumerate(rec.final.items()):
        header["final"].append({"name": key, "unit": fs.unit, "key": f"final_{k}"})
        arrays[f"final_{k}"] = fs.values
    header["spike_values"] = []
    for k, (pop, var, sv) in _numbered(rec.spike_values):
        header["spike_values"].append({"population": pop, "variable": var, "unit": sv.unit,
                                       "key": f"spike_values_{k}"})
        arrays[f"spike_values_{k}"] = sv.values
    header["rates"] = []
    for k, (pop, trace) in enumerate(rec.rates.items()):
        header["rates"].append({"population": pop, "key": f"rates_{k}"})
        arrays[f"rates_{k}_times"] = trace.times
        arrays[f"rates_{k}_values"] = trace.values[:, 0]
    arrays[_NPZ_HEADER] = np.array(json.dumps(header))
    with open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def load_npz(path: str | Path) -> Recording:
    """Read a recording written by :func:`save_npz`.

    Parameters
    ----------
    path : str or pathlib.Path
        The ``.npz`` file.

    Returns
    -------
    Recording

    Raises
    ------
    RecordingError
        The file is missing, not an npz archive, or not written by biosnn.
    """
    path = _existing(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            if _NPZ_HEADER not in data.files:
                raise RecordingError(f"file '{path}' is not a biosnn recording: it has no "
                                     f"'{_NPZ_HEADER}' entry")
            header = json.loads(str(data[_NPZ_HEADER]))
            if header.get("format") != FORMAT_NAME or header.get("version") != FORMAT_VERSION:
                raise RecordingError(
                    f"file '{path}': unsupported format {header.get('format')!r} version "
                    f"{header.get('version')!r} (expected {FORMAT_NAME!r} {FORMAT_VERSION})")
            spikes = {}
            for entry in header["spikes"]:
                key = entry["key"]
                spikes[entry["population"]] = SpikeTrains(
                    times=data[f"{key}_times"], indices=data[f"{key}_indices"],
                    size=int(entry["size"]))
            states: dict[str, dict[str, StateTrace]] = {}
            for entry in header["states"]:
                key = entry["key"]
                states.setdefault(entry["population"], {})[entry["variable"]] = StateTrace(
                    times=data[f"{key}_times"], values=data[f"{key}_values"],
                    indices=data[f"{key}_indices"], unit=entry["unit"])
            final = {entry["name"]: FinalState(values=data[entry["key"]], unit=entry["unit"])
                     for entry in header.get("final", [])}
            spike_values: dict[str, dict[str, SpikeValues]] = {}
            for entry in header.get("spike_values", []):
                spike_values.setdefault(entry["population"], {})[entry["variable"]] = SpikeValues(
                    values=data[entry["key"]], unit=entry["unit"])
            rates = {entry["population"]: _rate_trace(data[f"{entry['key']}_times"], data[f"{entry['key']}_values"])
                     for entry in header.get("rates", [])}
    except RecordingError as exc:
        if str(path) in str(exc):
            raise
        raise RecordingError(f"file '{path}': {exc}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RecordingError(f"file '{path}' is not a readable biosnn .npz recording: "
                             f"{type(exc).__name__}: {exc}") from None
    return _rebuild(path, spikes=spikes, states=states, duration=float(header["duration_s"]),
                    dt=float(header["dt_s"]), meta=header["meta"], final=final, spike_values=spike_values,
                    rates=rates)


def _rate_trace(times, rate) -> StateTrace:
    """A population rate as a :class:`StateTrace` (one column, index 0, hertz)."""
    return StateTrace(times=times, values=np.asarray(rate, dtype=np.float64).reshape(-1, 1),
                      indices=np.zeros(1, dtype=np.int64), unit="hertz")


# ---------------------------------------------------------------------------
# SONATA (HDF5)


def _sorting_dtype():
    import h5py

    return h5py.enum_dtype(_SORTING, basetype="u1")


def save_sonata(rec: Recording, path: str | Path) -> Path:
    """Write a recording as a SONATA spike file (HDF5), lossless.

    Parameters
    ----------
    rec : Recording
        The recording.
    path : str or pathlib.Path
        Target ``.h5``/``.hdf5`` file (overwritten).

    Returns
    -------
    pathlib.Path
        The path written.

    Notes
    -----
    SONATA part (any SONATA reader can use it):

    - root attributes ``magic`` (uint32 ``0x0A7A``) and ``version``
      (uint32 ``[0, 1]``);
    - ``/spikes/<population>``: group with enum attribute
      ``sorting = by_time`` (the SONATA spec puts ``sorting`` on the
      population group);
    - ``/spikes/<population>/timestamps``: float64, milliseconds, attribute
      ``units = "ms"``;
    - ``/spikes/<population>/node_ids``: uint64.

    biosnn extras under ``/biosnn`` (attributes ``format``, ``version``,
    ``duration_s``, ``dt_s``): ``population_names`` and
    ``population_sizes``; ``meta_keys``/``meta_values``;
    ``spike_time_fix/<population>/{positions,times_s}``, the exact times in
    seconds of the few spikes for which ``(t * 1000) / 1000 != t`` in
    floating point, so the ms conversion stays lossless;
    ``states/<population>/<variable>/{times_s, values, node_ids}`` with
    ``values`` attribute ``units`` (a Brian2 unit string, SI values);
    ``final/<part>.<variable>`` (SI values, attribute ``units``) for
    :attr:`Recording.final`; ``spike_values/<population>/<variable>`` (SI
    values, attribute ``units``) and ``rates/<population>/{times_s, rate_hz}``.
    """
    import h5py

    path = _path(path)
    with h5py.File(path, "w", track_order=True) as f:
        f.attrs["magic"] = np.uint32(SONATA_MAGIC)
        f.attrs["version"] = np.array(SONATA_VERSION, dtype=np.uint32)
        spikes = f.create_group("spikes", track_order=True)
        extra = f.create_group("biosnn", track_order=True)
        extra.attrs["format"] = FORMAT_NAME
        extra.attrs["version"] = np.int64(FORMAT_VERSION)
        extra.attrs["duration_s"] = np.float64(rec.duration)
        extra.attrs["dt_s"] = np.float64(rec.dt)
        names = list(rec.spikes)
        extra.create_dataset("population_names", data=np.array(names, dtype=object),
                             dtype=h5py.string_dtype())
        extra.create_dataset("population_sizes",
                             data=np.array([rec.spikes[n].size for n in names], dtype=np.int64))
        extra.create_dataset("meta_keys", data=np.array(list(rec.meta), dtype=object),
                             dtype=h5py.string_dtype())
        extra.create_dataset("meta_values", data=np.array(list(rec.meta.values()), dtype=object),
                             dtype=h5py.string_dtype())
        fix = extra.create_group("spike_time_fix", track_order=True)
        for name, st in rec.spikes.items():
            grp = spikes.create_group(name)
            grp.attrs.create("sorting", _SORTING["by_time"], dtype=_sorting_dtype())
            ms = st.times * 1e3
            ts = grp.create_dataset("timestamps", data=ms, dtype=np.float64)
            ts.attrs["units"] = "ms"
            grp.create_dataset("node_ids", data=st.indices.astype(np.uint64), dtype=np.uint64)
            bad = np.flatnonzero(ms / 1e3 != st.times)
            fgrp = fix.create_group(name)
            fgrp.create_dataset("positions", data=bad.astype(np.uint64), dtype=np.uint64)
            fgrp.create_dataset("times_s", data=st.times[bad], dtype=np.float64)
        states = extra.create_group("states", track_order=True)
        for pop, variables in rec.states.items():
            pgrp = states.create_group(pop, track_order=True)
            for var, trace in variables.items():
                vgrp = pgrp.create_group(var)
                vgrp.create_dataset("times_s", data=trace.times, dtype=np.float64)
                values = vgrp.create_dataset("values", data=trace.values, dtype=np.float64)
                values.attrs["units"] = trace.unit
                vgrp.create_dataset("node_ids", data=trace.indices.astype(np.uint64),
                                    dtype=np.uint64)
        final = extra.create_group("final", track_order=True)
        for key, fs in rec.final.items():
            final.create_dataset(key, data=fs.values, dtype=np.float64).attrs["units"] = fs.unit
        spike_values = extra.create_group("spike_values", track_order=True)
        for pop, variables in rec.spike_values.items():
            pgrp = spike_values.create_group(pop, track_order=True)
            for var, sv in variables.items():
                pgrp.create_dataset(var, data=sv.values, dtype=np.float64).attrs["units"] = sv.unit
        rates = extra.create_group("rates", track_order=True)
        for pop, trace in rec.rates.items():
            rgrp = rates.create_group(pop)
            rgrp.create_dataset("times_s", data=trace.times, dtype=np.float64)
            rgrp.create_dataset("rate_hz", data=trace.values[:, 0], dtype=np.float64)
    return path


def _attr_str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _attr_str(value.item())
    return str(value)


def _str_list(dataset) -> list[str]:
    return [_attr_str(v) for v in dataset[()]]


def load_sonata(path: str | Path, *, dt: float | None = None, duration: float | None = None,
                sizes: Mapping[str, int] | None = None) -> Recording:
    """Read a SONATA spike file (HDF5).

    Files written by :func:`save_sonata` come back exactly.  Other SONATA
    spike files (bmtk, NEST, ...) have no ``/biosnn`` group; then ``dt`` is
    required and ``duration`` and ``sizes`` are inferred unless given.

    Parameters
    ----------
    path : str or pathlib.Path
        The ``.h5``/``.hdf5`` file.
    dt : float, optional
        Simulation time step in seconds (s); overrides the file's value.
    duration : float, optional
        Simulated time in seconds (s); overrides the file's value.  Default
        for foreign files: the last spike time.
    sizes : Mapping[str, int], optional
        Population sizes; overrides the file's values.  Default for foreign
        files: largest node id + 1.

    Returns
    -------
    Recording

    Raises
    ------
    RecordingError
        The file is missing, not HDF5, has no ``/spikes`` group, uses an
        unknown time unit, or (foreign file) ``dt`` was not given.
    """
    import h5py

    path = _existing(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise RecordingError(f"file '{path}' is not a readable HDF5 file: {exc}") from None
    with f:
        if "spikes" not in f or not isinstance(f["spikes"], h5py.Group):
            raise RecordingError(f"file '{path}' is not a SONATA spike file: the group "
                                 f"'/spikes' is missing")
        extra = f.get("biosnn")
        file_sizes: dict[str, int] = {}
        meta: dict[str, str] = {}
        fixes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        states: dict[str, dict[str, StateTrace]] = {}
        final: dict[str, FinalState] = {}
        spike_values: dict[str, dict[str, SpikeValues]] = {}
        rates: dict[str, StateTrace] = {}
        file_dt = file_duration = None
        try:
            if extra is not None:
                file_dt = float(extra.attrs["dt_s"])
                file_duration = float(extra.attrs["duration_s"])
                file_sizes = dict(zip(_str_list(extra["population_names"]),
                                      (int(s) for s in extra["population_sizes"][()])))
                meta = dict(zip(_str_list(extra["meta_keys"]), _str_list(extra["meta_values"])))
                for name, fgrp in extra.get("spike_time_fix", {}).items():
                    fixes[name] = (fgrp["positions"][()].astype(np.int64), fgrp["times_s"][()])
                for pop, pgrp in extra.get("states", {}).items():
                    for var, vgrp in pgrp.items():
                        states.setdefault(pop, {})[var] = StateTrace(
                            times=vgrp["times_s"][()], values=vgrp["values"][()],
                            indices=vgrp["node_ids"][()].astype(np.int64),
                            unit=_attr_str(vgrp["values"].attrs["units"]))
                for key, ds in extra.get("final", {}).items():
                    final[key] = FinalState(values=ds[()], unit=_attr_str(ds.attrs["units"]))
                for pop, pgrp in extra.get("spike_values", {}).items():
                    for var, ds in pgrp.items():
                        spike_values.setdefault(pop, {})[var] = SpikeValues(values=ds[()],
                                                                            unit=_attr_str(ds.attrs["units"]))
                for pop, rgrp in extra.get("rates", {}).items():
                    rates[pop] = _rate_trace(rgrp["times_s"][()], rgrp["rate_hz"][()])
            spikes = {}
            last_spike = 0.0
            for name, grp in f["spikes"].items():
                if "timestamps" not in grp or "node_ids" not in grp:
                    raise RecordingError(f"population '/spikes/{name}' lacks the dataset "
                                         f"'timestamps' or 'node_ids'")
                ts = grp["timestamps"]
                unit = _attr_str(ts.attrs.get("units", "ms")).strip()
                if unit == "ms":
                    times = ts[()].astype(np.float64) / 1e3
                elif unit in ("s", "sec", "second", "seconds"):
                    times = ts[()].astype(np.float64)
                else:
                    raise RecordingError(f"'/spikes/{name}/timestamps' has units {unit!r}; "
                                         f"only 'ms' and 's' are supported")
                if name in fixes:
                    positions, exact = fixes[name]
                    times[positions] = exact
                node_ids = grp["node_ids"][()]
                if node_ids.size and node_ids.max() > np.iinfo(np.int64).max:
                    raise RecordingError(f"'/spikes/{name}/node_ids' holds ids too large")
                node_ids = node_ids.astype(np.int64)
                if sizes is not None and name in sizes:
                    size = int(sizes[name])
                elif name in file_sizes:
                    size = file_sizes[name]
                else:
                    size = int(node_ids.max()) + 1 if node_ids.size else 0
                if times.size:
                    last_spike = max(last_spike, float(times.max()))
                spikes[name] = SpikeTrains(times=times, indices=node_ids, size=size)
        except RecordingError as exc:
            raise RecordingError(f"file '{path}': {exc}") from None
        except (KeyError, ValueError, TypeError) as exc:
            raise RecordingError(f"file '{path}': damaged biosnn/SONATA content: "
                                 f"{type(exc).__name__}: {exc}") from None
    dt = dt if dt is not None else file_dt
    if dt is None:
        raise RecordingError(f"file '{path}' has no '/biosnn' group (not written by biosnn), "
                             f"so the time step is unknown: pass dt= (seconds) to load_sonata")
    if duration is None:
        duration = file_duration if file_duration is not None else last_spike
    if extra is None:
        meta = {"source": f"SONATA file {path.name}"}
    return _rebuild(path, spikes=spikes, states=states, duration=duration, dt=dt, meta=meta,
                    final=final, spike_values=spike_values, rates=rates)


# ---------------------------------------------------------------------------
# Neo

_PQ_NAMES = {
    "metre": "meter", "meter": "meter", "kilogram": "kilogram", "kilogramme": "kilogram",
    "second": "second", "amp": "ampere", "ampere": "ampere", "kelvin": "kelvin",
    "mole": "mole", "mol": "mole", "candle": "candela", "volt": "volt", "siemens": "siemens",
    "ohm": "ohm", "farad": "farad", "hertz": "hertz", "coulomb": "coulomb", "joule": "joule",
    "watt": "watt", "newton": "newton", "pascal": "pascal", "tesla": "tesla",
    "weber": "weber", "henry": "henry", "radian": "radian", "steradian": "steradian",
    "becquerel": "becquerel", "gray": "gray", "sievert": "sievert",
}
_PQ_COMPOUND = {"katal": ("mole", "second", -1), "lumen": ("candela", "steradian", 1),
                "lux": ("candela", "meter", -2)}
_PQ_BASE = {"m": 0, "kg": 1, "s": 2, "A": 3, "K": 4, "mol": 5, "cd": 6}


def _pq_unit(unit: str):
    """``quantities`` unit for a Brian2 unit string."""
    import quantities as pq

    reg = pq.unit_registry

    def lookup(name: str):
        if name in _PQ_COMPOUND:
            a, b, power = _PQ_COMPOUND[name]
            return reg[a] * reg[b] ** power
        return reg[_PQ_NAMES[name]]

    result = _eval_unit(unit, lookup, pq.dimensionless)
    return result.units if hasattr(result, "units") else pq.dimensionless


def _unit_of_pq(units) -> str:
    """Brian2 unit string for a ``quantities`` unit (via its SI simplification)."""
    dims = [0.0] * 7
    for base, power in units.simplified.dimensionality.items():
        if base.symbol not in _PQ_BASE:
            raise RecordingError(f"cannot express unit {units.dimensionality} in SI base units "
                                 f"(unknown base {base.symbol!r})")
        dims[_PQ_BASE[base.symbol]] += float(power)
    return _unit_from_dims(dims)


def _seconds(q) -> np.ndarray:
    return np.asarray(q.rescale("s").magnitude, dtype=np.float64)


def _regular_grid(times: np.ndarray, dt: float) -> tuple[float, float] | None:
    """(t_start, period) if times == t_start + arange(n) * period exactly."""
    n = times.size
    if n == 0:
        return 0.0, dt
    t0 = float(times[0])
    period = float(times[1] - times[0]) if n > 1 else dt
    if period <= 0:
        return None
    if np.array_equal(t0 + np.arange(n) * period, times):
        return t0, period
    return None


def to_neo(rec: Recording):
    """Convert a recording to a Neo ``Block`` with one ``Segment``.

    Parameters
    ----------
    rec : Recording
        The recording.

    Returns
    -------
    neo.Block
        One ``Segment`` holding one ``neo.SpikeTrain`` per neuron (times in
        s, ``t_start = 0``, ``t_stop = duration``, or ``duration + dt`` when
        a spike lies after ``duration``), annotated with ``population`` and
        ``neuron_index``; and one signal per state trace, annotated with
        ``population``, ``variable`` and ``biosnn_unit`` and with the array
        annotation ``neuron_index`` per channel.  A trace sampled on an exact
        regular grid becomes a ``neo.AnalogSignal``, any other an
        ``IrregularlySampledSignal``, so times survive exactly.  The block's
        annotations keep ``duration``/``dt`` (s), population sizes and
        ``meta``, so :func:`from_neo` restores the recording exactly.
    """
    if rec.spike_values or rec.rates:  # not silently dropped
        raise RecordingError("this recording has spike values or population rates, which the Neo export does not "
                             "carry: save it as .npz or .h5 (Recording.save), or drop them with "
                             "dataclasses.replace(rec, spike_values={}, rates={})")
    import neo
    import quantities as pq

    t_stop = rec.duration
    if any(len(st) and st.times[-1] > rec.duration for st in rec.spikes.values()):
        t_stop = rec.duration + rec.dt
    block = neo.Block(
        name=rec.meta.get("spec", "biosnn recording"),
        biosnn_format=FORMAT_NAME, biosnn_version=FORMAT_VERSION,
        biosnn_duration_s=rec.duration, biosnn_dt_s=rec.dt,
        biosnn_population_names=list(rec.spikes),
        biosnn_population_sizes=[st.size for st in rec.spikes.values()],
        biosnn_meta_keys=list(rec.meta), biosnn_meta_values=list(rec.meta.values()),
        biosnn_final_keys=list(rec.final), biosnn_final_units=[fs.unit for fs in rec.final.values()],
        biosnn_final_values=[np.array(fs.values) for fs in rec.final.values()])
    seg = neo.Segment(name="run")
    block.segments.append(seg)
    for name, st in rec.spikes.items():
        for i, times in enumerate(st.trains()):
            train = neo.SpikeTrain(times, units="s", t_start=0.0 * pq.s, t_stop=t_stop * pq.s,
                                   name=f"{name}[{i}]", population=name, neuron_index=i)
            seg.spiketrains.append(train)
    for pop, variables in rec.states.items():
        for var, trace in variables.items():
            try:
                units = _pq_unit(trace.unit)
            except Exception:  # unit unknown to quantities: keep it in the annotation
                units = pq.dimensionless
            common = dict(units=units, name=f"{pop}.{var}", population=pop, variable=var,
                          biosnn_unit=trace.unit,
                          array_annotations={"neuron_index": np.array(trace.indices)})
            grid = _regular_grid(trace.times, rec.dt)
            if grid is not None:
                t0, period = grid
                sig = neo.AnalogSignal(np.array(trace.values), t_start=t0 * pq.s,
                                       sampling_period=period * pq.s, **common)
                seg.analogsignals.append(sig)
            else:
                sig = neo.IrregularlySampledSignal(np.array(trace.times), np.array(trace.values),
                                                   time_units="s", **common)
                seg.irregularlysampledsignals.append(sig)
    return block


def from_neo(block, *, dt: float | None = None, duration: float | None = None) -> Recording:
    """Convert a Neo ``Block`` (one ``Segment``) to a recording.

    Blocks made by :func:`to_neo` come back exactly.  For other blocks,
    spike trains are grouped by their ``population`` annotation (default
    ``"neo"``), the neuron is the ``neuron_index`` annotation (default: the
    train's position within its population), sizes are the largest index
    + 1, and signals become state traces (``population`` and ``variable``
    annotations, else the signal name) in SI units.

    Parameters
    ----------
    block : neo.Block
        Block with exactly one segment.
    dt : float, optional
        Time step in seconds (s); default from the block's annotations, else
        the sampling period of the first ``AnalogSignal``.
    duration : float, optional
        Simulated time in seconds (s); default from the block's annotations,
        else the largest ``t_stop`` of its trains and signals.

    Returns
    -------
    Recording
    """
    import neo

    if not isinstance(block, neo.Block):
        raise RecordingError(f"from_neo expects a neo.Block, got {type(block).__name__}")
    if len(block.segments) != 1:
        raise RecordingError(f"from_neo expects a Block with exactly one Segment, got "
                             f"{len(block.segments)}")
    seg = block.segments[0]
    ann = block.annotations
    t_stops: list[float] = []

    by_pop: dict[str, list[tuple[int, np.ndarray]]] = {}
    for train in seg.spiketrains:
        pop = str(train.annotations.get("population", "neo"))
        entries = by_pop.setdefault(pop, [])
        index = int(train.annotations.get("neuron_index", len(entries)))
        entries.append((index, _seconds(train.times)))
        t_stops.append(float(train.t_stop.rescale("s").magnitude))
    known_sizes = dict(zip(ann.get("biosnn_population_names", []),
                           ann.get("biosnn_population_sizes", [])))
    order = list(ann.get("biosnn_population_names", []))
    order += [p for p in by_pop if p not in order]
    spikes = {}
    for pop in order:
        entries = by_pop.get(pop, [])
        idx = np.array([i for i, _ in entries], dtype=np.int64)
        if np.unique(idx).size != idx.size:
            raise RecordingError(f"population {pop!r}: several spike trains share a neuron_index")
        times = (np.concatenate([t for _, t in entries]) if entries
                 else np.zeros(0, dtype=np.float64))
        indices = np.repeat(idx, [t.size for _, t in entries]) if entries else idx
        if pop in known_sizes:
            size = int(known_sizes[pop])
        else:
            size = int(idx.max()) + 1 if idx.size else 0
        spikes[pop] = SpikeTrains(times=times, indices=indices, size=size)

    states: dict[str, dict[str, StateTrace]] = {}
    signal_dt = None
    for sig in list(seg.analogsignals) + list(seg.irregularlysampledsignals):
        if isinstance(sig, neo.AnalogSignal):
            t0 = float(sig.t_start.rescale("s").magnitude)
            period = float(sig.sampling_period.rescale("s").magnitude)
            times = t0 + np.arange(sig.shape[0]) * period
            signal_dt = period if signal_dt is None else signal_dt
        else:
            times = _seconds(sig.times)
        t_stops.append(float(sig.t_stop.rescale("s").magnitude))
        unit = sig.annotations.get("biosnn_unit")
        if unit is not None:
            try:
                values = sig.rescale(_pq_unit(unit)).magnitude
            except Exception:  # unit unknown to quantities: to_neo stored SI magnitudes
                values = sig.magnitude
        else:
            unit = _unit_of_pq(sig.units)
            values = sig.simplified.magnitude
        pop = str(sig.annotations.get("population", sig.name or "neo"))
        var = str(sig.annotations.get("variable", sig.name or f"signal{len(states.get(pop, {}))}"))
        indices = sig.array_annotations.get("neuron_index", np.arange(sig.shape[1]))
        states.setdefault(pop, {})[var] = StateTrace(times=times, values=np.asarray(values),
                                                     indices=indices, unit=str(unit))

    if dt is None:
        dt = ann.get("biosnn_dt_s", signal_dt)
    if dt is None:
        raise RecordingError("the neo Block carries no time step (no biosnn annotations, no "
                             "AnalogSignal): pass dt= (seconds) to from_neo")
    if duration is None:
        duration = ann.get("biosnn_duration_s", max(t_stops) if t_stops else None)
    if duration is None:
        raise RecordingError("the neo Block is empty and carries no duration: pass duration=")
    meta = dict(zip(ann.get("biosnn_meta_keys", []), ann.get("biosnn_meta_values", [])))
    final = {key: FinalState(values=values, unit=unit) for key, unit, values in zip(
        ann.get("biosnn_final_keys", []), ann.get("biosnn_final_units", []), ann.get("biosnn_final_values", []))}
    return Recording(spikes=spikes, states=states, duration=float(duration), dt=float(dt),
                     meta=meta, final=final)


# ---------------------------------------------------------------------------
# dispatch


def _nix_available() -> bool:
    try:
        import nixio  # noqa: F401
    except ImportError:
        return False
    return True


def supported_suffixes() -> list[str]:
    """File suffixes :func:`export` can write here (``.nix`` needs ``nixio``)."""
    out = [".npz", ".h5", ".hdf5", ".pkl"]
    if _nix_available():
        out.append(".nix")
    return out


def _unknown_suffix(path: Path, verb: str) -> RecordingError:
    hint = "" if _nix_available() else " (.nix needs the 'nixio' package)"
    return RecordingError(f"cannot {verb} '{path}': unknown suffix {path.suffix!r}; supported: "
                          f"{', '.join(supported_suffixes())}{hint}")


def export(rec: Recording, path: str | Path) -> Path:
    """Write a recording in the format given by the suffix of ``path``.

    Parameters
    ----------
    rec : Recording
        The recording.
    path : str or pathlib.Path
        ``.npz`` (:func:`save_npz`), ``.h5``/``.hdf5`` (:func:`save_sonata`),
        ``.pkl`` (Neo ``PickleIO``), ``.nix`` (Neo ``NixIO``, needs
        ``nixio``).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    RecordingError
        Unknown suffix (the message lists the supported ones).
    """
    path = _path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return save_npz(rec, path)
    if suffix in (".h5", ".hdf5"):
        return save_sonata(rec, path)
    if suffix == ".pkl":
        from neo.io import PickleIO

        PickleIO(filename=str(path)).write_block(to_neo(rec))
        return path
    if suffix == ".nix" and _nix_available():
        from neo.io import NixIO

        if path.exists():
            path.unlink()
        with NixIO(str(path), mode="ow") as io:
            io.write_block(to_neo(rec))
        return path
    raise _unknown_suffix(path, "export to")


def import_recording(path: str | Path) -> Recording:
    """Read a recording written by :func:`export` (format from the suffix).

    ``.pkl`` files are Python pickles: load only files you trust.
    """
    path = _existing(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(path)
    if suffix in (".h5", ".hdf5"):
        return load_sonata(path)
    if suffix == ".pkl":
        from neo.io import PickleIO

        return from_neo(PickleIO(filename=str(path)).read_block())
    if suffix == ".nix" and _nix_available():
        from neo.io import NixIO

        with NixIO(str(path), mode="ro") as io:
            return from_neo(io.read_block())
    raise _unknown_suffix(path, "import")
