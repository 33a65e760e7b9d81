"""How a NIR graph's continuous-time ODEs are stepped: explicit discretisation choices and producer presets.

NIR stores ODEs (``tau dv/dt = v_leak - v + r I``) without a time step, and every tool
discretises them its own way.  A :class:`Discretisation` names each choice; :data:`PRESETS`
holds the choices that reproduce each producer's own simulator step for step (read from their
source: snnTorch 1.0, Norse 1.1, SpikingJelly 2.0, sinabs 3.1, Rockpool 3.1).

Known traps (each preset handles them; a graph from an unknown producer needs an explicit choice):

- ``dt`` is not stored in NIR: snnTorch and SpikingJelly export with ``dt = 1e-4 s``, Norse and
  Rockpool with ``1e-3 s``, sinabs counts time in steps (``dt = 1``).
- Norse's exporter writes ``dt * tau`` where NIR means ``tau`` (``tau_stored="tau*dt"``).
- snnTorch writes ``v_reset = 0`` but subtracts the threshold, one step late and after the
  leak (``reset="subtract_next_step"``); sinabs and Rockpool subtract at once; Norse and
  SpikingJelly set ``v = v_reset`` as NIR says (hard reset; nir 1.0.4 and earlier had no
  ``v_reset`` field at all, later versions default it to 0).
- ``>`` vs ``>=`` at the threshold: snnTorch and Norse fire on ``v > v_th``, SpikingJelly,
  sinabs and Rockpool on ``v >= v_th``.
- ``r`` and ``w_in`` conventions: snnTorch/SpikingJelly put ``r = tau_mem/dt`` and
  ``w_in = tau_syn/dt`` so that a forward-Euler step adds the input unscaled; Norse writes
  ``r = w_in = 1`` and adds input spikes to the synaptic current as a jump; Rockpool writes
  ``r = tau exp(-dt/tau)/dt`` and steps with exact exponential decays; Norse's IF adds its
  input unscaled (``r`` per step), SpikingJelly's writes ``r = 1/dt``.
- sinabs and Rockpool emit several spikes per step by default (``MultiSpike``,
  ``max_spikes_per_dt``); NIR and biosnn have 0/1 spikes: build them with ``SingleSpike`` /
  ``max_spikes_per_dt=1``.  Rockpool drops neuron biases on export (``v_leak = 0``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from biosnn.errors import ConversionError

__all__ = ["Discretisation", "PRESETS", "FLAVORS", "resolve", "detect_flavor", "METADATA_KEY"]

#: metadata entry in which to_nir stores the discretisation (JSON), so that re-import steps the same way
METADATA_KEY = "biosnn_discretisation"

_CHOICES = {
    "tau_stored": ("tau", "tau*dt"),
    "method": ("euler", "exact", "rockpool"),
    "current": ("ode", "jump"),
    "integrator_input": ("dt", "step"),
    "threshold": (">", ">="),
    "reset": ("value", "subtract", "subtract_next_step"),
}


@dataclass(frozen=True)
class Discretisation:
    """The explicit choices that turn NIR's ODEs into one update per time step.

    Parameters
    ----------
    dt : float or None
        Time step in seconds (NIR does not store it); ``None`` until given.
    tau_stored : {"tau", "tau*dt"}
        What the file's time constants hold: NIR's ``tau`` in seconds, or ``dt * tau`` (Norse).
    method : {"euler", "exact", "rockpool"}
        Leaky states: forward Euler ``v += dt/tau (v_leak - v + r I)``, the exact
        exponential step ``v = v_inf + (v - v_inf) exp(-dt/tau)`` with ``v_inf = v_leak + r I``,
        or Rockpool's steps (exact decays ``a = exp(-dt/tau)``, input added unscaled through
        ``c = r dt/(tau a)``, which is 1 for Rockpool's ``r = tau a/dt``): LIF ``v = a v + c I``,
        LI ``v = a (v + c I)``, CubaLIF ``I = a_syn (I + w_in S)`` then ``v = a v + c I``.
    current : {"ode", "jump"}
        How input enters the synaptic current ``I`` of CubaLIF/CubaLI (``method`` euler/exact):
        ``ode`` steps ``tau_syn dI/dt = -I + w_in S`` then updates ``v`` with the new ``I``;
        ``jump`` adds ``w_in S`` to ``I``, updates ``v`` with it, then decays ``I`` (Norse).
    integrator_input : {"dt", "step"}
        IF and I: ``v += dt r I`` (the ODE ``dv/dt = r I``) or ``v += r I`` per step (Norse).
    threshold : {">", ">="}
        Spike condition.
    reset : {"value", "subtract", "subtract_next_step"}
        ``v = v_reset`` at the spike (NIR), ``v -= v_threshold`` at the spike, or subtract it in
        the next step after the leak (snnTorch's delayed reset).

    Notes
    -----
    Input of a neuron in step ``n`` is the sum of what its incoming edges carry in that step
    (spikes of upstream layers of the same step, recurrent spikes of step ``n - 1``) plus the
    biases of its Affine/Conv inputs, as in the tools' layer-by-layer loops.
    """

    dt: float | None = None
    tau_stored: str = "tau"
    method: str = "euler"
    current: str = "ode"
    integrator_input: str = "dt"
    threshold: str = ">"
    reset: str = "value"

    def __post_init__(self):
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConversionError(f"discretisation {name}={getattr(self, name)!r} is not one of {choices}")
        if self.dt is not None and (isinstance(self.dt, bool) or not float(self.dt) > 0):
            raise ConversionError(f"dt must be a positive time step in seconds, got {self.dt!r}")
        if self.dt is not None:
            object.__setattr__(self, "dt", float(self.dt))


PRESETS = {
    "nir": Discretisation(),
    "snntorch": Discretisation(dt=1e-4, reset="subtract_next_step", threshold=">"),
    "norse": Discretisation(dt=1e-3, tau_stored="tau*dt", current="jump", integrator_input="step",
                            threshold=">", reset="value"),
    "spikingjelly": Discretisation(dt=1e-4, threshold=">=", reset="value"),
    "sinabs": Discretisation(dt=1.0, method="exact", threshold=">=", reset="subtract"),
    "rockpool": Discretisation(dt=1e-3, method="rockpool", threshold=">=", reset="subtract"),
}
FLAVORS = tuple(PRESETS)


def detect_flavor(graph) -> str | None:
    """The producer named in a NIR graph's metadata (or its node names), else ``None``.

    Looks for a ``producer``/``source``/``framework``/``model_name`` metadata entry naming one of
    :data:`FLAVORS`, then for Rockpool's node names (``0_LIFTorch``).
    """
    meta = dict(getattr(graph, "metadata", None) or {})
    for key in ("producer", "source", "framework", "model_name", "exporter"):
        value = meta.get(key)
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str) and value.lower() in PRESETS:
            return value.lower()
    if any(name.endswith("Torch") and "_" in name for name in graph.nodes):
        return "rockpool"
    return None


def _written_by_biosnn(graph) -> Discretisation | None:
    """The discretisation :func:`~biosnn.frontends.nir.to_nir` stored in a graph's metadata, if any."""
    import json
    text = dict(getattr(graph, "metadata", None) or {}).get(METADATA_KEY)
    if isinstance(text, bytes):
        text = text.decode()
    if not isinstance(text, str):
        return None
    try:
        return Discretisation(**json.loads(text))
    except (TypeError, ValueError) as exc:
        raise ConversionError(f"NIR metadata '{METADATA_KEY}' is not a discretisation: {exc}") from None


def resolve(graph, flavor: str = "auto", dt: float | None = None, **choices) -> tuple[str, Discretisation]:
    """The flavor name and :class:`Discretisation` for ``graph`` (``choices`` override the preset).

    ``auto`` uses, in order: the discretisation a biosnn export stored (metadata
    ``biosnn_discretisation``), the producer named in the metadata, Rockpool's node names, plain NIR.

    Raises
    ------
    ConversionError
        Unknown flavor, or no ``dt`` (plain NIR from an unnamed producer).
    """
    stored = _written_by_biosnn(graph) if flavor == "auto" else None
    if stored is not None:
        flavor, base = "biosnn", stored
    else:
        if flavor == "auto":
            flavor = detect_flavor(graph) or "nir"
        if flavor not in PRESETS:
            raise ConversionError(f"unknown NIR flavor {flavor!r}; use one of {['auto', *FLAVORS]}")
        base = PRESETS[flavor]
    disc = replace(base, **choices) if choices else base
    if dt is not None:
        disc = replace(disc, dt=dt)
    if disc.dt is None:
        raise ConversionError(
            "NIR files do not store the time step and this graph does not name its producer: give dt= "
            f"(seconds) or flavor= one of {list(FLAVORS[1:])} (their exporters' defaults: snntorch and "
            "spikingjelly 1e-4, norse and rockpool 1e-3, sinabs 1 step)")
    return flavor, disc
