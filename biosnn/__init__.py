"""biosnn: biophysical spiking-network simulation on Brian2 (and brian2cuda).

Network specs (equation strings with units) come from YAML files
(:func:`load`) or from trained torch models (:func:`convert`); backends build
and run them (:func:`biosnn.backends.get_backend`) and return recordings.
"""

from biosnn.errors import BackendError, BiosnnError, ConversionError, SpecError

__version__ = "0.1.0"

__all__ = ["BackendError", "BiosnnError", "ConversionError", "SpecError", "convert", "prepare", "load",
           "get_backend", "__version__"]


def load(path):
    """Read a network spec (YAML) -- see :func:`biosnn.spec.load_spec`."""
    from biosnn.spec import load_spec
    return load_spec(path)


def convert(*args, **kwargs):
    """Convert a torch ANN to a spiking network -- see :func:`biosnn.conversion.api.convert`."""
    from biosnn.conversion.api import convert as _convert
    return _convert(*args, **kwargs)


def prepare(*args, **kwargs):
    """The torch model to (re)train for a coding -- see :func:`biosnn.conversion.api.prepare`."""
    from biosnn.conversion.api import prepare as _prepare
    return _prepare(*args, **kwargs)


def get_backend(name, **options):
    """A simulation backend by name -- see :func:`biosnn.backends.base.get_backend`."""
    from biosnn.backends.registry import get_backend as _get
    return _get(name, **options)
