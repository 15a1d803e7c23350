"""The embed worker: pull ``embed.jobs.<catalog>`` with explicit acks, embed each job's texts
through the node's batcher in its low-priority lane, send the vectors to central, then ack.

- **At least once, idempotent effect:** a job is acked only after central stored its vectors
  (keyed by product id + model version + text digest). A worker killed mid-job, a broker
  restart or a redelivery sends the same vectors again; central stores them once.
- **Backpressure:** jobs in flight per catalog are bounded by the consumer's
  ``max_ack_pending`` and, below it, by an adaptive window that halves when interactive
  queueing p99 passes its target or the batcher refuses bulk work (interactive admission
  past half its limit), and grows back by one per window of jobs.
- **Failures:** a job that fails is redelivered after ``backoff_s * 2^(attempt-1)``; after
  ``max_attempts`` deliveries (or at once when it cannot be parsed) it is published to
  ``embed.dead.<catalog>`` with the reason and terminated.
- A long wait keeps the job alive (``in_progress``) so it is not handed to another worker.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Callable

import anyio
import numpy as np

from artifacts import embed_queue as eq
from artifacts.client import RegistryClient
from artifacts.digests import sha256_bytes
from artifacts.errors import (
    AuthError,
    ConflictError,
    InputError,
    NotFoundError,
    Overloaded,
    RegistryUnavailableError,
)
from artifacts.wire import RunInfo, VectorBatch, VectorItem
from edge_runtime.batching.queue import Batcher, BulkLaneFull
from edge_runtime.config import EmbedWorkerSection
from edge_runtime.embedq.bulk_models import BulkModels
from edge_runtime.embedq.window import AdaptiveWindow

log = logging.getLogger("shipyard.edge.embed")
MAX_BACKOFF_S = 60.0
TRANSIENT_WAIT_S = 600.0  # how long a job waits out central being away before it counts as failed
PUT_VECTORS = 128  # vectors per request to central
RUN_TTL_S = 5.0  # how long a run's state is trusted before asking central again
MAX_ITEMS_PER_JOB = 1024  # central sends chunks of at most this (CatalogBinding.chunk)


class Poison(InputError):
    """A job no retry can fix: dead-lettered at once."""


class EmbedWorker:
    def __init__(
        self,
        cfg: EmbedWorkerSection,
        client: RegistryClient,
        models: BulkModels,
        batcher_for: Callable[[str], Batcher],
        target_ms: float,
        node: str,
    ) -> None:
        self.cfg = cfg
        self.client = client
        self.models = models
        self.batcher_for = batcher_for
        self.target_ms = cfg.interactive_p99_ms or target_ms
        self.node = node
        self.broker = eq.Broker(cfg.nats_url, f"shipyard-embed-{node}")
        self.windows = {c: AdaptiveWindow(cfg.max_ack_pending) for c in cfg.catalogs}
        self.counts = {"done": 0, "items": 0, "retried": 0, "dead": 0, "obsolete": 0}
        self.last_error = ""
        self._tasks: list[asyncio.Task] = []
        self._runs: dict[tuple[str, int], tuple[float, RunInfo]] = {}  # checked runs, briefly

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._consume_forever(c), name=f"embed-{c}")
            for c in self.cfg.catalogs
        ]

    async def stop(self) -> None:
        await self.broker.close(self._tasks)
        self.models.close()

    def status(self) -> dict:
        return {
            "catalogs": self.cfg.catalogs,
            "connected": self.broker.connected,
            "window": {c: w.slots for c, w in self.windows.items()},
            **self.counts,
            "last_error": self.last_error
            or (self.broker.error if not self.broker.connected else ""),
        }

    async def _js(self):
        return await self.broker.jetstream()

    async def _consume_forever(self, catalog: str) -> None:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig

        js = await self._js()
        window = self.windows[catalog]
        running: set[asyncio.Task] = set()
        sub = None
        while True:
            try:
                if sub is None:  # one durable per catalog: every worker shares its work queue
                    sub = await js.pull_subscribe(
                        eq.jobs_subject(catalog),
                        durable=f"embed-{catalog}",
                        stream=eq.JOBS_STREAM,
                        config=ConsumerConfig(
                            ack_policy=AckPolicy.EXPLICIT,
                            ack_wait=self.cfg.ack_wait_s,
                            max_ack_pending=self.cfg.max_ack_pending,
                            max_deliver=-1,  # this worker dead-letters (with the reason)
                        ),
                    )
                room = window.slots - len(running)
                if room <= 0:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    msgs = await sub.fetch(room, timeout=1.0)
                except NatsTimeout:
                    continue
                for m in msgs:
                    task = asyncio.create_task(self._handle(catalog, m))
                    running.add(task)
                    task.add_done_callback(running.discard)
            except asyncio.CancelledError:
                for t in running:
                    t.cancel()
                raise
            except Exception as exc:  # the broker is restarting: nats-py reconnects
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("embed worker (%s): %s", catalog, self.last_error)
                sub = None  # subscribe again (the consumer may have been recreated)
                await asyncio.sleep(1.0)

    async def _handle(self, catalog: str, msg) -> None:
        attempt = msg.metadata.num_delivered
        if attempt > self.cfg.max_attempts:  # a worker died on it every time
            await self._dead(catalog, msg, f"delivered {attempt - 1} times without an ack")
            return
        keep_alive = asyncio.create_task(self._keep_alive(msg))
        try:
            job = eq.decode_job(msg.data)
            if job.catalog != catalog:
                raise Poison(f"a job for catalog {job.catalog!r} on {catalog!r}'s subject")
            await self._patiently(self._work, catalog, job)
            await msg.ack()
            self.counts["done"] += 1
            self.counts["items"] += len(job.items)
        except ConflictError:  # the run is over (completed or restarted): nothing to do
            await msg.ack()
            self.counts["obsolete"] += 1
        except InputError as exc:  # unparseable, or texts that are not what they claim
            await self._dead(catalog, msg, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self.last_error = reason
            if attempt >= self.cfg.max_attempts:
                await self._dead(catalog, msg, reason)
            else:
                delay = min(MAX_BACKOFF_S, self.cfg.backoff_s * 2 ** (attempt - 1))
                log.info(
                    "embed job failed (attempt %s, again in %.0f s): %s", attempt, delay, reason
                )
                self.counts["retried"] += 1
                with contextlib.suppress(Exception):
                    await msg.nak(delay=delay)
        finally:
            keep_alive.cancel()

    async def _patiently(self, work, catalog: str, job: eq.EmbedJob) -> None:
        """Run ``work``; while central is unreachable, overloaded or refuses this node's token
        (not the job's fault), wait and try again — the job stays in progress and no delivery
        is spent — for at most ``TRANSIENT_WAIT_S``."""
        give_up = time.monotonic() + TRANSIENT_WAIT_S
        pause = 1.0
        while True:
            try:
                return await work(catalog, job)
            except (RegistryUnavailableError, AuthError, Overloaded, eq.QueueUnavailable) as exc:
                if isinstance(exc, Overloaded):  # central said when: not sooner
                    pause = max(pause, min(30.0, exc.retry_after_s))
                if time.monotonic() + pause > give_up:
                    raise
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("embed job waits for central (%s)", self.last_error)
                await asyncio.sleep(pause)
                pause = min(30.0, pause * 2)

    async def _work(self, catalog: str, job: eq.EmbedJob) -> None:
        await self._check_run(catalog, job)  # before any download or inference
        vectors = await self._embed(catalog, job)
        items = [
            VectorItem(id=i.id, digest=i.digest, vector=base64.b64encode(v.tobytes()).decode())
            for i, v in zip(job.items, vectors, strict=True)
        ]
        for start in range(0, len(items), PUT_VECTORS):  # requests well under central's body limit
            batch = VectorBatch(
                run=job.run,
                model=job.model,
                version=job.version,
                target=job.target,
                items=items[start : start + PUT_VECTORS],
            )
            await anyio.to_thread.run_sync(self.client.put_vectors, catalog, batch)

    async def _check_run(self, catalog: str, job: eq.EmbedJob) -> None:
        """A job is worked on only for a run central has open, with the model, version and
        bundle central says (a forged job names another and is dead-lettered, unrun)."""
        key = (catalog, job.run)
        cached = self._runs.get(key)
        if cached is None or time.monotonic() - cached[0] > RUN_TTL_S:
            try:
                info = await anyio.to_thread.run_sync(self.client.catalog_run, catalog, job.run)
            except NotFoundError as exc:
                raise Poison(f"central has no run {job.run} of {catalog}") from exc
            cached = (time.monotonic(), info)
            self._runs[key] = cached
            if len(self._runs) > 256:
                self._runs.pop(next(iter(self._runs)))
        run = cached[1]
        if (run.model, run.version, run.target) != (job.model, job.version, job.target):
            raise Poison(
                f"the job names {job.model} v{job.version} {job.target}; run {run.id} embeds "
                f"{run.model} v{run.version} {run.target}"
            )
        if run.state != "embedding":
            raise ConflictError(f"run {run.id} is {run.state}")

    async def _keep_alive(self, msg) -> None:
        while True:
            await asyncio.sleep(self.cfg.ack_wait_s / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def _embed(self, catalog: str, job: eq.EmbedJob) -> np.ndarray:
        for i in job.items:
            if eq.text_digest(i.text) != i.digest:
                raise Poison(f"product {i.id!r}: its text does not hash to its digest")
        if not job.items or len(job.items) > MAX_ITEMS_PER_JOB:
            raise Poison(f"a job holds 1 to {MAX_ITEMS_PER_JOB} products, not {len(job.items)}")
        model = await anyio.to_thread.run_sync(self.models.get, job.model, job.version, job.target)
        encoded = await anyio.to_thread.run_sync(model.encoder.encode, [i.text for i in job.items])
        batcher = self.batcher_for(job.model)
        window = self.windows[catalog]
        while True:
            try:
                deadline = time.monotonic() + self.cfg.ack_wait_s
                outs = await batcher.submit_bulk(encoded, deadline, model)
                break
            except BulkLaneFull:  # this worker's own jobs fill the lane: wait for a slot
                await asyncio.sleep(0.02)
            except Overloaded:  # interactive traffic first: shrink and wait
                window.cut(time.monotonic())
                await asyncio.sleep(0.25)
        window.observe(batcher.interactive_wait_p99_ms(), self.target_ms, time.monotonic())
        vectors = np.stack(outs).astype(np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    async def _dead(self, catalog: str, msg, reason: str) -> None:
        js = await self._js()
        try:
            await eq.publish(
                js,
                eq.dead_subject(catalog),
                msg.data,
                "dead." + sha256_bytes(msg.data),
                headers={
                    eq.REASON: reason[:1000],
                    "Shipyard-Attempts": str(msg.metadata.num_delivered),
                    "Shipyard-Node": self.node,
                },
            )
            await msg.term()
            self.counts["dead"] += 1
            log.warning("embed job dead-lettered (%s): %s", catalog, reason)
        except Exception as exc:  # not dead-lettered: it comes back
            log.warning("dead-lettering failed (%s); the job will come back", exc)
            with contextlib.suppress(Exception):
                await msg.nak(delay=self.cfg.backoff_s)
