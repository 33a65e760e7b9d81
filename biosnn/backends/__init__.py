"""Simulation backends: the only part of biosnn that touches Brian2 devices.

:func:`get_backend` gives a backend by name; ``backend.build(spec)`` returns a
simulation whose ``run()`` returns a :class:`~biosnn.recording.Recording`.
"""

from biosnn.backends.registry import BACKEND_NAMES, available_backends, get_backend

__all__ = ["BACKEND_NAMES", "available_backends", "get_backend"]
