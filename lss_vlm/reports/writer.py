"""Reference report writer: radiologist-style reports written from ground-truth grades and measurements.

Used by the phantom (several reference reports per case) and by real-dataset adapters that have grades but
no reports (RSNA 2024). The vocabulary is deliberately the one the grade extractor (:mod:`lss_vlm.metrics.text`)
understands.

**Paraphrases of one template.** The ``n`` references of a case state the *same facts* in the *same order* (one
sentence per level: grade, causes, dural-sac area and AP diameter, then an impression), as several radiologists filling
in one structured-reporting template would. What varies is the wording, never the length in tokens:

* the finding: ``spinal canal stenosis`` / ``central canal stenosis`` / ``spinal canal narrowing``;
* the area phrase: ``dural sac area`` / ``thecal sac area`` / ``dural sac CSA``; the AP phrase: ``AP diameter`` /
  ``anteroposterior diameter`` / ``sagittal diameter``; and whether the area or the diameter comes first;
* the cause link (``due to`` / ``owing to`` / ``secondary to``) and the order of the causes;
* the impression header (``Impression:`` / ``Conclusion:`` / ``Summary:``).

Every choice swaps phrases of equal PTB-token length, so the references of a case have exactly the same length:
CIDEr-D's Gaussian length penalty (σ = 6 tokens, Vedantam et al. 2015) then compares content, not templates (the
previous writer's structured / prose / compact styles, 75 / 104 / 30 words, scored 0.1-0.4 CIDEr×100 against each
other). Levels are written ``L4-L5``, areas ``<n> mm2`` (integer), AP diameters ``<x.x> mm``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence

import numpy as np

from ..constants import GRADES, LEVELS, MISSING_GRADE

FINDING_PHRASES: tuple[str, ...] = ("spinal canal stenosis", "central canal stenosis", "spinal canal narrowing")
AREA_PHRASES: tuple[str, ...] = ("dural sac area", "thecal sac area", "dural sac CSA")
AP_PHRASES: tuple[str, ...] = ("AP diameter", "anteroposterior diameter", "sagittal diameter")
CAUSE_LINKS: tuple[str, ...] = ("due to", "owing to", "secondary to")
IMPRESSION_HEADERS: tuple[str, ...] = ("Impression:", "Conclusion:", "Summary:")
CAUSE_PHRASES: dict[str, str] = {
    "disc_bulge": "a disc bulge",
    "ligamentum_flavum_thickening": "ligamentum flavum thickening",
    "facet_hypertrophy": "facet hypertrophy",
}


def format_area(area: float | None) -> str | None:
    """``"63 mm2"`` (integer mm²), or None when unknown (None / NaN)."""
    return None if area is None or not np.isfinite(area) else f"{float(area):.0f} mm2"


def format_ap(ap: float | None) -> str | None:
    """``"8.1 mm"`` (one decimal), or None when unknown (None / NaN)."""
    return None if ap is None or not np.isfinite(ap) else f"{float(ap):.1f} mm"


def _causes(level: str, findings: Mapping[str, Sequence[str]] | None, link: str = "due to", order=None) -> str:
    causes = [CAUSE_PHRASES[c] for c in (findings or {}).get(level, ()) if c in CAUSE_PHRASES]
    if not causes:
        return ""
    if order is not None:
        causes = [causes[i] for i in order(len(causes))]
    joined = causes[0] if len(causes) == 1 else ", ".join(causes[:-1]) + " and " + causes[-1]
    return f" {link} {joined}"


def measurement_phrase(
    area: str | None,
    ap: str | None,
    area_phrase: str = "dural sac area",
    ap_phrase: str = "AP diameter",
    ap_first=False,
) -> str:
    """``"; dural sac area 63 mm2, AP diameter 8.1 mm."`` (what is known; ``"."`` when nothing is)."""
    parts = [f"{area_phrase} {area}"] if area else []
    if ap:
        parts.insert(0 if ap_first else len(parts), f"{ap_phrase} {ap}")
    return f"; {', '.join(parts)}." if parts else "."


def level_sentence(level: str, grade: int, finding: str, causes: str, measurements: str) -> str:
    """``"L4-L5: moderate spinal canal stenosis due to a disc bulge; dural sac area 63 mm2, AP diameter 8.1 mm."``"""
    if grade == MISSING_GRADE:
        return f"{level}: not assessed."
    head = f"{level}: no {finding}" if grade == 0 else f"{level}: {GRADES[grade]} {finding}{causes}"
    return head + measurements


def _impression(grades: Sequence[int], finding: str, header: str = "Impression:") -> str:
    graded = [(g, lv) for g, lv in zip(grades, LEVELS) if g not in (MISSING_GRADE, 0)]
    if not graded:
        return f"{header} no {finding} at any lumbar level."
    worst = max(g for g, _ in graded)
    at = [lv for g, lv in graded if g == worst]
    return f"{header} {GRADES[worst]} {finding} at {' and '.join(at)}."


def write_reports(
    grades: Sequence[int],
    areas: Sequence[float | None] | None = None,
    rng: np.random.Generator | None = None,
    n: int = 3,
    findings: Mapping[str, Sequence[str]] | None = None,
    ap_diameters: Sequence[float | None] | None = None,
) -> list[str]:
    """Write ``n`` distinct reference reports of one case: paraphrases of the same facts, of equal length.

    Args:
        grades: one grade index per level of :data:`LEVELS` (``-1`` = not assessed).
        areas: dural-sac area in mm² per level (``None``/NaN = unknown, then no area is quoted).
        rng: source of phrasing variation (deterministic given its seed); default ``np.random.default_rng(0)``.
        n: number of reports (up to 162 distinct wordings); see the module docstring for what varies.
        findings: optional ``{level: [cause, ...]}`` with causes from :data:`CAUSE_PHRASES`.
        ap_diameters: antero-posterior diameter of the dural sac in mm per level (``None``/NaN = not quoted).

    Raises:
        ValueError: ``grades`` (or ``areas`` / ``ap_diameters``) does not have one entry per level.
    """
    if len(grades) != len(LEVELS):
        raise ValueError(f"expected {len(LEVELS)} grades (one per level), got {len(grades)}")
    areas = list(areas) if areas is not None else [None] * len(LEVELS)
    aps = list(ap_diameters) if ap_diameters is not None else [None] * len(LEVELS)
    if len(areas) != len(LEVELS) or len(aps) != len(LEVELS):
        raise ValueError(f"expected {len(LEVELS)} areas and AP diameters, got {len(areas)} and {len(aps)}")
    rng = rng if rng is not None else np.random.default_rng(0)
    wordings = list(itertools.product(range(3), range(3), range(3), range(3), range(2), range(3)))
    picks = rng.permutation(len(wordings))[:n]
    reports = []
    for pick in picks:
        f, a, p, link, ap_first, header = wordings[int(pick)]
        finding = FINDING_PHRASES[f]

        def order(k: int) -> list[int]:
            return [int(i) for i in rng.permutation(k)]

        sentences = [
            level_sentence(
                level,
                int(grades[j]),
                finding,
                _causes(level, findings, CAUSE_LINKS[link], order),
                measurement_phrase(format_area(areas[j]), format_ap(aps[j]), AREA_PHRASES[a], AP_PHRASES[p], ap_first),
            )
            for j, level in enumerate(LEVELS)
        ]
        reports.append(" ".join(sentences + [_impression(grades, finding, IMPRESSION_HEADERS[header])]))
    return reports


_LEVEL_START = re.compile(r"\b(L\d-[LS]\d):")
_HEADER_START = re.compile(r"\s+[A-Z][a-z]+:")


def level_sentences(report: str) -> dict[str, str]:
    """The sentence of each level in a report of this writer's template (the inverse of :func:`level_sentence`).

    A level's sentence runs from ``"L4-L5:"`` to the next level's ``"Lx-Ly:"``, or, for the last one, to the
    impression header (``"Impression:"``, any capitalised word and a colon). Levels are keyed as in :data:`LEVELS`;
    a level named twice keeps its first sentence; a report without ``"Lx-Ly:"`` gives ``{}``.

    >>> level_sentences("L1-L2: no stenosis. L2-L3: mild stenosis. Impression: mild stenosis at L2-L3.")
    {'L1-L2': 'L1-L2: no stenosis.', 'L2-L3': 'L2-L3: mild stenosis.'}
    """
    starts = list(_LEVEL_START.finditer(report or ""))
    sentences: dict[str, str] = {}
    for k, match in enumerate(starts):
        end = starts[k + 1].start() if k + 1 < len(starts) else len(report)
        piece = report[match.start() : end]
        header = _HEADER_START.search(piece, len(match[0]))
        sentence = (piece[: header.start()] if header else piece).strip()
        level = match[1].upper()
        if level in LEVELS and level not in sentences:
            sentences[level] = sentence
    return sentences
