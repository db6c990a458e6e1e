"""The metrics registry: every key a run's ``metrics.json`` can hold, so suites and leaderboards check names early.

The keys come from the metric classes themselves (an empty :class:`SegmentationMetrics` / :class:`GradeMetrics`
aggregate lists every key they write), plus the report-text metrics of the evaluation (also with the ``composed/``
prefix) and the training summary. A new metric added to those classes is known here without any edit.
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import dataclass

from lss_vlm.errors import ConfigError


@functools.cache
def metric_names() -> frozenset[str]:
    """Every metric key a completed run can report."""
    from lss_vlm.metrics.classification import GradeMetrics
    from lss_vlm.metrics.localisation import LevelLocalisation
    from lss_vlm.metrics.segmentation import SegmentationMetrics
    from lss_vlm.metrics.text import TEXT_METRICS

    from .run_status import TRAINING_SUMMARY_KEYS

    report = (*TEXT_METRICS, "grade_f1_from_text", "cause_f1_from_text")
    names = {*SegmentationMetrics().aggregate(), *GradeMetrics().aggregate(), *TRAINING_SUMMARY_KEYS}
    names |= {*LevelLocalisation().aggregate(), "params_total", "params_trainable", "params_trainable_fraction"}
    names |= {*report, *(f"composed/{k}" for k in report), "area_mae_mm2", "area_bias_mm2", "n_cases"}
    names |= {"true_numbers/cider_x100", *EXACT_NUMBER_KEYS}
    return frozenset(names)


#: Keys of ``benchmarks.evaluation._exact_number_shares``: share of the references' numbers reproduced to the printed
#: digit by the predicted masks, then by the true masks (``true_numbers/``). Here, not in the evaluation module, so that
#: checking a config imports no evaluation stack.
EXACT_NUMBER_KEYS: tuple[str, ...] = ("area_exact", "ap_exact", "true_numbers/area_exact", "true_numbers/ap_exact")


def check_metric_name(name: str, field: str) -> str:
    """``name`` if it is a known metric key; else :class:`ConfigError` naming ``field`` and the closest keys."""
    known = metric_names()
    if name in known:
        return name
    close = difflib.get_close_matches(name, sorted(known), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "see docs/metrics.md for the metric keys"
    raise ConfigError(f"{field}: unknown metric {name!r}; {hint}")


#: One line per metric family (the key before ``/``, or the whole key): what it measures and the class that computes it.
METRIC_FAMILIES: dict[str, tuple[str, str]] = {
    "dice": ("Dice overlap 2|P∩T|/(|P|+|T|)", "lss_vlm.metrics.segmentation.SegmentationMetrics"),
    "iou": ("intersection over union |P∩T|/|P∪T|", "lss_vlm.metrics.segmentation.SegmentationMetrics"),
    "hd95": ("95th-percentile Hausdorff distance between mask borders, mm", "lss_vlm.metrics.segmentation"),
    "msd": ("symmetric mean surface distance, mm", "lss_vlm.metrics.segmentation.SegmentationMetrics"),
    "area_mae": ("mean |predicted - true| area, mm²", "lss_vlm.metrics.segmentation.SegmentationMetrics"),
    "area_ratio": ("predicted / true area", "lss_vlm.metrics.segmentation.SegmentationMetrics"),
    "n": ("images counted for the class (empty-class rule)", "lss_vlm.metrics.segmentation.SegmentationMetrics"),
    "n_images": ("images scored", "lss_vlm.metrics.segmentation.SegmentationMetrics"),
    "accuracy": ("stenosis grade accuracy", "lss_vlm.metrics.classification.GradeMetrics"),
    "balanced_accuracy": ("mean per-grade recall", "lss_vlm.metrics.classification.GradeMetrics"),
    "macro_f1": ("mean per-grade F1", "lss_vlm.metrics.classification.GradeMetrics"),
    "qwk": ("quadratic weighted kappa of the grades", "lss_vlm.metrics.classification.GradeMetrics"),
    "auroc": ("one-vs-rest ROC AUC of the grade probabilities", "lss_vlm.metrics.classification.GradeMetrics"),
    "ece": ("expected calibration error (15 bins, top label)", "lss_vlm.metrics.classification.GradeMetrics"),
    "n_graded": ("(case, level) pairs with a known grade", "lss_vlm.metrics.classification.GradeMetrics"),
    "bleu_1": ("BLEU-1 of the generated report (pycocoevalcap)", "benchmarks.evaluation"),
    "bleu_2": ("BLEU-2 of the generated report (pycocoevalcap)", "benchmarks.evaluation"),
    "bleu_3": ("BLEU-3 of the generated report (pycocoevalcap)", "benchmarks.evaluation"),
    "bleu_4": ("BLEU-4 of the generated report (pycocoevalcap)", "benchmarks.evaluation"),
    "cider": ("CIDEr-D of the generated report (pycocoevalcap)", "benchmarks.evaluation"),
    "cider_x100": ("CIDEr-D x 100 (the scale papers print)", "benchmarks.evaluation"),
    "meteor": ("METEOR 1.5 of the generated report", "benchmarks.evaluation"),
    "rouge_l": ("ROUGE-L of the generated report", "benchmarks.evaluation"),
    "grade_f1_from_text": ("macro F1 of the grades read back from the report text", "benchmarks.evaluation"),
    "cause_f1_from_text": (
        "micro F1 of the causes the report states at each stenotic level (lss_vlm.metrics.text.extract_causes)",
        "benchmarks.evaluation",
    ),
    "n_cases": ("test cases scored", "benchmarks.evaluation"),
    "area_mae_mm2": ("mean |measured - true| dural-sac area per level, mm²", "lss_vlm.reports.composer"),
    "true_numbers/cider_x100": (
        "CIDEr-D x 100 of the generated reports with the numbers measured on the true masks: the text alone",
        "benchmarks.evaluation",
    ),
    "area_bias_mm2": (
        "mean (measured - true) dural-sac area per level, mm²: > 0 the sac is over-segmented",
        "lss_vlm.reports.composer",
    ),
    "area_exact": (
        "fraction (0-1) of the dural-sac areas the cases' first references quote, over all levels, that the predicted "
        "masks reproduce to the integer mm² (NaN: nothing measured)",
        "benchmarks.evaluation",
    ),
    "ap_exact": (
        "fraction (0-1) of the AP diameters the cases' first references quote, over all levels, that the predicted "
        "masks reproduce to 0.1 mm (NaN: nothing measured)",
        "benchmarks.evaluation",
    ),
    "true_numbers/area_exact": (
        "area_exact of the true masks, resampled and measured like a prediction (eval.measure_on): the route's limit",
        "benchmarks.evaluation",
    ),
    "true_numbers/ap_exact": (
        "ap_exact of the true masks, resampled and measured like a prediction (eval.measure_on): the route's limit",
        "benchmarks.evaluation",
    ),
    "best_epoch": ("epoch of the best validation score", "benchmarks.runner"),
    "epochs_run": ("epochs trained", "benchmarks.runner"),
    "early_stopped": ("1 when early stopping ended the run", "benchmarks.runner"),
    "loc_mean_mm": ("mean distance of the predicted level centre to the reference, mm", "lss_vlm.metrics.localisation"),
    "loc_median_mm": (
        "median distance of the predicted level centre to the reference, mm",
        "lss_vlm.metrics.localisation",
    ),
    "loc_hit": ("share of levels whose predicted centre lies within the distance", "lss_vlm.metrics.localisation"),
    "n_loc": ("levels with a reference point (localisation)", "lss_vlm.metrics.localisation"),
    "loc_detected": ("share of reference levels the predicted masks located", "lss_vlm.metrics.localisation"),
    "rsna_log_loss": ("RSNA 2024 weighted log loss (1/2/4) of the canal grades", "lss_vlm.metrics.classification"),
    "rsna_any_severe_log_loss": ("RSNA 2024 any-severe log loss per case", "lss_vlm.metrics.classification"),
    "rsna_score": ("mean of the two RSNA 2024 canal terms", "lss_vlm.metrics.classification"),
    "params_total": ("model parameters", "lss_vlm.models.lora"),
    "params_trainable": ("trainable model parameters", "lss_vlm.models.lora"),
    "params_trainable_fraction": ("trainable / total parameters", "lss_vlm.models.lora"),
}


def describe_metric(name: str) -> tuple[str, str]:
    """``(one-line description, source)`` of a metric key: its family's line plus the class / level / flavour."""
    if name in METRIC_FAMILIES:  # a key described whole, e.g. true_numbers/cider_x100
        return METRIC_FAMILIES[name]
    composed = name.startswith("composed/")
    key = name.removeprefix("composed/")
    family, _, part = key.partition("/")
    if family.startswith("loc_hit@"):
        family, part = "loc_hit", family.removeprefix("loc_hit@")
    if family.endswith("_macro") and not part:
        family, part = family.removesuffix("_macro"), "mean over classes"
    text, source = METRIC_FAMILIES.get(family, ("", "benchmarks.metric_names"))
    if part == "worst":
        part = "worst grade per case"
    elif part and family in ("accuracy", "balanced_accuracy", "macro_f1", "qwk", "auroc", "ece", "n_graded"):
        part = f"level {part}"
    text = f"{text} ({part})" if part and text else text
    if composed:
        text = f"{text}, of the report composed from the predicted masks"
        source = "lss_vlm.reports.composer"
    return text, source


