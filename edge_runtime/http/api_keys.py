"""Optional API keys for the edge API, with a request-rate limit per key.

Keys live hashed in a file named by ``[server] api_keys_file`` (reloaded on SIGHUP; a file
that fails to parse keeps the previous keys and says why). One key per line::

    # name      sha256 of the key (hex)                                    req/s  scopes
    search-fe   sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  200  infer
    ops         sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae  0    metrics,status

Scopes: ``infer`` (OpenAI-style and KServe inference, model metadata), ``status``
(``/v1/status``, ``/schema``), ``metrics`` (``/metrics``). ``/healthz``, ``/readyz`` and
the KServe health routes stay open for probes. A rate of 0 means unlimited. Without a file
the API is open (a node behind a private network's own gate). ``edge-runtime api-key add``
creates a key, prints it once and appends its hash.

The check runs in front of everything else (before load shedding, before the body is read):
an unknown key costs one hash, never a queue slot.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from artifacts import atomic
from artifacts.errors import InputError
from artifacts.wire import MEDIA_TYPE_PROBLEM, problem_bytes

log = logging.getLogger("shipyard.edge.auth")
SCOPES = ("infer", "status", "metrics")
OPEN_PATHS = ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready")
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def route_path(path: str) -> str:
    """The path as the router will match it (``//v1/status/`` serves ``/v1/status``): every
    check in front of the router decides on this, so a spelling cannot change the decision."""
    if "//" not in path and not path.endswith("/"):  # the common case: already the route's
        return path or "/"
    return re.sub(r"/{2,}", "/", path).rstrip("/") or "/"


def scope_of(path: str) -> str | None:
    """The scope a path needs (None: open), decided on its :func:`route_path`."""
    path = route_path(path)
    if path in OPEN_PATHS:
        return None
    if path == "/metrics":
        return "metrics"
    if path == "/v1/status" or path.startswith("/schema"):
        return "status"
    return "infer"


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass
class ApiKey:
    name: str
    digest: str
    rate: float  # requests per second; 0: unlimited
    scopes: frozenset[str]
    tokens: float = 0.0  # token bucket (burst: one second's worth, at least 1)
    refilled: float = field(default_factory=time.monotonic)

    def take(self, now: float) -> float | None:
        """None if a request may go now, else the seconds until one may."""
        if self.rate <= 0:
            return None
        burst = max(1.0, self.rate)
        self.tokens = min(burst, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate


def parse_keys(text: str, source: str) -> dict[str, ApiKey]:
    """``digest → ApiKey`` from the file's text; any malformed line refuses the whole file."""
    keys: dict[str, ApiKey] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 4:
            raise InputError(f"{source}:{n}: expected 'name sha256:<hex> rate scopes'")
        name, digest, rate_s, scopes_s = parts
        scopes = frozenset(s for s in scopes_s.split(",") if s)
        try:
            rate = float(rate_s)
        except ValueError:
            rate = -1.0
        if not _NAME.fullmatch(name) or not _DIGEST.fullmatch(digest):
            raise InputError(f"{source}:{n}: bad name or digest")
        if not math.isfinite(rate) or rate < 0 or not scopes or not scopes <= set(SCOPES):
            raise InputError(f"{source}:{n}: rate must be >= 0, scopes from {', '.join(SCOPES)}")
        if digest in keys:
            raise InputError(f"{source}:{n}: the same key is listed twice")
        keys[digest] = ApiKey(name, digest, rate, scopes, tokens=max(1.0, rate))
    return keys


class KeyRing:
    """The keys in force; :meth:`reload` swaps them atomically (buckets of kept keys kept)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.keys: dict[str, ApiKey] = {}
        self.error = ""
        self._lock = threading.Lock()
        if path is not None:
            self.keys = parse_keys(self._read(), str(path))

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def _read(self) -> str:
        assert self.path is not None
        try:
            return self.path.read_text()
        except OSError as exc:
            raise InputError(f"cannot read api_keys_file {self.path}: {exc.strerror}") from exc

    def reload(self) -> bool:
        """Re-read the file; on any error keep the keys in force and report it."""
        if self.path is None:
            return False
        try:
            fresh = parse_keys(self._read(), str(self.path))
        except InputError as exc:
            self.error = str(exc)
            log.error("api keys not reloaded, keeping %d in force: %s", len(self.keys), exc)
            return False
        with self._lock:
            for digest, key in fresh.items():
                old = self.keys.get(digest)
                if old is not None and old.rate == key.rate:
                    key.tokens, key.refilled = old.tokens, old.refilled
            self.keys, self.error = fresh, ""
        log.info("api keys reloaded: %d in force", len(fresh))
        return True

    def lookup(self, presented: str) -> ApiKey | None:
        digest = hash_key(presented)
        key = self.keys.get(digest)
        # the dict lookup is by hash, so the presented secret is never compared directly;
        # compare the digest in constant time anyway (cheap, and no doubt left)
        if key is not None and hmac.compare_digest(key.digest, digest):
            return key
        return None


def add_key(path: Path, name: str, rate: float, scopes: list[str]) -> str:
    """Create a key, append its hash to ``path`` (atomically, 0600); the key, shown once."""
    key = "sk-edge-" + secrets.token_urlsafe(32)
    existing = path.read_text() if path.exists() else ""
    line = f"{name} {hash_key(key)} {rate:g} {','.join(scopes)}\n"
    text = existing + ("" if not existing or existing.endswith("\n") else "\n") + line
    parse_keys(text, str(path))  # refuse before writing anything malformed
    atomic.write_bytes(path, text.encode(), mode=0o600)
    return key


def _presented(scope) -> str | None:
    for name, value in scope.get("headers") or []:
        if name == b"authorization":
            v = value.decode("latin-1")
            return v[7:].strip() if v[:7].lower() == "bearer " else None
        if name == b"x-api-key":
            return value.decode("latin-1").strip()
    return None


class RequireApiKey:
    """ASGI middleware: 401 without a known key, 403 outside its scopes, 429 past its rate."""

    def __init__(self, app, ring: KeyRing, metrics) -> None:
        self.app = app
        self.ring = ring
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self.ring.enabled:
            await self.app(scope, receive, send)
            return
        needed = scope_of(scope["path"])
        if needed is None:
            await self.app(scope, receive, send)
            return
        presented = _presented(scope)
        key = self.ring.lookup(presented) if presented else None
        if key is None:
            self.metrics.api_keys.labels("-", "unauthorized").inc()
            await _refuse(send, 401, "Unauthorized", "a valid API key is required", {})
            return
        if needed not in key.scopes:
            self.metrics.api_keys.labels(key.name, "forbidden").inc()
            await _refuse(send, 403, "Forbidden", f"key {key.name} lacks the {needed!r} scope", {})
            return
        wait = key.take(time.monotonic())
        if wait is not None:
            self.metrics.api_keys.labels(key.name, "rate-limited").inc()
            detail = f"key {key.name} is limited to {key.rate:g} requests/s"
            retry = str(max(1, math.ceil(wait)))
            await _refuse(send, 429, "RateLimited", detail, {"retry-after": retry})
            return
        self.metrics.api_keys.labels(key.name, "allowed").inc()
        scope.setdefault("state", {})["api_key"] = key.name
        await self.app(scope, receive, send)


async def _refuse(send, status: int, title: str, detail: str, extra: dict[str, str]) -> None:
    body = problem_bytes(status, title, detail)
    headers = [
        (b"content-type", MEDIA_TYPE_PROBLEM.encode()),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in extra.items()),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="shipyard-edge"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
