"""Torch ANN -> spiking network: tracing (:mod:`.graph`), threshold balancing (:mod:`.calibrate`),
exact numpy references (:mod:`.reference`), the Brian2 spec (:mod:`.rate_spec`) and runs (:mod:`.snn`)."""
