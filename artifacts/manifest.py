"""Manifest schema version 1: the self-description of one bundle (one model version, one target).

Encoded as canonical JSON (sorted keys, no insignificant whitespace) so the bytes — and hence
the ed25519 signature over them — are stable across runs, machines and Python versions.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from artifacts.errors import ManifestError, SchemaVersionError

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "model.sig"  # OpenSSF Model Signing (artifacts.oms) over every file
LEGACY_SIGNATURE_FILE = "manifest.sig"  # before OMS: an ed25519 signature of manifest.json

Task = Literal["embedding", "rerank", "classify", "index"]
Backend = Literal["onnxruntime", "openvino", "tensorrt", "usearch"]
Precision = Literal["fp32", "fp16", "bf16", "int8", "mixed"]


class Base(msgspec.Struct, forbid_unknown_fields=False, omit_defaults=False, kw_only=True):
    """Common struct settings: keyword-only, unknown fields tolerated within schema 1."""


class ModelInfo(Base, kw_only=True):
    name: str
    version: int  # 0 = not yet assigned (stamped by `artifact push` or the build service)
    task: Task
    labels: list[str] = []
    source_digest: str = ""
    source_name: str = ""


class Requires(Base, kw_only=True):
    """Machine-checkable requirements; see :mod:`artifacts.targets` for the rules."""

    arch: list[str] = []  # allowed CPU architectures; empty = any
    os: list[str] = []  # allowed operating systems ("linux", "windows"); empty = any
    cpu_isa_all: list[str] = []  # every flag must be present
    cpu_isa_any: list[str] = []  # at least one must be present
    onnxruntime: str | None = None  # version specifier, e.g. ">=1.17"
    onnxruntime_providers: list[str] = []  # every provider must be available
    openvino: str | None = None
    openvino_devices: list[str] = []  # at least one must be present
    cuda: bool = False
    compute_capability: str | None = None  # GPU the engine was built on, "9.0"
    gpu_name: str | None = None  # GPU model the engine was built on ("NVIDIA H100 80GB HBM3")
    hardware_compatibility: Literal["none", "same_compute_capability", "ampere_plus"] = "none"
    tensorrt: str | None = None  # TensorRT version the engine was built with
    tensorrt_version_compatible: bool = False
    gpu_memory_mb: int = 0
    memory_mb: int = 0


class TargetInfo(Base, kw_only=True):
    id: str
    backend: Backend
    precision: Precision
    requires: Requires = msgspec.field(default_factory=Requires)
    device: Literal["cpu", "gpu"] = "cpu"
    runtime: dict[str, str] = {}  # settings the backend must apply (e.g. inference_precision)
    # "" = the full model; else a smaller model derived from it ("pruned-L4"), see
    # artifacts.variants: a node takes a variant only when its policy names it
    variant: str = ""


class TensorSpec(Base, kw_only=True):
    name: str
    dtype: str  # numpy dtype name: int64, float32, ...
    shape: list[int | str]  # symbolic dims as names: "batch", "sequence"


class IOSpec(Base, kw_only=True):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    max_batch: int = 64
    max_seq_len: int = 256
    pooling: Literal["mean", "cls", "max", "none"] = "none"
    normalize: bool = False
    output: str = ""  # name of the output the runtime reads
    dim: int = 0  # embedding dim or number of labels


class TokenizerSpec(Base, kw_only=True):
    file: str = "tokenizer.json"
    max_length: int = 256
    truncation: Literal["longest_first", "only_first", "only_second"] = "longest_first"
    pair: bool = False  # rerank: (query, document) pairs
    pad_token_id: int = 0
    pad_to_multiple_of: int = 0


Sha256 = Annotated[str, msgspec.Meta(pattern=r"^sha256:[0-9a-f]{64}\Z")]


class FileEntry(Base, kw_only=True):
    path: str
    sha256: Sha256  # a malformed digest is refused at decode, before it names a blob path
    size: Annotated[int, msgspec.Meta(ge=0)]


class Attempt(Base, kw_only=True):
    """One quantization configuration the builder tried for this target."""

    config: str
    passed: bool
    metrics: dict[str, float] = {}
    intervals: dict[str, list[float]] = {}
    reason: str = ""
    latency_ms: float | None = None
    throughput: float | None = None


class EvalSplit(Base, kw_only=True):
    """One eval split the gate ran: what it held and how the shipped config scored on it.

    ``role`` "deciding" splits must each pass; "advisory" ones (the generated splits when the
    user brought their own eval set) are reported only. ``slices`` maps a slice of the split
    (e.g. ``query:short``, ``product:long-description``) to its point metrics."""

    name: str
    role: Literal["deciding", "advisory"] = "deciding"
    source: str = ""
    digest: str = ""
    items: int = 0
    composition: dict[str, int] = {}
    metrics: dict[str, float] = {}
    intervals: dict[str, list[float]] = {}
    slices: dict[str, dict[str, float]] = {}
    passed: bool = False


class Quality(Base, kw_only=True):
    """The gate's verdict. ``metrics``: per metric the worst point estimate over the deciding
    splits; ``intervals``: its bootstrap interval ([low, high] at ``confidence``) with the
    worst pessimistic bound, which is what had to clear the threshold."""

    reference: str = "torch-fp32"
    # "fidelity": held to the FP32 model's answers; "task": a variant (a different, smaller
    # model) held to the task quality of its FP32 teacher (teacher-relative metrics)
    basis: Literal["fidelity", "task"] = "fidelity"
    metrics: dict[str, float] = {}
    thresholds: dict[str, float] = {}
    passed: bool = False
    eval_set_digest: str = ""
    eval_items: int = 0
    config: str = ""  # the configuration finally shipped
    attempts: list[Attempt] = []
    intervals: dict[str, list[float]] = {}
    confidence: float = 0.0  # 0: no intervals (bundles built before they were recorded)
    splits: list[EvalSplit] = []


class HostInfo(Base, kw_only=True):
    cpu_model: str = ""
    arch: str = ""
    threads: int = 0
    gpu: str | None = None


class Perf(Base, kw_only=True):
    host: HostInfo = msgspec.field(default_factory=HostInfo)
    latency_p50_ms: float | None = None  # batch 1, short queries
    latency_p99_ms: float | None = None
    throughput_items_s: float | None = None  # batch 32, product titles
    batch: int = 32
    notes: str = ""


class BuildInfo(Base, kw_only=True):
    toolchain: dict[str, str] = {}
    calibration_set_digest: str = ""
    options: dict[str, str] = {}
    builder_host: str = ""
    builder_gpu: str | None = None
    started_at: str = ""
    finished_at: str = ""
    peak_rss_mb: float | None = None


class Compression(Base, kw_only=True):
    """How a variant's model was derived from the source model (``target.variant``).

    ``layers_kept``: indices of the source's transformer layers the student kept, chosen by
    dropping, one at a time, the layer whose removal changed the calibration outputs least
    (``drop_costs``, in drop order). Distillation from the FP32 teacher on calibration texts:
    ``steps`` in ``seconds``, held-back loss ``loss_start`` (plain layer dropping) →
    ``loss_end``."""

    method: str = "layer-drop+distill"
    layers_total: int
    layers_kept: list[int]
    drop_order: list[int] = []
    drop_costs: list[float] = []
    steps: int = 0
    seconds: float = 0.0
    loss_start: float = 0.0
    loss_end: float = 0.0
    texts: int = 0  # calibration items distilled on
    student_digest: str = ""  # sha256 over the student's model directory


class GoldenSpec(Base, kw_only=True):
    file: str = "golden.npz"
    tolerance: float = 0.0
    metric: Literal["cosine", "max_abs"] = "cosine"
    items: int = 0


class IndexModel(Base, kw_only=True):
    """The model bundle a catalog index was embedded with: the version lock."""

    name: str
    version: int
    target: str
    manifest_digest: str = ""  # sha256 of that bundle's manifest.json
    source_digest: str = ""  # the model's source weights (the same for every target of a version)


class IndexSpec(Base, kw_only=True):
    """A catalog index bundle (``model.task == "index"``): what it holds and how it was built.

    ``base`` names the full index a delta applies to (its manifest digest and version); a
    delta is cumulative, so a node needs the base and the newest delta, never a chain."""

    model: IndexModel
    catalog_digest: str
    items: int
    dim: int
    metric: Literal["cos", "ip"] = "cos"
    dtype: Literal["f32", "f16", "i8"] = "i8"
    library: str = ""  # "usearch 2.26.6"
    connectivity: int = 0
    expansion_add: int = 0
    expansion_search: int = 0
    fields: dict[str, str] = {}  # filterable field -> "str" | "number" | "bool"
    recall_at_10: float | None = None  # vs exact FP32 search over the same vectors
    build_s: float | None = None  # HNSW construction + recall measurement
    embed_s: float | None = None  # embedding the catalog with the model bundle
    base_version: int = 0  # 0: a full index; else the full index this delta applies to
    base_digest: str = ""
    upserts: int = 0
    deletes: int = 0


class Manifest(Base, kw_only=True):
    schema_version: int = SCHEMA_VERSION
    model: ModelInfo
    target: TargetInfo
    io: IOSpec
    tokenizer: TokenizerSpec = msgspec.field(default_factory=TokenizerSpec)
    files: list[FileEntry] = []
    quality: Quality = msgspec.field(default_factory=Quality)
    perf: Perf = msgspec.field(default_factory=Perf)
    build: BuildInfo = msgspec.field(default_factory=BuildInfo)
    golden: GoldenSpec = msgspec.field(default_factory=GoldenSpec)
    signing_key_id: str | None = None
    index: IndexSpec | None = None  # catalog index bundles only
    compression: Compression | None = None  # variants (target.variant) only

    def bundle_key(self) -> str:
        """The bundle's registry slot / cache name: ``onnx-int8`` or ``onnx-int8+pruned-L4``."""
        from artifacts.variants import bundle_key

        try:
            return bundle_key(self.target.id, self.target.variant)
        except ValueError as exc:
            raise ManifestError(str(exc)) from exc

    def model_file(self) -> str:
        """The primary model file: ``model.onnx``, ``model.xml`` or ``model.plan``."""
        suffix = {
            "onnxruntime": ".onnx",
            "openvino": ".xml",
            "tensorrt": ".plan",
            "usearch": ".usearch",
        }[self.target.backend]
        for entry in self.files:
            if entry.path.endswith(suffix):
                return entry.path
        raise ManifestError(f"manifest lists no {suffix} file for backend {self.target.backend}")


_encoder = msgspec.json.Encoder(order="sorted")


def encode(manifest: Manifest) -> bytes:
    """Canonical bytes: sorted keys, compact separators, shortest float repr."""
    return _encoder.encode(manifest)


def decode(data: bytes) -> Manifest:
    """Decode and validate manifest bytes; refuse schema versions from the future."""
    try:
        head = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ManifestError(f"manifest.json is not valid JSON: {exc}") from exc
    if not isinstance(head, dict):
        raise ManifestError("manifest.json must hold a JSON object")
    version = head.get("schema_version")
    if not isinstance(version, int):
        raise ManifestError("manifest.json has no integer schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"manifest schema_version {version} is not supported by this Shipyard "
            f"(understands {SCHEMA_VERSION}); upgrade shipyard to read this bundle"
        )
    try:
        return msgspec.json.decode(data, type=Manifest)
    except msgspec.ValidationError as exc:
        raise ManifestError(
            f"manifest.json does not follow schema {SCHEMA_VERSION}: {exc}"
        ) from exc


def to_builtins(manifest: Manifest) -> dict:
    return msgspec.to_builtins(manifest)
