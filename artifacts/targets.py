"""Target taxonomy and the one pure compatibility function.

Default preference on CPUs: ``onnx-int8`` before ``openvino-int8``. Measured serving MiniLM on
2 vCPUs (bench/report): equal latency and throughput within noise, but the onnxruntime process
idles at ~230 MB RSS against ~390 MB, and OpenVINO prepares kernels per new input shape.
``[backends] prefer`` or ``select = "measure"`` change the order per node.

Given a node's :class:`NodeCapabilities` and the manifests of one model version, :func:`rank_bundles`
returns the bundles the node can run, best first, and for every other bundle the reason it was
excluded. Central's ``/v1/resolve`` and the edge selector both call it, so the answer is the same
wherever it is asked.

TensorRT rules, each from NVIDIA's documentation (TensorRT 11.4 Support Matrix, "Engine
Portability"; Developer Guide, "Engine Compatibility"; ``nvinfer1::HardwareCompatibilityLevel``):

* Platform: serialized engines are not portable across platforms, so an engine records the OS and
  CPU architecture it was built on (``requires.os``/``requires.arch``) and runs only there.
* Version: by default an engine runs only with the TensorRT release that built it (major.minor.
  patch[.build] must match). ``VERSION_COMPATIBLE`` engines (built with >= 8.6) also run on later
  runtimes of the same major version, and across majors only on the pairs in
  :data:`TRT_CROSS_MAJOR` (10 -> 11 and 8 -> 10); never on an older runtime.
* Hardware: ``AMPERE_PLUS`` engines run on any Ampere-or-newer *discrete* GPU (compute capability
  >= 8.0) — hardware compatibility is not supported on Jetson / DRIVE (:data:`INTEGRATED_GPU_CC`);
  ``SAME_COMPUTE_CAPABILITY`` engines on any GPU of the build GPU's compute capability; ``NONE``
  (the default) guarantees only the build GPU's model: same compute capability *and* same GPU name.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import msgspec
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from artifacts.manifest import Manifest, Requires
from artifacts.variants import MAX_KEY, SEP, bundle_key, family, policy_names, split_key


@dataclass(frozen=True)
class TargetSpec:
    id: str
    backend: str
    precision: str
    device: str  # "cpu" | "gpu"
    rank: int  # default preference: lower is preferred
    description: str
    buildable: bool = True  # the builder has a ladder for it


TARGETS: dict[str, TargetSpec] = {
    t.id: t
    for t in (
        TargetSpec("tensorrt-int8", "tensorrt", "int8", "gpu", 10, "TensorRT engine, INT8 Q/DQ"),
        TargetSpec("tensorrt-fp16", "tensorrt", "fp16", "gpu", 20, "TensorRT engine, FP16"),
        TargetSpec(
            "onnx-fp16", "onnxruntime", "fp16", "gpu", 30, "ONNX FP16, onnxruntime CUDA EP", False
        ),
        TargetSpec("onnx-int8", "onnxruntime", "int8", "cpu", 40, "ONNX INT8, onnxruntime CPU"),
        TargetSpec("openvino-int8", "openvino", "int8", "cpu", 50, "OpenVINO IR, NNCF static INT8"),
        TargetSpec("onnx-fp32", "onnxruntime", "fp32", "cpu", 90, "ONNX FP32: the last resort"),
        TargetSpec(
            "index-usearch", "usearch", "int8", "cpu", 95, "catalog index, usearch HNSW", False
        ),
    )
}
# The one list of CPU targets (the default build, the demo, the tests), in build order.
CPU_TARGETS = ("onnx-fp32", "onnx-int8", "openvino-int8")
GPU_TARGETS = ("onnx-fp16", "tensorrt-fp16", "tensorrt-int8")
BUILDABLE_TARGETS = tuple(t for t in (*CPU_TARGETS, *GPU_TARGETS) if TARGETS[t].buildable)
INDEX_TARGET = "index-usearch"
# what build workers make: model targets, and catalog indexes (POST /v1/indexes)
WORKER_TARGETS = (*BUILDABLE_TARGETS, INDEX_TARGET)
LAST_RESORT = "onnx-fp32"

# CPU feature flags that make INT8 GEMMs fast and saturation-free (Linux /proc/cpuinfo names).
INT8_DOT_PRODUCT_ISA = ["avx512_vnni", "avx_vnni", "amx_int8", "asimddp"]


def target_spec(target_id: str) -> TargetSpec:
    """The spec of a target id or of a bundle key's target (``onnx-int8+pruned-L4``)."""
    try:
        return TARGETS[target_id.partition("+")[0]]
    except KeyError:
        known = ", ".join(TARGETS)
        raise ValueError(f"unknown target {target_id!r}; known targets: {known}") from None


