"""The result of every simulation run: spikes and state traces as plain numpy.

A :class:`Recording` holds, per population, a :class:`SpikeTrains` (spike
times and neuron indices) and any number of :class:`StateTrace` objects (a
recorded variable such as the membrane potential ``v``).  Nothing here holds a
Brian2 object: times are float64 seconds, state values are float64 in coherent
SI units, and the unit travels as a Brian2 unit string (``"volt"``,
``"siemens"``, ``"metre ** -2 * siemens"``, ``"1"`` for dimensionless).

All three classes are frozen: their arrays are read-only copies and their
mappings are read-only views, so a recording handed to several consumers
cannot be changed by one of them.  Bad input raises :class:`RecordingError`
(a :class:`biosnn.errors.BiosnnError`).

Saving and loading go through :meth:`Recording.save` / :meth:`Recording.load`
(``.npz`` and SONATA ``.h5``/``.hdf5``); Neo formats are in
:mod:`biosnn.recording.formats`.
"""

from __future__ import annotations

import ast
import math
import numbers
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from biosnn.errors import BiosnnError

__all__ = ["RecordingError", "SpikeTrains", "StateTrace", "FinalState", "SpikeValues", "Recording"]


class RecordingError(BiosnnError):
    """A recording, or a file that should hold one, is invalid."""


# ---------------------------------------------------------------------------
# helpers


def _frozen(arr: np.ndarray) -> np.ndarray:
    """Return a read-only copy of ``arr``."""
    out = np.array(arr, copy=True)
    out.flags.writeable = False
    return out


def _float_array(value: Any, what: str, ndim: int) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise RecordingError(f"{what} must be numeric, got {type(value).__name__}: {exc}") from None
    if arr.ndim != ndim:
        raise RecordingError(f"{what} must be a {ndim}-D array, got shape {arr.shape}")
    return arr


