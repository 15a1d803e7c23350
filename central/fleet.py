"""Fleet status: edge nodes' heartbeats."""

from __future__ import annotations


class Fleet:
    def __init__(self, db) -> None:
        self.db = db