class GpuInfo(msgspec.Struct, kw_only=True):
    name: str
    compute_capability: str  # "9.0"
    memory_mb: int = 0
    index: int = 0
    uuid: str = ""


class NodeCapabilities(msgspec.Struct, kw_only=True):
    """What a node (edge or build worker) can run; filled by ``edge_runtime.probe``."""

    hostname: str = ""
    arch: str = ""  # "x86_64" | "aarch64"
    os: str = ""  # "linux" | "windows" | "darwin"
    cpu_model: str = ""
    cpu_isa: list[str] = []
    cpu_cores: int = 0
    memory_mb: int = 0
    gpus: list[GpuInfo] = []
    cuda_driver: str | None = None
    tensorrt: str | None = None
    onnxruntime: str | None = None
    onnxruntime_providers: list[str] = []
    openvino: str | None = None
    openvino_devices: list[str] = []
    probe_errors: dict[str, str] = {}


class SelectionPolicy(msgspec.Struct, kw_only=True):
    """Operator policy (edge.toml ``[backends]``) applied on top of the requirements."""

    allow: list[str] = []  # empty: every target the node can run
    deny: list[str] = []
    prefer: list[str] = []  # these first, in this order, when eligible
    require_gpu: bool = False  # never fall back to a CPU target


class Candidate(msgspec.Struct, kw_only=True):
    target: str  # the bundle key: the target id, or target+variant
    backend: str
    precision: str
    device: str
    note: str = ""
    variant: str = ""  # "" = the full model


class Exclusion(msgspec.Struct, kw_only=True):
    target: str
    reason: str


class Ranking(msgspec.Struct, kw_only=True):
    eligible: list[Candidate]
    excluded: list[Exclusion]

    @property
    def best(self) -> Candidate | None:
        return self.eligible[0] if self.eligible else None


def _cc(value: str) -> tuple[int, int]:
    """``"9.0"`` → (9, 0); anything malformed (a hostile manifest's "9.x") → (-1, -1), which no
    rule accepts, instead of an exception that would take the whole ranking down."""
    major, _, minor = str(value).partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return (-1, -1)


def _sm(value: str | None) -> str:
    if not value or _cc(value) == (-1, -1):
        return "an unknown GPU" if not value else f"an unreadable compute capability {value!r}"
    major, minor = _cc(value)
    return f"sm_{major}{minor}"


def _version(value: str) -> Version | None:
    try:
        return Version(value)
    except InvalidVersion:
        return None


def _spec_ok(spec: str, installed: str) -> bool:
    version = _version(installed)
    if version is None:
        return False
    try:
        return SpecifierSet(spec).contains(version, prereleases=True)
    except InvalidSpecifier:
        return False


# Version-compatible engines across major versions: only these (built major, runtime major)
# pairs are supported (TensorRT 11.4 Support Matrix, "Engine Portability").
TRT_CROSS_MAJOR = frozenset({(8, 10), (10, 11)})
# Jetson and DRIVE (integrated GPUs): TX1/Nano 5.3, TX2 6.2, Xavier 7.2, Orin 8.7, Thor 10.1
# (11.0 from CUDA 13). Hardware compatibility is not supported there (Developer Guide).
INTEGRATED_GPU_CC = frozenset({"5.3", "6.2", "7.2", "8.7", "10.1", "11.0"})


def _built(req: Requires) -> str:
    trt = f"TensorRT {req.tensorrt or '?'}"
    if req.hardware_compatibility == "ampere_plus":
        return f"built hardware-compatible (Ampere+) / {trt}"
    if req.hardware_compatibility == "same_compute_capability":
        return f"built for any {_sm(req.compute_capability)} GPU / {trt}"
    gpu = f" ({req.gpu_name})" if req.gpu_name else ""
    return f"built for {_sm(req.compute_capability)}{gpu} / {trt}"


