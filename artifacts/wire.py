"""Wire types of the central API (msgspec), shared by the service and the client."""

from __future__ import annotations

import msgspec

from artifacts.targets import Candidate, Exclusion, NodeCapabilities, SelectionPolicy


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    extra: dict = {}


class CreateVersion(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    source_digest: str = ""
    notes: str = ""


class VersionRef(msgspec.Struct, kw_only=True):
    model: str
    version: int


class PutBundle(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    manifest: str  # manifest.json bytes, base64
    signature: str  # manifest.sig content (base64 text)


class BundleInfo(msgspec.Struct, kw_only=True):
    target: str
    manifest_digest: str
    key_id: str
    quality_passed: bool
    size: int
    created_at: str
    manifest: dict  # decoded manifest (for display)


class VersionInfo(msgspec.Struct, kw_only=True):
    model: str
    version: int
    created_at: str
    created_by: str
    source_digest: str
    notes: str
    bundles: list[BundleInfo] = []
    channels: list[str] = []


class ModelInfo(msgspec.Struct, kw_only=True):
    name: str
    versions: int
    latest: int | None
    channels: dict[str, int | None] = {}


class Promote(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    version: int
    force: bool = False


class ChannelEventInfo(msgspec.Struct, kw_only=True):
    seq: int
    action: str
    version: int
    previous: int | None
    actor: str
    forced: bool
    at: str


class ChannelInfo(msgspec.Struct, kw_only=True):
    model: str
    channel: str
    version: int | None
    halted: bool = False
    history: list[ChannelEventInfo] = []


class ResolveRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model: str
    channel: str | None = None
    version: int | None = None
    capabilities: NodeCapabilities
    policy: SelectionPolicy = msgspec.field(default_factory=SelectionPolicy)


class ResolvedBundle(msgspec.Struct, kw_only=True):
    candidate: Candidate
    manifest_digest: str
    manifest: str  # base64 manifest.json bytes
    signature: str
    files: list[dict]  # [{path, sha256, size}]


class ResolveResponse(msgspec.Struct, kw_only=True):
    model: str
    channel: str | None
    version: int
    eligible: list[ResolvedBundle]
    excluded: list[Exclusion]


class AuditInfo(msgspec.Struct, kw_only=True):
    id: int
    at: str
    actor: str
    action: str
    subject: str
    digest: str
    outcome: str
    detail: str


class CreateToken(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    scopes: list[str]


class TokenCreated(msgspec.Struct, kw_only=True):
    name: str
    scopes: list[str]
    token: str
