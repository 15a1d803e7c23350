"""The catalog queue contract (NATS JetStream): stream and subject names, message types, and
the few calls producers and consumers share. Light: ``nats-py`` only, imported when used.

Three streams:

- ``CATALOG_UPDATES`` (``catalog.updates.<catalog>``): product upserts and deletes from the
  shop's systems (``artifact catalog publish``, ``POST /v1/catalogs/{name}/items``). Central
  consumes it into its catalog table. Kept (limits retention), deduplicated by message id.
- ``EMBED_JOBS`` (``embed.jobs.<catalog>``): chunks of products to embed with one model
  version; a work queue (each message is removed once a consumer acks it).
- ``EMBED_DEAD`` (``embed.dead.<catalog>``): jobs that failed ``max_deliver`` times or could
  not be parsed, with the reason in a header; kept for an operator.

Delivery is at least once; every write a message causes is idempotent (a catalog row by
product id and stream sequence, a vector by product id + model version + text digest), so a
redelivery, a duplicate publish or a consumer killed mid-batch never loses or doubles a product.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable
from typing import Any, Literal

import msgspec

from artifacts.digests import sha256_bytes
from artifacts.errors import InputError, ShipyardError
from artifacts.names import check_name

UPDATES_STREAM = "CATALOG_UPDATES"
JOBS_STREAM = "EMBED_JOBS"
DEAD_STREAM = "EMBED_DEAD"
DEDUP_WINDOW_S = 600.0  # a re-sent publish within this window is stored once
MSG_ID = "Nats-Msg-Id"
REASON = "Shipyard-Reason"
MAX_TEXT_CHARS = 32_768  # a product text (a model reads its first few hundred tokens of it)
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
log = logging.getLogger("shipyard.queue")
INSTALL_HINT = "the catalog queue needs nats-py: pip install nats-py"


def updates_subject(catalog: str) -> str:
    return f"catalog.updates.{catalog}"


def jobs_subject(catalog: str) -> str:
    return f"embed.jobs.{catalog}"


def dead_subject(catalog: str) -> str:
    return f"embed.dead.{catalog}"


class QueueUnavailable(ShipyardError):
    """The broker cannot be reached or refused a publish."""

    status = 503


class CatalogUpdate(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One product change on ``catalog.updates.<catalog>``."""

    op: Literal["upsert", "delete"]
    id: str
    text: str | None = None
    fields: dict[str, Any] = {}


class JobItem(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, array_like=True):
    id: str
    text: str
    digest: str  # sha256 of the text: the vector is stored under it


