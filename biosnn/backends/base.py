"""The backend protocol and what every backend shares (run overrides).

A backend turns a :class:`~biosnn.spec.NetworkSpec` into a :class:`Simulation`
(``Backend.build``); a simulation runs, possibly many times with new inputs,
weights or initial values (``Simulation.run(overrides=...)``), and returns a
:class:`~biosnn.recording.Recording`.  Standalone backends compile once in
``build`` and reuse the binary for every ``run``.
"""

from __future__ import annotations

from typing import Mapping, Protocol, runtime_checkable

import numpy as np

from biosnn.errors import BackendError, SpecError
from biosnn.spec import model as m
from biosnn.spec.values import ArrayValue

__all__ = ["Backend", "Simulation", "apply_overrides", "split_key"]


@runtime_checkable
class Simulation(Protocol):
    """A built network that can be run."""

    spec: m.NetworkSpec

    def run(self, duration: float | None = None, overrides: Mapping | None = None,
            progress: bool = True, final_state=None):
        """Simulate and return a :class:`~biosnn.recording.Recording`.

        Parameters
        ----------
        duration : float, optional
            Simulated time in seconds (default: the spec's duration).
        overrides : mapping, optional
            New values for this run: ``{"<timed array>": values}`` (same shape as
            in the spec), ``{"<population>.<var>": values}`` (initial values) or
            ``{"<projection>.<var>": values}`` (one per synapse, e.g. weights).
            Values are :class:`~biosnn.spec.ArrayValue`, Brian2 quantities, or
            plain arrays in the unit of the spec's own array for that entry.
        progress : bool
            Show a progress bar.
        final_state : sequence of str, optional
            Variables whose values at the end of the run go into
            ``Recording.final`` (``"<population>.<var>"`` or
            ``"<projection>.<var>"``, e.g. learned weights ``"input_exc.w"``).
            ``Recording.final_overrides()`` feeds them back as overrides.
        """
        ...


@runtime_checkable
class Backend(Protocol):
    """Builds specs into simulations."""

    name: str

    def build(self, spec: m.NetworkSpec) -> Simulation:
        ...


def split_key(spec: m.NetworkSpec, key: str) -> tuple[str, str | None]:
    """Split an override key into (part name, variable) and check that the part exists."""
    names = {t.name for t in spec.timed_arrays} | {i.name for i in spec.inputs
                                                   if isinstance(i, m.CurrentInput)}
    if key in names:
        return key, None
    if "." in key:
        part, var = key.split(".", 1)
        if part in spec.population_names or part in [p.name for p in spec.projections]:
            return part, var
    raise BackendError(f"cannot override '{key}': use a timed array name {sorted(names)}, "
                       "'<population>.<variable>' or '<projection>.<variable>'")


def _as_array_value(value, like: ArrayValue | None, key: str) -> ArrayValue:
    if isinstance(value, ArrayValue):
        return value
    from brian2 import Quantity, get_unit
    if isinstance(value, Quantity):
        if value.is_dimensionless:
            return ArrayValue(np.asarray(value), "1")
        unit = get_unit(value.dim)
        return ArrayValue(np.asarray(value / unit), repr(unit))
    try:  # torch tensors and array-likes
        data = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    except Exception as exc:
        raise BackendError(f"override '{key}' is not an array: {exc}") from None
    return ArrayValue(data, like.unit if like is not None else "1")


def apply_overrides(spec: m.NetworkSpec, overrides: Mapping | None) -> m.NetworkSpec:
    """A new spec with the overrides of a run applied (validated like any spec)."""
    if not overrides:
        return spec
    tas = {t.name: t for t in spec.timed_arrays}
    currents = {i.name: i for i in spec.inputs if isinstance(i, m.CurrentInput)}
    pops = {p.name: p for p in spec.populations}
    projs = {p.name: p for p in spec.projections}
    new_tas, new_inputs, pop_init, proj_changes = dict(tas), dict(currents), {}, {}
    for key, value in overrides.items():
        part, var = split_key(spec, key)
        if var is None:
            old = tas[part].values if part in tas else currents[part].values
            av = _as_array_value(value, old, key)
            if av.shape != old.shape:
                raise BackendError(f"override '{key}' has shape {av.shape}; the compiled network "
                                   f"expects {old.shape} (a new shape needs a new spec)")
            if part in tas:
                new_tas[part] = m.TimedArraySpec(part, av, tas[part].dt)
            else:
                c = currents[part]
                new_inputs[part] = m.CurrentInput(c.name, c.target, c.variable, av, c.dt)
        elif part in pops:
            old = pops[part].initial.get(var)
            pop_init.setdefault(part, {})[var] = _as_array_value(
                value, old if isinstance(old, ArrayValue) else None, key)
        else:
            proj = projs[part]
            old = proj.weights if var == proj.weight_var else proj.initial.get(var)
            av = _as_array_value(value, old if isinstance(old, ArrayValue) else None, key)
            ch = proj_changes.setdefault(part, {})
            if var == proj.weight_var:
                ch["weights"] = av
            elif var == "delay":
                ch["delay"] = av
            else:
                ch.setdefault("initial", dict(proj.initial))[var] = av
    from dataclasses import replace
    try:
        return replace(
            spec,
            timed_arrays=tuple(new_tas[t.name] for t in spec.timed_arrays),
            inputs=tuple(new_inputs.get(i.name, i) for i in spec.inputs),
            populations=tuple(replace(p, initial={**p.initial, **pop_init[p.name]}) if p.name in pop_init
                              else p for p in spec.populations),
            projections=tuple(replace(p, **proj_changes[p.name]) if p.name in proj_changes else p
                              for p in spec.projections))
    except SpecError as exc:
        raise BackendError(f"invalid override: {exc}") from None
