"""Grade metrics: hand-computed QWK and ECE, the missing-grade rule, per-level and worst-grade keys."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lss_vlm.constants import LEVELS
from lss_vlm.metrics.classification import (
    GradeMetrics,
    expected_calibration_error,
    quadratic_weighted_kappa,
    worst_grade,
)


def _one_hot(grades: np.ndarray, confidence: float = 1.0) -> np.ndarray:
    """Probabilities putting ``confidence`` on ``grades`` and the rest evenly on the other 3 grades."""
    probs = np.full((*grades.shape, 4), (1.0 - confidence) / 3)
    np.put_along_axis(probs, grades[..., None], confidence, axis=-1)
    return probs


def test_qwk_matches_hand_computed_value():
    # O: (0,0), (1,2), (2,2). Σ w·O = 1; marginals t=[1,1,1], p=[1,0,2]: Σ w·E = 15/3 = 5  ->  κ = 1 - 1/5
    assert quadratic_weighted_kappa(np.array([0, 1, 2]), np.array([0, 2, 2])) == pytest.approx(0.8)
    assert quadratic_weighted_kappa(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])) == pytest.approx(0.5)


def test_ece_matches_hand_computed_value():
    # bin (13/15, 14/15]: conf .9, acc .5 -> .4 · 2/4;  bin (8/15, 9/15]: conf .6, acc 1 -> .4 · 2/4
    confidence = np.array([0.9, 0.9, 0.6, 0.6])
    correct = np.array([True, False, True, True])
    assert expected_calibration_error(confidence, correct) == pytest.approx(0.4)
    assert expected_calibration_error(np.array([0.7, 0.7]), np.array([True, False])) == pytest.approx(0.2)


def test_pooled_accuracy_ignores_missing_grades_and_per_level_keys_exist():
    target = np.array([[0, 1, 2, 3, -1], [0, 0, 1, -1, 3]])
    pred = np.array([[0, 1, 2, 0, 3], [0, 1, 1, 2, 3]])  # wrong: (0,3), (1,1); unknown levels predicted anything
    metrics = GradeMetrics()
    metrics.update(_one_hot(pred, 0.7), target)
    out = metrics.aggregate()
    assert out["n_graded"] == 8
    assert out["accuracy"] == pytest.approx(6 / 8)
    assert out["accuracy/L4-L5"] == pytest.approx(0.0) and out["n_graded/L4-L5"] == 1
    assert out["accuracy/L1-L2"] == pytest.approx(1.0) and out["n_graded/L5-S1"] == 1
    for key in ("balanced_accuracy", "macro_f1", "qwk", "auroc", "ece"):
        assert key in out and f"{key}/{LEVELS[0]}" in out and f"{key}/worst" in out
    assert out["ece"] == pytest.approx(abs(0.75 - 0.7))
    cm = metrics.confusion_matrix()
    assert cm.shape == (4, 4) and cm.sum() == 8 and cm[3, 0] == 1 and cm[0, 1] == 1


def test_balanced_accuracy_and_macro_f1_differ_from_accuracy_on_imbalanced_grades():
    target = np.array([[0, 0, 0, 0, 3]])
    pred = np.array([[0, 0, 0, 0, 0]])
    metrics = GradeMetrics()
    metrics.update(_one_hot(pred), target)
    out = metrics.aggregate()
    assert out["accuracy"] == pytest.approx(0.8)
    assert out["balanced_accuracy"] == pytest.approx(0.5)  # recall 1 for normal, 0 for severe
    # F1(normal) = 8/9, F1(severe) = 0; mild and moderate occur in neither truth nor prediction: left out
    assert out["macro_f1"] == pytest.approx((2 * 4 / (2 * 4 + 1)) / 2)


def test_auroc_is_one_for_a_perfect_ranking_and_half_for_constant_scores():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 4, size=(30, 5))
    perfect = GradeMetrics()
    perfect.update(_one_hot(target, 0.9), target)
    assert perfect.aggregate()["auroc"] == pytest.approx(1.0)
    constant = GradeMetrics()
    constant.update(np.full((30, 5, 4), 0.25), target)
    assert constant.aggregate()["auroc"] == pytest.approx(0.5)


def test_worst_grade_uses_the_product_of_level_cdfs_over_known_levels():
    probs = np.zeros((2, 5, 4))
    probs[:, :, 0] = 1.0
    probs[0, 0] = [0.5, 0.5, 0, 0]
    probs[0, 1] = [0.5, 0.5, 0, 0]
    probs[1, 4] = [0, 0, 0, 1.0]  # level unknown for case 1: must not raise its worst grade
    target = np.array([[1, 0, 0, 0, 0], [0, 0, 2, 0, -1]])
    worst_probs, worst_target, worst_pred = worst_grade(probs, target)
    np.testing.assert_allclose(worst_probs[0], [0.25, 0.75, 0, 0])
    np.testing.assert_allclose(worst_probs[1], [1, 0, 0, 0])
    assert list(worst_target) == [1, 2] and list(worst_pred) == [0, 0]


def test_cases_without_any_known_grade_are_left_out_of_worst_grade():
    metrics = GradeMetrics()
    metrics.update(_one_hot(np.zeros((2, 5), dtype=np.int64)), np.array([[-1] * 5, [0, 0, 0, 0, 1]]))
    out = metrics.aggregate()
    assert out["n_graded/worst"] == 1 and out["accuracy/worst"] == 0.0


def test_update_rejects_logits_and_bad_shapes():
    metrics = GradeMetrics()
    with pytest.raises(ValueError, match="probabilities"):
        metrics.update(np.full((1, 5, 4), 2.0), np.zeros((1, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="expected probs"):
        metrics.update(np.full((1, 4, 4), 0.25), np.zeros((1, 4), dtype=np.int64))
    assert math.isnan(GradeMetrics().aggregate()["accuracy"])
