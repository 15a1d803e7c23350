"""Typed results of the three tasks and their post-processing (pure functions).

The HTTP layer (OpenAI-style routes, KServe) only translates these to wire formats; every
decision about scores, ordering and labels is made here, once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from artifacts.textproc import sigmoid, softmax


@dataclass
class Usage:
    prompt_tokens: int = 0
    truncated: int = 0
    cached: int = 0


@dataclass
class Served:
    """Which model version and backend answered (all items of one request: the same)."""

    model: str
    version: int
    target: str
    usage: Usage = field(default_factory=Usage)


@dataclass
class Embeddings(Served):
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))


@dataclass(frozen=True)
class RankedDocument:
    index: int  # position in the request's documents
    score: float


@dataclass
class Reranked(Served):
    documents: list[str] = field(default_factory=list)  # as validated, request order
    logits: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # request order
    ranked: list[RankedDocument] = field(default_factory=list)  # best first, top_n applied


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    scores: dict[str, float]  # the top_k labels, best first


@dataclass
class Classified(Served):
    probabilities: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    predictions: list[Prediction] = field(default_factory=list)


def probabilities(logits: np.ndarray) -> np.ndarray:
    return softmax(logits.astype(np.float64)).astype(np.float32)


def rank(logits: np.ndarray, *, top_n: int | None, raw_scores: bool) -> list[RankedDocument]:
    """Documents best first; scores are sigmoid(logit) unless ``raw_scores``."""
    logits = logits.astype(np.float64)
    scores = logits if raw_scores else sigmoid(logits)
    order = np.argsort(-scores, kind="stable")[: top_n or len(scores)]
    return [RankedDocument(index=int(i), score=float(scores[i])) for i in order]


def predict(probs: np.ndarray, labels: list[str], top_k: int | None) -> list[Prediction]:
    names = labels or [str(i) for i in range(probs.shape[1])]
    k = top_k or len(names)
    out = []
    for row in probs:
        best = int(row.argmax())
        top = np.argsort(-row, kind="stable")[:k]
        out.append(
            Prediction(
                label=names[best],
                score=float(row[best]),
                scores={names[j]: float(row[j]) for j in top},
            )
        )
    return out
