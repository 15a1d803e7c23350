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
from artifacts.quality import thresholds_for
from artifacts.textproc import TextEncoder
from builder.data.datasets import eval_splits
from builder.gate import Evaluator, rounded_metrics
from builder.reference import ReferenceCache, TorchReference, reference_outputs
from builder.runners import Runner
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
    gate = Evaluator(spec.task, encoder, splits, ref_outs, thresholds).evaluate(runner)
    problems = [*gate.failures]
    if not smoke.passed:
        problems.append(f"golden smoke check: {smoke.describe()}")
    metrics = rounded_metrics(gate.metrics)
    metrics["golden_worst"] = round(smoke.worst, 6)
    return Verdict(not problems, metrics, thresholds, "; ".join(problems))
