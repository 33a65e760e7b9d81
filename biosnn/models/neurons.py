"""Neuron models as Brian2 equation strings with units.

Each function returns a :class:`~biosnn.spec.model.NeuronModel` whose constants
can be overridden per population (``Population(parameters=...)``).  Every model
has an analytic solution that the test-suite compares the simulation with.
"""

from __future__ import annotations

from biosnn.spec.model import NeuronModel

__all__ = ["if_subtract", "lif", "adaptive_lif_dc", "inhibitory_lif_dc", "ticking",
           "if_decaying_threshold"]


def if_subtract(**parameters) -> NeuronModel:
    """Integrate-and-fire neuron with reset by subtraction.

    ``dv/dt = I/C_m``; on ``v >= v_th`` a spike is emitted and ``v -= v_th``,
    so no charge is lost (the neuron of rate-coded ANN-to-SNN conversion).
    Under a constant current the k-th spike comes at the first step with
    ``v(t) = I t / C_m >= k v_th``.

    Parameters
    ----------
    **parameters : str
        Values that replace the defaults (Brian2 quantity strings). Defaults:

        C_m : 250 pF
            Membrane capacitance.
        v_th : 20 mV
            Threshold above rest (the reset subtracts it).
    """
    p = {"C_m": "250*pF", "v_th": "20*mV"}
    p.update(parameters)
    return NeuronModel(
        equations="dv/dt = I/C_m : volt\nI : amp",
        threshold="v >= v_th", reset="v -= v_th", parameters=p, method="euler",
        description="Integrate-and-fire with reset by subtraction (Rueckauer et al. 2017).")


def lif(**parameters) -> NeuronModel:
    """Leaky integrate-and-fire neuron with reset to a value and a refractory period.

    ``tau_m dv/dt = E_L - v + R_m I``; on ``v > v_th``: ``v = v_reset``, then
    ``tau_ref`` refractory.  Under a constant current with
    ``R_m I > v_th - E_L`` the interspike interval is
    ``tau_ref + tau_m ln((E_L + R_m I - v_reset) / (E_L + R_m I - v_th))``.

    Parameters
    ----------
    **parameters : str
        Values that replace the defaults (Brian2 quantity strings). Defaults:

        E_L : -65 mV, v_th : -50 mV, v_reset : -65 mV, tau_m : 20 ms,
        R_m : 100 Mohm, tau_ref : 2 ms
    """
    p = {"E_L": "-65*mV", "v_th": "-50*mV", "v_reset": "-65*mV", "tau_m": "20*ms",
         "R_m": "100*Mohm", "tau_ref": "2*ms"}
    p.update(parameters)
    return NeuronModel(
        equations="dv/dt = (E_L - v + R_m*I)/tau_m : volt (unless refractory)\nI : amp",
        threshold="v > v_th", reset="v = v_reset", refractory="tau_ref", parameters=p,
        method="exact", description="Leaky integrate-and-fire with reset to v_reset.")


def adaptive_lif_dc(**parameters) -> NeuronModel:
    """Diehl & Cook (2015) excitatory neuron: conductance LIF with adaptive threshold.

    Conductances ``ge``, ``gi`` are dimensionless (in nS) and decay with
    ``tau_ge``, ``tau_gi``; the homeostatic threshold ``theta`` grows by
    ``theta_plus`` at each spike and decays with ``tau_theta``, so
    ``theta(t) = theta(0) exp(-t/tau_theta) + theta_plus sum_k exp(-(t - t_k)/tau_theta)``.
    The neuron fires when ``v > theta - offset + v_thresh`` and ``timer > refrac``.
    Set ``tau_theta`` very large (the paper: 1e7 ms) during training and freeze
    ``theta`` at test time with ``theta_plus = 0``.

    Parameters
    ----------
    **parameters : str
        Values that replace the defaults (Brian2 quantity strings). Defaults, from the paper's code:

        v_rest : -65 mV, v_reset : -65 mV, v_thresh : -52 mV, offset : 20 mV,
        tau_m : 100 ms, tau_ge : 1 ms, tau_gi : 2 ms, E_exc : 0 mV, E_inh : -100 mV,
        theta_plus : 0.05 mV, tau_theta : 1e7 ms, refrac : 5 ms
    """
    p = {"v_rest": "-65*mV", "v_reset": "-65*mV", "v_thresh": "-52*mV", "offset": "20*mV",
         "tau_m": "100*ms", "tau_ge": "1*ms", "tau_gi": "2*ms", "E_exc": "0*mV",
         "E_inh": "-100*mV", "theta_plus": "0.05*mV", "tau_theta": "1e7*ms", "refrac": "5*ms"}
    p.update(parameters)
    return NeuronModel(
        equations="""
dv/dt = ((v_rest - v) + ge*(E_exc - v) + gi*(E_inh - v)) / tau_m : volt (unless refractory)
dge/dt = -ge/tau_ge : 1
dgi/dt = -gi/tau_gi : 1
dtheta/dt = -theta/tau_theta : volt
dtimer/dt = 1 : second
""".strip(),
        threshold="(v > (theta - offset + v_thresh)) and (timer > refrac)",
        reset="v = v_reset\ntheta += theta_plus\ntimer = 0*ms",
        refractory="refrac", parameters=p, method="euler",
        description="Diehl & Cook 2015 excitatory neuron with homeostatic threshold theta.")


