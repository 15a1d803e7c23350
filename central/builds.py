"""Build jobs (filled in by the build-service issue)."""

from __future__ import annotations


class BuildService:
    def __init__(self, service) -> None:
        self.service = service

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None
