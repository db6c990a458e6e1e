"""Level localisation: how far (in mm) a predicted disc-level point lies from the annotated one.

For case ``n`` and level ``l`` with predicted point ``p̂ₙₗ`` and reference point ``pₙₗ`` (patient coordinates, mm):

    dₙₗ = ‖p̂ₙₗ − pₙₗ‖₂

Pairs where either point is unknown (NaN) are ignored. Aggregates: mean and median of ``d``, the fraction of levels
within each threshold τ (``hit@τ = #{d ≤ τ} / #{known}``), and the mean per level. RSNA 2024 manifests carry the
reference points as ``meta_loc_<level>_{x,y,z}`` (RAS mm) and ``meta_loc_<level>_{row,col}`` (pixels of ``sag_t2``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..constants import LEVELS, level_key


def level_distances(pred_mm: np.ndarray, true_mm: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[N, L]`` between points ``[N, L, D]`` (NaN where either point is unknown)."""
    pred_mm, true_mm = np.asarray(pred_mm, dtype=float), np.asarray(true_mm, dtype=float)
    if pred_mm.shape != true_mm.shape:
        raise ValueError(f"predicted points {pred_mm.shape} and reference points {true_mm.shape} differ in shape")
    return np.sqrt(((pred_mm - true_mm) ** 2).sum(axis=-1))  # NaN propagates


def level_localisation_metrics(
    pred_mm: np.ndarray, true_mm: np.ndarray, thresholds_mm: Sequence[float] = (5.0, 10.0)
) -> dict[str, float]:
    """Flat metrics ``loc_mean_mm``, ``loc_median_mm``, ``loc_hit@<τ>mm``, ``loc_mean_mm/<level>``, ``n_loc``."""
    d = level_distances(pred_mm, true_mm)
    known = np.isfinite(d)
    out: dict[str, float] = {"n_loc": float(known.sum())}
    values = d[known]
    out["loc_mean_mm"] = float(values.mean()) if values.size else float("nan")
    out["loc_median_mm"] = float(np.median(values)) if values.size else float("nan")
    for tau in thresholds_mm:
        out[f"loc_hit@{tau:g}mm"] = float((values <= tau).mean()) if values.size else float("nan")
    for j, level in enumerate(LEVELS[: d.shape[1]]):
        column = d[:, j][known[:, j]]
        out[f"loc_mean_mm/{level}"] = float(column.mean()) if column.size else float("nan")
    return out


def view_pixels_to_mm(affine: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Patient coordinates ``[..., 3]`` (mm) of pixel positions on a 2D view with a ``(row, col, 0) → mm`` affine."""
    rc = np.stack([np.asarray(rows, float), np.asarray(cols, float), np.zeros(np.shape(rows))], axis=-1)
    return rc @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


def reference_points(manifest: pd.DataFrame) -> np.ndarray:
    """Reference level points ``[N, L, 3]`` (RAS mm, NaN unknown) from the ``meta_loc_*`` columns of a manifest."""
    points = np.full((len(manifest), len(LEVELS), 3), np.nan)
    for j, level in enumerate(LEVELS):
        for k, axis in enumerate("xyz"):
            column = f"meta_loc_{level_key(level)}_{axis}"
            if column in manifest.columns:
                points[:, j, k] = pd.to_numeric(manifest[column], errors="coerce").to_numpy(float)
    return points
