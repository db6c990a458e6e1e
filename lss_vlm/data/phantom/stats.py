"""How hard is the phantom? Class pixel shares, grade prevalence and sac-area ranges, measured from the files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from ...constants import AXIAL_VIEW_OF_LEVEL, GRADES, LABEL_INDEX, LABELS, LEVELS, VIEWS, level_key
from ..manifest import read_manifest, resolve

SAC = LABEL_INDEX["thecal_sac"]


def _counts(path: Path) -> np.ndarray:
    mask = np.asanyarray(nib.load(path).dataobj)
    return np.bincount(mask.ravel().astype(np.int64), minlength=len(LABELS))[: len(LABELS)]


def _shares(counts: np.ndarray) -> dict[str, float]:
    return {name: float(c / max(counts.sum(), 1)) for name, c in zip(LABELS, counts)}


def phantom_stats(manifest_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Measure a manifest's masks and labels.

    Returns a dict with ``class_share`` (pixel share of each label over all views, and per view type
    ``sagittal``/``axial``; every view a model sees counts once), ``sac_share_by_grade`` (thecal-sac share of the
    axial view, mean and max per grade), ``grade_prevalence`` (``overall`` and per level), ``grade_counts``,
    ``area_mm2_by_grade`` (min/max/mean/n of the stored areas), ``area_mask_max_abs_diff_mm2`` (stored area vs.
    sac pixels × pixel area), ``split_cases`` and ``n_cases``.
    """
    manifest_path = Path(manifest_path)
    df = read_manifest(manifest_path)
    root = manifest_path.parent
    totals = {"sagittal": np.zeros(len(LABELS)), "axial": np.zeros(len(LABELS))}
    sac_share: dict[str, list[float]] = {g: [] for g in GRADES}
    area_diff = 0.0
    cache: dict[Path, np.ndarray] = {}
    for _, row in df.iterrows():
        for view in VIEWS:
            path = resolve(root, row.get(f"seg_{view}"))
            if path is None:
                continue
            if path not in cache:
                cache[path] = _counts(path)
            totals["sagittal" if view.startswith("sag") else "axial"] += cache[path]
        for level in LEVELS:
            key, path = level_key(level), resolve(root, row.get(f"seg_{AXIAL_VIEW_OF_LEVEL[level]}"))
            grade = int(row.get(f"grade_{key}", -1))
            if path is None or grade < 0:
                continue
            counts = cache[path]
            sac_share[GRADES[grade]].append(float(counts[SAC] / counts.sum()))
            zooms = nib.load(path).header.get_zooms()
            area_diff = max(area_diff, abs(float(row[f"area_{key}"]) - counts[SAC] * zooms[0] * zooms[1]))
        cache = {p: c for p, c in cache.items() if "sag" in p.name}  # axial masks are not shared between cases
    grade_cols = [f"grade_{level_key(lv)}" for lv in LEVELS]
    grades = df[grade_cols].to_numpy()
    known = grades[grades >= 0]
    areas = df[[f"area_{level_key(lv)}" for lv in LEVELS]].to_numpy(float)
    by_grade = {}
    for g, name in enumerate(GRADES):
        values = areas[grades == g]
        values = values[np.isfinite(values)]
        by_grade[name] = (
            {
                "min": float(values.min()),
                "max": float(values.max()),
                "mean": float(values.mean()),
                "n": int(values.size),
            }
            if values.size
            else {"n": 0}
        )
    return {
        "n_cases": len(df),
        "class_share": {
            "all": _shares(totals["sagittal"] + totals["axial"]),
            "sagittal": _shares(totals["sagittal"]),
            "axial": _shares(totals["axial"]),
        },
        "sac_share_by_grade": {
            g: {"mean": float(np.mean(v)), "max": float(np.max(v)), "n": len(v)} if v else {"n": 0}
            for g, v in sac_share.items()
        },
        "grade_prevalence": {
            "overall": {name: float((known == g).mean()) for g, name in enumerate(GRADES)},
            **{
                lv: {name: float((grades[:, i] == g).mean()) for g, name in enumerate(GRADES)}
                for i, lv in enumerate(LEVELS)
            },
        },
        "grade_counts": {name: int((known == g).sum()) for g, name in enumerate(GRADES)},
        "area_mm2_by_grade": by_grade,
        "area_mask_max_abs_diff_mm2": area_diff,
        "split_cases": {str(k): int(v) for k, v in df["split"].value_counts().sort_index().items()},
    }


def format_stats(stats: dict[str, Any]) -> str:
    """Plain-text tables of :func:`phantom_stats` for the terminal."""
    lines = [f"cases: {stats['n_cases']}   splits: " + ", ".join(f"{k} {v}" for k, v in stats["split_cases"].items())]
    lines.append("")
    lines.append("class pixel share (%)       " + "".join(f"{v:>10}" for v in ("all", "sagittal", "axial")))
    for name in LABELS:
        shares = [stats["class_share"][k][name] * 100 for k in ("all", "sagittal", "axial")]
        lines.append(f"  {name:<26}" + "".join(f"{s:>10.3f}" for s in shares))
    lines.append("")
    lines.append("thecal-sac share of the axial view by grade (%):")
    for grade, s in stats["sac_share_by_grade"].items():
        if s["n"]:
            lines.append(f"  {grade:<10} mean {s['mean'] * 100:6.3f}   max {s['max'] * 100:6.3f}   (n={s['n']})")
    lines.append("")
    lines.append("grade prevalence (%)  " + "".join(f"{g:>10}" for g in GRADES))
    for key, row in stats["grade_prevalence"].items():
        lines.append(f"  {key:<20}" + "".join(f"{row[g] * 100:>10.1f}" for g in GRADES))
    lines.append("  counts              " + "".join(f"{stats['grade_counts'][g]:>10}" for g in GRADES))
    lines.append("")
    lines.append("dural-sac area by grade (mm²):")
    for grade, a in stats["area_mm2_by_grade"].items():
        if a["n"]:
            lines.append(f"  {grade:<10} {a['min']:7.1f} - {a['max']:7.1f}   mean {a['mean']:7.1f}   (n={a['n']})")
    lines.append(f"stored area vs. mask area: max |diff| = {stats['area_mask_max_abs_diff_mm2']:.4f} mm²")
    return "\n".join(lines)
