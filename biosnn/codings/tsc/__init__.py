"""Temporal Switch Coding: two spikes per value (Han & Roy 2020).

``coding`` (``PARAMS``, :func:`prepare`, :func:`convert`), ``spec`` (the Brian2 network spec) and
``reference`` (the paper's equations in numpy, exact against the Brian2 run).
"""

from biosnn.codings.tsc.coding import PARAMS, prepare, convert, TSCSNN

__all__ = ['PARAMS', 'prepare', 'convert', 'TSCSNN']
