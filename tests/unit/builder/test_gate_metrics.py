"""Gate metrics on hand-made vectors (values checked by hand)."""

import numpy as np
import pytest

from artifacts.errors import InputError
from artifacts.quality import thresholds_for
from artifacts.textproc import cosines
from builder.gate import (
    bootstrap_interval,
    label_agreement,
    recall_overlap,
    relevant_recall,
    rerank_metrics,
    spearman,
    split_metrics,
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


def test_verdict_holds_the_pessimistic_bound():
    t = {"recall10_overlap": 0.95, "batch_invariance_max_abs": 0.05}
    fine = {"recall10_overlap": (0.955, 0.97), "batch_invariance_max_abs": (0.0, 0.04)}
    assert verdict({"recall10_overlap": 0.96, "batch_invariance_max_abs": 0.01}, t, fine) == []
    # the point estimate passes, the interval's lower bound does not
    wide = {"recall10_overlap": (0.94, 0.97)}
    fails = verdict({"recall10_overlap": 0.955, "batch_invariance_max_abs": 0.0}, t, wide)
    assert fails == ["recall10_overlap 0.9550 (95% CI 0.9400–0.9700): lower bound < 0.95"]
    # lower-is-better metrics are held by the upper bound
    high = {"batch_invariance_max_abs": (0.01, 0.06)}
    fails = verdict({"recall10_overlap": 1.0, "batch_invariance_max_abs": 0.02}, t, high)
    assert fails == ["batch_invariance_max_abs 0.0200 (95% CI 0.0100–0.0600) > 0.05"]
    assert verdict({}, {"cosine_min": 0.98}, scope="search") == ["search: cosine_min not measured"]


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_more_units():
    rng = np.random.default_rng(1)
    few = (rng.random(40) < 0.9).astype(float)
    many = (rng.random(4000) < 0.9).astype(float)
    lo, hi = bootstrap_interval(few)
    assert lo < few.mean() < hi
    lo2, hi2 = bootstrap_interval(many)
    assert lo2 < many.mean() < hi2 and (hi2 - lo2) < (hi - lo) / 5
    assert bootstrap_interval(few) == (lo, hi)  # seeded: the same data, the same interval
    # the minimum's lower bound is the sample minimum: no resample goes below it
    values = np.array([0.99, 0.995, 0.97, 0.999])
    assert bootstrap_interval(values, "min")[0] == pytest.approx(0.97)
    assert bootstrap_interval(np.array([])) == (1.0, 1.0)


def _split(queries, products, relevant, q_slices, p_slices):
    from builder.data.datasets import EvalSet

    return EvalSet(
        queries=queries,
        products=products,
        relevant=relevant,
        query_slices=q_slices,
        product_slices=p_slices,
        name="s",
    )


def test_split_metrics_per_slice_and_relevance():
    # 2 queries, 4 products in 2 dims; the candidate flips query 1's ranking
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    p = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    split = _split(["a", "b"], ["w", "x", "y", "z"], [[0], [3]], ["short", "long"], ["t"] * 4)
    ref = np.vstack([q, p])
    cand = ref.copy()
    cand[1] = [0.7, 0.7]
    metrics, intervals, slices = split_metrics("embedding", split, ref, cand)
    assert metrics["cosine_min"] == pytest.approx(np.sqrt(0.5))
    assert set(intervals) == {
        "cosine_mean",
        "cosine_min",
        "recall10_overlap",
        "relevant_recall10_ratio",
    }
    assert slices["query:short"]["recall10_overlap"] == 1.0
    assert slices["query:long"]["cosine_min"] == pytest.approx(np.sqrt(0.5))
    assert slices["product:t"]["cosine_mean"] == pytest.approx(1.0)
    # relevance: query 0's product 0 is found by both; query 1's product 3 by both (k=4)
    assert metrics["relevant_recall10"] == metrics["relevant_recall10_reference"] == 1.0


def test_relevant_recall_counts_only_queries_with_known_products():
    top = np.array([[0, 1], [2, 3], [1, 0]])
    assert relevant_recall(top, [[1], [], [2, 0]]).tolist() == [1.0, 0.5]


def test_worst_split_decides():
    from builder.gate import SplitResult, _worst

    def result(name, value, lo):
        return SplitResult(
            name,
            "deciding",
            "",
            1,
            "",
            {},
            {"recall10_overlap": value},
            {"recall10_overlap": (lo, 1.0)},
            {},
        )

    metrics, intervals = _worst([result("a", 0.97, 0.96), result("b", 0.975, 0.94)])
    assert metrics["recall10_overlap"] == 0.97
    assert intervals["recall10_overlap"] == (0.94, 1.0)


def test_non_finite_values_fail_never_pass():
    t = {"cosine_mean": 0.995, "batch_invariance_max_abs": 0.05}
    nan = float("nan")
    assert verdict({"cosine_mean": nan, "batch_invariance_max_abs": 0.0}, t) == [
        "cosine_mean is not a finite number"
    ]
    fails = verdict(
        {"cosine_mean": 0.999, "batch_invariance_max_abs": 0.0}, t, {"cosine_mean": (nan, 1.0)}
    )
    assert fails == ["cosine_mean is not a finite number"]
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([1.0, nan, 3.0])) == -1.0


