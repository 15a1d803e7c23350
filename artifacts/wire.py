"""Wire types of the central API (msgspec), shared by the service and the client."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from artifacts.errors import Overloaded, ShipyardError
from artifacts.states import (
    AuditOutcome,
    BuildState,
    ChannelAction,
    JobState,
    ServeState,
)
from artifacts.targets import CPU_TARGETS, Candidate, Exclusion, NodeCapabilities, SelectionPolicy
from artifacts.variants import bundle_key, parse_prune


class Problem(msgspec.Struct, kw_only=True, omit_defaults=True):
    """RFC 9457 problem details: the one error body of every Shipyard HTTP service."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str = ""
    extra: dict = {}
    request_id: str = ""

    @classmethod
    def of(cls, exc: ShipyardError) -> Problem:
        return cls(title=exc.title, status=exc.status, detail=str(exc), extra=exc.problem_extra())

    def encode(self) -> bytes:
        return _encoder.encode(self)


_encoder = msgspec.json.Encoder()
MEDIA_TYPE_PROBLEM = "application/problem+json"


def problem_headers(exc: ShipyardError) -> dict[str, str] | None:
    """Headers an error's answer carries: ``Retry-After`` (whole seconds, at least 1) on 429."""
    if isinstance(exc, Overloaded):
        return {"Retry-After": str(max(1, round(exc.retry_after_s)))}
    return None


def problem_bytes(status: int, title: str, detail: str, **extra: Any) -> bytes:
    return Problem(title=title, status=status, detail=detail, extra=extra).encode()


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
    built_by: str | None = None  # the enrolled worker that built and signed it
    verified_by: str | None = None  # the different worker that re-checked it


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
    action: ChannelAction
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
    outcome: AuditOutcome
    detail: str


class CreateToken(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    scopes: list[str]
    expires_in_s: float | None = None
    catalogs: list[str] | None = None  # bound: only these catalogs' routes (None: any)


class TokenInfo(msgspec.Struct, kw_only=True):
    id: int
    name: str
    scopes: list[str]
    worker: str | None = None
    catalogs: list[str] | None = None
    created_at: str
    expires_at: str = ""
    revoked_at: str = ""
    state: str  # active | expired | revoked


class TokenCreated(msgspec.Struct, kw_only=True):
    name: str
    scopes: list[str]
    token: str
    catalogs: list[str] | None = None


# ---- builds -------------------------------------------------------------------------------


VersionNumber = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
MaybeVersion = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]  # 0: none


class IndexJob(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A catalog index built by the build service (task ``index``, target ``index-usearch``):
    the request's ``model`` names the index, ``source_blob`` is the catalog (or the changes of
    a delta) as JSONL. The embedding model bundle is named exactly: the version lock."""

    model: str  # the embedding model
    version: VersionNumber  # its registered version
    target: str = "onnx-int8"  # which of its bundles embeds the catalog
    queries_blob: str | None = None  # recall@10 is measured with these (one query per line)
    base_version: MaybeVersion = 0  # a delta: the full index version it applies to (0: full)
    previous_version: MaybeVersion = 0  # a delta: the newest delta it accumulates (0: none)
    # a full index from vectors embedded elsewhere (the catalog queue): float32 .npy, one row per
    # catalog line. The builder then skips embedding; the verifier still re-embeds every product.
    vectors_blob: str | None = None


class BuildRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    model: str
    task: str
    source_blob: str  # sha256 of the model directory tarball (uploaded as a blob first)
    targets: list[str] = msgspec.field(default_factory=lambda: list(CPU_TARGETS))
    calibration_blob: str | None = None
    eval_blob: str | None = None
    thresholds: dict[str, float] = {}
    max_batch: int = 64
    promote_to: str | None = None
    trt_compat: list[str] = []  # TensorRT targets: version | hardware | same-cc
    # promote a partial build too (the targets that passed), not only one where all passed
    allow_partial: bool = False
    # a job with no capable worker for this long ends no-capable-worker (None: the service's)
    worker_deadline_s: float | None = None
    # build into this existing, not yet promoted version (built from the same source)
    into_version: MaybeVersion | None = None
    index: IndexJob | None = None  # task "index": what embeds the catalog
    # build a pruned, distilled variant instead of the full model: "layers=K[,steps=N,budget=S]"
    # (canonical, as artifacts.variants.PruneSpec.as_text writes it); bundles TARGET+pruned-LK
    prune: str | None = None

    def variant(self) -> str:
        """The variant this build makes ("" = the full model); ValueError when malformed."""
        spec = parse_prune(self.prune)
        return spec.variant if spec else ""

    def bundle_key(self, target: str) -> str:
        """The registry slot the job building ``target`` fills (``onnx-int8+pruned-L4``)."""
        return bundle_key(target, self.variant())

    def blobs(self) -> set[str]:
        """The blobs this build reads (source or catalog, data, queries)."""
        out = {self.source_blob, self.calibration_blob, self.eval_blob}
        if self.index is not None:
            out.add(self.index.queries_blob)
            out.add(self.index.vectors_blob)
        return {d for d in out if d}


class IndexBuildRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/indexes``: embed a catalog (uploaded as a blob) with one registered model
    bundle and build its signed index, on workers, like a build."""

    name: str  # the index's registry name
    catalog_blob: str  # JSONL {id, text, fields?} per line
    model: str
    version: VersionNumber | None = None  # the model version; or
    channel: str | None = None  # the version this channel points at now
    target: str = "onnx-int8"
    queries_blob: str | None = None
    recall_threshold: float | None = None
    promote_to: str | None = None
    worker_deadline_s: float | None = None


