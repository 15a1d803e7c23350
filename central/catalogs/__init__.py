"""The catalog queue: product changes in through NATS, re-embedding runs out to embed workers,
vectors back, and the index built from them and shipped with its model version."""
