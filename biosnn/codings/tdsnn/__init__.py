"""TDSNN reverse temporal coding with a ticking neuron and LIF leak (Zhang et al. 2019).

``coding`` (``PARAMS``, :func:`prepare`, :func:`convert`), ``spec`` (the Brian2 network spec) and
``reference`` (the paper's equations in numpy, exact against the Brian2 run).
"""

from biosnn.codings.tdsnn.coding import PARAMS, prepare, convert, TDSNN, TDSNNActivation, strip_activations

__all__ = ['PARAMS', 'prepare', 'convert', 'TDSNN', 'TDSNNActivation', 'strip_activations']
