"""What a run returns, apart from how it is stored or drawn.

- :mod:`biosnn.recording.data`: :class:`Recording`, :class:`SpikeTrains`,
  :class:`StateTrace`, :class:`FinalState` (plain numpy with unit strings);
- :mod:`biosnn.recording.formats`: files (``.npz``, SONATA HDF5, Neo);
- :mod:`biosnn.recording.plots`: rasters, rates and state traces.

``formats`` and ``plots`` import ``data``; ``data`` imports neither at import time
(``Recording.save``/``load`` call into ``formats`` when used).
"""

from biosnn.recording.data import FinalState, Recording, RecordingError, SpikeTrains, SpikeValues, StateTrace

__all__ = ["FinalState", "Recording", "RecordingError", "SpikeTrains", "SpikeValues", "StateTrace"]
