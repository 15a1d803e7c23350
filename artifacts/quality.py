"""Gate thresholds: part of the contract (every manifest records the ones it was held to)."""

from __future__ import annotations

from artifacts.errors import InputError

TASKS = ("embedding", "rerank", "classify")

DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {
    "embedding": {
        "cosine_mean": 0.995,
        "cosine_min": 0.98,
        "recall10_overlap": 0.95,
        "batch_invariance_min_cosine": 0.99,
    },
    "rerank": {"spearman": 0.98, "top1_agreement": 0.95, "batch_invariance_max_abs": 0.05},
    "classify": {"label_agreement": 0.99, "batch_invariance_max_abs": 0.05},
}
# Variants (a pruned, distilled student) cannot match the teacher's vectors; they are held to
# the teacher's task quality on the held-out splits instead: retrieval recall@10 of the known
# relevant products as a share of the teacher's, rank agreement of rerank scores, label
# agreement. Batch invariance still holds (the edge's result cache relies on it).
TASK_THRESHOLDS: dict[str, dict[str, float]] = {
    # recall: ≥ 95% of the teacher's as measured, and ≥ 90% with 95% confidence (360 search
    # queries pin the ratio to about ±6%: a tighter bound needs a bigger eval set, --eval)
    "embedding": {
        "relevant_recall10_ratio_point": 0.95,  # as measured
        "relevant_recall10_ratio": 0.9,  # the lower bound of its 95% interval
        "batch_invariance_min_cosine": 0.99,
    },
    "rerank": {"spearman": 0.9, "batch_invariance_max_abs": 0.05},
    "classify": {"label_agreement": 0.95, "batch_invariance_max_abs": 0.05},
}
BASES = ("fidelity", "task")
LOWER_IS_BETTER = frozenset({"batch_invariance_max_abs"})


def thresholds_for(
    task: str, overrides: dict[str, float] | None = None, *, basis: str = "fidelity"
) -> dict[str, float]:
    """The gate's thresholds for ``task``: the defaults of the ``basis`` ("fidelity" for the
    full model's bundles, "task" for variants), with ``overrides`` of known names."""
    if task not in DEFAULT_THRESHOLDS:
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if basis not in BASES:
        raise InputError(f"unknown gate basis {basis!r}; choose one of {', '.join(BASES)}")
    base = dict((DEFAULT_THRESHOLDS if basis == "fidelity" else TASK_THRESHOLDS)[task])
    for name, value in (overrides or {}).items():
        if name not in base:
            raise InputError(
                f"unknown threshold {name!r} for task {task}; known: {', '.join(sorted(base))}"
            )
        base[name] = float(value)
    return base
