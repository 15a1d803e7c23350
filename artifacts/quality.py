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
LOWER_IS_BETTER = frozenset({"batch_invariance_max_abs"})


def thresholds_for(task: str, overrides: dict[str, float] | None = None) -> dict[str, float]:
    if task not in DEFAULT_THRESHOLDS:
        raise InputError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    base = dict(DEFAULT_THRESHOLDS[task])
    for name, value in (overrides or {}).items():
        if name not in base:
            raise InputError(
                f"unknown threshold {name!r} for task {task}; known: {', '.join(sorted(base))}"
            )
        base[name] = float(value)
    return base