def _trt_gpu_ok(req: Requires, gpu: GpuInfo) -> bool:
    """Can this one GPU run the engine, by the hardware-compatibility level it was built with."""
    if req.hardware_compatibility == "ampere_plus":
        return (
            _cc(gpu.compute_capability) >= (8, 0)
            and gpu.compute_capability not in INTEGRATED_GPU_CC
        )
    if req.compute_capability and gpu.compute_capability != req.compute_capability:
        return False
    if req.hardware_compatibility == "none" and req.gpu_name:
        return gpu.name.strip() == req.gpu_name.strip()
    return True


def _trt_gpu_reasons(req: Requires, caps: NodeCapabilities) -> list[str]:
    if any(_trt_gpu_ok(req, g) for g in caps.gpus):
        return []
    built = _built(req)
    node_desc = ", ".join(f"{_sm(c)} ({g})" for c, g in _gpu_names(caps))
    if req.hardware_compatibility == "ampere_plus":
        return [
            f"{built}; needs a discrete Ampere or newer GPU (sm_80+, not Jetson/DRIVE), "
            f"node has {node_desc}"
        ]
    if req.compute_capability and not any(
        g.compute_capability == req.compute_capability for g in caps.gpus
    ):
        return [
            f"{built}; node has {node_desc} — engines run only on the compute capability they "
            "were built for unless built hardware-compatible"
        ]
    return [
        f"{built}; node has {node_desc} — a plain engine is guaranteed only on the GPU model "
        "that built it (build it with --trt-compat same-cc to relax this)"
    ]


def _trt_version_compatible(built: Version, node: Version) -> bool:
    if built < Version("8.6") or node < built:
        return False
    return built.major == node.major or (built.major, node.major) in TRT_CROSS_MAJOR


def _trt_version_reasons(req: Requires, caps: NodeCapabilities) -> list[str]:
    built = _built(req)
    if caps.tensorrt is None:
        return [f"{built}; TensorRT is not installed on this node"]
    if not req.tensorrt:
        return []
    built_v, node_v = _version(req.tensorrt), _version(caps.tensorrt)
    if built_v is None or node_v is None:
        return [f"{built}; cannot compare TensorRT versions with node's {caps.tensorrt}"]
    if req.tensorrt_version_compatible:
        if built_v < Version("8.6"):
            return [f"{built}; version compatibility needs an engine built with >= 8.6"]
        if node_v < built_v:
            return [f"{built} (version-compatible); node's TensorRT {caps.tensorrt} is older"]
        if not _trt_version_compatible(built_v, node_v):
            return [
                f"{built} (version-compatible); TensorRT {built_v.major} engines are not "
                f"supported on a TensorRT {node_v.major} runtime"
            ]
        return []
    if node_v != built_v:  # 10.13 and 10.13.0 are the same release; 10.13.0.35 is not
        return [
            f"{built}; node has TensorRT {caps.tensorrt} — a plain engine runs only on the "
            "exact TensorRT version that built it (build it VERSION_COMPATIBLE to relax this)"
        ]
    return []


def _tensorrt_reasons(req: Requires, caps: NodeCapabilities) -> list[str]:
    if not caps.gpus:
        return [f"{_built(req)}; node has no NVIDIA GPU"]
    reasons = _trt_gpu_reasons(req, caps) + _trt_version_reasons(req, caps)
    if req.gpu_memory_mb and not any(g.memory_mb >= req.gpu_memory_mb for g in caps.gpus):
        reasons.append(f"needs a GPU with >= {req.gpu_memory_mb} MB memory")
    return reasons


def _gpu_names(caps: NodeCapabilities) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for g in caps.gpus:
        seen.setdefault(g.compute_capability, g.name)
    return sorted(seen.items())