def inhibitory_lif_dc(**parameters) -> NeuronModel:
    """Diehl & Cook (2015) inhibitory neuron (conductance LIF, fixed threshold).

    Parameters
    ----------
    **parameters : str
        Values that replace the defaults (Brian2 quantity strings). Defaults:

        v_rest : -60 mV, v_reset : -45 mV, v_thresh : -40 mV, tau_m : 10 ms,
        tau_ge : 1 ms, tau_gi : 2 ms, E_exc : 0 mV, E_inh : -85 mV, refrac : 2 ms
    """
    p = {"v_rest": "-60*mV", "v_reset": "-45*mV", "v_thresh": "-40*mV", "tau_m": "10*ms",
         "tau_ge": "1*ms", "tau_gi": "2*ms", "E_exc": "0*mV", "E_inh": "-85*mV", "refrac": "2*ms"}
    p.update(parameters)
    return NeuronModel(
        equations="""
dv/dt = ((v_rest - v) + ge*(E_exc - v) + gi*(E_inh - v)) / tau_m : volt (unless refractory)
dge/dt = -ge/tau_ge : 1
dgi/dt = -gi/tau_gi : 1
""".strip(),
        threshold="v > v_thresh", reset="v = v_reset", refractory="refrac", parameters=p,
        method="euler", description="Diehl & Cook 2015 inhibitory neuron.")


def ticking(**parameters) -> NeuronModel:
    """A ticking neuron: fires once every time step while ``t_start <= t < t_stop``.

    Used as the clock of temporal codes (TDSNN's active period).  The
    comparison is made half a step early, so ``t_start = k*dt`` fires from
    step ``k`` on exactly, whatever the rounding of ``t``.

    Parameters
    ----------
    **parameters : str
        Values that replace the defaults (Brian2 quantity strings). Defaults:

        t_start : 0 ms, t_stop : 1e9 s
    """
    p = {"t_start": "0*ms", "t_stop": "1e9*second"}
    p.update(parameters)
    return NeuronModel(equations="", threshold="t >= t_start - dt/2 and t < t_stop - dt/2",
                       parameters=p, description="Ticking neuron (Zhang et al. 2019, TDSNN).")


def if_decaying_threshold(**parameters) -> NeuronModel:
    """Integrate-and-fire neuron with a time-decaying threshold, reset by subtraction.

    ``theta(t) = theta0 exp(-(t - t0)/tau_theta)`` where ``t0`` (shared) marks
    the start of the current window (spatio-temporal conversion blocks).
    Under a constant current from ``v = 0`` the first spike of the continuous
    model comes at ``t* = tau_theta W(theta0 C_m / (I tau_theta))``
    (``W``: Lambert's function).

    Parameters
    ----------
    **parameters : str
        Values that replace the defaults (Brian2 quantity strings). Defaults:

        C_m : 250 pF, theta0 : 20 mV, tau_theta : 2 ms
    """
    p = {"C_m": "250*pF", "theta0": "20*mV", "tau_theta": "2*ms"}
    p.update(parameters)
    return NeuronModel(
        equations="dv/dt = I/C_m : volt\nI : amp\ntheta = theta0*exp(-(t - t0)/tau_theta) : volt\n"
                  "t0 : second (shared)",
        threshold="v >= theta", reset="v -= theta", parameters=p, method="euler",
        description="IF with time-decaying threshold (STCSNN).")
