"""Catalogs as central keeps them, and re-embedding runs.

- Product changes arrive on ``catalog.updates.<name>`` (from ``artifact catalog publish`` or
  ``POST /v1/catalogs/{name}/items``); :meth:`CatalogService.ingest` applies a batch in one
  transaction, each product only if the message is newer than what set it (stream sequence),
  so a redelivered, duplicated or reordered update changes nothing.
- A *run* re-embeds the catalog with one model version's bundle: every live product lacking a
  vector for (its id, that model version and bundle, its text digest) goes out as chunked jobs
  on ``embed.jobs``;
  embed workers send vectors back (``PUT /v1/catalogs/{name}/vectors``), stored once per key.
- :meth:`CatalogService.tick` (every ``TICK_S`` on every replica) recounts runs exactly; a run
  with nothing missing is claimed by one replica (a conditional update), its catalog and
  vectors go to the build service as an index build (the verifier there re-embeds *every*
  product, so a worker's wrong vector fails the index, never ships), and when that passes the
  model version and then its index are promoted to the serving channel (nodes hold a model
  update until its index is there). A run without progress for ``STALL_S`` has what it misses
  sent again; a claim older than ``CLAIM_STALE_S`` (a replica that died) is taken over.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import functools
import io
import logging
import re
import uuid
from collections.abc import AsyncIterator

import msgspec
import numpy as np
from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts import embed_queue as eq
from artifacts.catalog import parse_lines
from artifacts.digests import sha256_bytes
from artifacts.errors import (
    ConflictError,
    ForbiddenError,
    InputError,
    NotFoundError,
    ShipyardError,
    Unprocessable,
)
from artifacts.manifest import decode
from artifacts.names import check_name
from artifacts.targets import INDEX_TARGET
from artifacts.wire import (
    BuildRequest,
    CatalogBinding,
    CatalogInfo,
    CatalogItemsRequest,
    IndexJob,
    Published,
    RunInfo,
    RunRequest,
    VectorBatch,
    VectorsStored,
)
from central.audit.service import AuditLog
from central.auth.service import Principal
from central.blobs.service import BlobService
from central.catalogs.models import CatalogItem, CatalogRow, CatalogVector, EmbedRun
from central.catalogs.queue import CentralQueue
from central.db import Database, iso, retry_integrity, utcnow
from central.registry.models import Bundle, Model, Version
from central.registry.service import find_model, find_version

log = logging.getLogger("shipyard.central.catalogs")

TICK_S = 2.0
MAX_ITEMS_PER_REQUEST = 10_000
MAX_VECTORS_PER_BATCH = 256
MAX_JOB_BYTES = 512 << 10  # a job's texts: well under NATS's default 1 MB max_payload
STALL_S = 60.0  # a run without progress this long has what it misses sent again
CLAIM_STALE_S = 120.0  # a claim (indexing, promoting) older than this is taken over
NORM_TOLERANCE = 0.05  # workers send unit vectors
BIND_LOCK = 0x4361_7442  # "CatB": the advisory lock a binding takes (PostgreSQL)
SYSTEM = Principal(
    name="central:catalog-runs",
    scopes=frozenset({"pull", "push", "build", "promote"}),
    internal=True,
)
TARGET_CHARS = re.compile(r"[a-z0-9][a-z0-9+._-]{0,99}")


class QueueNotConfigured(eq.QueueUnavailable):
    pass


def _stale(at: dt.datetime | None, after_s: float = CLAIM_STALE_S) -> bool:
    return at is None or (utcnow() - at).total_seconds() > after_s


def _fields(raw: bytes) -> msgspec.Raw:
    return msgspec.Raw(raw or b"{}")


def run_info(r: EmbedRun) -> RunInfo:
    elapsed = ((r.finished_at or utcnow()) - r.started_at).total_seconds()
    rate = (r.done - r.done_at_start) / elapsed if elapsed > 0 else 0.0
    left = max(0, r.total - r.done)
    return RunInfo(
        id=r.id,
        catalog=r.catalog,
        model=r.model,
        version=r.version,
        target=r.target,
        state=r.state,
        done=r.done,
        total=r.total,
        promote=r.promote,
        started_at=iso(r.started_at),
        finished_at=iso(r.finished_at),
        rate_per_s=round(rate, 1),
        eta_s=round(left / rate, 1) if rate > 0 and r.state == "embedding" else None,
        build_id=r.build_id,
        index_version=r.index_version,
        reason=r.reason,
    )


def _vector_of(run: EmbedRun):
    """The join from a product to its vector for ``run`` (its current text, this bundle)."""
    v = CatalogVector
    return and_(
        v.catalog == CatalogItem.catalog,
        v.product_id == CatalogItem.product_id,
        v.model == run.model,
        v.version == run.version,
        v.target == run.target,
        v.digest == CatalogItem.digest,
    )


def _missing(run: EmbedRun):
    """Live products of the run's catalog without a vector of their current text for it."""
    v = CatalogVector
    catalog = run.catalog
    return (
        select(CatalogItem)
        .outerjoin(v, _vector_of(run))
        .where(
            CatalogItem.catalog == catalog, CatalogItem.deleted.is_(False), v.product_id.is_(None)
        )
    )


