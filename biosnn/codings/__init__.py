"""The spike codings of ANN-to-SNN conversion, one package each.

Every coding package ``biosnn.codings.<coding>`` has ``coding`` (``PARAMS``,
``prepare`` and ``convert``), ``spec`` (the :class:`~biosnn.spec.NetworkSpec`
builder) and ``reference`` (an exact numpy/torch reference).  The machinery they
share (calibration, connections, the ``SNN`` run loop) is in
:mod:`biosnn.conversion`; the torch front-end in :mod:`biosnn.frontends`.
"""

CODINGS = ("rate", "tdsnn", "tsc", "tpc", "stc")
