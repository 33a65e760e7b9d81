"""Replicas: ``R`` independent copies of a network in the same groups (batching across copies, for GPUs).

:func:`replicate` turns a spec into one whose every population and input is
``R`` times larger: neuron ``i`` of copy ``r`` is neuron ``r * N + i`` (``N``
the size of one copy).  Copies do not interact; each runs the same model with
its own inputs.  A converted network simulates ``R x W`` samples in one run
this way: ``R`` copies, each taking ``W`` sample windows one after the other
(:meth:`biosnn.conversion.snn.SNN.run` with ``replicas=``).  On a GPU the
copies fill the device (one kernel launch serves all ``R``); on a CPU they
give every step enough work for OpenMP threads.

Rules (everything else is kept as it is):

* populations and inputs: ``size * R``; a ``shape`` ``(C, H, W)`` (or
  ``(H, W)``, one channel) becomes ``(R, C, H, W)``; a shape that already has a
  replica axis, ``(Q, C, H, W)``, becomes ``(R * Q, C, H, W)`` (copy ``r`` of
  copy ``q`` is copy ``r * Q + q``, so replicating twice is replicating once
  ``R * Q`` times); per-neuron arrays (initial values, Poisson rates) and
  spike-time inputs are copied per replica;
* 2-D timed arrays (one column per neuron, read as ``name(t, i)``): columns
  copied ``R`` times, so copy ``r`` reads columns ``r * N ... (r + 1) * N - 1``;
  give each copy its own inputs by overriding the table with ``R * N`` columns.
  A 2-D table read by a group of another size, or with another column than
  the group's own index (``name(t, 0)``, ``name(t, i % 4)``), is refused.
  Synapses may read ``name(t, i)`` (a table as wide as the source) or
  ``name(t, j)`` (as wide as the target).  1-D tables (``name(t)``) stay shared;
* code (model equations, threshold, reset, ``on_pre``/``on_post``, operations,
  Poisson rate expressions) is kept as it is, so it must not depend on which
  copy it runs in: the neuron indices ``i``/``j`` anywhere but as such a
  timed-array column, and the group size ``N`` (``R`` times larger: neurons,
  or synapses in a projection), are refused with the population or
  projection, the part and the line.  ``N_incoming``/``N_outgoing`` are kept
  by the block-diagonal copies, and random numbers in code (``rand()``,
  ``xi``) are drawn independently in every copy, like independent trials;
* ``Conv2D`` and ``Pool2D`` projections keep their rule (kernel, geometry):
  expanded, they give the synapses of one copy repeated with index offsets
  (:func:`biosnn.connectivity.replicated`), and the static-projection
  templates keep one kernel for all copies;
* every other projection becomes explicit block-diagonal synapses (the
  expansion of one copy, repeated with offsets), per-synapse arrays copied;
  weights, delays or initial values written as expressions that use the
  indices ``i`` or ``j`` or the size ``N`` are refused, as are random ones
  (``rand()``): the copies would differ;
* state monitors record the same neurons in every copy; spike monitors (and the variables they read at
  each spike) record the spikes of every copy.

>>> from biosnn.spec import NetworkSpec, Population, Projection, OneToOne, SpikeMonitor
>>> spec = NetworkSpec("net", populations=(Population("a", 3, "lif"), Population("b", 3, "lif")),
...                    projections=(Projection("ab", "a", "b", "delta_voltage", OneToOne(), weights="1*mV"),),
...                    monitors=(SpikeMonitor("b"),))
>>> twice = replicate(spec, 2)
>>> twice.node("a").size, twice.projection("ab").connect.j.data.tolist()
(6, [0, 1, 2, 3, 4, 5])
"""

from __future__ import annotations

import dataclasses
from typing import Mapping
import re

import numpy as np

from biosnn import connectivity as cx
from biosnn.errors import SpecError
from biosnn.spec import model as m
from biosnn.spec.expand import expand_projection
from biosnn.spec.values import ArrayValue

__all__ = ["replicate"]

_INDEX = re.compile(r"\b[ij]\b|\brand[n]?\s*\(")


