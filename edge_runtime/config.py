"""edge.toml → one typed :class:`EdgeConfig`; every setting can also come from the environment.

Environment overrides use ``SHIPYARD_EDGE_<SECTION>_<KEY>`` (e.g. ``SHIPYARD_EDGE_SERVER_PORT=9000``,
``SHIPYARD_EDGE_REGISTRY_TOKEN=…``, ``SHIPYARD_EDGE_BACKENDS_DENY=openvino-int8,onnx-int8``); models
come from ``SHIPYARD_EDGE_MODELS=product-embedder:stable,query-classifier:canary``, catalog indexes
from ``SHIPYARD_EDGE_INDEXES=product-catalog@product-embedder:stable``.
"""

from __future__ import annotations

import math
import os
import tomllib
from pathlib import Path
from typing import Literal

import msgspec

from artifacts.embed_queue import check_catalog_name
from artifacts.errors import InputError
from artifacts.names import check_name
from artifacts.targets import SelectionPolicy
from edge_runtime.backends.base import BackendSettings


class RegistrySection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str = "http://127.0.0.1:8700"  # several central replicas: "http://a:8700,http://b:8700"
    # an OCI registry near this node holding central's blobs (bytes only; digests still checked
    # against central's signed metadata); down or wrong: central serves them
    blob_mirror: str | None = None
    blob_mirror_repository: str = "shipyard/blobs"
    token_file: str | None = None
    token: str | None = None
    trusted_keys: list[str] = []
    tuf_root: str | None = None  # central's TUF root.json: follow signed channel metadata
    poll_interval_s: float = 30.0
    timeout_s: float = 30.0
    round_timeout_s: float = 300.0  # a sync round still running after this is reported (and
    # picked up by a later round when it ends): a registry stalling before its headers is seen


class ModelSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: str
    channel: str = "stable"


class IndexSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A catalog index served by ``/v1/search``, locked to the versions of ``model``."""

    name: str
    model: str  # a [[models]] name: the embedding model this index was built with
    channel: str = "stable"
    hold_swap_s: float = 600.0  # a model update waits this long for its index; then swaps alone


class CacheSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    dir: str = "~/.shipyard/edge"
    keep_versions: int = 2


class BackendsSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    allow: list[str] = []
    deny: list[str] = []
    prefer: list[str] = []
    require_gpu: bool = False
    select: Literal["first", "measure"] = "first"
    threads: int = 0  # 0: every core
    measure_s: float = 1.0
    # onnxruntime's per-shape memory planner; it doubles a batch's activation memory when batch
    # shapes keep changing (serving), so it is on only where shapes repeat
    memory_pattern: bool = False

    def policy(self) -> SelectionPolicy:
        return SelectionPolicy(
            allow=self.allow, deny=self.deny, prefer=self.prefer, require_gpu=self.require_gpu
        )

    def settings(self) -> BackendSettings:
        return BackendSettings(threads=self.threads, memory_pattern=self.memory_pattern)


class ServerSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 4 << 20
    request_timeout_ms: int = 10_000  # default per-request deadline
    max_connections: int = 2048  # concurrent connections/tasks before uvicorn answers 503
    node_name: str = ""
    api_keys_file: str | None = None  # hashed API keys (see edge_runtime.http.api_keys); none: open
    drain_s: float = 10.0  # SIGTERM: in-flight requests get this long to finish
    # a request's headers must arrive within this long of its first byte, and its body at
    # least MIN_BODY_BYTES_PER_S in every such window, else the connection is closed (slow
    # clients holding connections: artifacts.slow_clients); 0: never
    read_timeout_s: float = 10.0
    # a small response's header block and body leave in one write (one send, one TCP segment)
    # instead of uvicorn's two (artifacts.one_write); false only to measure the difference
    one_write_per_response: bool = True


# a query run on the event loop blocks it: keep that to a short one (a few ms)
MAX_INLINE_TOKENS = 128


class BatchingSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    max_batch_size: int = 64
    max_batch_tokens: int = 8192
    max_wait_ms: float = 2.0
    # a batch stops growing when padding would pass this share of its tokens (past a 64-token
    # floor): one long description padded into a batch of titles costs more than a second batch
    # (measured on the product mix with 64 waiting: 0.1 -> 166 items/s, 0.3 -> 104)
    max_padding: float = 0.1
    max_queued_tokens: int = 65536
    latency_target_ms: float = 50.0
    max_inputs_per_request: int = 1024
    adaptive: bool = True
    release_after_idle_ms: float = 1000.0  # quiet this long after a burst: give memory back
    # a lone query of at most this many tokens runs on the event loop, not the inference
    # thread, while requests do not overlap (c=1: saves the thread hand-off); 0: never
    inline_max_tokens: int = 64
    # the bulk lane (embed worker): runs only when no interactive request waits; while
    # interactive traffic is present its batches last about bulk_batch_ms and take at most
    # bulk_share of the inference thread
    bulk_max_batch_tokens: int = 1024
    bulk_max_queued_tokens: int = 16384
    bulk_batch_ms: float = 10.0
    bulk_share: float = 0.25


class LimitsSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Work one request may cause, decided before tokenising (413 past them; 429 when the
    node is already tokenising too much)."""

    max_chars_per_input: int = 0  # 0: 32 characters per token of the model's max_length
    max_chars_per_request: int = 2 << 20  # all inputs together (a rerank query counts once)
    max_tokenising_chars: int = 8 << 20  # per model, being tokenised at once


class ResultCacheSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    max_bytes: int = 64 << 20
    ttl_s: float = 600.0


class TracingSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """OpenTelemetry traces over OTLP/HTTP (off unless ``otlp_endpoint`` is set; needs the
    ``otel`` extra), e.g. ``http://otel-collector:4318/v1/traces``."""

    otlp_endpoint: str | None = None
    service_name: str = "shipyard-edge"
    sample_ratio: float = 1.0


class EmbedWorkerSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The catalog queue's embed worker (``edge-runtime embed-worker``, or ``enabled`` on a
    serving node): pulls ``embed.jobs.<catalog>`` and embeds through the node's batcher at low
    priority. The registry token needs the ``embed`` scope (vectors go back to central)."""

    enabled: bool = False
    nats_url: str = "nats://127.0.0.1:4222"  # comma list for a cluster
    catalogs: list[str] = []
    max_ack_pending: int = 16  # jobs in flight per catalog: the adaptive window's ceiling
    ack_wait_s: float = 60.0  # a job not acked (nor kept alive) this long goes to another worker
    max_attempts: int = 5  # deliveries of a failing job before it is dead-lettered
    backoff_s: float = 2.0  # a failed job comes back after backoff_s * 2^(attempt-1) (max 60 s)
    interactive_p99_ms: float = (
        0.0  # the window halves past this queueing p99 (0: latency_target_ms)
    )


class EdgeConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    registry: RegistrySection = msgspec.field(default_factory=RegistrySection)
    models: list[ModelSection] = []
    indexes: list[IndexSection] = []
    cache: CacheSection = msgspec.field(default_factory=CacheSection)
    backends: BackendsSection = msgspec.field(default_factory=BackendsSection)
    server: ServerSection = msgspec.field(default_factory=ServerSection)
    batching: BatchingSection = msgspec.field(default_factory=BatchingSection)
    result_cache: ResultCacheSection = msgspec.field(default_factory=ResultCacheSection)
    limits: LimitsSection = msgspec.field(default_factory=LimitsSection)
    tracing: TracingSection = msgspec.field(default_factory=TracingSection)
    embed_worker: EmbedWorkerSection = msgspec.field(default_factory=EmbedWorkerSection)

    @property
    def cache_dir(self) -> Path:
        return Path(os.path.expanduser(self.cache.dir))

    def token(self) -> str | None:
        if self.registry.token:
            return self.registry.token
        if self.registry.token_file:
            path = Path(os.path.expanduser(self.registry.token_file))
            try:
                return path.read_text().strip()
            except OSError as exc:
                raise InputError(f"cannot read registry token_file {path}: {exc.strerror}") from exc
        return None

    def validate(self) -> EdgeConfig:
        if not self.models and not self.embed_worker.enabled:
            raise InputError("no [[models]] configured: add a name and channel to serve")
        _check_embed_worker(self.embed_worker)
        seen = set()
        for m in self.models:
            check_name(m.name, "model name")
            check_name(m.channel, "channel name")
            if m.name in seen:
                raise InputError(f"model {m.name!r} is listed twice")
            seen.add(m.name)
        for ix in self.indexes:
            check_name(ix.name, "index name")
            check_name(ix.channel, "channel name")
            if ix.name in seen:
                raise InputError(f"{ix.name!r} is listed twice (models and indexes share names)")
            if ix.model not in {m.name for m in self.models}:
                raise InputError(
                    f"index {ix.name!r} is for model {ix.model!r}, which is not in [[models]]"
                )
            if not math.isfinite(ix.hold_swap_s) or ix.hold_swap_s < 0:
                raise InputError(f"index {ix.name!r}: hold_swap_s must be a finite number >= 0")
            seen.add(ix.name)
        b = self.batching
        if (
            not (0 <= b.max_padding < 1)
            or not (0 < b.bulk_share <= 1)
            or not b.bulk_batch_ms > 0
            or b.bulk_max_batch_tokens < 1
            or not (0 <= b.inline_max_tokens <= MAX_INLINE_TOKENS)
            or not (math.isfinite(b.release_after_idle_ms) and b.release_after_idle_ms >= 0)
        ):
            raise InputError(
                "batching: need 0 <= max_padding < 1, 0 < bulk_share <= 1, bulk_batch_ms > 0, "
                f"bulk_max_batch_tokens >= 1, 0 <= inline_max_tokens <= {MAX_INLINE_TOKENS}, "
                "release_after_idle_ms a finite number >= 0"
            )
        if (
            b.max_batch_size < 1
            or b.max_batch_tokens < 1
            or b.max_queued_tokens < b.max_batch_tokens
        ):
            raise InputError(
                "batching: need max_batch_size >= 1 and max_queued_tokens >= max_batch_tokens >= 1"
            )
        lim = self.limits
        if (
            lim.max_chars_per_input < 0
            or lim.max_chars_per_request < 1
            or (lim.max_tokenising_chars < lim.max_chars_per_request)
        ):
            raise InputError(
                "limits: need max_chars_per_input >= 0 (0: derived from the model) and "
                "max_tokenising_chars >= max_chars_per_request >= 1"
            )
        if self.cache.keep_versions < 1:
            raise InputError("need cache.keep_versions >= 1")
        _check_server(self.server)
        return self


def _check_server(server: ServerSection) -> None:
    if server.max_body_bytes < 1:
        raise InputError("need server.max_body_bytes >= 1")
    if not (math.isfinite(server.read_timeout_s) and server.read_timeout_s >= 0):
        raise InputError("server.read_timeout_s must be a finite number >= 0 (0: never)")


def _check_embed_worker(ew: EmbedWorkerSection) -> None:
    if not ew.enabled:
        return
    if not ew.catalogs:
        raise InputError("[embed_worker] catalogs is empty: name the catalogs to embed")
    for c in ew.catalogs:
        check_catalog_name(c)
    if ew.max_ack_pending < 1 or ew.max_attempts < 1 or not ew.ack_wait_s > 1:
        raise InputError(
            "[embed_worker]: need max_ack_pending >= 1, max_attempts >= 1, ack_wait_s > 1"
        )


def _section_types() -> dict[str, type]:
    """``[section]`` name → its struct type, read from the schema (``models`` is a list)."""
    return {
        f.name: f.type
        for f in msgspec.structs.fields(EdgeConfig)
        if isinstance(f.type, type) and issubclass(f.type, msgspec.Struct)
    }


def _is_list(section: type, field: str) -> bool:
    for f in msgspec.structs.fields(section):  # type: ignore[arg-type]
        if f.name == field:
            return getattr(f.type, "__origin__", None) is list
    raise KeyError(field)


def apply_env(raw: dict, environ: dict[str, str]) -> dict:
    """Overlay ``SHIPYARD_EDGE_<SECTION>_<FIELD>`` values. They stay strings (lists split on
    commas); :func:`load_config` converts them by the schema, so a numeric token stays a
    string and ``port=9000`` becomes an int."""
    sections = _section_types()
    for key, value in environ.items():
        if not key.startswith("SHIPYARD_EDGE_"):
            continue
        rest = key.removeprefix("SHIPYARD_EDGE_").lower()
        if rest == "models":
            raw["models"] = [
                {
                    "name": item.split(":")[0],
                    "channel": item.split(":")[1] if ":" in item else "stable",
                }
                for item in value.split(",")
                if item.strip()
            ]
            continue
        if rest == "indexes":
            raw["indexes"] = [
                _index_from_env(item.strip()) for item in value.split(",") if item.strip()
            ]
            continue
        section = next(
            (s for s in sorted(sections, key=len, reverse=True) if rest.startswith(s + "_")), None
        )
        field = rest.removeprefix(f"{section}_")
        try:
            is_list = section is not None and _is_list(sections[section], field)
        except KeyError:
            section = None
        if section is None:
            raise InputError(f"unknown setting {key}")
        raw.setdefault(section, {})[field] = (
            [v.strip() for v in value.split(",") if v.strip()] if is_list else value
        )
    return raw


def _index_from_env(item: str) -> dict:
    """``NAME@MODEL[:CHANNEL]`` (``SHIPYARD_EDGE_INDEXES``)."""
    name, sep, rest = item.partition("@")
    if not sep or not name or not rest:
        raise InputError(f"SHIPYARD_EDGE_INDEXES item {item!r}: use NAME@MODEL[:CHANNEL]")
    model, _, channel = rest.partition(":")
    return {"name": name, "model": model, "channel": channel or "stable"}


def load_config(path: Path | None, environ: dict[str, str] | None = None) -> EdgeConfig:
    raw: dict = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise InputError(f"cannot read config {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{path} is not valid TOML: {exc}") from exc
    raw = apply_env(raw, dict(os.environ if environ is None else environ))
    try:
        return msgspec.convert(raw, EdgeConfig, strict=False).validate()
    except msgspec.ValidationError as exc:
        raise InputError(f"invalid edge config: {exc}") from exc
