"""Catalog indexes built by the build service: ``POST /v1/indexes`` (a full index) and
``PUT/DELETE /v1/indexes/{name}/items`` (a cumulative delta), as builds of task ``index``.

An index job is leased, built, signed and then re-checked by a *different* worker like any
build job; what differs is its inputs: the catalog (a blob) and registered bundles — the
embedding model bundle (the version lock), and for a delta its base and newest delta —
handed to the worker exactly as they were signed, so it verifies them before use.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import msgspec
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts.catalog import CatalogError, parse_lines, read_catalog
from artifacts.digests import is_digest, sha256_bytes
from artifacts.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    ShipyardError,
    Unprocessable,
)
from artifacts.manifest import Manifest, decode
from artifacts.names import check_name
from artifacts.signing import TrustedKeys
from artifacts.targets import INDEX_TARGET
from artifacts.wire import (
    BuildCreated,
    BuildRequest,
    BundleToVerify,
    IndexBuildRequest,
    IndexItems,
    IndexJob,
)
from central.auth.service import Principal
from central.blobs.service import BlobService
from central.registry.models import Bundle, Version
from central.registry.service import find_model, find_version
from central.workers.models import Worker

Trusted = Callable[[], Awaitable[TrustedKeys]]  # the publisher keys trusted now
MAX_ITEMS_PER_CHANGE = 100_000


async def _bundle(s: AsyncSession, model: str, number: int, target: str) -> Bundle:
    v = await find_version(s, await find_model(s, model), number)
    row = (
        await s.execute(select(Bundle).where(Bundle.version_id == v.id, Bundle.target == target))
    ).scalar_one_or_none()
    if row is None:
        raise NotFoundError(f"{model} v{number} holds no {target} bundle")
    return row


def _index_of(row: Bundle, what: str) -> Manifest:
    m = decode(row.manifest)
    if m.index is None:
        raise Unprocessable(f"{what} is not a catalog index")
    return m


def check_index_shape(req: BuildRequest) -> IndexJob:
    """What an index build request may hold, before anything is looked up."""
    spec = req.index
    if req.task != "index" or spec is None:
        raise Unprocessable("a build of task 'index' needs 'index' (and 'index' needs that task)")
    if req.targets != [INDEX_TARGET]:
        raise Unprocessable(f"an index build has exactly one target: {INDEX_TARGET}")
    if req.calibration_blob or req.eval_blob or req.into_version:
        raise Unprocessable("an index build takes no calibration, eval or into_version")
    if set(req.thresholds) - {"recall_at_10"} or not all(
        0 < v <= 1 for v in req.thresholds.values()
    ):
        raise Unprocessable("an index build's only threshold is recall_at_10, in (0, 1]")
    check_name(spec.model, "model name")
    if spec.previous_version and not spec.base_version:
        raise Unprocessable("previous_version needs base_version")
    return spec


async def _check_input_blobs(spec: IndexJob, blobs: BlobService, principal: Principal) -> None:
    if spec.queries_blob is not None:
        if not is_digest(spec.queries_blob):
            raise Unprocessable(f"queries_blob {spec.queries_blob!r} is not a sha256 digest")
        await blobs.require(spec.queries_blob, "queries")
    if spec.vectors_blob is not None:
        if not principal.internal:  # vectors embedded elsewhere come from the catalog queue only
            raise ForbiddenError("vectors_blob is central's own (catalog runs), not an API input")
        if spec.base_version or not is_digest(spec.vectors_blob):
            raise Unprocessable("vectors_blob is a sha256 digest, for a full index only")
        await blobs.require(spec.vectors_blob, "vectors")


async def check_index_request(
    s: AsyncSession, req: BuildRequest, blobs: BlobService, principal: Principal, keys: Trusted
) -> None:
    """An index build names a registered embedding bundle, and a delta a full index of the
    same name embedded with it (and optionally that base's newest delta), each promoted once
    or the caller's own; every input bundle can be handed to a worker with its signer's key."""
    spec = check_index_shape(req)
    await _check_input_blobs(spec, blobs, principal)
    try:
        model = decode((await _bundle(s, spec.model, spec.version, spec.target)).manifest)
        if spec.base_version:
            base = _index_of(await _bundle(s, req.model, spec.base_version, INDEX_TARGET), "base")
        if spec.previous_version:
            prev = _index_of(
                await _bundle(s, req.model, spec.previous_version, INDEX_TARGET), "previous"
            )
    except NotFoundError as exc:
        raise Unprocessable(str(exc)) from exc
    if model.model.task != "embedding":
        raise Unprocessable(f"{spec.model} is a {model.model.task} model, not an embedding model")
    if spec.base_version:
        _check_lineage(req, spec, base, prev if spec.previous_version else None)
        for number in filter(None, (spec.base_version, spec.previous_version)):
            await _check_own_or_promoted(s, req.model, number, principal)
    try:
        await input_bundles(s, req, keys)
    except ShipyardError as exc:
        raise Unprocessable(f"an input bundle cannot be handed to a worker: {exc}") from exc


def _usable(v: Version, principal: Principal) -> bool:
    """A version a change may build on: promoted once (sealed), or the caller's own."""
    return v.sealed or v.created_by == principal.name or "admin" in principal.scopes


async def _check_own_or_promoted(
    s: AsyncSession, name: str, number: int, principal: Principal
) -> None:
    v = await find_version(s, await find_model(s, name), number)
    if not _usable(v, principal):
        raise ForbiddenError(
            f"{name} v{number} was never promoted and is {v.created_by!r}'s: a change builds on "
            "a promoted index version or your own"
        )


def _check_lineage(
    req: BuildRequest, spec: IndexJob, base: Manifest, prev: Manifest | None
) -> None:
    """A delta applies to a full index embedded with the same model bundle, and accumulates
    that base's newest delta."""
    assert base.index is not None
    lock = base.index.model
    if base.index.base_version:
        raise Unprocessable(f"{req.model} v{spec.base_version} is a delta, not a full index")
    if (lock.name, lock.version, lock.target) != (spec.model, spec.version, spec.target):
        raise Unprocessable(
            f"{req.model} v{spec.base_version} was embedded with {lock.name} "
            f"v{lock.version} {lock.target}, not {spec.model} v{spec.version} {spec.target}"
        )
    if prev is not None:
        assert prev.index is not None
        if prev.index.base_version != spec.base_version:
            raise Unprocessable(
                f"{req.model} v{spec.previous_version} is not a delta of v{spec.base_version}"
            )


async def check_kind(s: AsyncSession, req: BuildRequest) -> None:
    """A name holds models or catalog indexes, never both: an index build cannot add versions
    to a model's name (and a channel of it), nor a model build to an index's."""
    want_index = req.task == "index"
    try:
        m = await find_model(s, req.model)
    except NotFoundError:
        return
    rows = (
        await s.execute(
            select(Bundle.target)
            .join(Version, Version.id == Bundle.version_id)
            .where(Version.model_id == m.id)
            .limit(1)
        )
    ).scalars()
    held = next(iter(rows), None)
    if held is not None and (held == INDEX_TARGET) != want_index:
        kind = "catalog indexes" if held == INDEX_TARGET else "models"
        raise ConflictError(f"{req.model!r} holds {kind}; choose another name")


class CatalogCheck:
    """Parse a catalog at submit, so a malformed line is a 422 naming it, not a failed job:
    one parse at a time per replica (a catalog is held in memory while parsed), and a catalog
    that parsed once is not parsed again."""

    def __init__(self, remember: int = 256) -> None:
        self._gate = anyio.Semaphore(1)
        self._passed: OrderedDict[tuple[str, bool], None] = OrderedDict()
        self._remember = remember

    async def __call__(self, digest: str, path: Path, *, delta: bool) -> None:
        key = (digest, delta)
        if key in self._passed:
            return
        async with self._gate:
            try:
                await anyio.to_thread.run_sync(lambda: read_catalog(path, allow_delete=delta))
            except CatalogError as exc:
                raise Unprocessable(f"catalog refused: {exc}") from exc
        self._passed[key] = None
        while len(self._passed) > self._remember:
            self._passed.popitem(last=False)


def _pem(key) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


async def _signed(s: AsyncSession, row: Bundle, keys: Trusted) -> BundleToVerify:
    """A registered bundle as it was signed, with the key that signed it: the building worker's
    registered key, or the trusted publisher key of a pushed bundle."""
    if row.built_by:
        w = (await s.execute(select(Worker).where(Worker.name == row.built_by))).scalar_one()
        if w.disabled_at is not None:
            raise ForbiddenError(
                f"it was built by {w.name}, which is disabled: {w.disabled_reason}"
            )
        if not w.public_key or w.key_id != row.key_id:
            raise ConflictError(
                f"it was signed by {w.name}'s key {row.key_id}, which that worker no longer has "
                "(its key was reset): rebuild it"
            )
        signer, pem = w.name, w.public_key
    else:
        signer, pem = "publisher", _pem((await keys()).key(row.key_id))
    return BundleToVerify(
        manifest=base64.b64encode(row.manifest).decode(),
        signature=row.signature,
        builder=signer,
        builder_key=pem,
    )


async def input_bundles(
    s: AsyncSession, req: BuildRequest, keys: Trusted
) -> dict[str, BundleToVerify]:
    spec = req.index
    if spec is None:
        return {}
    wanted = {"model": (spec.model, spec.version, spec.target)}
    if spec.base_version:
        wanted["base"] = (req.model, spec.base_version, INDEX_TARGET)
    if spec.previous_version:
        wanted["previous"] = (req.model, spec.previous_version, INDEX_TARGET)
    return {k: await _signed(s, await _bundle(s, *ref), keys) for k, ref in wanted.items()}


# ---- the /v1/indexes surface ----------------------------------------------------------------


async def _version_of(s: AsyncSession, model: str, version: int | None, channel: str | None) -> int:
    from central.channels.models import Channel

    if (version is None) == (channel is None):
        raise Unprocessable("name exactly one of version or channel")
    if version is not None:
        return version
    m = await find_model(s, model)
    row = (
        await s.execute(select(Channel).where(Channel.model_id == m.id, Channel.name == channel))
    ).scalar_one_or_none()
    if row is None or row.version is None:
        raise Unprocessable(f"channel {model}:{channel} points at no version")
    return row.version


async def _newest_index(s: AsyncSession, name: str, principal: Principal) -> int:
    try:
        m = await find_model(s, name)
    except NotFoundError:
        raise NotFoundError(f"index {name!r} not found: POST /v1/indexes first") from None
    versions = (
        await s.execute(
            select(Version)
            .join(Bundle, Bundle.version_id == Version.id)
            .where(Version.model_id == m.id, Bundle.target == INDEX_TARGET)
            .order_by(Version.number.desc())
        )
    ).scalars()
    newest = next((v.number for v in versions if _usable(v, principal)), None)
    if newest is None:
        raise NotFoundError(
            f"{name} holds no index yet that was promoted or is yours: POST /v1/indexes first"
        )
    return newest


class IndexService:
    """Turns the index routes into builds (``BuildService.submit`` does the rest)."""

    def __init__(self, builds, blobs: BlobService) -> None:
        self.builds = builds
        self.blobs = blobs

    async def create(self, req: IndexBuildRequest, principal: Principal) -> BuildCreated:
        check_name(req.name, "index name")
        try:
            async with self.builds.db.session() as s:
                version = await _version_of(s, req.model, req.version, req.channel)
        except NotFoundError as exc:
            raise Unprocessable(str(exc)) from exc
        build = BuildRequest(
            model=req.name,
            task="index",
            source_blob=req.catalog_blob,
            targets=[INDEX_TARGET],
            thresholds={}
            if req.recall_threshold is None
            else {"recall_at_10": req.recall_threshold},
            promote_to=req.promote_to,
            worker_deadline_s=req.worker_deadline_s,
            index=IndexJob(
                model=req.model, version=version, target=req.target, queries_blob=req.queries_blob
            ),
        )
        return await self.builds.submit(build, principal)

    async def change(
        self, name: str, change: IndexItems, principal: Principal, *, delete: bool
    ) -> BuildCreated:
        """A delta of ``change`` over the chosen index version (its base if that is a delta)."""
        records = [{"id": i, "delete": True} for i in change.ids] if delete else change.items
        if (delete and change.items) or (not delete and change.ids):
            raise Unprocessable("PUT takes items, DELETE takes ids")
        if not delete and any("delete" in r for r in change.items):
            raise Unprocessable("PUT items are products; remove products with DELETE and ids")
        if not records:
            raise Unprocessable("no items" if not delete else "no ids")
        if len(records) > MAX_ITEMS_PER_CHANGE:
            raise Unprocessable(f"at most {MAX_ITEMS_PER_CHANGE} items per change")
        check_name(name, "index name")
        async with self.builds.db.session() as s:
            try:
                number = (
                    await _version_of(s, name, change.version, change.channel)
                    if change.version is not None or change.channel is not None
                    else await _newest_index(s, name, principal)
                )
                chosen = _index_of(
                    await _bundle(s, name, number, INDEX_TARGET), f"{name} v{number}"
                )
            except NotFoundError as exc:
                raise Unprocessable(str(exc)) from exc
        spec = chosen.index
        assert spec is not None
        base, previous = (spec.base_version, number) if spec.base_version else (number, 0)
        body = b"".join(msgspec.json.encode(r) + b"\n" for r in records)
        try:  # refused here, before anything is stored
            parse_lines(body.splitlines(), "items", allow_delete=delete)
        except CatalogError as exc:
            raise Unprocessable(f"change refused: {exc}") from exc
        digest = sha256_bytes(body)
        await self.blobs.put(digest, _once(body), principal.name)
        build = BuildRequest(
            model=name,
            task="index",
            source_blob=digest,
            targets=[INDEX_TARGET],
            promote_to=change.promote_to,
            worker_deadline_s=change.worker_deadline_s,
            index=IndexJob(
                model=spec.model.name,
                version=spec.model.version,
                target=spec.model.target,
                base_version=base,
                previous_version=previous,
            ),
        )
        return await self.builds.submit(build, principal)


async def _once(data: bytes):
    yield data