def _check_constructs(spec) -> None:
    """Refuse what :func:`replicate` does not copy: protocols, subgroups, conditions, the newer monitors."""
    from biosnn.spec import model as m
    parts = [("protocol", "a protocol")] if spec.protocol else []
    parts += [(f"projections.{p.name}.connect", "condition connectivity") for p in spec.projections
              if isinstance(p.connect, m.Condition)]
    parts += [(f"projections.{p.name}.source", "a subgroup") for p in spec.projections if "[" in p.source + p.target]
    parts += [(f"inputs.{i.name}.target", "a subgroup") for i in spec.inputs if "[" in getattr(i, "target", "")]
    nodes = {n.name for n in (*spec.populations, *spec.inputs)}
    parts += [(f"projections.{p.name}.target", "synapses onto synapses") for p in spec.projections
              if p.target not in nodes and "[" not in p.target]
    parts += [(f"projections.{p.name}.model", "several pathways") for p in spec.projections
              if isinstance(p.delay, Mapping) or any(isinstance(c, Mapping) for c in (
                  spec.synapse_model(p).on_pre, spec.synapse_model(p).on_post))]
    parts += [(f"monitors[{k}]", "a subgroup, rate or projection monitor")
              for k, mon in enumerate(spec.monitors) if "[" in mon.population or isinstance(mon, m.RateMonitor)
              or mon.population not in {n.name for n in (*spec.populations, *spec.inputs)}]
    if parts:
        raise SpecError(f"replicas cannot copy {parts[0][1]}", field=parts[0][0],
                        fix="run such a network without replicas (replicas=1)")


def replicate(spec: m.NetworkSpec, replicas: int) -> m.NetworkSpec:
    """``replicas`` independent copies of ``spec`` in one network (see the module docstring).

    Parameters
    ----------
    spec : NetworkSpec
        One copy.
    replicas : int
        Number of copies (``1`` returns ``spec`` itself).

    Returns
    -------
    NetworkSpec
        The same name, models, clock and seed, with ``R``-times larger groups.

    Raises
    ------
    SpecError
        For ``replicas`` below 1, and for parts that cannot be copied exactly
        (the message names the part, the field and what to change).
    """
    if isinstance(replicas, bool) or not isinstance(replicas, (int, np.integer)) or replicas < 1:
        raise SpecError(f"replicas must be a positive integer, got {replicas!r}", field="replicas",
                        fix="give 1 or more")
    R = int(replicas)
    if R == 1:
        return spec
    _check_constructs(spec)
    sizes = {n.name: n.size for n in (*spec.populations, *spec.inputs) if hasattr(n, "size")}
    tables = _check_code(spec)
    populations = tuple(dataclasses.replace(
        p, size=p.size * R, shape=_shape(p.shape, R), initial=_tiled_values(p.initial, p.size, R, f"populations.{p.name}"))
        for p in spec.populations)
    inputs = tuple(_input(inp, R, sizes) for inp in spec.inputs)
    timed = tuple(_timed_array(ta, R, tables.get(ta.name, set())) for ta in spec.timed_arrays)
    projections = tuple(_projection(spec, proj, R) for proj in spec.projections)
    monitors = tuple(_monitor(mon, R, sizes) for mon in spec.monitors)
    return spec.replace(populations=populations, inputs=inputs, timed_arrays=timed, projections=projections,
                        monitors=monitors)


def _shape(shape, R):
    """The shape of ``R`` copies: a leading replica axis (merged with one that is already there)."""
    if shape is None:
        return None
    shape = tuple(shape)
    if len(shape) == 4:  # already copies: copy r of copy q is copy r * Q + q
        return (R * shape[0],) + shape[1:]
    if len(shape) == 2:  # (H, W): one channel, as convolutions and pooling read it
        shape = (1,) + shape
    return (R,) + shape


