"""Enrolled build workers.

An admin enrols a worker by name with the targets it may build (and, optionally, the
capabilities its host must show); that issues one credential bound to the name. On its first
start the worker generates its own ECDSA key pair and registers the public key; from then on
every bundle and attestation it produces is signed with it, and central accepts results only
with that signature. A credential cannot act as another worker. Disabling a worker revokes its
credentials and quarantines what it built: channels pointing at those versions halt, saying why;
its unverified results are failed, its cache entries dropped, the jobs it held go back a step.
Re-enrolling a disabled worker forgets its key: the host may be compromised, so it registers a
new one.
"""

from __future__ import annotations

import msgspec
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from artifacts.errors import ConflictError, ForbiddenError, InputError, NotFoundError
from artifacts.names import check_name
from artifacts.signing import TrustedKeys, key_id_of, public_key_from_pem
from artifacts.states import JobState
from artifacts.targets import WORKER_TARGETS, NodeCapabilities
from artifacts.wire import WorkerHello, WorkerInfo
from central.audit.service import AuditLog
from central.auth.service import Principal, TokenService
from central.builds.finalize import Finalizer
from central.builds.models import BuildCache, Job
from central.channels.models import Channel
from central.channels.service import ChannelService
from central.db import Database, iso, utcnow
from central.registry.models import Bundle, Model, Version
from central.workers.models import Worker

WORKER_SCOPES = ["build"]


def capability_mismatch(requires: dict, caps: NodeCapabilities) -> str:
    """Why an advertised host does not match what the worker was enrolled with ("" if it does)."""
    problems = []
    if requires.get("arch") and caps.arch != requires["arch"]:
        problems.append(f"arch {caps.arch or '?'} (enrolled: {requires['arch']})")
    want_ccs = sorted({g["compute_capability"] for g in requires.get("gpus") or []})
    have_ccs = sorted({g.compute_capability for g in caps.gpus})
    if want_ccs and have_ccs != want_ccs:
        problems.append(f"GPUs sm {have_ccs or 'none'} (enrolled: {want_ccs})")
    if requires.get("tensorrt") and caps.tensorrt != requires["tensorrt"]:
        problems.append(f"TensorRT {caps.tensorrt or 'none'} (enrolled: {requires['tensorrt']})")
    return "; ".join(problems)


def worker_info(w: Worker) -> WorkerInfo:
    return WorkerInfo(
        name=w.name,
        allowed_targets=list(w.allowed_targets),
        targets=list(w.targets),
        key_id=w.key_id,
        enrolled_at=iso(w.enrolled_at),
        last_seen=iso(w.last_seen),
        disabled=w.disabled_at is not None,
        disabled_reason=w.disabled_reason,
        toolchain=dict(w.toolchain),
    )


