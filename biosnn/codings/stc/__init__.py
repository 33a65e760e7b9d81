"""Spatio-temporal conversion blocks: IF neurons with time-decaying thresholds (STCSNN).

``coding`` (``PARAMS``, :func:`prepare`, :func:`convert`), ``spec`` (the Brian2 network spec), ``torch_model`` (the fine-tunable torch network) and
``reference`` (the paper's equations in numpy, exact against the Brian2 run).
"""

from biosnn.codings.stc.coding import PARAMS, DEFAULTS, prepare, convert, STCSNN

__all__ = ['PARAMS', 'DEFAULTS', 'prepare', 'convert', 'STCSNN']