class IndexItems(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``PUT /v1/indexes/{name}/items`` (``items``) and ``DELETE`` (``ids``): a cumulative
    delta over the index version ``version`` or ``channel`` points at (default: the newest),
    built and verified on workers like a build; promote it to ship it."""

    items: list[dict[str, Any]] = []  # {id, text, fields?}; a field left out keeps its value
    ids: list[str] = []
    version: VersionNumber | None = None
    channel: str | None = None
    promote_to: str | None = None
    worker_deadline_s: float | None = None


class JobInfo(msgspec.Struct, kw_only=True):
    id: int
    target: str
    state: JobState
    worker: str | None = None
    attempts: int = 0
    reason: str = ""
    cached: bool = False
    history: list[str] = []
    manifest: dict | None = None  # the built bundle's manifest (when passed)


class BuildInfo(msgspec.Struct, kw_only=True):
    id: int
    model: str
    task: str
    state: BuildState
    created_at: str
    finished_at: str = ""
    version: int | None = None
    promoted_to: str | None = None
    detail: str = ""
    jobs: list[JobInfo] = []


class BuildCreated(msgspec.Struct, kw_only=True):
    build_id: int
    jobs: list[JobInfo]


class LogLine(msgspec.Struct, kw_only=True):
    id: int
    target: str
    at: str
    line: str


class WorkerHello(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    capabilities: NodeCapabilities
    toolchain: dict[str, str] = {}
    targets: list[str] = []


class EnrollWorker(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    targets: list[str]
    capabilities: NodeCapabilities | None = None  # the host it must run on (probe --json)


class WorkerEnrolled(msgspec.Struct, kw_only=True):
    name: str
    token: str  # the worker's credential: shown once, bound to this name


class WorkerKey(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    public_key: str  # PEM (ECDSA P-256), generated on the worker's host


class WorkerInfo(msgspec.Struct, kw_only=True):
    name: str
    allowed_targets: list[str]
    targets: list[str] = []
    key_id: str | None = None
    enrolled_at: str = ""
    last_seen: str = ""
    disabled: bool = False
    disabled_reason: str = ""
    toolchain: dict[str, str] = {}


class DisableWorker(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: str = ""


class BundleToVerify(msgspec.Struct, kw_only=True):
    """What a verifying worker checks: the bundle as its builder signed it."""

    manifest: str  # base64 manifest.json
    signature: str  # model.sig (OMS)
    builder: str
    builder_key: str  # the builder's registered public key (PEM)


class Lease(msgspec.Struct, kw_only=True):
    job_id: int
    build_id: int
    lease_token: str
    lease_seconds: float
    target: str
    request: BuildRequest
    attempt: int
    phase: Literal["build", "verify"] = "build"
    version: int = 0  # the version the bundle is built into (stamped before signing)
    verify: BundleToVerify | None = None
    # an index job's input bundles ("model", and for a delta "base", "previous"), as signed
    inputs: dict[str, BundleToVerify] = {}


class LeaseRef(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    lease_token: str


class HeartbeatReply(msgspec.Struct, kw_only=True):
    cancelled: bool = False


class JobLogs(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    lease_token: str
    lines: list[str]


class JobDone(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    lease_token: str
    manifest: str = ""  # build passed: base64 manifest.json
    signature: str = ""  # build passed: model.sig (OMS, by the worker's key)
    attestation: str = ""  # verify: the verifier's DSSE envelope (JSON), passed or not
    reason: str = ""  # failed: why
    retry: bool = False  # failed: transient (crash, timeout), may be retried


# ---- fleet --------------------------------------------------------------------------------


class NodeModel(msgspec.Struct, kw_only=True):
    model: str
    channel: str
    state: ServeState
    version: int | None = None
    target: str | None = None
    fallbacks: int = 0
    p50_ms: float | None = None
    errors: int = 0
    reason: str = ""


MAX_NODE_MODELS = 256  # models in one node's heartbeat


class NodeReport(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    node: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]  # a hostname's limit
    arch: str = ""
    capabilities: NodeCapabilities | None = None
    models: Annotated[list[NodeModel], msgspec.Meta(max_length=MAX_NODE_MODELS)] = []


class NodeInfo(msgspec.Struct, kw_only=True):
    node: str
    last_seen: str
    age_s: float
    report: NodeReport
    # the token the node reports with (its owner), as "#id name"; shown to admins only
    reporter: str = ""


class FleetHandover(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/fleet/handover`` (admin): ``from_token``'s nodes (or just ``nodes``) are
    reported by ``to_token`` from now on — a rotated credential, or a node re-provisioned.
    Without ``from_token``: ``nodes`` that no token holds yet (unowned, or not reported at all)
    are assigned to ``to_token`` before they first report."""

    from_token: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)] | None = None
    to_token: Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]
    nodes: Annotated[list[str], msgspec.Meta(max_length=4096)] | None = None


