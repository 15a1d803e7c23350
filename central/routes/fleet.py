"""Routes (filled in later)."""

handlers: list = []
