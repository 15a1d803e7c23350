"""Content-addressed blobs: streamed upload with digest check; download with ETag and Range."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

from litestar import Request, Response, get, head, put
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.response import Stream

from artifacts.digests import is_digest
from artifacts.errors import NotFoundError, Unprocessable
from artifacts.wire import Problem
from central.auth.guard import needs, principal_of, pull
from central.blobs.service import BlobService
from central.problems import problem_response
from central.settings import CentralConfig

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _check(digest: str) -> str:
    if not is_digest(digest):
        raise Unprocessable(f"{digest!r} is not a sha256 digest ('sha256:' + 64 lowercase hex)")
    return digest


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The body, refusing (413) past ``limit`` bytes: announced or actually streamed."""
    announced = request.headers.get("content-length")
    if announced is not None and announced.isdigit() and int(announced) > limit:
        raise RequestEntityTooLarge(
            detail=f"blob of {announced} bytes exceeds the {limit}-byte limit"
        )
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise RequestEntityTooLarge(detail=f"blob exceeds the {limit}-byte limit")
        yield chunk


# The app-wide JSON body limit does not apply here; the blob limit (CentralConfig.max_blob_bytes) does.
@put(
    "/v1/blobs/{digest:str}",
    status_code=201,
    request_max_body_size=None,
    **needs("push", body="application/octet-stream", workers=True),
)
async def put_blob(
    blobs: BlobService, config: CentralConfig, request: Request, digest: str
) -> Response:
    """Upload a blob; its bytes must hash to ``digest``. Existing blob: 200, body ignored."""
    _check(digest)
    info, created = await blobs.put(
        digest, _limited(request, config.max_blob_bytes), principal_of(request).name
    )
    return Response(
        {"digest": digest, "size": info.size, "created": created},
        status_code=201 if created else 200,
    )


def _range(header: str | None, size: int) -> tuple[int, int] | str | None:
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return "malformed"
    if m.group(1):
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else size - 1
    else:  # suffix range: last N bytes
        n = int(m.group(2))
        start, end = max(0, size - n), size - 1
    if start >= size or start > end:
        return "unsatisfiable"
    return start, min(end, size - 1)


@head("/v1/blobs/{digest:str}", **pull())
async def head_blob(blobs: BlobService, digest: str) -> Response[None]:
    info = await blobs.stat(_check(digest))
    if info is None:
        raise NotFoundError(f"blob {digest} not found")
    return Response(
        None,
        headers={"Content-Length": str(info.size), "ETag": f'"{digest}"', "Accept-Ranges": "bytes"},
    )


@get("/v1/blobs/{digest:str}", **pull())
async def get_blob(
    blobs: BlobService, config: CentralConfig, request: Request, digest: str
) -> Response:
    """Stream a blob in constant memory; ``Range: bytes=a-b`` answers 206 (resumable). With
    an OCI store and ``blob_redirect``, answers 307 to the registry's own URL for the bytes
    (the client verifies the digest either way)."""
    store = blobs.store
    info = await store.stat(_check(digest))
    if info is None:
        raise NotFoundError(f"blob {digest} not found")
    etag = f'"{digest}"'
    location = store.redirect_url(digest) if config.blob_redirect else None
    if location is not None:
        return Response(
            b"",
            status_code=307,
            headers={"Location": location, "ETag": etag, "Cache-Control": "no-store"},
        )
    if request.headers.get("if-none-match") == etag:
        return Response(b"", status_code=304, headers={"ETag": etag})
    rng = _range(request.headers.get("range"), info.size)
    if rng == "malformed" or rng == "unsatisfiable":
        detail = f"range {request.headers.get('range')!r} is {rng} for {info.size} bytes"
        return problem_response(
            Problem(title="RangeNotSatisfiable", status=416, detail=detail),
            headers={"Content-Range": f"bytes */{info.size}"},
        )
    headers = {"ETag": etag, "Accept-Ranges": "bytes"}
    if rng is None:
        start, end, status = 0, info.size - 1, 200
    else:
        assert isinstance(rng, tuple)
        start, end = rng
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{info.size}"
    headers["Content-Length"] = str(end - start + 1)
    if info.size == 0:
        return Response(
            b"", status_code=200, headers=headers, media_type="application/octet-stream"
        )
    return Stream(
        store.read_range(digest, start, end),
        status_code=status,
        headers=headers,
        media_type="application/octet-stream",
    )


handlers = [put_blob, head_blob, get_blob]
