"""``build(config)``: model directory → signed, gated, benchmarked bundles, one per target.

The same function backs ``artifact build`` and the build service's workers. It validates
everything it can before the expensive work starts, builds each target independently (one
failing target does not stop the others), and writes only bundles that passed their gate.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import logging
import os
import resource
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from artifacts.bundle import write_bundle
from artifacts.digests import sha256_bytes, sha256_file
from artifacts.errors import BundleExistsError, InputError
from artifacts.golden import golden_bytes
from artifacts.manifest import (
    BuildInfo,
    Compression,
    GoldenSpec,
    IOSpec,
    Manifest,
    ModelInfo,
    Perf,
    Quality,
    TargetInfo,
    TensorSpec,
    TokenizerSpec,
)
from artifacts.names import check_name
from artifacts.provenance import (
    PROVENANCE_FILE,
    BuildParameters,
    provenance_statement,
    sign_statement,
)
from artifacts.quality import TASKS, thresholds_for
from artifacts.signing import SigningKey, load_signing_key
from artifacts.targets import CPU_TARGETS, TARGETS, target_spec
from artifacts.textproc import Item, TextEncoder, compare, run_items
from artifacts.variants import PruneSpec, bundle_key, parse_prune
from builder.bench import Workload, host_info
from builder.data.datasets import calibration_items, digest_payload, eval_splits
from builder.errors import BuildError
from builder.export import export_master, validate_against_torch
from builder.gate import Evaluator, rounded_intervals, rounded_metrics, split_records
from builder.golden import golden_items, tolerance
from builder.reference import ReferenceCache, TorchReference, reference_outputs
from builder.source import ModelSource, inspect_model_dir
from builder.targets import onnx_fp32, onnx_int8, openvino_int8, tensorrt
from builder.targets.base import BuildContext, LogReporter, Reporter, TargetOutcome, run_ladder

log = logging.getLogger("shipyard.builder")

LADDERS = {
    "onnx-fp32": onnx_fp32.candidates,
    "onnx-int8": onnx_int8.candidates,
    "openvino-int8": openvino_int8.candidates,
    "tensorrt-fp16": tensorrt.candidates_fp16,
    "tensorrt-int8": tensorrt.candidates_int8,
}
PREFLIGHT = {"tensorrt-fp16": tensorrt.preflight, "tensorrt-int8": tensorrt.preflight}
TOOLCHAIN = (
    "torch",
    "transformers",
    "optimum",
    "optimum-onnx",
    "onnx",
    "onnxruntime",
    "openvino",
    "nncf",
    "tokenizers",
    "shipyard",
)


class BuildConfig(msgspec.Struct, kw_only=True):
    """Everything one build needs (one typed object instead of many arguments)."""

    model_dir: str
    task: str
    model_name: str
    out_dir: str
    targets: list[str] = msgspec.field(default_factory=lambda: list(CPU_TARGETS))
    calibration_file: str | None = None
    eval_file: str | None = None
    key_file: str | None = None
    version: int = 0  # 0: assigned at push
    overwrite: bool = False
    threads: int = 0  # 0: all cores
    thresholds: dict[str, float] = {}
    max_batch: int = 64
    eval_limit: int = 1200
    calibration_limit: int = 300
    trt_compat: list[str] = []  # TensorRT engines: version | hardware | same-cc
    # also gate openvino-int8 in BF16 where this host runs it natively (bf16_gated); off for a
    # fleet whose verifying workers lack native BF16 (they cannot check the claim)
    bf16: bool = True
    reference_cache_dir: str | None = None  # reuse FP32 reference outputs (build workers)
    # Build service: the enrolled worker's name and the job's parameters; each bundle then
    # carries provenance.json (SLSA v1, signed with ``key_file``) — see artifacts.provenance.
    provenance: ProvenanceSpec | None = None
    # "layers=K[,steps=N][,budget=S]": build a K-layer student distilled from the model and
    # ship its bundles as the pruned-LK variant, gated on task quality against the teacher
    prune: str | None = None


class ProvenanceSpec(msgspec.Struct, kw_only=True):
    builder: str
    params: dict  # artifacts.provenance.BuildParameters.as_dict()


@dataclass
class TargetReport:
    target: str
    passed: bool
    reason: str = ""
    path: str | None = None
    manifest: Manifest | None = None
    outcome: TargetOutcome | None = None
    size_bytes: int = 0


@dataclass
class BuildReport:
    targets: list[TargetReport] = field(default_factory=list)
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    source_digest: str = ""

    @property
    def ok(self) -> bool:
        return all(t.passed for t in self.targets)


def _check_config(cfg: BuildConfig) -> tuple[list[str], SigningKey | None]:
    if cfg.task not in TASKS:
        raise InputError(f"unknown task {cfg.task!r}; choose one of {', '.join(TASKS)}")
    check_name(cfg.model_name, "model name")
    if not cfg.targets:
        raise InputError("no targets requested")
    for t in cfg.targets:
        if t not in TARGETS or t not in LADDERS:
            raise InputError(f"unknown target {t!r}; known: {', '.join(LADDERS)}")
    targets = list(dict.fromkeys(cfg.targets))
    out = Path(cfg.out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise InputError(f"output directory {out} is not writable: {exc.strerror or exc}") from exc
    prune = parse_prune(cfg.prune)  # a malformed --prune fails before any work
    variant = prune.variant if prune else ""
    if not cfg.overwrite:
        existing = [
            bundle_key(t, variant) for t in targets if (out / bundle_key(t, variant)).exists()
        ]
        if existing:
            raise BundleExistsError(
                f"{out} already holds bundles for {', '.join(existing)}; pass --overwrite to replace them"
            )
    key = load_signing_key(Path(cfg.key_file)) if cfg.key_file else None
    thresholds_for(cfg.task, cfg.thresholds, basis=_basis(cfg))  # unknown names fail now
    return targets, key


def _basis(cfg: BuildConfig) -> str:
    """Variants are held to the teacher's task quality; the full model to its answers."""
    return "task" if cfg.prune else "fidelity"


