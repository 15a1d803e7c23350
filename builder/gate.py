"""The accuracy gate: every artifact is held to the FP32 torch model's answers.

Metrics are pure functions of (reference, candidate) arrays so they can be unit-tested on
hand-made vectors. Each metric has a direction: ``>=`` metrics must reach their threshold,
``<=`` metrics (deviations) must stay under it.

A point estimate that clears a threshold by a hair says little about the next thousand texts,
so every metric that averages over units (items, queries, query groups) carries a bootstrap
confidence interval, and the gate holds the interval's *pessimistic* bound to the threshold.
Every deciding eval split must pass on its own; per-slice metrics show the worst slice.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from artifacts.digests import sha256_bytes
from artifacts.manifest import EvalSplit
from artifacts.quality import LOWER_IS_BETTER
from artifacts.textproc import Item, TextEncoder, collate, cosines, run_items
from builder.data.datasets import DECIDING, EvalSet
from builder.runners import Runner

# ---- metrics (pure) -------------------------------------------------------------------------


def top_k(queries: np.ndarray, corpus: np.ndarray, k: int = 10) -> np.ndarray:
    """Indices of each query's k best corpus items by dot product (stable order)."""
    k = min(k, corpus.shape[0])
    return np.argsort(-(queries @ corpus.T), axis=1, kind="stable")[:, :k]


def overlaps(
    ref_q: np.ndarray, ref_p: np.ndarray, cand_q: np.ndarray, cand_p: np.ndarray, k: int = 10
) -> np.ndarray:
    """Per query: |top-k(ref) ∩ top-k(candidate)| / k (the unit a bootstrap resamples)."""
    k = min(k, ref_p.shape[0])
    if k == 0 or ref_q.shape[0] == 0:
        return np.ones(ref_q.shape[0])
    top_ref, top_cand = top_k(ref_q, ref_p, k), top_k(cand_q, cand_p, k)
    return np.array([len(set(a) & set(b)) / k for a, b in zip(top_ref, top_cand, strict=True)])


def recall_overlap(
    ref_q: np.ndarray, ref_p: np.ndarray, cand_q: np.ndarray, cand_p: np.ndarray, k: int = 10
) -> float:
    """Mean |top-k(ref) ∩ top-k(candidate)| / k of query→product retrieval by dot product."""
    per_query = overlaps(ref_q, ref_p, cand_q, cand_p, k)
    return float(per_query.mean()) if per_query.size else 1.0


def relevant_recall(top: np.ndarray, relevant: Sequence[Sequence[int]]) -> np.ndarray:
    """Per query with known relevant products: the share of them (at most k) found in top-k."""
    out = []
    for row, rel in zip(top, relevant, strict=True):
        if rel:
            out.append(len(set(row.tolist()) & set(rel)) / min(len(rel), len(row)))
    return np.array(out)


def bootstrap_interval(
    values: np.ndarray,
    stat: str = "mean",
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``mean`` or ``min`` over resampled units (seeded, so
    the same outputs always give the same interval)."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return (1.0, 1.0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(resamples, values.size))
    sample = values[idx]
    stats_ = sample.min(axis=1) if stat == "min" else sample.mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(stats_, [tail, 100 - tail])
    return (float(lo), float(hi))


def ratio_interval(
    num: np.ndarray,
    den: np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Paired percentile bootstrap of mean(num) / mean(den) over the same resampled units (a
    candidate's recall as a share of the reference's on the same queries)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if num.size == 0 or not den.any():
        return (math.nan, math.nan)  # nothing the reference found: not measurable
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num.size, size=(resamples, num.size))
    top, bottom = num[idx].mean(axis=1), den[idx].mean(axis=1)
    ratios = np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1.0), 0.0)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(ratios, [tail, 100 - tail])
    return (float(lo), float(hi))


