"""Temporal Pattern Coding: binary, bit-serial spikes (Rueckauer & Liu 2021).

``coding`` (``PARAMS``, :func:`prepare`, :func:`convert`), ``spec`` (the Brian2 network spec) and
``reference`` (the paper's equations in numpy, exact against the Brian2 run).
"""

from biosnn.codings.tpc.coding import PARAMS, prepare, calibrate, convert, TPCSNN, TPCModel, QuantAct

__all__ = ['PARAMS', 'prepare', 'calibrate', 'convert', 'TPCSNN', 'TPCModel', 'QuantAct']
