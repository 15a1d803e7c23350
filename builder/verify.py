"""Independent verification of a bundle another worker built: recompute the FP32 reference
from the source model, run the bundle over the same eval set and hold it to the request's
thresholds (the gate), and run its golden smoke check. The verifying worker signs the verdict.

Nothing of the builder's claims is reused: not its metrics, not its thresholds (the
request's are), only the bytes it shipped (already checked against its signature).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from artifacts.bundle import VerifiedBundle
from artifacts.golden import smoke_check
from artifacts.openvino_config import PRECISION_KEY, cpu_has_native_bf16, node_precision
from artifacts.quality import thresholds_for
from artifacts.textproc import TextEncoder
from builder.data.datasets import eval_splits
from builder.gate import Evaluator, rounded_metrics
from builder.reference import ReferenceCache, TorchReference, reference_outputs
from builder.runners import OpenVinoRunner, Runner
from builder.runners import bundle_runner as runner_for
from builder.source import inspect_model_dir

REFERENCE_INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


class VerifySpec(msgspec.Struct, kw_only=True):
    """What a verification child process is asked to check."""

    bundle_dir: str
    model_dir: str
    task: str
    eval_file: str | None = None
    thresholds: dict[str, float] = {}
    eval_limit: int = 1200
    threads: int = 0
    reference_cache_dir: str | None = None  # written, never read: verification stays fresh
    basis: str = "fidelity"  # "task": a variant, held to the teacher's task quality


@dataclass
class Verdict:
    passed: bool
    metrics: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    retry: bool = False  # not a verdict on the bundle: another worker should verify it


def bundle_runner(bundle: VerifiedBundle, threads: int) -> Runner:
    """The verified bundle's model, run as the build host ran it for the gate."""
    return runner_for(bundle.path, bundle.manifest, threads)


def verify_bundle_quality(bundle: VerifiedBundle, spec: VerifySpec) -> Verdict:
    m = bundle.manifest
    thresholds = thresholds_for(spec.task, spec.thresholds, basis=spec.basis)
    if m.model.task != spec.task:
        return Verdict(
            False, {}, thresholds, f"bundle is a {m.model.task} model, job is {spec.task}"
        )
    if bool(m.target.variant) != (spec.basis == "task"):
        what = f"the {m.target.variant} variant" if m.target.variant else "the full model"
        return Verdict(False, {}, thresholds, f"bundle is {what}, the job builds the other")
    bf16 = None
    if m.target.backend == "openvino":
        pinned = m.target.runtime.get(PRECISION_KEY, "f32")
        if pinned != "f32":  # a host without it would check f32 while nodes ran the pin
            return Verdict(
                False, {}, thresholds, f"bundle pins inference_precision {pinned!r}; builds pin f32"
            )
        if node_precision(m.target.runtime, native_bf16=True) == "bf16":
            # nodes with native BF16 will run it in BF16: those numerics are checked too, on a
            # host that runs them (elsewhere OpenVINO would silently check f32 again)
            try:
                bf16 = bf16_runner(bundle, spec.threads)
            except Exception as exc:  # a verdict on the bundle, not a crash to retry
                why = f"bf16: the bundle does not compile in BF16: {type(exc).__name__}: {exc}"
                return Verdict(False, {}, thresholds, why[:1000])
            if bf16 is None:
                return Verdict(False, {}, thresholds, UNCHECKABLE_BF16, retry=True)
    encoder = TextEncoder.for_bundle(bundle.path, m)
    runner = bundle_runner(bundle, spec.threads)
    smoke = smoke_check(bundle.path, m, runner, runner.input_names)
    splits = eval_splits(
        spec.task, Path(spec.eval_file) if spec.eval_file else None, limit=spec.eval_limit
    )
    source = inspect_model_dir(Path(spec.model_dir))
    reference = TorchReference(source, spec.task, threads=spec.threads or 1)
    # a verification computes its own reference fresh (never read from a cache that a build
    # job's child on this worker could have written), and records it for later builds
    cache = ReferenceCache(
        Path(spec.reference_cache_dir) if spec.reference_cache_dir else None, read=False
    )
    tokenizer_file = bundle.file(m.tokenizer.file)
    ref_outs = reference_outputs(cache, source, encoder, tokenizer_file, splits, reference)
    del reference
    evaluator = Evaluator(spec.task, encoder, splits, ref_outs, thresholds)
    gate = evaluator.evaluate(runner)
    problems = [*gate.failures]
    if not smoke.passed:
        problems.append(f"golden smoke check: {smoke.describe()}")
    metrics = rounded_metrics(gate.metrics)
    metrics["golden_worst"] = round(smoke.worst, 6)
    if bf16 is not None:
        alt, alt_smoke = (
            evaluator.evaluate(bf16),
            smoke_check(bundle.path, m, bf16, bf16.input_names),
        )
        problems += [f"bf16: {f}" for f in alt.failures]
        if not alt_smoke.passed:
            problems.append(f"bf16 golden smoke check: {alt_smoke.describe()}")
        metrics["bf16_golden_worst"] = round(alt_smoke.worst, 6)
    return Verdict(not problems, metrics, thresholds, "; ".join(problems))


UNCHECKABLE_BF16 = (
    "bundle says bf16_gated: its BF16 numerics cannot be checked on this host (OpenVINO reports "
    "no native BF16 here); left for a worker that can"
)


def bf16_runner(bundle: VerifiedBundle, threads: int) -> Runner | None:
    """The bundle compiled in BF16 as nodes with native BF16 run it; None where this host
    would silently run f32 instead (nothing to check here)."""
    if not cpu_has_native_bf16():
        return None
    m = bundle.manifest
    runtime = dict(m.target.runtime) | {PRECISION_KEY: "bf16"}
    return OpenVinoRunner(
        bundle.file(m.model_file()), m.io.output, threads=threads, runtime=runtime
    )
