"""Reference report writer: radiologist-style reports written from ground-truth grades and areas.

Used by the phantom (several reference reports per case) and by real-dataset adapters that have grades but
no reports (RSNA 2024). Each report names every level's grade and, when known, the dural-sac area in mm2.
The vocabulary is deliberately the one the grade extractor (:mod:`lss_vlm.metrics.text`) understands:

* grade words: ``no`` / ``normal`` (grade 0), ``mild``, ``moderate``, ``severe``;
* the finding: ``spinal canal stenosis``, ``central canal stenosis``, ``central stenosis`` or ``canal narrowing``;
* levels written as ``L4-L5`` (``L5-S1``); areas as ``<n> mm2``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..constants import GRADES, LEVELS, MISSING_GRADE

FINDING_PHRASES: tuple[str, ...] = ("spinal canal stenosis", "central canal stenosis", "central stenosis")
AREA_PHRASES: tuple[str, ...] = ("dural sac area", "dural sac cross-sectional area", "thecal sac area")
CAUSE_PHRASES: dict[str, str] = {
    "disc_bulge": "a disc bulge",
    "ligamentum_flavum_thickening": "ligamentum flavum thickening",
    "facet_hypertrophy": "facet hypertrophy",
}


def _area(area: float | None) -> str | None:
    return None if area is None or not np.isfinite(area) else f"{float(area):.0f} mm2"


def _causes(level: str, findings: Mapping[str, Sequence[str]] | None) -> str:
    causes = [CAUSE_PHRASES[c] for c in (findings or {}).get(level, ()) if c in CAUSE_PHRASES]
    if not causes:
        return ""
    joined = causes[0] if len(causes) == 1 else ", ".join(causes[:-1]) + " and " + causes[-1]
    return f" due to {joined}"


def _level_sentence(
    style: int, level: str, grade: int, area: float | None, finding: str, area_phrase: str, causes: str
) -> str:
    a = _area(area)
    if grade == MISSING_GRADE:
        return f"{level}: not assessed."
    word = GRADES[grade]
    if style == 0:  # structured list
        head = f"{level}: no {finding}" if grade == 0 else f"{level}: {word} {finding}{causes}"
        return head + (f"; {area_phrase} {a}." if a else ".")
    if style == 1:  # prose
        if grade == 0:
            body = f"At {level} there is no {finding}"
        else:
            body = f"At {level} there is {word} {finding}{causes}"
        return body + (f", with a {area_phrase} of {a}." if a else ".")
    # style 2: compact
    label = "normal" if grade == 0 else f"{word} stenosis"
    return f"{level} {label}" + (f" ({a})." if a else ".")


def _impression(grades: Sequence[int], finding: str) -> str:
    graded = [(g, lv) for g, lv in zip(grades, LEVELS) if g not in (MISSING_GRADE, 0)]
    if not graded:
        return f"Impression: no {finding} at any lumbar level."
    worst = max(g for g, _ in graded)
    at = [lv for g, lv in graded if g == worst]
    return f"Impression: {GRADES[worst]} {finding} at {' and '.join(at)}."


def write_reports(
    grades: Sequence[int],
    areas: Sequence[float | None] | None = None,
    rng: np.random.Generator | None = None,
    n: int = 3,
    findings: Mapping[str, Sequence[str]] | None = None,
) -> list[str]:
    """Write ``n`` reference reports with varied phrasing for one case.

    Args:
        grades: one grade index per level of :data:`LEVELS` (``-1`` = not assessed).
        areas: dural-sac area in mm² per level (``None``/NaN = unknown, then no area is quoted).
        rng: source of phrasing variation (deterministic given its seed); default ``np.random.default_rng(0)``.
        n: number of reports; styles cycle (structured, prose, compact) and synonyms vary.
        findings: optional ``{level: [cause, ...]}`` with causes from :data:`CAUSE_PHRASES`.
    """
    if len(grades) != len(LEVELS):
        raise ValueError(f"expected {len(LEVELS)} grades (one per level), got {len(grades)}")
    areas = list(areas) if areas is not None else [None] * len(LEVELS)
    rng = rng if rng is not None else np.random.default_rng(0)
    reports = []
    for i in range(n):
        style = i % 3
        finding = FINDING_PHRASES[int(rng.integers(len(FINDING_PHRASES)))]
        area_phrase = AREA_PHRASES[int(rng.integers(len(AREA_PHRASES)))]
        order = list(range(len(LEVELS)))
        if style == 2:  # compact reports list the worst levels first, like a busy reader would
            order.sort(key=lambda j: -grades[j])
        sentences = [
            _level_sentence(
                style, LEVELS[j], int(grades[j]), areas[j], finding, area_phrase, _causes(LEVELS[j], findings)
            )
            for j in order
        ]
        reports.append(" ".join(sentences + [_impression(grades, finding)]))
    return reports
