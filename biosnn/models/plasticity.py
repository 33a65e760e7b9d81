"""Spike-timing-dependent plasticity as Brian2 equation strings, and weight normalisation.

Every rule is a :class:`~biosnn.spec.model.SynapseModel` whose constants can be
overridden per projection (``Projection(parameters=...)``); the synapse also
transmits its weight to a variable of the target neuron on each presynaptic
spike.  Traces are event-driven, so a rule costs nothing between spikes and its
weight changes are exact (no integration error).

Timing convention: within one time step Brian2 runs the presynaptic pathway
before the postsynaptic one, so a pre and a post spike in the same step count
as "post after pre" (``dt = t_post - t_pre = 0`` potentiates).  A projection
``delay`` delays the presynaptic pathway, so all pairings are computed at the
spike's *arrival* time at the synapse.

Weight normalisation (Diehl & Cook 2015: the incoming weights of every target
neuron are scaled to sum to a fixed value) comes in two forms: the numpy
function :func:`normalize_incoming`, applied to the weights read back after a
run (``final_state``) and fed into the next one, and a spec-level operation
made of three parts -- :func:`with_weight_sum` (a summed variable on the
synapses), :func:`with_sum_variable` (the neuron variable receiving the sum)
and :func:`normalization` (the ``run_regularly`` statement that rescales).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from numbers import Number
from types import MappingProxyType

import numpy as np

from biosnn.errors import SpecError
from biosnn.spec.model import NeuronModel, Operation, SynapseModel
from biosnn.spec.values import as_expression

__all__ = ["PAIRINGS", "WEIGHT_DEPENDENCES", "LIBRARY", "stdp_trace", "stdp_diehl_cook", "with_weight_sum",
           "with_sum_variable", "normalization", "normalize_incoming"]

#: Trace update on a spike: all-to-all pairing accumulates, nearest-neighbour resets.
PAIRINGS = MappingProxyType({"all": "+= 1", "nearest": "= 1"})

#: Weight dependence of (potentiation, depression), in terms of the traces ``apre``/``apost``.
WEIGHT_DEPENDENCES = MappingProxyType({
    "additive": ("A_plus*apre", "A_minus*apost"),
    "multiplicative": ("A_plus*(w_max - w)*apre", "A_minus*(w - w_min)*apost"),
})


def _choice(value, options, what: str) -> str:
    if value not in options:
        raise SpecError(f"unknown {what} {value!r}", field=what, fix=f"use one of {sorted(options)}")
    return value


def _weight_quantity(value, unit: str, name: str) -> str:
    """A parameter in weight units: numbers are read in ``unit``, strings are Brian2 expressions."""
    if isinstance(value, Number) and not isinstance(value, bool) and unit != "1":
        return f"{as_expression(value, field=name)}*{unit}"
    return as_expression(value, field=name)


def _base_unit(unit: str) -> str:
    """The Brian2 base unit of ``unit`` (``"mV"`` -> ``"volt"``): equations accept base units only."""
    from brian2 import Quantity, get_unit

    from biosnn.spec.values import unit_of
    q = unit_of(unit)
    if not isinstance(q, Quantity) or q.is_dimensionless:
        return "1"
    return repr(get_unit(q.dim))


def _time(value, name: str) -> str:
    if isinstance(value, Number):
        raise SpecError(f"{name} = {value!r} has no unit", field=name,
                        fix=f"give a time, e.g. {name}='20*ms'")
    return as_expression(value, field=name)


def _delivery(target_var: str | None) -> str:
    return "" if target_var is None else f"{target_var}_post += w\n"


def stdp_trace(pairing: str = "all", weight_dependence: str = "additive", *, A_plus=0.01,
               A_minus=0.0105, tau_plus="20*ms", tau_minus="20*ms", w_min=0.0, w_max=1.0,
               unit: str = "1", target_var: str | None = "v") -> SynapseModel:
    """Pair-based STDP with a presynaptic and a postsynaptic trace.

    For one pre spike at ``t_pre`` and one post spike at ``t_post``
    (``dt = t_post - t_pre``) the weight changes by

    * ``dt >= 0`` (post after pre): ``+A_plus * f_+(w) * exp(-dt/tau_plus)``,
    * ``dt < 0`` (pre after post): ``-A_minus * f_-(w) * exp(dt/tau_minus)``,

    then is clipped to ``[w_min, w_max]``.  Additive: ``f_+ = f_- = 1``
    (``A_plus``, ``A_minus`` in weight units).  Multiplicative (soft bounds):
    ``f_+ = w_max - w``, ``f_- = w - w_min`` (``A_plus``, ``A_minus``
    dimensionless).  ``w`` is the weight before the update.

    Parameters
    ----------
    pairing : {"all", "nearest"}
        ``"all"``: every pre spike pairs with every post spike (traces
        accumulate: ``apre += 1``).  ``"nearest"``: symmetric nearest-spike
        pairing -- a post spike pairs only with the last pre spike before it and
        vice versa (traces reset: ``apre = 1``; Morrison et al. 2008, NEST's
        ``stdp_nn_symm_synapse``).
    weight_dependence : {"additive", "multiplicative"}
    A_plus, A_minus : float or str
        Amplitudes of potentiation and depression (weight units for additive,
        dimensionless for multiplicative).
    tau_plus, tau_minus : str or Quantity
        Time constants of the pre and post traces (e.g. ``"20*ms"``).
    w_min, w_max : float or str
        Weight bounds, in weight units.
    unit : str
        Unit of the weight ``w`` (``"1"``, ``"mV"``, ``"nS"``...); numbers
        given for weight-unit parameters are read in this unit (``w`` itself is
        declared in the base unit, ``volt``, ``siemens``...).
    target_var : str or None
        Target neuron variable that receives ``w`` on each presynaptic spike
        (``v_post += w``); ``None`` transmits nothing.

    Returns
    -------
    SynapseModel
        Variables ``w`` (weight), ``apre``, ``apost`` (dimensionless traces).
    """
    jump = PAIRINGS[_choice(pairing, PAIRINGS, "pairing")]
    potentiation, depression = WEIGHT_DEPENDENCES[_choice(weight_dependence, WEIGHT_DEPENDENCES,
                                                          "weight_dependence")]
    amplitude_unit = unit if weight_dependence == "additive" else "1"
    parameters = {"A_plus": _weight_quantity(A_plus, amplitude_unit, "A_plus"),
                  "A_minus": _weight_quantity(A_minus, amplitude_unit, "A_minus"),
                  "tau_plus": _time(tau_plus, "tau_plus"), "tau_minus": _time(tau_minus, "tau_minus"),
                  "w_min": _weight_quantity(w_min, unit, "w_min"),
                  "w_max": _weight_quantity(w_max, unit, "w_max")}
    return SynapseModel(
        equations=f"w : {_base_unit(unit)}\n"
                  "dapre/dt = -apre/tau_plus : 1 (event-driven)\n"
                  "dapost/dt = -apost/tau_minus : 1 (event-driven)",
        on_pre=f"{_delivery(target_var)}w = clip(w - {depression}, w_min, w_max)\napre {jump}",
        on_post=f"w = clip(w + {potentiation}, w_min, w_max)\napost {jump}",
        parameters=parameters,
        description=f"Pair-based trace STDP, {pairing} pairing, {weight_dependence} weight dependence.")


def stdp_diehl_cook(*, nu_ee_pre=0.0001, nu_ee_post=0.01, tc_pre_ee="20*ms", tc_post_1_ee="20*ms",
                    tc_post_2_ee="40*ms", wmax_ee=1.0, target_var: str | None = "ge") -> SynapseModel:
    """Diehl & Cook (2015) STDP: a presynaptic trace and two postsynaptic traces.

    Traces reset to 1 at their spike (nearest-spike).  On a presynaptic spike
    (after transmitting ``w``) the weight drops by ``nu_ee_pre * post1``; on a
    postsynaptic spike it grows by ``nu_ee_post * pre * post2`` with ``post2``
    read *before* this spike resets it (so the first post spike alone never
    potentiates); the weight is clipped to ``[0, wmax_ee]`` after each step.
    Closed form for a post spike at ``t`` with last pre spike ``t_pre`` and
    previous post spike ``t_prev``::

        dw = nu_ee_post * exp(-(t - t_pre)/tc_pre_ee) * exp(-(t - t_prev)/tc_post_2_ee)

    and for a pre spike at ``t`` after the last post spike ``t_post``::

        dw = -nu_ee_pre * exp(-(t - t_post)/tc_post_1_ee)

    The names and statements are those of the authors' code (``eqs_stdp_ee``,
    ``eqs_stdp_pre_ee``, ``eqs_stdp_post_ee``), as in
    ``network_specs/diehl_cook_2015.yaml``.

    Parameters
    ----------
    nu_ee_pre, nu_ee_post : float
        Learning rates of depression and potentiation (dimensionless weights).
    tc_pre_ee, tc_post_1_ee, tc_post_2_ee : str or Quantity
        Time constants of the traces ``pre``, ``post1``, ``post2`` (20, 20, 40 ms).
    wmax_ee : float
        Upper weight bound (the lower one is 0).
    target_var : str or None
        Target variable receiving ``w`` (the conductance ``ge``).

    Returns
    -------
    SynapseModel
    """
    return SynapseModel(
        equations="w : 1\n"
                  "post2before : 1\n"
                  "dpre/dt = -pre/tc_pre_ee : 1 (event-driven)\n"
                  "dpost1/dt = -post1/tc_post_1_ee : 1 (event-driven)\n"
                  "dpost2/dt = -post2/tc_post_2_ee : 1 (event-driven)",
        on_pre=f"{_delivery(target_var)}pre = 1.0\nw = clip(w - nu_ee_pre*post1, 0, wmax_ee)",
        on_post="post2before = post2\nw = clip(w + nu_ee_post*pre*post2before, 0, wmax_ee)\n"
                "post1 = 1.0\npost2 = 1.0",
        parameters={"tc_pre_ee": _time(tc_pre_ee, "tc_pre_ee"),
                    "tc_post_1_ee": _time(tc_post_1_ee, "tc_post_1_ee"),
                    "tc_post_2_ee": _time(tc_post_2_ee, "tc_post_2_ee"),
                    "nu_ee_pre": as_expression(nu_ee_pre, field="nu_ee_pre"),
                    "nu_ee_post": as_expression(nu_ee_post, field="nu_ee_post"),
                    "wmax_ee": as_expression(wmax_ee, field="wmax_ee")},
        description="Pair-based STDP with a presynaptic trace and two postsynaptic traces "
                    "(Diehl & Cook 2015).")


#: Library entries (:data:`biosnn.models.library.SYNAPSE_MODELS`): every pairing and weight
#: dependence by name, with default constants that a projection's ``parameters`` override.
LIBRARY = MappingProxyType({
    "stdp_trace": stdp_trace,
    "stdp_trace_nearest": partial(stdp_trace, "nearest"),
    "stdp_trace_multiplicative": partial(stdp_trace, "all", "multiplicative"),
    "stdp_trace_nearest_multiplicative": partial(stdp_trace, "nearest", "multiplicative"),
    "stdp_diehl_cook": stdp_diehl_cook,
})


# ---------------------------------------------------------------------------
# Weight normalisation


def _unit_of_variable(equations: str, var: str, field: str) -> str:
    from brian2 import get_unit

    from biosnn.spec.check import parse_equations
    eqs = parse_equations(equations, field)
    if var not in eqs.names:
        raise SpecError(f"the model has no variable '{var}'", field=field,
                        fix=f"name one of {sorted(eqs.names)}")
    dim = eqs.dimensions[var]
    return "1" if dim.is_dimensionless else repr(get_unit(dim))


def with_weight_sum(model: SynapseModel, var: str = "wsum", weight_var: str = "w") -> SynapseModel:
    """The synapse model plus ``{var}_post = {weight_var} : unit (summed)``.

    Brian2 then writes the sum of the incoming weights of every target neuron
    into the neuron's ``var`` at each time step (in the ``groups`` slot, before
    the neurons' own state update).  The target's model must declare ``var``
    (see :func:`with_sum_variable`); one target variable takes the sum of one
    projection only.
    """
    unit = _unit_of_variable(model.equations, weight_var, "equations")
    return replace(model, equations=f"{model.equations.rstrip()}\n{var}_post = {weight_var} : {unit} (summed)",
                   description=f"{model.description} Sum of incoming {weight_var} into {var}.".strip())


def with_sum_variable(model: NeuronModel, var: str = "wsum", unit: str = "1") -> NeuronModel:
    """The neuron model plus a parameter ``var : unit`` that a summed synaptic variable fills."""
    return replace(model, equations=f"{model.equations.rstrip()}\n{var} : {unit}".lstrip())


def normalization(target, *, var: str = "wsum", weight_var: str = "w", dt: str | None = None,
                  when: str = "groups", order: int = 0) -> Operation:
    """Operation scaling each target neuron's incoming weights to sum to ``target``.

    ``{weight_var} = {weight_var} * target / {var}_post`` on the synapses of a
    projection whose model has the summed variable of :func:`with_weight_sum`;
    neurons whose incoming weights sum to zero keep them unchanged.  Put it in
    the projection's ``operations``.

    Parameters
    ----------
    target : float or str
        The column sum after normalisation (Diehl & Cook: 78), in weight units.
    var, weight_var : str
        The summed variable and the weight variable.
    dt : str, optional
        How often (``"500*ms"``: once per sample); default every time step.
    when, order : str, int
        Schedule slot.  The default (``groups``, 0) runs after Brian2's summed
        variable update (``groups``, -1), so the sum is that of the current
        weights, and before any spike propagation and plasticity of the step
        (``synapses``, or ``groups`` at ``10*order + 5`` for ordered
        projections); an operation in ``start`` would divide by the previous
        step's sum.

    Returns
    -------
    Operation
    """
    total = as_expression(target, field="target")
    code = (f"{weight_var} = {weight_var} * ({total}) / "
            f"({var}_post + int({var}_post == 0*({total}))*({total}))")
    return Operation(code=code, dt=dt, when=when, order=order)


def normalize_incoming(weights, target: float, post=None, n_post: int | None = None) -> np.ndarray:
    """Scale the incoming weights of every target neuron to sum to ``target`` (numpy).

    Diehl & Cook's ``normalize_weights``: each column of the ``(n_pre, n_post)``
    weight matrix is multiplied by ``target / column sum``.  Columns summing to
    zero are left unchanged.

    Parameters
    ----------
    weights : array
        A dense matrix ``(n_pre, n_post)``, or one weight per synapse (e.g.
        ``rec.final["<projection>.w"].values``) together with ``post``.
    target : float
        The column sum after normalisation (weight units).
    post : array of int, optional
        Target neuron index of each synapse (``expand_projection(spec, proj).j``).
    n_post : int, optional
        Number of target neurons (default ``post.max() + 1``).

    Returns
    -------
    numpy.ndarray
        The scaled weights, same shape as ``weights``.
    """
    w = np.asarray(weights, dtype=np.float64)
    if post is None:
        if w.ndim != 2:
            raise SpecError(f"weights has shape {w.shape}; a dense matrix must be 2-D (n_pre, n_post)",
                            field="weights", fix="give a 2-D matrix, or per-synapse weights with 'post'")
        sums = w.sum(axis=0)
        return w * np.where(sums != 0, target / np.where(sums != 0, sums, 1.0), 1.0)
    post = np.asarray(post)
    if w.ndim != 1 or post.shape != w.shape or (post.size and post.dtype.kind not in "iu"):
        raise SpecError(f"per-synapse weights {w.shape} and post indices {post.shape} must be 1-D "
                        "integer-indexed arrays of equal length", field="post",
                        fix="give one target index per synapse")
    n = int(post.max()) + 1 if n_post is None and post.size else int(n_post or 0)
    sums = np.bincount(post, weights=w, minlength=n)
    factor = np.where(sums != 0, target / np.where(sums != 0, sums, 1.0), 1.0)
    return w * factor[post]
