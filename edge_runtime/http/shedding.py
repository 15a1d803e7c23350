"""Shed overload before it costs anything.

Under a flood, parsing each request and building a problem+json 429 through the framework
costs as much as serving it did, and the event loop itself becomes the queue (measured: at
10x capacity, admitted requests waited 38 s in socket buffers). This ASGI middleware answers
429 with ``Retry-After`` for inference requests while every model's admission budget is full
— without reading the body or routing — so the loop stays free for admitted work.
"""

from __future__ import annotations

import math

from artifacts.wire import MEDIA_TYPE_PROBLEM, problem_bytes

INFERENCE_PATHS = ("/v1/embeddings", "/v1/rerank", "/v1/classify", "/v1/search")
BODY = problem_bytes(429, "Overloaded", "every model on this node is at capacity; retry later")


def _endpoint(path: str) -> str:
    """The ``endpoint`` label the routes use (``/v1/embeddings`` → ``embeddings``)."""
    return "kserve" if path.startswith("/v2/") else path.rsplit("/", 1)[-1]


class ShedWhenSaturated:
    def __init__(self, app, node) -> None:
        self.app = app
        self.node = node
        self.shed = 0

    def _saturated(self) -> float | None:
        """Retry-After seconds if every model's queue is at its admission limit, else None."""
        services = list(self.node.models.values())
        if not services:
            return None
        waits = []
        for s in services:
            a = s.admission
            if a.queued_tokens < a.limit:
                return None
            waits.append(a.retry_after())
        return max(1.0, min(waits))

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            if path in INFERENCE_PATHS or (
                path.startswith("/v2/models/") and path.endswith("/infer")
            ):
                retry = self._saturated()
                if retry is not None:
                    self.shed += 1
                    # counted once, like every other answer (the model is unknown: the body
                    # is not read), so rejected_total and requests_total{status="429"} agree
                    self.node.metrics.rejected.labels("-").inc()
                    self.node.metrics.requests.labels("-", _endpoint(path), "429").inc()
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 429,
                            "headers": [
                                (b"content-type", MEDIA_TYPE_PROBLEM.encode()),
                                (b"retry-after", str(math.ceil(retry)).encode()),
                                (b"content-length", str(len(BODY)).encode()),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": BODY})
                    return
        await self.app(scope, receive, send)