class EmbedJob(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A chunk of products to embed with one model version's bundle ``target``."""

    catalog: str
    model: str
    version: int
    target: str
    run: int  # the run (central's re-embedding of one version) this chunk belongs to
    items: list[JobItem]


def text_digest(text: str) -> str:
    """Hex sha256 of the text (64 characters): part of a stored vector's key."""
    return hashlib.sha256(text.encode()).hexdigest()


def is_text_digest(value: str) -> bool:
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def update_msg_id(catalog: str, batch_id: str, position: int) -> str:
    """A change is named by the batch it came in (a file's digest, a request's change id) and
    its position there: the same batch published again is stored once (within the dedup
    window), while a later change back to an earlier value is not mistaken for a repeat."""
    return sha256_bytes(f"{catalog}\0{batch_id}\0{position}".encode())


def check_catalog_name(name: str) -> str:
    """A registry name without dots (a catalog names NATS subjects and consumers)."""
    check_name(name, "catalog name")
    if "." in name:
        raise InputError(f"catalog name {name!r}: no dots (it is part of NATS subjects)")
    return name


def updates_from_lines(lines: list[bytes], source: str) -> list[CatalogUpdate]:
    """JSONL products ({id, text, fields?}) and deletes ({id, delete: true}), checked whole
    (every error names its line; no NUL in any text)."""
    from artifacts.catalog import CatalogError, parse_lines

    try:
        cat = parse_lines(lines, source, allow_delete=True)
    except CatalogError as exc:
        raise InputError(str(exc)) from exc
    for i, text in enumerate(cat.texts):
        if "\x00" in text or len(text) > MAX_TEXT_CHARS:
            raise InputError(
                f"{source}: the text of {cat.ids[i]!r} holds a NUL character or is over "
                f"{MAX_TEXT_CHARS} characters"
            )
    updates = [
        CatalogUpdate(
            op="upsert",
            id=cat.ids[i],
            text=cat.texts[i],
            fields={n: c.values[i] for n, c in cat.fields.items() if c.values[i] is not None},
        )
        for i in range(len(cat.ids))
    ]
    return updates + [CatalogUpdate(op="delete", id=d) for d in cat.deletes]


def redact(url: str) -> str:
    """A NATS URL list as it may be shown (credentials and tokens left out)."""
    return ",".join(re.sub(r"^(\w+://)?[^@]*@", r"\1***@", u.strip()) for u in url.split(","))


def job_msg_id(job: EmbedJob) -> str:
    """Keyed by what the job writes (product id + model version + text digest per item)."""
    body = b"".join(f"{i.id}\0{i.digest}\n".encode() for i in job.items)
    head = f"{job.catalog}\0{job.model}\0{job.version}\0{job.target}\0".encode()
    return sha256_bytes(head + body)


def decode_update(data: bytes) -> CatalogUpdate:
    try:
        update = msgspec.json.decode(data, type=CatalogUpdate)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InputError(f"not a catalog update: {exc}") from exc
    if update.op == "upsert" and not (update.text or "").strip():
        raise InputError(f"upsert of {update.id!r} has no text")
    if "\x00" in (update.text or "") or len(update.text or "") > MAX_TEXT_CHARS:
        raise InputError(
            f"upsert of {update.id!r}: the text holds a NUL or is over {MAX_TEXT_CHARS} characters"
        )
    return update


def decode_job(data: bytes) -> EmbedJob:
    try:
        return msgspec.json.decode(data, type=EmbedJob)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InputError(f"not an embed job: {exc}") from exc


def _nats():
    try:
        import nats
    except ImportError as exc:  # pragma: no cover - nats-py is a core dependency
        raise ShipyardError(INSTALL_HINT) from exc
    return nats


async def connect(url: str, *, name: str, connect_timeout_s: float = 5.0):
    """A NATS connection that keeps reconnecting (a broker restart is ridden out)."""
    nats = _nats()
    servers = [u.strip() for u in url.split(",") if u.strip()]
    try:
        return await nats.connect(
            servers=servers,
            name=name,
            connect_timeout=connect_timeout_s,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            allow_reconnect=True,
        )
    except Exception as exc:
        raise QueueUnavailable(f"cannot reach NATS at {redact(url)}: {type(exc).__name__}") from exc


class Broker:
    """One NATS connection, made in the background and kept (nats-py reconnects after a broker
    restart), shared by central's queue and the edge's embed worker."""

    def __init__(self, url: str, name: str) -> None:
        self.url, self.name = url, name
        self.nc: Any = None
        self.js: Any = None
        self.error = "not connected yet"

    @property
    def connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    async def jetstream(self):
        """The JetStream context, once connected and the streams exist (retries every 2 s)."""
        import asyncio

        while self.js is None:
            try:
                nc = await connect(self.url, name=self.name)
                js = nc.jetstream(timeout=10.0)
                await ensure_streams(js)
                self.nc, self.js, self.error = nc, js, ""
            except Exception as exc:
                self.error = str(exc)
                log.warning("%s: %s; retrying", self.name, exc)
                await asyncio.sleep(2.0)
        return self.js

    async def close(self, tasks: Iterable) -> None:
        """Cancel ``tasks`` (the consumers), wait for them, close the connection."""
        import asyncio
        import contextlib

        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()


async def ensure_streams(js) -> None:
    """Create the three streams if missing (an existing stream's settings are kept)."""
    from nats.js.api import RetentionPolicy, StorageType, StreamConfig
    from nats.js.errors import NotFoundError

    wanted = (
        StreamConfig(
            name=UPDATES_STREAM,
            subjects=["catalog.updates.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=DEDUP_WINDOW_S,
            max_age=7 * 24 * 3600.0,
        ),
        StreamConfig(
            name=JOBS_STREAM,
            subjects=["embed.jobs.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=DEDUP_WINDOW_S,
        ),
        StreamConfig(
            name=DEAD_STREAM,
            subjects=["embed.dead.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=30 * 24 * 3600.0,
        ),
    )
    for cfg in wanted:
        try:
            await js.stream_info(cfg.name)
        except NotFoundError:
            await js.add_stream(config=cfg)


async def publish(js, subject: str, payload: bytes, msg_id: str, headers: dict | None = None):
    """Publish with a message id (the broker drops a duplicate); returns whether it was one."""
    try:
        ack = await js.publish(subject, payload, headers={MSG_ID: msg_id, **(headers or {})})
    except Exception as exc:
        raise QueueUnavailable(f"publishing to {subject} failed: {exc}") from exc
    return bool(getattr(ack, "duplicate", False))


async def publish_updates(
    js, catalog: str, updates: Iterable[CatalogUpdate], batch_id: str
) -> tuple[int, int]:
    """Publish product changes; (stored, duplicates). Waits for every ack (at most 256 at once).
    ``batch_id``: what the changes came in (see :func:`update_msg_id`)."""
    import asyncio

    subject = updates_subject(catalog)
    stored = dups = 0
    pending: list = []

    async def drain() -> None:
        nonlocal stored, dups
        for dup in await asyncio.gather(*pending):
            dups += dup
            stored += not dup
        pending.clear()

    for position, u in enumerate(updates):
        payload = msgspec.json.encode(u)
        pending.append(publish(js, subject, payload, update_msg_id(catalog, batch_id, position)))
        if len(pending) >= 256:
            await drain()
    await drain()
    return stored, dups


async def dead_letters(js, catalog: str) -> int:
    """How many jobs of ``catalog`` sit in the dead-letter stream."""
    from nats.js.errors import NotFoundError

    subject = dead_subject(catalog)
    try:
        info = await js.stream_info(DEAD_STREAM, subjects_filter=subject)
    except NotFoundError:
        return 0
    subjects = info.state.subjects or {}
    return int(subjects.get(subject, 0))
