"""Content-addressed blob storage behind a small interface: a local directory (default) or an
OCI distribution registry (:mod:`central.blobs.oci`, for several replicas).

Locally a blob is written to a temp file while its sha256 is computed, fsynced, and only then
renamed to its digest path: a crash or client disconnect mid-upload leaves no visible blob.
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
from typing import TYPE_CHECKING, Protocol

import anyio

from artifacts.atomic import fsync_dir
from artifacts.digests import digest_of, hex_of
from artifacts.errors import DigestMismatchError, NotFoundError, Unprocessable

if TYPE_CHECKING:
    from central.settings import CentralConfig

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
    """What the service needs of a blob store; nothing is visible until it hashes right."""

    kind: str  # "local" | "oci"

    async def put(self, digest: str, chunks: AsyncIterator[bytes]) -> BlobInfo: ...
    async def stat(self, digest: str) -> BlobInfo | None: ...
    def read_range(self, digest: str, start: int, end: int) -> AsyncIterator[bytes]: ...
    async def read_bytes(self, digest: str, limit: int) -> bytes: ...
    def local_file(self, digest: str) -> contextlib.AbstractAsyncContextManager[Path]: ...
    async def delete(self, digest: str) -> None: ...
    def redirect_url(self, digest: str) -> str | None: ...
    async def ping(self) -> str | None: ...
    async def close(self) -> None: ...


def blob_store_for(config: CentralConfig) -> BlobStore:
    """The configured store: the OCI registry when ``oci_url`` is set, else ``HOME/blobs``."""
    if config.oci_url:
        from central.blobs.oci import OciBlobStore

        return OciBlobStore(
            config.oci_url,
            config.oci_repository,
            username=config.oci_username,
            password=config.oci_password,
            public_url=config.oci_public_url,
        )
    return LocalBlobStore(config.blobs_path)


class LocalBlobStore:
    """``root/sha256/ab/<hex>``; temp files under ``root/tmp`` (cleared at start)."""

    kind = "local"

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

    def stat_now(self, digest: str) -> BlobInfo | None:
        try:
            return BlobInfo(digest, self.path(digest).stat().st_size)
        except FileNotFoundError:
            return None

    async def stat(self, digest: str) -> BlobInfo | None:
        return self.stat_now(digest)

    async def read_bytes(self, digest: str, limit: int) -> bytes:
        info = self.stat_now(digest)
        if info is None:
            raise NotFoundError(f"blob {digest} not found")
        if info.size > limit:
            raise Unprocessable(f"blob {digest[:19]}… is {info.size} bytes, over {limit}")
        return await anyio.Path(self.path(digest)).read_bytes()

    @contextlib.asynccontextmanager
    async def local_file(self, digest: str) -> AsyncIterator[Path]:
        """The blob's own file (read only: never write through it)."""
        if self.stat_now(digest) is None:
            raise NotFoundError(f"blob {digest} not found")
        yield self.path(digest)

    def redirect_url(self, digest: str) -> str | None:
        return None  # bytes only central serves

    async def ping(self) -> str | None:
        return None if os.access(self.root / "sha256", os.W_OK) else f"{self.root} not writable"

    async def close(self) -> None:
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

    async def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)