def _host_reasons(req: Requires, caps: NodeCapabilities) -> list[str]:
    reasons: list[str] = []
    isa = set(caps.cpu_isa)
    if req.arch and caps.arch not in req.arch:
        reasons.append(f"needs CPU arch {'/'.join(req.arch)}, node is {caps.arch or 'unknown'}")
    if req.os and caps.os not in req.os:
        reasons.append(f"needs OS {'/'.join(req.os)}, node runs {caps.os or 'unknown'}")
    missing_all = [f for f in req.cpu_isa_all if f not in isa]
    if missing_all:
        reasons.append(f"needs CPU features {', '.join(missing_all)}")
    if req.cpu_isa_any and not isa.intersection(req.cpu_isa_any):
        have = ", ".join(sorted(isa.intersection({"avx2", "avx512f", "asimd"}))) or "none of them"
        reasons.append(
            f"needs one of {'/'.join(req.cpu_isa_any)} for fast, saturation-free INT8 "
            f"(node has {have})"
        )
    if req.memory_mb and caps.memory_mb and caps.memory_mb < req.memory_mb:
        reasons.append(f"needs {req.memory_mb} MB memory, node has {caps.memory_mb} MB")
    return reasons


def _onnxruntime_reasons(req: Requires, caps: NodeCapabilities) -> list[str]:
    reasons: list[str] = []
    if req.onnxruntime is not None:
        if caps.onnxruntime is None:
            reasons.append("onnxruntime is not installed (pip install 'shipyard[edge]')")
        elif req.onnxruntime and not _spec_ok(req.onnxruntime, caps.onnxruntime):
            reasons.append(f"needs onnxruntime {req.onnxruntime}, node has {caps.onnxruntime}")
    missing_eps = [p for p in req.onnxruntime_providers if p not in caps.onnxruntime_providers]
    if missing_eps:
        reasons.append(f"needs onnxruntime providers {', '.join(missing_eps)}")
    return reasons


def _openvino_reasons(req: Requires, caps: NodeCapabilities) -> list[str]:
    if req.openvino is None:
        return []
    if caps.openvino is None:
        return ["OpenVINO is not installed (pip install openvino)"]
    if req.openvino and not _spec_ok(req.openvino, caps.openvino):
        return [f"needs OpenVINO {req.openvino}, node has {caps.openvino}"]
    if req.openvino_devices and not set(req.openvino_devices) & set(caps.openvino_devices):
        return [f"needs an OpenVINO device of {'/'.join(req.openvino_devices)}"]
    return []


def is_bundle_key(key: str) -> bool:
    """A known target id, optionally with a well-formed variant (``onnx-int8+pruned-L4``)."""
    if not isinstance(key, str) or len(key) > MAX_KEY:
        return False
    try:
        target, _ = split_key(key)
    except ValueError:
        return False
    return target in TARGETS


def check_requirements(target_id: str, req: Requires, caps: NodeCapabilities) -> list[str]:
    """Every reason ``caps`` cannot run a bundle with these requirements (empty: it can)."""
    reasons = _host_reasons(req, caps) + _onnxruntime_reasons(req, caps)
    reasons += _openvino_reasons(req, caps)
    spec = TARGETS.get(target_id)
    if spec is not None and spec.backend == "tensorrt":
        reasons.extend(_tensorrt_reasons(req, caps))
    elif req.cuda and not caps.gpus:
        reasons.append("needs an NVIDIA GPU with CUDA; node has none")
    return reasons


def _variant_opt_in(
    variant: str, names: tuple[str, ...], policy: SelectionPolicy, only_variants: bool
) -> str | None:
    """Why a variant bundle is not eligible (None: it is). A variant answers differently from
    the full model by design, so it is taken only when the policy names it (in ``prefer`` or
    ``allow``: its key, the variant or its family) or when the version carries nothing else."""
    if not variant or only_variants:
        return None
    if set(names) & (set(policy.prefer) | set(policy.allow)):
        return None
    kind = family(variant)
    return (
        f"a {variant} variant (a smaller model held to task quality, not to the full model's "
        f'answers): taken only when the policy names it (backends.prefer = ["{kind}"]) or '
        "the version carries only variants"
    )


