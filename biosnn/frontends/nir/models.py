"""Equation-string models of NIR's nodes under a :class:`~biosnn.frontends.nir.flavors.Discretisation`.

Every NIR node becomes a population.  Its state and per-neuron NIR parameters are Brian2
variables with units (time constants in ``second``, ``r`` of IF/I in ``1/second`` read as the
number NIR stores); one operation per step, in the population's schedule layer, applies the
discretised ODE to the input ``x`` (summed by the incoming projections in that step) plus the
bias ``b`` and clears ``x``.  Static nodes (Affine, Conv, pooling, ...) are relays: ``y = x + b``,
sent on when non-zero; their weights sit on the projections into them.
"""

from __future__ import annotations

from biosnn.spec.model import NeuronModel

__all__ = ["PARAMETERS", "node_model", "delay_model", "SPIKING"]

# NIR parameter fields per neuron type, with their Brian2 unit
PARAMETERS = {
    "IF": {"r": "1", "v_threshold": "1", "v_reset": "1"},
    "LIF": {"tau": "second", "r": "1", "v_leak": "1", "v_threshold": "1", "v_reset": "1"},
    "CubaLIF": {"tau_syn": "second", "tau_mem": "second", "r": "1", "v_leak": "1", "v_threshold": "1",
                "v_reset": "1", "w_in": "1"},
    "LI": {"tau": "second", "r": "1", "v_leak": "1"},
    "CubaLI": {"tau_syn": "second", "tau_mem": "second", "r": "1", "v_leak": "1", "w_in": "1"},
    "I": {"r": "1"},
    "Threshold": {"threshold": "1"},
}
SPIKING = ("IF", "LIF", "CubaLIF", "Threshold")

_ODE = {
    "IF": "dv/dt = r I",
    "LIF": "tau dv/dt = (v_leak - v) + r I",
    "CubaLIF": "tau_syn dI/dt = -I + w_in S;  tau_mem dv/dt = (v_leak - v) + r I",
    "LI": "tau dv/dt = (v_leak - v) + r I",
    "CubaLI": "tau_syn dI/dt = -I + w_in S;  tau_mem dv/dt = (v_leak - v) + r I",
    "I": "dv/dt = r I",
    "Threshold": "z = H(I - threshold)",
}


def _leak(var, tau, target, disc) -> str:
    """One step of ``tau d var/dt = target - var``."""
    if disc.method == "euler":
        return f"{var} = {var} + dt/{tau}*(({target}) - {var})"
    return f"{var} = ({target}) + ({var} - ({target}))*exp(-dt/{tau})"


def _rockpool(kind: str, X: str) -> list[str]:
    """Rockpool's own steps: exact decays, inputs added unscaled (its exporter writes ``r = tau exp(-dt/tau)/dt``,
    so ``c = r dt/(tau exp(-dt/tau))`` is 1): LIFNeuronTorch decays then adds, ExpSynTorch adds then decays,
    LIFTorch adds to and decays ``I``, then decays ``v`` and adds ``I``."""
    c = "r*dt/({tau}*exp(-dt/{tau}))"
    if kind == "LIF":
        return [f"v = v*exp(-dt/tau) + {c.format(tau='tau')}*{X} + v_leak*(1 - exp(-dt/tau))"]
    if kind == "LI":
        return [f"v = (v + {c.format(tau='tau')}*{X})*exp(-dt/tau) + v_leak*(1 - exp(-dt/tau))"]
    return [f"I = (I + w_in*{X})*exp(-dt/tau_syn)",
            f"v = v*exp(-dt/tau_mem) + {c.format(tau='tau_mem')}*I + v_leak*(1 - exp(-dt/tau_mem))"]


def _update(kind: str, disc) -> list[str]:
    X = "(x + b)"
    if kind == "Threshold":
        return [f"u = {X}"]
    if kind in ("IF", "I"):
        scale = "(dt/second)*r" if disc.integrator_input == "dt" else "r"
        return [f"v = v + {scale}*{X}"]
    if disc.method == "rockpool":
        return _rockpool(kind, X)
    if kind in ("LIF", "LI"):
        return [_leak("v", "tau", f"v_leak + r*{X}", disc)]
    v_step = _leak("v", "tau_mem", "v_leak + r*I", disc)
    if disc.current == "ode":
        return [_leak("I", "tau_syn", f"w_in*{X}", disc), v_step]
    decay = "I = I - dt/tau_syn*I" if disc.method == "euler" else "I = I*exp(-dt/tau_syn)"
    return [f"I = I + w_in*{X}", v_step, decay]


def node_model(kind: str, disc, description: str) -> tuple[NeuronModel, str]:
    """``(model, update code)`` of a NIR neuron type, or of a relay (``kind="relay"``) or the input.

    The update code runs once per step before the threshold (an operation in the population's
    schedule layer).
    """
    if kind == "input":
        return NeuronModel("y : 1", threshold="y != 0", description=description), ""
    if kind == "relay":
        return (NeuronModel("y : 1\nx : 1\nb : 1 (constant)", threshold="y != 0", description=description),
                "y = x + b\nx = 0")
    params = PARAMETERS[kind]
    state = {"Threshold": ["u : 1"], "CubaLIF": ["v : 1", "I : 1"], "CubaLI": ["v : 1", "I : 1"]}.get(kind, ["v : 1"])
    eqs = state + ["x : 1", "b : 1 (constant)"] + [f"{p} : {u} (constant)" for p, u in params.items()]
    code = _update(kind, disc)
    threshold = reset = None
    if kind == "Threshold":
        threshold = f"u {disc.threshold} threshold"
    elif kind in SPIKING:
        threshold = f"v {disc.threshold} v_threshold"
        if disc.reset == "value":
            reset = "v = v_reset"
        elif disc.reset == "subtract":
            reset = "v = v - v_threshold"
        else:
            eqs.append("rs : 1")
            code.append("v = v - v_threshold*rs\nrs = 0")
            reset = "rs = 1"
    else:  # non-spiking: sends its v every step it is non-zero
        eqs.append("y : 1")
        code.append("y = v")
        threshold = "y != 0"
    code.append("x = 0")
    text = f"{description}; NIR ODE: {_ODE[kind]}; step: " + "; ".join(c.replace(chr(10), "; ") for c in code)
    return NeuronModel("\n".join(eqs), threshold=threshold, reset=reset, description=text), "\n".join(code)


def delay_model(longest: int, description: str) -> tuple[NeuronModel, str]:
    """``(model, update code)`` of a NIR Delay: a shift register ``h_0 .. h_longest`` per neuron, ``y = h_k``.

    ``k`` (integer, per neuron) is the delay in steps, so ``y(n) = x(n - k)`` with no spike queue (a
    delayed synapse would read the source's value when it arrives, not when it was sent).
    """
    regs = [f"h_{j} : 1" for j in range(longest + 1)]
    shift = [f"h_{j} = h_{j - 1}" for j in range(longest, 0, -1)] + ["h_0 = x + b"]
    pick = " + ".join(f"h_{j}*int(k == {j})" for j in range(longest + 1))
    code = shift + [f"y = {pick}", "x = 0"]
    eqs = ["y : 1", "x : 1", "b : 1 (constant)", "k : integer (constant)"] + regs
    return (NeuronModel("\n".join(eqs), threshold="y != 0",
                        description=f"{description}; NIR: y(t) = x(t - delay); step: shift register, y = h_k"),
            "\n".join(code))
