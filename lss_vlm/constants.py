"""Shared vocabulary of the toolkit: labels, disc levels, views and stenosis grades.

Every module that names a label, a level, a view or a grade imports it from here, so the
manifest, the model heads, the metrics and the report writer always agree.
"""

from __future__ import annotations

import math

#: Segmentation labels, index = label value in every mask.
LABELS: tuple[str, ...] = (
    "background",
    "vertebral_body",
    "disc",
    "thecal_sac",
    "posterior_elements",
    "ligamentum_flavum",
)
NUM_LABELS = len(LABELS)
FOREGROUND_LABELS: tuple[str, ...] = LABELS[1:]
LABEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(LABELS)}
#: Mask value of "not annotated" pixels in prepared masks and batches: no loss gradient, never scored.
IGNORE_LABEL = 255

#: Lumbar disc levels, cranial to caudal. Index = position in the grade vector.
LEVELS: tuple[str, ...] = ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")
NUM_LEVELS = len(LEVELS)

#: Stenosis grades, ordinal. Index = class id of the grade head.
GRADES: tuple[str, ...] = ("normal", "mild", "moderate", "severe")
NUM_GRADES = len(GRADES)
MISSING_GRADE = -1  # grade not annotated (ignored by losses and metrics)

#: Dural-sac cross-sectional area cut-offs in mm² (lower bounds of normal, mild, moderate).
#: normal > 100, mild 76-100, moderate 50-75, severe < 50 (Hamanishi et al. 1994 style).
AREA_CUTOFFS_MM2: tuple[float, float, float] = (100.0, 75.0, 50.0)


def level_key(level: str) -> str:
    """File/column-safe form of a level name: ``"L4-L5" -> "l4_l5"``."""
    return level.lower().replace("-", "_")


#: Views of one case: two mid-sagittal slices plus one axial T2 per disc level.
SAGITTAL_VIEWS: tuple[str, ...] = ("sag_t1", "sag_t2")
AXIAL_VIEWS: tuple[str, ...] = tuple(f"ax_{level_key(lv)}" for lv in LEVELS)
VIEWS: tuple[str, ...] = SAGITTAL_VIEWS + AXIAL_VIEWS
NUM_VIEWS = len(VIEWS)
AXIAL_VIEW_OF_LEVEL: dict[str, str] = dict(zip(LEVELS, AXIAL_VIEWS))

#: Clinical table columns, in the order of the ``clinical`` tensor.
CLINICAL_COLUMNS: tuple[str, ...] = ("age", "sex", "bmi", "symptom_months", "claudication", "odi")
#: Contributing causes of a stenotic level, in this order wherever they are a vector (the cause head, ``causes``).
CAUSES: tuple[str, ...] = ("disc_bulge", "ligamentum_flavum_thickening", "facet_hypertrophy")
NUM_CAUSES = len(CAUSES)
#: Manifest column with the causes per stenotic level, JSON ``{"L4-L5": ["disc_bulge", ...]}`` (the phantom writes it).
FINDINGS_COLUMN = "meta_findings"
#: Prefix of extra numeric clinical columns a manifest may carry (``clinical_egfr``, ``clinical_pain_vas``, ...).
CLINICAL_PREFIX = "clinical_"


def grade_from_area(area_mm2: float) -> int:
    """Stenosis grade (index into :data:`GRADES`) of a dural-sac cross-sectional area in mm².

    ``area > 100`` normal, ``75 < area <= 100`` mild, ``50 <= area <= 75`` moderate, ``area < 50`` severe.
    """
    if not math.isfinite(area_mm2) or area_mm2 < 0:
        raise ValueError(f"dural-sac area must be a finite, non-negative number of mm², got {area_mm2!r}")
    normal, mild, moderate = AREA_CUTOFFS_MM2
    if area_mm2 > normal:
        return 0
    if area_mm2 > mild:
        return 1
    if area_mm2 >= moderate:
        return 2
    return 3