def _tiled_values(values, n: int, R: int, where: str) -> dict:
    out = {}
    for key, v in values.items():
        if isinstance(v, ArrayValue):
            if v.data.shape[:1] != (n,):
                raise SpecError(f"{key} has shape {v.data.shape}, expected ({n},)", field=f"{where}.{key}",
                                fix="give one value per neuron or synapse")
            out[key] = ArrayValue(np.tile(v.data, R), v.unit)
        else:
            if _INDEX.search(str(v)):
                raise SpecError(f"{key} = {v!r} uses the indices i/j or random numbers: the copies would differ",
                                field=f"{where}.{key}", fix="give an array (one value per neuron or synapse)")
            if (size := _SIZES.search(str(v))) is not None:
                raise SpecError(f"{key} = {v!r} uses {size.group(0)}: {_WHY[size.group(0)]}, so the copies would "
                                "differ", field=f"{where}.{key}", fix="give an array (one value per neuron or synapse)")
            out[key] = v
    return out


def _input(inp, R: int, sizes: dict):
    where = f"inputs.{inp.name}"
    if isinstance(inp, m.PoissonInput):
        rates = inp.rates
        if isinstance(rates, ArrayValue):
            rates = ArrayValue(np.tile(rates.data, R), rates.unit)
        return dataclasses.replace(inp, size=inp.size * R, shape=_shape(inp.shape, R), rates=rates)
    if isinstance(inp, m.SpikeTimesInput):
        idx, times = np.asarray(inp.indices.data), np.asarray(inp.times.data)
        offsets = np.repeat(np.arange(R) * inp.size, idx.size)
        order = np.argsort(np.tile(times, R), kind="stable")  # copy after copy within each time
        return dataclasses.replace(
            inp, size=inp.size * R, shape=_shape(inp.shape, R),
            indices=ArrayValue((np.tile(idx, R) + offsets)[order].astype(idx.dtype)),
            times=ArrayValue(np.tile(times, R)[order], inp.times.unit))
    # CurrentInput: the same current in every copy
    values = inp.values.data
    if values.ndim == 2:
        if values.shape[1] != sizes[inp.target]:
            raise SpecError(f"values has {values.shape[1]} columns for {sizes[inp.target]} neurons",
                            field=f"{where}.values", fix="give one column per target neuron")
        return dataclasses.replace(inp, values=ArrayValue(np.tile(values, (1, R)), inp.values.unit))
    return inp


_SIZES = re.compile(r"\bN\b")
_INDICES = re.compile(r"\b[ij]\b")
_WHY = {"i": "i numbers the neurons of all copies together (neuron k of copy r is r * N + k)",
        "j": "j numbers the target neurons of all copies together (neuron k of copy r is r * N + k)",
        "N": "N counts the neurons (in a projection: the synapses) of all copies together"}


def _code(spec):
    """Every code string of the network: ``(field, what, code, {index name: group size})``."""
    sizes = {n.name: n.size for n in (*spec.populations, *spec.inputs)}
    for pop in spec.populations:
        model, index = spec.neuron_model(pop), {"i": pop.size}
        for part in ("equations", "threshold", "reset", "refractory"):
            yield f"populations.{pop.name}.model.{part}", f"the {part} of population '{pop.name}'", \
                getattr(model, part), index
        for k, op in enumerate(pop.operations):
            yield f"populations.{pop.name}.operations[{k}]", f"operation {k} of population '{pop.name}'", op.code, index
    for inp in spec.inputs:
        if isinstance(inp, m.PoissonInput) and not isinstance(inp.rates, ArrayValue):
            yield f"inputs.{inp.name}.rates", f"the rates of input '{inp.name}'", str(inp.rates), {"i": inp.size}
    for proj in spec.projections:
        model, index = spec.synapse_model(proj), {"i": sizes[proj.source], "j": sizes[proj.target]}
        for part in ("equations", "on_pre", "on_post"):
            yield f"projections.{proj.name}.model.{part}", f"the {part} of projection '{proj.name}'", \
                getattr(model, part), index
        for k, op in enumerate(proj.operations):
            yield f"projections.{proj.name}.operations[{k}]", f"operation {k} of projection '{proj.name}'", \
                op.code, index


def _close(text: str, start: int) -> int:
    """Index of the parenthesis closing the one at ``start - 1``, or ``-1``."""
    depth = 1
    for k in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[k], 0)
        if depth == 0:
            return k
    return -1


