"""HTTP client of the central registry, shared by the ``artifact`` CLI, build workers and the edge.

Errors come back as the documented hierarchy (``RegistryUnavailableError``, ``AuthError``,
``NotFoundError``, ``ConflictError``, ``Overloaded`` with the server's ``Retry-After``,
``RegistryError``) with the server's problem ``detail``.
Downloads resume from a ``.part`` file and every byte is checked against its digest before a
bundle is assembled — atomically — and verified.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import errno
import hashlib
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

import httpx
import msgspec

from artifacts import atomic
from artifacts.bundle import VerifiedBundle, authenticate, check_paths, check_relpath, verify_bundle
from artifacts.digests import digest_of, hex_of, sha256_file, unb64
from artifacts.errors import (
    BY_STATUS,
    DigestMismatchError,
    DiskFullError,
    InputError,
    NotFoundError,
    Overloaded,
    RegistryError,
    RegistryUnavailableError,
    ShipyardError,
    SizeMismatchError,
    WrongBundleError,
)
from artifacts.manifest import MANIFEST_FILE, SIGNATURE_FILE, FileEntry, Manifest, decode
from artifacts.signing import TrustedKeys
from artifacts.targets import NodeCapabilities, SelectionPolicy
from artifacts.wire import (
    AuditInfo,
    BuildCreated,
    BuildInfo,
    BuildRequest,
    BundleInfo,
    CatalogBinding,
    CatalogInfo,
    CatalogItemsRequest,
    ChannelInfo,
    CreateToken,
    CreateVersion,
    DisableWorker,
    EnrollWorker,
    FleetHandedOver,
    FleetHandover,
    Halt,
    HeartbeatReply,
    IndexBuildRequest,
    IndexItems,
    JobDone,
    JobLogs,
    Lease,
    LeaseRef,
    LogLine,
    ModelInfo,
    NodeInfo,
    NodeReport,
    Promote,
    Published,
    PutBundle,
    ResolveRequest,
    ResolveResponse,
    RunInfo,
    RunRequest,
    TokenCreated,
    TokenInfo,
    VectorBatch,
    VectorsStored,
    VersionInfo,
    VersionRef,
    WorkerEnrolled,
    WorkerHello,
    WorkerInfo,
    WorkerKey,
)

CHUNK = 1 << 20
MAX_ANSWER_BYTES = 32 << 20  # no API answer is near this; a bigger one is hostile
# the fleet view, all pages together (central's bound: 256 nodes x 64 KiB per token)
MAX_FLEET_BYTES = 256 << 20
MAX_ERROR_BYTES = 64 << 10  # an error page beside a blob download (mirror, registry redirect)
MIN_BLOB_BYTES_PER_S = 32 << 10  # after the client's timeout, a blob slower than this is dropped
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
T = TypeVar("T")
Progress = Callable[[int], None]
TRANSPORT_ERRORS = (
    httpx.ConnectError,
    httpx.TimeoutException,
    httpx.RemoteProtocolError,
    httpx.ReadError,
    httpx.WriteError,
)


@dataclass(frozen=True)
class SignedManifest:
    """manifest.json's bytes and manifest.sig's text, as the registry holds them."""

    manifest: bytes
    signature: str


@dataclass(frozen=True)
class BundleRef:
    """The bundle that was asked for; a manifest naming anything else is refused."""

    model: str
    version: int
    target: str

    def check(self, manifest: Manifest) -> None:
        named = (manifest.model.name, manifest.model.version, manifest.bundle_key())
        if named != (self.model, self.version, self.target):
            raise WrongBundleError(
                f"manifest names {named[0]} v{named[1]} {named[2]}, but "
                f"{self.model} v{self.version} {self.target} was asked for"
            )


@dataclass(frozen=True)
class PullTarget:
    """Where a pulled bundle goes (``dest``) and where its blobs download to meanwhile."""

    dest: Path
    downloads: Path
    overwrite: bool = False


def decode_b64(value: str, what: str) -> bytes:
    return unb64(value, f"the registry's {what}", RegistryError)


def _resume(part: Path, size: int | None, progress: Progress | None) -> tuple[Any, int]:
    """The hash of what an earlier attempt left in ``part`` and its length (0: start over)."""
    h = hashlib.sha256()
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if have:
        with open(part, "rb") as fh:
            while chunk := fh.read(CHUNK):
                h.update(chunk)
        if progress:
            progress(have)
    return h, have


def _error_answer(response: httpx.Response, cap: int) -> httpx.Response:
    """A streamed error answer with at most ``cap`` bytes of its body (the rest is dropped)."""
    body = bytearray()
    for chunk in response.iter_raw():
        body += chunk
        if len(body) >= cap:
            break
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        content=bytes(body[:cap]),
        request=response.request,
    )


def refuse_encoded(response: httpx.Response) -> None:
    """Only identity-encoded answers are read: a compressed one could expand without bound
    before any size check sees it (we ask for identity; a proxy that ignores that is refused)."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise RegistryError(
            f"{response.request.method} {response.request.url.path}: the answer is "
            f"{encoding}-encoded; only identity encoding is accepted (a decompression bomb "
            "cannot be bounded)"
        )


