"""The registry's rules, independent of HTTP: models, versions, bundles, resolve.

Every write that concurrency could race is decided by the database: unique constraints for
versions and bundles, so two clients can never leave mixed state behind. Versions are
immutable: a bundle, once registered, never changes.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts.bundle import authenticate, check_paths
from artifacts.digests import is_digest, sha256_bytes
from artifacts.errors import ConflictError, NotFoundError, Unprocessable
from artifacts.manifest import Manifest, decode, to_builtins
from artifacts.names import check_name
from artifacts.signing import TrustedKeys
from artifacts.targets import TARGETS, is_bundle_key, rank_bundles
from artifacts.wire import (
    BundleInfo,
    ModelInfo,
    ResolvedBundle,
    ResolveRequest,
    ResolveResponse,
    VersionInfo,
)
from central.audit.service import AuditLog
from central.blobs.service import BlobService
from central.channels.models import Channel
from central.db import Database, iso, retry_integrity
from central.registry.models import Bundle, Model, Version


async def find_model(s: AsyncSession, name: str, *, create: bool = False) -> Model:
    check_name(name, "model name")
    row = (await s.execute(select(Model).where(Model.name == name))).scalar_one_or_none()
    if row is None:
        if not create:
            raise NotFoundError(f"model {name!r} not found")
        row = Model(name=name, last_version=0)
        s.add(row)
        await s.flush()
    return row


async def find_version(
    s: AsyncSession, model: Model, number: int, *, lock: bool = False
) -> Version:
    """``lock``: hold the row (PostgreSQL) so sealing and adding a bundle cannot interleave."""
    q = select(Version).where(Version.model_id == model.id, Version.number == number)
    if lock and s.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    row = (await s.execute(q)).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"version {model.name} v{number} not found")
    return row


async def version_bundles(s: AsyncSession, version: Version) -> list[Bundle]:
    return list((await s.execute(select(Bundle).where(Bundle.version_id == version.id))).scalars())


@dataclass(frozen=True)
class BundleUpload:
    """A bundle as pushed: its coordinates, manifest.json's bytes and model.sig's text."""

    model: str
    version: int
    target: str
    manifest: bytes
    signature: str


Precondition = Callable[[AsyncSession], Awaitable[None]]


@dataclass(frozen=True)
class Provenance:
    """Who built a bundle, who independently verified it, and the verifier's attestation."""

    built_by: str
    verified_by: str
    attestation: str


def bundle_info(b: Bundle) -> BundleInfo:
    return BundleInfo(
        target=b.target,
        manifest_digest=b.manifest_digest,
        key_id=b.key_id,
        quality_passed=b.quality_passed,
        size=b.size,
        created_at=iso(b.created_at),
        manifest=to_builtins(decode(b.manifest)),
        built_by=b.built_by,
        verified_by=b.verified_by,
    )


def version_info(
    m: Model, v: Version, bundles: list[BundleInfo], channels: list[str] | None = None
) -> VersionInfo:
    return VersionInfo(
        model=m.name,
        version=v.number,
        created_at=iso(v.created_at),
        created_by=v.created_by,
        source_digest=v.source_digest,
        notes=v.notes,
        bundles=sorted(bundles, key=lambda b: b.target),
        channels=channels or [],
    )


def _also(
    recheck: Callable[[AsyncSession, str], Awaitable[None]],
    key_id: str,
    then: Precondition | None,
) -> Precondition:
    async def check(s: AsyncSession) -> None:
        await recheck(s, key_id)
        if then is not None:
            await then(s)

    return check