def share(num: np.ndarray, den: np.ndarray) -> float:
    """mean(num) / mean(den); NaN (not measurable, and so a failed gate where it is gated)
    when the reference found none of the relevant products."""
    bottom = float(np.mean(den)) if np.size(den) else 0.0
    return float(np.mean(num)) / bottom if bottom > 0 else math.nan


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman rank correlation (ties averaged); None when either side is constant, -1 (the
    worst) when either side is not finite."""
    a, b = np.asarray(a), np.asarray(b)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return -1.0
    if np.all(a == a.flat[0]) or np.all(b == b.flat[0]):
        return None
    return float(stats.spearmanr(a, b).statistic)


def rerank_units(
    ref_scores: Sequence[np.ndarray], cand_scores: Sequence[np.ndarray]
) -> dict[str, np.ndarray]:
    """Per query group: Spearman (groups with a constant side count as NaN) and top-1 match."""
    rhos, top1 = [], []
    for r, c in zip(ref_scores, cand_scores, strict=True):
        rho = spearman(r, c)
        rhos.append(np.nan if rho is None else rho)
        top1.append(float(np.argmax(r) == np.argmax(c)))
    return {"spearman": np.array(rhos), "top1_agreement": np.array(top1)}


def rerank_metrics(
    ref_scores: Sequence[np.ndarray], cand_scores: Sequence[np.ndarray]
) -> dict[str, float]:
    units = rerank_units(ref_scores, cand_scores)
    rhos = units["spearman"][~np.isnan(units["spearman"])]
    return {
        "spearman": float(np.mean(rhos)) if rhos.size else 1.0,
        "top1_agreement": float(np.mean(units["top1_agreement"])) if len(ref_scores) else 1.0,
    }


def label_agreement(ref_logits: np.ndarray, cand_logits: np.ndarray) -> float:
    return float(np.mean(ref_logits.argmax(axis=1) == cand_logits.argmax(axis=1)))


def verdict(
    metrics: dict[str, float],
    thresholds: dict[str, float],
    intervals: dict[str, tuple[float, float]] | None = None,
    *,
    scope: str = "",
) -> list[str]:
    """Failures, each as 'metric value vs threshold' (empty: passed). Where a metric has an
    interval, its pessimistic bound is what must clear the threshold."""
    failures = []
    prefix = f"{scope}: " if scope else ""
    for name, limit in thresholds.items():
        value = metrics.get(name)
        if value is None:
            if scope and name.startswith("batch_invariance"):
                continue  # measured once over every split, judged by the caller
            failures.append(f"{prefix}{name} not measured")
            continue
        ci = (intervals or {}).get(name)
        if not (math.isfinite(value) and all(math.isfinite(x) for x in ci or ())):
            failures.append(f"{prefix}{name} is not a finite number")
            continue
        shown = f"{value:.4f}" + (f" (95% CI {ci[0]:.4f}–{ci[1]:.4f})" if ci else "")
        if name in LOWER_IS_BETTER:
            bound = ci[1] if ci else value
            if bound > limit:
                failures.append(f"{prefix}{name} {shown} > {limit}")
        else:
            bound = ci[0] if ci else value
            if bound < limit:
                what = ": lower bound" if ci and value >= limit else ""
                failures.append(f"{prefix}{name} {shown}{what} < {limit}")
    return failures


# ---- evaluation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Bootstrap:
    """How gate intervals are drawn: resamples of the units, two-sided confidence level."""

    resamples: int = 1000
    confidence: float = 0.95


@dataclass
class SplitResult:
    """One eval split's verdict: metrics, their intervals and the per-slice breakdown."""

    name: str
    role: str
    source: str
    items: int
    digest: str
    composition: dict[str, int]
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    slices: dict[str, dict[str, float]]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class GateResult:
    """The deciding splits' worst point estimate and worst pessimistic interval per metric."""

    metrics: dict[str, float]
    thresholds: dict[str, float]
    failures: list[str] = field(default_factory=list)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    splits: list[SplitResult] = field(default_factory=list)
    confidence: float = 0.95

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        return "passed" if self.passed else "failed: " + "; ".join(self.failures)


