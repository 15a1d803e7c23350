"""Central's side of the broker: one NATS connection, the streams, the catalog-updates consumer.

The connection is made in the background and kept (nats-py reconnects after a broker
restart); until it is up, routes that need it answer 503 and the ingest loop waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec

from artifacts import embed_queue as eq

log = logging.getLogger("shipyard.central.catalogs")

Handler = Callable[[list], Awaitable[None]]  # a batch of messages, applied; then acked
INGEST_CONSUMER = "central-ingest"


class CentralQueue:
    def __init__(self, url: str, *, name: str = "shipyard-central") -> None:
        self.url = url
        self.broker = eq.Broker(url, name)
        self._tasks: list[asyncio.Task] = []

    @property
    def error(self) -> str:
        return self.broker.error

    def start(self, ingest: Handler) -> None:
        self._tasks.append(asyncio.create_task(self._ingest_forever(ingest), name="catalog-ingest"))

    async def stop(self) -> None:
        await self.broker.close(self._tasks)

    def require(self):
        """The JetStream context, or a 503 naming why there is none."""
        if self.broker.js is None or not self.broker.connected:
            raise eq.QueueUnavailable(
                f"the catalog queue (NATS at {eq.redact(self.url)}) is down: "
                f"{self.error or 'reconnecting'}"
            )
        return self.broker.js

    async def publish_job(self, job: eq.EmbedJob, *, nonce: str = "") -> bool:
        payload = msgspec.json.encode(job)
        return await eq.publish(
            self.require(), eq.jobs_subject(job.catalog), payload, eq.job_msg_id(job) + nonce
        )

    async def dead_letters(self, catalog: str) -> int | None:
        try:
            return await asyncio.wait_for(eq.dead_letters(self.require(), catalog), 5.0)
        except Exception:
            return None

    async def _ingest_forever(self, handle: Handler) -> None:
        """Pull catalog updates in batches; ack each batch only after it is committed (a crash
        before that redelivers it; applying it again changes nothing)."""
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig

        await self.broker.jetstream()
        sub = None
        while True:
            try:
                if sub is None:
                    sub = await self.require().pull_subscribe(
                        "catalog.updates.>",
                        durable=INGEST_CONSUMER,
                        stream=eq.UPDATES_STREAM,
                        config=ConsumerConfig(
                            ack_policy=AckPolicy.EXPLICIT, ack_wait=60.0, max_ack_pending=8192
                        ),
                    )
                try:
                    msgs = await sub.fetch(512, timeout=1.0)
                except NatsTimeout:
                    continue
                await handle(msgs)
                for m in msgs:
                    await m.ack()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the broker or the database: wait, subscribe again, go on
                log.warning("catalog ingest: %s", exc)
                sub = None
                await asyncio.sleep(1.0)
