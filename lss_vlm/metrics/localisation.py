"""Level localisation: how far (in mm) a predicted disc-level point lies from the annotated one.

For case ``n`` and level ``l`` with predicted point ``p̂ₙₗ`` and reference point ``pₙₗ`` (patient coordinates, mm):

    dₙₗ = ‖p̂ₙₗ − pₙₗ‖₂

Pairs where either point is unknown (NaN) are ignored. Aggregates: mean and median of ``d``, the fraction of levels
within each threshold τ (``hit@τ = #{d ≤ τ} / #{known}``), and the mean per level. RSNA 2024 manifests carry the
reference points as ``meta_loc_<level>_{x,y,z}`` (RAS mm) and ``meta_loc_<level>_{row,col}`` (pixels of ``sag_t2``).

Predicted points come from the predicted masks (:func:`disc_level_centres`: the disc components of the sagittal view,
ordered superior → inferior and numbered from the sacrum up); :class:`LevelLocalisation` scores them in ``evaluate``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..constants import LABEL_INDEX, LEVELS, NUM_LEVELS, VIEWS, level_key


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


# ------------------------------------------------------------------------------------------- centres from the masks
#: Sagittal view whose disc components give the level centres (RSNA 2024's level points lie on it too).
LOCALISATION_VIEW = "sag_t2"
#: A disc (its fragments merged) smaller than this fraction of the largest one is segmentation debris, not a disc.
#: 0.1, not more: a disc cut by the bottom of the field of view (L5-S1, seen at 9 of 54 px) is still a disc.
MIN_COMPONENT_FRACTION = 0.1
#: Disc components whose centroid rows lie within this distance (mm) of each other are fragments of one disc: half
#: the smallest row distance between consecutive lumbar disc centres (~30 mm at the lordotic L4-L5/L5-S1; a disc is
#: ~8-12 mm high). Unmerged, a disc predicted in two pieces at 64 px was counted as two levels and shifted every
#: level above it by one (median error = one level, 36 mm).
DISC_MERGE_MM = 15.0


def disc_level_centres(
    mask: np.ndarray,
    disc_label: int = LABEL_INDEX["disc"],
    num_levels: int = NUM_LEVELS,
    min_fraction: float = MIN_COMPONENT_FRACTION,
    row_spacing_mm: float | None = None,
) -> np.ndarray:
    """Centre ``(row, col)`` in pixels of each disc level, ``[num_levels, 2]`` (NaN where no disc is found).

    ``mask [H, W]`` is a label map of a sagittal view in the canonical orientation (rows run superior → inferior, see
    :mod:`lss_vlm.data.transforms`). The disc pixels are split into 8-connected components
    (``scipy.ndimage.label``); with ``row_spacing_mm`` (the rows' pixel spacing), components whose centroid rows lie
    within :data:`DISC_MERGE_MM` of each other are merged into one disc (pixel-weighted centre). Discs under
    ``min_fraction`` of the largest are dropped, the rest are ordered superior → inferior by centre row, and the
    **most caudal** is L5-S1, the one above it L4-L5, and so on (counting from the sacrum, as radiologists number
    lumbar levels): a T12-L1 disc at the top of the field of view is left out, and when fewer than ``num_levels``
    discs are found the cranial levels stay NaN.
    """
    from scipy import ndimage

    labels, count = ndimage.label(np.asarray(mask) == disc_label, structure=np.ones((3, 3), dtype=int))
    centres = np.full((num_levels, 2), np.nan)
    if count == 0:
        return centres
    index = np.arange(1, count + 1)
    sizes = np.asarray(ndimage.sum_labels(np.ones(labels.shape), labels, index), dtype=float)
    points = np.asarray(ndimage.center_of_mass(np.ones(labels.shape), labels, index), dtype=float).reshape(-1, 2)
    gap = DISC_MERGE_MM / row_spacing_mm if row_spacing_mm and row_spacing_mm > 0 else 0.0
    discs = _merge_fragments(points, sizes, gap)
    largest = max(size for _, size in discs)
    found = np.array([centre for centre, size in discs if size >= min_fraction * largest]).reshape(-1, 2)
    found = found[np.argsort(found[:, 0])][-num_levels:]  # superior -> inferior, the caudal-most num_levels
    centres[num_levels - len(found) :] = found
    return centres


def _merge_fragments(points: np.ndarray, sizes: np.ndarray, gap: float) -> list[tuple[np.ndarray, float]]:
    """Components ``points [K, 2]`` (centroids) of ``sizes [K]`` pixels grouped along the rows: a component whose row
    is within ``gap`` > 0 of the previous one (rows sorted) joins its group; ``(pixel-weighted centre, pixels)`` each.
    """
    order = np.argsort(points[:, 0], kind="stable")
    groups: list[list[int]] = []
    for k in order:
        if groups and gap > 0 and points[k, 0] - points[groups[-1][-1], 0] <= gap:
            groups[-1].append(k)
        else:
            groups.append([k])
    return [(np.average(points[g], axis=0, weights=sizes[g]), float(sizes[g].sum())) for g in groups]


def canal_level_points(
    mask: np.ndarray, centres: np.ndarray, sac_label: int = LABEL_INDEX["thecal_sac"], half_rows: int = 1
) -> np.ndarray:
    """The spinal-canal point of each disc level ``[L, 2]`` (pixels): the disc centre's row, and the mean column of the
    thecal-sac pixels posterior to the disc centre within ``half_rows`` rows of it (columns of the canonical sagittal
    view run anterior → posterior). A level without sac pixels there keeps its disc centre; a missing level stays NaN.

    RSNA 2024 annotates the spinal canal at each disc level, not the disc, so both sides of the comparison are canal
    points (otherwise a perfect segmentation would sit half a disc depth plus the canal's anterior of the reference).
    """
    mask = np.asarray(mask)
    points = np.array(centres, dtype=float, copy=True)
    for level, (row, col) in enumerate(centres):
        if not np.isfinite(row):
            continue
        top, bottom = max(int(round(row)) - half_rows, 0), int(round(row)) + half_rows + 1
        rows, cols = np.nonzero(mask[top:bottom] == sac_label)
        posterior = cols[cols > col]
        if posterior.size:
            points[level, 1] = posterior.mean()
    return points


def centres_to_mm(centres: np.ndarray, affine: np.ndarray | None, spacing: np.ndarray) -> np.ndarray:
    """Pixel centres ``[L, 2]`` → patient RAS mm ``[L, 3]`` with the view's ``affine`` (pixel ``(row, col, 0)`` → mm);
    without a finite affine, ``(row · spacing_row, col · spacing_col, 0)`` (distances stay in mm)."""
    if affine is not None and np.isfinite(affine).all():
        return view_pixels_to_mm(affine, centres[:, 0], centres[:, 1])
    return np.concatenate([centres * np.asarray(spacing, float)[None], np.zeros((len(centres), 1))], axis=1)


def level_points(mask: np.ndarray, row_spacing_mm: float | None = None) -> np.ndarray:
    """Spinal-canal point of each disc level of a sagittal label map ``[L, 2]`` (pixels, NaN where no disc is found):
    :func:`canal_level_points` of :func:`disc_level_centres` (``row_spacing_mm`` merges the fragments of a disc)."""
    return canal_level_points(mask, disc_level_centres(mask, row_spacing_mm=row_spacing_mm))


def reference_points_by_case(manifest: pd.DataFrame) -> dict[str, np.ndarray]:
    """Case id → reference level points ``[L, 3]`` (RAS mm) for the rows of ``manifest`` with at least one point."""
    points = reference_points(manifest)
    known = np.isfinite(points).all(axis=2).any(axis=1)
    return {str(cid): points[i] for i, cid in enumerate(manifest["case_id"]) if known[i]}


class LevelLocalisation:
    """Accumulates predicted and reference level points over a split; ``aggregate()`` gives the ``loc_*`` metrics.

    Predicted points: :func:`level_points` of the predicted ``sag_t2`` mask, in RAS mm through the view's affine.
    Reference points, per case: the manifest's ``meta_loc_*`` points when it has them (``references``, e.g. RSNA 2024's
    spinal-canal coordinates), else :func:`level_points` of the true ``sag_t2`` mask (the phantom and any dataset with
    disc masks), else none (the case is not scored). Extra key ``loc_detected``: the fraction of
    reference levels for which the prediction has a disc (a missed level has no distance and is not in the means).
    """

    def __init__(self, references: dict[str, np.ndarray] | None = None) -> None:
        self.references = dict(references or {})
        self._pred: list[np.ndarray] = []
        self._true: list[np.ndarray] = []

    @classmethod
    def from_manifest(cls, manifest: str | os.PathLike[str]) -> LevelLocalisation:
        """An accumulator whose references are the ``meta_loc_*`` points of the manifest at ``manifest``, if any."""
        from ..data.manifest import read_manifest

        return cls(reference_points_by_case(read_manifest(manifest)))

    def update(self, batch: dict[str, Any], pred: Any) -> None:
        """Add a batch: the loader's batch dict and the predicted label maps ``pred [B, V, H, W]``."""
        j = VIEWS.index(LOCALISATION_VIEW)
        affine = batch.get("affine")
        for i, case_id in enumerate(batch["case_id"]):
            if not bool(batch["view_valid"][i, j]):
                continue
            view_affine = np.asarray(affine[i, j].cpu()) if affine is not None else None
            spacing = np.asarray(batch["spacing"][i, j].cpu())
            true = self.references.get(str(case_id))
            rows_mm = float(spacing[0])
            if true is None and bool(batch["mask_valid"][i, j]):
                true_points = level_points(np.asarray(batch["masks"][i, j].cpu()), rows_mm)
                true = centres_to_mm(true_points, view_affine, spacing)
            if true is None:
                continue
            self._true.append(np.asarray(true, float))
            self._pred.append(centres_to_mm(level_points(np.asarray(pred[i, j].cpu()), rows_mm), view_affine, spacing))

    def aggregate(self) -> dict[str, float]:
        """:func:`level_localisation_metrics` plus ``loc_detected``; NaN everywhere when no case had a reference."""
        pred = np.stack(self._pred) if self._pred else np.full((0, NUM_LEVELS, 3), np.nan)
        true = np.stack(self._true) if self._true else np.full((0, NUM_LEVELS, 3), np.nan)
        out = level_localisation_metrics(pred, true)
        known = np.isfinite(true).all(axis=2)
        found = np.isfinite(pred).all(axis=2) & known
        out["loc_detected"] = float(found.sum() / known.sum()) if known.any() else float("nan")
        return out
