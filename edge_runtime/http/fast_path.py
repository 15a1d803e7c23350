"""``POST /v1/embeddings`` without the framework.

A single short query costs the backend well under a millisecond of model time on a modern
CPU, so the web framework's per-request work (routing, dependency and signature modelling,
response building, its middleware stack) is most of what a c=1 client waits for (measured with
py-spy under load: about a quarter of the event loop's time sat in uvicorn's and litestar's
layers). The embeddings route is the hot one; this ASGI layer answers it directly with the same
contract as the litestar route, which stays registered for the OpenAPI schema and for spellings
this layer does not match (a trailing slash, say):

* the same body type (:class:`~edge_runtime.http.schemas.EmbeddingsRequest`) decoded by
  msgspec, with ``server.max_body_bytes`` enforced while the body streams in;
* the same checks (``Content-Type``, ``X-Request-Timeout-Ms``) and the same inference call;
* the same problem+json errors (``Retry-After`` on 429, a request id and no internals on 500),
  the same metrics, ``X-Shipyard-*`` and ``Server-Timing`` headers, and the route template for
  the tracing span.

It sits inside the API-key check and the overload shedding, so both still apply first.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from artifacts.errors import PayloadTooLarge, ShipyardError
from artifacts.wire import MEDIA_TYPE_PROBLEM, Problem, problem_headers
from edge_runtime.http.observe import served_headers, server_timing
from edge_runtime.http.openai import embeddings_response, media_type_error
from edge_runtime.http.problems import internal_error
from edge_runtime.http.schemas import EmbeddingsRequest
from edge_runtime.inference.engine import Inference
from edge_runtime.inference.results import Embeddings
from edge_runtime.metrics import Metrics

PATH = "/v1/embeddings"
_decode = msgspec.json.Decoder(EmbeddingsRequest).decode
_encode = msgspec.json.Encoder().encode


class _Disconnected(Exception):
    """The client went away before its body arrived: nothing to answer."""


class ValidationException(ShipyardError):
    """The body does not match the request schema (litestar's name and wording, one contract)."""

    status = 400


class ClientException(ShipyardError):
    """The body is not JSON (litestar's name and wording)."""

    status = 400


def decode_request(raw: bytes) -> EmbeddingsRequest:
    """The request body, or the 400 the framework route would give for it."""
    try:
        return _decode(raw)
    except msgspec.ValidationError as exc:
        message, _, at = str(exc).partition(" - at `$.")
        error = {"message": message, "key": at.rstrip("`") or "data", "source": "body"}
        raise ValidationException(f"Validation failed for POST {PATH}: {[error]}") from None
    except msgspec.DecodeError as exc:
        raise ClientException(str(exc)) from None  # msgspec: "JSON is malformed: ..."


async def read_body(receive: Any, limit: int, content_length: int | None) -> bytes:
    """The whole request body, refused as soon as it would pass ``limit`` bytes."""
    if content_length is not None and limit > 0 and content_length > limit:
        raise PayloadTooLarge(f"request body of {content_length} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if limit > 0 and size > limit:
                raise PayloadTooLarge(f"request body over {limit} bytes; the limit is {limit}")
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class FastEmbeddings:
    """ASGI middleware answering exactly ``POST /v1/embeddings``; everything else passes on."""

    def __init__(self, app: Any, inference: Inference, metrics: Metrics, max_body: int) -> None:
        self.app = app
        self.inference = inference
        self.metrics = metrics
        self.max_body = max_body
        # (model, status) -> its two series: ``labels()`` takes a lock and builds a key per call.
        # Bounded: models are the served names (or "-"), statuses the few this layer answers
        self._series: dict[tuple[str, int], tuple[Any, Any]] = {}
        # (model, version, backend) -> the X-Shipyard-* header lines, encoded once
        self._served: dict[tuple[str, int, str], list[tuple[bytes, bytes]]] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["path_template"] = PATH  # the tracing span's name, as routing would set it
        started = time.perf_counter()
        model = "-"
        status = 200
        try:
            body, headers, model = await self._embed(scope, receive, started)
            await _respond(send, 200, b"application/json", body, headers)
        except _Disconnected:
            status = 499  # nginx's "client closed request": counted, never sent
        except ShipyardError as exc:
            status = exc.status
            extra = problem_headers(exc) or {}
            if isinstance(exc, PayloadTooLarge):  # the rest of the body is not worth reading
                extra["Connection"] = "close"
            await _respond(
                send, status, MEDIA_TYPE_PROBLEM.encode(), Problem.of(exc).encode(), _lines(extra)
            )
        except Exception:
            status = 500
            problem = internal_error("POST", PATH)
            await _respond(send, 500, MEDIA_TYPE_PROBLEM.encode(), problem.encode(), [])
        except BaseException:  # cancelled (e.g. a shutdown past its drain time): not a 200
            status = 499
            raise
        finally:
            count, latency = self._series.get((model, status)) or self._labelled(model, status)
            count.inc()
            latency.observe(time.perf_counter() - started)

    def _labelled(self, model: str, status: int) -> tuple[Any, Any]:
        series = (
            self.metrics.requests.labels(model, "embeddings", str(status)),
            self.metrics.latency.labels(model, "embeddings"),
        )
        self._series[(model, status)] = series
        return series

    async def _embed(
        self, scope: Any, receive: Any, started: float
    ) -> tuple[bytes, list[tuple[bytes, bytes]], str]:
        ctype = timeout = length = None
        for name, value in scope["headers"]:  # a repeated header: the first wins, as in litestar
            if name == b"content-type" and ctype is None:
                ctype = value.decode("latin-1")
            elif name == b"x-request-timeout-ms" and timeout is None:
                timeout = value.decode("latin-1")
            elif name == b"content-length" and length is None:
                # ASCII digits only, and short: a longer number is refused as too large anyway
                length = int(value) if value.isdigit() and len(value) <= 18 else None
        if (error := media_type_error(ctype)) is not None:
            raise error
        raw = await read_body(receive, self.max_body, length)
        data = decode_request(raw)
        deadline = self.inference.deadline(timeout)
        r = await self.inference.embed(data.model, data.input, deadline, dimensions=data.dimensions)
        body = _encode(embeddings_response(r, data.encoding_format))
        served = self._served.get((r.model, r.version, r.target))
        if served is None:
            served = self._served_lines(r)
        return body, [*served, (b"server-timing", server_timing(started).encode())], r.model

    def _served_lines(self, r: Embeddings) -> list[tuple[bytes, bytes]]:
        if len(self._served) >= 64:  # bounded: versions come and go over a node's life
            self._served.clear()
        lines = _lines(served_headers(r))
        self._served[(r.model, r.version, r.target)] = lines
        return lines


def _lines(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def _respond(
    send: Any, status: int, ctype: bytes, body: bytes, extra: list[tuple[bytes, bytes]]
) -> None:
    headers = [(b"content-type", ctype), (b"content-length", b"%d" % len(body)), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