def _decoded(raw: bytes, into: type[T]) -> T:
    """Decode an answer into its wire type; anything else is the registry's error."""
    try:
        return msgspec.json.decode(raw, type=into)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise RegistryError(f"the registry answered outside its API: {exc}") from exc


RETRY_AFTER_MAX_S = 300.0  # a hostile or confused server cannot park a client for longer


def retry_after_s(value: str | None, default: float = 1.0) -> float:
    """A ``Retry-After`` in seconds: delta-seconds or an HTTP date, bounded to
    [0, ``RETRY_AFTER_MAX_S``]; ``default`` when absent or unreadable."""
    if not value:
        return default
    value = value.strip()
    if value.isascii() and value.isdigit():  # "²" is a digit to isdigit(), not to float()
        wait = float(value) if len(value) <= 9 else RETRY_AFTER_MAX_S
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return default
        if when.tzinfo is None:
            return default
        wait = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
    return min(max(wait, 0.0), RETRY_AFTER_MAX_S)


def _raise_for(response: httpx.Response) -> None:
    """Raise the hierarchy's class for an error status, with the server's problem detail."""
    if response.is_success or response.status_code == 304:
        return
    try:
        body = response.json()
        detail = (body.get("detail") or body.get("title")) if isinstance(body, dict) else None
        detail = detail or response.text[:500]
    except ValueError:
        detail = response.text[:500] or response.reason_phrase
    status = response.status_code
    where = f"{response.request.method} {response.request.url.path}"
    if status == 429:
        wait = retry_after_s(response.headers.get("retry-after"))
        raise Overloaded(f"{status} {detail} ({where}); retry after {wait:g} s", wait)
    cls = BY_STATUS.get(status) or (RegistryUnavailableError if status >= 500 else RegistryError)
    raise cls(f"{status} {detail} ({where})", status=status)


def central_urls(url: str | Sequence[str]) -> list[str]:
    """``"http://a:8700,http://b:8700"`` (or a list) as a list of base URLs, in order."""
    parts = url.split(",") if isinstance(url, str) else list(url)
    urls = [u.strip().rstrip("/") for u in parts if u.strip()]
    if not urls:
        raise InputError("no central URL given")
    for u in urls:
        if not u.startswith(("http://", "https://")):
            raise InputError(f"central URL {u!r} is not http(s)://")
    return urls


# Answers that mean "this replica cannot serve now": an idempotent call goes to the next one.
# A non-idempotent call only when it never reached a replica: a 502/503/504 may come after the
# call was applied (a gateway timing out, a version created before a blob store failed).
FAILOVER_STATUSES = (502, 503, 504)
# A request that never reached a replica; anything else is retried only when idempotent.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
IDEMPOTENT = ("GET", "HEAD", "PUT", "DELETE")