async def _count(s: AsyncSession, q) -> int:
    return int((await s.execute(select(func.count()).select_from(q.subquery()))).scalar_one())


async def _live(s: AsyncSession, catalog: str) -> int:
    q = select(CatalogItem.product_id).where(
        CatalogItem.catalog == catalog, CatalogItem.deleted.is_(False)
    )
    return await _count(s, q)


def _field_conflict(types: dict[str, str], fields: dict) -> str:
    """Why ``fields`` cannot join a catalog whose fields have ``types`` (recorded as they come:
    a field keeps its first type, at most MAX_FIELDS names), or "" (then ``types`` learns
    the new ones)."""
    from artifacts.catalog import MAX_FIELDS

    new: dict[str, str] = {}
    for name, value in fields.items():
        if value is None:
            continue  # null: the field is absent for this product
        kind = "bool" if isinstance(value, bool) else "str" if isinstance(value, str) else "number"
        known = types.get(name)
        if known is None:
            new[name] = kind
        elif known != kind:
            return f"field {name!r} is {known} in this catalog, not {kind}"
    if len(types) + len(new) > MAX_FIELDS:
        return f"the catalog would have more than {MAX_FIELDS} fields"
    types.update(new)
    return ""


def check_vectors(batch: VectorBatch, dim: int) -> dict[tuple[str, str], bytes]:
    """Each item: an id, a sha256 digest and a finite unit vector of ``dim`` float32 values."""
    vectors: dict[tuple[str, str], bytes] = {}
    for i, it in enumerate(batch.items):
        where = f"items[{i}]"
        if not it.id or len(it.id) > 256 or not eq.is_text_digest(it.digest):
            raise Unprocessable(f"{where}: a product id and a sha256 text digest are needed")
        try:
            raw = base64.b64decode(it.vector, validate=True)
        except ValueError:
            raise Unprocessable(f"{where}: vector is not base64") from None
        if len(raw) != dim * 4:
            raise Unprocessable(f"{where}: {len(raw) // 4} values, the model has {dim}")
        vec = np.frombuffer(raw, "<f4")
        if not np.isfinite(vec).all() or abs(float(np.linalg.norm(vec)) - 1) > NORM_TOLERANCE:
            raise Unprocessable(f"{where}: not a finite unit vector")
        vectors[(it.id, it.digest)] = raw
    return vectors


