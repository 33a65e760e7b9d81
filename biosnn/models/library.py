"""The library of named models a spec can refer to by name.

These tables are constant (the package's own models); a user's own models go
in the spec's ``neuron_models`` / ``synapse_models`` sections, never in here.
"""

from __future__ import annotations

from types import MappingProxyType

from biosnn.models import neurons, synapses
from biosnn.models import plasticity
from biosnn.models import plasticity_stochastic

__all__ = ["NEURON_MODELS", "SYNAPSE_MODELS"]

NEURON_MODELS = MappingProxyType({
    "if_subtract": neurons.if_subtract,
    "lif": neurons.lif,
    "adaptive_lif_dc": neurons.adaptive_lif_dc,
    "inhibitory_lif_dc": neurons.inhibitory_lif_dc,
    "ticking": neurons.ticking,
    "if_decaying_threshold": neurons.if_decaying_threshold,
})

SYNAPSE_MODELS = MappingProxyType({
    "delta_voltage": synapses.delta_voltage,
    "delta": synapses.delta,
    "conductance_exc": synapses.conductance_exc,
    "conductance_inh": synapses.conductance_inh,
    **plasticity.LIBRARY,
    "stochastic_binary_stdp": plasticity_stochastic.stochastic_binary_stdp,
})
