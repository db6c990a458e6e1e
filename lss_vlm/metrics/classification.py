"""Stenosis-grade metrics: per level, pooled over levels, and for the worst grade of each case.

**Headline ``accuracy``** = pooled accuracy over every (case, level) pair whose true grade is known (``-1`` ignored):
each graded level of each case counts once. Per-level values are ``<metric>/<level>`` (e.g. ``accuracy/L4-L5``) and
worst-grade-per-case values ``<metric>/worst``; all are in ``metrics.json``.

Metrics (``y`` true grade, ``ŷ = argmax p`` predicted grade, ``G = 4`` grades):

* ``accuracy = mean(ŷ == y)``;
* ``balanced_accuracy`` = mean over the grades present in ``y`` of the per-grade recall;
* ``macro_f1`` = mean of ``F1_g = 2·TP_g / (2·TP_g + FP_g + FN_g)`` over the grades **present** in the truth or the
  prediction (:func:`present_macro_f1`). A grade absent from both is left out, not counted as 0: with RSNA 2024,
  where Normal/Mild is one class, a perfect model scores 1.0, not 0.75 (cf. torchmetrics #300, scikit-learn #23130);
* ``qwk`` = Cohen's kappa with quadratic weights ``w_ij = (i - j)² / (G - 1)²``:
  ``κ = 1 - Σ w_ij O_ij / Σ w_ij E_ij`` (``O`` observed confusion, ``E`` outer product of the marginals / N);
* ``auroc`` = one-vs-rest ROC AUC of ``p_g`` averaged over the grades that have both positives and negatives;
* ``ece`` = top-label expected calibration error with 15 equal-width confidence bins on (0, 1] (Guo et al. 2017):
  ``ECE = Σ_b (n_b / N) · |acc_b - conf_b|``, confidence = probability of the predicted grade.

Worst grade per case: over the levels with a known grade, the true worst is ``max y_l``, the predicted worst is
``max ŷ_l``, and its probability distribution (for AUROC/ECE) is ``P(worst ≤ g) = Π_l P_l(grade ≤ g)``, treating levels
as independent.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from ..constants import LEVELS, MISSING_GRADE, NUM_GRADES

ECE_BINS = 15
GRADE_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "macro_f1", "qwk", "auroc", "ece")


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE ``Σ_b (n_b / N) |acc_b - conf_b|`` over ``n_bins`` equal-width confidence bins ``((b-1)/B, b/B]``.

    ``confidence[i]`` is the probability given to prediction ``i``, ``correct[i]`` whether it was right.
    """
    if len(confidence) == 0:
        return math.nan
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        ece += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(ece)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """The bins of :func:`expected_calibration_error` for a reliability diagram (Guo et al. 2017, Fig. 1).

    Returns ``{"low", "high", "count", "confidence", "accuracy"}``, each ``[n_bins]``: bin edges ``(low, high]``,
    number of predictions, their mean confidence and their accuracy (NaN for an empty bin).
    ``ECE = Σ count·|accuracy − confidence| / Σ count`` over the non-empty bins.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(bins, weights=confidence, minlength=n_bins) / count
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {"low": edges[:-1], "high": edges[1:], "count": count, "confidence": mean_conf, "accuracy": accuracy}


def one_vs_rest_auroc(probs: np.ndarray, target: np.ndarray, num_classes: int = NUM_GRADES) -> float:
    """Mean one-vs-rest ROC AUC over the classes that have both positive and negative examples (NaN if none)."""
    from sklearn.metrics import roc_auc_score

    aucs = [
        roc_auc_score(target == g, probs[:, g]) for g in range(num_classes) if 0 < (target == g).sum() < len(target)
    ]
    return float(np.mean(aucs)) if aucs else math.nan


def quadratic_weighted_kappa(target: np.ndarray, pred: np.ndarray, num_classes: int = NUM_GRADES) -> float:
    """Cohen's kappa with quadratic weights over ``num_classes`` ordinal labels (NaN when undefined)."""
    from sklearn.metrics import cohen_kappa_score

    if len(target) == 0:
        return math.nan
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")  # undefined kappa (a single label) -> NaN
        value = cohen_kappa_score(target, pred, labels=list(range(num_classes)), weights="quadratic")
    return float(value)


def present_macro_f1(target: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray) -> float:
    """Macro-F1 over the grades present in ``target`` or ``pred`` (negative values = no grade, never a class).

    ``F1_g = 2·TP_g / (2·TP_g + FP_g + FN_g)`` averaged over ``g ∈ set(target) ∪ set(pred)``; a ``pred`` of ``-1``
    (no grade stated) is a miss of its true grade. NaN when there is no sample.
    """
    from sklearn.metrics import f1_score

    target, pred = np.asarray(target, dtype=int), np.asarray(pred, dtype=int)
    present = sorted({int(g) for g in np.concatenate([target, pred]) if g >= 0})
    if target.size == 0 or not present:
        return math.nan
    return float(f1_score(target, pred, labels=present, average="macro", zero_division=0))