class RegistryService:
    def __init__(
        self,
        db: Database,
        blobs: BlobService,
        trusted: Callable[[], Awaitable[TrustedKeys]],
        audit: AuditLog,
        recheck: Callable[[AsyncSession, str], Awaitable[None]] | None = None,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.trusted = trusted  # the publisher keys now (cached briefly per replica)
        self.recheck = recheck  # ... and whether a signer is still trusted, in the insert
        self.audit = audit

    # ---- models & versions ----------------------------------------------------------------

    async def create_version(
        self, model: str, actor: str, *, source_digest: str = "", notes: str = ""
    ) -> int:
        """Allocate the next version number (monotonic, never reused)."""

        async def attempt() -> int:
            async with self.db.transaction() as s:
                m = await find_model(s, model, create=True)
                number = (
                    await s.execute(
                        update(Model)
                        .where(Model.id == m.id)
                        .values(last_version=Model.last_version + 1)
                        .returning(Model.last_version)
                    )
                ).scalar_one()
                s.add(
                    Version(
                        model_id=m.id,
                        number=number,
                        created_by=actor,
                        source_digest=source_digest,
                        notes=notes,
                    )
                )
                self.audit.record(
                    s, actor, "version.create", f"{model} v{number}", digest=source_digest
                )
            return int(number)

        return await retry_integrity(attempt)  # two first pushes may create the model row at once

    async def list_models(self) -> list[ModelInfo]:
        async with self.db.session() as s:
            models = (await s.execute(select(Model).order_by(Model.name))).scalars().all()
            channels = (await s.execute(select(Channel))).scalars().all()
        by_model: dict[int, dict[str, int | None]] = {}
        for c in channels:
            by_model.setdefault(c.model_id, {})[c.name] = c.version
        return [
            ModelInfo(
                name=m.name,
                versions=m.last_version,
                latest=m.last_version or None,
                channels=by_model.get(m.id, {}),
            )
            for m in models
        ]

    async def list_versions(self, model: str) -> list[VersionInfo]:
        async with self.db.session() as s:
            m = await find_model(s, model)
            versions = (
                await s.execute(
                    select(Version).where(Version.model_id == m.id).order_by(Version.number)
                )
            ).scalars()
            bundles = (
                await s.execute(select(Bundle).join(Version).where(Version.model_id == m.id))
            ).scalars()
            by_version: dict[int, list[BundleInfo]] = {}
            for b in bundles:
                by_version.setdefault(b.version_id, []).append(bundle_info(b))
            return [version_info(m, v, by_version.get(v.id, [])) for v in versions]

    async def get_version(self, model: str, number: int) -> VersionInfo:
        async with self.db.session() as s:
            m = await find_model(s, model)
            v = await find_version(s, m, number)
            bundles = await version_bundles(s, v)
            chans = (
                await s.execute(
                    select(Channel.name).where(Channel.model_id == m.id, Channel.version == number)
                )
            ).scalars()
            return version_info(m, v, [bundle_info(b) for b in bundles], list(chans))

    # ---- bundles ---------------------------------------------------------------------------

    async def _check_bundle(
        self, upload: BundleUpload, trusted: TrustedKeys
    ) -> tuple[Manifest, str]:
        if not is_bundle_key(upload.target):
            raise Unprocessable(
                f"unknown target {upload.target!r}; known: {', '.join(TARGETS)} "
                "(a variant: target+variant, e.g. onnx-int8+pruned-L4)"
            )
        manifest = decode(upload.manifest)
        check_paths(manifest)
        if bool(manifest.target.variant) != (manifest.quality.basis == "task"):
            raise Unprocessable(
                "a variant's quality is gated on task quality (basis task), the full model's on "
                "fidelity: this manifest mixes them"
            )
        key_id = authenticate(manifest, upload.manifest, upload.signature.encode(), trusted)
        named = (manifest.model.name, manifest.model.version, manifest.bundle_key())
        if named != (upload.model, upload.version, upload.target):
            raise Unprocessable(
                f"manifest names {named[0]} v{named[1]} {named[2]}, but it was pushed as "
                f"{upload.model} v{upload.version} {upload.target}"
            )
        for entry in manifest.files:
            if not is_digest(entry.sha256):
                raise Unprocessable(f"file {entry.path!r} has a malformed digest")
            info = await self.blobs.stat(entry.sha256)
            if info is None:
                raise Unprocessable(f"blob {entry.sha256} for {entry.path!r} has not been uploaded")
            if info.size != entry.size:
                raise Unprocessable(
                    f"blob for {entry.path!r} is {info.size} bytes, manifest says {entry.size}"
                )
        return manifest, key_id

    async def _existing(self, model: str, number: int, target: str) -> Bundle | None:
        async with self.db.session() as s:
            v = await find_version(s, await find_model(s, model), number)
            return (
                await s.execute(
                    select(Bundle).where(Bundle.version_id == v.id, Bundle.target == target)
                )
            ).scalar_one_or_none()

    async def put_bundle(
        self,
        upload: BundleUpload,
        actor: str,
        *,
        trusted: TrustedKeys | None = None,
        provenance: Provenance | None = None,
        precondition: Precondition | None = None,
    ) -> tuple[BundleInfo, bool]:
        """Register a verified bundle; identical re-push is a no-op, different bytes → 409.

        ``trusted``: who may have signed it (default: the trusted publisher keys; the build
        service passes the builder's registered key). A sealed (promoted) version takes no
        new target. ``precondition`` runs inside the inserting transaction (and may refuse by
        raising), so what it checks cannot change between the check and the insert."""
        publisher = trusted is None
        manifest, key_id = await self._check_bundle(
            upload, trusted if trusted is not None else await self.trusted()
        )
        if publisher and self.recheck is not None:  # untrusted since the cached read: refused
            precondition = _also(self.recheck, key_id, precondition)
        existing = await self._existing(upload.model, upload.version, upload.target)
        if existing is None:
            try:
                row = await self._insert_bundle(
                    upload, manifest, key_id, actor, provenance, precondition
                )
                return row, True
            except IntegrityError:  # lost a race with a concurrent push of the same target
                existing = await self._existing(upload.model, upload.version, upload.target)
        if existing is not None and existing.manifest == upload.manifest:
            return bundle_info(existing), False
        raise ConflictError(
            f"{upload.model} v{upload.version} already has a different {upload.target} bundle; "
            "versions are immutable — push a new version"
        )

    async def _insert_bundle(
        self,
        upload: BundleUpload,
        manifest: Manifest,
        key_id: str,
        actor: str,
        provenance: Provenance | None,
        precondition: Precondition | None,
    ) -> BundleInfo:
        digest = sha256_bytes(upload.manifest)
        async with self.db.transaction() as s:
            v = await find_version(s, await find_model(s, upload.model), upload.version, lock=True)
            if v.sealed:
                raise ConflictError(
                    f"{upload.model} v{upload.version} is sealed (it was promoted): it takes no "
                    "new target; build or push a new version"
                )
            if precondition is not None:
                await precondition(s)
            await self.blobs.renew(s, (f.sha256 for f in manifest.files), "bundle")
            row = Bundle(
                version_id=v.id,
                target=upload.target,
                manifest=upload.manifest,
                manifest_digest=digest,
                signature=upload.signature,
                key_id=key_id,
                quality_passed=manifest.quality.passed,
                size=sum(f.size for f in manifest.files),
                created_by=actor,
                built_by=provenance.built_by if provenance else None,
                verified_by=provenance.verified_by if provenance else None,
                attestation=provenance.attestation if provenance else None,
            )
            s.add(row)
            await s.flush()  # a concurrent push of the same target loses here, before the tag
            await self.blobs.publish_bundle(manifest, upload.manifest, upload.signature)
            subject = f"{upload.model} v{upload.version} {upload.target}"
            self.audit.record(s, actor, "bundle.push", subject, digest=digest)
            return bundle_info(row)

    async def bundle_document(self, model: str, number: int, target: str) -> tuple[bytes, str]:
        row = await self._existing(model, number, target)
        if row is None:
            raise NotFoundError(f"bundle {model} v{number} {target} not found")
        return row.manifest, row.signature

    # ---- resolve ---------------------------------------------------------------------------

    async def _channel_bundles(self, model: str, channel: str) -> tuple[int, list[Bundle]] | None:
        """One round trip for the hot path (a node resolving its channel); None: take the slow
        path, which says precisely what is missing."""
        q = (
            select(Version.number, Bundle)
            .join(Bundle, Bundle.version_id == Version.id)
            .join(Model, Model.id == Version.model_id)
            .join(Channel, (Channel.model_id == Model.id) & (Channel.version == Version.number))
            .where(Model.name == model, Channel.name == channel)
        )
        async with self.db.session() as s:
            rows = (await s.execute(q)).all()
        if not rows:
            return None
        return int(rows[0][0]), [r[1] for r in rows]

    async def _requested_version(self, s: AsyncSession, req: ResolveRequest) -> Version:
        m = await find_model(s, req.model)
        if req.version is not None:
            return await find_version(s, m, req.version)
        if req.channel is not None:
            ch = (
                await s.execute(
                    select(Channel).where(Channel.model_id == m.id, Channel.name == req.channel)
                )
            ).scalar_one_or_none()
            if ch is None or ch.version is None:
                raise NotFoundError(f"channel {req.model}:{req.channel} not found")
            return await find_version(s, m, ch.version)
        if not m.last_version:
            raise NotFoundError(f"{req.model} has no version yet")
        return await find_version(s, m, m.last_version)

    async def resolve(self, req: ResolveRequest) -> ResolveResponse:
        check_name(req.model, "model name")
        if req.channel is not None:
            check_name(req.channel, "channel name")
            if req.version is None:
                hit = await self._channel_bundles(req.model, req.channel)
                if hit is not None:
                    return self._ranked(req, *hit)
        async with self.db.session() as s:
            v = await self._requested_version(s, req)
            rows = await version_bundles(s, v)
        return self._ranked(req, v.number, rows)

    def _ranked(self, req: ResolveRequest, number: int, rows: list[Bundle]) -> ResolveResponse:
        manifests = {r.target: decode(r.manifest) for r in rows}
        by_target = {r.target: r for r in rows}
        ranking = rank_bundles(req.capabilities, list(manifests.values()), req.policy)
        eligible = [
            ResolvedBundle(
                candidate=c,
                manifest_digest=by_target[c.target].manifest_digest,
                manifest=base64.b64encode(by_target[c.target].manifest).decode(),
                signature=by_target[c.target].signature,
                files=[
                    {"path": f.path, "sha256": f.sha256, "size": f.size}
                    for f in manifests[c.target].files
                ],
            )
            for c in ranking.eligible
        ]
        return ResolveResponse(
            model=req.model,
            channel=req.channel,
            version=number,
            eligible=eligible,
            excluded=ranking.excluded,
        )
