"""RSNA 2024 Lumbar Spine Degenerative Classification (Kaggle) → manifest.

Layout (``--root``, as downloaded from Kaggle)::

    train.csv                        study_id + 25 columns <condition>_<l1_l2..l5_s1>: Normal/Mild, Moderate, Severe
    train_label_coordinates.csv      study_id, series_id, instance_number, condition, level (L1/L2), x, y (pixels)
    train_series_descriptions.csv    study_id, series_id, series_description (Sagittal T1 | Sagittal T2/STIR | Axial T2)
    train_images/<study_id>/<series_id>/<instance_number>.dcm

Per study (= patient) the adapter writes:

* ``sag_t2``: the Sagittal T2/STIR instance holding most "Spinal Canal Stenosis" points (the middle of the sorted
  stack when the study has none); ``sag_t1``: the Sagittal T1 instance whose plane is nearest those points (else the
  middle). Sagittal series must be one parallel stack (mixed orientations are an error for that view).
* ``ax_<level>``: the Axial T2 instance labelled for that level (subarticular-stenosis points), else the axial instance
  whose plane passes nearest the level's canal point (within max(slice thickness, 5 mm) and inside the image), else
  empty (RSNA axial series often miss L1-L2). Each axial instance is placed by its own geometry, so multi-block
  axial series with different angulations are fine.
* grades from ``spinal_canal_stenosis_<level>``: **Normal/Mild → 0 (normal)**, Moderate → 2, Severe → 3, empty → -1.
  RSNA does not separate normal from mild, so our grade 1 never occurs (``normal_mild_grade=1`` maps the merged class
  to mild instead). The other 20 columns are kept as ``meta_<condition>_<level>`` with the same mapping.
* reference reports from the grades (areas unknown); no masks (segmentation is not scored on RSNA).
* ``meta_loc_<level>_{x,y,z}``: the level's spinal-canal point in RAS mm, and ``meta_loc_<level>_{row,col}``: the same
  point in pixels of the written ``sag_t2`` view, for :mod:`lss_vlm.metrics.localisation`.
* several spinal-canal rows for one level (several raters, or one rater on two instances) are merged
  (:func:`lss_vlm.data.multirater.consensus_point`): points within ``merge_radius_mm`` (default 10 mm) of each other
  become their mean; when they form several groups, the group with the most raters is kept and the other rows are
  listed as skipped. ``meta_loc_<level>_n`` is the number of rows of the level; ``prepare_summary.json`` counts
  ``found.level_points_merged`` (rows merged into another row's point) and ``found.level_points_dropped``. RSNA 2024
  annotates points only, so the box merging of :func:`~lss_vlm.data.multirater.merge_boxes` (IoU threshold) has nothing
  to merge here. ``lss-bench prepare rsna2024 --merge-radius-mm MM`` sets the radius; 0 merges only identical points.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydicom.dataset import Dataset

from ...constants import AXIAL_VIEW_OF_LEVEL, LEVELS, MISSING_GRADE, level_key
from ...errors import ConfigError, DataError
from ..manifest import GRADE_COLUMNS
from ..multirater import consensus_point
from ..readers.dicom import (
    instance_number,
    read_dicom_slice,
    read_series_headers,
    slice_geometry,
    sort_series,
    tag_number,
)
from ..readers.volume import LPS_TO_RAS, Slice2D, apply_affine
from .base import DATASETS, CaseWriter, PrepareSummary, empty_row, progress_bar, reference_reports, skipping
from .views import display_slice

CONDITIONS: tuple[str, ...] = (
    "spinal_canal_stenosis",
    "left_neural_foraminal_narrowing",
    "right_neural_foraminal_narrowing",
    "left_subarticular_stenosis",
    "right_subarticular_stenosis",
)
#: RSNA severity (lower-cased) → our grade index. "Normal/Mild" is one RSNA class (see module docstring).
SEVERITY_GRADES: dict[str, int] = {"normal/mild": 0, "moderate": 2, "severe": 3}
#: Series description (lower-cased) → what the adapter uses it for.
SERIES_KINDS: dict[str, str] = {"sagittal t1": "sag_t1", "sagittal t2/stir": "sag_t2", "axial t2": "axial"}
CANAL_CONDITION = "spinal canal stenosis"
AXIAL_CONDITIONS = ("left subarticular stenosis", "right subarticular stenosis")
#: An axial plane farther than this (mm, or the slice thickness if larger) from a level's point does not show it.
AXIAL_MATCH_MM = 5.0
#: Spinal-canal points of one level closer than this (mm) are the same annotation by several raters (merged).
MERGE_RADIUS_MM = 10.0
TRAIN_CSV, COORDS_CSV, SERIES_CSV, IMAGES_DIR = (
    "train.csv",
    "train_label_coordinates.csv",
    "train_series_descriptions.csv",
    "train_images",
)


def _level_name(text: str) -> str | None:
    """``'L4/L5'`` / ``'l4_l5'`` / ``'L4-L5'`` → ``'L4-L5'`` (None if not a lumbar level)."""
    name = str(text).strip().upper().replace("/", "-").replace("_", "-")
    return name if name in LEVELS else None


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: file not found (expected the RSNA 2024 layout, see docs/datasets.md)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


class _Series:
    """Headers of one series, by instance number."""

    def __init__(self, series_id: str, kind: str, folder: Path) -> None:
        self.series_id, self.kind, self.folder = series_id, kind, folder
        self.headers = read_series_headers(folder)
        self.by_instance = {instance_number(ds): ds for ds in self.headers}


@DATASETS.register("rsna2024")
class Rsna2024Adapter:
    """RSNA 2024 Lumbar Spine Degenerative Classification (see the module docstring)."""

    def __init__(self, seed: int = 0, normal_mild_grade: int = 0, merge_radius_mm: float = MERGE_RADIUS_MM) -> None:
        if normal_mild_grade not in (0, 1):
            raise ConfigError(f"normal_mild_grade must be 0 (normal) or 1 (mild), got {normal_mild_grade!r}")
        if not (isinstance(merge_radius_mm, (int, float)) and 0 <= merge_radius_mm < float("inf")):
            raise ConfigError(f"merge_radius_mm must be a finite number of mm >= 0, got {merge_radius_mm!r}")
        self.seed = seed
        self.merge_radius_mm = float(merge_radius_mm)
        self.severity = dict(SEVERITY_GRADES, **{"normal/mild": normal_mild_grade})

    def collect(self, root: Path, writer: CaseWriter, summary: PrepareSummary, progress: bool) -> list[dict[str, Any]]:
        labels = _read_csv(root / TRAIN_CSV, ("study_id",) + tuple(f"{CONDITIONS[0]}_{level_key(lv)}" for lv in LEVELS))
        series = _read_csv(root / SERIES_CSV, ("study_id", "series_id", "series_description"))
        if (root / COORDS_CSV).is_file():
            coords = _read_csv(
                root / COORDS_CSV, ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")
            )
        else:
            coords = pd.DataFrame(columns=["study_id", "series_id", "instance_number", "condition", "level", "x", "y"])
            summary.note(f"{COORDS_CSV} not found: slices are chosen geometrically and no level points are kept")
        summary.found.update(studies=labels["study_id"].nunique(), series=len(series), coordinate_rows=len(coords))
        counts = labels["study_id"].str.strip().value_counts()
        for sid in sorted(counts[counts > 1].index):
            summary.skip(f"study {sid}", f"{TRAIN_CSV}: duplicated study_id {sid} ({counts[sid]} rows); study skipped")
        series_of = {sid: group for sid, group in series.groupby(series["study_id"].str.strip())}
        coords_of = {sid: group for sid, group in coords.groupby(coords["study_id"].str.strip())}
        rows = []
        for _, label_row in progress_bar(labels.iterrows(), progress, total=len(labels), desc="rsna2024"):
            sid = label_row["study_id"].strip()
            if counts.get(sid, 0) > 1:
                continue
            with writer.case(sid, item=f"study {sid}"):
                rows.append(self._study(sid, label_row, series_of.get(sid), coords_of.get(sid), root, writer, summary))
        return rows

    # -- one study -----------------------------------------------------------------------------------------------
    def _study(
        self,
        sid: str,
        label_row: pd.Series,
        series_rows: pd.DataFrame | None,
        coord_rows: pd.DataFrame | None,
        root: Path,
        writer: CaseWriter,
        summary: PrepareSummary,
    ) -> dict[str, Any]:
        if series_rows is None or series_rows.empty:
            raise DataError(f"{SERIES_CSV}: no series listed for study {sid}")
        study_dir = root / IMAGES_DIR / sid
        if not study_dir.is_dir():
            raise DataError(f"{study_dir}: image folder of study {sid} not found")
        row = empty_row(sid, sid, "rsna2024")
        self._grades(sid, label_row, row, summary)
        coord_rows = coord_rows if coord_rows is not None else pd.DataFrame(columns=["series_id"])
        all_series = self._load_series(sid, series_rows, study_dir, summary)
        points: dict[str, np.ndarray] = {}
        sag_t2 = self._pick(all_series, "sag_t2", coord_rows)
        if sag_t2 is not None:
            with skipping(summary, f"study {sid} series {sag_t2.series_id} (Sagittal T2/STIR)"):
                self._write_sagittal_t2(sid, sag_t2, coord_rows, row, points, writer, summary)
        sag_t1 = self._pick(all_series, "sag_t1", coord_rows)
        if sag_t1 is not None:
            with skipping(summary, f"study {sid} series {sag_t1.series_id} (Sagittal T1)"):
                ordered, _ = sort_series(sag_t1.headers, require_uniform=False)
                ds = _nearest_plane(ordered, list(points.values())) if points else ordered[len(ordered) // 2]
                row.update(writer.write(sid, "sag_t1", display_slice(read_dicom_slice(ds.filename), "sagittal")))
                row["meta_series_sag_t1"] = sag_t1.series_id
        axial = [s for s in all_series if s.kind == "axial"]
        for level in LEVELS:
            with skipping(summary, f"study {sid} {level} axial view"):
                ds = self._axial_instance(sid, level, axial, coord_rows, points.get(level), summary)
                if ds is not None:
                    view = display_slice(read_dicom_slice(ds.filename), "axial")
                    row.update(writer.write(sid, AXIAL_VIEW_OF_LEVEL[level], view))
        if not any(str(row[f"img_{v}"]) for v in ("sag_t1", "sag_t2", *AXIAL_VIEW_OF_LEVEL.values())):
            raise DataError(f"study {sid}: no usable Sagittal T1, Sagittal T2/STIR or Axial T2 image")
        row["reports"] = reference_reports([row[c] for c in GRADE_COLUMNS], sid, self.seed)
        return row

    def _grades(self, sid: str, label_row: pd.Series, row: dict[str, Any], summary: PrepareSummary) -> None:
        for condition in CONDITIONS:
            for level in LEVELS:
                column = f"{condition}_{level_key(level)}"
                if column not in label_row.index:
                    continue
                text = str(label_row[column]).strip()
                grade = self.severity.get(text.lower(), None) if text else MISSING_GRADE
                if grade is None:
                    summary.skip(
                        f"study {sid} {column}",
                        f"{TRAIN_CSV}: unknown severity {text!r}; expected Normal/Mild, Moderate, Severe or empty "
                        "(label treated as missing)",
                    )
                    grade = MISSING_GRADE
                target = f"grade_{level_key(level)}" if condition == CONDITIONS[0] else f"meta_{column}"
                row[target] = grade

    def _load_series(
        self, sid: str, series_rows: pd.DataFrame, study_dir: Path, summary: PrepareSummary
    ) -> list[_Series]:
        loaded = []
        for _, s in series_rows.iterrows():
            series_id, description = s["series_id"].strip(), s["series_description"].strip()
            kind = SERIES_KINDS.get(description.lower())
            if kind is None:
                summary.skip(
                    f"study {sid} series {series_id}",
                    f"{SERIES_CSV}: unknown series_description {description!r}; expected "
                    "Sagittal T1, Sagittal T2/STIR or Axial T2",
                )
                continue
            with skipping(summary, f"study {sid} series {series_id} ({description})"):
                loaded.append(_Series(series_id, kind, study_dir / series_id))
        return loaded

    @staticmethod
    def _pick(all_series: list[_Series], kind: str, coord_rows: pd.DataFrame) -> _Series | None:
        """The series of ``kind`` with the most coordinate rows (ties: lowest series id)."""
        candidates = [s for s in all_series if s.kind == kind]
        if not candidates:
            return None
        labelled = Counter(coord_rows["series_id"].str.strip()) if len(coord_rows) else Counter()
        return sorted(candidates, key=lambda s: (-labelled[s.series_id], s.series_id))[0]

    def _write_sagittal_t2(
        self,
        sid: str,
        series: _Series,
        coord_rows: pd.DataFrame,
        row: dict[str, Any],
        points: dict[str, np.ndarray],
        writer: CaseWriter,
        summary: PrepareSummary,
    ) -> None:
        """Write ``sag_t2``, fill ``points`` with the level points and the ``meta_loc_*`` cells of ``row``."""
        view, found = self._sagittal_t2(sid, series, coord_rows, summary)
        row.update(writer.write(sid, "sag_t2", view))
        row["meta_series_sag_t2"] = series.series_id
        for level, rows in found.items():
            merged = consensus_point(np.stack(rows), self.merge_radius_mm)
            if merged.n_dropped:
                summary.skip(
                    f"study {sid} {level} spinal canal point",
                    f"{COORDS_CSV}: {len(rows)} rows disagree (more than {self.merge_radius_mm:g} mm apart); kept the "
                    f"mean of the {merged.n_raters} that agree, dropped {merged.n_dropped}",
                )
            summary.found["level_points_merged"] += len(rows) - 1 - merged.n_dropped
            summary.found["level_points_dropped"] += merged.n_dropped
            p = points[level] = merged.point
            rc = view.world_to_pixel(p)
            key = level_key(level)
            row.update({f"meta_loc_{key}_x": p[0], f"meta_loc_{key}_y": p[1], f"meta_loc_{key}_z": p[2]})
            row.update({f"meta_loc_{key}_row": rc[0], f"meta_loc_{key}_col": rc[1], f"meta_loc_{key}_n": len(rows)})

    def _sagittal_t2(
        self, sid: str, series: _Series, coord_rows: pd.DataFrame, summary: PrepareSummary
    ) -> tuple[Slice2D, dict[str, list[np.ndarray]]]:
        """The chosen ``sag_t2`` slice and, per level, the RAS points of every usable canal row."""
        ordered, _ = sort_series(series.headers, require_uniform=False)
        canal = _rows_of(coord_rows, series.series_id, (CANAL_CONDITION,))
        points: dict[str, list[np.ndarray]] = {}
        instances: list[int] = []
        for _, c in canal.iterrows():
            where = f"{COORDS_CSV}: study {sid} series {series.series_id} instance {c['instance_number']}"
            ds, point = self._coordinate(series, c, where, summary)
            level = _level_name(c["level"])
            if ds is None or level is None:
                continue
            points.setdefault(level, []).append(point)
            instances.append(instance_number(ds))
        if instances:
            chosen = Counter(instances).most_common()
            best = min(n for n, k in chosen if k == chosen[0][1])
            ds = series.by_instance[best]
        else:
            ds = ordered[len(ordered) // 2]
        return display_slice(read_dicom_slice(ds.filename), "sagittal"), points

    @staticmethod
    def _coordinate(
        series: _Series, c: pd.Series, where: str, summary: PrepareSummary
    ) -> tuple[Dataset | None, np.ndarray]:
        """Instance and RAS point of one coordinate row; ``(None, ...)`` (recorded as skipped) when unusable."""
        try:
            number, x, y = int(float(c["instance_number"])), float(c["x"]), float(c["y"])
        except ValueError:
            summary.skip(where, f"instance_number/x/y {c['instance_number']!r}/{c['x']!r}/{c['y']!r} are not numbers")
            return None, np.zeros(3)
        ds = series.by_instance.get(number)
        if ds is None:
            summary.skip(where, f"points to a missing file ({series.folder / f'{number}.dcm'} not found)")
            return None, np.zeros(3)
        if _level_name(c["level"]) is None:
            summary.skip(where, f"unknown level {c['level']!r}; expected L1/L2 ... L5/S1")
            return None, np.zeros(3)
        lps = slice_geometry(ds).pixel_to_lps(x, y)
        return ds, apply_affine(LPS_TO_RAS, lps)

    def _axial_instance(
        self,
        sid: str,
        level: str,
        axial: list[_Series],
        coord_rows: pd.DataFrame,
        point: np.ndarray | None,
        summary: PrepareSummary,
    ) -> Dataset | None:
        """The axial instance for ``level``: labelled one, else nearest plane to the canal point, else None."""
        for series in axial:
            for _, c in _rows_of(coord_rows, series.series_id, AXIAL_CONDITIONS).iterrows():
                if _level_name(c["level"]) != level:
                    continue
                where = f"{COORDS_CSV}: study {sid} series {series.series_id} instance {c['instance_number']}"
                ds, _ = self._coordinate(series, c, where, summary)
                if ds is not None:
                    return ds
        if point is None:
            return None
        best, best_distance = None, np.inf
        for series in axial:
            for ds in series.headers:
                try:
                    distance = _plane_distance(ds, point)
                except DataError as exc:
                    summary.skip(f"study {sid} series {series.series_id}", str(exc))
                    break
                if distance is not None and distance < best_distance:
                    best, best_distance = ds, distance
        return best


def _rows_of(coord_rows: pd.DataFrame, series_id: str, conditions: tuple[str, ...]) -> pd.DataFrame:
    if coord_rows.empty:
        return coord_rows
    same_series = coord_rows["series_id"].str.strip() == series_id
    wanted = coord_rows["condition"].str.strip().str.lower().isin(conditions)
    return coord_rows[same_series & wanted]


def _plane_distance(ds: Dataset, point_ras: np.ndarray) -> float | None:
    """Distance (mm) from an instance's plane to a RAS point, or None if the point falls outside the image."""
    g = slice_geometry(ds)
    lps = apply_affine(LPS_TO_RAS, point_ras)  # LPS_TO_RAS is its own inverse
    offset = lps - g.position
    distance = abs(offset @ g.normal)
    thickness = tag_number(ds, "SliceThickness", 0.0) or 0.0
    if distance > max(thickness, AXIAL_MATCH_MM):
        return None
    column = offset @ g.column_dir / g.column_spacing
    row = offset @ g.row_dir / g.row_spacing
    if not (0 <= column <= int(ds.Columns) - 1 and 0 <= row <= int(ds.Rows) - 1):
        return None
    return float(distance)


def _nearest_plane(ordered: list[Dataset], points: list[np.ndarray]) -> Dataset:
    """Instance of a parallel stack whose plane is nearest the mean of ``points`` (RAS)."""
    target = apply_affine(LPS_TO_RAS, np.mean(points, axis=0))
    g = slice_geometry(ordered[0])
    depths = np.array([slice_geometry(ds).position @ g.normal for ds in ordered])
    return ordered[int(np.argmin(np.abs(depths - target @ g.normal)))]