def grade_scores(probs: np.ndarray, target: np.ndarray, pred: np.ndarray | None = None) -> dict[str, float]:
    """All metrics of the module docstring for graded samples ``probs [N, G]``, ``target [N]`` (no ``-1``).

    ``pred`` defaults to ``argmax(probs)``; for ECE the confidence is the probability of ``pred``.
    """
    if len(target) == 0:
        return {name: math.nan for name in GRADE_METRICS}
    from sklearn.metrics import balanced_accuracy_score  # here: an empty aggregate (metric_names) needs no sklearn

    pred = probs.argmax(axis=1) if pred is None else pred
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        balanced = balanced_accuracy_score(target, pred)
    return {
        "accuracy": float(np.mean(pred == target)),
        "balanced_accuracy": float(balanced),
        "macro_f1": present_macro_f1(target, pred),
        "qwk": quadratic_weighted_kappa(target, pred, probs.shape[1]),
        "auroc": one_vs_rest_auroc(probs, target, probs.shape[1]),
        "ece": expected_calibration_error(probs[np.arange(len(pred)), pred], pred == target),
    }


def worst_grade(probs: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Worst grade per case over the levels with a known grade.

    Args:
        probs: ``[N, L, G]`` per-level probabilities; target: ``[N, L]`` grades (``-1`` unknown).

    Returns:
        ``(worst_probs [M, G], worst_target [M], worst_pred [M])`` for the ``M`` cases with at least one known level;
        ``P(worst ≤ g) = Π_l P_l(≤ g)`` over the known levels, ``worst_pred = max_l argmax P_l``.
    """
    known = target != MISSING_GRADE
    keep = known.any(axis=1)
    probs, target, known = probs[keep], target[keep], known[keep]
    cdf = np.cumsum(probs, axis=2)
    cdf = np.where(known[:, :, None], cdf, 1.0)  # unknown levels do not constrain the maximum
    worst_cdf = np.clip(np.prod(cdf, axis=1), 0.0, 1.0)
    worst_probs = np.diff(worst_cdf, axis=1, prepend=0.0)
    worst_target = np.where(known, target, -1).max(axis=1)
    worst_pred = np.where(known, probs.argmax(axis=2), -1).max(axis=1)
    return worst_probs, worst_target, worst_pred


#: RSNA 2024 severity classes (normal/mild, moderate, severe) of each of our grades (normal, mild, moderate, severe).
RSNA_CLASS_OF_GRADE: tuple[int, ...] = (0, 0, 1, 2)
#: Sample weight of each RSNA 2024 class in the competition's log loss.
RSNA_CLASS_WEIGHTS: tuple[float, ...] = (1.0, 2.0, 4.0)
RSNA_METRICS: tuple[str, ...] = ("rsna_log_loss", "rsna_any_severe_log_loss", "rsna_score")


def rsna2024_log_loss(probs: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """The spinal-canal part of the RSNA 2024 Lumbar Spine competition metric (Kaggle, 2024).

    Our four grades fold into RSNA's three classes: ``p(normal/mild) = p(normal) + p(mild)``, ``p(moderate)``,
    ``p(severe)``; true grades 0 and 1 are normal/mild (:data:`RSNA_CLASS_OF_GRADE`).

    * ``rsna_log_loss``: sample-weighted log loss over the graded (case, level) pairs,
      ``-Σ_i w_i log p_i(y_i) / Σ_i w_i`` with ``w = 1 / 2 / 4`` for a true normal/mild / moderate / severe level;
    * ``rsna_any_severe_log_loss``: binary log loss per case of "any level severe", predicted as ``max_l p_l(severe)``,
      each case weighted by the largest weight of its levels;
    * ``rsna_score``: their mean (the competition averages these with the foraminal and subarticular terms, which this
      model does not predict). Lower is better. Computed with ``sklearn.metrics.log_loss``.

    ``probs [N, L, 4]``, ``target [N, L]`` (``-1`` unknown); NaN when nothing is graded.
    """
    known = target != MISSING_GRADE
    if not known.any():
        return dict.fromkeys(RSNA_METRICS, math.nan)
    from sklearn.metrics import log_loss

    folded = np.stack([probs[..., 0] + probs[..., 1], probs[..., 2], probs[..., 3]], axis=-1)
    folded = folded / folded.sum(axis=-1, keepdims=True)
    classes = np.where(known, np.asarray(RSNA_CLASS_OF_GRADE)[target.clip(min=0)], -1)
    weights = np.where(known, np.asarray(RSNA_CLASS_WEIGHTS)[classes.clip(min=0)], 0.0)
    level_loss = log_loss(classes[known], folded[known], sample_weight=weights[known], labels=[0, 1, 2])
    cases = known.any(axis=1)
    any_severe = ((classes == 2) & known).any(axis=1)[cases]
    p_severe = np.where(known, folded[..., 2], 0.0).max(axis=1)[cases]
    severe_loss = log_loss(any_severe, p_severe, sample_weight=weights.max(axis=1)[cases], labels=[False, True])
    return {
        "rsna_log_loss": float(level_loss),
        "rsna_any_severe_log_loss": float(severe_loss),
        "rsna_score": float((level_loss + severe_loss) / 2),
    }


class GradeMetrics:
    """Accumulates grade probabilities over a split; see the module docstring for every formula and key.

    ``aggregate()`` keys: ``<metric>`` (pooled over all graded (case, level) pairs; ``accuracy`` is the headline),
    ``<metric>/<level>`` per level, ``<metric>/worst`` for the worst grade per case, and ``n_graded``,
    ``n_graded/<level>``, ``n_graded/worst``. ``<metric>`` ∈ accuracy, balanced_accuracy, macro_f1, qwk, auroc, ece.
    Also the RSNA 2024 competition terms of :func:`rsna2024_log_loss` (``rsna_log_loss``, ``rsna_any_severe_log_loss``,
    ``rsna_score``).
    """

    def __init__(self, levels: Sequence[str] = LEVELS, num_grades: int = NUM_GRADES) -> None:
        self.levels = tuple(levels)
        self.num_grades = num_grades
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated case."""
        self._probs: list[np.ndarray] = []
        self._target: list[np.ndarray] = []

    def update(self, probs: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> None:
        """Add a batch: ``probs [N, L, G]`` (softmax probabilities, not logits), ``target [N, L]`` (``-1`` unknown)."""
        p = probs.detach().cpu().numpy() if isinstance(probs, torch.Tensor) else np.asarray(probs)
        t = target.detach().cpu().numpy() if isinstance(target, torch.Tensor) else np.asarray(target)
        p, t = p.astype(np.float64), t.astype(np.int64)
        expected = (len(self.levels), self.num_grades)
        if p.ndim != 3 or p.shape[1:] != expected or t.shape != p.shape[:2]:
            raise ValueError(
                f"expected probs [N, {expected[0]}, {expected[1]}] and target [N, {expected[0]}], "
                f"got {tuple(p.shape)} and {tuple(t.shape)}"
            )
        if p.size and not np.allclose(p.sum(axis=2), 1.0, atol=1e-3):
            raise ValueError(
                "GradeMetrics.update expects probabilities (softmax over grades), got rows not summing to 1"
            )
        if t.size and (t.min() < MISSING_GRADE or t.max() >= self.num_grades):
            raise ValueError(f"target grades must lie in [-1, {self.num_grades - 1}], got {t.min()}..{t.max()}")
        self._probs.append(p)
        self._target.append(t)

    def _stacked(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._probs:
            return np.zeros((0, len(self.levels), self.num_grades)), np.zeros((0, len(self.levels)), dtype=np.int64)
        return np.concatenate(self._probs), np.concatenate(self._target)

    def aggregate(self) -> dict[str, float]:
        """Flat dict of pooled, per-level and worst-grade metrics (NaN where no grade is known)."""
        probs, target = self._stacked()
        known = target != MISSING_GRADE
        out: dict[str, float] = {"n_graded": float(known.sum())}
        out.update(grade_scores(probs[known], target[known]))
        for j, level in enumerate(self.levels):
            rows = known[:, j]
            out[f"n_graded/{level}"] = float(rows.sum())
            out.update({f"{k}/{level}": v for k, v in grade_scores(probs[rows, j], target[rows, j]).items()})
        worst_probs, worst_target, worst_pred = worst_grade(probs, target)
        out["n_graded/worst"] = float(len(worst_target))
        out.update({f"{k}/worst": v for k, v in grade_scores(worst_probs, worst_target, worst_pred).items()})
        out.update(rsna2024_log_loss(probs, target))
        return out

    def reliability(self, n_bins: int = ECE_BINS) -> dict[str, np.ndarray]:
        """:func:`reliability_bins` of the pooled graded (case, level) pairs: the bins behind ``ece``."""
        probs, target = self._stacked()
        known = target != MISSING_GRADE
        probs, target = probs[known], target[known]
        pred = probs.argmax(axis=1)
        return reliability_bins(probs[np.arange(len(pred)), pred], pred == target, n_bins)

    def confusion_matrix(self) -> np.ndarray:
        """Pooled confusion matrix ``[G, G]`` (rows true grade, columns predicted grade) over graded pairs."""
        from sklearn.metrics import confusion_matrix as sk_confusion_matrix

        probs, target = self._stacked()
        known = target != MISSING_GRADE
        pred = probs.argmax(axis=2)
        if not known.any():  # a dataset without grades (SPIDER, Mendeley): nothing to count
            return np.zeros((self.num_grades, self.num_grades), dtype=np.int64)
        return sk_confusion_matrix(target[known], pred[known], labels=list(range(self.num_grades)))
