"""The edge HTTP API (litestar): OpenAI embeddings, rerank, classify, KServe v2, status, metrics."""
