"""Content-addressed blob storage behind a small interface (local directory now, OCI later).

A blob is written to a temp file while its sha256 is computed, fsynced, and only then renamed
to its digest path: a crash or client disconnect mid-upload leaves no visible blob.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio

from artifacts.atomic import fsync_dir
from artifacts.digests import digest_of, hex_of
from artifacts.errors import DigestMismatchError

CHUNK = 1 << 20
STALE_PARTIAL_S = 3600.0  # an upload's temp file untouched this long was abandoned


class BlobDigestMismatch(DigestMismatchError):
    """Uploaded bytes do not hash to the digest they were uploaded under (422)."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"uploaded bytes hash to {actual}, not {expected}")
        self.expected, self.actual = expected, actual


@dataclass(frozen=True)
class BlobInfo:
    digest: str
    size: int


class BlobStore(Protocol):
    async def put(self, digest: str, chunks: AsyncIterator[bytes]) -> BlobInfo: ...
    def stat(self, digest: str) -> BlobInfo | None: ...
    def read_range(self, digest: str, start: int, end: int) -> AsyncIterator[bytes]: ...
    def delete(self, digest: str) -> None: ...


class LocalBlobStore:
    """``root/sha256/ab/<hex>``; temp files under ``root/tmp`` (cleared at start)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        self.tmp = self.root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        stale = time.time() - STALE_PARTIAL_S
        for leftover in self.tmp.iterdir():  # uploads interrupted by a crash (not in flight:
            with contextlib.suppress(FileNotFoundError):  # a replica or gc may be running)
                if leftover.stat().st_mtime < stale:
                    leftover.unlink(missing_ok=True)

    def path(self, digest: str) -> Path:
        h = hex_of(digest)
        return self.root / "sha256" / h[:2] / h

    def stat(self, digest: str) -> BlobInfo | None:
        try:
            return BlobInfo(digest, self.path(digest).stat().st_size)
        except FileNotFoundError:
            return None

    async def put(self, digest: str, chunks: AsyncIterator[bytes]) -> BlobInfo:
        final = self.path(digest)
        tmp_path = self.tmp / f"{uuid.uuid4().hex}.partial"
        h = hashlib.sha256()
        size = 0
        fh = await anyio.to_thread.run_sync(open, tmp_path, "wb")
        try:
            async for chunk in chunks:
                if chunk:
                    h.update(chunk)
                    size += len(chunk)
                    await anyio.to_thread.run_sync(fh.write, chunk)
            await anyio.to_thread.run_sync(fh.flush)
            await anyio.to_thread.run_sync(os.fsync, fh.fileno())
        except BaseException:
            fh.close()
            tmp_path.unlink(missing_ok=True)
            raise
        fh.close()
        actual = digest_of(h)
        if actual != digest:
            tmp_path.unlink(missing_ok=True)
            raise BlobDigestMismatch(digest, actual)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp_path, final)
        fsync_dir(final.parent)
        return BlobInfo(digest, size)

    async def read_range(self, digest: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end] inclusive, in 1 MiB chunks: constant memory for any size."""
        fh = await anyio.to_thread.run_sync(open, self.path(digest), "rb")
        try:
            await anyio.to_thread.run_sync(fh.seek, start)
            remaining = end - start + 1
            while remaining > 0:
                data = await anyio.to_thread.run_sync(fh.read, min(CHUNK, remaining))
                if not data:
                    break
                remaining -= len(data)
                yield data
        finally:
            fh.close()

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)
