"""Pick the golden inputs (short, long, edge cases) and set the smoke-check tolerance."""

from __future__ import annotations

import numpy as np

from artifacts.textproc import Item

EDGE_CASES = [
    "",
    "a",
    "   ",
    "iPhone 15 Pro Max 256GB",
    "ÉCOUTEURS sans fil — réduction de bruit",
    "ワイヤレスイヤホン ノイズキャンセリング",
    "👟 running shoes size 44 🏃‍♀️",
    "SKU-4471-XL/BLK (2-pack) 100% cotton, 180 g/m²",
    "cheap cheap cheap cheap cheap cheap cheap cheap",
    " ".join(["ultra-lightweight waterproof trail running shoe with carbon plate"] * 60),
]


def golden_items(task: str, eval_items: list[Item], *, n: int = 24) -> list[Item]:
    """Edge cases plus eval items spread over the length range (shortest to longest)."""
    if task == "rerank":
        q = "wireless noise cancelling headphones"
        edge: list[Item] = [
            *[(q, d) for d in EDGE_CASES[:6]],
            ("", "USB-C cable 2m"),
            (EDGE_CASES[-1], q),
        ]
    else:
        edge = list(EDGE_CASES)
    by_len = sorted(eval_items, key=lambda it: len(it if isinstance(it, str) else it[0] + it[1]))
    k = max(0, n - len(edge))
    picks = [by_len[int(i * (len(by_len) - 1) / max(1, k - 1))] for i in range(k)] if by_len else []
    return edge + picks


def tolerance(
    task: str, reference: np.ndarray, candidate: np.ndarray, thresholds: dict[str, float]
) -> tuple[str, float]:
    """(metric, tolerance) the edge smoke check applies to this bundle.

    Embeddings: per-item cosine must stay >= the gate's cosine_min threshold. Logits: max abs
    deviation <= 4x what the build host saw (or 2% of the logit spread, if larger), so a
    different CPU's kernels pass while a wrong model or tokenizer does not.
    """
    if task == "embedding":
        return "cosine", float(thresholds.get("cosine_min", 0.98))
    observed = float(np.abs(reference - candidate).max()) if reference.size else 0.0
    spread = float(reference.max() - reference.min()) if reference.size else 1.0
    return "max_abs", max(4 * observed, 0.02 * max(spread, 1e-3), 1e-3)
