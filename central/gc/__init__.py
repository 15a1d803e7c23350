"""Retention and garbage collection: versions beyond a per-model keep count, blobs nothing
references, old build logs and audit rows (exported first)."""