def split_metrics(
    task: str,
    split: EvalSet,
    ref: np.ndarray,
    cand: np.ndarray,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
) -> tuple[dict[str, float], dict[str, tuple[float, float]], dict[str, dict[str, float]]]:
    """Point metrics, bootstrap intervals (resampling items, queries or query groups) and
    per-slice point metrics of one split. Pure: arrays in, numbers out."""

    def ci(values: np.ndarray, stat: str = "mean") -> tuple[float, float]:
        return bootstrap_interval(values, stat, resamples=resamples, confidence=confidence)

    ci_args = {"resamples": resamples, "confidence": confidence}

    metrics: dict[str, float] = {}
    intervals: dict[str, tuple[float, float]] = {}
    slices: dict[str, dict[str, float]] = {}
    item_slices = split.item_slices(task)
    if task == "embedding":
        cos = cosines(ref, cand)
        nq = len(split.queries)
        per_query = overlaps(ref[:nq], ref[nq:], cand[:nq], cand[nq:])
        metrics["cosine_mean"], intervals["cosine_mean"] = float(cos.mean()), ci(cos)
        metrics["cosine_min"], intervals["cosine_min"] = float(cos.min()), ci(cos, "min")
        metrics["recall10_overlap"] = float(per_query.mean()) if nq else 1.0
        intervals["recall10_overlap"] = ci(per_query)
        has_rel, rc, rr = _relevance(split, ref, cand, metrics, intervals, ci_args)
        for name in dict.fromkeys(item_slices):
            mask = np.array([s == name for s in item_slices])
            row = {"cosine_mean": float(cos[mask].mean()), "cosine_min": float(cos[mask].min())}
            if name.startswith("query:"):
                row["recall10_overlap"] = float(per_query[mask[:nq]].mean())
                sel = mask[:nq][has_rel]
                if has_rel.any() and sel.any():
                    row["relevant_recall10_ratio"] = share(rc[sel], rr[sel])
            slices[name] = row
    elif task == "rerank":
        sizes = [len(d) for _, d in split.groups]
        bounds = np.cumsum([0, *sizes])
        ref_s = [ref[a:b, 0] for a, b in itertools.pairwise(bounds)]
        cand_s = [cand[a:b, 0] for a, b in itertools.pairwise(bounds)]
        units = rerank_units(ref_s, cand_s)
        metrics.update(rerank_metrics(ref_s, cand_s))
        rho = units["spearman"]
        intervals["spearman"] = ci(rho[~np.isnan(rho)])
        intervals["top1_agreement"] = ci(units["top1_agreement"])
        group_slices = split.group_slices or ["all"] * len(split.groups)
        for name in dict.fromkeys(group_slices):
            mask = np.array([s == name for s in group_slices])
            r = rho[mask]
            slices[name] = {
                "spearman": float(np.mean(r[~np.isnan(r)])) if (~np.isnan(r)).any() else 1.0,
                "top1_agreement": float(units["top1_agreement"][mask].mean()),
            }
    else:
        agree = (ref.argmax(axis=1) == cand.argmax(axis=1)).astype(np.float64)
        metrics["label_agreement"], intervals["label_agreement"] = float(agree.mean()), ci(agree)
        for name in dict.fromkeys(item_slices):
            mask = np.array([s == name for s in item_slices])
            slices[name] = {"label_agreement": float(agree[mask].mean())}
    return metrics, intervals, slices