def _index_array(value: Any, what: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.size == 0:
        arr = arr.astype(np.int64)
    if arr.ndim != 1:
        raise RecordingError(f"{what} must be a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise RecordingError(f"{what} must hold whole numbers, got non-integer values")
    elif arr.dtype.kind not in "iu":
        raise RecordingError(f"{what} must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise RecordingError(f"{what} holds values too large for int64")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise RecordingError(f"{what} must be >= 0, got {int(arr.min())}")
    return arr


def _positive_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise RecordingError(f"{what} must be a number (seconds), got {value!r}")
    out = float(value)
    if not math.isfinite(out) or out <= 0:
        raise RecordingError(f"{what} must be finite and > 0, got {out!r}")
    return out


def _check_name(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name or "/" in name or name != name.strip():
        raise RecordingError(
            f"{what} name must be a non-empty string without '/' or surrounding "
            f"spaces, got {name!r}")
    return name


# ---------------------------------------------------------------------------
# units: Brian2 unit strings restricted to coherent SI units (scale 1)

# Dimension exponents in Brian2's order: metre, kilogram, second, amp, kelvin,
# mole, candle.
_BASE_NAMES = ("metre", "kilogram", "second", "amp", "kelvin", "mole", "candle")

_UNIT_DIMS: dict[str, tuple[float, ...]] = {
    "metre": (1, 0, 0, 0, 0, 0, 0), "meter": (1, 0, 0, 0, 0, 0, 0),
    "kilogram": (0, 1, 0, 0, 0, 0, 0), "kilogramme": (0, 1, 0, 0, 0, 0, 0),
    "second": (0, 0, 1, 0, 0, 0, 0),
    "amp": (0, 0, 0, 1, 0, 0, 0), "ampere": (0, 0, 0, 1, 0, 0, 0),
    "kelvin": (0, 0, 0, 0, 1, 0, 0),
    "mole": (0, 0, 0, 0, 0, 1, 0), "mol": (0, 0, 0, 0, 0, 1, 0),
    "candle": (0, 0, 0, 0, 0, 0, 1),
    "volt": (2, 1, -3, -1, 0, 0, 0),
    "siemens": (-2, -1, 3, 2, 0, 0, 0),
    "ohm": (2, 1, -3, -2, 0, 0, 0),
    "farad": (-2, -1, 4, 2, 0, 0, 0),
    "hertz": (0, 0, -1, 0, 0, 0, 0),
    "coulomb": (0, 0, 1, 1, 0, 0, 0),
    "joule": (2, 1, -2, 0, 0, 0, 0),
    "watt": (2, 1, -3, 0, 0, 0, 0),
    "newton": (1, 1, -2, 0, 0, 0, 0),
    "pascal": (-1, 1, -2, 0, 0, 0, 0),
    "tesla": (0, 1, -2, -1, 0, 0, 0),
    "weber": (2, 1, -2, -1, 0, 0, 0),
    "henry": (2, 1, -2, -2, 0, 0, 0),
    "radian": (0, 0, 0, 0, 0, 0, 0),
    "steradian": (0, 0, 0, 0, 0, 0, 0),
    "becquerel": (0, 0, -1, 0, 0, 0, 0),
    "gray": (2, 0, -2, 0, 0, 0, 0),
    "sievert": (2, 0, -2, 0, 0, 0, 0),
    "katal": (0, 0, -1, 0, 0, 1, 0),
    "lumen": (0, 0, 0, 0, 0, 0, 1),
    "lux": (-2, 0, 0, 0, 0, 0, 1),
}

# The name used when turning a dimension back into a string (first match wins).
_PREFERRED_NAMES = ("metre", "kilogram", "second", "amp", "kelvin", "mole", "candle",
                    "volt", "siemens", "ohm", "farad", "hertz", "coulomb", "joule",
                    "watt", "newton", "pascal", "tesla", "weber", "henry")


class _Dims(tuple):
    """Dimension exponents supporting ``*``, ``/`` and ``**`` (for parsing)."""

    def __mul__(self, other):  # type: ignore[override]
        return _Dims(a + b for a, b in zip(self, other))

    def __truediv__(self, other):
        return _Dims(a - b for a, b in zip(self, other))

    def __pow__(self, exponent):
        return _Dims(a * exponent for a in self)


def _eval_unit(text: str, lookup: Callable[[str], Any], one: Any) -> Any:
    """Evaluate a unit expression such as ``"metre ** -2 * siemens"``.

    Only unit names from the whitelist, the literal ``1``, ``*``, ``/``,
    ``**`` with a numeric exponent and parentheses are accepted; nothing is
    passed to :func:`eval`.
    """
    if not isinstance(text, str) or not text.strip():
        raise RecordingError(f"unit must be a non-empty Brian2 unit string, got {text!r}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError:
        raise RecordingError(f"unit {text!r} is not a valid unit expression") from None

    def exponent(node: ast.AST) -> float:
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = exponent(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if (isinstance(node, ast.Constant) and isinstance(node.value, (int, float))
                and not isinstance(node.value, bool)):
            return node.value
        raise RecordingError(f"unit {text!r}: exponents must be numbers")

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant) and node.value == 1 and not isinstance(node.value, bool):
            return one
        if isinstance(node, ast.Name):
            if node.id not in _UNIT_DIMS:
                raise RecordingError(
                    f"unit {text!r}: {node.id!r} is not a coherent SI unit name; values "
                    f"must be in SI base units, so use e.g. 'volt' not 'mV' "
                    f"(known: {', '.join(sorted(_UNIT_DIMS))}, or '1')")
            return lookup(node.id)
        if isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Pow):
                return ev(node.left) ** exponent(node.right)
            if isinstance(node.op, ast.Mult):
                return ev(node.left) * ev(node.right)
            if isinstance(node.op, ast.Div):
                return ev(node.left) / ev(node.right)
        raise RecordingError(
            f"unit {text!r} is not a unit expression (allowed: unit names, 1, *, /, **)")

    return ev(tree.body)


def _unit_dims(unit: str) -> _Dims:
    """Dimension exponents (metre, kilogram, second, amp, kelvin, mole, candle)."""
    return _eval_unit(unit, lambda name: _Dims(_UNIT_DIMS[name]), _Dims((0,) * 7))


def _unit_from_dims(dims: Any) -> str:
    """Brian2-style unit string for dimension exponents in Brian2's order."""
    dims = tuple(float(d) for d in dims)
    if len(dims) != 7:
        raise RecordingError(f"expected 7 dimension exponents, got {len(dims)}")
    if not any(dims):
        return "1"
    for name in _PREFERRED_NAMES:
        if tuple(float(d) for d in _UNIT_DIMS[name]) == dims:
            return name
    parts = []
    for name, power in zip(_BASE_NAMES, dims):
        if power == 0:
            continue
        power_text = str(int(power)) if float(power).is_integer() else repr(float(power))
        parts.append(name if power_text == "1" else f"{name} ** {power_text}")
    return " * ".join(parts)


def _arrays_equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    if a.dtype.kind == "f" and b.dtype.kind == "f":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


# ---------------------------------------------------------------------------
# SpikeTrains


@dataclass(frozen=True, eq=False, repr=False)
class SpikeTrains:
    """Spikes of one population.

    Parameters
    ----------
    times : array_like of float, shape (n_spikes,)
        Spike times in seconds (s), >= 0.
    indices : array_like of int, shape (n_spikes,)
        Index of the spiking neuron within the population, ``0 <= i < size``.
    size : int
        Number of neurons in the population (also those that never spiked).

    Notes
    -----
    Spikes are stored sorted by time, ties broken by neuron index (a stable
    sort, so the order does not depend on the backend's order within a time
    step).  ``times`` is float64 and ``indices`` int64; both are read-only.

    Examples
    --------
    >>> st = SpikeTrains(times=[0.002, 0.001, 0.003], indices=[1, 0, 1], size=3)
    >>> st.times.tolist()
    [0.001, 0.002, 0.003]
    >>> st.counts().tolist()
    [1, 2, 0]
    >>> st.rates(0.5).tolist()   # Hz over a 0.5 s run
    [2.0, 4.0, 0.0]
    """

    times: np.ndarray
    indices: np.ndarray
    size: int

    def __post_init__(self) -> None:
        times = _float_array(self.times, "spike times", 1)
        indices = _index_array(self.indices, "spike indices")
        size = self.size
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 0:
            raise RecordingError(f"population size must be an integer >= 0, got {size!r}")
        size = int(size)
        if times.shape != indices.shape:
            raise RecordingError(
                f"spike times and indices differ in length: {times.shape[0]} times, "
                f"{indices.shape[0]} indices")
        if times.size:
            if not np.all(np.isfinite(times)):
                raise RecordingError("spike times must be finite (found NaN or inf)")
            if times.min() < 0:
                raise RecordingError(
                    f"spike times must be >= 0 s, got {float(times.min())!r}")
            if indices.max() >= size:
                raise RecordingError(
                    f"spike index {int(indices.max())} out of range for a population "
                    f"of size {size} (indices must be < size)")
            step = np.diff(times)
            if not np.all((step > 0) | ((step == 0) & (np.diff(indices) >= 0))):
                order = np.lexsort((indices, times))  # stable: by time, then index
                times = times[order]
                indices = indices[order]
        object.__setattr__(self, "times", _frozen(times))
        object.__setattr__(self, "indices", _frozen(indices))
        object.__setattr__(self, "size", size)

    def __len__(self) -> int:
        return int(self.times.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpikeTrains):
            return NotImplemented
        return (self.size == other.size and _arrays_equal(self.times, other.times)
                and _arrays_equal(self.indices, other.indices))

    def __repr__(self) -> str:
        return f"SpikeTrains(size={self.size}, n_spikes={len(self)})"

    def counts(self) -> np.ndarray:
        """Spike count per neuron.

        Returns
        -------
        numpy.ndarray of int64, shape (size,)
        """
        return np.bincount(self.indices, minlength=self.size).astype(np.int64)

    def rates(self, duration_s: float) -> np.ndarray:
        """Mean firing rate per neuron.

        Parameters
        ----------
        duration_s : float
            Length of the observation window in seconds (s), > 0.

        Returns
        -------
        numpy.ndarray of float64, shape (size,)
            Rates in hertz (Hz): spike count / ``duration_s``.
        """
        duration_s = _positive_float(duration_s, "duration_s")
        return self.counts() / duration_s

    def trains(self) -> list[np.ndarray]:
        """Spike times per neuron.

        Returns
        -------
        list of numpy.ndarray
            ``size`` float64 arrays of spike times in seconds (s), each sorted.
        """
        order = np.argsort(self.indices, kind="stable")
        bounds = np.cumsum(self.counts())[:-1]
        return list(np.split(self.times[order], bounds)) if self.size else []


# ---------------------------------------------------------------------------
# StateTrace


@dataclass(frozen=True, eq=False, repr=False)
class FinalState:
    """The value of one variable of a population or projection at the end of a run.

    Learning reads the trained weights (and adaptive thresholds, ...) from here;
    :meth:`Recording.final_overrides` turns them into run overrides or, with
    :func:`biosnn.backends.base.apply_overrides`, into a new spec.

    Parameters
    ----------
    values : array_like of float, shape (n,)
        One value per neuron or synapse, in coherent SI units (``unit``).
    unit : str
        Brian2 unit string of ``values`` (SI, e.g. ``"siemens"``, ``"1"``).
    """

    values: np.ndarray
    unit: str

    def __post_init__(self) -> None:
        values = _float_array(self.values, "final values", 1)
        if not isinstance(self.unit, str):
            raise RecordingError(f"unit must be a Brian2 unit string, got {self.unit!r}")
        unit = self.unit.strip()
        _unit_dims(unit)
        object.__setattr__(self, "values", _frozen(values))
        object.__setattr__(self, "unit", unit)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FinalState):
            return NotImplemented
        return self.unit == other.unit and _arrays_equal(self.values, other.values)

    def __repr__(self) -> str:
        return f"FinalState(n={self.values.shape[0]}, unit={self.unit!r})"


class SpikeValues(FinalState):
    """A variable recorded at each spike of a population (Brian2's ``SpikeMonitor(G, variables=...)``).

    Parameters
    ----------
    values : array_like of float, shape (n_spikes,)
        One value per spike, in the order of the population's
        :class:`SpikeTrains` (by time, then neuron index), in coherent SI units.
    unit : str
        Brian2 unit string of ``values``.
    """

    def __repr__(self) -> str:
        return f"SpikeValues(n={self.values.shape[0]}, unit={self.unit!r})"


def _freeze_spike_values(spike_values: Any, spikes: Mapping) -> types.MappingProxyType:
    def check(pop, var, sv):
        if pop not in spikes:
            raise RecordingError(f"spike_values[{pop!r}]: the population's spikes are not recorded")
        if sv.values.shape[0] != len(spikes[pop]):
            raise RecordingError(f"spike_values[{pop!r}][{var!r}] has {sv.values.shape[0]} values for "
                                 f"{len(spikes[pop])} spikes")
    return _freeze_nested(spike_values, "spike_values", SpikeValues, check)


def _freeze_rates(rates: Any) -> types.MappingProxyType:
    if not isinstance(rates, Mapping):
        raise RecordingError("rates must be a mapping population -> StateTrace")
    out = {}
    for pop, trace in rates.items():
        _check_name(pop, "population")
        if not isinstance(trace, StateTrace) or trace.indices.tolist() != [0] or trace.unit != "hertz":
            raise RecordingError(f"rates[{pop!r}] must be a StateTrace of one column (index 0) in hertz")
        out[pop] = trace
    return types.MappingProxyType(out)


def _freeze_final(final: Any) -> types.MappingProxyType:
    if not isinstance(final, Mapping):
        raise RecordingError(f"final must be a mapping '<part>.<variable>' -> FinalState, "
                             f"got {type(final).__name__}")
    out = {}
    for key, value in final.items():
        if not isinstance(key, str) or key.count(".") != 1 or not all(key.split(".")):
            raise RecordingError(f"final keys must look like '<population or projection>.<variable>', "
                                 f"got {key!r}")
        if not isinstance(value, FinalState):
            raise RecordingError(f"final[{key!r}] must be a FinalState, got {type(value).__name__}")
        out[key] = value
    return types.MappingProxyType(out)


@dataclass(frozen=True, eq=False, repr=False)
class StateTrace:
    """One recorded state variable of some neurons of a population.

    Parameters
    ----------
    times : array_like of float, shape (n_samples,)
        Sample times in seconds (s), finite and strictly increasing.
    values : array_like of float, shape (n_samples, n_recorded)
        Sampled values in coherent SI units (``unit``), one column per
        recorded neuron.
    indices : array_like of int, shape (n_recorded,)
        Neuron index (within the population) of each column; unique.
    unit : str
        Brian2 unit string of ``values``: a product of powers of coherent SI
        unit names, e.g. ``"volt"``, ``"amp"``, ``"metre ** -2 * siemens"``,
        or ``"1"`` for dimensionless.  Prefixed units (``"mV"``) are rejected,
        because values are always in SI base units.
    """

    times: np.ndarray
    values: np.ndarray
    indices: np.ndarray
    unit: str

    def __post_init__(self) -> None:
        times = _float_array(self.times, "state sample times", 1)
        values = _float_array(self.values, "state values", 2)
        indices = _index_array(self.indices, "state indices")
        if not isinstance(self.unit, str):
            raise RecordingError(f"unit must be a Brian2 unit string, got {self.unit!r}")
        unit = self.unit.strip()
        _unit_dims(unit)  # raises RecordingError when not a valid unit string
        if indices.size == 0:
            raise RecordingError("a state trace must record at least one neuron (indices is empty)")
        if np.unique(indices).size != indices.size:
            raise RecordingError("state indices must be unique (a neuron is recorded twice)")
        if values.shape != (times.shape[0], indices.shape[0]):
            raise RecordingError(
                f"state values must have shape (n_samples, n_recorded) = "
                f"({times.shape[0]}, {indices.shape[0]}), got {values.shape}")
        if times.size:
            if not np.all(np.isfinite(times)):
                raise RecordingError("state sample times must be finite")
            if times.min() < 0:
                raise RecordingError(
                    f"state sample times must be >= 0 s, got {float(times.min())!r}")
            if np.any(np.diff(times) <= 0):
                raise RecordingError("state sample times must be strictly increasing")
        object.__setattr__(self, "times", _frozen(times))
        object.__setattr__(self, "values", _frozen(values))
        object.__setattr__(self, "indices", _frozen(indices))
        object.__setattr__(self, "unit", unit)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StateTrace):
            return NotImplemented
        return (self.unit == other.unit and _arrays_equal(self.times, other.times)
                and _arrays_equal(self.values, other.values)
                and _arrays_equal(self.indices, other.indices))

    def __repr__(self) -> str:
        return (f"StateTrace(n_samples={self.times.shape[0]}, "
                f"n_recorded={self.indices.shape[0]}, unit={self.unit!r})")

    @property
    def dimensions(self) -> tuple[float, ...]:
        """Exponents of (metre, kilogram, second, amp, kelvin, mole, candle)."""
        return tuple(_unit_dims(self.unit))

    def quantity(self):
        """The values as a Brian2 ``Quantity``.

        Returns
        -------
        brian2.Quantity, shape (n_samples, n_recorded)
            ``values`` with the dimensions of ``unit``.
        """
        from brian2.units.fundamentalunits import Quantity, get_or_create_dimension

        dim = get_or_create_dimension(list(self.dimensions))
        return Quantity(np.array(self.values), dim=dim)

    @classmethod
    def from_quantity(cls, times: Any, values: Any, indices: Any) -> "StateTrace":
        """Build a trace from Brian2 quantities (e.g. a ``StateMonitor``).

        Parameters
        ----------
        times : brian2.Quantity or array_like, shape (n_samples,)
            Sample times (time dimension); plain numbers are taken as seconds.
        values : brian2.Quantity or array_like, shape (n_samples, n_recorded)
            Sampled values.  Note ``StateMonitor.v`` is (n_recorded,
            n_samples): pass ``mon.v.T``.  Plain arrays are dimensionless.
        indices : array_like of int, shape (n_recorded,)
            Recorded neuron indices (``mon.record``).

        Returns
        -------
        StateTrace
            Values converted to SI base units with the matching unit string.
        """
        from brian2.units.fundamentalunits import DIMENSIONLESS, get_dimensions

        time_dims = get_dimensions(times)
        if time_dims is not DIMENSIONLESS and tuple(time_dims._dims) != (0, 0, 1, 0, 0, 0, 0):
            raise RecordingError(f"times must have the dimension of time, got {time_dims}")
        unit = _unit_from_dims(get_dimensions(values)._dims)
        return cls(times=np.asarray(times, dtype=np.float64),
                   values=np.asarray(values, dtype=np.float64),
                   indices=indices, unit=unit)


# ---------------------------------------------------------------------------
# Recording


def _freeze_spikes(spikes: Any) -> types.MappingProxyType:
    if not isinstance(spikes, Mapping):
        raise RecordingError(f"spikes must be a mapping population -> SpikeTrains, got "
                             f"{type(spikes).__name__}")
    out = {}
    for name, st in spikes.items():
        _check_name(name, "population")
        if not isinstance(st, SpikeTrains):
            raise RecordingError(f"spikes[{name!r}] must be a SpikeTrains, got {type(st).__name__}")
        out[name] = st
    return types.MappingProxyType(out)


def _freeze_nested(data: Any, what: str, cls: type, check=None) -> types.MappingProxyType:
    """A read-only ``population -> variable -> cls`` mapping; ``check(pop, var, item)`` may refuse an item."""
    if not isinstance(data, Mapping):
        raise RecordingError(f"{what} must be a mapping population -> variable -> {cls.__name__}, "
                             f"got {type(data).__name__}")
    out = {}
    for pop, variables in data.items():
        _check_name(pop, "population")
        if not isinstance(variables, Mapping):
            raise RecordingError(f"{what}[{pop!r}] must be a mapping variable -> {cls.__name__}, "
                                 f"got {type(variables).__name__}")
        inner = {}
        for var, item in variables.items():
            _check_name(var, "variable")
            if not isinstance(item, cls):
                raise RecordingError(f"{what}[{pop!r}][{var!r}] must be a {cls.__name__}, got "
                                     f"{type(item).__name__}")
            if check is not None:
                check(pop, var, item)
            inner[var] = item
        out[pop] = types.MappingProxyType(inner)
    return types.MappingProxyType(out)


def _freeze_states(states: Any) -> types.MappingProxyType:
    return _freeze_nested(states, "states", StateTrace)


def _freeze_meta(meta: Any) -> types.MappingProxyType:
    if not isinstance(meta, Mapping):
        raise RecordingError(f"meta must be a mapping str -> str, got {type(meta).__name__}")
    out = {}
    for key, value in meta.items():
        if not isinstance(key, str) or not key:
            raise RecordingError(f"meta keys must be non-empty strings, got {key!r}")
        if isinstance(value, (bool, numbers.Number)) and not isinstance(value, complex):
            value = str(value)
        if not isinstance(value, str):
            raise RecordingError(f"meta[{key!r}] must be a string (or a number, converted "
                                 f"with str()), got {type(value).__name__}")
        out[key] = value
    return types.MappingProxyType(out)


@dataclass(frozen=True, eq=False, repr=False, kw_only=True)
class Recording:
    """Everything one simulation run recorded.

    All parameters are keyword-only.

    Parameters
    ----------
    spikes : Mapping[str, SpikeTrains]
        Population name -> its spikes.
    states : Mapping[str, Mapping[str, StateTrace]], optional
        Population name -> variable name -> trace.  A population may have
        traces without spikes being recorded.
    duration : float
        Simulated time in seconds (s), > 0.
    dt : float
        Simulation time step in seconds (s), > 0.
    meta : Mapping[str, str], optional
        Free-form metadata (backend, spec name, wall_time_s, ...).  Numbers
        are converted to strings.
    final : Mapping[str, FinalState], optional
        Values at the end of the run of the variables a run was asked for
        (``Simulation.run(final_state=[...])``), keyed ``"<part>.<variable>"``
        like run overrides (e.g. ``"input_exc.w"``, ``"exc.theta"``).
    spike_values : Mapping[str, Mapping[str, SpikeValues]], optional
        Population name -> variable -> its value at each spike (spike
        monitors with ``variables``), aligned with ``spikes[population]``.
    rates : Mapping[str, StateTrace], optional
        Population name -> population rate (rate monitors): one column
        (index 0) in ``"hertz"``, one sample per time step.

    States may also be keyed by a projection name (synaptic variables; the
    indices are synapse numbers) and any key may name a subgroup
    (``"exc[0:10]"``, indices relative to it).

    Notes
    -----
    Spike and sample times must lie in ``[0, duration + dt]`` (a spike in the
    last step may be stamped at ``duration``).  When a population has both
    spikes and states, recorded state indices must be < its size.  Mappings
    are read-only views; use :func:`dataclasses.replace` to derive a changed
    recording.
    """

    spikes: Mapping[str, SpikeTrains]
    states: Mapping[str, Mapping[str, StateTrace]] = field(default_factory=dict)
    duration: float
    dt: float
    meta: Mapping[str, str] = field(default_factory=dict)
    final: Mapping[str, FinalState] = field(default_factory=dict)
    spike_values: Mapping[str, Mapping[str, SpikeValues]] = field(default_factory=dict)
    rates: Mapping[str, StateTrace] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "final", _freeze_final(self.final))
        spikes = _freeze_spikes(self.spikes)
        object.__setattr__(self, "spike_values", _freeze_spike_values(self.spike_values, spikes))
        object.__setattr__(self, "rates", _freeze_rates(self.rates))
        states = _freeze_states(self.states)
        meta = _freeze_meta(self.meta)
        duration = _positive_float(self.duration, "duration")
        dt = _positive_float(self.dt, "dt")
        limit = (duration + dt) * (1 + 1e-9)
        for name, st in spikes.items():
            if len(st) and st.times[-1] > limit:
                raise RecordingError(
                    f"population {name!r}: spike at {float(st.times[-1])!r} s is after the end of "
                    f"the run (duration {duration!r} s + dt {dt!r} s)")
        for pop, variables in states.items():
            for var, trace in variables.items():
                if trace.times.size and trace.times[-1] > limit:
                    raise RecordingError(
                        f"state {pop}.{var}: sample at {float(trace.times[-1])!r} s is after "
                        f"the end of the run (duration {duration!r} s + dt {dt!r} s)")
                if pop in spikes and trace.indices.max() >= spikes[pop].size:
                    raise RecordingError(
                        f"state {pop}.{var}: recorded neuron {int(trace.indices.max())} is "
                        f"out of range for population {pop!r} of size {spikes[pop].size}")
        object.__setattr__(self, "spikes", spikes)
        object.__setattr__(self, "states", states)
        object.__setattr__(self, "meta", meta)
        object.__setattr__(self, "duration", duration)
        object.__setattr__(self, "dt", dt)

    # -- dunder -----------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Recording):
            return NotImplemented
        return (self.duration == other.duration and self.dt == other.dt
                and dict(self.meta) == dict(other.meta)
                and dict(self.final) == dict(other.final)
                and dict(self.spikes) == dict(other.spikes)
                and dict(self.rates) == dict(other.rates)
                and {k: dict(v) for k, v in self.spike_values.items()}
                == {k: dict(v) for k, v in other.spike_values.items()}
                and {k: dict(v) for k, v in self.states.items()}
                == {k: dict(v) for k, v in other.states.items()})

    def __repr__(self) -> str:
        pops = ", ".join(f"{name}: {st.size} neurons/{len(st)} spikes"
                         for name, st in self.spikes.items())
        n_states = sum(len(v) for v in self.states.values())
        return (f"Recording(duration={self.duration!r} s, dt={self.dt!r} s, "
                f"spikes={{{pops}}}, state_traces={n_states})")

    def __reduce__(self):
        # MappingProxyType cannot be pickled: rebuild from plain dicts.
        return (_rebuild_recording, (dict(
            spikes=dict(self.spikes), states={k: dict(v) for k, v in self.states.items()},
            duration=self.duration, dt=self.dt, meta=dict(self.meta), final=dict(self.final),
            spike_values={k: dict(v) for k, v in self.spike_values.items()}, rates=dict(self.rates)),))

    # -- analysis ---------------------------------------------------------

    def final_overrides(self) -> dict:
        """The final values as run overrides ``{"<part>.<variable>": ArrayValue}``.

        Pass them to ``Simulation.run(overrides=...)`` to continue from where
        this run ended, or to :func:`biosnn.backends.base.apply_overrides` to
        get a new spec holding them (e.g. trained weights).
        """
        from biosnn.spec.values import ArrayValue
        return {key: ArrayValue(fs.values, fs.unit) for key, fs in self.final.items()}

    def _population(self, population: str) -> SpikeTrains:
        try:
            return self.spikes[population]
        except (KeyError, TypeError):
            known = ", ".join(repr(p) for p in self.spikes) or "none"
            raise RecordingError(f"no spikes recorded for population {population!r} "
                                 f"(populations: {known})") from None

    def total_spikes(self) -> int:
        """Number of spikes of all populations together."""
        return int(sum(len(st) for st in self.spikes.values()))

    def mean_rate(self, population: str) -> float:
        """Mean firing rate of one population.

        Parameters
        ----------
        population : str
            Population name.

        Returns
        -------
        float
            Spikes / (neurons * ``duration``), in hertz (Hz); 0.0 for an
            empty population.
        """
        st = self._population(population)
        if st.size == 0:
            return 0.0
        return len(st) / (st.size * self.duration)

    def population_rate(self, population: str, bin_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Population firing rate in time bins.

        Bins are half-open, ``[k * bin_s, (k + 1) * bin_s)``, covering
        ``[0, duration]``; the last bin ends at ``duration`` (it may be shorter
        than ``bin_s``, and also takes spikes stamped at or after
        ``duration``).

        Parameters
        ----------
        population : str
            Population name.
        bin_s : float
            Bin width in seconds (s), > 0.

        Returns
        -------
        bin_centers : numpy.ndarray of float64, shape (n_bins,)
            Bin centres in seconds (s).
        rate : numpy.ndarray of float64, shape (n_bins,)
            Spikes in the bin / (neurons * bin width), in hertz (Hz).
        """
        st = self._population(population)
        bin_s = _positive_float(bin_s, "bin_s")
        n_bins = max(1, int(math.ceil(self.duration / bin_s - 1e-9)))
        edges = np.arange(n_bins + 1, dtype=np.float64) * bin_s
        edges[-1] = self.duration
        which = np.clip(np.searchsorted(edges, st.times, side="right") - 1, 0, n_bins - 1)
        counts = np.bincount(which, minlength=n_bins)
        widths = np.diff(edges)
        centers = (edges[:-1] + edges[1:]) / 2
        if st.size == 0:
            return centers, np.zeros(n_bins)
        return centers, counts / (st.size * widths)

    def summary(self) -> str:
        """A human-readable table: population, neurons, spikes, mean rate (Hz)."""
        lines = [f"Recording: {self.duration * 1e3:g} ms simulated, dt = {self.dt * 1e3:g} ms"]
        if self.meta:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in self.meta.items()))
        header = ("population", "neurons", "spikes", "mean rate (Hz)")
        rows = [(name, str(st.size), str(len(st)), f"{self.mean_rate(name):.3f}")
                for name, st in self.spikes.items()]
        rows.append(("total", str(sum(st.size for st in self.spikes.values())),
                     str(self.total_spikes()), ""))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        fmt = lambda r: "  ".join([r[0].ljust(widths[0])]  # noqa: E731
                                  + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]).rstrip()
        lines += [fmt(header), fmt(tuple("-" * w for w in widths)), *map(fmt, rows)]
        for pop, variables in self.states.items():
            for var, trace in variables.items():
                lines.append(f"state {pop}.{var}: {trace.indices.size} neurons x "
                             f"{trace.times.size} samples [{trace.unit}]")
        for pop, variables in self.spike_values.items():
            lines.append(f"at spikes of {pop}: {', '.join(variables)}")
        for pop, trace in self.rates.items():
            lines.append(f"rate {pop}: {trace.times.size} samples, mean {float(trace.values.mean()):.3f} Hz")
        return "\n".join(lines)

    # -- files ------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the recording; the format follows the suffix.

        Parameters
        ----------
        path : str or pathlib.Path
            ``.npz`` (lossless numpy archive) or ``.h5``/``.hdf5`` (SONATA
            spikes plus biosnn extras).  For Neo formats use
            :func:`biosnn.recording.formats.export`.

        Returns
        -------
        pathlib.Path
            The path written.
        """
        from biosnn.recording import formats  # deferred: formats imports this module

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".npz":
            formats.save_npz(self, path)
        elif suffix in (".h5", ".hdf5"):
            formats.save_sonata(self, path)
        else:
            raise RecordingError(
                f"cannot save to '{path}': unknown suffix {suffix!r}; Recording.save "
                f"supports .npz, .h5, .hdf5 (use biosnn.recording.formats.export for Neo formats)")
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Recording":
        """Read a recording written by :meth:`save` (``.npz``, ``.h5``, ``.hdf5``)."""
        from biosnn.recording import formats  # deferred: formats imports this module

        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".npz":
            return formats.load_npz(path)
        if suffix in (".h5", ".hdf5"):
            return formats.load_sonata(path)
        raise RecordingError(
            f"cannot load '{path}': unknown suffix {suffix!r}; Recording.load supports "
            f".npz, .h5, .hdf5 (use biosnn.recording.formats.import_recording for Neo formats)")


def _rebuild_recording(kwargs: dict) -> Recording:
    """Unpickling helper (see :meth:`Recording.__reduce__`)."""
    return Recording(**kwargs)
