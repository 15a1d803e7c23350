"""The edge HTTP API: wire formats only (OpenAI-style, KServe v2), problems, shedding."""
