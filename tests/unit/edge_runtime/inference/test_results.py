"""Post-processing of the three tasks (pure): ranking, probabilities, labels."""

import numpy as np
import pytest

from edge_runtime.inference.results import predict, probabilities, rank


def test_rank_sorts_best_first_with_sigmoid_scores_and_top_n():
    logits = np.array([0.0, 2.0, -1.0, 2.0], dtype=np.float32)
    ranked = rank(logits, top_n=3, raw_scores=False)
    assert [d.index for d in ranked] == [1, 3, 0]  # ties keep request order (stable)
    assert ranked[0].score == pytest.approx(1 / (1 + np.exp(-2.0)))
    raw = rank(logits, top_n=None, raw_scores=True)
    assert [d.index for d in raw] == [1, 3, 0, 2] and raw[-1].score == -1.0


def test_probabilities_and_predictions_name_the_labels():
    probs = probabilities(np.array([[0.0, 1.0, 0.0], [3.0, 0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(probs.sum(axis=1), [1.0, 1.0], rtol=1e-6)
    preds = predict(probs, ["shoes", "phones", "pans"], top_k=2)
    assert [p.label for p in preds] == ["phones", "shoes"]
    assert list(preds[0].scores) == ["phones", "shoes"] and len(preds[1].scores) == 2
    unnamed = predict(probs, [], top_k=None)
    assert unnamed[0].label == "1" and len(unnamed[0].scores) == 3
