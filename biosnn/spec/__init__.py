"""The network spec (biosnn's intermediate representation) and its YAML files."""

from biosnn.spec.model import (AllToAll, Condition, Conv2D, CurrentInput, Explicit, NetworkSpec, NeuronModel,
                               OneToOne, Operation, PoissonInput, Pool2D, Population, Projection, RandomP,
                               RateMonitor, Segment,
                               SpikeMonitor, SpikeTimesInput, StateMonitor, SynapseModel,
                               TimedArraySpec)
from biosnn.spec.values import ArrayValue, format_quantity, parse_quantity
from biosnn.spec.yaml_io import load_spec, save_spec

__all__ = ["AllToAll", "ArrayValue", "Condition", "Conv2D", "CurrentInput", "Explicit", "NetworkSpec",
           "NeuronModel", "OneToOne", "Operation", "PoissonInput", "Pool2D", "Population", "Projection",
           "RandomP", "RateMonitor", "Segment", "SpikeMonitor", "SpikeTimesInput", "StateMonitor", "SynapseModel",
           "TimedArraySpec", "format_quantity", "load_spec", "parse_quantity", "save_spec"]
