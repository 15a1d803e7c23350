"""The inference core: :mod:`.engine` (embed / rerank / classify end to end), :mod:`.results`
(typed results and post-processing), :mod:`.result_cache`."""

from edge_runtime.inference.results import (
    Classified,
    Embeddings,
    Prediction,
    RankedDocument,
    Reranked,
    Usage,
)

__all__ = ["Classified", "Embeddings", "Prediction", "RankedDocument", "Reranked", "Usage"]
