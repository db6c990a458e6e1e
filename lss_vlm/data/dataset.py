"""The manifest-driven dataset and data loader: one item per case, all views together (DESIGN.md §3).

Batch contract (``V`` views, ``L`` levels, ``S`` = ``spatial_size``):

==============  ==========================  =====================================================================
key             type                        meaning
==============  ==========================  =====================================================================
``case_id``     ``list[str]``
``views``       float32 ``[B, V, 1, S, S]``  images in canonical orientation, intensities scaled to [0, 1]
                                            (0.5-99.5 percentile); zeros for a missing view
``masks``       int64 ``[B, V, S, S]``       label maps (0 where there is no mask)
``view_valid``  bool ``[B, V]``              the view exists
``mask_valid``  bool ``[B, V]``              the view has a mask
``grades``      int64 ``[B, L]``             stenosis grade per level, -1 unknown
``areas``       float32 ``[B, L]``           true dural-sac area (mm²), NaN unknown
``spacing``     float32 ``[B, V, 2]``        mm per pixel (row, col) after resampling
``affine``      float64 ``[B, V, 4, 4]``     pixel ``(row, col, 0)`` → patient RAS mm of each view after resampling
                                            and pad/crop (NaN for a missing view, or an augmented item)
``native_affine`` float64 ``[B, V, 4, 4]``  the same for the view's acquired grid (canonical orientation, before
                                            resampling; :mod:`~lss_vlm.data.native_grid`); NaN when missing
``native_shape``  int64 ``[B, V, 3]``       that grid's shape ``(rows, cols, 1)``; 0 when missing
``reports``     ``list[list[str]]``          reference reports
``clinical``    float32 ``[B, F]``           the ``clinical_columns`` asked for (default the six: age, sex, BMI,
                                            symptom months, claudication, ODI); NaN unknown or absent
``causes``      float32 ``[B, L, 3]``        per stenotic level, 1 for each contributing cause of
                                            :data:`~lss_vlm.constants.CAUSES` (``meta_findings``), else 0; NaN
                                            for a level that is normal or ungraded, or without the column
``labelled``    bool ``[B, C]``              classes annotated in the case's masks (``labelled_classes``; all True
                                            when the cell is empty; background always True)
==============  ==========================  =====================================================================

Mask pixels equal to :data:`~lss_vlm.constants.IGNORE_LABEL` (255) are not annotated: no loss gradient, never scored.

Every file is read and checked when the dataset is built, so a bad file fails before training starts.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from monai.data import CacheDataset, DataLoader, Dataset, get_track_meta, set_track_meta

from ..constants import CAUSES, CLINICAL_COLUMNS, FINDINGS_COLUMN, LEVELS, MISSING_GRADE, VIEWS, level_key
from ..errors import DataError
from .manifest import (
    LABELLED_COLUMN,
    parse_findings,
    parse_labelled_classes,
    parse_reports,
    read_manifest,
    resolve,
    select_split,
)
from .transforms import (
    LoadCaseViewsd,
    PadOrCropWithWarningd,
    build_case_transform,
    image_key,
    mask_key,
    resolve_target_spacing,
)

TENSOR_KEYS: tuple[str, ...] = (
    "views", "masks", "mask_valid", "view_valid", "grades", "areas", "spacing", "affine", "native_affine",
    "native_shape", "clinical", "causes", "labelled"
)  # fmt: skip


def _number(cell: Any, column: str, case_id: str, source: str) -> float:
    if cell is None or (isinstance(cell, float) and math.isnan(cell)) or cell == "":
        return math.nan
    try:
        return float(cell)
    except (TypeError, ValueError):
        raise DataError(f"{source}: column {column} has value {cell!r} for case {case_id}; expected a number") from None


def case_records(
    df: pd.DataFrame,
    manifest_dir: str | os.PathLike[str],
    source: str = "manifest",
    clinical_columns: Sequence[str] = CLINICAL_COLUMNS,
) -> list[dict]:
    """One record per manifest row: absolute view/mask paths (``None`` if absent), grades, areas, reports,
    the values of ``clinical_columns`` (NaN where empty or where the manifest has no such column)."""
    records = []
    for _, row in df.iterrows():
        case_id = str(row["case_id"])
        record: dict[str, Any] = {"case_id": case_id}
        for view in VIEWS:
            for key in (image_key(view), mask_key(view)):
                path = resolve(manifest_dir, row.get(key))
                record[key] = None if path is None else str(path)
        grades, areas = [], []
        for level in LEVELS:
            g = _number(row.get(f"grade_{level_key(level)}"), f"grade_{level_key(level)}", case_id, source)
            grades.append(MISSING_GRADE if math.isnan(g) else int(g))
            areas.append(_number(row.get(f"area_{level_key(level)}"), f"area_{level_key(level)}", case_id, source))
        record["grades"], record["areas"] = grades, areas
        record["reports"] = parse_reports(row.get("reports"), f"{source}: case {case_id}")
        record["clinical"] = [_number(row.get(c), c, case_id, source) for c in clinical_columns]
        record["causes"] = _cause_targets(row, grades, f"{source}: case {case_id}, column {FINDINGS_COLUMN}")
        record["labelled"] = list(parse_labelled_classes(row.get(LABELLED_COLUMN), f"{source}: case {case_id}"))
        records.append(record)
    return records


def _cause_targets(row: Mapping[str, Any], grades: Sequence[int], where: str) -> list[list[float]]:
    """``[L, 3]`` cause targets of a manifest row: multi-hot over :data:`CAUSES` for each stenotic level (grade ≥ 1),
    NaN for a normal or ungraded level and for every level when the row has no ``meta_findings`` cell."""
    unknown = [math.nan] * len(CAUSES)
    cell = row.get(FINDINGS_COLUMN)
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return [list(unknown) for _ in LEVELS]
    findings = parse_findings(cell, where)
    return [
        [float(c in findings.get(level, ())) for c in CAUSES] if grade >= 1 else list(unknown)
        for level, grade in zip(LEVELS, grades)
    ]


class SequentialCacheDataset(CacheDataset):
    """MONAI ``CacheDataset`` that fills its cache in the calling thread.

    The stock version runs the transforms in a ``ThreadPool``; torch ops in those threads made the interpreter abort
    at exit ("terminate called without an active exception") in long test sessions, and errors surface more
    directly without the pool."""

    #: Run the random transforms with MONAI's metadata tracking off (the cache holds plain tensors then, see
    #: :func:`~lss_vlm.data.transforms.build_case_transform`): the same pixels, about half the CPU per draw.
    untracked_draws: bool = False

    def _fill_cache(self, indices: Sequence[int] | None = None) -> list:
        if self.cache_num <= 0:
            return []
        return [self._load_cache_item(i) for i in (range(self.cache_num) if indices is None else indices)]

    def _transform(self, index: int) -> Any:
        if not self.untracked_draws:
            return super()._transform(index)
        tracked = get_track_meta()
        set_track_meta(False)  # global in MONAI, so restored at once; the loader draws in one thread per process
        try:
            return super()._transform(index)
        finally:
            set_track_meta(tracked)


def _data_error_in(exc: BaseException) -> DataError | None:
    """The :class:`DataError` inside MONAI's ``RuntimeError("applying transform ...")`` wrappers, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, DataError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def build_dataset(
    manifest_path: str | os.PathLike[str],
    split: str,
    spatial_size: int = 128,
    augment: bool = False,
    cache: bool = True,
    seed: int = 0,
    target_spacing: float | Sequence[float] | Mapping[str, Any] | None = None,
    augment_profile: str = "standard",
    views: Sequence[str] | None = None,
    clinical_columns: Sequence[str] | None = None,
) -> Dataset:
    """The cases of one split as a MONAI dataset of batch-contract items (see the module docstring).

    ``target_spacing``: in-plane mm per pixel after resampling (see :func:`resolve_target_spacing`; default: a
    205 mm sagittal / 110 mm axial field of view on ``spatial_size`` pixels). ``cache=True`` keeps the decoded,
    resampled views in memory (MONAI ``CacheDataset``); augmentation runs on top of the cache.
    ``augment_profile``: ``standard`` or ``domain_randomisation`` (:data:`~lss_vlm.data.transforms.AUGMENT_PROFILES`).
    ``views``: read only these views (the others are treated as missing); ``None`` = all.
    ``clinical_columns``: the columns of the ``clinical`` tensor, in order (``None`` = the six of
    :data:`~lss_vlm.constants.CLINICAL_COLUMNS`; a model with clinical fusion names its own).
    """
    if int(spatial_size) < 8:
        raise DataError(f"spatial_size must be at least 8 pixels, got {spatial_size}")
    manifest_path = Path(manifest_path)
    df = select_split(read_manifest(manifest_path), split, source=str(manifest_path))
    records = case_records(df, manifest_path.parent, str(manifest_path), tuple(clinical_columns or CLINICAL_COLUMNS))
    if views is not None:
        unknown = sorted(set(views) - set(VIEWS))
        if unknown:
            raise DataError(f"unknown view(s) {', '.join(unknown)}; expected some of {', '.join(VIEWS)}")
        for record in records:
            for view in set(VIEWS) - set(views):
                record[image_key(view)] = record[mask_key(view)] = None
        records = [r for r in records if any(r[image_key(v)] is not None for v in views)]
        if not records:
            raise DataError(f"{manifest_path}: no case of split {split!r} has any of the views {', '.join(views)}")
    spacing = resolve_target_spacing(int(spatial_size), target_spacing)
    transform = build_case_transform(int(spatial_size), spacing, augment, seed, augment_profile)
    try:
        cropper = next(t for t in transform.transforms if isinstance(t, PadOrCropWithWarningd))
        if cache:
            dataset = SequentialCacheDataset(records, transform, cache_rate=1.0, progress=False)
            dataset.untracked_draws = augment
            cropper.warn()  # one warning that counts the labelled pixels the field of view crops away
            return dataset
        cropper.warn_each = True
        loader = LoadCaseViewsd(VIEWS)
        for record in records:  # validate every file now, not in the middle of an epoch
            loader(record)
        return Dataset(records, transform)
    except Exception as exc:
        error = _data_error_in(exc)
        if error is None:
            raise
        raise DataError(str(error)) from None


