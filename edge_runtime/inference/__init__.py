"""The inference core: embed / rerank / classify as typed results, the result cache."""

from edge_runtime.inference.engine import Inference, check_texts
from edge_runtime.inference.results import (
    Classified,
    Embeddings,
    Prediction,
    RankedDocument,
    Reranked,
    Usage,
)

__all__ = [
    "Classified",
    "Embeddings",
    "Inference",
    "Prediction",
    "RankedDocument",
    "Reranked",
    "Usage",
    "check_texts",
]