def _toolchain() -> dict[str, str]:
    versions = {}
    for name in TOOLCHAIN:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def _tokenizer_file(model_dir: Path, dest: Path) -> Path:
    """The bundle's tokenizer.json: the model's own, or converted from its slow tokenizer."""
    if (model_dir / "tokenizer.json").is_file():
        shutil.copyfile(model_dir / "tokenizer.json", dest)
        return dest
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), use_fast=True)
    tok.backend_tokenizer.save(str(dest))
    return dest


def _pad_id(tokenizer_json: Path) -> int:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    for token in ("[PAD]", "<pad>", "<PAD>"):
        tid = tok.token_to_id(token)
        if tid is not None:
            return int(tid)
    return 0


def _peak_rss_mb() -> float:
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return self_kb / 1024.0


@dataclass
class Shared:
    """What every target's bundle of one build shares (tokenizer, golden set, gate, signer)."""

    tok_path: Path
    gold_items: list
    gold_ref: np.ndarray
    thresholds: dict[str, float]
    labels: list[str]
    key: SigningKey | None
    started_at: str
    source_digest: str
    eval_payload: bytes
    source_name: str = ""  # the teacher's, for a variant
    variant: str = ""
    compression: Compression | None = None


def build(config: BuildConfig, reporter: Reporter | None = None) -> BuildReport:
    reporter = reporter or LogReporter()
    started = time.monotonic()
    targets, key = _check_config(config)
    source = inspect_model_dir(Path(config.model_dir))
    prune = parse_prune(config.prune)
    if prune is not None and source.num_layers and not 1 <= prune.layers < source.num_layers:
        raise InputError(
            f"--prune layers={prune.layers}: {source.name} has {source.num_layers} layers; "
            f"keep 1..{source.num_layers - 1}"
        )
    report = BuildReport(source_digest=source.digest)
    with tempfile.TemporaryDirectory(prefix="shipyard-build-") as tmp:
        ctx, shared = _prepare(config, source, key, Path(tmp), reporter)
        for target in targets:
            report.targets.append(_build_target(config, ctx, shared, target))
    report.seconds = time.monotonic() - started
    report.peak_rss_mb = _peak_rss_mb()
    return report