def collate_cases(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack case items into a batch dict (tensors stacked, ids and reports as lists)."""
    batch: dict[str, Any] = {
        "case_id": [it["case_id"] for it in items],
        "reports": [list(it["reports"]) for it in items],
    }
    for key in TENSOR_KEYS:
        batch[key] = torch.stack([torch.as_tensor(it[key]) for it in items])
    return batch


def build_dataloader(
    manifest_path: str | os.PathLike[str],
    split: str,
    spatial_size: int = 128,
    batch_size: int = 4,
    augment: bool = False,
    shuffle: bool = False,
    cache: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    target_spacing: float | Sequence[float] | Mapping[str, Any] | None = None,
    augment_profile: str = "standard",
    views: Sequence[str] | None = None,
    clinical_columns: Sequence[str] | None = None,
) -> DataLoader:
    """A data loader over one split of a manifest, yielding batch dicts (module docstring). Deterministic given
    ``seed`` (shuffling and augmentation)."""
    if int(batch_size) < 1:
        raise DataError(f"batch_size must be ≥ 1, got {batch_size}")
    dataset = build_dataset(
        manifest_path, split, spatial_size, augment, cache, seed, target_spacing, augment_profile, views,
        clinical_columns,
    )  # fmt: skip
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=int(batch_size),
        shuffle=shuffle,
        num_workers=int(num_workers),
        collate_fn=collate_cases,
        generator=generator,
    )
