"""Rate coding: IF neurons with reset by subtraction, threshold balancing (max, percentile, spike-norm).

``coding`` (``PARAMS``, :func:`prepare`, :func:`convert`), ``spec`` (the Brian2 network spec) and
``reference`` (the rate-coded IF network in numpy, exact against the Brian2 run).
"""

from biosnn.codings.rate.coding import PARAMS, prepare, convert

__all__ = ['PARAMS', 'prepare', 'convert']