def _prepare(
    config: BuildConfig,
    source: ModelSource,
    key: SigningKey | None,
    work: Path,
    reporter: Reporter,
) -> tuple[BuildContext, Shared]:
    """FP32 reference, ONNX master, evaluator and benchmark workload: shared by every target."""
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    threads = config.threads or os.cpu_count() or 1
    thresholds = thresholds_for(config.task, config.thresholds, basis=_basis(config))
    cal_path = Path(config.calibration_file) if config.calibration_file else None
    eval_path = Path(config.eval_file) if config.eval_file else None
    calibration = calibration_items(config.task, cal_path, limit=config.calibration_limit)
    splits = eval_splits(config.task, eval_path, limit=config.eval_limit)
    evalset = splits[0]
    reporter.begin("prepare", 4)
    tok_path = _tokenizer_file(source.path, work / "tokenizer.json")
    pad_id = _pad_id(tok_path)
    tok_spec = TokenizerSpec(
        max_length=source.max_length, pair=config.task == "rerank", pad_token_id=pad_id
    )
    encoder = TextEncoder(tok_path, tok_spec)

    reporter.step("prepare", "FP32 reference (torch)")
    reference = TorchReference(source, config.task, threads=threads)
    names = ["input_ids", "attention_mask", "token_type_ids"]
    ref_outs = reference_outputs(
        ReferenceCache(Path(config.reference_cache_dir) if config.reference_cache_dir else None),
        source,
        encoder,
        tok_path,
        splits,
        reference,
    )
    items = evalset.items(config.task)
    gold_items = golden_items(config.task, [it for s in splits for it in s.items(config.task)])
    model_source, compression = source, None
    prune = parse_prune(config.prune)
    if prune is not None:  # the student replaces the model from here on; the teacher stays truth
        reporter.step(
            "prepare", f"{prune.variant}: choose layers + distil (≤ {prune.budget_s:g} s)"
        )
        model_source, compression = _student(config, source, prune, (tok_path, tok_spec), work)
        del reference
        reference = TorchReference(model_source, config.task, threads=threads)
    # golden: the shipped model's own FP32 answers (the student's, for a variant)
    gold_ref = run_items(encoder, gold_items, reference, names, pad_id=pad_id)

    reporter.step("prepare", "ONNX export (optimum) + validation")
    master = export_master(model_source, config.task, work / "master")
    validate_against_torch(
        master.path,
        reference,
        master.input_names,
        master.output_name,
        source.max_length,
        reference.vocab_size,
    )
    # The reference used every tokenizer output; the graph may take fewer (e.g. no token_type_ids).
    evaluator = Evaluator(config.task, encoder, splits, ref_outs, thresholds)
    del reference  # free torch weights before the targets build

    reporter.step("prepare", "benchmark workload")
    # Speed is measured on short queries (batch 1) and product titles (batch 32), as the
    # manifest's perf notes say; long texts would measure padding, not the backend.
    short_queries = [q for q in evalset.queries if len(q.split()) <= 8]
    titles = [p for p in evalset.products if len(p.split()) <= 30 and "\n" not in p]
    bench_short: list[Item] = [*(short_queries or [q for q, _ in evalset.groups] or evalset.texts)]
    pairs: list[Item] = [it for it in items if not isinstance(it, str)]
    bench_batch: list[Item] = [*(titles or pairs or evalset.texts)]
    if config.task == "rerank":
        bench_short = [(q, d[0]) for q, d in evalset.groups]
        bench_batch = items
    ctx = BuildContext(
        source=model_source,
        task=config.task,
        master=master,
        encoder=encoder,
        evaluator=evaluator,
        workload=Workload(encoder, list(bench_short), list(bench_batch)),
        calibration=calibration,
        workdir=work / "targets",
        threads=threads,
        reporter=reporter,
        max_batch=config.max_batch,
        trt_compat=tuple(config.trt_compat),
        bf16=config.bf16,
    )
    described = ", ".join(f"{s.name} ({len(s.items(config.task))}, {s.role})" for s in splits)
    reporter.end("prepare", True, f"eval splits: {described}; {evalset.source}")
    shared = Shared(
        tok_path=tok_path,
        gold_items=gold_items,
        gold_ref=gold_ref,
        thresholds=thresholds,
        labels=source.labels if config.task == "classify" else [],
        key=key,
        started_at=started_at,
        source_digest=source.digest,
        eval_payload=digest_payload(splits, config.task),
        source_name=source.name,
        variant=prune.variant if prune else "",
        compression=compression,
    )
    return ctx, shared


