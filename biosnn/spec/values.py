"""Values inside a spec: Brian2 quantity/expression strings and unit-tagged arrays.

A scalar parameter is kept as the Brian2 expression string the user wrote
(``"20*ms"``, ``"-60*mV"``, ``"Vr + rand()*(Vt - Vr)"``), so a spec written to a
file and read back is identical.  Arrays (weights, per-neuron initial values,
stimuli) are :class:`ArrayValue` objects: a read-only numpy array plus the
Brian2 unit its numbers are expressed in.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Union

import numpy as np

from biosnn.errors import SpecError

__all__ = ["ArrayValue", "Value", "as_value", "as_expression", "parse_quantity",
           "format_quantity", "frozen_mapping", "FrozenDict", "unit_namespace", "unit_of"]


def unit_namespace() -> Mapping[str, Any]:
    """Brian2's unit, constant and function names (what a spec expression may use)."""
    from brian2.core.namespace import DEFAULT_UNITS
    return DEFAULT_UNITS


def unit_of(unit: str):
    """The Brian2 unit (or 1) that the string ``unit`` names, e.g. ``"mV"``, ``"nS"``, ``"1"``.

    Raises
    ------
    SpecError
        If ``unit`` is not a Brian2 unit expression.
    """
    q = parse_quantity(unit, what="unit")
    if isinstance(q, float) and q.is_integer() and abs(q) < 2 ** 53:
        return int(q)  # "1" is the int 1, as Brian2 expects of dimensionless units
    return q


@dataclass(frozen=True, eq=False)
class ArrayValue:
    """A read-only array with a Brian2 unit.

    Parameters
    ----------
    data : array_like
        The numbers, expressed in ``unit``.
    unit : str
        A Brian2 unit expression such as ``"mV"``, ``"Hz"``, ``"second"`` or
        ``"1"`` (dimensionless, the default).

    Examples
    --------
    >>> a = ArrayValue([1.0, 2.0], "mV")
    >>> a.shape, a.unit
    ((2,), 'mV')
    >>> a == ArrayValue([1.0, 2.0], "mV")
    True
    """

    data: np.ndarray
    unit: str = "1"

    def __post_init__(self):
        a = self.data
        # an array that owns its data and is read-only cannot change: kept, not copied (a VGG's kernels
        # are shared by the converted graph and every spec made from it)
        own = isinstance(a, np.ndarray) and a.base is None and not a.flags.writeable
        arr = a if own else np.array(a, copy=True)
        if arr.dtype == object:
            raise SpecError("array values must be numeric", fix="pass a numeric numpy array")
        if arr.dtype.kind == "b":
            arr = arr.astype(np.int64)
        arr.flags.writeable = False
        object.__setattr__(self, "data", arr)
        if not isinstance(self.unit, str):
            object.__setattr__(self, "unit", str(self.unit))
        unit_of(self.unit)  # validates

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def quantity(self):
        """The array as a Brian2 ``Quantity`` (or plain array if dimensionless)."""
        return self.data * unit_of(self.unit)

    def si(self) -> np.ndarray:
        """The numbers in SI base units (float64)."""
        return np.asarray(self.data, dtype=np.float64) * float(np.asarray(unit_of(self.unit)))

    def __eq__(self, other) -> bool:
        if not isinstance(other, ArrayValue):
            return NotImplemented
        return (self.unit == other.unit and self.data.shape == other.data.shape
                and self.data.dtype == other.data.dtype
                and bool(np.array_equal(self.data, other.data, equal_nan=self.data.dtype.kind == "f")))

    def __hash__(self):
        return hash((self.unit, self.data.shape, self.data.dtype.str, self.data.tobytes()))

    def __reduce__(self):  # unpickle through __post_init__, so the array stays read-only
        return (ArrayValue, (np.asarray(self.data), self.unit))

    def __repr__(self) -> str:
        return f"ArrayValue(shape={self.data.shape}, dtype={self.data.dtype}, unit={self.unit!r})"


Value = Union[str, ArrayValue]


