"""Stochastic STDP on binary synapses (Srinivasan & Roy 2019, ReStoCNet).

A binary weight ``w`` is either ``w_min`` or ``w_max``; spike timing decides
the *probability* that it switches, not the size of a change.  With
``Dt = t_post - t_pre`` the rule is, all constants being parameters:

``p_pot(Dt) = gamma_pot * exp(-Dt / tau_pot)``  for ``0 <= Dt < t_pot``
    potentiation (``w -> w_max``), Hebbian: post shortly after pre;
``p_dep(Dt) = gamma_dep * exp(Dt / tau_dep)``   for ``-t_dep <= Dt < 0``
    depression (``w -> w_min``), Hebbian: post shortly before pre;
``p_dep(Dt) = gamma_anti * (1 - exp(-(Dt - t_anti) / tau_anti))``  for ``Dt >= t_anti``
    anti-Hebbian depression for large positive ``Dt``; a post spike with no
    pre spike before it (since the last reset of ``pre_seen``) counts as
    ``Dt = inf`` and depresses with probability ``gamma_anti``;
``0``  otherwise
    for ``t_pot <= Dt < t_anti`` (the dead zone) and ``Dt < -t_dep``.

Spikes pair with their nearest partner, restricted and symmetric: a post
spike may potentiate only with the last pre spike and only if no other post
spike came after that pre spike; a pre spike may depress (Hebbian) only with
the last post spike and only if it is the first pre spike after it.  Under
rate coding this keeps a train of pre spikes after one post spike from
counting many times.  Anti-Hebbian depression is not restricted: every post
spike at ``Dt >= t_anti`` from the last pre spike (or without one) may
depress.

A pre spike first transmits ``w`` (``target_post += w``), then may switch it.
Potentiation and anti-Hebbian depression are drawn at a post spike,
Hebbian depression at a pre spike, each from one ``rand()`` of Brian2 (so the
rule runs on every backend).  A pre and a post spike in the same time step
count as ``Dt = 0`` with Brian2's default order of the pathways (pre before
post, i.e. a projection without ``order``).

:func:`switching_probability` is the same curve in numpy (the specification
the tests compare measured switching frequencies with).
"""

from __future__ import annotations

import numpy as np

from biosnn.errors import SpecError
from biosnn.spec.model import SynapseModel
from biosnn.spec.values import parse_quantity

__all__ = ["stochastic_binary_stdp", "switching_probability", "STOCHASTIC_STDP_DEFAULTS"]

STOCHASTIC_STDP_DEFAULTS = {
    "w_min": "0", "w_max": "1",
    "gamma_pot": "0.1", "tau_pot": "5*ms", "t_pot": "8*ms",
    "gamma_dep": "0.02", "tau_dep": "5*ms", "t_dep": "8*ms",
    "gamma_anti": "0.05", "tau_anti": "5*ms", "t_anti": "15*ms",
}
"""Default constants (Brian2 quantity strings).  They are this package's choice, tuned on oriented-bar
patches with the patch network of :mod:`biosnn.learning.stochastic_stdp` (1 ms steps, Bernoulli inputs
at 0.3 per step); they are not ReStoCNet's published values."""

_PROBABILITIES = ("gamma_pot", "gamma_dep", "gamma_anti")
_TIMES = ("tau_pot", "t_pot", "tau_dep", "t_dep", "tau_anti", "t_anti")


def _constants(parameters: dict) -> dict:
    """The merged constants as floats (SI), validated."""
    unknown = set(parameters) - set(STOCHASTIC_STDP_DEFAULTS)
    if unknown:
        raise SpecError(f"unknown stochastic STDP parameter(s) {sorted(unknown)}",
                        fix=f"use some of {sorted(STOCHASTIC_STDP_DEFAULTS)}")
    merged = {**STOCHASTIC_STDP_DEFAULTS, **{k: str(v) for k, v in parameters.items()}}
    values = {k: parse_quantity(v, field=f"parameters.{k}") for k, v in merged.items()}
    for k in _PROBABILITIES:
        dimensionless = getattr(values[k], "is_dimensionless", True)
        if not dimensionless or not 0.0 <= float(values[k]) <= 1.0:
            raise SpecError(f"{k} is a switching probability and must be a number in [0, 1], got {merged[k]}",
                            field=f"parameters.{k}", fix="give e.g. 0.1")
    from brian2 import have_same_dimensions, second
    for k in _TIMES:
        if not have_same_dimensions(values[k], second):
            raise SpecError(f"{k} must be a time, got {merged[k]}", field=f"parameters.{k}",
                            fix="give e.g. '5*ms'")
        seconds = float(values[k] / second)
        if not seconds >= 0 or (k.startswith("tau") and seconds == 0):
            raise SpecError(f"{k} must be {'positive' if k.startswith('tau') else 'non-negative'}, "
                            f"got {merged[k]}", field=f"parameters.{k}", fix="give e.g. '5*ms'")
        values[k] = seconds
    if values["t_pot"] > values["t_anti"]:
        raise SpecError(f"the potentiation window t_pot={merged['t_pot']} ends after the anti-Hebbian "
                        f"region starts (t_anti={merged['t_anti']})", field="parameters.t_pot",
                        fix="choose t_pot <= t_anti; the dead zone is [t_pot, t_anti)")
    if not float(values["w_min"]) < float(values["w_max"]):
        raise SpecError(f"w_min={merged['w_min']} must be below w_max={merged['w_max']}",
                        field="parameters.w_min", fix="give the two binary weight levels in order")
    return {"merged": merged, **{k: float(values[k]) for k in values}}


