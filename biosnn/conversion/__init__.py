"""What every coding shares: the public ``prepare``/``convert`` (:mod:`.api`), threshold
balancing (:mod:`.calibrate`), weighted connections (:mod:`.connect`) and the ``SNN`` run loop
(:mod:`.snn`).  The codings themselves are in :mod:`biosnn.codings`, the torch tracer in
:mod:`biosnn.frontends.torch_graph`."""
