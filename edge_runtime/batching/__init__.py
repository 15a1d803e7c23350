"""Dynamic batching: the token-budget queue, adaptive admission, the batch-size tuner."""

from edge_runtime.batching.admission import Admission
from edge_runtime.batching.queue import Batcher
from edge_runtime.batching.tuner import SizeTuner

__all__ = ["Admission", "Batcher", "SizeTuner"]
