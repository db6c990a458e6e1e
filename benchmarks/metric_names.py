"""The metrics registry: every key a run's ``metrics.json`` can hold, so suites and leaderboards check names early.

The keys come from the metric classes themselves (an empty :class:`SegmentationMetrics` / :class:`GradeMetrics`
aggregate lists every key they write), plus the report-text metrics of the evaluation (also with the ``composed/``
prefix) and the training summary. A new metric added to those classes is known here without any edit.
"""

from __future__ import annotations

import difflib
import functools

from lss_vlm.errors import ConfigError


@functools.cache
def metric_names() -> frozenset[str]:
    """Every metric key a completed run can report."""
    from lss_vlm.metrics.classification import GradeMetrics
    from lss_vlm.metrics.localisation import LevelLocalisation
    from lss_vlm.metrics.segmentation import SegmentationMetrics

    from .evaluation import TEXT_METRIC_KEYS
    from .runner import TRAINING_SUMMARY_KEYS

    report = (*TEXT_METRIC_KEYS, "grade_f1_from_text")
    names = {*SegmentationMetrics().aggregate(), *GradeMetrics().aggregate(), *TRAINING_SUMMARY_KEYS}
    names |= {*LevelLocalisation().aggregate(), "params_total", "params_trainable", "params_trainable_fraction"}
    names |= {*report, *(f"composed/{k}" for k in report), "area_mae_mm2", "n_cases"}
    return frozenset(names)


def check_metric_name(name: str, field: str) -> str:
    """``name`` if it is a known metric key; else :class:`ConfigError` naming ``field`` and the closest keys."""
    known = metric_names()
    if name in known:
        return name
    close = difflib.get_close_matches(name, sorted(known), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "see docs/metrics.md for the metric keys"
    raise ConfigError(f"{field}: unknown metric {name!r}; {hint}")