class CatalogService:
    def __init__(
        self,
        db: Database,
        blobs: BlobService,
        builds,
        channels,
        audit: AuditLog,
        queue: CentralQueue | None,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.builds = builds
        self.channels = channels
        self.audit = audit
        self.queue = queue
        self._task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self.queue is not None:
            self.queue.start(self.ingest)
        self._task = asyncio.create_task(self._tick_forever(), name="catalog-runs")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.queue is not None:
            await self.queue.stop()

    def _queue(self) -> CentralQueue:
        if self.queue is None:
            raise QueueNotConfigured(
                "this central has no catalog queue: start it with --nats-url (SHIPYARD_NATS_URL)"
            )
        return self.queue

    # ---- catalogs --------------------------------------------------------------------------

    async def bind(self, name: str, b: CatalogBinding, principal: Principal) -> CatalogInfo:
        if "promote" not in principal.scopes:  # a binding promotes automatically later
            raise ForbiddenError(
                f"token {principal.name!r} lacks 'promote': a binding ships index and model "
                "to its channel when a run completes"
            )
        eq.check_catalog_name(name)
        check_name(b.index, "index name")
        if not TARGET_CHARS.fullmatch(b.target):
            raise Unprocessable(f"target {b.target!r} is not a bundle target")
        if b.index == b.model:
            raise Unprocessable("the index needs its own registry name")
        for ch in (b.channel, b.stage_channel):
            check_name(ch, "channel")
        if b.channel == b.stage_channel:
            raise Unprocessable("channel and stage_channel must differ")

        async def attempt() -> None:
            async with self.db.transaction() as s:
                await find_model(s, b.model)  # 404 for an unknown model
                await self.db.serialize(s, BIND_LOCK)  # two binds never claim one index
                row = await s.get(CatalogRow, name)
                await _check_names(s, name, row, b)
                if row is None:
                    row = CatalogRow(name=name)
                    s.add(row)
                row.model, row.index_name, row.target = b.model, b.index, b.target
                row.channel, row.stage_channel, row.chunk = b.channel, b.stage_channel, b.chunk
                self.audit.record(
                    s,
                    principal.name,
                    "catalog.bind",
                    name,
                    detail=f"{b.model} {b.target} -> {b.index}; stage {b.stage_channel}, serve {b.channel}",
                )

        await retry_integrity(attempt)
        return await self.info(name)

    async def require_readable(self, principal: Principal, model: str) -> None:
        """A catalog-bound token reads no other catalog's index (registry model ``model``):
        an index bundle holds its catalog's product texts. The refusal names no catalog."""
        if principal.catalogs is None:
            return
        async with self.db.session() as s:
            owners = await _index_owners(s, model)
        if any(o not in principal.catalogs for o in owners):
            raise ForbiddenError(
                f"token {principal.name!r} is bound to catalog(s) "
                f"{', '.join(sorted(principal.catalogs))}: {model!r} is another catalog's index"
            )

    async def unreadable(self, principal: Principal) -> frozenset[str]:
        """Every model ``principal`` may not read (other catalogs' indexes), in one query."""
        if principal.catalogs is None:
            return frozenset()
        async with self.db.session() as s:
            rows = await s.execute(
                select(CatalogRow.name, CatalogRow.index_name).where(
                    CatalogRow.index_name.is_not(None)
                )
            )
            return frozenset(str(ix) for cat, ix in rows.all() if cat not in principal.catalogs)

    async def info(self, name: str) -> CatalogInfo:
        eq.check_catalog_name(name)
        async with self.db.session() as s:
            row = await s.get(CatalogRow, name)
            if row is None:
                raise NotFoundError(f"no catalog {name!r}")
            items = await _live(s, name)
            runs = (
                await s.execute(
                    select(EmbedRun)
                    .where(EmbedRun.catalog == name)
                    .order_by(EmbedRun.id.desc())
                    .limit(10)
                )
            ).scalars()
            infos = [run_info(r) for r in runs]
        binding = (
            None
            if row.model is None or row.index_name is None
            else CatalogBinding(
                model=row.model,
                index=row.index_name,
                target=row.target,
                channel=row.channel,
                stage_channel=row.stage_channel,
                chunk=row.chunk,
            )
        )
        dead = await self.queue.dead_letters(name) if self.queue is not None else None
        state = "not configured" if self.queue is None else (self.queue.error or "connected")
        return CatalogInfo(
            name=name, items=items, binding=binding, runs=infos, dead_letters=dead, queue=state
        )

    async def run(self, name: str, run_id: int) -> RunInfo:
        eq.check_catalog_name(name)
        async with self.db.session() as s:
            run = await s.get(EmbedRun, run_id)
        if run is None or run.catalog != name:
            raise NotFoundError(f"no run {run_id} of catalog {name!r}")
        return run_info(run)

    async def publish_items(
        self, name: str, req: CatalogItemsRequest, principal: Principal
    ) -> Published:
        """Validated here, then published: central applies them when it consumes the stream."""
        eq.check_catalog_name(name)
        n = len(req.items) + len(req.deletes)
        if n == 0:
            raise Unprocessable("no items and no deletes")
        if n > MAX_ITEMS_PER_REQUEST:
            raise Unprocessable(f"at most {MAX_ITEMS_PER_REQUEST} changes per request")
        if any("delete" in r for r in req.items):
            raise Unprocessable("items are products; removals go in deletes")
        lines = [msgspec.json.encode(r) for r in req.items] + [
            msgspec.json.encode({"id": i, "delete": True}) for i in req.deletes
        ]
        try:
            updates = eq.updates_from_lines(lines, "request")
        except InputError as exc:
            raise Unprocessable(str(exc)) from exc
        js = self._queue().require()
        # a retried request (same change_id, same body) is stored once; without a change_id
        # every request is published (applying a change twice changes nothing)
        batch_id = (
            sha256_bytes(req.change_id.encode() + b"\0" + b"\n".join(lines))
            if req.change_id
            else uuid.uuid4().hex
        )
        stored, dups = await eq.publish_updates(js, name, updates, batch_id)
        return Published(stored=stored, duplicates=dups)

    # ---- ingest (catalog.updates) ----------------------------------------------------------

    async def ingest(self, msgs: list) -> None:
        """Apply a batch of update messages; a malformed one is logged and skipped (acked)."""
        by_catalog: dict[str, list[tuple[int, eq.CatalogUpdate]]] = {}
        for m in msgs:
            catalog = m.subject.removeprefix("catalog.updates.")
            try:
                eq.check_catalog_name(catalog)
                u = eq.decode_update(m.data)
                line = (
                    {"id": u.id, "delete": True}
                    if u.op == "delete"
                    else {"id": u.id, "text": u.text, "fields": u.fields}
                )
                parse_lines([msgspec.json.encode(line)], "update", allow_delete=True)
            except Exception as exc:  # InputError, or a shape nobody foresaw: skipped
                log.warning("catalog update %s refused: %s", m.subject, exc)
                continue
            by_catalog.setdefault(catalog, []).append((m.metadata.sequence.stream, u))
        for catalog, updates in by_catalog.items():
            try:
                changed = await retry_integrity(functools.partial(self._apply, catalog, updates))
            except (OperationalError, InterfaceError):
                raise  # the database is away: nothing is acked, the batch comes back
            except Exception as exc:  # one bad update must not hold the stream: one by one
                log.warning("catalog %s: a batch of updates failed (%s); one by one", catalog, exc)
                changed = []
                for one in updates:
                    try:
                        changed += await retry_integrity(
                            functools.partial(self._apply, catalog, [one])
                        )
                    except (OperationalError, InterfaceError):
                        raise
                    except Exception as exc1:
                        log.warning(
                            "catalog %s: update of %r dropped: %s", catalog, one[1].id, exc1
                        )
            if changed:
                await self._enqueue_changed(catalog, changed)

    async def _apply(self, catalog: str, updates: list[tuple[int, eq.CatalogUpdate]]) -> list[str]:
        """Returns the ids whose live text changed (to embed for running runs)."""
        changed: list[str] = []
        async with self.db.transaction() as s:
            # locked on PostgreSQL: replicas learning new fields at once never lose one
            cat = await s.get(CatalogRow, catalog, with_for_update=self.db.is_postgres)
            if cat is None:
                cat = CatalogRow(name=catalog, field_types=b"{}")
                s.add(cat)
                await s.flush()
            types: dict[str, str] = msgspec.json.decode(cat.field_types or b"{}")
            ids = sorted({u.id for _, u in updates})
            q = select(CatalogItem).where(
                CatalogItem.catalog == catalog, CatalogItem.product_id.in_(ids)
            )
            if self.db.is_postgres:  # two replicas share the consumer: newest seq wins, in order
                q = q.order_by(CatalogItem.product_id).with_for_update()
            rows = {r.product_id: r for r in (await s.execute(q)).scalars()}
            for seq, u in sorted(updates, key=lambda t: t[0]):
                if u.op == "upsert" and (why := _field_conflict(types, u.fields)):
                    log.warning("catalog %s: update of %r refused: %s", catalog, u.id, why)
                    continue
                row = rows.get(u.id)
                if row is not None and row.seq >= seq:
                    continue  # already applied (a redelivery) or overtaken by a newer change
                if row is None:
                    row = CatalogItem(
                        catalog=catalog, product_id=u.id, text="", digest="", deleted=True
                    )
                    s.add(row)
                    rows[u.id] = row
                row.seq = seq
                if u.op == "delete":
                    row.deleted = True
                    continue
                text = u.text or ""
                digest = eq.text_digest(text)
                if row.deleted or digest != row.digest:
                    changed.append(u.id)
                row.text, row.digest, row.deleted = text, digest, False
                row.fields = msgspec.json.encode(u.fields)
            cat.field_types = msgspec.json.encode(types)
        return changed

    async def _enqueue_changed(self, catalog: str, ids: list[str]) -> None:
        """Products whose text changed during a run are embedded for it too."""
        async with self.db.session() as s:
            runs = list(
                (
                    await s.execute(
                        select(EmbedRun).where(
                            EmbedRun.catalog == catalog, EmbedRun.state == "embedding"
                        )
                    )
                ).scalars()
            )
            for run in runs:
                q = _missing(run).where(CatalogItem.product_id.in_(ids))
                items = list((await s.execute(q)).scalars())
                await self._publish_jobs(run, items, await self._chunk(s, catalog))

    async def _chunk(self, s: AsyncSession, catalog: str) -> int:
        row = await s.get(CatalogRow, catalog)
        return row.chunk if row is not None else 64

    async def _publish_jobs(
        self, run: EmbedRun, items: list[CatalogItem], chunk: int, nonce: str = ""
    ) -> int:
        queue = self._queue()
        part: list[eq.JobItem] = []
        size = 0

        async def flush() -> None:
            if part:
                job = eq.EmbedJob(
                    catalog=run.catalog,
                    model=run.model,
                    version=run.version,
                    target=run.target,
                    run=run.id,
                    items=list(part),
                )
                await queue.publish_job(job, nonce=nonce)
                part.clear()

        for i in items:  # at most ``chunk`` products and ~MAX_JOB_BYTES per job (NATS max_payload)
            n = len(i.text.encode()) + 128
            if part and (len(part) >= chunk or size + n > MAX_JOB_BYTES):
                await flush()
                size = 0
            part.append(eq.JobItem(id=i.product_id, text=i.text, digest=i.digest))
            size += n
        await flush()
        return len(items)

    # ---- runs ------------------------------------------------------------------------------

    async def start_run(self, name: str, req: RunRequest, principal: Principal) -> RunInfo:
        """Start (or resume) re-embedding ``name`` for a model version: every product still
        lacking its vector goes out again (a resume re-sends what a dead letter dropped)."""
        if (req.promote or req.discard_vectors) and "promote" not in principal.scopes:
            raise ForbiddenError(
                f"token {principal.name!r} lacks 'promote' (promote or discard_vectors); "
                "send promote: false"
            )
        self._queue().require()
        async with self.db.session() as s:
            row = await s.get(CatalogRow, name)
            if row is None or row.model is None or row.index_name is None:
                raise ConflictError(
                    f"catalog {name!r} is not bound to a model: PUT /v1/catalogs/{name} first"
                )
            model, target, chunk = row.model, row.target, row.chunk
            version = req.version
        if version is None:
            pointer = await self.channels.pointer(model, row.channel)
            if pointer is None:
                raise ConflictError(f"{model}:{row.channel} points at no version; name one")
            version = pointer.version
        dim = await self._embedding_dim(model, version, target)

        async def attempt() -> int:
            async with self.db.transaction() as s:
                run = (
                    await s.execute(
                        select(EmbedRun).where(
                            EmbedRun.catalog == name,
                            EmbedRun.model == model,
                            EmbedRun.version == version,
                            EmbedRun.target == target,
                        )
                    )
                ).scalar_one_or_none()
                if run is None:
                    run = EmbedRun(
                        catalog=name,
                        model=model,
                        version=version,
                        target=target,
                        dim=dim,
                        state="embedding",
                        promote=req.promote,
                        reason="",
                    )
                    s.add(run)
                elif run.state == "embedding":  # a resume: what is missing is sent again
                    if run.promote and not req.promote and "promote" not in principal.scopes:
                        raise ForbiddenError("only a promoter may stop a run from promoting")
                    run.promote = req.promote
                elif run.state in ("done", "failed"):
                    claimed = await s.execute(
                        update(EmbedRun)
                        .where(EmbedRun.id == run.id, EmbedRun.state.in_(("done", "failed")))
                        .values(
                            state="embedding",
                            reason="",
                            promote=req.promote,
                            build_id=None,
                            index_version=None,
                            started_at=utcnow(),
                            finished_at=None,
                            claimed_at=None,
                        )
                    )
                    if claimed.rowcount != 1:  # type: ignore[attr-defined]
                        raise ConflictError(f"the run for {name} v{version} changed; try again")
                    await s.refresh(run)
                else:
                    raise ConflictError(f"the run for {name} v{version} is {run.state}")
                await s.flush()
                if req.discard_vectors:
                    await s.execute(
                        delete(CatalogVector).where(
                            CatalogVector.catalog == name,
                            CatalogVector.model == model,
                            CatalogVector.version == version,
                            CatalogVector.target == target,
                        )
                    )
                run.total = await _live(s, name)
                run.done = run.done_at_start = run.total - await _count(s, _missing(run))
                self.audit.record(
                    s, principal.name, "catalog.run", f"{name} v{version}", detail=target
                )
                await s.flush()
                return run.id

        run_id = await retry_integrity(attempt)
        async with self.db.session() as s:
            run = await s.get(EmbedRun, run_id)
            assert run is not None
        # the jobs go out in the background (a big catalog takes a while); a stalled run is
        # sent again by tick(), so a lost send is not lost work
        task = asyncio.create_task(self._send_missing(run, chunk, "." + utcnow().isoformat()))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return run_info(run)

    async def _send_missing(self, run: EmbedRun, chunk: int, nonce: str) -> None:
        try:
            async with self.db.session() as s:
                q = _missing(run).order_by(CatalogItem.product_id)
                items = list((await s.execute(q)).scalars())
            sent = await self._publish_jobs(run, items, chunk, nonce)
            log.info(
                "catalog %s v%s: run %s, %s products sent", run.catalog, run.version, run.id, sent
            )
        except Exception:
            log.exception("sending run %s's jobs (tick sends them again)", run.id)

    async def _embedding_dim(self, model: str, version: int, target: str) -> int:
        async with self.db.session() as s:
            v = await find_version(s, await find_model(s, model), version)
            bundle = (
                await s.execute(
                    select(Bundle).where(Bundle.version_id == v.id, Bundle.target == target)
                )
            ).scalar_one_or_none()
        if bundle is None:
            raise Unprocessable(f"{model} v{version} holds no {target} bundle to embed with")
        m = decode(bundle.manifest)
        if m.model.task != "embedding":
            raise Unprocessable(f"{model} is a {m.model.task} model; a catalog needs embeddings")
        return m.io.dim

    async def on_promote(self, model: str, channel: str, number: int, by: Principal) -> None:
        """A model version promoted to a catalog's stage channel re-embeds that catalog (in the
        background: the promotion answers at once). Central's own promotions start nothing, so
        two bindings can never promote each other in a loop."""
        if by.internal:
            return
        task = asyncio.create_task(self._runs_for(model, channel, number))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _runs_for(self, model: str, channel: str, number: int) -> None:
        async with self.db.session() as s:
            names = list(
                (
                    await s.execute(
                        select(CatalogRow.name).where(
                            CatalogRow.model == model, CatalogRow.stage_channel == channel
                        )
                    )
                ).scalars()
            )
        for name in names:
            try:
                async with self.db.session() as s:
                    row = await s.get(CatalogRow, name)
                    state = (
                        await s.execute(
                            select(EmbedRun.state).where(
                                EmbedRun.catalog == name,
                                EmbedRun.model == model,
                                EmbedRun.version == number,
                                EmbedRun.target == (row.target if row else ""),
                            )
                        )
                    ).scalar_one_or_none()
                if state is not None and state != "failed":
                    continue  # promoted again: its run exists (resume it by hand if need be)
                await self.start_run(name, RunRequest(version=number, promote=True), SYSTEM)
            except Exception:
                log.exception("re-embedding %s for %s v%s", name, model, number)

    # ---- vectors ---------------------------------------------------------------------------

    async def store_vectors(
        self, name: str, batch: VectorBatch, principal: Principal
    ) -> VectorsStored:
        eq.check_catalog_name(name)
        if len(batch.items) > MAX_VECTORS_PER_BATCH:
            raise Unprocessable(f"at most {MAX_VECTORS_PER_BATCH} vectors per request")
        async with self.db.session() as s:
            run = await s.get(EmbedRun, batch.run)
        if run is None or run.catalog != name:
            raise NotFoundError(f"no run {batch.run} of catalog {name!r}")
        if (run.model, run.version, run.target) != (batch.model, batch.version, batch.target):
            raise Unprocessable(
                f"run {run.id} embeds {run.model} v{run.version} {run.target}, not "
                f"{batch.model} v{batch.version} {batch.target}"
            )
        if run.state != "embedding":
            raise ConflictError(f"run {run.id} is {run.state}; it takes no more vectors")
        vectors = check_vectors(batch, run.dim)
        ids = list({k[0] for k in vectors})

        async def attempt() -> VectorsStored:
            async with self.db.transaction() as s:
                current = {
                    r.product_id: r
                    for r in (
                        await s.execute(
                            select(CatalogItem).where(
                                CatalogItem.catalog == name, CatalogItem.product_id.in_(ids)
                            )
                        )
                    ).scalars()
                }
                have = set(
                    (
                        await s.execute(
                            select(CatalogVector.product_id, CatalogVector.digest).where(
                                CatalogVector.catalog == name,
                                CatalogVector.model == run.model,
                                CatalogVector.version == run.version,
                                CatalogVector.target == run.target,
                                CatalogVector.product_id.in_(ids),
                            )
                        )
                    ).tuples()
                )
                stored = counted = 0
                for (pid, digest), raw in vectors.items():
                    item = current.get(pid)
                    if (pid, digest) in have or item is None or item.deleted:
                        continue
                    if item.digest != digest:
                        continue  # not the product's text now: nothing would use it
                    s.add(
                        CatalogVector(
                            catalog=name,
                            product_id=pid,
                            model=run.model,
                            version=run.version,
                            target=run.target,
                            digest=digest,
                            vector=raw,
                            written_by=principal.name,
                        )
                    )
                    stored += 1
                    counted += 1
                if counted:
                    await s.execute(
                        update(EmbedRun)
                        .where(EmbedRun.id == run.id)
                        .values(done=EmbedRun.done + counted)
                    )
                return VectorsStored(stored=stored, counted=counted, ignored=len(vectors) - stored)

        return await retry_integrity(attempt, attempts=5)

    # ---- completion ------------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("catalog runs")

    async def tick(self) -> None:
        """Every run that is open: recount (claim completion), take over a stale claim, send
        again what a stalled run misses. A transient error waits for the next tick."""
        async with self.db.session() as s:
            runs = list(
                (
                    await s.execute(
                        select(EmbedRun).where(
                            EmbedRun.state.in_(("embedding", "indexing", "promoting"))
                        )
                    )
                ).scalars()
            )
        for run in runs:
            try:
                if run.state == "embedding":
                    await self._recount(run)
                elif run.state == "indexing":
                    await self._check_index(run)
                elif _stale(run.claimed_at):  # a replica died while promoting: finish it
                    await self._promote(run, run.index_version)
            except (TimeoutError, OperationalError, InterfaceError) as exc:
                log.warning("run %s: %s; next tick", run.id, exc)
            except ShipyardError as exc:
                if exc.status >= 500:  # the broker, the blob store: transient
                    log.warning("run %s: %s; next tick", run.id, exc)
                    continue
                await self._fail(run.id, str(exc))
            except Exception as exc:
                log.exception("run %s", run.id)
                await self._fail(run.id, f"{type(exc).__name__}: {exc}")

    async def _recount(self, run: EmbedRun) -> None:
        async with self.db.session() as s:
            total = await _live(s, run.catalog)
            missing = await _count(s, _missing(run))
        done = total - missing
        complete = missing == 0 and total > 0
        now = utcnow()
        async with self.db.transaction() as s:
            values: dict = {"total": total, "done": done}
            if done != run.done or run.progress_at is None:
                values["progress_at"] = now
            if complete:
                values |= {"state": "indexing", "claimed_at": now}
            claimed = await s.execute(
                update(EmbedRun)
                .where(EmbedRun.id == run.id, EmbedRun.state == "embedding")
                .values(**values)
            )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return
        if complete:
            await self._build_index(run.id)
        elif _stale(values.get("progress_at", run.progress_at), STALL_S) and _stale(
            run.republished_at, STALL_S
        ):
            await self._resend(run)

    async def _resend(self, run: EmbedRun) -> None:
        """No progress for STALL_S: jobs were lost (dead letters, a failed send, a change made
        while the run was indexing). One replica claims it and sends what is missing."""
        async with self.db.transaction() as s:
            claimed = await s.execute(
                update(EmbedRun)
                .where(
                    EmbedRun.id == run.id,
                    EmbedRun.state == "embedding",
                    (EmbedRun.republished_at.is_(None))
                    | (EmbedRun.republished_at < utcnow() - dt.timedelta(seconds=STALL_S)),
                )
                .values(republished_at=utcnow())
            )
            row = await s.get(CatalogRow, run.catalog)
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            log.warning(
                "run %s made no progress for %.0f s: sending what is missing", run.id, STALL_S
            )
            await self._send_missing(run, row.chunk if row else 64, "." + utcnow().isoformat())

    async def _build_index(self, run_id: int) -> None:
        """The catalog and its vectors, row for row, as an index build."""
        async with self.db.session() as s:
            run = await s.get(EmbedRun, run_id)
            row = await s.get(CatalogRow, run.catalog) if run else None
            assert run is not None and row is not None and row.index_name is not None
            rows = (
                await s.execute(
                    select(CatalogItem, CatalogVector.vector)
                    .join(CatalogVector, _vector_of(run))
                    .where(CatalogItem.catalog == run.catalog, CatalogItem.deleted.is_(False))
                    .order_by(CatalogItem.product_id)
                )
            ).all()
            live = await _live(s, run.catalog)
        if len(rows) != live:  # a product changed since the recount: embed it first
            async with self.db.transaction() as s:
                await s.execute(
                    update(EmbedRun)
                    .where(EmbedRun.id == run_id, EmbedRun.state == "indexing")
                    .values(state="embedding")
                )
            return
        if not rows:
            raise ConflictError("the catalog has no products")
        lines = b"".join(
            msgspec.json.encode(
                {"id": it.product_id, "text": it.text, "fields": _fields(it.fields)}
            )
            + b"\n"
            for it, _ in rows
        )
        matrix = np.frombuffer(b"".join(v for _, v in rows), "<f4").reshape(len(rows), run.dim)
        buf = io.BytesIO()
        np.save(buf, matrix.astype(np.float32), allow_pickle=False)
        vec_bytes = buf.getvalue()
        cat_digest, vec_digest = sha256_bytes(lines), sha256_bytes(vec_bytes)
        await self.blobs.put(cat_digest, _chunks(lines), SYSTEM.name)
        await self.blobs.put(vec_digest, _chunks(vec_bytes), SYSTEM.name)
        created = await self.builds.submit(
            BuildRequest(
                model=row.index_name,
                task="index",
                source_blob=cat_digest,
                targets=[INDEX_TARGET],
                index=IndexJob(
                    model=run.model, version=run.version, target=run.target, vectors_blob=vec_digest
                ),
            ),
            SYSTEM,
        )
        async with self.db.transaction() as s:
            await s.execute(
                update(EmbedRun).where(EmbedRun.id == run_id).values(build_id=created.build_id)
            )
        log.info(
            "catalog %s v%s: all %s embedded; index build %s",
            run.catalog,
            run.version,
            len(rows),
            created.build_id,
        )

    async def _check_index(self, run: EmbedRun) -> None:
        if run.build_id is None:
            if _stale(run.claimed_at):  # the claiming replica died before submitting
                async with self.db.transaction() as s:
                    await s.execute(
                        update(EmbedRun)
                        .where(EmbedRun.id == run.id, EmbedRun.state == "indexing")
                        .values(state="embedding", claimed_at=None)
                    )
            return  # else the claiming replica is still submitting
        info = await self.builds.get(run.build_id)
        if info.state.open:
            return
        if info.state.value not in ("passed", "partial") or info.version is None:
            await self._fail(
                run.id, f"index build {run.build_id} {info.state.value}: {info.detail}"
            )
            return
        async with self.db.transaction() as s:
            claimed = await s.execute(
                update(EmbedRun)
                .where(EmbedRun.id == run.id, EmbedRun.state == "indexing")
                .values(state="promoting", index_version=info.version, claimed_at=utcnow())
            )
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            await self._promote(run, info.version)

    async def _promote(self, run: EmbedRun, index_version: int | None) -> None:
        """The model version, then its index, to the serving channel (idempotent: a replica
        taking a stale claim over skips what is done). Nodes hold a model update until its
        index is there (``hold_swap_s``), so the pair switches together; if the index cannot
        follow, the model is rolled back."""
        async with self.db.session() as s:
            row = await s.get(CatalogRow, run.catalog)
        if row is None or row.index_name is None or index_version is None:
            raise ConflictError(f"catalog {run.catalog!r} lost its binding")
        if run.promote:
            model_at = await self.channels.pointer(run.model, row.channel)
            moved = model_at is None or model_at.version != run.version
            if moved:
                await self.channels.promote(run.model, row.channel, run.version, SYSTEM)
            index_at = await self.channels.pointer(row.index_name, row.channel)
            if index_at is None or index_at.version != index_version:
                try:
                    await self.channels.promote(row.index_name, row.channel, index_version, SYSTEM)
                except Exception:  # never leave the model ahead of an index that did not follow
                    if moved:
                        with contextlib.suppress(Exception):
                            await self.channels.rollback(run.model, row.channel, SYSTEM)
                    raise
        async with self.db.transaction() as s:
            await s.execute(
                update(EmbedRun)
                .where(EmbedRun.id == run.id, EmbedRun.state == "promoting")
                .values(state="done", finished_at=utcnow())
            )
        log.info(
            "catalog %s: index v%s built from v%s vectors%s",
            run.catalog,
            index_version,
            run.version,
            f"; both promoted to {row.channel}" if run.promote else "",
        )

    async def _fail(self, run_id: int, reason: str) -> None:
        async with self.db.transaction() as s:
            await s.execute(
                update(EmbedRun)
                .where(
                    EmbedRun.id == run_id,
                    EmbedRun.state.in_(("embedding", "indexing", "promoting")),
                )
                .values(state="failed", reason=reason[:2000], finished_at=utcnow())
            )
        log.warning("run %s failed: %s", run_id, reason)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    step = 8 << 20
    for i in range(0, len(data), step):
        yield data[i : i + step]


async def _index_owners(s: AsyncSession, index: str) -> list[str]:
    """The catalogs shipping ``index`` (one, or none; several only from before a binding was
    refused for that)."""
    owners = await s.execute(
        select(CatalogRow.name).where(CatalogRow.index_name == index).order_by(CatalogRow.name)
    )
    return list(owners.scalars())


async def _check_names(
    s: AsyncSession, name: str, row: CatalogRow | None, b: CatalogBinding
) -> None:
    """A catalog owns its index name for good; it never takes another catalog's index, a model
    that is not an index (edges and embed workers pull it), nor embeds with an index."""
    owners = await _index_owners(s, b.index)
    if owners and name not in owners:  # it would publish over their index
        raise ConflictError(f"index {b.index!r} belongs to another catalog")
    if await _index_owners(s, b.model) or await _has_bundles(s, b.model, index=True):
        raise ConflictError(f"{b.model!r} is an index, not an embedding model")
    if row is not None and row.index_name not in (None, b.index):
        # its old index keeps this catalog's texts: the name stays this catalog's
        raise ConflictError(
            f"catalog {name!r} ships index {row.index_name!r}; an index name is kept for good "
            "(bind a new catalog for a new index)"
        )
    if not owners and await _not_an_index(s, b.index):
        raise ConflictError(
            f"{b.index!r} is a model that is not an index (a catalog's index needs a name of "
            "its own, or an index's)"
        )


async def _has_bundles(s: AsyncSession, name: str, *, index: bool) -> bool:
    """Model ``name`` has an index bundle (``index``), or a bundle that is not an index's."""
    kind = Bundle.target == INDEX_TARGET if index else Bundle.target != INDEX_TARGET
    found = await s.execute(
        select(Bundle.id)
        .join(Version, Bundle.version_id == Version.id)
        .join(Model, Version.model_id == Model.id)
        .where(Model.name == name, kind)
        .limit(1)
    )
    return found.first() is not None


async def _not_an_index(s: AsyncSession, name: str) -> bool:
    """``name`` is some catalog's embedding model, or a model with a bundle not an index's
    (an existing index, built before its catalog was bound, may be adopted)."""
    embeds = await s.execute(select(CatalogRow.name).where(CatalogRow.model == name).limit(1))
    return embeds.first() is not None or await _has_bundles(s, name, index=False)
