"""Set model parameters of populations and projections by name (``"XeAe.nu_ee_post=0.02"``).

The command line's ``--param`` (``biosnn run``, ``biosnn train-stdp``) uses it for
parameter sweeps without editing spec files.

>>> from biosnn.spec import NetworkSpec, Population
>>> spec = NetworkSpec("net", populations=(Population("exc", 10, "lif"),))
>>> set_parameters(spec, ["exc.tau_m=20*ms"]).node("exc").parameters["tau_m"]
'20*ms'
"""

from __future__ import annotations

import dataclasses

from biosnn.errors import SpecError
from biosnn.spec import model as m

__all__ = ["set_parameters", "parse_assignment"]


def parse_assignment(text: str) -> tuple[str, str, str]:
    """``"owner.name=value"`` -> ``(owner, name, value)``; a :class:`SpecError` for other forms."""
    head, sep, value = str(text).partition("=")
    owner, dot, name = head.strip().partition(".")
    if not sep or not dot or not owner or not name or not value.strip():
        raise SpecError(f"cannot read the parameter setting {text!r}", field="--param",
                        fix="write OWNER.PARAMETER=VALUE, e.g. XeAe.nu_ee_post=0.02 or Ae.theta_plus=0.1*mV")
    return owner, name.strip(), value.strip()


def set_parameters(spec: m.NetworkSpec, assignments) -> m.NetworkSpec:
    """A new spec with the given parameters of populations or projections set.

    Parameters
    ----------
    spec : NetworkSpec
    assignments : iterable of str
        ``"OWNER.PARAMETER=VALUE"``: ``OWNER`` a population or projection,
        ``PARAMETER`` one of its model's parameters, ``VALUE`` a quantity
        string (``"0.02"``, ``"20*ms"``).

    Returns
    -------
    NetworkSpec
        Validated anew (units included).

    Raises
    ------
    SpecError
        For an unknown owner or parameter (the message lists the choices).
    """
    pops = {p.name: p for p in spec.populations}
    projs = {p.name: p for p in spec.projections}
    for text in assignments:
        owner, name, value = parse_assignment(text)
        if owner in pops:
            part, model = pops[owner], spec.neuron_model(pops[owner])
        elif owner in projs:
            part, model = projs[owner], spec.synapse_model(projs[owner])
        else:
            raise SpecError(f"no population or projection named {owner!r}", field="--param",
                            fix=f"use one of {sorted(pops) + sorted(projs)}")
        known = {**model.parameters, **part.parameters}
        if name not in known:
            raise SpecError(f"{owner!r} has no parameter {name!r}", field="--param",
                            fix=f"use one of {sorted(known)}")
        new = dataclasses.replace(part, parameters={**part.parameters, name: value})
        if owner in pops:
            pops[owner] = new
        else:
            projs[owner] = new
    return spec.replace(populations=tuple(pops[p.name] for p in spec.populations),
                        projections=tuple(projs[p.name] for p in spec.projections))