def stochastic_binary_stdp(target: str = "v", **parameters) -> SynapseModel:
    """A binary synapse with stochastic STDP (see the module docstring for the rule).

    Parameters
    ----------
    target : str
        Postsynaptic variable a presynaptic spike increments by ``w``
        (dimensionless, like the weight).
    **parameters
        Constants overriding :data:`STOCHASTIC_STDP_DEFAULTS`: ``w_min``,
        ``w_max`` (the two weight levels, dimensionless), ``gamma_pot``,
        ``gamma_dep``, ``gamma_anti`` (peak switching probabilities, in
        [0, 1]), ``tau_pot``, ``tau_dep``, ``tau_anti`` (time constants of the
        probability curves), ``t_pot`` (end of the potentiation window = start
        of the dead zone), ``t_anti`` (end of the dead zone), ``t_dep`` (width
        of the Hebbian depression window); times as Brian2 quantity strings
        (``"5*ms"``).

    Returns
    -------
    SynapseModel
        State per synapse: ``w`` (the binary weight), ``t_pre_last`` /
        ``t_post_last`` (time of the last pre / post spike) and ``pre_seen`` /
        ``post_seen`` (1 once such a spike happened; a training loop resets
        them to 0 between presentations so that spikes of an earlier
        presentation do not pair).

    Raises
    ------
    SpecError
        For unknown parameters, probabilities outside [0, 1], non-time
        windows, ``t_pot > t_anti`` or ``w_min >= w_max``.
    """
    if not isinstance(target, str) or not target.isidentifier():
        raise SpecError(f"target must be the name of a postsynaptic variable, got {target!r}",
                        fix="give e.g. 'v'")
    merged = _constants(parameters)["merged"]
    on_pre = (f"{target}_post += w\n"
              "lag_pre_post = t - t_post_last\n"
              "p_hebb = post_seen * int(t_pre_last < t_post_last or pre_seen < 0.5) * int(lag_pre_post > 0*ms)"
              " * int(lag_pre_post <= t_dep) * gamma_dep * exp(-lag_pre_post/tau_dep)\n"
              "w = w - (w - w_min) * int(rand() < p_hebb)\n"
              "t_pre_last = t\n"
              "pre_seen = 1")
    on_post = ("lag_post_pre = t - t_pre_last\n"
               "p_up = pre_seen * int(t_post_last < t_pre_last or post_seen < 0.5) * int(lag_post_pre < t_pot)"
               " * gamma_pot * exp(-lag_post_pre/tau_pot)\n"
               "p_anti = int(lag_post_pre >= t_anti or pre_seen < 0.5) * gamma_anti * "
               "(1 - pre_seen * exp(-(lag_post_pre - t_anti)/tau_anti))\n"
               "u_switch = rand()\n"
               "w = w + (w_max - w) * int(u_switch < p_up) - (w - w_min) * int(u_switch < p_anti)\n"
               "t_post_last = t\n"
               "post_seen = 1")
    return SynapseModel(
        equations="w : 1\nt_pre_last : second\nt_post_last : second\npre_seen : 1\npost_seen : 1",
        on_pre=on_pre, on_post=on_post, parameters=merged,
        description="Binary synapse with stochastic STDP: potentiation for small positive t_post - t_pre, "
                    "depression for small negative (Hebbian) and large positive (anti-Hebbian) differences, "
                    "a dead zone in between (Srinivasan & Roy 2019, ReStoCNet).")


def switching_probability(delta_t, **parameters) -> tuple[np.ndarray, np.ndarray]:
    """The specified switching probabilities as functions of ``Dt = t_post - t_pre``.

    Parameters
    ----------
    delta_t : array_like
        Spike-time differences in seconds; ``numpy.inf`` means a post spike
        with no pre spike before it.
    **parameters
        As for :func:`stochastic_binary_stdp`.

    Returns
    -------
    p_pot, p_dep : numpy.ndarray
        Probability that a synapse at ``w_min`` switches to ``w_max``, and
        that one at ``w_max`` switches to ``w_min``, for one spike pair.
    """
    c = _constants(parameters)
    d = np.asarray(delta_t, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        p_pot = np.where((d >= 0) & (d < c["t_pot"]),
                         c["gamma_pot"] * np.exp(-np.clip(d, 0, None) / c["tau_pot"]), 0.0)
        hebb = np.where((d < 0) & (d >= -c["t_dep"]),
                        c["gamma_dep"] * np.exp(np.clip(d, None, 0) / c["tau_dep"]), 0.0)
        anti = np.where(d >= c["t_anti"],
                        c["gamma_anti"] * (1 - np.exp(-np.clip(d - c["t_anti"], 0, None) / c["tau_anti"])), 0.0)
    return p_pot, hebb + anti