def _column_reads(text: str, tables: set) -> tuple[str, list]:
    """The calls of 2-D timed arrays in ``text`` as ``(name, call, column argument)``; ``text`` without the columns."""
    calls = []
    if not tables:
        return text, calls
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(tables))) + r")\s*\(")
    pos = 0
    while (found := pattern.search(text, pos)) is not None:
        close = _close(text, found.end())
        if close < 0:
            calls.append((found.group(1), text[found.start():], None))
            break
        first, _, column = text[found.end():close].rpartition(",")
        calls.append((found.group(1), text[found.start():close + 1], column.strip()))
        text = text[:found.end()] + first + text[close:]  # the time argument is checked with the rest
        pos = found.end()
    return text, calls


def _check_code(spec) -> dict[str, set[int]]:
    """Refuse code that depends on the copy it runs in; timed-array name -> widths of the groups reading it."""
    tables = {ta.name for ta in spec.timed_arrays if ta.values.data.ndim == 2}
    reads: dict[str, set[int]] = {}
    for field_, what, code, index in _code(spec):
        for line in (code or "").splitlines():
            text = line.split("#", 1)[0]
            if field_.endswith("model.equations"):
                text = text.split(":", 1)[0]  # the unit and flags
            rest, calls = _column_reads(text, tables)
            for name, call, column in calls:
                if column not in index:
                    raise SpecError(f"{what} reads the 2-D timed array '{name}' as {call!r} in line "
                                    f"{line.strip()!r}: with replicas each copy must read its own column, the "
                                    "group's index", field=field_,
                                    fix=f"read it as {name}(t, i) (in synapses {name}(t, i) or {name}(t, j)), "
                                        "or do not replicate this network")
                reads.setdefault(name, set()).add(index[column])
            bad = _INDICES.search(rest) or _SIZES.search(rest)
            if bad:
                raise SpecError(f"{what} uses {bad.group(0)} in line {line.strip()!r}: {_WHY[bad.group(0)]}, "
                                "so the copies would differ", field=field_,
                                fix="use indices only as timed-array columns, name(t, i), give per-neuron "
                                    "values as arrays, or do not replicate this network")
    return reads


def _timed_array(ta, R: int, readers: set[int]):
    values = ta.values.data
    if values.ndim == 1:
        return ta
    if readers and readers != {values.shape[1]}:
        raise SpecError(f"timed array '{ta.name}' has {values.shape[1]} columns but is read by groups of "
                        f"{sorted(readers)} neurons", field=f"timed_arrays.{ta.name}",
                        fix="replicas need a 2-D table to be read as name(t, i) by groups of its width")
    return dataclasses.replace(ta, values=ArrayValue(np.tile(values, (1, R)), ta.values.unit))


def _projection(spec, proj, R: int):
    where = f"projections.{proj.name}"
    kept = isinstance(proj.connect, (m.Conv2D, m.Pool2D))  # the rule expands to the copies itself
    per_synapse = {"initial": proj.initial, "delay": proj.delay, "weights": None if kept else proj.weights}
    # one copy's synapses: to copy them, or to check per-synapse arrays against their number
    conn = None
    if not kept or any(isinstance(v, ArrayValue) for v in (proj.delay, *proj.initial.values())):
        conn = expand_projection(spec, proj)
    n = 0 if conn is None else len(conn.i)
    initial = _tiled_values(per_synapse["initial"], n, R, where)
    delay, weights = (None if per_synapse[k] is None else _tiled_values({k: per_synapse[k]}, n, R, where)[k]
                      for k in ("delay", "weights"))
    if kept:
        return dataclasses.replace(proj, initial=initial, delay=delay)
    tiled = cx.replicated(conn, R)
    connect = m.Explicit(ArrayValue(np.asarray(tiled.i)), ArrayValue(np.asarray(tiled.j)))
    return dataclasses.replace(proj, connect=connect, weights=weights, initial=initial, delay=delay)


def _monitor(mon, R: int, sizes: dict):
    if isinstance(mon, m.StateMonitor) and mon.indices is not None:
        n = sizes[mon.population]
        idx = np.asarray(mon.indices, dtype=np.int64)
        return dataclasses.replace(mon, indices=tuple(int(k) for k in (idx[None, :] + n * np.arange(R)[:, None]).ravel()))
    return mon
