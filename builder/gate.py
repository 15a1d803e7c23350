"""The accuracy gate: every artifact is held to the FP32 torch model's answers.

Metrics are pure functions of (reference, candidate) arrays so they can be unit-tested on
hand-made vectors. Each metric has a direction: ``>=`` metrics must reach their threshold,
``<=`` metrics (deviations) must stay under it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from artifacts.quality import LOWER_IS_BETTER
from artifacts.textproc import Item, TextEncoder, collate, cosines, run_items
from builder.data.datasets import EvalSet
from builder.runners import Runner

# ---- metrics (pure) -------------------------------------------------------------------------


def recall_overlap(
    ref_q: np.ndarray, ref_p: np.ndarray, cand_q: np.ndarray, cand_p: np.ndarray, k: int = 10
) -> float:
    """Mean |top-k(ref) ∩ top-k(candidate)| / k of query→product retrieval by dot product."""
    k = min(k, ref_p.shape[0])
    if k == 0 or ref_q.shape[0] == 0:
        return 1.0
    top_ref = np.argsort(-(ref_q @ ref_p.T), axis=1, kind="stable")[:, :k]
    top_cand = np.argsort(-(cand_q @ cand_p.T), axis=1, kind="stable")[:, :k]
    return float(
        np.mean([len(set(a) & set(b)) / k for a, b in zip(top_ref, top_cand, strict=True)])
    )


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation (ties averaged); None when either side is constant."""
    a, b = np.asarray(a), np.asarray(b)
    if np.all(a == a.flat[0]) or np.all(b == b.flat[0]):
        return None
    return float(stats.spearmanr(a, b).statistic)


def rerank_metrics(
    ref_scores: Sequence[np.ndarray], cand_scores: Sequence[np.ndarray]
) -> dict[str, float]:
    rhos, top1 = [], []
    for r, c in zip(ref_scores, cand_scores, strict=True):
        rho = spearman(r, c)
        if rho is not None:
            rhos.append(rho)
        top1.append(float(np.argmax(r) == np.argmax(c)))
    return {
        "spearman": float(np.mean(rhos)) if rhos else 1.0,
        "top1_agreement": float(np.mean(top1)) if top1 else 1.0,
    }


def label_agreement(ref_logits: np.ndarray, cand_logits: np.ndarray) -> float:
    return float(np.mean(ref_logits.argmax(axis=1) == cand_logits.argmax(axis=1)))


def verdict(metrics: dict[str, float], thresholds: dict[str, float]) -> list[str]:
    """Failures, each as 'metric value vs threshold' (empty: passed)."""
    failures = []
    for name, limit in thresholds.items():
        value = metrics.get(name)
        if value is None:
            failures.append(f"{name} not measured")
        elif name in LOWER_IS_BETTER and value > limit:
            failures.append(f"{name} {value:.4f} > {limit}")
        elif name not in LOWER_IS_BETTER and value < limit:
            failures.append(f"{name} {value:.4f} < {limit}")
    return failures


# ---- evaluation ---------------------------------------------------------------------------


@dataclass
class GateResult:
    metrics: dict[str, float]
    thresholds: dict[str, float]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        return "passed" if self.passed else "failed: " + "; ".join(self.failures)


class Evaluator:
    """Runs a candidate over the eval set and compares it with the FP32 reference outputs."""

    def __init__(
        self,
        task: str,
        encoder: TextEncoder,
        evalset: EvalSet,
        reference: np.ndarray,
        thresholds: dict[str, float],
        *,
        pad_id: int = 0,
    ) -> None:
        self.task = task
        self.encoder = encoder
        self.evalset = evalset
        self.items: list[Item] = evalset.items(task)
        self.reference = reference
        self.thresholds = thresholds
        self.pad_id = pad_id
        if len(reference) != len(self.items):
            raise ValueError("reference outputs do not match the eval set")

    def outputs(self, runner: Runner) -> np.ndarray:
        return run_items(self.encoder, self.items, runner, runner.input_names, pad_id=self.pad_id)

    def evaluate(self, runner: Runner) -> GateResult:
        cand = self.outputs(runner)
        ref = self.reference
        metrics: dict[str, float] = {}
        if self.task == "embedding":
            cos = cosines(ref, cand)
            nq = len(self.evalset.queries)
            metrics["cosine_mean"] = float(cos.mean())
            metrics["cosine_min"] = float(cos.min())
            metrics["recall10_overlap"] = recall_overlap(ref[:nq], ref[nq:], cand[:nq], cand[nq:])
        elif self.task == "rerank":
            sizes = [len(d) for _, d in self.evalset.groups]
            bounds = np.cumsum([0, *sizes])
            ref_s = [ref[a:b, 0] for a, b in itertools.pairwise(bounds)]
            cand_s = [cand[a:b, 0] for a, b in itertools.pairwise(bounds)]
            metrics.update(rerank_metrics(ref_s, cand_s))
        else:
            metrics["label_agreement"] = label_agreement(ref, cand)
        metrics.update(self.batch_invariance(runner))
        return GateResult(metrics, self.thresholds, verdict(metrics, self.thresholds))

    def batch_invariance(
        self, runner: Runner, *, n: int = 32, neighbours: int = 7
    ) -> dict[str, float]:
        """Each of ``n`` short items alone vs in a batch with the longest items (and so padded
        to their length): dynamic per-tensor quantization fails this, and the edge's result
        cache is only correct if it holds."""
        encoded = self.encoder.encode(self.items)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        short = order[: min(n, len(order))]
        longest = [encoded[i] for i in order[-neighbours:]]
        worst_cos, worst_abs = 1.0, 0.0
        names = runner.input_names
        for i in short:
            alone = runner(collate([encoded[i]], names, pad_id=self.pad_id))[0]
            mixed = runner(collate([encoded[i], *longest], names, pad_id=self.pad_id))[0]
            if self.task == "embedding":
                worst_cos = min(worst_cos, float(cosines(alone[None], mixed[None])[0]))
            else:
                worst_abs = max(worst_abs, float(np.abs(alone - mixed).max()))
        if self.task == "embedding":
            return {"batch_invariance_min_cosine": worst_cos}
        return {"batch_invariance_max_abs": worst_abs}
