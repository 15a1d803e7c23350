"""The floor under a c=1 query: the edge's own server stack (uvicorn with uvloop, httptools, the
slow-client read clocks and one write per response, as ``edge-runtime serve`` runs it) in front
of a bare ASGI app that answers a recorded edge answer. Three rungs, each adding one step:

* ``floor``: read the body, answer — what any server on this stack pays per request;
* ``run``: plus the model run on a query encoded beforehand (cycled through the bench's
  queries), on the event loop — the least any in-process server with this backend can do;
* ``tokenise``: plus decoding the body and tokenising its text, as the edge does.

The edge's c=1 p50 minus the ``tokenise`` rung is what its own layers (API keys, shedding,
batcher, admission, metrics, encoding the answer) add; the ``run`` rung minus the raw backend
is what serving one query at a time costs the model run itself (caches cooled between queries).

``python -m bench.http_floor RUNG PORT ANSWER_FILE [BUNDLE]`` serves one rung
(``bench.c1_account`` starts them)."""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path

RUNGS = ("floor", "run", "tokenise")


def floor_app(answer: bytes, headers: list[tuple[bytes, bytes]], step=None):
    """POST answers ``answer`` after reading the whole body and calling ``step(body)`` (which
    returns the seconds its model run took); ``GET /stats`` answers those seconds summed and
    the number of calls; anything else answers 200 ``ok`` (the readiness probe)."""
    full = [*headers, (b"content-length", str(len(answer)).encode())]

    spent = [0.0, 0]  # seconds in step(), calls: GET /stats answers "seconds calls"

    async def app(scope, receive, send):
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await receive()  # lifespan.startup
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
                await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["method"] != "POST":
            body = f"{spent[0]:.9f} {spent[1]}".encode() if scope["path"] == "/stats" else b"ok"
            head = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            await send({"type": "http.response.body", "body": body})
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        if step is not None:
            spent[0] += step(b"".join(chunks))
            spent[1] += 1
        await send({"type": "http.response.start", "status": 200, "headers": full})
        await send({"type": "http.response.body", "body": answer})

    return app


def model_step(rung: str, bundle: Path):
    """The per-request work of ``rung`` on the bundle, opened through the edge's own loader."""
    import msgspec

    import bench.serving as S

    m, encoded = S._raw_model(str(bundle), 2000)

    def timed_run(enc) -> float:
        t0 = time.perf_counter()
        m.run(enc)
        return time.perf_counter() - t0

    if rung == "run":
        queries = itertools.cycle(encoded)
        return lambda _body: timed_run([next(queries)])

    class Body(msgspec.Struct):
        input: str

    decode = msgspec.json.Decoder(Body).decode
    return lambda body: timed_run(m.encoder.encode([decode(body).input]))


def main() -> int:
    from artifacts.sdnotify import Notifier
    from artifacts.sdnotify import serve as serve_notifying
    from edge_runtime.config import ServerSection

    rung, port, answer_file = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    if rung not in RUNGS:
        raise SystemExit(f"rung must be one of {RUNGS}")
    step = model_step(rung, Path(sys.argv[4])) if rung != "floor" else None
    answer = answer_file.read_bytes()
    headers = [(b"content-type", b"application/json")]
    extra = answer_file.with_suffix(".headers")
    if extra.exists():  # the edge's own X-Shipyard-* and Server-Timing lines, as it sends them
        for line in extra.read_text().splitlines():
            k, _, v = line.partition(": ")
            if k:
                headers.append((k.lower().encode("latin-1"), v.encode("latin-1")))
    server = ServerSection()
    serve_notifying(
        floor_app(answer, headers, step),
        Notifier(),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        limit_concurrency=server.max_connections,
        read_timeout_s=server.read_timeout_s,
        one_write=server.one_write_per_response,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
