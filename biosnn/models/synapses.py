"""Synapse models as Brian2 equation strings."""

from __future__ import annotations

from biosnn.spec.model import SynapseModel

__all__ = ["delta_voltage", "delta", "conductance_exc", "conductance_inh"]


def delta_voltage(**parameters) -> SynapseModel:
    """Instantaneous voltage jump: ``v_post += w`` with ``w`` in volt."""
    return SynapseModel(equations="w : volt", on_pre="v_post += w", parameters=parameters,
                        description="Delta synapse (voltage jump).")


def delta(**parameters) -> SynapseModel:
    """Dimensionless jump ``v_post += w`` (for dimensionless membrane potentials)."""
    return SynapseModel(equations="w : 1", on_pre="v_post += w", parameters=parameters,
                        description="Delta synapse on a dimensionless potential.")


def conductance_exc(**parameters) -> SynapseModel:
    """Excitatory conductance jump ``ge_post += w`` (``w`` dimensionless, in units of the model's ge)."""
    return SynapseModel(equations="w : 1", on_pre="ge_post += w", parameters=parameters,
                        description="Excitatory conductance synapse.")


def conductance_inh(**parameters) -> SynapseModel:
    """Inhibitory conductance jump ``gi_post += w``."""
    return SynapseModel(equations="w : 1", on_pre="gi_post += w", parameters=parameters,
                        description="Inhibitory conductance synapse.")