def parse_quantity(text: Any, *, what: str = "quantity", field: str | None = None,
                   names: Mapping[str, Any] | None = None):
    """Evaluate a Brian2 quantity string such as ``"20*ms"`` or ``"-60*mV"``.

    Only numbers, Brian2 unit names and ``* / + - **`` are allowed; nothing
    else is evaluated.

    Parameters
    ----------
    text : str or number
        The quantity.
    what : str
        What the quantity is, for the error message.
    field : str, optional
        The spec field, for the error message.
    names : mapping, optional
        Further names (already evaluated constants) the text may use.

    Returns
    -------
    brian2.Quantity or float

    Raises
    ------
    SpecError
        If the text is not a plain quantity.

    Examples
    --------
    >>> float(parse_quantity("20*ms"))
    0.02
    """
    if isinstance(text, numbers.Number) and not isinstance(text, bool):
        return float(text)
    if not isinstance(text, str):
        try:
            from brian2 import Quantity
            if isinstance(text, Quantity):
                return text
        except ImportError:  # pragma: no cover
            pass
        raise SpecError(f"expected a {what} like '20*ms', got {text!r}", field=field,
                        fix="write the value in Brian2 syntax, a number times a unit, e.g. '20*ms'")
    from biosnn.spec import grammar
    text = text.strip()
    tree = grammar.parse_tree(text, "eval", field, what)
    units = dict(unit_namespace())
    if names:
        units.update(names)

    def unknown(name):
        close = [u for u in units if u.lower() == name.lower()]
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return SpecError(f"unknown unit '{name}' in '{text}'{hint}", field=field,
                         fix="use a Brian2 unit name such as ms, mV, nS, Hz, pA")

    from brian2 import DimensionMismatchError
    try:
        return grammar.evaluate_quantity(tree, units, text, field, what, unknown)
    except DimensionMismatchError as exc:
        raise SpecError(f"'{text}' mixes units: {exc}", field=field,
                        fix="only add quantities of the same dimension") from None
    except ZeroDivisionError:
        raise SpecError(f"'{text}' divides by zero", field=field, fix="correct the expression") from None


def format_quantity(q) -> str:
    """Write a number or Brian2 quantity as a lossless Brian2 string.

    >>> format_quantity(0.25)
    '0.25'
    >>> from brian2 import mV
    >>> format_quantity(-60*mV)
    '-0.06*volt'
    """
    from brian2 import Quantity, get_unit
    if isinstance(q, Quantity) and not q.is_dimensionless:
        if q.ndim != 0:
            raise SpecError("format_quantity takes a scalar", fix="use ArrayValue for arrays")
        unit = get_unit(q.dim)
        return f"{float(q / unit)!r}*{unit!r}"
    value = float(q)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)


def as_expression(value: Any, *, field: str | None = None) -> str:
    """Normalise a scalar (number, Quantity or string) to a Brian2 expression string."""
    if isinstance(value, str):
        if not value.strip():
            raise SpecError("empty expression", field=field, fix="give a value such as '0*mV'")
        return value.strip()
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, numbers.Number):
        return format_quantity(value)
    from brian2 import Quantity
    if isinstance(value, Quantity):
        return format_quantity(value)
    raise SpecError(f"expected a number, quantity or expression string, got {type(value).__name__}",
                    field=field, fix="use e.g. '20*ms' or an ArrayValue for arrays")


def as_value(value: Any, *, field: str | None = None) -> Value:
    """Normalise a scalar or array to a :data:`Value` (string or :class:`ArrayValue`)."""
    if isinstance(value, ArrayValue):
        return value
    if isinstance(value, (np.ndarray, list, tuple)):
        from brian2 import Quantity, get_unit
        if isinstance(value, Quantity):
            unit = get_unit(value.dim)
            return ArrayValue(np.asarray(value / unit), repr(unit) if not value.is_dimensionless else "1")
        return ArrayValue(np.asarray(value), "1")
    try:
        from brian2 import Quantity, get_unit
        if isinstance(value, Quantity) and value.ndim > 0:
            unit = get_unit(value.dim)
            return ArrayValue(np.asarray(value / unit), repr(unit) if not value.is_dimensionless else "1")
    except ImportError:  # pragma: no cover
        pass
    return as_expression(value, field=field)


class FrozenDict(dict):
    """A read-only dict (picklable, comparable, hashable when its values are)."""

    def _readonly(self, *args, **kwargs):
        raise TypeError("spec mappings are read-only: build a new spec with dataclasses.replace")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly
    __ior__ = _readonly

    def __reduce__(self):
        return (FrozenDict, (dict(self),))

    def __hash__(self):
        return hash(tuple(sorted(self.items(), key=lambda kv: str(kv[0]))))


def frozen_mapping(mapping: Mapping | None, convert=None, *, names: str | None = None) -> Mapping:
    """A read-only copy of ``mapping`` (values passed through ``convert(value, key)``).

    With ``names`` (the field, for errors), every key must be an identifier.
    """
    if mapping is not None and not isinstance(mapping, Mapping):
        raise SpecError(f"expected a mapping of names to values, got {type(mapping).__name__}",
                        fix="write it as 'name: value' pairs")
    items = dict(mapping or {})
    if names is not None:
        from biosnn.spec.grammar import check_identifier
        for key in items:
            check_identifier(key, field=f"{names}.{str(key)[:60]}" if names else str(key)[:60], what="name")
    if convert is not None:
        items = {k: convert(v, k) for k, v in items.items()}
    return FrozenDict(items)
