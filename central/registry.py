"""The registry's rules, independent of HTTP: versions, bundles, channels, resolve, audit.

Every write that concurrency could race is decided by the database: unique constraints for
versions and bundles, a row lock (PostgreSQL) or the single-writer transaction (SQLite) for
channel moves, so two clients can never leave mixed state behind.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import time
from dataclasses import dataclass

import msgspec
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts.bundle import check_relpath
from artifacts.digests import is_digest, sha256_bytes
from artifacts.manifest import Manifest, decode, to_builtins
from artifacts.names import check_name
from artifacts.signing import TrustedKeys
from artifacts.targets import TARGETS, rank_bundles
from artifacts.wire import (
    AuditInfo,
    BundleInfo,
    ChannelEventInfo,
    ChannelInfo,
    ModelInfo,
    ResolvedBundle,
    ResolveRequest,
    ResolveResponse,
    VersionInfo,
)
from central import auth
from central.blobs import LocalBlobStore
from central.db.models import (
    AuditEvent,
    Blob,
    Bundle,
    Channel,
    ChannelEvent,
    Model,
    Token,
    Version,
)
from central.db.session import Database
from central.errors import (
    Forbidden,
    QualityGateRefused,
    Unauthorized,
    Unprocessable,
    conflict,
    not_found,
)


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"token {self.name!r} lacks the {scope!r} scope")


def iso(t: dt.datetime | None) -> str:
    if t is None:
        return ""
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.isoformat(timespec="seconds")


TOKEN_CACHE_S = 2.0  # a revoked token stops working within this long


class Registry:
    def __init__(self, db: Database, blobs: LocalBlobStore, trusted: TrustedKeys) -> None:
        self.db = db
        self.blobs = blobs
        self.trusted = trusted
        self._principals: dict[str, tuple[float, Principal]] = {}

    # ---- auth ------------------------------------------------------------------------------

    async def authenticate(self, header: str | None) -> Principal:
        if not header or not header.lower().startswith("bearer "):
            raise Unauthorized()
        token = header[7:].strip()
        cached = self._principals.get(token)
        if cached is not None and time.monotonic() - cached[0] < TOKEN_CACHE_S:
            return cached[1]
        async with self.db.session() as s:
            row = (
                await s.execute(select(Token).where(Token.token_hash == auth.hash_token(token)))
            ).scalar_one_or_none()
        if row is None or row.revoked_at is not None:
            raise Unauthorized("invalid or revoked bearer token")
        principal = Principal(row.name, frozenset(auth.granted(row.scopes.split(","))))
        if len(self._principals) > 10_000:
            self._principals.clear()
        self._principals[token] = (time.monotonic(), principal)
        return principal

    async def create_token(self, name: str, scopes: list[str], actor: str = "cli") -> str:
        check_name(name, "token name")
        auth.parse_scopes(",".join(scopes))
        token = auth.new_token(scopes[0])
        async with self.db.transaction() as s:
            s.add(Token(name=name, token_hash=auth.hash_token(token), scopes=",".join(scopes)))
            self._audit(s, actor, "token.create", f"{name} [{','.join(scopes)}]", "", "ok")
        return token

    async def token_count(self) -> int:
        async with self.db.session() as s:
            return int((await s.execute(select(func.count(Token.id)))).scalar_one())

    # ---- audit -----------------------------------------------------------------------------

    @staticmethod
    def _audit(
        s: AsyncSession,
        actor: str,
        action: str,
        subject: str,
        digest: str,
        outcome: str,
        detail: str = "",
    ) -> None:
        s.add(
            AuditEvent(
                actor=actor,
                action=action,
                subject=subject[:256],
                digest=digest,
                outcome=outcome,
                detail=detail[:4000],
            )
        )

    async def refused(
        self, actor: str, action: str, subject: str, detail: str, digest: str = ""
    ) -> None:
        """Record a refused attempt (in its own transaction: the attempt's was rolled back)."""
        async with self.db.transaction() as s:
            self._audit(s, actor, action, subject, digest, "refused", detail)

    async def audit_log(self, limit: int = 100, before: int | None = None) -> list[AuditInfo]:
        limit = max(1, min(limit, 1000))
        q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
        if before is not None:
            q = q.where(AuditEvent.id < before)
        async with self.db.session() as s:
            rows = (await s.execute(q)).scalars().all()
        return [
            AuditInfo(
                id=r.id,
                at=iso(r.at),
                actor=r.actor,
                action=r.action,
                subject=r.subject,
                digest=r.digest,
                outcome=r.outcome,
                detail=r.detail,
            )
            for r in rows
        ]

    # ---- models & versions ----------------------------------------------------------------

    async def _model(self, s: AsyncSession, name: str, *, create: bool = False) -> Model:
        check_name(name, "model name")
        row = (await s.execute(select(Model).where(Model.name == name))).scalar_one_or_none()
        if row is None:
            if not create:
                raise not_found(f"model {name!r}")
            row = Model(name=name, last_version=0)
            s.add(row)
            await s.flush()
        return row

    async def _version(self, s: AsyncSession, model: Model, number: int) -> Version:
        row = (
            await s.execute(
                select(Version).where(Version.model_id == model.id, Version.number == number)
            )
        ).scalar_one_or_none()
        if row is None:
            raise not_found(f"version {model.name} v{number}")
        return row

    async def create_version(
        self, model: str, actor: str, *, source_digest: str = "", notes: str = ""
    ) -> int:
        """Allocate the next version number (monotonic, never reused)."""
        for attempt in range(3):
            try:
                async with self.db.transaction() as s:
                    m = await self._model(s, model, create=True)
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
                    self._audit(
                        s, actor, "version.create", f"{model} v{number}", source_digest, "ok"
                    )
                return int(number)
            except IntegrityError:  # two first pushes created the model row at once
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

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

    def _bundle_info(self, b: Bundle) -> BundleInfo:
        return BundleInfo(
            target=b.target,
            manifest_digest=b.manifest_digest,
            key_id=b.key_id,
            quality_passed=b.quality_passed,
            size=b.size,
            created_at=iso(b.created_at),
            manifest=to_builtins(decode(b.manifest)),
        )

    async def list_versions(self, model: str) -> list[VersionInfo]:
        async with self.db.session() as s:
            m = await self._model(s, model)
            versions = (
                (
                    await s.execute(
                        select(Version).where(Version.model_id == m.id).order_by(Version.number)
                    )
                )
                .scalars()
                .all()
            )
            bundles = (
                (await s.execute(select(Bundle).join(Version).where(Version.model_id == m.id)))
                .scalars()
                .all()
            )
        by_version: dict[int, list[BundleInfo]] = {}
        for b in bundles:
            by_version.setdefault(b.version_id, []).append(self._bundle_info(b))
        return [self._version_info(m, v, by_version.get(v.id, [])) for v in versions]

    @staticmethod
    def _version_info(
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

    async def get_version(self, model: str, number: int) -> VersionInfo:
        async with self.db.session() as s:
            m = await self._model(s, model)
            v = await self._version(s, m, number)
            bundles = (
                (await s.execute(select(Bundle).where(Bundle.version_id == v.id))).scalars().all()
            )
            chans = (
                (
                    await s.execute(
                        select(Channel.name).where(
                            Channel.model_id == m.id, Channel.version == number
                        )
                    )
                )
                .scalars()
                .all()
            )
        return self._version_info(m, v, [self._bundle_info(b) for b in bundles], list(chans))

    # ---- blobs -----------------------------------------------------------------------------

    async def record_blob(self, digest: str, size: int, actor: str) -> None:
        async with self.db.transaction() as s:
            if await s.get(Blob, digest) is None:
                s.add(Blob(digest=digest, size=size))
                self._audit(s, actor, "blob.push", digest[:19], digest, "ok", f"{size} bytes")

    # ---- bundles ---------------------------------------------------------------------------

    def _check_bundle(
        self, model: str, number: int, target: str, manifest_b64: str, signature: str
    ) -> tuple[Manifest, bytes, str]:
        if target not in TARGETS:
            raise Unprocessable(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
        try:
            data = base64.b64decode(manifest_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Unprocessable("manifest is not valid base64") from exc
        manifest = decode(data)
        key_id = self.trusted.verify(data, signature.encode(), manifest.signing_key_id)
        named = (manifest.model.name, manifest.model.version, manifest.target.id)
        if named != (model, number, target):
            raise Unprocessable(
                f"manifest names {named[0]} v{named[1]} {named[2]}, but it was pushed as {model} v{number} {target}"
            )
        for entry in manifest.files:
            check_relpath(entry.path)
            if not is_digest(entry.sha256):
                raise Unprocessable(f"file {entry.path!r} has a malformed digest")
            info = self.blobs.stat(entry.sha256)
            if info is None:
                raise Unprocessable(f"blob {entry.sha256} for {entry.path!r} has not been uploaded")
            if info.size != entry.size:
                raise Unprocessable(
                    f"blob for {entry.path!r} is {info.size} bytes, manifest says {entry.size}"
                )
        return manifest, data, key_id

    async def put_bundle(
        self, model: str, number: int, target: str, manifest_b64: str, signature: str, actor: str
    ) -> tuple[BundleInfo, bool]:
        """Register a verified bundle; identical re-push is a no-op, different bytes → 409."""
        manifest, data, key_id = self._check_bundle(model, number, target, manifest_b64, signature)
        digest = sha256_bytes(data)
        try:
            async with self.db.transaction() as s:
                m = await self._model(s, model)
                v = await self._version(s, m, number)
                existing = (
                    await s.execute(
                        select(Bundle).where(Bundle.version_id == v.id, Bundle.target == target)
                    )
                ).scalar_one_or_none()
                if existing is not None:
                    if existing.manifest == data:
                        return self._bundle_info(existing), False
                    raise conflict(
                        f"{model} v{number} already has a different {target} bundle "
                        f"({existing.manifest_digest[:19]}…); versions are immutable — push a new version"
                    )
                row = Bundle(
                    version_id=v.id,
                    target=target,
                    manifest=data,
                    manifest_digest=digest,
                    signature=signature,
                    key_id=key_id,
                    quality_passed=manifest.quality.passed,
                    size=sum(f.size for f in manifest.files),
                    created_by=actor,
                )
                s.add(row)
                await s.flush()
                self._audit(s, actor, "bundle.push", f"{model} v{number} {target}", digest, "ok")
                return self._bundle_info(row), True
        except IntegrityError:  # lost a race with a concurrent push of the same target
            async with self.db.session() as s:
                m = await self._model(s, model)
                v = await self._version(s, m, number)
                existing = (
                    await s.execute(
                        select(Bundle).where(Bundle.version_id == v.id, Bundle.target == target)
                    )
                ).scalar_one()
            if existing.manifest == data:
                return self._bundle_info(existing), False
            raise conflict(
                f"{model} v{number} {target} was pushed concurrently with different bytes"
            ) from None

    async def bundle_document(self, model: str, number: int, target: str) -> tuple[bytes, str]:
        async with self.db.session() as s:
            m = await self._model(s, model)
            v = await self._version(s, m, number)
            row = (
                await s.execute(
                    select(Bundle).where(Bundle.version_id == v.id, Bundle.target == target)
                )
            ).scalar_one_or_none()
        if row is None:
            raise not_found(f"bundle {model} v{number} {target}")
        return row.manifest, row.signature

    # ---- channels --------------------------------------------------------------------------

    async def _lock_channel(self, s: AsyncSession, m: Model, name: str) -> Channel:
        check_name(name, "channel name")
        q = select(Channel).where(Channel.model_id == m.id, Channel.name == name)
        if self.db.is_postgres:
            q = q.with_for_update()
        ch = (await s.execute(q)).scalar_one_or_none()
        if ch is None:
            ch = Channel(model_id=m.id, name=name, version=None, seq=0)
            s.add(ch)
            await s.flush()
        return ch

    async def _history(self, s: AsyncSession, ch: Channel) -> list[ChannelEvent]:
        return list(
            (
                await s.execute(
                    select(ChannelEvent)
                    .where(ChannelEvent.channel_id == ch.id)
                    .order_by(ChannelEvent.seq)
                )
            ).scalars()
        )

    @staticmethod
    def _stack(events: list[ChannelEvent]) -> list[int]:
        """Promotions push, rollbacks pop: the top is current, the one below is rollback's target."""
        stack: list[int] = []
        for e in events:
            if e.action == "promote":
                stack.append(e.version)
            elif stack:
                stack.pop()
        return stack

    def _channel_info(self, m: Model, ch: Channel, events: list[ChannelEvent]) -> ChannelInfo:
        return ChannelInfo(
            model=m.name,
            channel=ch.name,
            version=ch.version,
            halted=ch.halted,
            history=[
                ChannelEventInfo(
                    seq=e.seq,
                    action=e.action,
                    version=e.version,
                    previous=e.previous,
                    actor=e.actor,
                    forced=e.forced,
                    at=iso(e.at),
                )
                for e in events
            ],
        )

    async def promote(
        self, model: str, channel: str, number: int, principal: Principal, *, force: bool = False
    ) -> ChannelInfo:
        if force and "admin" not in principal.scopes:
            raise Forbidden("force-promoting past a failed quality gate needs an admin token")
        for attempt in range(3):
            try:
                async with self.db.transaction() as s:
                    m = await self._model(s, model)
                    v = await self._version(s, m, number)
                    bundles = (
                        (await s.execute(select(Bundle).where(Bundle.version_id == v.id)))
                        .scalars()
                        .all()
                    )
                    if not bundles:
                        raise conflict(f"{model} v{number} has no bundles to serve")
                    failing = {
                        b.target: decode(b.manifest).quality.metrics
                        for b in bundles
                        if not b.quality_passed
                    }
                    if failing and not force:
                        detail = "; ".join(
                            f"{t}: {msgspec.json.encode(mets).decode()}"
                            for t, mets in failing.items()
                        )
                        raise QualityGateRefused(
                            f"{model} v{number} has bundles whose quality gate did not pass ({detail}); "
                            "an admin may force it",
                            failing,
                        )
                    ch = await self._lock_channel(s, m, channel)
                    if ch.halted:
                        raise conflict(f"{model}:{channel} is halted; resume it before promoting")
                    ch.seq += 1
                    s.add(
                        ChannelEvent(
                            channel_id=ch.id,
                            seq=ch.seq,
                            action="promote",
                            version=number,
                            previous=ch.version,
                            actor=principal.name,
                            forced=bool(failing),
                        )
                    )
                    ch.version = number
                    ch.updated_at = dt.datetime.now(dt.UTC)
                    self._audit(
                        s,
                        principal.name,
                        "channel.promote",
                        f"{model}:{channel} -> v{number}",
                        "",
                        "ok",
                        "forced past failed gate" if failing else "",
                    )
                    await s.flush()
                    return self._channel_info(m, ch, await self._history(s, ch))
            except IntegrityError:  # concurrent first promote created the channel; retry
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def set_halted(
        self, model: str, channel: str, halted: bool, principal: Principal, reason: str
    ) -> ChannelInfo:
        async with self.db.transaction() as s:
            m = await self._model(s, model)
            ch = await self._lock_channel(s, m, channel)
            ch.halted = halted
            action = "channel.halt" if halted else "channel.resume"
            self._audit(s, principal.name, action, f"{model}:{channel}", "", "ok", reason)
            await s.flush()
            return self._channel_info(m, ch, await self._history(s, ch))

    async def rollback(self, model: str, channel: str, principal: Principal) -> ChannelInfo:
        async with self.db.transaction() as s:
            m = await self._model(s, model)
            ch = await self._lock_channel(s, m, channel)
            events = await self._history(s, ch)
            stack = self._stack(events)
            if len(stack) < 2:
                raise conflict(f"{model}:{channel} has no earlier version to roll back to")
            target = stack[-2]
            ch.seq += 1
            s.add(
                ChannelEvent(
                    channel_id=ch.id,
                    seq=ch.seq,
                    action="rollback",
                    version=target,
                    previous=ch.version,
                    actor=principal.name,
                )
            )
            ch.version = target
            ch.updated_at = dt.datetime.now(dt.UTC)
            self._audit(
                s, principal.name, "channel.rollback", f"{model}:{channel} -> v{target}", "", "ok"
            )
            await s.flush()
            return self._channel_info(m, ch, await self._history(s, ch))

    async def channel(self, model: str, channel: str) -> ChannelInfo:
        check_name(channel, "channel name")
        async with self.db.session() as s:
            m = await self._model(s, model)
            ch = (
                await s.execute(
                    select(Channel).where(Channel.model_id == m.id, Channel.name == channel)
                )
            ).scalar_one_or_none()
            if ch is None:
                raise not_found(f"channel {model}:{channel}")
            return self._channel_info(m, ch, await self._history(s, ch))

    async def channels(self, model: str) -> list[ChannelInfo]:
        async with self.db.session() as s:
            m = await self._model(s, model)
            rows = (
                (
                    await s.execute(
                        select(Channel).where(Channel.model_id == m.id).order_by(Channel.name)
                    )
                )
                .scalars()
                .all()
            )
        return [
            ChannelInfo(model=model, channel=c.name, version=c.version, halted=c.halted)
            for c in rows
        ]

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

    async def resolve(self, req: ResolveRequest) -> ResolveResponse:
        check_name(req.model, "model name")
        if req.version is None and req.channel is not None:
            check_name(req.channel, "channel name")
            hit = await self._channel_bundles(req.model, req.channel)
            if hit is not None:
                return self._ranked(req, *hit)
        async with self.db.session() as s:
            m = await self._model(s, req.model)
            if req.version is not None:
                number = req.version
            elif req.channel is not None:
                check_name(req.channel, "channel name")
                ch = (
                    await s.execute(
                        select(Channel).where(Channel.model_id == m.id, Channel.name == req.channel)
                    )
                ).scalar_one_or_none()
                if ch is None or ch.version is None:
                    raise not_found(f"channel {req.model}:{req.channel}")
                number = ch.version
            else:
                if not m.last_version:
                    raise not_found(f"any version of {req.model}")
                number = m.last_version
            v = await self._version(s, m, number)
            rows = (
                (await s.execute(select(Bundle).where(Bundle.version_id == v.id))).scalars().all()
            )
        return self._ranked(req, number, list(rows))

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
