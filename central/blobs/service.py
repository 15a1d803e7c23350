"""Blobs as the service sees them: the store's bytes plus a row (and an audit entry) per blob."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import cast

import anyio
from sqlalchemy import CursorResult, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts.errors import RegistryUnavailableError, Unprocessable
from artifacts.manifest import Manifest
from artifacts.tracing import annotate
from central.audit.service import AuditLog
from central.blobs.bundle_artifact import (
    ARTIFACT_TYPE,
    CONFIG_MEDIA_TYPE,
    bundle_annotations,
    bundle_layers,
    bundle_tag,
)
from central.blobs.models import Blob
from central.blobs.store import BlobDigestMismatch, BlobInfo, BlobStore
from central.db import Database, utcnow

PUBLISH_DEADLINE_S = 20.0  # an OCI registry slower than this is down (SQLite's busy wait: 30 s)


class BlobService:
    def __init__(self, db: Database, store: BlobStore, audit: AuditLog) -> None:
        self.db = db
        self.store = store
        self.audit = audit

    async def stat(self, digest: str) -> BlobInfo | None:
        return await self.store.stat(digest)

    async def put(
        self, digest: str, chunks: AsyncIterator[bytes], actor: str
    ) -> tuple[BlobInfo, bool]:
        """Store a blob (no-op when present); returns (info, created)."""
        info = await self.store.stat(digest)
        created = info is None
        if info is None:
            try:
                info = await self.store.put(digest, chunks)
            except BlobDigestMismatch as exc:
                await self.audit.refused(actor, "blob.push", digest[:19], str(exc), digest)
                raise
        await self._record(digest, info.size, actor)
        annotate(
            **{
                "shipyard.blob": digest,
                "shipyard.blob.bytes": info.size,
                "shipyard.blob.new": created,
            }
        )
        return info, created

    async def _record(self, digest: str, size: int, actor: str) -> None:
        """One row per blob; two uploads of the same bytes at once both succeed. Uploading a
        blob that exists renews it (``created_at``: last uploaded or registered), so garbage
        collection keeps what a push is about to register."""
        try:
            async with self.db.transaction() as s:
                row = await s.get(Blob, digest)
                if row is None:
                    s.add(Blob(digest=digest, size=size))
                    self.audit.record(
                        s, actor, "blob.push", digest[:19], digest=digest, detail=f"{size} bytes"
                    )
                else:  # an UPDATE, not the ORM row: a concurrent delete is not an error
                    await s.execute(
                        update(Blob).where(Blob.digest == digest).values(created_at=utcnow())
                    )
        except IntegrityError:  # a concurrent upload of the same content recorded it first
            pass

    async def renew(self, s: AsyncSession, digests: Iterable[str], what: str) -> None:
        """Inside the caller's transaction: every blob is renewed and must exist, row and
        bytes. Garbage collection deletes only rows not renewed since its mark (moving the file
        aside in that same transaction), so what this transaction commits never names missing
        bytes; a blob collected meanwhile is refused with "upload it again"."""
        wanted = sorted(set(digests))
        if not wanted:
            return
        renewed = cast(
            CursorResult,
            await s.execute(
                update(Blob).where(Blob.digest.in_(wanted)).values(created_at=utcnow())
            ),
        )
        missing = [d for d in wanted if await self.store.stat(d) is None]
        if renewed.rowcount != len(wanted) or missing:
            gone = missing[0] if missing else "one of its blobs"
            raise Unprocessable(
                f"{what}: {gone[:19]}… is no longer in the blob store (garbage-collected "
                "meanwhile?): upload it again"
            )

    async def publish_bundle(
        self, manifest: Manifest, manifest_bytes: bytes, signature: str
    ) -> None:
        """With an OCI store: the bundle as an OCI artifact (before its row commits, so a
        registry that is down refuses the registration instead of leaving it half-published)."""
        push = getattr(self.store, "push_artifact", None)
        if push is None:
            return
        try:
            with anyio.fail_after(PUBLISH_DEADLINE_S):  # the version's row lock is held meanwhile
                await self._push(push, manifest, manifest_bytes, signature)
        except TimeoutError as exc:
            raise RegistryUnavailableError(
                f"the blob store did not take the bundle's OCI manifest within {PUBLISH_DEADLINE_S:g} s"
            ) from exc

    @staticmethod
    async def _push(push, manifest: Manifest, manifest_bytes: bytes, signature: str) -> None:
        await push(
            bundle_tag(manifest.model.name, manifest.model.version, manifest.bundle_key()),
            config=manifest_bytes,
            config_media_type=CONFIG_MEDIA_TYPE,
            layers=bundle_layers(manifest),
            annotations=bundle_annotations(manifest, signature),
            artifact_type=ARTIFACT_TYPE,
        )

    async def require(self, digest: str, what: str) -> BlobInfo:
        """The blob's info, or 422 naming what is missing."""
        info = await self.store.stat(digest)
        if info is None:
            raise Unprocessable(
                f"{what} blob {digest} has not been uploaded (PUT /v1/blobs/{{digest}} first)"
            )
        return info
