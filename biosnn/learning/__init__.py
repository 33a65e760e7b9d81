"""Learning rules that change a network spec: Diehl & Cook (2015) unsupervised STDP training.

``biosnn.learning.train(spec, x, y)`` returns a :class:`TrainResult` whose
``spec`` carries the learned weights; ``biosnn.learning.evaluate`` tests it.
"""

from biosnn.learning.diehl_cook import ChunkInfo, EvalResult, TrainResult, evaluate, train
from biosnn.learning.labels import assign_labels, predict

__all__ = ["train", "evaluate", "TrainResult", "EvalResult", "ChunkInfo", "assign_labels", "predict"]
