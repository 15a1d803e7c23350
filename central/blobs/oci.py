"""Content-addressed blobs in an OCI distribution registry (Docker Distribution, Harbor, Zot …).

Same contract as the local store: a blob becomes visible only once its bytes hash to the digest
it was uploaded under. The upload is a chunked upload session that is finalized (``PUT
…?digest=``) only after our own sha256 of the streamed bytes matches; on a mismatch, an error or
a cancelled request the session is deleted instead, so nothing half-written or mislabelled is
ever linked into the repository. Pushed blobs can then be tied together as an OCI artifact
(``push_artifact``), which ORAS and other OCI tools can pull.

A registry that cannot be reached, times out or fails (5xx, 429) raises
:class:`BlobStoreUnavailable` (503: retry later); any other unexpected answer raises
:class:`BlobStoreError` (502) with the registry's own error message.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import anyio
import anyio.to_thread
import httpx

from artifacts.digests import digest_of, is_digest, sha256_bytes
from artifacts.errors import (
    NotFoundError,
    RegistryError,
    RegistryUnavailableError,
    Unprocessable,
)
from central.blobs.store import BlobDigestMismatch, BlobInfo

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
TITLE_ANNOTATION = "org.opencontainers.image.title"
PATCH_BYTES = 8 << 20  # bytes buffered per PATCH: few requests, bounded memory
MAX_ANSWER_BYTES = 4 << 20  # a manifest, a token, a ping: an answer larger than this is hostile
MAX_ERROR_BYTES = 64 << 10
READ_CHUNK = 1 << 20
CANCEL_TIMEOUT_S = 5.0  # best-effort cleanup of an abandoned upload session

# The OCI distribution spec's grammars (repository name, tag) and RFC 6838 media types.
_NAME_RE = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*)*"
)
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_MEDIA_TYPE_RE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
)
_AUTH_PARAM_RE = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))')
_CONTENT_RANGE_RE = re.compile(r"bytes\s+(\d+)-(\d+)/(?:\d+|\*)")
_UNAVAILABLE_STATUSES = frozenset({429})  # rate limited: as transient as a 5xx
MAX_AUTH_TRIES = 3  # cached token, fresh token, basic: never loop on a refusing registry


class BlobStoreUnavailable(RegistryUnavailableError):
    """The blob registry is unreachable, timed out, rate-limited us or failed (5xx): 503."""


class BlobStoreError(RegistryError):
    """The blob registry answered something the distribution API does not promise: 502."""


def parse_www_authenticate(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="…",service="…",scope="a:b:pull,push"`` → ("bearer", {realm, service,
    scope}); the scheme lower-cased, quoted values unescaped (a scope holds commas)."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for m in _AUTH_PARAM_RE.finditer(rest):
        quoted, bare = m.group(2), m.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params[m.group(1).lower()] = value
    return scheme.lower(), params


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _capped(resp: httpx.Response, cap: int) -> bytes:
    """At most ``cap`` bytes of an answer, then it is closed (an endless one cannot grow us)."""
    body = bytearray()
    try:
        async for chunk in resp.aiter_bytes():
            body += chunk
            if len(body) > cap:
                raise BlobStoreError(f"the registry's answer exceeds {cap} bytes; refused")
    finally:
        await resp.aclose()
    return bytes(body)


async def _error_text(resp: httpx.Response) -> str:
    """The registry's ``{"errors": [{code, message, detail}]}`` as one short line."""
    try:
        body = await _capped(resp, MAX_ERROR_BYTES)
    except (httpx.HTTPError, BlobStoreError):
        return resp.reason_phrase
    try:
        errors = json.loads(body)["errors"]
        parts = []
        for e in errors[:3]:
            detail = e.get("detail")
            parts.append(
                f"{e.get('code')}: {e.get('message')}" + (f" ({detail})" if detail else "")
            )
        return "; ".join(parts) or resp.reason_phrase
    except (ValueError, KeyError, TypeError, AttributeError):
        return body[:300].decode("utf-8", "replace").strip() or resp.reason_phrase