def test_a_candidate_with_nan_outputs_fails_its_split():
    from builder.data.datasets import EvalSet
    from builder.gate import Evaluator

    class Encoder:
        spec = type("Spec", (), {"pad_token_id": 0})()

        def encode(self, items):
            from artifacts.textproc import Encoded

            def enc(n):
                return Encoded(np.arange(1, n + 1), np.zeros(n, np.int64), False)

            return [enc(1 + i % 3) for i, _ in enumerate(items)]

    class Runner:
        input_names = ("input_ids", "attention_mask")

        def __call__(self, feeds):
            out = np.ones((feeds["input_ids"].shape[0], 2), np.float32)
            out[0, 0] = np.nan
            return out

    split = EvalSet(queries=["a", "b"], products=["c", "d", "e"], name="s")
    ref = np.ones((5, 2), np.float32) / np.sqrt(2)
    gate = Evaluator(
        "embedding", Encoder(), [split], [ref], {"cosine_mean": 0.9, "cosine_min": 0.9}
    ).evaluate(Runner())
    assert not gate.passed
    assert gate.failures[0] == "s: the candidate gave non-finite outputs"
    assert any("batch_invariance_min_cosine" in k for k in gate.metrics)
    from builder.gate import rounded_metrics

    assert all(np.isfinite(v) for v in rounded_metrics(gate.metrics).values())


# ---- teacher-relative task quality (the variants' gate) -----------------------------------


def test_share_and_its_paired_interval():
    from builder.gate import ratio_interval, share

    ref = np.array([1.0, 1.0, 0.0, 1.0] * 50)
    same = ref.copy()
    assert share(same, ref) == 1.0
    assert ratio_interval(same, ref) == (1.0, 1.0)  # paired: identical answers, no spread
    worse = ref.copy()
    worse[:20] = 0.0  # loses 15 of 150 hits
    lo, hi = ratio_interval(worse, ref)
    assert share(worse, ref) == pytest.approx(135 / 150)
    assert lo < 135 / 150 < hi and hi <= 1.0
    # the reference found nothing: not measurable (a gated ratio then fails), never "1.0"
    assert np.isnan(share(np.zeros(3), np.zeros(3)))
    assert all(np.isnan(ratio_interval(np.ones(3), np.zeros(3))))


def test_split_metrics_report_the_share_of_the_references_recall():
    from builder.data.datasets import EvalSet
    from builder.gate import split_metrics

    rng = np.random.default_rng(0)
    products = rng.normal(size=(40, 8))
    products /= np.linalg.norm(products, axis=1, keepdims=True)
    queries = products[:20] + rng.normal(scale=0.01, size=(20, 8))
    ref = np.vstack([queries, products])
    split = EvalSet(
        queries=[f"q{i}" for i in range(20)],
        products=[f"p{i}" for i in range(40)],
        relevant=[[i] for i in range(20)],
        query_slices=["a"] * 20,
        product_slices=["a"] * 40,
    )
    metrics, intervals, slices = split_metrics("embedding", split, ref, ref.copy())
    assert metrics["relevant_recall10_ratio"] == 1.0
    assert metrics["relevant_recall10_ratio_point"] == 1.0
    assert intervals["relevant_recall10_ratio"] == (1.0, 1.0)
    assert "relevant_recall10_ratio_point" not in intervals  # judged as measured
    shuffled = ref.copy()
    shuffled[:20] = rng.normal(size=(20, 8))  # the candidate's queries point nowhere
    metrics, intervals, slices = split_metrics("embedding", split, ref, shuffled)
    assert metrics["relevant_recall10_ratio"] < 0.6
    assert slices["query:a"]["relevant_recall10_ratio"] == metrics["relevant_recall10_ratio"]


def test_task_thresholds_judge_the_point_and_the_bound():
    from artifacts.quality import thresholds_for
    from builder.gate import verdict

    th = thresholds_for("embedding", basis="task")
    assert set(th) == {
        "relevant_recall10_ratio_point",
        "relevant_recall10_ratio",
        "batch_invariance_min_cosine",
    }
    ok = {
        "relevant_recall10_ratio": 0.975,
        "relevant_recall10_ratio_point": 0.975,
        "batch_invariance_min_cosine": 1.0,
    }
    assert verdict(ok, th, {"relevant_recall10_ratio": (0.91, 1.03)}) == []
    low_bound = verdict(ok, th, {"relevant_recall10_ratio": (0.85, 1.03)})
    assert len(low_bound) == 1 and "lower bound" in low_bound[0]
    low_point = dict(ok, relevant_recall10_ratio_point=0.94)
    assert verdict(low_point, th, {"relevant_recall10_ratio": (0.91, 1.03)}) == [
        "relevant_recall10_ratio_point 0.9400 < 0.95"
    ]
    with pytest.raises(Exception, match="unknown threshold"):
        thresholds_for("embedding", {"cosine_min": 0.9}, basis="task")