def _student(
    config: BuildConfig,
    teacher: ModelSource,
    prune: PruneSpec,
    tokenizer: tuple[Path, TokenizerSpec],
    work: Path,
) -> tuple[ModelSource, Compression]:
    """The K-layer student, distilled from ``teacher`` on calibration texts only."""
    from builder.prune import DISTIL_TEXTS, make_student

    cal_path = Path(config.calibration_file) if config.calibration_file else None
    texts = calibration_items(config.task, cal_path, limit=DISTIL_TEXTS)
    student, rep = make_student(
        teacher,
        config.task,
        prune,
        tokenizer,
        texts,
        work / "student",
        threads=config.threads or os.cpu_count() or 1,
        progress=lambda message: log.info("%s: %s", prune.variant, message),
    )
    compression = Compression(
        layers_total=rep.layers_total,
        layers_kept=rep.kept,
        drop_order=rep.drop_order,
        drop_costs=rep.drop_costs,
        steps=rep.steps,
        seconds=rep.seconds,
        loss_start=rep.loss_start,
        loss_end=rep.loss_end,
        texts=rep.texts,
        student_digest=student.digest,
    )
    return student, compression


def _build_target(
    config: BuildConfig, ctx: BuildContext, shared: Shared, target: str
) -> TargetReport:
    reporter = ctx.reporter
    why_not = PREFLIGHT.get(target, lambda: None)()
    if why_not:
        reporter.begin(target, 1)
        outcome = TargetOutcome(target=target, passed=False, reason=why_not)
    else:
        ladder = LADDERS[target](ctx)
        reporter.begin(target, 3 * len(ladder) + 1)
        outcome = run_ladder(ctx, target, ladder)
    tr = TargetReport(
        target=bundle_key(target, shared.variant),
        passed=outcome.passed,
        reason=outcome.reason,
        outcome=outcome,
    )
    if outcome.passed:
        try:
            tr.manifest, tr.path, tr.size_bytes = _write_target(config, ctx, outcome, shared)
        except BuildError as exc:
            tr.passed, tr.reason = False, str(exc)
        if outcome.artifact is not None:
            outcome.artifact.runner = None  # type: ignore[assignment]  # free the session
            outcome.artifact.gated.clear()
    reporter.end(target, tr.passed, tr.reason or f"{outcome.config}")
    return tr


