"""One module per target; each returns an ordered ladder of candidates (fastest first)."""