class RegistryClient:
    """Central's API. ``url`` may name several replicas (comma-separated or a list): a call
    that cannot reach one, or that one answers 502/503/504, goes to the next (a non-idempotent
    call only when it never reached the first). ``blob_mirror``: an OCI registry holding the
    same blobs (``https://host[/v2 repository]``), tried first for blob bytes, which are
    verified by digest as always; it never sees central's token."""

    def __init__(
        self,
        url: str | Sequence[str],
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        blob_mirror: str | None = None,
        mirror_repository: str = "shipyard/blobs",
    ) -> None:
        headers = {"User-Agent": "shipyard-artifact/0.1", "Accept-Encoding": "identity"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.urls = central_urls(url)
        self.url = self.urls[0]  # the replica answering now
        self.timeout = timeout  # also the whole-answer deadline: a slowloris answer is cut off
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=5.0),
            transport=transport,
        )
        self.mirror = (
            f"{central_urls(blob_mirror)[0]}/v2/{mirror_repository}/blobs/" if blob_mirror else None
        )
        self._mirror_http = (
            httpx.Client(
                headers={"User-Agent": headers["User-Agent"], "Accept-Encoding": "identity"},
                timeout=httpx.Timeout(timeout, connect=3.0),
                transport=transport,
                follow_redirects=True,
            )
            if blob_mirror
            else None
        )
        self.mirror_failures = 0  # blob reads the mirror could not serve (fell back to central)

    def close(self) -> None:
        self._http.close()
        if self._mirror_http is not None:
            self._mirror_http.close()

    def _replicas(self) -> list[str]:
        """The replica that answered last first, then the others in order."""
        return [self.url, *(u for u in self.urls if u != self.url)]

    def _failover(self, call: Callable[[str], T], *, idempotent: bool) -> T:
        """``call(base_url)`` on each replica until one serves it: a call that never reached a
        replica goes on; an idempotent one also after a transport error or a 502/503/504."""
        last: Exception | None = None
        for base in self._replicas():
            try:
                result = call(base)
            except RegistryUnavailableError as exc:
                last = exc
                if getattr(exc, "answered", False):  # the replica said it cannot serve
                    if exc.status not in FAILOVER_STATUSES or not idempotent:
                        raise
                elif not idempotent and not isinstance(exc.__cause__, NOT_SENT):
                    raise  # it may have been applied: never repeat a non-idempotent call
                continue
            self.url = base
            return result
        assert last is not None
        raise last

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """One API call (on the first replica that can serve it); ``content`` may be a
        callable giving a fresh body per attempt."""
        body = kw.pop("content", None)
        idempotent = kw.pop("idempotent", method in IDEMPOTENT)

        def attempt(base: str) -> httpx.Response:
            if body is not None:
                kw["content"] = body() if callable(body) else body
            return self._request_once(base, method, path, **kw)

        return self._failover(attempt, idempotent=idempotent)

    def _request_once(self, base: str, method: str, path: str, **kw: Any) -> httpx.Response:
        """The answer is read up to :data:`MAX_ANSWER_BYTES` (a registry that streams more is
        refused, not buffered)."""
        try:
            with self._http.stream(method, base + path, **kw) as streamed:
                # the answer (not an upload before it) must arrive within the timeout
                deadline = time.monotonic() + self.timeout
                refuse_encoded(streamed)
                body = bytearray()
                for chunk in streamed.iter_raw():
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise RegistryError(
                            f"{method} {path}: the registry's answer exceeds "
                            f"{MAX_ANSWER_BYTES} bytes; refused"
                        )
                    if time.monotonic() > deadline:
                        raise RegistryUnavailableError(
                            f"{method} {path}: the answer took longer than {self.timeout:g} s "
                            "(a trickling answer is cut off)"
                        )
        except TRANSPORT_ERRORS as exc:
            raise RegistryUnavailableError(
                f"registry {base} unreachable: {exc.__class__.__name__}: {exc}"
            ) from exc
        except httpx.HTTPError as exc:
            raise RegistryError(f"{method} {path}: {exc.__class__.__name__}: {exc}") from exc
        response = httpx.Response(
            streamed.status_code,
            headers=streamed.headers,
            content=bytes(body),
            request=streamed.request,
        )
        try:
            _raise_for(response)
        except RegistryUnavailableError as exc:
            exc.answered = True  # type: ignore[attr-defined]
            raise
        return response

    def _json(self, method: str, path: str, body: msgspec.Struct | None = None, **kw: Any) -> Any:
        if body is not None:
            kw["content"] = msgspec.json.encode(body)
            kw.setdefault("headers", {})["Content-Type"] = "application/json"
        return self._request(method, path, **kw).content

    # ---- registry ------------------------------------------------------------------------

    def health(self) -> bool:
        try:
            return self._http.get(self.url + "/readyz", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def list_models(self) -> list[ModelInfo]:
        return _decoded(self._json("GET", "/v1/models"), into=list[ModelInfo])

    def create_version(self, model: str, *, source_digest: str = "", notes: str = "") -> int:
        raw = self._json(
            "POST",
            f"/v1/models/{model}/versions",
            CreateVersion(source_digest=source_digest, notes=notes),
        )
        return _decoded(raw, into=VersionRef).version

    def list_versions(self, model: str) -> list[VersionInfo]:
        return _decoded(self._json("GET", f"/v1/models/{model}/versions"), into=list[VersionInfo])

    def get_version(self, model: str, version: int) -> VersionInfo:
        return _decoded(
            self._json("GET", f"/v1/models/{model}/versions/{version}"), into=VersionInfo
        )

    def bundle_document(self, model: str, version: int, target: str) -> SignedManifest:
        doc = _decoded(
            self._json("GET", f"/v1/models/{model}/versions/{version}/bundles/{target}"),
            into=PutBundle,
        )
        return SignedManifest(decode_b64(doc.manifest, "manifest"), doc.signature)

    def put_bundle(
        self, model: str, version: int, target: str, manifest: bytes, signature: str
    ) -> tuple[BundleInfo, bool]:
        path = f"/v1/models/{model}/versions/{version}/bundles/{target}"
        response = self._request(
            "PUT",
            path,
            content=msgspec.json.encode(
                PutBundle(manifest=base64.b64encode(manifest).decode(), signature=signature)
            ),
            headers={"Content-Type": "application/json"},
        )
        return _decoded(response.content, into=BundleInfo), response.status_code == 201

    def channels(self, model: str) -> list[ChannelInfo]:
        return _decoded(self._json("GET", f"/v1/models/{model}/channels"), into=list[ChannelInfo])

    def channel(self, model: str, channel: str) -> ChannelInfo:
        return _decoded(
            self._json("GET", f"/v1/models/{model}/channels/{channel}"), into=ChannelInfo
        )

    def promote(
        self, model: str, channel: str, version: int, *, force: bool = False
    ) -> ChannelInfo:
        raw = self._json(
            "POST",
            f"/v1/models/{model}/channels/{channel}/promote",
            Promote(version=version, force=force),
        )
        return _decoded(raw, into=ChannelInfo)

    def rollback(self, model: str, channel: str) -> ChannelInfo:
        return _decoded(
            self._json("POST", f"/v1/models/{model}/channels/{channel}/rollback"), into=ChannelInfo
        )

    def resolve(
        self,
        model: str,
        capabilities: NodeCapabilities,
        *,
        channel: str | None = None,
        version: int | None = None,
        policy: SelectionPolicy | None = None,
    ) -> ResolveResponse:
        req = ResolveRequest(
            model=model,
            channel=channel,
            version=version,
            capabilities=capabilities,
            policy=policy or SelectionPolicy(),
        )
        return _decoded(self._json("POST", "/v1/resolve", req), into=ResolveResponse)

    # ---- builds & workers ----------------------------------------------------------------

    def submit_build(self, req: BuildRequest) -> BuildCreated:
        return _decoded(self._json("POST", "/v1/builds", req), into=BuildCreated)

    def submit_index(self, req: IndexBuildRequest) -> BuildCreated:
        """``POST /v1/indexes``: a catalog index built and verified by workers (follow the
        build with :meth:`build`)."""
        return _decoded(self._json("POST", "/v1/indexes", req), into=BuildCreated)

    def change_index_items(self, name: str, change: IndexItems) -> BuildCreated:
        """``PUT`` (``change.items``) or ``DELETE`` (``change.ids``) ``/v1/indexes/{name}/items``:
        a cumulative delta, built and verified by workers."""
        method = "DELETE" if change.ids else "PUT"
        # each call starts a build (a new version): never repeated on another replica
        raw = self._json(method, f"/v1/indexes/{name}/items", change, idempotent=False)
        return _decoded(raw, into=BuildCreated)

    def build(self, build_id: int) -> BuildInfo:
        return _decoded(self._json("GET", f"/v1/builds/{build_id}"), into=BuildInfo)

    # ---- the catalog queue ---------------------------------------------------------------

    def bind_catalog(self, name: str, binding: CatalogBinding) -> CatalogInfo:
        return _decoded(self._json("PUT", f"/v1/catalogs/{name}", binding), into=CatalogInfo)

    def catalog(self, name: str) -> CatalogInfo:
        return _decoded(self._json("GET", f"/v1/catalogs/{name}"), into=CatalogInfo)

    def catalog_items(self, name: str, change: CatalogItemsRequest) -> Published:
        # published with message ids: a repeat on another replica is dropped by the broker
        return _decoded(
            self._json("POST", f"/v1/catalogs/{name}/items", change, idempotent=True),
            into=Published,
        )

    def start_run(self, name: str, req: RunRequest) -> RunInfo:
        raw = self._json(
            "POST", f"/v1/catalogs/{name}/runs", req, idempotent=True
        )  # a repeat resumes: harmless
        return _decoded(raw, into=RunInfo)

    def catalog_run(self, name: str, run_id: int) -> RunInfo:
        return _decoded(self._json("GET", f"/v1/catalogs/{name}/runs/{run_id}"), into=RunInfo)

    def put_vectors(self, name: str, batch: VectorBatch) -> VectorsStored:
        """An embed worker's results; stored once per product id + version + text digest."""
        raw = self._json("PUT", f"/v1/catalogs/{name}/vectors", batch)
        return _decoded(raw, into=VectorsStored)

    def builds(self, limit: int = 50) -> list[BuildInfo]:
        return _decoded(
            self._json("GET", "/v1/builds", params={"limit": limit}), into=list[BuildInfo]
        )

    def build_logs(self, build_id: int, after: int = 0, limit: int = 500) -> list[LogLine]:
        raw = self._json(
            "GET", f"/v1/builds/{build_id}/logs", params={"after": after, "limit": limit}
        )
        return _decoded(raw, into=list[LogLine])

    def cancel_build(self, build_id: int) -> BuildInfo:
        return _decoded(self._json("POST", f"/v1/builds/{build_id}/cancel"), into=BuildInfo)

    def worker_hello(self, hello: WorkerHello) -> None:
        self._json("POST", "/v1/workers", hello)

    def register_worker_key(self, name: str, public_pem: str) -> WorkerInfo:
        raw = self._json("PUT", f"/v1/workers/{name}/key", WorkerKey(public_key=public_pem))
        return _decoded(raw, into=WorkerInfo)

    def enroll_worker(
        self, name: str, targets: list[str], capabilities: NodeCapabilities | None = None
    ) -> str:
        """Enrol a build worker (admin); its credential, shown once."""
        body = EnrollWorker(name=name, targets=targets, capabilities=capabilities)
        return _decoded(self._json("POST", "/v1/workers/enroll", body), into=WorkerEnrolled).token

    def workers(self) -> list[WorkerInfo]:
        return _decoded(self._json("GET", "/v1/workers"), into=list[WorkerInfo])

    def disable_worker(self, name: str, reason: str = "") -> WorkerInfo:
        raw = self._json("POST", f"/v1/workers/{name}/disable", DisableWorker(reason=reason))
        return _decoded(raw, into=WorkerInfo)

    def reset_worker_key(self, name: str) -> WorkerInfo:
        raw = self._json("POST", f"/v1/workers/{name}/reset-key")
        return _decoded(raw, into=WorkerInfo)

    def lease(self, worker: str, wait: float) -> Lease | None:
        r = self._request(
            "POST",
            f"/v1/workers/{worker}/lease",
            params={"wait": wait},
            timeout=httpx.Timeout(wait + 30, connect=5.0),
        )
        return None if r.status_code == 204 else _decoded(r.content, into=Lease)

    def heartbeat(self, job_id: int, lease_token: str) -> HeartbeatReply:
        raw = self._json("POST", f"/v1/jobs/{job_id}/heartbeat", LeaseRef(lease_token=lease_token))
        return _decoded(raw, into=HeartbeatReply)

    def job_logs(self, job_id: int, lease_token: str, lines: list[str]) -> None:
        self._json("POST", f"/v1/jobs/{job_id}/logs", JobLogs(lease_token=lease_token, lines=lines))

    def job_complete(self, job_id: int, done: JobDone) -> None:
        self._json("POST", f"/v1/jobs/{job_id}/complete", done)

    def job_fail(self, job_id: int, done: JobDone) -> None:
        self._json("POST", f"/v1/jobs/{job_id}/fail", done)

    def heartbeat_node(self, report: NodeReport) -> None:
        self._json("POST", "/v1/fleet/heartbeat", report)

    def fleet(self, page_size: int = 100, max_nodes: int = 100_000) -> list[NodeInfo]:
        """Every node, following the pages (``X-Fleet-Next``) up to ``max_nodes``. A registry
        whose pages overfill, repeat a node or a cursor, or add up past
        :data:`MAX_FLEET_BYTES` is refused (so none can keep us here, or fill our memory)."""
        out: dict[str, NodeInfo] = {}
        params: dict[str, Any] = {"limit": page_size}
        seen: set[str] = set()
        total = 0
        for _ in range(-(-max_nodes // page_size)):
            r = self._request("GET", "/v1/fleet", params=params)
            total += len(r.content)
            page = _decoded(r.content, into=list[NodeInfo])
            if len(page) > page_size or total > MAX_FLEET_BYTES:
                raise RegistryError(
                    f"the registry's fleet pages overflow ({len(page)} nodes asked {page_size}; "
                    f"{total} bytes so far, the limit is {MAX_FLEET_BYTES})"
                )
            for n in page:
                if n.node in out:
                    raise RegistryError(f"the registry's fleet pages repeat node {n.node!r}")
                out[n.node] = n
            after = r.headers.get("x-fleet-next")
            if after is None or len(out) >= max_nodes:
                break
            if after in seen:
                raise RegistryError("the registry's fleet pages do not advance")
            seen.add(after)
            params = {"limit": page_size, "after": unquote(after)}
        return list(out.values())[:max_nodes]

    def fleet_handover(
        self, from_token: int | None, to_token: int, nodes: list[str] | None = None
    ) -> list[str]:
        """Move ``from_token``'s nodes (or just ``nodes``) to ``to_token`` (admin); without
        ``from_token``, assign ``nodes`` that no token holds yet. The names moved."""
        body = FleetHandover(from_token=from_token, to_token=to_token, nodes=nodes)
        return _decoded(self._json("POST", "/v1/fleet/handover", body), into=FleetHandedOver).moved

    def delete_node(self, node: str) -> None:
        """Forget a fleet node (admin): a stale one, or one to hand to another token."""
        self._json("DELETE", f"/v1/fleet/{quote(node, safe='')}")

    def halt(self, model: str, channel: str, reason: str = "") -> ChannelInfo:
        raw = self._json("POST", f"/v1/models/{model}/channels/{channel}/halt", Halt(reason=reason))
        return _decoded(raw, into=ChannelInfo)

    def resume(self, model: str, channel: str) -> ChannelInfo:
        return _decoded(
            self._json("POST", f"/v1/models/{model}/channels/{channel}/resume"), into=ChannelInfo
        )

    def create_token(
        self,
        name: str,
        scopes: list[str],
        *,
        expires_in_s: float | None = None,
        catalogs: list[str] | None = None,
    ) -> str:
        """A new bearer token (admin): shown once, stored hashed by central; ``catalogs``
        binds its catalog routes to those catalogs."""
        body = CreateToken(name=name, scopes=scopes, expires_in_s=expires_in_s, catalogs=catalogs)
        return _decoded(self._json("POST", "/v1/tokens", body), into=TokenCreated).token

    def tokens(self) -> list[TokenInfo]:
        return _decoded(self._json("GET", "/v1/tokens"), into=list[TokenInfo])

    def revoke_token(self, token_id: int) -> TokenInfo:
        raw = self._json("POST", f"/v1/tokens/{token_id}/revoke")
        return _decoded(raw, into=TokenInfo)

    def audit(self, limit: int = 100) -> list[AuditInfo]:
        return _decoded(
            self._json("GET", "/v1/audit", params={"limit": limit}), into=list[AuditInfo]
        )

    # ---- blobs ---------------------------------------------------------------------------

    def blob_exists(self, digest: str) -> bool:
        try:
            self._request("HEAD", f"/v1/blobs/{digest}")
            return True
        except NotFoundError:
            return False

    def upload_blob(
        self, digest: str, source: Path | bytes, progress: Progress | None = None
    ) -> bool:
        """Stream a file (or bytes) up; returns False when the registry already had it."""
        size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
        if self.blob_exists(digest):
            if progress:
                progress(size)
            return False

        def chunks() -> Iterator[bytes]:
            if isinstance(source, bytes):
                for i in range(0, len(source), CHUNK):
                    if progress:
                        progress(len(source[i : i + CHUNK]))
                    yield source[i : i + CHUNK]
                return
            with open(source, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    if progress:
                        progress(len(chunk))
                    yield chunk

        self._request(
            "PUT",
            f"/v1/blobs/{digest}",
            content=chunks,  # a fresh body if a replica fails mid-upload and the next one tries
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            timeout=httpx.Timeout(600.0, connect=5.0),
        )
        return True

    def download_blob(
        self, digest: str, dest: Path, *, size: int | None = None, progress: Progress | None = None
    ) -> Path:
        """Download to ``dest`` (resuming ``dest.part`` with a Range request), verifying the
        digest; with ``size`` (the exact size, or a cap) the download stops past it (a registry
        cannot fill the disk). With
        a blob mirror its bytes are tried first; whatever it fails at (down, slow, too long,
        wrong bytes) is fetched from central instead."""
        hex_of(digest)  # a well-formed digest before it becomes part of a URL
        dest = Path(dest)
        part = dest.with_name(dest.name + ".part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self.mirror is not None and self._mirror_http is not None:
            mirror = self._mirror_http
            kept = part.stat().st_size if part.exists() else 0
            try:
                url = self.mirror + digest
                return self._download_from(
                    lambda h, have: self._fetch(mirror, url, part, (h, have), size, progress),
                    digest,
                    part,
                    size,
                    progress,
                )
            except DiskFullError:
                raise
            except ShipyardError:  # down, missing, slow, too long, wrong bytes: central serves it
                self.mirror_failures += 1
                if part.exists() and part.stat().st_size != kept:
                    part.unlink()  # whatever the mirror wrote (it may have rewritten from 0)
        path = f"/v1/blobs/{digest}"

        def from_central(h: Any, have: int) -> Any:
            return self._failover(
                lambda base: self._guarded(
                    digest,
                    lambda: self._fetch(
                        self._http, base + path, part, _resume(part, size, None), size, progress
                    ),
                ),
                idempotent=True,
            )

        return self._download_from(from_central, digest, part, size, progress)

    def _download_from(
        self,
        fetch: Callable[[Any, int], Any],
        digest: str,
        part: Path,
        size: int | None,
        progress: Progress | None,
    ) -> Path:
        h, have = _resume(part, size, progress)
        if size is None or have < size:
            h = self._guarded(digest, lambda: fetch(h, have), part=part)
        actual = digest_of(h)
        if actual != digest:
            part.unlink(missing_ok=True)
            raise DigestMismatchError(
                f"downloaded blob hashes to {actual[:19]}…, expected {digest[:19]}…; discarded"
            )
        dest = part.with_name(part.name.removesuffix(".part"))
        os.replace(part, dest)
        return dest

    @staticmethod
    def _guarded(digest: str, call: Callable[[], T], *, part: Path | None = None) -> T:
        """Transport errors as the hierarchy's; a full disk gives its space back."""
        try:
            return call()
        except OSError as exc:
            if exc.errno not in DISK_FULL or part is None:
                raise
            part.unlink(missing_ok=True)  # give the space back; nothing half-written stays
            raise DiskFullError(
                f"download of {digest[:19]}…: {os.strerror(exc.errno)} in {part.parent}; "
                "the partial download was removed"
            ) from exc
        except TRANSPORT_ERRORS as exc:
            raise RegistryUnavailableError(
                f"download of {digest[:19]}… interrupted ({exc.__class__.__name__}); it resumes next time"
            ) from exc
        except httpx.HTTPError as exc:
            raise RegistryError(
                f"download of {digest[:19]}…: {exc.__class__.__name__}: {exc}"
            ) from exc

    def _fetch(
        self,
        http: httpx.Client,
        url: str,
        part: Path,
        resume: tuple[Any, int],
        size: int | None,
        progress: Progress | None = None,
    ) -> Any:
        """Append the rest of the blob to ``part`` (or rewrite it if the server ignores Range).
        Central may answer 307 to its OCI registry: followed (httpx drops the token when the
        redirect leaves central's origin)."""
        digest = url.rsplit("/", 1)[-1]
        h, have = resume
        headers = {"Range": f"bytes={have}-"} if have else {}
        with http.stream("GET", url, headers=headers, follow_redirects=True) as r:
            if r.status_code == 416 and have:
                return h  # already complete
            refuse_encoded(r)
            if not r.is_success:
                try:  # a mirror's or registry's error page: read a little of it, not all
                    _raise_for(_error_answer(r, MAX_ERROR_BYTES))
                except RegistryUnavailableError as exc:
                    exc.answered = True  # type: ignore[attr-defined]
                    raise
            if r.status_code != 206 and have:
                h, have = hashlib.sha256(), 0
            started, got = time.monotonic(), 0
            with open(part, "ab" if have else "wb") as fh:
                for chunk in r.iter_raw():  # as it arrives: a trickle is seen, not buffered
                    have += len(chunk)
                    got += len(chunk)
                    self._check_rate(digest, started, got)
                    if size is not None and have > size:
                        fh.close()
                        part.unlink(missing_ok=True)
                        raise SizeMismatchError(
                            f"blob {digest[:19]}… is larger than the {size} bytes expected (its "
                            "manifest's size, or this client's cap); download stopped and "
                            "discarded"
                        )
                    fh.write(chunk)
                    h.update(chunk)
                    if progress:
                        progress(len(chunk))
                fh.flush()
                os.fsync(fh.fileno())
        return h

    def _check_rate(self, digest: str, started: float, got: int) -> None:
        """A blob that trickles (a slowloris registry or proxy) would hold the sync forever:
        after the client's timeout it must average :data:`MIN_BLOB_BYTES_PER_S`."""
        elapsed = time.monotonic() - started
        if elapsed > self.timeout and got < MIN_BLOB_BYTES_PER_S * elapsed:
            raise RegistryUnavailableError(
                f"download of {digest[:19]}…: {got / elapsed / 1024:.1f} KiB/s after "
                f"{elapsed:.0f} s, below {MIN_BLOB_BYTES_PER_S >> 10} KiB/s; it resumes next time"
            )

    # ---- bundles -------------------------------------------------------------------------

    def push_bundle(
        self, bundle: VerifiedBundle, progress: Progress | None = None
    ) -> tuple[BundleInfo, bool]:
        """Upload a verified bundle's files (skipping blobs the registry has) and register it."""
        m = bundle.manifest
        for entry in m.files:
            self.upload_blob(entry.sha256, bundle.file(entry.path), progress)
        return self.put_bundle(
            m.model.name, m.model.version, m.bundle_key(), bundle.manifest_bytes, bundle.signature
        )

    def pull_bundle(
        self,
        document: SignedManifest,
        into: PullTarget,
        trusted: TrustedKeys | None,
        *,
        expect: BundleRef | None = None,
        progress: Progress | None = None,
    ) -> VerifiedBundle:
        """Download a bundle's files and place it at ``into.dest`` atomically, verified.

        The signature is checked before anything is downloaded, and the manifest must name
        ``expect`` (the bundle that was asked for: a registry answer is hostile until
        verified). Each download stops at its declared size. ``into.downloads`` keeps
        completed and partial blobs between attempts (resume). Nothing is placed at the
        destination unless every digest and the signature check out.
        """
        manifest: Manifest = decode(document.manifest)
        check_paths(manifest)
        if trusted is not None:  # authenticate the file list before downloading anything
            authenticate(manifest, document.manifest, document.signature.encode(), trusted)
        if expect is not None:
            expect.check(manifest)
        fetched = {
            entry.path: self._fetch_entry(entry, into.downloads, progress)
            for entry in manifest.files
        }
        with atomic.staged_dir(into.dest, overwrite=into.overwrite) as tmp:
            for relpath, src in fetched.items():
                target = tmp / check_relpath(relpath)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, target)
                except OSError:
                    shutil.copyfile(src, target)
            (tmp / MANIFEST_FILE).write_bytes(document.manifest)
            if document.signature:
                (tmp / SIGNATURE_FILE).write_text(document.signature)
            verify_bundle(tmp, trusted)  # raises -> the staged dir is discarded
        for src in fetched.values():  # the bundle holds the bytes now; keep no second name
            src.unlink(missing_ok=True)
        return verify_bundle(into.dest, trusted, check_digests=False)

    def _fetch_entry(self, entry: FileEntry, downloads: Path, progress: Progress | None) -> Path:
        check_relpath(entry.path)
        local = Path(downloads) / hex_of(entry.sha256)
        # a completed download left by an earlier attempt is reused only if it still hashes
        # right (it may share an inode with a bundle someone tampered with)
        if local.exists() and sha256_file(local) != entry.sha256:
            local.unlink()
        if not local.exists():
            self.download_blob(entry.sha256, local, size=entry.size, progress=progress)
        elif progress:
            progress(entry.size)
        return local