def _refusal(manifest: Manifest, policy: SelectionPolicy, only_variants: bool) -> str | None:
    """Why the bundle's kind, its policy or its build rules it out (None: it may run here)."""
    target_id, variant = manifest.target.id, manifest.target.variant
    spec = TARGETS.get(target_id)
    if spec is None:
        return "unknown target id"
    if (spec.backend == "usearch") != (manifest.model.task == "index"):
        return f"a {manifest.model.task} bundle cannot be a {target_id} target"
    if bool(variant) != (manifest.quality.basis == "task"):
        return (
            "its gate basis does not match it (a variant is gated on task quality, the full "
            "model on fidelity)"
        )
    names = {target_id, *policy_names(target_id, variant)}
    if names & set(policy.deny):
        return "denied by policy (backends.deny)"
    if policy.allow and not names & set(policy.allow):
        return "not in policy allow list (backends.allow)"
    why_not = _variant_opt_in(variant, policy_names(target_id, variant), policy, only_variants)
    if why_not:
        return why_not
    if policy.require_gpu and spec.device != "gpu":
        return "CPU target refused: require_gpu = true"
    if not manifest.quality.passed:
        return "its quality gate did not pass at build time"
    return None


def rank_bundles(
    caps: NodeCapabilities,
    manifests: Sequence[Manifest],
    policy: SelectionPolicy | None = None,
    *,
    version_keys: Collection[str] | None = None,
) -> Ranking:
    """Eligible bundles best-first, plus the reason every other bundle is excluded. Pure.

    Bundles are named by their bundle key (``onnx-int8``, ``onnx-int8+pruned-L4``); policy
    lists match a target id (every variant of that target for ``deny``), a bundle key, a
    variant or a variant family (see :mod:`artifacts.variants`). ``version_keys``: every
    bundle key the version carries, when ``manifests`` are only some of them (a variant is
    taken without the policy naming it only when the version carries nothing else; ``()``:
    not known, so a variant is taken only when the policy names it)."""
    policy = policy or SelectionPolicy()
    eligible: list[tuple[tuple[int, int, str], Candidate]] = []
    excluded: list[Exclusion] = []
    prefer = {t: i for i, t in enumerate(policy.prefer)}
    keys = (
        list(version_keys)
        if version_keys is not None
        else [SEP if m.target.variant else m.target.id for m in manifests]
    )
    only_variants = bool(keys) and all(SEP in k for k in keys)
    for manifest in manifests:
        target_id, variant = manifest.target.id, manifest.target.variant
        try:
            key = bundle_key(target_id, variant)
        except ValueError as exc:
            excluded.append(Exclusion(target=target_id, reason=str(exc)))
            continue
        why_not = _refusal(manifest, policy, only_variants)
        if why_not is None:
            reasons = check_requirements(target_id, manifest.target.requires, caps)
            why_not = f"{key}: " + "; ".join(reasons) if reasons else None
        if why_not is not None:
            excluded.append(Exclusion(target=key, reason=why_not))
            continue
        spec = TARGETS[target_id]
        preferred = [prefer[n] for n in policy_names(target_id, variant) if n in prefer]
        rank = (min(preferred) if preferred else len(prefer), spec.rank, variant)
        note = "preferred by policy" if preferred else spec.description
        if variant:
            note = f"{note} ({variant} variant)"
        eligible.append(
            (
                rank,
                Candidate(
                    target=key,
                    backend=spec.backend,
                    precision=spec.precision,
                    device=spec.device,
                    note=note,
                    variant=variant,
                ),
            )
        )
    eligible.sort(key=lambda kv: kv[0])
    return Ranking(eligible=[c for _, c in eligible], excluded=excluded)


# `--trt-compat` (builder, `artifact submit`, the build API): which portability an engine is built
# for. `version`: VERSION_COMPATIBLE; `hardware`: AMPERE_PLUS; `same-cc`: SAME_COMPUTE_CAPABILITY.
TRT_COMPAT = ("version", "hardware", "same-cc")


def parse_trt_compat(value: str | Sequence[str]) -> list[str]:
    """``"none"``/``""`` → []; ``"version,hardware"`` → both, sorted; ValueError on anything else
    (an unknown word, or two hardware levels at once)."""
    words = value.split(",") if isinstance(value, str) else list(value)
    chosen = sorted({w.strip() for w in words if w.strip() and w.strip() != "none"})
    unknown = [w for w in chosen if w not in TRT_COMPAT]
    if unknown:
        raise ValueError(
            f"unknown --trt-compat {', '.join(unknown)}; choose from none, {', '.join(TRT_COMPAT)}"
        )
    if {"hardware", "same-cc"} <= set(chosen):
        raise ValueError("--trt-compat hardware and same-cc are two hardware levels: pick one")
    return chosen