def _relevance(
    split: EvalSet,
    ref: np.ndarray,
    cand: np.ndarray,
    metrics: dict[str, float],
    intervals: dict[str, tuple[float, float]],
    ci_args: dict,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Task quality against the known relevant products, in ``metrics``/``intervals``; returns
    (which queries have relevant products, candidate and reference recall of those)."""
    nq = len(split.queries)
    has_rel = np.array([bool(r) for r in split.relevant] or [False] * nq, dtype=bool)
    if not has_rel.any():
        return has_rel, np.zeros(0), np.zeros(0)
    rel = [r for r in split.relevant if r]
    rc = relevant_recall(top_k(cand[:nq][has_rel], cand[nq:]), rel)
    rr = relevant_recall(top_k(ref[:nq][has_rel], ref[nq:]), rel)
    metrics["relevant_recall10"] = float(rc.mean())
    metrics["relevant_recall10_reference"] = float(rr.mean())
    # the share of the reference's recall the candidate keeps (the variants' gate) ...
    metrics["relevant_recall10_ratio"] = share(rc, rr)
    intervals["relevant_recall10_ratio"] = ratio_interval(rc, rr, **ci_args)
    # ... also judged as a point estimate (no interval): a variant must keep this share of
    # the teacher's recall as measured *and* clear a wider margin with 95% confidence (a few
    # hundred queries cannot pin a ratio to ±1%)
    metrics["relevant_recall10_ratio_point"] = metrics["relevant_recall10_ratio"]
    return has_rel, rc, rr


class Evaluator:
    """Runs a candidate over every eval split and compares it with the FP32 reference."""

    def __init__(
        self,
        task: str,
        encoder: TextEncoder,
        splits: list[EvalSet],
        references: list[np.ndarray],
        thresholds: dict[str, float],
        *,
        bootstrap: Bootstrap | None = None,
    ) -> None:
        if not splits or len(references) != len(splits):
            raise ValueError("one reference output per eval split is needed")
        self.task = task
        self.encoder = encoder
        self.splits = splits
        self.references = references
        self.thresholds = thresholds
        self.pad_id = encoder.spec.pad_token_id
        self.bootstrap = bootstrap or Bootstrap()
        self.items: list[Item] = [it for s in splits for it in s.items(task)]
        for split, ref in zip(splits, references, strict=True):
            if len(ref) != len(split.items(task)):
                raise ValueError(f"reference outputs do not match eval split {split.name!r}")

    def evaluate(self, runner: Runner) -> GateResult:
        """Every split in order; once a deciding split has failed, the remaining splits are
        skipped (the verdict cannot change, and a failing rung should cost little)."""
        results: list[SplitResult] = []
        for split, ref in zip(self.splits, self.references, strict=True):
            if any(r.failures for r in results if r.role == DECIDING):
                break
            cand = run_items(
                self.encoder, split.items(self.task), runner, runner.input_names, pad_id=self.pad_id
            )
            metrics, intervals, slices = split_metrics(
                self.task,
                split,
                ref,
                cand,
                resamples=self.bootstrap.resamples,
                confidence=self.bootstrap.confidence,
            )
            failures = verdict(metrics, self.thresholds, intervals, scope=split.name)
            if not np.isfinite(cand).all():
                failures.insert(0, f"{split.name}: the candidate gave non-finite outputs")
            results.append(
                SplitResult(
                    name=split.name,
                    role=split.role,
                    source=split.source,
                    items=len(split.items(self.task)),
                    digest=sha256_bytes(split.digest_payload(self.task)),
                    composition=split.composition(self.task),
                    metrics=metrics,
                    intervals=intervals,
                    slices=slices,
                    failures=failures,
                )
            )
        deciding = [r for r in results if r.role == DECIDING]
        if not deciding:
            raise ValueError("the gate needs at least one deciding eval split")
        metrics, intervals = _worst(deciding)
        invariance = self.batch_invariance(runner)
        metrics.update(invariance)
        failures = [f for r in deciding for f in r.failures]
        failures += verdict(
            invariance, {k: v for k, v in self.thresholds.items() if k in invariance}
        )
        return GateResult(
            metrics,
            self.thresholds,
            failures,
            intervals,
            results,
            confidence=self.bootstrap.confidence,
        )

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
            if not (np.isfinite(alone).all() and np.isfinite(mixed).all()):
                worst_cos, worst_abs = -1.0, math.inf  # judged as the worst possible
            elif self.task == "embedding":
                worst_cos = min(worst_cos, float(cosines(alone[None], mixed[None])[0]))
            else:
                worst_abs = max(worst_abs, float(np.abs(alone - mixed).max()))
        if self.task == "embedding":
            return {"batch_invariance_min_cosine": worst_cos}
        return {"batch_invariance_max_abs": worst_abs}


def rounded_intervals(intervals: dict[str, tuple[float, float]]) -> dict[str, list[float]]:
    """Intervals as the manifest stores them."""
    return {
        k: [round(lo, 6), round(hi, 6)]
        for k, (lo, hi) in intervals.items()
        if math.isfinite(lo) and math.isfinite(hi)
    }


def rounded_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics as the manifest stores them (JSON has no NaN: a non-finite value is left out,
    and the verdict already failed it)."""
    return {k: round(v, 6) for k, v in metrics.items() if math.isfinite(v)}


def split_records(gate: GateResult) -> list[EvalSplit]:
    """The manifest's record of every split the gate ran."""
    return [
        EvalSplit(
            name=r.name,
            role=r.role,  # type: ignore[arg-type]  # DECIDING or ADVISORY
            source=r.source,
            digest=r.digest,
            items=r.items,
            composition=r.composition,
            metrics=rounded_metrics(r.metrics),
            intervals=rounded_intervals(r.intervals),
            slices={s: rounded_metrics(m) for s, m in r.slices.items()},
            passed=r.passed,
        )
        for r in gate.splits
    ]


def _worst(
    results: list[SplitResult],
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Per metric: the worst point estimate and the interval with the worst pessimistic bound."""
    metrics: dict[str, float] = {}
    intervals: dict[str, tuple[float, float]] = {}
    for r in results:
        for name, value in r.metrics.items():
            low = name in LOWER_IS_BETTER
            if name not in metrics or (value > metrics[name] if low else value < metrics[name]):
                metrics[name] = value
        for name, (lo, hi) in r.intervals.items():
            cur = intervals.get(name)
            if cur is None or (hi > cur[1] if name in LOWER_IS_BETTER else lo < cur[0]):
                intervals[name] = (lo, hi)
    return metrics, intervals
