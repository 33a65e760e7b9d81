"""biosnn: biophysical spiking-network simulation on Brian2 (and brian2cuda).

Network specs (equation strings with units) come from YAML files
(:func:`load`) or from trained torch models (:func:`convert`); backends build
and run them (:func:`biosnn.backends.get_backend`) and return recordings.
"""

import os as _os
import warnings as _warnings

from biosnn.errors import BackendError, BiosnnError, ConversionError, SpecError

__version__ = "0.1.0"

__all__ = ["BackendError", "BiosnnError", "ConversionError", "SpecError", "convert", "prepare", "load",
           "get_backend", "from_nir", "to_nir", "run_nir", "__version__"]


def load(path, *, allow_outside=False, memory_limit=None):
    """Read a network spec (YAML) -- see :func:`biosnn.spec.load_spec`."""
    from biosnn.spec import load_spec
    return load_spec(path, allow_outside=allow_outside, memory_limit=memory_limit)


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


def from_nir(*args, **kwargs):
    """A network spec from a NIR graph -- see :func:`biosnn.frontends.nir.from_nir`."""
    from biosnn.frontends.nir import from_nir as _from_nir
    return _from_nir(*args, **kwargs)


def to_nir(spec_or_snn):
    """A NIR graph from a spec imported from NIR -- see :func:`biosnn.frontends.nir.to_nir`."""
    from biosnn.frontends.nir import to_nir as _to_nir
    return _to_nir(spec_or_snn)


def run_nir(graph_or_path, x, dt=None, flavor="auto", backend="runtime"):
    """Run a NIR graph, spikes per NIR node -- see :func:`biosnn.frontends.nir.run_nir`."""
    from biosnn.frontends.nir import run_nir as _run_nir
    return _run_nir(graph_or_path, x, dt=dt, flavor=flavor, backend=backend)


def _warn_brian_preferences() -> None:
    """Brian2 ``eval``\\ s a ``brian_preferences`` file of the working directory on import (no opt-out)."""
    if _os.path.isfile("brian_preferences"):
        _warnings.warn(f"{_os.path.abspath('brian_preferences')} exists: Brian2 runs the Python expressions in it "
                       "when it is imported (Brian2 offers no switch to skip it). Run biosnn from another "
                       "directory unless you wrote that file.", RuntimeWarning, stacklevel=3)


_warn_brian_preferences()