def _provenance(
    config: BuildConfig, outcome: TargetOutcome, files: dict[str, Path | bytes], shared: Shared
) -> bytes:
    """SLSA provenance over the bundle's files, signed with the build's key."""
    spec = config.provenance
    assert spec is not None and outcome.gate is not None
    if shared.key is None:
        raise BuildError("provenance needs a signing key (key_file)")
    digests = {
        path: sha256_bytes(src) if isinstance(src, bytes) else sha256_file(Path(src))
        for path, src in files.items()
    }
    statement = provenance_statement(
        files=digests,
        params=BuildParameters(**spec.params),
        builder=spec.builder,
        toolchain=_toolchain(),
        metrics=outcome.gate.metrics,
        started=shared.started_at,
        finished=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    return sign_statement(statement, shared.key)


def _within(metric: str, worst: float, tol: float) -> bool:
    return worst >= tol if metric == "cosine" else worst <= tol


def _write_target(
    config: BuildConfig, ctx: BuildContext, outcome: TargetOutcome, shared: Shared
) -> tuple[Manifest, str, int]:
    art = outcome.artifact
    assert art is not None and outcome.gate is not None and outcome.speed is not None
    spec = target_spec(outcome.target)
    # Golden: run the shipped artifact through the full path and make sure it passes its own check.
    gold_out = run_items(
        ctx.encoder,
        shared.gold_items,
        art.runner,
        art.runner.input_names,
        pad_id=ctx.encoder.spec.pad_token_id,
    )
    metric, tol = tolerance(config.task, shared.gold_ref, gold_out, shared.thresholds)
    worst, _ = compare(shared.gold_ref, gold_out, metric)
    if not _within(metric, worst, tol):
        raise BuildError(
            f"{outcome.target}: golden smoke check fails on the build host ({metric} {worst:.4f} vs {tol})"
        )
    for flag, runner in art.gated.items():  # gated numerics must pass the same golden check
        try:
            alt = run_items(
                ctx.encoder,
                shared.gold_items,
                runner,
                runner.input_names,
                pad_id=ctx.encoder.spec.pad_token_id,
            )
            alt_worst, _ = compare(shared.gold_ref, alt, metric)
        except Exception as exc:  # an alternate failing leaves the bundle as gated in f32
            log.warning("%s: %s golden check failed to run: %s", outcome.target, flag, exc)
            alt_worst = float("nan")
        if not _within(metric, alt_worst, tol):
            log.warning(
                "%s: %s fails the golden check (%s %.4f)", outcome.target, flag, metric, alt_worst
            )
            art.runtime[flag] = "false"
    art.gated.clear()
    int_dims = [d for d in (ctx.master.dim,) if d]
    out_shape: list[int | str] = ["batch", *int_dims]
    io = IOSpec(
        inputs=[
            TensorSpec(name=n, dtype="int64", shape=["batch", "sequence"])
            for n in ctx.master.input_names
        ],
        outputs=[TensorSpec(name=ctx.master.output_name, dtype="float32", shape=out_shape)],
        max_batch=config.max_batch,
        max_seq_len=ctx.source.max_length,
        pooling=ctx.source.pooling if config.task == "embedding" else "none",  # type: ignore[arg-type]
        normalize=config.task == "embedding",
        output=ctx.master.output_name,
        dim=ctx.master.dim,
    )
    speed = outcome.speed
    ctx.reporter.step(outcome.target, "golden + manifest + bundle")
    manifest = Manifest(
        model=ModelInfo(
            name=config.model_name,
            version=config.version,
            task=config.task,  # type: ignore[arg-type]
            labels=shared.labels,
            source_digest=shared.source_digest,
            source_name=shared.source_name,
        ),
        target=TargetInfo(
            id=outcome.target,
            backend=spec.backend,  # type: ignore[arg-type]  # TARGETS holds only valid backends
            precision=art.precision,  # type: ignore[arg-type]
            requires=art.requires,
            device=spec.device,  # type: ignore[arg-type]
            runtime=art.runtime,  # type: ignore[arg-type]
            variant=shared.variant,
        ),
        io=io,
        tokenizer=ctx.encoder.spec,
        quality=Quality(
            reference="torch-fp32 teacher" if shared.variant else "torch-fp32",
            basis="task" if shared.variant else "fidelity",
            metrics=rounded_metrics(outcome.gate.metrics),
            thresholds=shared.thresholds,
            passed=True,
            eval_set_digest=sha256_bytes(shared.eval_payload),
            eval_items=len(ctx.evaluator.items),
            config=outcome.config,
            attempts=outcome.attempts,
            intervals=rounded_intervals(outcome.gate.intervals),
            confidence=outcome.gate.confidence,
            splits=split_records(outcome.gate),
        ),
        perf=Perf(
            host=host_info(ctx.threads),
            latency_p50_ms=round(speed.p50_ms, 4),
            latency_p99_ms=round(speed.p99_ms, 4),
            throughput_items_s=round(speed.throughput, 2),
            batch=speed.batch,
            notes="batch 1: short queries; batch 32: product titles; build host, same run for all targets",
        ),
        build=BuildInfo(
            toolchain=_toolchain(),
            calibration_set_digest=sha256_bytes(repr(ctx.calibration).encode()),
            options={"threads": str(ctx.threads), "opset": str(ctx.master.opset)},
            builder_host=socket.gethostname(),
            builder_gpu=None,
            started_at=shared.started_at,
            finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            peak_rss_mb=round(_peak_rss_mb(), 1),
        ),
        golden=GoldenSpec(tolerance=round(tol, 6), metric=metric, items=len(shared.gold_items)),  # type: ignore[arg-type]
        compression=shared.compression,
    )
    files: dict[str, Path | bytes] = dict(art.files)
    files["tokenizer.json"] = shared.tok_path
    files["golden.npz"] = golden_bytes(shared.gold_items, shared.gold_ref)
    if config.provenance is not None:
        files[PROVENANCE_FILE] = _provenance(config, outcome, files, shared)
    dest = Path(config.out_dir) / bundle_key(outcome.target, shared.variant)
    written = write_bundle(dest, manifest, files, key=shared.key, overwrite=config.overwrite)
    return written, str(dest), sum(f.size for f in written.files)