class FleetHandedOver(msgspec.Struct, kw_only=True):
    moved: list[str]


class Halt(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: str = ""


class TrustKey(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/keys/trusted``: a publisher's public key (PEM) to accept pushes from."""

    public_key: str
    name: str


class TrustedKeyInfo(msgspec.Struct, kw_only=True):
    key_id: str
    name: str
    source: str  # "file" (home/trusted_keys, read at start) | "api" (database, every replica)
    added_by: str
    added_at: str
    removed_at: str | None = None


# ---- the catalog queue (central/catalogs, artifacts.embed_queue) -----------------------------


class CatalogBinding(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``PUT /v1/catalogs/{name}``: which embedding model the catalog is embedded with, which
    bundle embeds it, the channel edges serve, and the index it ships as. Promoting the model
    to ``stage_channel`` re-embeds the catalog; when that completes, the index is built from
    the vectors and the index and the model are promoted to ``channel`` together."""

    model: str
    index: str  # the index's registry name
    target: str = "onnx-int8"
    channel: str = "stable"
    stage_channel: str = "candidate"
    chunk: Annotated[int, msgspec.Meta(ge=1, le=256)] = 64  # products per embed job (at most)


class CatalogItemsRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/catalogs/{name}/items``: product upserts ({id, text, fields?}) and deletes
    (ids), published to ``catalog.updates.<name>``."""

    items: list[dict[str, Any]] = []
    deletes: list[str] = []
    # the broker drops a repeat of the same change_id (a retried request) for 10 minutes;
    # without one every request is published (applying it twice changes nothing)
    change_id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None


class Published(msgspec.Struct, kw_only=True):
    stored: int
    duplicates: int


class RunRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/catalogs/{name}/runs``: re-embed for a model version (default: the version
    the serving channel points at); ``promote``: ship index + model when it completes."""

    version: VersionNumber | None = None
    promote: bool = True
    # forget the run's stored vectors first (after a verifier refused one: a wrong vector is
    # never overwritten otherwise, the first write of a key wins)
    discard_vectors: bool = False


class VectorItem(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, array_like=True):
    id: str
    digest: str  # sha256 of the text the vector embeds
    vector: str  # base64 of little-endian float32


class VectorBatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``PUT /v1/catalogs/{name}/vectors``: an embed worker's results for one job."""

    run: VersionNumber  # the run's id (same bounds)
    model: str
    version: VersionNumber
    target: str
    items: list[VectorItem]


class VectorsStored(msgspec.Struct, kw_only=True):
    stored: int  # new rows
    counted: int  # of them, vectors of a product's current text (progress)
    ignored: int  # already stored, or of a text the product no longer has


class RunInfo(msgspec.Struct, kw_only=True):
    id: int
    catalog: str
    model: str
    version: int
    target: str
    state: str  # embedding | indexing | done | failed
    done: int
    total: int
    promote: bool
    started_at: str
    finished_at: str = ""
    rate_per_s: float = 0.0
    eta_s: float | None = None
    build_id: int | None = None
    index_version: int | None = None
    reason: str = ""


class CatalogInfo(msgspec.Struct, kw_only=True):
    name: str
    items: int  # live products
    binding: CatalogBinding | None = None
    runs: list[RunInfo] = []
    dead_letters: int | None = None  # None: the broker could not be asked
    queue: str = ""  # the broker's state as central sees it