# ------------------------------------------------------------------------------------------------------ display
_LOWER_IS_BETTER = ("hd95", "msd", "ece", "mae", "loss", "brier", "loc_mean_mm", "loc_median_mm", "rsna_score")


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is shown: label, direction (↑ higher is better / ↓ lower is better) and decimals."""

    key: str
    label: str
    short: str
    higher_is_better: bool
    digits: int = 3

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @property
    def header(self) -> str:
        return f"{self.label} {self.arrow}"

    @property
    def short_header(self) -> str:
        return f"{self.short} {self.arrow}"


_KNOWN_METRICS: dict[str, tuple[str, str, int]] = {  # key: (label, short label for the terminal, decimals)
    "dice_macro": ("Dice (macro)", "Dice", 3),
    "dice/ligamentum_flavum": ("Dice ligamentum flavum", "Dice LF", 3),
    "dice/thecal_sac": ("Dice thecal sac", "Dice TS", 3),
    "iou_macro": ("IoU (macro)", "IoU", 3),
    "hd95_macro": ("HD95 mm", "HD95", 2),
    "msd_macro": ("MSD mm", "MSD", 2),
    "accuracy": ("Grade acc.", "Acc", 3),
    "balanced_accuracy": ("Grade bal. acc.", "BalAcc", 3),
    "macro_f1": ("Grade macro-F1", "F1", 3),
    "qwk": ("Grade QWK", "QWK", 3),
    "auroc": ("Grade AUROC", "AUROC", 3),
    "ece": ("Grade ECE", "ECE", 3),
    "cider": ("CIDEr", "CIDEr", 3),
    "cider_x100": ("CIDEr×100", "CIDEr×100", 1),
    "composed/cider_x100": ("Composed CIDEr×100", "cCIDEr", 1),
    "rouge_l": ("ROUGE-L", "ROUGE-L", 3),
    "meteor": ("METEOR", "METEOR", 3),
    "bleu_4": ("BLEU-4", "BLEU-4", 3),
    "bertscore_f1": ("BERTScore F1 (MiniLM, raw)", "BERTS", 3),
    "grade_f1_from_text": ("Report grade-F1", "RepF1", 3),
    "composed/grade_f1_from_text": ("Composed grade-F1", "cRepF1", 3),
    "cause_f1_from_text": ("Report cause-F1", "CauseF1", 3),
    "composed/cause_f1_from_text": ("Composed cause-F1", "cCauseF1", 3),
    "area_mae_mm2": ("Area MAE mm²", "AreaMAE", 1),
    "true_numbers/cider_x100": ("Text alone CIDEr×100", "tCIDEr", 1),
    "area_exact": ("Area exact", "AreaEx", 3),
    "ap_exact": ("AP exact", "APEx", 3),
    "true_numbers/area_exact": ("True masks' area exact", "tAreaEx", 3),
    "true_numbers/ap_exact": ("True masks' AP exact", "tAPEx", 3),
}


def metric_info(key: str) -> MetricInfo:
    """Display info of a metric key; unknown keys get their key as label and a direction guessed from the name."""
    higher = not any(token in key for token in _LOWER_IS_BETTER)
    if key in _KNOWN_METRICS:
        label, short, digits = _KNOWN_METRICS[key]
    elif "/" in key:
        kind, name = key.split("/", 1)
        label, short, digits = f"{kind} {name.replace('_', ' ')}", key, 3
    else:
        label, short, digits = key, key, 3
    return MetricInfo(key=key, label=label, short=short, higher_is_better=higher, digits=digits)


#: Metric families whose values are fractions in [0, 1] (Dice, IoU, accuracies, F1, AUROC, ECE, text overlaps).
_UNIT_INTERVAL = (
    "dice", "iou", "accuracy", "balanced_accuracy", "macro_f1", "auroc", "ece", "bleu_1", "bleu_2", "bleu_3",
    "bleu_4", "meteor", "rouge_l", "bertscore_f1", "grade_f1_from_text", "cause_f1_from_text", "loc_hit",
    "loc_detected", "area_exact", "ap_exact",
)  # fmt: skip


def metric_bounds(key: str) -> tuple[float, float]:
    """The range a metric's values can take: [0, 1] for fractions, [-1, 1] for QWK, [0, inf) for distances, areas,
    CIDEr and losses, else unbounded. A confidence interval is clipped to it (a t-interval over 3 spread seeds of a
    Dice can reach below 0, which no Dice can)."""
    for prefix in ("composed/", "reference/", "true_numbers/"):
        key = key.removeprefix(prefix)
    family = key.partition("/")[0].removesuffix("_macro")
    family = "loc_hit" if family.startswith("loc_hit@") else family
    if family in _UNIT_INTERVAL:
        return 0.0, 1.0
    if family == "qwk":
        return -1.0, 1.0
    if family in ("hd95", "msd", "area_mae", "area_mae_mm2", "area_ratio", "cider", "cider_x100", "loc_mean_mm",
                  "loc_median_mm", "rsna_score", "measured_cider_x100") or "loss" in family:  # fmt: skip
        return 0.0, math.inf
    return -math.inf, math.inf