def _unavailable(resp: httpx.Response) -> bool:
    return resp.status_code >= 500 or resp.status_code in _UNAVAILABLE_STATUSES


def _same_origin(a: httpx.URL, b: httpx.URL) -> bool:
    return (a.scheme, a.host, a.port) == (b.scheme, b.host, b.port)


class OciBlobStore:
    """Blobs as ``/v2/<repository>/blobs/<digest>`` in one repository of an OCI registry."""

    kind = "oci"

    def __init__(  # noqa: PLR0913 - the registry's settings, each optional and by keyword
        self,
        url: str,
        repository: str = "shipyard/blobs",
        *,
        username: str | None = None,
        password: str | None = None,
        public_url: str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not _NAME_RE.fullmatch(repository) or len(repository) > 255:
            raise ValueError(f"not an OCI repository name: {repository!r}")
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"not an http(s) registry URL: {url!r}")
        if parsed.userinfo:  # it would end up in error messages and logs
            raise ValueError("pass the registry credentials as username/password, not in the URL")
        if public_url is not None:
            pub = httpx.URL(public_url)
            if pub.scheme not in ("http", "https") or not pub.host or pub.userinfo:
                raise ValueError(
                    f"not an http(s) public registry URL without credentials: {public_url!r}"
                )
        self.url = url.rstrip("/")
        self.public_url = (public_url or url).rstrip("/")
        self.repository = repository
        self._basic: str | None = None
        self._credentials: tuple[str, str] | None = None
        if username is not None:
            self._credentials = (username, password or "")
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode()
            self._basic = f"Basic {token}"
        self._authorization: str | None = None  # what answered the last challenge
        self._tokens: dict[str, str] = {}  # bearer "Authorization" values by scope
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=5.0), transport=transport
        )

    async def __aenter__(self) -> OciBlobStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.aclose()

    # -- plumbing ------------------------------------------------------------------------------

    def _blob_url(self, digest: str) -> str:
        if not is_digest(digest):
            raise Unprocessable(f"not a sha256 digest: {digest!r} (expected 'sha256:' + 64 hex)")
        return f"{self.url}/v2/{self.repository}/blobs/{digest}"

    async def _request(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        stream: bool = False,
        follow_redirects: bool = False,
    ) -> httpx.Response:
        """Every request goes through here: credentials (basic, or a bearer token fetched on a
        401 challenge), and transport failures, 5xx and 429 as BlobStoreUnavailable."""
        tried: set[str | None] = set()
        for attempt in range(1, MAX_AUTH_TRIES + 1):
            sent = dict(headers or {})
            authorization = self._authorization
            if authorization:
                sent["Authorization"] = authorization
            tried.add(authorization)
            request = self._client.build_request(method, url, headers=sent, content=content)
            try:
                resp = await self._client.send(
                    request, stream=True, follow_redirects=follow_redirects
                )
                if not stream and not _unavailable(resp):  # bounded: manifests, tokens
                    body = await _capped(resp, MAX_ANSWER_BYTES)
                    resp = httpx.Response(
                        resp.status_code, headers=resp.headers, content=body, request=resp.request
                    )
            except httpx.TransportError as exc:
                raise BlobStoreUnavailable(
                    f"registry {self.url}: {type(exc).__name__} {exc}".rstrip()
                ) from exc
            except httpx.HTTPError as exc:  # too many redirects, undecodable, bad URL
                raise BlobStoreError(f"registry {self.url}: {type(exc).__name__} {exc}") from exc
            # only the registry itself may ask for credentials (not a storage host it
            # redirected to, nor whoever answers on the way there)
            if (
                resp.status_code == 401
                and attempt < MAX_AUTH_TRIES
                and _same_origin(resp.request.url, httpx.URL(self.url))
            ):
                try:
                    retry = await self._answer_challenge(resp, tried)
                except BaseException:
                    await resp.aclose()
                    raise
                if retry:
                    await resp.aclose()
                    continue
            if _unavailable(resp):
                text = await _error_text(resp)
                raise BlobStoreUnavailable(
                    f"registry {self.url} answered {resp.status_code} to {method} "
                    f"{request.url.path}: {text}"
                )
            return resp
        raise AssertionError("unreachable")  # the last attempt returns or raises

    async def _answer_challenge(self, resp: httpx.Response, tried: set[str | None]) -> bool:
        """Pick credentials for a 401's ``WWW-Authenticate``; False when nothing new is left."""
        scheme, params = parse_www_authenticate(resp.headers.get("www-authenticate", ""))
        candidate: str | None = None
        if scheme == "basic":
            candidate = self._basic
        elif scheme == "bearer" and params.get("realm"):
            scope = params.get("scope", "")
            candidate = self._tokens.get(scope)
            if candidate is None or candidate in tried:  # none yet, or it was just refused
                candidate = f"Bearer {await self._fetch_token(params)}"
                self._tokens[scope] = candidate
        if candidate is None or candidate in tried:
            return False
        self._authorization = candidate
        return True

    async def _fetch_token(self, params: dict[str, str]) -> str:
        """A bearer token from the challenge's realm (docker token auth), with our credentials
        when we have some (anonymous otherwise, as for public pulls)."""
        query = {k: params[k] for k in ("service", "scope") if params.get(k)}
        try:
            realm = httpx.URL(params["realm"])
        except (httpx.InvalidURL, TypeError) as exc:
            raise BlobStoreError(f"registry {self.url} named an unusable token realm") from exc
        if realm.scheme != "https" and not _same_origin(realm, httpx.URL(self.url)):
            raise BlobStoreError(
                f"registry {self.url} asks for a token at {realm} (plain http on another "
                "origin): refused"
            )
        try:
            request = self._client.build_request(
                "GET",
                httpx.URL(params["realm"]).copy_merge_params(query),  # keep its query
            )
            if self._credentials:
                request = httpx.BasicAuth(*self._credentials).sync_auth_flow(request).__next__()
            streamed = await self._client.send(request, stream=True)
            body_bytes = await _capped(streamed, MAX_ANSWER_BYTES)
            resp = httpx.Response(
                streamed.status_code, headers=streamed.headers, content=body_bytes, request=request
            )
        except httpx.TransportError as exc:
            raise BlobStoreUnavailable(
                f"registry token service {params['realm']}: {type(exc).__name__} {exc}"
            ) from exc
        except httpx.HTTPError as exc:
            raise BlobStoreError(f"registry token service: {type(exc).__name__} {exc}") from exc
        if resp.status_code >= 500:
            raise BlobStoreUnavailable(f"registry token service answered {resp.status_code}")
        try:
            body = resp.json() if resp.status_code == 200 else {}
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise BlobStoreError(
                f"registry token service {params['realm']} answered {resp.status_code} "
                "without a token (check the registry credentials)"
            )
        return token

    async def _fail(self, resp: httpx.Response, what: str) -> NoReturn:
        text = await _error_text(resp)
        hint = " (check the registry credentials)" if resp.status_code in (401, 403) else ""
        raise BlobStoreError(
            f"registry {self.url} answered {resp.status_code} to {what}: {text}{hint}"
        )

    def _location(self, resp: httpx.Response) -> httpx.URL:
        """An upload session's URL (``Location`` may be relative; its query is kept)."""
        location = resp.headers.get("location")
        if not location:
            raise BlobStoreError(f"registry {self.url} answered an upload without a Location")
        joined = httpx.URL(self.url).join(location)
        if not _same_origin(joined, httpx.URL(self.url)):  # our credentials go with the bytes
            raise BlobStoreError(
                f"registry {self.url} put an upload session on another host ({joined.host}); "
                "refused: central's registry credentials go only to the registry"
            )
        return joined

    # -- the blob store protocol ---------------------------------------------------------------

    async def stat(self, digest: str) -> BlobInfo | None:
        resp = await self._request("HEAD", self._blob_url(digest), follow_redirects=True)
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            await self._fail(resp, f"HEAD blob {digest}")
        length = resp.headers.get("content-length", "")
        if not length.isdigit():
            raise BlobStoreError(f"registry {self.url} sent no size for blob {digest}")
        return BlobInfo(digest, int(length))

    async def put(self, digest: str, chunks: AsyncIterator[bytes]) -> BlobInfo:
        """Stream ``chunks`` into an upload session; finalize it only if they hash to
        ``digest`` (else cancel it and raise BlobDigestMismatch)."""
        upload_url = f"{self.url}/v2/{self.repository}/blobs/uploads/"
        blob_url = self._blob_url(digest)
        resp = await self._request("POST", upload_url)
        if resp.status_code != 202:
            await self._fail(resp, f"POST {upload_url}")
        location = self._location(resp)
        h = hashlib.sha256()
        size = 0
        pending: list[bytes] = []
        pending_size = 0
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                h.update(chunk)
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= PATCH_BYTES:
                    location = await self._patch(location, b"".join(pending), size)
                    size += pending_size
                    pending, pending_size = [], 0
            if pending:
                location = await self._patch(location, b"".join(pending), size)
                size += pending_size
                pending, pending_size = [], 0
            actual = digest_of(h)
            if actual != digest:
                raise BlobDigestMismatch(digest, actual)
            resp = await self._request(
                "PUT",
                location.copy_add_param("digest", digest),  # `params=` would drop the _state
                headers={"Content-Type": "application/octet-stream"},
                content=b"",
            )
            if resp.status_code != 201:
                await self._fail(resp, f"finalizing the upload of {blob_url}")
        except BaseException:
            await self._cancel_upload(location)
            raise
        return BlobInfo(digest, size)

    async def _patch(self, location: httpx.URL, data: bytes, offset: int) -> httpx.URL:
        resp = await self._request(
            "PATCH",
            location,
            headers={
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(data) - 1}",
            },
            content=data,
        )
        if resp.status_code != 202:
            await self._fail(resp, "an upload chunk")
        return self._location(resp)

    async def _cancel_upload(self, location: httpx.URL) -> None:
        """Delete an upload session, best effort, even while being cancelled."""
        with anyio.move_on_after(CANCEL_TIMEOUT_S, shield=True):
            with contextlib.suppress(Exception):
                resp = await self._request("DELETE", location)
                await resp.aclose()

    async def _skip_of(self, resp: httpx.Response, digest: str, start: int, ranged: bool) -> int:
        """How many leading bytes of a GET's body to drop: 0 for an honoured Range, ``start``
        for a registry that ignored it (200); errors for anything else."""
        if resp.status_code == 206 and ranged:
            m = _CONTENT_RANGE_RE.match(resp.headers.get("content-range", ""))
            if m is None or int(m.group(1)) != start:
                raise BlobStoreError(f"registry {self.url} answered a range we did not ask for")
            return 0
        if resp.status_code == 200:
            return start
        if resp.status_code == 404:
            raise NotFoundError(f"blob {digest} is not in registry repository {self.repository}")
        if resp.status_code == 416:
            raise Unprocessable(f"range starting at {start} is outside blob {digest}")
        await self._fail(resp, f"GET blob {digest}")

    async def _stream(
        self, digest: str, start: int = 0, end: int | None = None
    ) -> AsyncGenerator[bytes, None]:
        """A blob's bytes [start, end] (end None: to the end), from a Range request if the
        registry honours it, else by skipping: constant memory either way."""
        ranged = start > 0 or end is not None
        headers = {"Range": f"bytes={start}-{'' if end is None else end}"} if ranged else {}
        resp = await self._request(
            "GET", self._blob_url(digest), headers=headers, stream=True, follow_redirects=True
        )
        try:
            skip = await self._skip_of(resp, digest, start, ranged)
            remaining = None if end is None else end - start + 1
            async for chunk in resp.aiter_bytes(READ_CHUNK):
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                if remaining is not None:
                    chunk = chunk[:remaining]
                    remaining -= len(chunk)
                if chunk:
                    yield chunk
                if remaining == 0:
                    break
        except httpx.TransportError as exc:
            raise BlobStoreUnavailable(
                f"registry {self.url}: {type(exc).__name__} {exc} while reading {digest}"
            ) from exc
        finally:
            await resp.aclose()

    async def read_range(self, digest: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes [start, end] inclusive (a range past the end yields what there is)."""
        if start < 0 or end < start:
            raise Unprocessable(f"invalid byte range {start}-{end}")
        async with contextlib.aclosing(self._stream(digest, start, end)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def _verified(
        self, digest: str, sink: Callable[[bytes], Awaitable[None]], limit: int | None = None
    ) -> int:
        """Feed the whole blob to ``sink``, checking it hashes to ``digest``; returns its size."""
        h = hashlib.sha256()
        size = 0
        async with contextlib.aclosing(self._stream(digest)) as chunks:
            async for chunk in chunks:
                size += len(chunk)
                if limit is not None and size > limit:
                    raise Unprocessable(f"blob {digest} is larger than {limit} bytes")
                h.update(chunk)
                await sink(chunk)
        if digest_of(h) != digest:
            raise BlobStoreError(
                f"registry {self.url} served bytes hashing to {digest_of(h)} for blob {digest}"
            )
        return size

    async def read_bytes(self, digest: str, limit: int) -> bytes:
        """The whole blob in memory: for small ones (configs, manifests), hence the limit."""
        parts: list[bytes] = []

        async def keep(chunk: bytes) -> None:
            parts.append(chunk)

        await self._verified(digest, keep, limit)
        return b"".join(parts)

    @contextlib.asynccontextmanager
    async def local_file(self, digest: str) -> AsyncIterator[Path]:
        """The blob as a verified temp file, for tools that need a path; removed afterwards."""
        self._blob_url(digest)  # a malformed digest fails before a temp file exists
        fd, name = tempfile.mkstemp(prefix="shipyard-blob-", suffix=".part")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as fh:

                async def write(chunk: bytes) -> None:
                    await anyio.to_thread.run_sync(fh.write, chunk)

                info = await self.stat(digest)
                if info is None:
                    raise NotFoundError(f"blob {digest} not found")
                await self._verified(digest, write, limit=info.size)
            yield path
        finally:
            path.unlink(missing_ok=True)

    async def delete(self, digest: str) -> None:
        """Unlink the blob from the repository (a missing one is no error). The registry frees
        the bytes at its own garbage collection."""
        resp = await self._request("DELETE", self._blob_url(digest))
        if resp.status_code in (200, 202, 204, 404):
            return
        if resp.status_code == 405:
            raise BlobStoreError(
                f"registry {self.url} refuses deletes (Distribution: storage.delete.enabled)"
            )
        await self._fail(resp, f"DELETE blob {digest}")

    def redirect_url(self, digest: str) -> str:
        """Where a client can fetch the blob itself (the registry's public address)."""
        if not is_digest(digest):
            raise Unprocessable(f"not a sha256 digest: {digest!r}")
        return f"{self.public_url}/v2/{self.repository}/blobs/{digest}"

    async def ping(self) -> str | None:
        """None when the registry answers ``GET /v2/`` (after authenticating), else why not."""
        try:
            resp = await self._request("GET", f"{self.url}/v2/")
        except Exception as exc:  # readiness never raises: it says why
            return str(exc) or type(exc).__name__
        if resp.status_code == 200:
            return None
        return f"registry {self.url} answered {resp.status_code}"

    # -- OCI artifacts -------------------------------------------------------------------------

    async def push_artifact(
        self,
        repository_tag: str,
        *,
        config: bytes,
        config_media_type: str,
        layers: list[tuple[str, int, str, str]],
        annotations: dict[str, str],
        artifact_type: str,
    ) -> str:
        """Tag an OCI image manifest (ORAS-style artifact) of already-pushed layer blobs
        ``(media_type, size, digest, title)`` plus ``config``; returns the manifest digest."""
        if not _TAG_RE.fullmatch(repository_tag):
            raise Unprocessable(f"not an OCI tag: {repository_tag!r}")
        for media_type in (config_media_type, artifact_type, *(layer[0] for layer in layers)):
            if not _MEDIA_TYPE_RE.fullmatch(media_type):
                raise Unprocessable(f"not a media type: {media_type!r}")
        descriptors = []
        for media_type, size, digest, title in layers:
            info = await self.stat(digest)
            if info is None:
                raise Unprocessable(
                    f"layer {title!r} ({digest}) is not in registry repository "
                    f"{self.repository}: upload its blob first"
                )
            if info.size != size:
                raise Unprocessable(f"layer {title!r} is {info.size} bytes, not {size}")
            descriptors.append(
                {
                    "mediaType": media_type,
                    "digest": digest,
                    "size": size,
                    "annotations": {TITLE_ANNOTATION: title},
                }
            )
        config_digest = sha256_bytes(config)
        if await self.stat(config_digest) is None:
            await self.put(config_digest, _one(config))
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "artifactType": artifact_type,
            "config": {
                "mediaType": config_media_type,
                "digest": config_digest,
                "size": len(config),
            },
            "layers": descriptors,
        }
        if annotations:
            manifest["annotations"] = dict(annotations)
        body = json.dumps(manifest, separators=(",", ":"), ensure_ascii=False).encode()
        expected = sha256_bytes(body)
        url = f"{self.url}/v2/{self.repository}/manifests/{repository_tag}"
        resp = await self._request(
            "PUT", url, headers={"Content-Type": MANIFEST_MEDIA_TYPE}, content=body
        )
        if resp.status_code != 201:
            await self._fail(resp, f"PUT manifest {repository_tag}")
        got = resp.headers.get("docker-content-digest", expected)  # optional in the OCI spec
        if got != expected:
            raise BlobStoreError(
                f"registry {self.url} stored manifest {repository_tag} as {got}, not {expected}"
            )
        return expected

    async def get_manifest(self, tag: str) -> dict[str, Any]:
        """The manifest under a tag or digest, as JSON (for checks and tests)."""
        if not (_TAG_RE.fullmatch(tag) or is_digest(tag)):
            raise Unprocessable(f"not an OCI tag or digest: {tag!r}")
        resp = await self._request(
            "GET",
            f"{self.url}/v2/{self.repository}/manifests/{tag}",
            headers={"Accept": MANIFEST_MEDIA_TYPE},  # without it Distribution hides OCI ones
        )
        if resp.status_code == 404:
            raise NotFoundError(f"no manifest {tag} in registry repository {self.repository}")
        if resp.status_code != 200:
            await self._fail(resp, f"GET manifest {tag}")
        value = resp.json()
        if not isinstance(value, dict):
            raise BlobStoreError(f"registry {self.url} served a manifest that is not an object")
        return value

    async def delete_artifact(self, tag: str) -> None:
        """Remove a tag's manifest (its blobs stay until deleted or garbage-collected); a tag
        that is not there is no error."""
        if not _TAG_RE.fullmatch(tag):
            raise Unprocessable(f"not an OCI tag: {tag!r}")
        resp = await self._request(
            "HEAD",
            f"{self.url}/v2/{self.repository}/manifests/{tag}",
            headers={"Accept": MANIFEST_MEDIA_TYPE},
        )
        if resp.status_code == 404:
            return
        digest = resp.headers.get("docker-content-digest", "")
        if resp.status_code != 200 or not is_digest(digest):
            await self._fail(resp, f"HEAD manifest {tag}")
        gone = await self._request("DELETE", f"{self.url}/v2/{self.repository}/manifests/{digest}")
        if gone.status_code not in (202, 404):
            await self._fail(gone, f"DELETE manifest {tag}")
