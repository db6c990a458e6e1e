"""The manifest: one CSV row per case, the single entry point of every dataset (phantom or real).

Columns (paths are relative to the manifest's folder, or absolute):

=====================  ========  ==============================================================
column                 required  meaning
=====================  ========  ==============================================================
``case_id``            yes       unique case identifier
``patient_id``         yes       patient identifier; splits never separate a patient's cases
``split``              yes       ``train``, ``val`` or ``test``
``dataset``            yes       source dataset name (``phantom``, ``rsna2024``, ...)
``img_<view>``         yes       NIfTI image of each view in :data:`~lss_vlm.constants.VIEWS` (empty cell: view
                                 not acquired; at least one view per case)
``seg_<view>``         no        NIfTI label mask of the view (empty cell: no mask)
``grade_<level>``      no        stenosis grade index (0-3) per level, -1 or empty if unknown
``area_<level>``       no        true dural-sac cross-sectional area in mm², empty if unknown
``reports``            no        JSON list of reference report strings
clinical columns       no        ``age, sex, bmi, symptom_months, claudication, odi`` (numbers; empty = unknown)
``clinical_*``         no        any further numeric clinical column (``clinical_egfr``, ...); empty = unknown.
                                 Read, after the six above, by a model with clinical fusion
``meta_*``             no        free-form extra columns kept by adapters (ignored by the loader)
=====================  ========  ==============================================================

``<view>`` is e.g. ``sag_t2`` or ``ax_l4_l5``; ``<level>`` is e.g. ``l4_l5`` (see :func:`~lss_vlm.constants.level_key`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ..constants import (
    CAUSES,
    CLINICAL_COLUMNS,
    CLINICAL_PREFIX,
    FINDINGS_COLUMN,
    LABEL_INDEX,
    LABELS,
    LEVELS,
    MISSING_GRADE,
    NUM_GRADES,
    VIEWS,
    level_key,
)
from ..errors import DataError
from ..io import atomic_path

SPLITS: tuple[str, ...] = ("train", "val", "test")
ID_COLUMNS: tuple[str, ...] = ("case_id", "patient_id", "split", "dataset")
IMAGE_COLUMNS: tuple[str, ...] = tuple(f"img_{v}" for v in VIEWS)
MASK_COLUMNS: tuple[str, ...] = tuple(f"seg_{v}" for v in VIEWS)
GRADE_COLUMNS: tuple[str, ...] = tuple(f"grade_{level_key(lv)}" for lv in LEVELS)
AREA_COLUMNS: tuple[str, ...] = tuple(f"area_{level_key(lv)}" for lv in LEVELS)
REQUIRED_COLUMNS: tuple[str, ...] = ID_COLUMNS + IMAGE_COLUMNS
LABELLED_COLUMN = "labelled_classes"
OPTIONAL_COLUMNS: tuple[str, ...] = (
    MASK_COLUMNS + GRADE_COLUMNS + AREA_COLUMNS + ("reports",) + CLINICAL_COLUMNS + (LABELLED_COLUMN,)
)
KNOWN_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
META_PREFIX = "meta_"


def read_manifest(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a manifest CSV. Raises :class:`DataError` naming the file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    try:
        df = pd.read_csv(
            path,
            dtype={"case_id": str, "patient_id": str, "split": str, "dataset": str, LABELLED_COLUMN: str},
            keep_default_na=True,
        )
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: manifest is empty (no header, no cases)") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: manifest is not a readable CSV ({exc})") from None
    validate_manifest(df, source=str(path))
    return df


def validate_manifest(df: pd.DataFrame, source: str = "manifest") -> None:
    """Check columns, ids, splits, grades and reports. Raises :class:`DataError` on the first problem."""
    unknown = [
        c for c in df.columns if c not in KNOWN_COLUMNS and not str(c).startswith((META_PREFIX, CLINICAL_PREFIX))
    ]
    if unknown:
        raise DataError(
            f"{source}: unknown column(s) {', '.join(map(str, unknown))}; "
            f"expected {', '.join(REQUIRED_COLUMNS[:4])}, img_<view>, seg_<view>, grade_<level>, area_<level>, "
            f"reports, clinical columns, {CLINICAL_PREFIX}* numbers or {META_PREFIX}* extras"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing required column(s) {', '.join(missing)}")
    if df.empty:
        raise DataError(f"{source}: manifest has a header but no cases")
    no_view = df[list(IMAGE_COLUMNS)].isna().all(axis=1) | (df[list(IMAGE_COLUMNS)].astype(str) == "").all(axis=1)
    if no_view.any():
        raise DataError(f"{source}: case {df.loc[no_view.idxmax(), 'case_id']} has no image in any img_<view> column")
    duplicated = df["case_id"][df["case_id"].duplicated()].tolist()
    if duplicated:
        raise DataError(f"{source}: duplicated case_id(s) {', '.join(map(str, duplicated[:5]))}")
    bad_split = sorted(set(df["split"].astype(str)) - set(SPLITS))
    if bad_split:
        raise DataError(
            f"{source}: column split has value(s) {', '.join(bad_split)}; expected one of {', '.join(SPLITS)}"
        )
    for column in GRADE_COLUMNS:
        if column in df.columns:
            values = df[column].fillna(MISSING_GRADE)
            bad = values[~values.isin(list(range(NUM_GRADES)) + [MISSING_GRADE])]
            if len(bad):
                raise DataError(
                    f"{source}: column {column} has value {bad.iloc[0]!r} for case {df.loc[bad.index[0], 'case_id']}; "
                    f"expected 0-{NUM_GRADES - 1} or {MISSING_GRADE} (unknown)"
                )
    for column in clinical_columns(df):
        if column in df.columns:
            values = pd.to_numeric(df[column], errors="coerce")
            bad = df[column][values.isna() & df[column].notna() & (df[column].astype(str).str.strip() != "")]
            if len(bad):
                raise DataError(
                    f"{source}: column {column} has value {bad.iloc[0]!r} for case {df.loc[bad.index[0], 'case_id']}; "
                    "expected a number (empty = unknown)"
                )
    if "reports" in df.columns:
        for case_id, cell in zip(df["case_id"], df["reports"]):
            parse_reports(cell, f"{source}: case {case_id}")
    if LABELLED_COLUMN in df.columns:
        for case_id, cell in zip(df["case_id"], df[LABELLED_COLUMN]):
            parse_labelled_classes(cell, f"{source}: case {case_id}")
    if FINDINGS_COLUMN in df.columns:
        for case_id, cell in zip(df["case_id"], df[FINDINGS_COLUMN]):
            parse_findings(cell, f"{source}: case {case_id}, column {FINDINGS_COLUMN}")


def clinical_columns(df: pd.DataFrame) -> tuple[str, ...]:
    """The clinical columns of a manifest table: the six of :data:`~lss_vlm.constants.CLINICAL_COLUMNS` (whether
    present or not; an absent one reads as unknown), then its ``clinical_*`` columns in table order."""
    return CLINICAL_COLUMNS + tuple(str(c) for c in df.columns if str(c).startswith(CLINICAL_PREFIX))


def parse_labelled_classes(cell: object, where: str = LABELLED_COLUMN) -> tuple[bool, ...]:
    """Which labels a case annotates, as one bool per label of :data:`~lss_vlm.constants.LABELS`.

    ``cell`` is the ``labelled_classes`` cell: comma-separated label names (``"disc,vertebral_body"``); an empty cell
    means every label. Background is always annotated. Raises :class:`DataError` on an unknown name.
    """
    if cell is None or (isinstance(cell, float) and pd.isna(cell)) or str(cell).strip() == "":
        return (True,) * len(LABELS)
    names = [n.strip() for n in str(cell).split(",") if n.strip()]
    unknown = [n for n in names if n not in LABEL_INDEX]
    if unknown:
        raise DataError(
            f"{where}: column {LABELLED_COLUMN} names unknown class {unknown[0]!r}; "
            f"expected comma-separated names from {', '.join(LABELS[1:])}"
        )
    chosen = {LABEL_INDEX[n] for n in names} | {0}
    return tuple(i in chosen for i in range(len(LABELS)))


def parse_findings(cell: object, where: str = "meta_findings") -> dict[str, list[str]]:
    """Decode a ``meta_findings`` cell: JSON ``{level: [cause, ...]}`` with causes from
    :data:`~lss_vlm.constants.CAUSES` (the phantom writes the causes of each stenotic level). An empty cell gives
    ``{}``; raises :class:`DataError` on bad JSON, an unknown level or an unknown cause."""
    if cell is None or (isinstance(cell, float) and pd.isna(cell)) or str(cell).strip() == "":
        return {}
    try:
        value = json.loads(str(cell))
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg}); expected {{level: [cause, ...]}}") from None
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected a JSON object {{level: [cause, ...]}}, got {type(value).__name__}")
    for level, causes in value.items():
        if level not in LEVELS:
            raise DataError(f"{where}: unknown level {level!r}; expected one of {', '.join(LEVELS)}")
        if not isinstance(causes, list) or any(c not in CAUSES for c in causes):
            raise DataError(f"{where}: {level} has causes {causes!r}; expected a list of {', '.join(CAUSES)}")
    return {str(k): list(v) for k, v in value.items()}


def parse_reports(cell: object, where: str = "reports") -> list[str]:
    """Decode the ``reports`` cell (a JSON list of strings; empty cell → no reports)."""
    if cell is None or (isinstance(cell, float) and pd.isna(cell)) or cell == "":
        return []
    try:
        reports = json.loads(str(cell))
    except json.JSONDecodeError:
        raise DataError(f"{where}: column reports must hold a JSON list of strings, got {str(cell)[:60]!r}") from None
    if not isinstance(reports, list) or not all(isinstance(r, str) for r in reports):
        raise DataError(f"{where}: column reports must hold a JSON list of strings")
    return reports


def select_split(df: pd.DataFrame, split: str, source: str = "manifest") -> pd.DataFrame:
    """Rows of one split (``"all"``: every row); a split with no cases is an error (a benchmark on zero cases means
    nothing)."""
    if split not in SPLITS + ("all",):
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)} or all")
    rows = df if split == "all" else df[df["split"] == split]
    if rows.empty:
        raise DataError(f"{source}: split {split!r} has no cases")
    return rows.reset_index(drop=True)


def resolve(manifest_dir: str | os.PathLike[str], cell: object) -> Path | None:
    """Absolute path of a manifest path cell (``None`` for an empty cell)."""
    if cell is None or (isinstance(cell, float) and pd.isna(cell)) or str(cell) == "":
        return None
    p = Path(str(cell))
    return p if p.is_absolute() else Path(manifest_dir) / p


def write_manifest(df: pd.DataFrame, path: str | os.PathLike[str]) -> None:
    """Validate and write a manifest atomically, columns in canonical order (extras last)."""
    validate_manifest(df, source=str(path))
    ordered = [c for c in KNOWN_COLUMNS if c in df.columns] + [c for c in df.columns if c not in KNOWN_COLUMNS]
    with atomic_path(path) as tmp:
        df[ordered].to_csv(tmp, index=False)
