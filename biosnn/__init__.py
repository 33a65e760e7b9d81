"""biosnn: biophysical spiking-network simulation on Brian2 (and brian2cuda, NEST)."""

from biosnn.errors import BiosnnError, SpecError, BackendError, ConversionError

__version__ = "0.1.0"