class WorkerService:
    def __init__(
        self,
        db: Database,
        tokens: TokenService,
        channels: ChannelService,
        audit: AuditLog,
        finalizer: Finalizer,
    ) -> None:
        self.db = db
        self.tokens = tokens
        self.channels = channels
        self.audit = audit
        self.finalizer = finalizer

    @staticmethod
    async def find(s: AsyncSession, name: str) -> Worker:
        w = (await s.execute(select(Worker).where(Worker.name == name))).scalar_one_or_none()
        if w is None:
            raise NotFoundError(f"worker {name!r} is not enrolled (`central workers enroll`)")
        return w

    async def enroll(self, name: str, targets: list[str], requires: dict | None, actor: str) -> str:
        """(Re-)enrol ``name``: its allowed targets, a fresh credential (earlier ones revoked)."""
        check_name(name, "worker name")
        bad = [t for t in targets if t not in WORKER_TARGETS]
        if bad or not targets:
            raise InputError(
                f"targets {bad or '(none)'} cannot be built; choose from {', '.join(WORKER_TARGETS)}"
            )
        if requires is not None:  # a NodeCapabilities document (from `edge-runtime probe --json`)
            requires = msgspec.to_builtins(msgspec.convert(requires, NodeCapabilities))
        async with self.db.transaction() as s:
            w = (await s.execute(select(Worker).where(Worker.name == name))).scalar_one_or_none()
            if w is None:
                w = Worker(name=name, capabilities={}, targets=[], toolchain={}, last_seen=utcnow())
                s.add(w)
            w.allowed_targets, w.requires = list(dict.fromkeys(targets)), requires or {}
            if w.disabled_at is not None and w.public_key is not None:
                self.audit.record(s, actor, "worker.reset-key", name, detail=w.key_id or "")
                self._forget_key(w)  # it was disabled: trust a new key only
            w.enrolled_at, w.disabled_at, w.disabled_reason = utcnow(), None, ""
            self.audit.record(s, actor, "worker.enroll", f"{name} [{','.join(targets)}]")
        await self.tokens.revoke_worker_tokens(name, actor)
        return await self.tokens.create(f"worker-{name}"[:64], WORKER_SCOPES, actor, worker=name)

    async def register_key(self, name: str, public_pem: str, principal: Principal) -> WorkerInfo:
        principal.require_worker(name)
        key = public_key_from_pem(public_pem.encode(), source=f"worker {name}'s key")
        async with self.db.transaction() as s:
            w = await self.find(s, name)
            if w.public_key is not None and w.public_key.strip() != public_pem.strip():
                raise ConflictError(
                    f"worker {name} already registered key {w.key_id}; an admin resets it "
                    f"(`central workers reset-key {name}`) before a new key can be registered"
                )
            if key_id_of(key) in w.revoked_keys:
                raise ForbiddenError(
                    f"key {key_id_of(key)} of worker {name} was revoked (reset or disabled); "
                    "generate a new one (remove the worker's WORK_DIR/keys)"
                )
            if w.public_key is None:
                w.public_key, w.key_id = public_pem.strip() + "\n", key_id_of(key)
                self.audit.record(s, name, "worker.key", name, detail=w.key_id)
            return worker_info(w)

    async def reset_key(self, name: str, actor: str) -> WorkerInfo:
        async with self.db.transaction() as s:
            w = await self.find(s, name)
            self.audit.record(s, actor, "worker.reset-key", name, detail=w.key_id or "")
            self._forget_key(w)
            return worker_info(w)

    @staticmethod
    def _forget_key(w: Worker) -> None:
        """Unregister the worker's key and never accept it again (rotation, compromise)."""
        if w.key_id:
            w.revoked_keys = [*w.revoked_keys, w.key_id]
        w.public_key, w.key_id = None, None

    async def hello(self, hello: WorkerHello, principal: Principal) -> WorkerInfo:
        """A worker reports its host, toolchain and the targets it can build right now."""
        principal.require_worker(hello.name)
        async with self.db.transaction() as s:
            w = await self.find(s, hello.name)
            if w.disabled_at is not None:
                raise ForbiddenError(f"worker {w.name} is disabled: {w.disabled_reason}")
            gap = capability_mismatch(w.requires, hello.capabilities)
            if gap:
                raise ForbiddenError(f"worker {w.name}'s host does not match its enrolment: {gap}")
            w.capabilities = msgspec.to_builtins(hello.capabilities)
            w.targets = [t for t in hello.targets if t in w.allowed_targets]
            w.toolchain = dict(hello.toolchain)
            w.last_seen = utcnow()
            return worker_info(w)

    async def trusted_key(self, name: str) -> TrustedKeys:
        """The key ``name`` signs with (refused when none is registered or it is disabled)."""
        async with self.db.session() as s:
            w = await self.find(s, name)
        if w.disabled_at is not None:
            raise ForbiddenError(f"worker {name} is disabled: {w.disabled_reason}")
        if not w.public_key:
            raise ForbiddenError(f"worker {name} has not registered a signing key")
        return TrustedKeys.of(w.public_key.encode())

    async def disable(self, name: str, reason: str, principal: Principal) -> WorkerInfo:
        """Disable ``name``, revoke its credentials, halt every channel serving what it built."""
        reason = reason or "disabled by an admin"
        async with self.db.transaction() as s:
            w = await self.find(s, name)
            w.disabled_at, w.disabled_reason = utcnow(), reason
            self.audit.record(s, principal.name, "worker.disable", name, detail=reason)
            rows = (
                await s.execute(
                    select(Model.name, Channel.name, Version.number)
                    .join(Version, Version.model_id == Model.id)
                    .join(Bundle, Bundle.version_id == Version.id)
                    .join(
                        Channel,
                        (Channel.model_id == Model.id) & (Channel.version == Version.number),
                    )
                    .where(Bundle.built_by == name)
                    .distinct()
                )
            ).all()
            info = worker_info(w)
            ended = await self._withdraw_work(s, name, reason)
        await self.tokens.revoke_worker_tokens(name, principal.name)
        for build_id in ended:
            await self.finalizer.maybe_finalize(build_id)
        for model, channel, version in rows:
            await self.channels.set_halted(
                model,
                channel,
                True,
                principal,
                f"quarantined: v{version} was built by worker {name}, disabled ({reason})",
            )
        return info

    @staticmethod
    async def _withdraw_work(s: AsyncSession, name: str, reason: str) -> set[int]:
        """What it built and nobody registered yet fails; what it holds goes back a step;
        its cache entries go. Returns the builds whose jobs all may have ended now."""
        ended: set[int] = set()
        unverified = (JobState.BUILT, JobState.VERIFYING)
        jobs = (
            await s.execute(
                select(Job).where(
                    ((Job.builder == name) & Job.state.in_(unverified))
                    | ((Job.worker == name) & Job.state.in_((JobState.RUNNING, *unverified)))
                )
            )
        ).scalars()
        for j in jobs:
            why = f"worker {name} was disabled ({reason})"
            if j.builder == name and j.state in unverified:
                j.state, j.reason = JobState.FAILED, f"built by {why}: not registered"
                ended.add(j.build_id)
            elif j.state == JobState.RUNNING:
                j.state = JobState.QUEUED
            else:  # it was verifying someone else's result: another verifier takes it
                j.state = JobState.BUILT
            j.worker, j.lease_token = None, None
            j.note(f"[central] {why}: {j.state}")
        await s.execute(delete(BuildCache).where(BuildCache.worker == name))
        return ended

    async def list(self) -> list[WorkerInfo]:
        async with self.db.session() as s:
            return [
                worker_info(w)
                for w in (await s.execute(select(Worker).order_by(Worker.name))).scalars()
            ]
