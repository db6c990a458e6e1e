"""Generic adapter for users' own data: a manifest CSV in our schema whose images may be 3D, any orientation/spacing.

Input (``--root`` = the CSV, or a folder holding ``manifest.csv``): the columns of :mod:`lss_vlm.data.manifest`.
Only ``case_id`` and at least one ``img_<view>`` column are required; ``patient_id`` defaults to ``case_id``,
``dataset`` to ``nifti``, ``split`` to a seeded patient-level split (kept when every row has a valid one).
Image/mask cells may point to 2D or 3D NIfTI, ``.mha``/``.nrrd``, a ``.dcm`` file or a DICOM series folder.
A 3D image is cut through its middle across the view's plane (the axis closest to left-right for ``sag_*``,
to head-feet for ``ax_*``); with a mask the cut goes through the centre of the labelled voxels. Masks on another grid
are resampled (nearest neighbour) onto the image slice. ``labels`` (``--labels 'disc=2,canal=3'``) maps source mask
values to our labels; without it masks must already use 0-5. Grades (-1..3), areas, reports and clinical columns are
copied; when there is no ``reports`` column but some grades, reference reports are written from the grades/areas.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...constants import CLINICAL_COLUMNS, CLINICAL_PREFIX, MISSING_GRADE, NUM_GRADES, VIEWS
from ...errors import DataError
from ..labels import parse_label_mapping
from ..manifest import AREA_COLUMNS, GRADE_COLUMNS, KNOWN_COLUMNS, META_PREFIX, parse_reports, resolve
from ..readers import read_volume
from .base import DATASETS, CaseWriter, PrepareSummary, empty_row, progress_bar, reference_reports
from .views import display_slice, mapped_mask, mask_on_view, middle_index, plane_of_view, slice_axis


def _find_manifest(root: Path) -> Path:
    if root.is_file():
        return root
    candidate = root / "manifest.csv"
    if not candidate.is_file():
        raise DataError(f"{root}: no manifest.csv in this folder; pass the CSV itself as --root")
    return candidate


def _read_user_manifest(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    unknown = [c for c in df.columns if c not in KNOWN_COLUMNS and not c.startswith((META_PREFIX, CLINICAL_PREFIX))]
    if unknown:
        raise DataError(f"{path}: unknown column(s) {', '.join(unknown)}; see docs/datasets.md for the NIfTI manifest")
    if "case_id" not in df.columns:
        raise DataError(f"{path}: missing required column case_id")
    if not any(f"img_{v}" in df.columns for v in VIEWS):
        raise DataError(
            f"{path}: no img_<view> column; expected at least one of {', '.join('img_' + v for v in VIEWS)}"
        )
    if df.empty:
        raise DataError(f"{path}: manifest has a header but no cases")
    return df


@DATASETS.register("nifti")
class NiftiManifestAdapter:
    """Users' own NIfTI/ITK/DICOM images listed in a manifest CSV (see the module docstring)."""

    def __init__(self, labels: str | None = None, seed: int = 0) -> None:
        self.mapping = parse_label_mapping(labels) if labels else None
        self.seed = seed

    def collect(self, root: Path, writer: CaseWriter, summary: PrepareSummary, progress: bool) -> list[dict[str, Any]]:
        path = _find_manifest(root)
        df = _read_user_manifest(path)
        summary.found["rows"] = len(df)
        counts = df["case_id"].value_counts()
        duplicated = set(counts[counts > 1].index)
        for case_id in sorted(duplicated):
            summary.skip(f"case {case_id}", f"{path.name}: case_id {case_id!r} appears {counts[case_id]} times")
        rows = []
        for _, src in progress_bar(df.iterrows(), progress, total=len(df), desc="nifti"):
            case_id = src["case_id"].strip()
            if not case_id:
                summary.skip(f"{path.name} row", "empty case_id")
                continue
            if case_id in duplicated:
                continue
            with writer.case(case_id):
                rows.append(self._case(src, path.parent, writer))
        return rows

    def _case(self, src: pd.Series, base: Path, writer: CaseWriter) -> dict[str, Any]:
        case_id = src["case_id"].strip()
        row = empty_row(
            case_id, src.get("patient_id", "").strip() or case_id, src.get("dataset", "").strip() or "nifti"
        )
        row["split"] = src.get("split", "").strip()
        for view in VIEWS:
            image_path = resolve(base, src.get(f"img_{view}", "").strip())
            if image_path is None:
                continue
            row.update(self._view(case_id, view, image_path, resolve(base, src.get(f"seg_{view}", "").strip()), writer))
        if not any(row[f"img_{v}"] for v in VIEWS):
            raise DataError(f"case {case_id}: no image in any img_<view> column")
        for column in GRADE_COLUMNS:
            row[column] = _grade(src.get(column, ""), case_id, column)
        for column in AREA_COLUMNS:
            row[column] = _number(src.get(column, ""), case_id, column)
        for column in [*CLINICAL_COLUMNS, *(c for c in src.index if c.startswith(CLINICAL_PREFIX))]:
            if column in src.index:
                row[column] = _number(src[column], case_id, column)
        for column in src.index:
            if column.startswith(META_PREFIX):
                row[column] = src[column]
        if "reports" in src.index:
            reports = parse_reports(src["reports"], f"case {case_id}")
            row["reports"] = json.dumps(reports) if reports else ""
        else:
            grades = [row[c] for c in GRADE_COLUMNS]
            areas = [row[c] for c in AREA_COLUMNS]
            row["reports"] = reference_reports(grades, case_id, self.seed, areas)
        return row

    def _view(
        self, case_id: str, view: str, image_path: Path, mask_path: Path | None, writer: CaseWriter
    ) -> dict[str, str]:
        plane = plane_of_view(view)
        volume = read_volume(image_path)
        mask = mapped_mask(read_volume(mask_path), self.mapping) if mask_path is not None else None
        axis = slice_axis(volume, plane)
        index = middle_index(
            volume, axis, mask.data if mask is not None and mask.data.shape == volume.data.shape else None
        )
        image = display_slice(volume, plane, index, axis)
        seg = mask_on_view(mask, volume, image, axis, index, plane) if mask is not None else None
        return writer.write(case_id, view, image, seg, source=str(image_path))


def _grade(cell: str, case_id: str, column: str) -> int:
    if cell is None or str(cell).strip() == "":
        return MISSING_GRADE
    try:
        value = float(cell)
    except ValueError:
        value = float("nan")
    if value not in [*range(NUM_GRADES), MISSING_GRADE]:
        raise DataError(
            f"case {case_id}: column {column} has value {cell!r}; expected 0-{NUM_GRADES - 1} or {MISSING_GRADE}"
        )
    return int(value)


def _number(cell: str, case_id: str, column: str) -> float:
    if cell is None or str(cell).strip() == "":
        return float("nan")
    try:
        value = float(cell)
    except ValueError:
        raise DataError(f"case {case_id}: column {column} has value {cell!r}; expected a number") from None
    if not np.isfinite(value):
        return float("nan")
    return value
