"""The network spec: frozen dataclasses describing a spiking network.

A :class:`NetworkSpec` is a value.  It holds populations of neurons defined by
Brian2 equation strings with units, inputs, projections (synapses with their
connectivity), monitors, the time step and the duration.  Front-ends (YAML
files, torch models, NIR graphs) produce specs; back-ends build and run them.

Every class validates its own fields on construction and raises
:class:`biosnn.errors.SpecError` naming the field and the fix; the whole-network
checks (references between parts, units of every equation, array shapes) run
in :meth:`NetworkSpec.__post_init__`, so a spec that exists is a valid spec.
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field, fields, replace
from typing import Mapping, Union

import numpy as np

from biosnn.connectivity import synapse_order
from biosnn.errors import SpecError
from biosnn.spec.values import (ArrayValue, Value, as_expression, as_value,
                                frozen_mapping, parse_quantity)

__all__ = ["NeuronModel", "SynapseModel", "Population", "PoissonInput", "SpikeTimesInput",
           "CurrentInput", "TimedArraySpec", "AllToAll", "OneToOne", "RandomP", "Explicit",
           "Conv2D", "Pool2D", "Projection", "Operation", "SpikeMonitor", "StateMonitor", "NetworkSpec",
           "Connectivity", "Input", "Monitor", "Condition", "NodeRef", "RateMonitor", "Segment"]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _check_name(name, what: str, field_: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name) or keyword.iskeyword(name):
        raise SpecError(f"{what} name {name!r} is not a valid identifier", field=field_,
                        fix="use letters, digits and underscores, starting with a letter")
    return name


def _params(mapping, field_: str):
    return frozen_mapping(mapping, lambda v, k: as_expression(v, field=f"{field_}.{k}"), names=field_)


def _values(mapping, field_: str):
    return frozen_mapping(mapping, lambda v, k: as_value(v, field=f"{field_}.{k}"), names=field_)


def _opt_expr(value, field_: str):
    return None if value is None else as_expression(value, field=field_)


def _positive_int(value, field_: str, *, allow_zero=False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SpecError(f"expected an integer, got {value!r}", field=field_,
                        fix="give a whole number")
    if value < 0 or (value == 0 and not allow_zero):
        raise SpecError(f"must be {'non-negative' if allow_zero else 'positive'}, got {value}",
                        field=field_, fix="give a size of at least 1")
    return int(value)


def _pair(value, field_: str, *, allow_zero=False) -> tuple[int, int]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise SpecError(f"expected an integer or a pair of integers, got {value!r}", field=field_,
                        fix="write e.g. 2 or [2, 2]")
    return tuple(_positive_int(v, field_, allow_zero=allow_zero) for v in value)


def _shape(value, field_: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not value:
        raise SpecError(f"expected a shape such as [1, 28, 28], got {value!r}", field=field_,
                        fix="give the (channels, height, width) of the layer")
    return tuple(_positive_int(v, field_) for v in value)


# ---------------------------------------------------------------------------
# Models


@dataclass(frozen=True)
class NeuronModel:
    """A neuron model in Brian2 syntax.

    Parameters
    ----------
    equations : str
        Brian2 model equations with units, e.g.
        ``"dv/dt = (E_L - v)/tau_m : volt (unless refractory)"``.
    threshold : str, optional
        Brian2 threshold condition, e.g. ``"v > v_th"``.
    reset : str, optional
        Brian2 reset statements, e.g. ``"v = v_reset"``.
    refractory : str, optional
        Refractory period (``"2*ms"``) or condition.
    parameters : mapping of str to str
        Default values of the constants the equations use (Brian2 quantity
        strings); populations may override them.
    method : str, optional
        Brian2 integration method (``"exact"``, ``"euler"``, ...); Brian2
        chooses when omitted.
    description : str
        Free text (what the model is, the reference).
    """

    equations: str
    threshold: str | None = None
    reset: str | None = None
    refractory: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    method: str | None = None
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.equations, str):
            raise SpecError("equations must be a string in Brian2 syntax", field="equations",
                            fix="write e.g. 'dv/dt = -v/tau : volt'")
        object.__setattr__(self, "threshold", _opt_expr(self.threshold, "threshold"))
        object.__setattr__(self, "reset", _opt_expr(self.reset, "reset"))
        object.__setattr__(self, "refractory", _opt_expr(self.refractory, "refractory"))
        object.__setattr__(self, "parameters", _params(self.parameters, "parameters"))


@dataclass(frozen=True)
class SynapseModel:
    """A synapse model in Brian2 syntax.

    Parameters
    ----------
    equations : str
        Brian2 synaptic equations, e.g. ``"w : volt"``; may be empty.
    on_pre : str or mapping of str to str, optional
        Statements run on a presynaptic spike, e.g. ``"v_post += w"``; or
        several pathways, each with its own statements (and delay, see
        :attr:`Projection.delay`), e.g. ``{"up": "v_post += w", "down":
        "v_post -= w/2"}`` (Brian2's ``on_pre={...}``).
    on_post : str or mapping of str to str, optional
        Statements run on a postsynaptic spike (plasticity); or pathways, as ``on_pre``.
    parameters : mapping of str to str
        Default constants (Brian2 quantity strings).
    method : str, optional
        Brian2 integration method for differential synaptic equations.
    description : str
        Free text.
    """

    equations: str = ""
    on_pre: str | Mapping[str, str] | None = None
    on_post: str | Mapping[str, str] | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)
    method: str | None = None
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.equations, str):
            raise SpecError("equations must be a string in Brian2 syntax", field="equations",
                            fix="write e.g. 'w : 1'")
        object.__setattr__(self, "on_pre", _pathways(self.on_pre, "on_pre"))
        object.__setattr__(self, "on_post", _pathways(self.on_post, "on_post"))
        if isinstance(self.on_pre, Mapping) and isinstance(self.on_post, Mapping) \
                and set(self.on_pre) & set(self.on_post):
            raise SpecError(f"pathway(s) {sorted(set(self.on_pre) & set(self.on_post))} are in on_pre and on_post",
                            field="on_post", fix="give every pathway its own name")
        object.__setattr__(self, "parameters", _params(self.parameters, "parameters"))

    def pathways(self) -> dict[str, str]:
        """Pathway name -> statements (``pre``/``post`` for plain ``on_pre``/``on_post``)."""
        out = {}
        for which, code in (("pre", self.on_pre), ("post", self.on_post)):
            if isinstance(code, Mapping):
                out.update(code)
            elif code is not None:
                out[which] = code
        return out


def _pathways(value, field_: str):
    """``None``, a statements string, or a non-empty mapping of pathway names to statements."""
    if not isinstance(value, Mapping):
        return _opt_expr(value, field_)
    if not value:
        raise SpecError("no pathways given", field=field_, fix="give statements, or pathway names with statements")
    return frozen_mapping(value, lambda v, k: as_expression(v, field=f"{field_}.{k}"), names=field_)


# ---------------------------------------------------------------------------
# Populations and inputs

_WHEN = ("start", "groups", "thresholds", "synapses", "resets", "end")


def _when(value, field_: str) -> str:
    slots = set(_WHEN) | {f"{p}_{w}" for p in ("before", "after") for w in _WHEN}
    if value not in slots:
        raise SpecError(f"unknown schedule slot '{value}'", field=field_,
                        fix=f"use one of {list(_WHEN)} (optionally prefixed before_/after_)")
    return value


def _opt_int(value, field_: str):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SpecError(f"expected an integer, got {value!r}", field=field_, fix="give a whole number")
    return int(value)


@dataclass(frozen=True)
class Operation:
    """Statements run regularly on a population or projection (Brian2's ``run_regularly``).

    Parameters
    ----------
    code : str
        Brian2 statements, one per line, e.g. ``"v_last = v"`` then ``"v = 0"``.
    dt : str, optional
        Interval (``"3.2*ms"``); default every time step.
    when : str
        Schedule slot (``start``, ``groups``, ``thresholds``, ``synapses``,
        ``resets``, ``end``).
    order : int
        Position within the slot.
    """

    code: str
    dt: str | None = None
    when: str = "start"
    order: int = 0

    def __post_init__(self):
        object.__setattr__(self, "code", as_expression(self.code, field="code"))
        object.__setattr__(self, "dt", _opt_expr(self.dt, "dt"))
        object.__setattr__(self, "when", _when(self.when, "when"))
        object.__setattr__(self, "order", _opt_int(self.order, "order"))


def _operations(ops, field_: str) -> tuple:
    out = []
    for k, op in enumerate(ops or ()):
        if isinstance(op, dict):
            try:
                op = Operation(**op)
            except TypeError as exc:
                raise SpecError(f"bad operation: {exc}", field=f"{field_}[{k}]",
                                fix="give code, and optionally dt, when, order") from None
        if not isinstance(op, Operation):
            raise SpecError(f"expected an Operation, got {op!r}", field=f"{field_}[{k}]",
                            fix="write {code: ..., dt: ..., when: ..., order: ...}")
        out.append(op)
    return tuple(out)


@dataclass(frozen=True)
class Population:
    """A group of identical neurons.

    Parameters
    ----------
    name : str
        Unique name (an identifier).
    size : int
        Number of neurons.
    model : str or NeuronModel
        A name from the spec's ``neuron_models``, a library model name (see
        :mod:`biosnn.models`), or an inline :class:`NeuronModel`.
    parameters : mapping
        Constant values overriding the model's defaults (quantity strings).
    initial : mapping
        Initial values of state variables: Brian2 expression strings
        (``"-60*mV + rand()*10*mV"``) or :class:`ArrayValue` of shape ``(size,)``.
    shape : tuple of int, optional
        Layout ``(C, H, W)`` (product = size) for convolutional projections.
    operations : tuple of Operation
        Statements run regularly (resets between sample windows, ...).
    order : int, optional
        Schedule position: when given, the population's state update,
        threshold and reset run in the ``groups`` slot at positions
        ``10*order + 1, 2, 3`` (projections with the same ``order`` at
        ``10*order + 5``), so a spike can cross several layers in one time step.
    """

    name: str
    size: int
    model: Union[str, NeuronModel]
    parameters: Mapping[str, str] = field(default_factory=dict)
    initial: Mapping[str, Value] = field(default_factory=dict)
    shape: tuple[int, ...] | None = None
    operations: tuple[Operation, ...] = ()
    order: int | None = None

    def __post_init__(self):
        _check_name(self.name, "population", "name")
        object.__setattr__(self, "operations", _operations(self.operations, "operations"))
        object.__setattr__(self, "order", _opt_int(self.order, "order"))
        object.__setattr__(self, "size", _positive_int(self.size, "size"))
        if not isinstance(self.model, (str, NeuronModel)):
            raise SpecError("model must be a model name or a NeuronModel", field="model",
                            fix="name a model from neuron_models or the library, e.g. 'lif'")
        object.__setattr__(self, "parameters", _params(self.parameters, "parameters"))
        object.__setattr__(self, "initial", _values(self.initial, "initial"))
        if self.shape is not None:
            shape = _shape(self.shape, "shape")
            if int(np.prod(shape)) != self.size:
                raise SpecError(f"shape {shape} has {int(np.prod(shape))} neurons but size is {self.size}",
                                field="shape", fix="make the product of the shape equal the size")
            object.__setattr__(self, "shape", shape)


@dataclass(frozen=True)
class PoissonInput:
    """Independent Poisson spike sources.

    Parameters
    ----------
    name : str
        Unique name.
    size : int
        Number of sources.
    rates : str or ArrayValue
        Rate in Hz: a Brian2 expression (may use ``i``, ``t`` and timed arrays,
        e.g. ``"stim(t, i)"``) or an array of shape ``(size,)`` with a rate unit.
    shape : tuple of int, optional
        Layout ``(C, H, W)`` for convolutional projections.
    """

    name: str
    size: int
    rates: Value
    shape: tuple[int, ...] | None = None

    def __post_init__(self):
        _check_name(self.name, "input", "name")
        object.__setattr__(self, "size", _positive_int(self.size, "size"))
        object.__setattr__(self, "rates", as_value(self.rates, field="rates"))
        if isinstance(self.rates, ArrayValue) and self.rates.shape != (self.size,):
            raise SpecError(f"rates has shape {self.rates.shape}, expected ({self.size},)",
                            field="rates", fix="give one rate per source")
        if self.shape is not None:
            shape = _shape(self.shape, "shape")
            if int(np.prod(shape)) != self.size:
                raise SpecError(f"shape {shape} does not match size {self.size}", field="shape",
                                fix="make the product of the shape equal the size")
            object.__setattr__(self, "shape", shape)


@dataclass(frozen=True)
class SpikeTimesInput:
    """Sources that fire at given times.

    Parameters
    ----------
    name : str
        Unique name.
    size : int
        Number of sources.
    indices : ArrayValue
        Source index of each spike (integers in ``[0, size)``).
    times : ArrayValue
        Time of each spike, with a time unit (e.g. ``ArrayValue(t, "ms")``).
    period : str, optional
        Repeat the pattern with this period.
    shape : tuple of int, optional
        Layout ``(C, H, W)`` (product = size) when the sources feed a convolutional projection.
    """

    name: str
    size: int
    indices: ArrayValue
    times: ArrayValue
    period: str | None = None
    shape: tuple[int, ...] | None = None

    def __post_init__(self):
        _check_name(self.name, "input", "name")
        object.__setattr__(self, "size", _positive_int(self.size, "size"))
        idx = as_value(self.indices, field="indices")
        times = as_value(self.times, field="times")
        if not isinstance(idx, ArrayValue) or not isinstance(times, ArrayValue):
            raise SpecError("indices and times must be arrays", field="indices",
                            fix="give two lists of equal length")
        if idx.data.ndim != 1 or idx.shape != times.shape:
            raise SpecError(f"indices {idx.shape} and times {times.shape} must be 1-D of equal length",
                            field="times", fix="give one time per spike index")
        if idx.data.size and (idx.data.dtype.kind not in "iu" or idx.data.min() < 0
                              or idx.data.max() >= self.size):
            raise SpecError(f"indices must be integers in [0, {self.size})", field="indices",
                            fix="number the sources from 0 to size-1")
        if times.data.size and np.any(times.si() < 0):
            raise SpecError("spike times must be non-negative", field="times", fix="remove negative times")
        object.__setattr__(self, "indices", idx)
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "period", _opt_expr(self.period, "period"))
        if self.shape is not None:
            object.__setattr__(self, "shape", _shape(self.shape, "shape"))


@dataclass(frozen=True)
class TimedArraySpec:
    """Values over time, usable by name in any expression (Brian2 ``TimedArray``).

    Parameters
    ----------
    name : str
        The function name, e.g. ``stim``: expressions call ``stim(t)`` (1-D
        values) or ``stim(t, i)`` (2-D values, one column per neuron).
    values : ArrayValue
        Shape ``(n_steps,)`` or ``(n_steps, n)``, with a unit.
    dt : str
        Duration of one row, e.g. ``"1*ms"``.
    """

    name: str
    values: ArrayValue
    dt: str

    def __post_init__(self):
        _check_name(self.name, "timed array", "name")
        values = as_value(self.values, field="values")
        if not isinstance(values, ArrayValue) or values.data.ndim not in (1, 2) or values.data.size == 0:
            raise SpecError("values must be a non-empty 1-D or 2-D array", field="values",
                            fix="give shape (n_steps,) or (n_steps, n_neurons)")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "dt", as_expression(self.dt, field="dt"))


@dataclass(frozen=True)
class CurrentInput:
    """A time-varying value written into a population's variable each ``dt``.

    The backend turns it into a Brian2 ``TimedArray`` called ``name`` and a
    ``run_regularly`` operation ``variable = name(t, i)`` on the target.

    Parameters
    ----------
    name : str
        Unique name (also the timed array's name).
    target : str
        Population whose ``variable`` is set, or a subgroup of it
        (``"exc[0:10]"``; ``i`` and the columns of ``values`` count from its start).
    variable : str
        A parameter of the target's model (e.g. ``I_ext : amp``).
    values : ArrayValue
        Shape ``(n_steps, target size)`` or ``(n_steps,)`` (same for all).
    dt : str
        Duration of one row.
    """

    name: str
    target: str
    variable: str
    values: ArrayValue
    dt: str

    def __post_init__(self):
        _check_name(self.name, "input", "name")
        values = as_value(self.values, field="values")
        if not isinstance(values, ArrayValue) or values.data.ndim not in (1, 2) or values.data.size == 0:
            raise SpecError("values must be a non-empty 1-D or 2-D array", field="values",
                            fix="give shape (n_steps,) or (n_steps, target size)")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "dt", as_expression(self.dt, field="dt"))


Input = Union[PoissonInput, SpikeTimesInput, CurrentInput]


# ---------------------------------------------------------------------------
# Connectivity


@dataclass(frozen=True)
class AllToAll:
    """Every source neuron to every target neuron.

    Parameters
    ----------
    allow_autapses : bool
        Whether neuron ``k`` connects to itself when source and target are the same population.
    """

    allow_autapses: bool = True


@dataclass(frozen=True)
class OneToOne:
    """Neuron ``k`` to neuron ``k`` (equal sizes)."""


@dataclass(frozen=True)
class RandomP:
    """Each pair connected independently with probability ``p``.

    Drawn in numpy with the spec's seed, so every backend gets the same synapses.

    Parameters
    ----------
    p : float
        Connection probability, in ``[0, 1]``.
    allow_autapses : bool
        Whether neuron ``k`` may connect to itself when source and target are the same population.
    """

    p: float
    allow_autapses: bool = True

    def __post_init__(self):
        if isinstance(self.p, bool) or not isinstance(self.p, (int, float)) or not 0 <= self.p <= 1:
            raise SpecError(f"connection probability must be a number in [0, 1], got {self.p!r}",
                            field="connect.p", fix="give e.g. p: 0.02")
        object.__setattr__(self, "p", float(self.p))


@dataclass(frozen=True)
class Explicit:
    """Explicit synapse lists ``i`` (source indices) and ``j`` (target indices).

    Parameters
    ----------
    i : ArrayValue
        Source neuron index of each synapse (integers).
    j : ArrayValue
        Target neuron index of each synapse (integers, same length as ``i``).

    Notes
    -----
    A :class:`Projection` stores the pairs sorted by ``(i, j)`` (stable) and
    permutes its per-synapse ``weights``, ``delay`` and ``initial`` arrays
    along, so synapse ``k`` is the same synapse in the spec, in every backend
    and in recordings; run-time overrides of per-synapse values follow that
    stored order (``spec.projection(name).connect.i``).
    """

    i: ArrayValue
    j: ArrayValue

    def __post_init__(self):
        i, j = as_value(self.i, field="connect.i"), as_value(self.j, field="connect.j")
        for name, a in (("i", i), ("j", j)):
            if not isinstance(a, ArrayValue) or a.data.ndim != 1 or (a.data.size and a.data.dtype.kind not in "iu"):
                raise SpecError(f"{name} must be a 1-D integer array", field=f"connect.{name}",
                                fix="give a list of neuron indices")
        if i.shape != j.shape:
            raise SpecError(f"i has {i.shape[0]} entries but j has {j.shape[0]}", field="connect.j",
                            fix="give one target index per source index")
        object.__setattr__(self, "i", i)
        object.__setattr__(self, "j", j)


@dataclass(frozen=True)
class Conv2D:
    """A 2-D convolution: weights from a kernel of shape ``(out_c, in_c/groups, kh, kw)``.

    The source population's ``shape`` must be ``in_shape = (C, H, W)``; the target
    has the convolution's output shape.  Synaptic weights come from the kernel
    (the projection's ``weights`` must be omitted).

    Parameters
    ----------
    kernel : ArrayValue
        Weights of shape ``(out_c, in_c/groups, kh, kw)``, in the unit of the synapse model's weight.
    stride : int or (int, int)
        Step of the kernel over ``(H, W)``.
    padding : int or (int, int)
        Zero padding added on both sides of ``(H, W)``.
    groups : int
        Grouped convolution: input and output channels split into this many groups.
    """

    kernel: ArrayValue
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1

    def __post_init__(self):
        k = as_value(self.kernel, field="connect.kernel")
        if not isinstance(k, ArrayValue) or k.data.ndim != 4:
            raise SpecError("kernel must be a 4-D array (out_channels, in_channels, kh, kw)",
                            field="connect.kernel", fix="give the torch Conv2d weight layout")
        object.__setattr__(self, "kernel", k)
        object.__setattr__(self, "stride", _pair(self.stride, "connect.stride"))
        object.__setattr__(self, "padding", _pair(self.padding, "connect.padding", allow_zero=True))
        object.__setattr__(self, "groups", _positive_int(self.groups, "connect.groups"))


@dataclass(frozen=True)
class Pool2D:
    """2-D pooling windows: each target neuron receives its window of source neurons.

    ``weight`` defaults to ``1/(kh*kw)`` (average pooling); the source layout
    ``(C, H, W)`` comes from the source population's ``shape``.

    Parameters
    ----------
    kernel_size : int or (int, int)
        Window ``(kh, kw)``.
    stride : int or (int, int), optional
        Step of the window (default: ``kernel_size``).
    padding : int or (int, int)
        Padding on both sides of ``(H, W)``.
    weight : str, optional
        Weight of every synapse (expression); default ``1/(kh*kw)``.
    """

    kernel_size: tuple[int, int]
    stride: tuple[int, int] | None = None
    padding: tuple[int, int] = (0, 0)
    weight: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "kernel_size", _pair(self.kernel_size, "connect.kernel_size"))
        stride = self.kernel_size if self.stride is None else self.stride
        object.__setattr__(self, "stride", _pair(stride, "connect.stride"))
        object.__setattr__(self, "padding", _pair(self.padding, "connect.padding", allow_zero=True))
        object.__setattr__(self, "weight", _opt_expr(self.weight, "connect.weight"))


@dataclass(frozen=True)
class Condition:
    """Brian2's ``Synapses.connect(condition=..., p=...)``: pairs chosen by expressions of ``i`` and ``j``.

    Every pair ``(i, j)`` (source index ``i``, target index ``j``, both
    relative to the source and target, subgroups included) for which
    ``condition`` is true is connected with probability ``p``.  The Brian2
    backends pass both to Brian2's ``connect`` (the same synapses as a Brian2
    script with the same seed, on the runtime); other backends use the
    deterministic expansion :func:`biosnn.spec.expand.expand_projection`
    (drawn in numpy from the spec's seed and the projection's name).

    Parameters
    ----------
    condition : str, optional
        A boolean expression of ``i``, ``j``, ``N_pre``, ``N_post`` and
        dimensionless constants, e.g. ``"i != j"`` or ``"abs(i - j) <= 2"``.
    p : str or float, optional
        Connection probability (dimensionless expression of the same names,
        e.g. ``"0.1*exp(-abs(i - j)/10)"``), default 1.
    j : str, optional
        Instead of ``condition`` and ``p``: the target of each source neuron
        ``i``, a whole-number expression of ``i`` (Brian2's generator
        ``connect(j='i')``, e.g. ``"i"`` or ``"N_post - 1 - i"``); every
        source gets exactly one synapse, and the target must exist.
    """

    condition: str | None = None
    p: str | None = None
    j: str | None = None

    def __post_init__(self):
        if self.condition is None and self.p is None and self.j is None:
            raise SpecError("a condition connectivity needs a 'condition', a 'p' or both (or a 'j')", field="connect",
                            fix="write e.g. {type: condition, condition: 'i != j', p: 0.1}")
        if self.j is not None and (self.condition is not None or self.p is not None):
            raise SpecError("'j' (one target per source) cannot be combined with 'condition' or 'p'",
                            field="connect.j", fix="give either j, or condition and/or p")
        object.__setattr__(self, "condition", _opt_expr(self.condition, "connect.condition"))
        object.__setattr__(self, "p", _opt_expr(self.p, "connect.p"))
        object.__setattr__(self, "j", _opt_expr(self.j, "connect.j"))


Connectivity = Union[AllToAll, OneToOne, RandomP, Explicit, Conv2D, Pool2D, Condition]


_SLICE = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)\[\s*(\d*)\s*:\s*(\d*)\s*\]$")


@dataclass(frozen=True)
class NodeRef:
    """A reference to a population or input, or to a contiguous part of it (Brian2's subgroup ``G[a:b]``).

    Parameters
    ----------
    name : str
        The population or input.
    start, stop : int or None
        The slice ``[start:stop]`` (``None``: the whole node).
    """

    name: str
    start: int | None = None
    stop: int | None = None

    @classmethod
    def parse(cls, text, field_: str) -> "NodeRef":
        """Parse ``"exc"`` or ``"exc[10:20]"`` / ``"exc[:800]"`` / ``"exc[800:]"`` (no step, no negatives)."""
        if not isinstance(text, str):
            raise SpecError(f"expected a population name, got {text!r}", field=field_,
                            fix="name a population, or a part of it such as 'exc[0:800]'")
        if "[" not in text:
            _check_name(text, "population", field_)
            return cls(text)
        match = _SLICE.match(text.strip())
        if match is None:
            raise SpecError(f"'{text[:60]}' is not a population name or a contiguous slice of one", field=field_,
                            fix="write 'name[start:stop]' with non-negative whole numbers, e.g. 'exc[0:800]' "
                                "(no step, no negative indices)")
        name, a, b = match.groups()
        _check_name(name, "population", field_)
        return cls(name, int(a) if a else 0, int(b) if b else None)

    @property
    def whole(self) -> bool:
        return self.start is None

    def bounds(self, size: int, field_: str) -> tuple[int, int]:
        """``(start, stop)`` within a node of ``size`` neurons; a slice out of range is a :class:`SpecError`."""
        if self.whole:
            return 0, size
        stop = size if self.stop is None else self.stop
        if not 0 <= self.start < stop <= size:
            raise SpecError(f"subgroup [{self.start}:{'' if self.stop is None else self.stop}] of '{self.name}' "
                            f"is empty or outside its {size} neurons", field=field_,
                            fix=f"give 0 <= start < stop <= {size}")
        return self.start, stop


def node_ref(text, field_: str) -> NodeRef:
    """Shorthand for :meth:`NodeRef.parse`."""
    return NodeRef.parse(text, field_)


@dataclass(frozen=True)
class Projection:
    """Synapses from a population or input to a population.

    Parameters
    ----------
    name : str
        Unique name.
    source, target : str
        Names of a population or input (source) and a population (target);
        either may be a subgroup (``"exc[0:800]"``, Brian2's ``G[0:800]``),
        and the target may be a projection defined before this one
        (synapses onto synapses: ``j`` numbers its synapses, ``<var>_post``
        are their variables).
    model : str or SynapseModel
        A name from the spec's ``synapse_models``, a library synapse name, or inline.
    connect : Connectivity
        How neurons are connected.
    weights : str or ArrayValue, optional
        Value of ``weight_var`` per synapse: an expression (``"0.5*mV"``,
        ``"rand()*w_max"``) or an array with one entry per synapse.
    weight_var : str
        The synaptic variable the weights go into (default ``w``).
    delay : str, ArrayValue or mapping, optional
        Transmission delay (``"1*ms"``) or one per synapse; for a synapse
        model with pathways, a mapping of pathway names to delays
        (``{"up": "1*ms", "down": "3*ms"}``; pathways not named have none).
    initial : mapping
        Initial values of other synaptic variables.
    parameters : mapping
        Constants overriding the synapse model's defaults.
    operations : tuple of Operation
        Statements run regularly on the synapses.
    order : int, optional
        Schedule position of the spike propagation (see :class:`Population`).
    target_var : str, optional
        For a library synapse model named in ``model`` that takes one (the
        plasticity rules): the target variable it delivers to (e.g. ``ge``;
        the library's default is ``v``).
    """

    name: str
    source: str
    target: str
    model: Union[str, SynapseModel]
    connect: Connectivity = field(default_factory=AllToAll)
    weights: Value | None = None
    weight_var: str = "w"
    delay: Value | None = None
    initial: Mapping[str, Value] = field(default_factory=dict)
    parameters: Mapping[str, str] = field(default_factory=dict)
    operations: tuple[Operation, ...] = ()
    order: int | None = None
    target_var: str | None = None

    def __post_init__(self):
        _check_name(self.name, "projection", "name")
        object.__setattr__(self, "operations", _operations(self.operations, "operations"))
        object.__setattr__(self, "order", _opt_int(self.order, "order"))
        for f in ("source", "target"):
            if not isinstance(getattr(self, f), str):
                raise SpecError(f"{f} must be a population or input name", field=f,
                                fix="name a population defined in the spec")
            NodeRef.parse(getattr(self, f), f)
        if not isinstance(self.model, (str, SynapseModel)):
            raise SpecError("model must be a synapse model name or a SynapseModel", field="model",
                            fix="name a model from synapse_models or the library")
        if not isinstance(self.connect, (AllToAll, OneToOne, RandomP, Explicit, Conv2D, Pool2D, Condition)):
            raise SpecError(f"unknown connectivity {self.connect!r}", field="connect",
                            fix="use all_to_all, one_to_one, p, explicit i/j, conv2d, pool2d or condition")
        if self.weights is not None:
            object.__setattr__(self, "weights", as_value(self.weights, field="weights"))
        if isinstance(self.connect, Conv2D) and self.weights is not None:
            raise SpecError("a conv2d projection takes its weights from the kernel", field="weights",
                            fix="remove 'weights' or use explicit connectivity")
        _check_name(self.weight_var, "weight variable", "weight_var")
        if self.target_var is not None:
            _check_name(self.target_var, "target variable", "target_var")
        if isinstance(self.delay, Mapping):
            object.__setattr__(self, "delay", _values(self.delay, "delay"))
        elif self.delay is not None:
            object.__setattr__(self, "delay", as_value(self.delay, field="delay"))
        object.__setattr__(self, "initial", _values(self.initial, "initial"))
        object.__setattr__(self, "parameters", _params(self.parameters, "parameters"))
        _sort_explicit_synapses(self)


def _sort_explicit_synapses(proj: "Projection") -> None:
    """Store explicit synapse lists sorted by ``(i, j)``, per-synapse arrays permuted along.

    Every backend numbers synapses in this order (the static templates need it, Brian2 keeps the
    order it is given), so weights, delays and initial values given per synapse in another order
    must travel with their synapse. The sort is stable: duplicated pairs keep their given order.
    """
    c = proj.connect
    if not isinstance(c, Explicit) or c.i.data.size < 2:
        return
    i, j = np.asarray(c.i.data), np.asarray(c.j.data)
    order = synapse_order(i, j)  # the order every backend numbers the synapses in
    if order is None:
        return
    n = i.size

    def permuted(value):
        if isinstance(value, ArrayValue) and value.data.ndim >= 1 and value.data.shape[0] == n:
            return ArrayValue(value.data[order], value.unit)
        return value

    set_ = object.__setattr__
    set_(proj, "connect", Explicit(i=i[order], j=j[order]))
    set_(proj, "weights", permuted(proj.weights))
    set_(proj, "delay", permuted(proj.delay))
    set_(proj, "initial", _values({k: permuted(v) for k, v in proj.initial.items()}, "initial"))


# ---------------------------------------------------------------------------
# Monitors


def _variables(value, field_: str, *, allow_empty: bool) -> tuple[str, ...]:
    variables = (value,) if isinstance(value, str) else tuple(value or ())
    if not variables and not allow_empty:
        raise SpecError("a state monitor needs at least one variable", field=field_,
                        fix="list variables to record, e.g. [v]")
    for v in variables:
        _check_name(v, "variable", field_)
    if len(set(variables)) < len(variables):
        raise SpecError(f"a variable is listed twice in {list(variables)}", field=field_,
                        fix="list each variable once")
    return variables


@dataclass(frozen=True)
class SpikeMonitor:
    """Record the spikes of a population, a subgroup (``"exc[0:10]"``) or an input.

    Parameters
    ----------
    population : str
        Name of the population or input, or a subgroup (indices relative to it, as in Brian2).
    variables : tuple of str
        Variables of the population to record at each spike (Brian2's
        ``SpikeMonitor(G, variables=...)``: the value when the threshold is
        crossed, before the reset); in the recording's ``spike_values``.
    """

    population: str
    variables: tuple[str, ...] = ()

    def __post_init__(self):
        NodeRef.parse(self.population, "population")
        object.__setattr__(self, "variables", _variables(self.variables, "variables", allow_empty=True))


@dataclass(frozen=True)
class RateMonitor:
    """Record the population rate (Brian2's ``PopulationRateMonitor``): spikes per neuron per step / ``dt``.

    Parameters
    ----------
    population : str
        A population, a subgroup (``"exc[0:10]"``) or an input; in the recording's ``rates``.
    """

    population: str

    def __post_init__(self):
        NodeRef.parse(self.population, "population")


@dataclass(frozen=True)
class StateMonitor:
    """Record state variables of some neurons of a population, or of some synapses of a projection.

    Parameters
    ----------
    population : str
        The population, a subgroup (``"exc[0:10]"``, indices relative to it)
        or a projection (its synaptic variables, e.g. ``w``; indices are
        synapse numbers in the order the backend created them).
    variables : tuple of str
        Variable names, e.g. ``("v",)``.
    indices : tuple of int or None
        Neurons (or synapses) to record (``None``: all).
    dt : str, optional
        Sampling interval (default: the simulation ``dt``).
    when : str
        Schedule slot of the sampling (default ``start``, as Brian2's
        ``StateMonitor``: the values at the start of each step, before that
        step's integration, thresholds and synaptic effects; ``end`` records
        them after the step, one step later).
    order : int
        Position within the slot.
    """

    population: str
    variables: tuple[str, ...]
    indices: tuple[int, ...] | None = None
    dt: str | None = None
    when: str = "start"
    order: int = 0

    def __post_init__(self):
        object.__setattr__(self, "when", _when(self.when, "when"))
        object.__setattr__(self, "order", _opt_int(self.order, "order"))
        NodeRef.parse(self.population, "population")
        object.__setattr__(self, "variables", _variables(self.variables, "variables", allow_empty=False))
        if self.indices is not None:
            raw = np.atleast_1d(np.asarray(self.indices, dtype=object))
            if raw.ndim != 1 or any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) for i in raw):
                raise SpecError(f"indices must be whole numbers, got {str(self.indices)[:60]}", field="indices",
                                fix="list neuron numbers such as [0, 1, 2]")
            idx = tuple(int(i) for i in raw)
            if any(i < 0 for i in idx):
                raise SpecError("indices must be non-negative", field="indices",
                                fix="number neurons from 0")
            object.__setattr__(self, "indices", idx)
        object.__setattr__(self, "dt", _opt_expr(self.dt, "dt"))


Monitor = Union[SpikeMonitor, StateMonitor, RateMonitor]


@dataclass(frozen=True)
class Segment:
    """One part of a protocol: set some variables, then run for a while (Brian2: ``G.I = ...; net.run(...)``).

    Parameters
    ----------
    duration : str
        How long this segment runs (``"200*ms"``).
    set : mapping of str to str
        Values assigned when the segment starts, keyed ``"<population or
        projection>.<variable>"`` (e.g. ``{"exc.I": "2*nA"}``): Brian2
        expressions, evaluated per neuron or synapse (``"i*0.1*nA"``).
    """

    duration: str
    set: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "duration", as_expression(self.duration, field="duration"))
        if not isinstance(self.set, Mapping):
            raise SpecError("set must be a mapping '<part>.<variable>' -> value", field="set",
                            fix="write e.g. set: {exc.I: 2*nA}")
        for key in self.set:
            part, _, var = str(key).partition(".")
            if not var:
                raise SpecError(f"'{key}' is not '<population or projection>.<variable>'", field=f"set.{key}",
                                fix="write e.g. exc.I")
            _check_name(part, "population or projection", f"set.{key}")
            _check_name(var, "variable", f"set.{key}")
        object.__setattr__(self, "set", frozen_mapping(self.set, lambda v, k: as_expression(v, field=f"set.{k}")))


def _segments(items) -> tuple:
    out = []
    for k, seg in enumerate(items or ()):
        if isinstance(seg, dict):
            try:
                seg = Segment(**seg)
            except TypeError as exc:
                raise SpecError(f"bad protocol segment: {exc}", field=f"protocol[{k}]",
                                fix="give duration and optionally set") from None
            except SpecError as exc:
                raise exc.located(prefix=f"protocol[{k}]") from None
        if not isinstance(seg, Segment):
            raise SpecError(f"expected a Segment, got {seg!r}", field=f"protocol[{k}]",
                            fix="write {duration: 100*ms, set: {exc.I: 2*nA}}")
        out.append(seg)
    return tuple(out)


# ---------------------------------------------------------------------------
# The network


def _by_name(items, kind: str, field_: str) -> tuple:
    items = tuple(items or ())
    seen = set()
    for k, item in enumerate(items):
        if item.name in seen:
            raise SpecError(f"{kind} '{item.name}' is defined twice", field=f"{field_}.{item.name}",
                            fix="give every part of the network a unique name")
        seen.add(item.name)
    return items


@dataclass(frozen=True)
class NetworkSpec:
    """A whole network: the intermediate representation of biosnn.

    Parameters
    ----------
    name : str
        Network name (also names build directories and output files).
    populations : tuple of Population
        The neuron groups (YAML: a mapping ``populations`` of names to populations).
    inputs : tuple of PoissonInput, SpikeTimesInput or CurrentInput
        The stimulus sources (YAML: a mapping ``inputs`` of names to inputs with a ``type``).
    projections : tuple of Projection
        The synapses between populations and inputs (YAML: a mapping ``projections``).
    monitors : tuple of SpikeMonitor or StateMonitor
        What is recorded (YAML: a list ``monitors`` of entries with a ``type``).
    dt : str
        Simulation time step (``"0.1*ms"``).
    duration : str
        Default simulated time (``"1*second"``).
    seed : int, optional
        Seed for random connectivity and Brian2's random numbers.
    neuron_models, synapse_models : mapping
        Named models that populations and projections refer to.
    timed_arrays : tuple of TimedArraySpec
        Functions of time usable in expressions.
    namespace : mapping
        Global constants visible to every equation (quantity strings).
    description : str
        Free text.
    protocol : tuple of Segment
        Optional segments run one after the other within one simulation,
        each setting variables before it runs; their durations add up to
        ``duration``.

    Notes
    -----
    Construction validates the whole network (references, sizes, shapes and
    the units of every equation with Brian2's unit checker).
    """

    name: str
    populations: tuple[Population, ...] = ()
    inputs: tuple[Input, ...] = ()
    projections: tuple[Projection, ...] = ()
    monitors: tuple[Monitor, ...] = ()
    dt: str = "0.1*ms"
    duration: str = "100*ms"
    seed: int | None = None
    neuron_models: Mapping[str, NeuronModel] = field(default_factory=dict)
    synapse_models: Mapping[str, SynapseModel] = field(default_factory=dict)
    timed_arrays: tuple[TimedArraySpec, ...] = ()
    namespace: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    protocol: tuple[Segment, ...] = ()

    def __post_init__(self):
        _check_name(self.name, "network", "name")
        object.__setattr__(self, "protocol", _segments(self.protocol))
        if not isinstance(self.description, str):
            raise SpecError("description must be text", field="description", fix="write it as a string")
        object.__setattr__(self, "populations", _by_name(self.populations, "population", "populations"))
        object.__setattr__(self, "inputs", _by_name(self.inputs, "input", "inputs"))
        object.__setattr__(self, "projections", _by_name(self.projections, "projection", "projections"))
        object.__setattr__(self, "timed_arrays", _by_name(self.timed_arrays, "timed array", "timed_arrays"))
        object.__setattr__(self, "monitors", tuple(self.monitors or ()))
        object.__setattr__(self, "neuron_models", frozen_mapping(self.neuron_models, names="neuron_models"))
        object.__setattr__(self, "synapse_models", frozen_mapping(self.synapse_models, names="synapse_models"))
        object.__setattr__(self, "namespace", _params(self.namespace, "namespace"))
        object.__setattr__(self, "dt", as_expression(self.dt, field="dt"))
        object.__setattr__(self, "duration", as_expression(self.duration, field="duration"))
        if self.seed is not None:
            if (isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer))
                    or not 0 <= self.seed < 2 ** 32):
                raise SpecError(f"seed must be a non-negative integer below 2**32, got {str(self.seed)[:40]}",
                                field="seed", fix="give e.g. seed: 42, or omit it")
            object.__setattr__(self, "seed", int(self.seed))
        from biosnn.spec.check import check_network
        check_network(self)

    # -- lookups ----------------------------------------------------------
    def population(self, name: str) -> Population:
        """The population called ``name``."""
        for p in self.populations:
            if p.name == name:
                return p
        raise SpecError(f"no population named '{name}'", fix=f"use one of {self.population_names}")

    def node(self, name: str) -> Union[Population, Input]:
        """The population or input called ``name``."""
        for p in self.populations + self.inputs:
            if p.name == name:
                return p
        raise SpecError(f"no population or input named '{name}'",
                        fix=f"use one of {[n.name for n in self.populations + self.inputs]}")

    def projection(self, name: str) -> Projection:
        """The projection called ``name``."""
        for p in self.projections:
            if p.name == name:
                return p
        raise SpecError(f"no projection named '{name}'", fix=f"use one of {[p.name for p in self.projections]}")

    def node_bounds(self, ref: str, field_: str | None = None) -> tuple[Union[Population, Input], int, int]:
        """The node a reference names (``"exc"`` or the subgroup ``"exc[0:800]"``) and its ``(start, stop)``."""
        r = NodeRef.parse(ref, field_)
        node = self.node(r.name)
        start, stop = r.bounds(node.size, field_)
        return node, start, stop

    def node_size(self, ref: str) -> int:
        """The number of neurons of a population, an input or a subgroup such as ``"exc[0:800]"``."""
        _, start, stop = self.node_bounds(ref)
        return stop - start

    @property
    def population_names(self) -> list[str]:
        return [p.name for p in self.populations]

    def neuron_model(self, pop: Population) -> NeuronModel:
        """The resolved :class:`NeuronModel` of a population."""
        from biosnn.spec.check import resolve_neuron_model
        return resolve_neuron_model(self, pop)

    def synapse_model(self, proj: Projection) -> SynapseModel:
        """The resolved :class:`SynapseModel` of a projection."""
        from biosnn.spec.check import resolve_synapse_model
        return resolve_synapse_model(self, proj)

    def dt_seconds(self) -> float:
        """The time step in seconds."""
        return float(parse_quantity(self.dt, field="dt"))

    def duration_seconds(self) -> float:
        """The default duration in seconds."""
        return float(parse_quantity(self.duration, field="duration"))

    def replace(self, **changes) -> "NetworkSpec":
        """A new spec with some fields changed (validated again)."""
        return replace(self, **changes)

    def with_projection(self, name: str, **changes) -> "NetworkSpec":
        """A new spec in which projection ``name`` has some fields changed (e.g. new weights)."""
        proj = self.projection(name)
        projections = tuple(replace(p, **changes) if p is proj else p for p in self.projections)
        return replace(self, projections=projections)

    def with_population(self, name: str, **changes) -> "NetworkSpec":
        """A new spec in which population ``name`` has some fields changed."""
        pop = self.population(name)
        pops = tuple(replace(p, **changes) if p is pop else p for p in self.populations)
        return replace(self, populations=pops)

    def save(self, path) -> "Path":
        """Write the spec to a YAML file (arrays into a side ``.npz``). See :func:`biosnn.spec.save_spec`."""
        from biosnn.spec.yaml_io import save_spec
        return save_spec(self, path)


def spec_fields(cls) -> list[str]:
    """Field names of a spec dataclass (used by the YAML reader to reject unknown keys)."""
    return [f.name for f in fields(cls)]
