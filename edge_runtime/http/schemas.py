"""Request/response bodies (msgspec): OpenAI embeddings, Cohere/TEI-style rerank, classify."""

from __future__ import annotations

from typing import Literal

import msgspec


class EmbeddingsRequest(msgspec.Struct, kw_only=True):
    input: str | list[str]  # token-id arrays are refused (400): send text
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class EmbeddingItem(msgspec.Struct, kw_only=True):
    index: int
    embedding: list[float] | str
    object: str = "embedding"


class EmbeddingsUsage(msgspec.Struct, kw_only=True):
    prompt_tokens: int
    total_tokens: int
    truncated_inputs: int = 0
    cached_inputs: int = 0


class EmbeddingsResponse(msgspec.Struct, kw_only=True):
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingsUsage
    object: str = "list"


class RerankRequest(msgspec.Struct, kw_only=True):
    query: str
    documents: list[str] | None = None
    texts: list[str] | None = None  # text-embeddings-inference's name for documents
    model: str | None = None
    top_n: int | None = None
    return_documents: bool = False
    raw_scores: bool = False


class RerankDocument(msgspec.Struct, kw_only=True):
    text: str


class RerankResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(msgspec.Struct, kw_only=True):
    model: str
    results: list[RerankResult]
    usage: EmbeddingsUsage


class ClassifyRequest(msgspec.Struct, kw_only=True):
    input: str | list[str]
    model: str | None = None
    top_k: int | None = None


class Prediction(msgspec.Struct, kw_only=True):
    index: int
    label: str
    score: float
    scores: dict[str, float]


class ClassifyResponse(msgspec.Struct, kw_only=True):
    model: str
    data: list[Prediction]
    usage: EmbeddingsUsage
