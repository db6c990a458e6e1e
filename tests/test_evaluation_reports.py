"""The evaluation's report scores read against the ceilings: the measurement ceiling and the text alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import requires_java

from benchmarks.evaluation import CaseResult, _report_metrics
from lss_vlm.constants import LEVELS
from lss_vlm.reports.vocabulary import remeasure
from lss_vlm.reports.writer import write_reports


def _case(k: int, shift: float) -> CaseResult:
    """Case k: three references; the generated text is the first reference with every area off by ``shift`` mm² and
    every AP diameter by ``shift`` / 10 mm."""
    rng = np.random.default_rng(k)
    grades = [int(g) for g in rng.integers(0, 4, len(LEVELS))]
    areas = [float(a) for a in rng.uniform(40, 160, len(LEVELS))]
    aps = [float(d) for d in rng.uniform(4, 13, len(LEVELS))]
    refs = write_reports(grades, areas, rng, n=3, ap_diameters=aps)
    truth = {lv: {"area_mm2": a, "ap_mm": d} for lv, a, d in zip(LEVELS, areas, aps)}
    predicted = {lv: {"area_mm2": a + shift, "ap_mm": d + shift / 10} for lv, a, d in zip(LEVELS, areas, aps)}
    return CaseResult(
        case_id=f"c{k}",
        generated=remeasure(refs[0], predicted),
        references=refs,
        true_grades=grades,
        true_areas=areas,
        composed=remeasure(refs[1], predicted),
        measured_references=[remeasure(r, truth) for r in refs],
        measurements=predicted,
        true_measurements=truth,
    )


@requires_java()
def test_text_alone_and_the_measurement_ceiling_are_scored_beside_the_generated_reports():
    cases = [_case(k, shift=7.0) for k in range(4)]
    metrics = _report_metrics(cases, text_metrics=True)
    # the true masks' numbers give back the first reference: the text alone scores like a held-out reference
    assert metrics["true_numbers/cider_x100"] > 2 * metrics["cider_x100"]
    assert metrics["reference/measured_cider_x100"] == pytest.approx(metrics["reference/cider_x100"])
    assert metrics["area_mae_mm2"] == pytest.approx(7.0) and metrics["area_bias_mm2"] == pytest.approx(7.0)
    exact = _report_metrics([_case(k, shift=0.0) for k in range(4)], text_metrics=True)
    assert exact["true_numbers/cider_x100"] == pytest.approx(exact["cider_x100"])
    off = _report_metrics([_case(k, shift=-3.0) for k in range(4)], text_metrics=False)
    assert math.isnan(off["true_numbers/cider_x100"]) and off["area_bias_mm2"] == pytest.approx(-3.0)
    assert metrics["area_exact"] == 0.0 and metrics["ap_exact"] == 0.0  # every number off by 7 mm² / 0.7 mm
    assert metrics["true_numbers/area_exact"] == 1.0 and metrics["true_numbers/ap_exact"] == 1.0
    assert exact["area_exact"] == 1.0 and exact["ap_exact"] == 1.0
