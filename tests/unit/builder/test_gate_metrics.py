"""Gate metrics on hand-made vectors (values checked by hand)."""

import numpy as np
import pytest

from artifacts.errors import InputError
from artifacts.quality import thresholds_for
from artifacts.textproc import cosines
from builder.gate import (
    label_agreement,
    recall_overlap,
    rerank_metrics,
    spearman,
    verdict,
)


def test_cosines():
    ref = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    cand = np.array([[1.0, 0.0], [0.0, -1.0], [1.0, 0.0]])
    np.testing.assert_allclose(cosines(ref, cand), [1.0, -1.0, 1 / np.sqrt(2)])


def test_recall_overlap_identical_and_swapped():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    p = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert recall_overlap(q, p, q, p, k=2) == 1.0
    # candidate retrieves the other pair for query 0: overlap 0 for it, 1 for query 1
    q2 = np.array([[0.0, 1.0], [0.0, 1.0]])
    assert recall_overlap(q, p, q2, p, k=2) == 0.5
    # k larger than the corpus is clamped
    assert recall_overlap(q, p[:1], q, p[:1], k=10) == 1.0


def test_spearman_ties_and_constant():
    assert spearman(np.array([10, 20, 20, 5]), np.array([2, 3, 3, 1])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    assert spearman(np.array([1, 1, 1]), np.array([1, 2, 3])) is None


def test_rerank_metrics():
    ref = [np.array([3.0, 2.0, 1.0]), np.array([1.0, 2.0, 3.0])]
    cand = [np.array([3.1, 1.9, 1.0]), np.array([1.0, 3.5, 3.0])]
    m = rerank_metrics(ref, cand)
    assert m["top1_agreement"] == 0.5
    assert m["spearman"] == pytest.approx((1.0 + 0.5) / 2)


def test_label_agreement():
    ref = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=float)
    cand = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=float)
    assert label_agreement(ref, cand) == 0.75


def test_verdict_directions():
    t = {"cosine_mean": 0.995, "batch_invariance_max_abs": 0.05}
    assert verdict({"cosine_mean": 0.996, "batch_invariance_max_abs": 0.01}, t) == []
    fails = verdict({"cosine_mean": 0.99, "batch_invariance_max_abs": 0.2}, t)
    assert fails == ["cosine_mean 0.9900 < 0.995", "batch_invariance_max_abs 0.2000 > 0.05"]
    assert verdict({}, {"cosine_min": 0.98}) == ["cosine_min not measured"]


def test_thresholds_defaults_and_overrides():
    assert thresholds_for("embedding")["recall10_overlap"] == 0.95
    assert thresholds_for("rerank", {"spearman": 0.9})["spearman"] == 0.9
    with pytest.raises(InputError, match="unknown threshold"):
        thresholds_for("classify", {"spearman": 0.9})


def test_every_buildable_target_has_a_ladder():
    """Central's list of buildable targets (artifacts.targets) is what the builder builds."""
    from artifacts.targets import BUILDABLE_TARGETS
    from builder.pipeline import LADDERS

    assert set(LADDERS) == set(BUILDABLE_TARGETS)
