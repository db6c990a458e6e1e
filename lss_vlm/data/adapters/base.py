"""Shared machinery of the dataset adapters: the registry, the prepare summary, view writing, splits, atomic output.

An adapter is a class registered in :data:`DATASETS` with a ``collect(root, writer, summary, progress)`` method that
walks the source dataset, writes the 2D views of each usable case through the :class:`CaseWriter` and returns one
manifest row (dict) per case. :func:`prepare_dataset` does the rest: seeded patient-level splits, manifest
validation, ``prepare_summary.json``, and an all-or-nothing move of the finished folder onto ``--out``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ...constants import GRADES, LEVELS, MISSING_GRADE, VIEWS
from ...errors import DataError
from ...io import atomic_write_json, remove_stale_staging
from ...registry import Registry
from ...reports.writer import write_reports
from ..manifest import AREA_COLUMNS, GRADE_COLUMNS, IMAGE_COLUMNS, MASK_COLUMNS, write_manifest
from ..readers.nifti import write_view
from ..readers.volume import Slice2D
from ..splits import assign_splits

MANIFEST_NAME = "manifest.csv"
SUMMARY_NAME = "prepare_summary.json"


class DatasetAdapter(Protocol):
    """What :func:`prepare_dataset` needs from an adapter."""

    def collect(self, root: Path, writer: CaseWriter, summary: PrepareSummary, progress: bool) -> list[dict[str, Any]]:
        """Write the views of every usable case and return their manifest rows; record skips in ``summary``."""
        ...


#: Dataset adapters by name (``lss-bench prepare NAME``).
DATASETS: Registry[DatasetAdapter] = Registry("dataset")


@dataclass
class PrepareSummary:
    """What an adapter found and what it skipped (and why); saved as ``prepare_summary.json``."""

    dataset: str
    root: str
    found: Counter = field(default_factory=Counter)
    skipped: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def skip(self, item: str, reason: str) -> None:
        """Record one skipped item (a case, a series, a label cell) with the reason."""
        self.skipped.append({"item": str(item), "reason": str(reason)})

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def to_dict(self, manifest: pd.DataFrame | None = None, **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {
            "dataset": self.dataset,
            "root": self.root,
            "found": dict(self.found),
            "n_skipped": len(self.skipped),
            "skipped": self.skipped,
            "notes": self.notes,
            **extra,
        }
        if manifest is not None:
            out.update(_manifest_counts(manifest))
        return out


def _filled(series: pd.Series) -> pd.Series:
    return series.notna() & (series.astype(str) != "")


def _manifest_counts(df: pd.DataFrame) -> dict[str, Any]:
    grades = {
        level: {GRADES[g]: int((df[col] == g).sum()) for g in range(len(GRADES))}
        | {"unknown": int((df[col] < 0).sum())}
        for level, col in zip(LEVELS, GRADE_COLUMNS)
        if col in df
    }
    views = {v: int(_filled(df[f"img_{v}"]).sum()) for v in VIEWS}
    masks = {v: int(_filled(df[f"seg_{v}"]).sum()) for v in VIEWS if f"seg_{v}" in df}
    n_reports = (
        int(sum(len(json.loads(r)) > 0 for r in df["reports"] if isinstance(r, str) and r)) if "reports" in df else 0
    )
    has_loc = any(c.startswith("meta_loc_") for c in df.columns)
    return {
        "n_cases": int(len(df)),
        "n_patients": int(df["patient_id"].nunique()),
        "splits": {s: int((df["split"] == s).sum()) for s in ("train", "val", "test")},
        "views": views,
        "masks": masks,
        "grades": grades,
        "cases_with_reports": n_reports,
        "scored": {
            "segmentation": sum(masks.values()) > 0,
            "grades": any(sum(v for k, v in g.items() if k != "unknown") > 0 for g in grades.values()),
            "reports": n_reports > 0,
            "level_localisation": has_loc,
        },
    }


def format_summary(summary: dict[str, Any], max_skips: int = 20) -> str:
    """Human-readable lines of a prepare summary (what the CLI prints)."""
    lines = [
        f"{summary['dataset']}: {summary.get('n_cases', 0)} case(s) from {summary.get('n_patients', 0)} patient(s) "
        f"(train/val/test {'/'.join(str(v) for v in summary.get('splits', {}).values())}); "
        f"skipped {summary['n_skipped']}",
    ]
    if summary.get("found"):
        lines.append("found: " + ", ".join(f"{k} {v}" for k, v in summary["found"].items()))
    if "views" in summary:
        lines.append("views: " + ", ".join(f"{k} {v}" for k, v in summary["views"].items()))
        scored = summary["scored"]
        lines.append("scored: " + ", ".join(f"{k} {'yes' if v else 'NO (skipped)'}" for k, v in scored.items()))
    for item in summary["skipped"][:max_skips]:
        lines.append(f"skipped {item['item']}: {item['reason']}")
    if len(summary["skipped"]) > max_skips:
        lines.append(f"... and {len(summary['skipped']) - max_skips} more (see {SUMMARY_NAME})")
    lines.extend(f"note: {n}" for n in summary["notes"])
    return "\n".join(lines)


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """A file-name-safe form of an id."""
    return _SAFE.sub("_", str(text)).strip("._") or "case"


class CaseWriter:
    """Writes 2D views of cases under ``<staging>/cases/<case>/`` and returns their manifest cells."""

    def __init__(self, staging: Path, summary: PrepareSummary) -> None:
        self.staging = staging
        self.summary = summary

    def case_dir(self, case_id: str) -> Path:
        return self.staging / "cases" / safe_name(case_id)

    def write(
        self, case_id: str, view: str, image: Slice2D, mask: Slice2D | None = None, source: str | None = None
    ) -> dict[str, str]:
        """Write one view (and its mask) and return ``{img_<view>: path, seg_<view>: path}`` relative cells.

        The written files are then read back with the loader's own checks (:func:`lss_vlm.data.transforms.read_view`:
        slice normal of the view, finite voxels, label values, shapes), so a view that ``train`` would reject fails
        here; the :class:`DataError` names ``source`` (the user's file) instead of the prepared file.
        """
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}")
        source = source or f"case {case_id} {view}"
        folder = self.case_dir(case_id)
        folder.mkdir(parents=True, exist_ok=True)
        cells = {f"img_{view}": (folder / f"{view}.nii.gz").relative_to(self.staging).as_posix()}
        write_view(self.staging / cells[f"img_{view}"], image, np.float32)
        if mask is not None:
            if mask.array.shape != image.array.shape:
                raise DataError(f"{source}: {view} mask shape {mask.array.shape} != image {image.array.shape}")
            cells[f"seg_{view}"] = (folder / f"{view}_seg.nii.gz").relative_to(self.staging).as_posix()
            write_view(self.staging / cells[f"seg_{view}"], mask, np.uint8)
        self._check_like_loader(view, cells, source)
        return cells

    def _check_like_loader(self, view: str, cells: dict[str, str], source: str) -> None:
        from ..transforms import read_view, view_kind

        image_path = self.staging / cells[f"img_{view}"]
        mask_path = self.staging / cells[f"seg_{view}"] if f"seg_{view}" in cells else None
        try:
            read_view(image_path, mask_path, view_kind(view))
        except DataError as exc:
            message = str(exc)
            for written in filter(None, (mask_path, image_path)):
                message = message.replace(str(written), f"{source} (as {view})")
            raise DataError(message if message.startswith(source) else f"{source}: {message}") from None

    @contextlib.contextmanager
    def case(self, case_id: str, item: str | None = None) -> Iterator[None]:
        """Guard one case: a :class:`DataError` inside discards its files and records it as skipped."""
        try:
            yield
        except DataError as exc:
            shutil.rmtree(self.case_dir(case_id), ignore_errors=True)
            self.summary.skip(item or f"case {case_id}", str(exc))


@contextlib.contextmanager
def skipping(summary: PrepareSummary, item: str) -> Iterator[None]:
    """Record a :class:`DataError` raised inside as a skipped ``item`` and carry on (one view or series of a case)."""
    try:
        yield
    except DataError as exc:
        summary.skip(item, str(exc))


def empty_row(case_id: str, patient_id: str, dataset: str) -> dict[str, Any]:
    """A manifest row with every view empty, grades unknown (-1), areas unknown (NaN), no reports."""
    row: dict[str, Any] = {"case_id": str(case_id), "patient_id": str(patient_id), "split": "", "dataset": dataset}
    row.update({c: "" for c in IMAGE_COLUMNS + MASK_COLUMNS})
    row.update({c: MISSING_GRADE for c in GRADE_COLUMNS})
    row.update({c: float("nan") for c in AREA_COLUMNS})
    row["reports"] = ""
    return row


def reference_reports(
    grades: Sequence[int], case_id: str, seed: int, areas: Sequence[float | None] | None = None, n: int = 3
) -> str:
    """JSON list of reference reports written from the grades (empty when no level is graded)."""
    if all(g == MISSING_GRADE for g in grades):
        return ""
    rng = np.random.default_rng([seed, zlib.crc32(str(case_id).encode())])
    return json.dumps(write_reports(list(grades), areas, rng=rng, n=n))


def progress_bar(items: Iterable[Any], enabled: bool, total: int | None = None, desc: str = "") -> Iterable[Any]:
    """``tqdm`` progress bar on stderr when enabled, the plain iterable otherwise."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc=desc, unit="case", leave=False)


def grade_strata(df: pd.DataFrame) -> dict[str, int]:
    """Worst known grade per patient (-1 when none), the stratum of the split."""
    worst = df[list(GRADE_COLUMNS)].max(axis=1).astype(int)
    return worst.groupby(df["patient_id"].astype(str)).max().to_dict()


@dataclass(frozen=True)
class PrepareResult:
    manifest: Path
    summary: dict[str, Any]


def prepare_dataset(
    name: str,
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    val_frac: float = 0.15,
    test_frac: float = 0.15,
    overwrite: bool = False,
    progress: bool = False,
    **options: Any,
) -> PrepareResult:
    """Convert dataset ``name`` under ``root`` into views + ``manifest.csv`` + ``prepare_summary.json`` in ``out``.

    Everything is written to a temporary sibling of ``out`` and moved into place at the end; on any error nothing is
    left behind. Rows that already carry a valid ``split`` (NIfTI manifests) keep it; the others get seeded,
    patient-level, grade-stratified splits, made separately for each source ``dataset`` when the rows mix several.
    """
    adapter = DATASETS.build(name, seed=seed, **options)
    root, out = Path(root).expanduser().resolve(), Path(out).expanduser().resolve()
    if not root.exists():
        raise DataError(f"{root}: dataset root not found")
    _check_out_apart_from_root(root, out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose a folder for --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DataError(f"{out}: output folder exists and is not empty; choose another --out or pass --overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=out.parent))
    try:
        summary = PrepareSummary(dataset=name, root=str(root))
        rows = adapter.collect(root, CaseWriter(staging, summary), summary, progress)
        if not rows:
            reasons = "; ".join(f"{s['item']}: {s['reason']}" for s in summary.skipped[:3])
            raise DataError(f"{root}: no usable case for dataset {name!r}" + (f" ({reasons})" if reasons else ""))
        df = pd.DataFrame(rows)
        df = _with_splits(df, seed, val_frac, test_frac)
        write_manifest(df, staging / MANIFEST_NAME)
        summary_dict = summary.to_dict(
            df, out=str(out), seed=seed, val_frac=val_frac, test_frac=test_frac, options=options
        )
        atomic_write_json(staging / SUMMARY_NAME, summary_dict)
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    # staging and replaced folders that killed runs into the same --out left behind (PID in the name, process gone)
    for pattern in (r"(?P<pid>\d+)\.\w+\.tmp", r"old-(?P<pid>\d+)"):
        remove_stale_staging(out.parent, rf"\.{re.escape(out.name)}\.{pattern}")
    return PrepareResult(out / MANIFEST_NAME, summary_dict)


def _check_out_apart_from_root(root: Path, out: Path) -> None:
    """Refuse an ``--out`` that is, contains or lies inside the source folder (``--overwrite`` would delete it)."""
    source = root if root.is_dir() else root.parent
    if out == source or source in out.parents:
        raise DataError(f"--out {out} lies inside the dataset folder {source} (--root); choose an --out outside it")
    if out in source.parents:
        raise DataError(f"--out {out} contains the dataset folder {source} (--root); choose an --out outside it")


def _with_splits(df: pd.DataFrame, seed: int, val_frac: float, test_frac: float) -> pd.DataFrame:
    given = df["split"].fillna("").astype(str) if "split" in df else pd.Series("", index=df.index)
    if given.isin(["train", "val", "test"]).all():
        return df
    patients = df["patient_id"].astype(str)
    sources = df["dataset"].fillna("").astype(str) if "dataset" in df else pd.Series("", index=df.index)
    strata = grade_strata(df)
    splits: dict[str, str] = {}
    for source in sorted(set(sources)):  # each source dataset split on its own: every source in train, val and test
        members = patients[sources == source]
        splits.update(assign_splits(members, seed, val_frac, test_frac, strata={p: strata[p] for p in set(members)}))
    return df.assign(split=patients.map(splits))


def _move_into_place(staging: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    else:
        os.replace(staging, out)
