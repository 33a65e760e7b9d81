"""Neuron and synapse models in Brian2 equation strings (see :mod:`biosnn.models.library`)."""
