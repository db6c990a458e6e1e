"""DICOM series and slices with pydicom → :class:`~lss_vlm.data.readers.volume.Volume` in RAS+.

Geometry (DICOM PS3.3 C.7.6.2.1.1): the patient position (LPS, mm) of pixel ``(row r, column c)`` of an instance is
``P = IPP + c · Δc · X + r · Δr · Y`` where ``IPP`` = ImagePositionPatient (centre of the first pixel),
``X`` = first three ImageOrientationPatient values (direction of increasing column index), ``Y`` = last three
(direction of increasing row index), ``Δr, Δc`` = PixelSpacing (row spacing first, then column spacing).
Slices of a series are sorted by the projection of their IPP on the slice normal ``N = X × Y`` (InstanceNumber breaks
ties); the slice step is the median distance between consecutive projections. The volume is indexed
``[c, r, slice]`` and its affine is ``LPS_TO_RAS @ [[X·Δc, Y·Δr, N·Δs, IPP₀], [0, 0, 0, 1]]``.
Stored values are turned into modality values with RescaleSlope/RescaleIntercept.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from ...errors import DataError
from .volume import LPS_TO_RAS, Volume, check_finite

#: Direction cosines of two instances closer than this (per component) count as the same orientation.
ORIENTATION_TOLERANCE = 1e-3
#: Relative deviation from the median slice step above which a series counts as non-uniform (gaps, overlaps).
SPACING_TOLERANCE = 0.05


@dataclass(frozen=True)
class SliceGeometry:
    """Geometry of one DICOM instance in LPS mm: column/row/normal unit vectors, first-pixel position, spacing."""

    column_dir: np.ndarray  # X: direction of increasing column index
    row_dir: np.ndarray  # Y: direction of increasing row index
    normal: np.ndarray  # X × Y
    position: np.ndarray  # ImagePositionPatient
    row_spacing: float  # PixelSpacing[0], mm between rows
    column_spacing: float  # PixelSpacing[1], mm between columns

    def pixel_to_lps(self, column: float, row: float) -> np.ndarray:
        """LPS mm of pixel ``(column x, row y)`` (the RSNA coordinate convention: x = column, y = row)."""
        return self.position + column * self.column_spacing * self.column_dir + row * self.row_spacing * self.row_dir

    def affine(self, slice_step: float) -> np.ndarray:
        """RAS affine of the ``[column, row, slice]`` index grid with ``slice_step`` mm between slices."""
        lps = np.eye(4)
        lps[:3, 0] = self.column_dir * self.column_spacing
        lps[:3, 1] = self.row_dir * self.row_spacing
        lps[:3, 2] = self.normal * slice_step
        lps[:3, 3] = self.position
        return LPS_TO_RAS @ lps


def _where(ds: Dataset) -> str:
    return str(getattr(ds, "filename", None) or "DICOM instance")


def _floats(ds: Dataset, keyword: str, count: int) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or value == "":
        raise DataError(f"{_where(ds)}: missing {keyword}; cannot place the image in patient space")
    try:
        numbers = np.asarray(
            [float(v) for v in (value if isinstance(value, Sequence) and not isinstance(value, str) else [value])],
            dtype=float,
        )
    except (TypeError, ValueError):
        raise DataError(f"{_where(ds)}: {keyword} {value!r} is not {count} numbers") from None
    if numbers.size != count or not np.all(np.isfinite(numbers)):
        raise DataError(f"{_where(ds)}: {keyword} {list(numbers)} is not {count} finite numbers")
    return numbers


def tag_number(ds: Dataset, keyword: str, default: float | None = None) -> float | None:
    """A numeric tag (DS/IS/US) of an instance as a finite float; ``default`` when absent or empty.

    Raises :class:`DataError` naming the file and the tag when the value is not one finite number (e.g. a corrupt
    ``InstanceNumber`` "abc" or a ``RescaleSlope`` "n/a"), so the caller skips that case instead of crashing.
    """
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(f"{_where(ds)}: {keyword} {str(value)[:40]!r} is not a number") from None
    if not np.isfinite(number):
        raise DataError(f"{_where(ds)}: {keyword} {number} is not a finite number")
    return number


def slice_geometry(ds: Dataset) -> SliceGeometry:
    """Geometry of one instance. Raises :class:`DataError` naming the file for a missing or bad tag."""
    orientation = _floats(ds, "ImageOrientationPatient", 6)
    column_dir, row_dir = orientation[:3], orientation[3:]
    if not (np.isclose(np.linalg.norm(column_dir), 1, atol=1e-2) and np.isclose(np.linalg.norm(row_dir), 1, atol=1e-2)):
        raise DataError(f"{_where(ds)}: ImageOrientationPatient {list(orientation)} is not two unit vectors")
    column_dir, row_dir = column_dir / np.linalg.norm(column_dir), row_dir / np.linalg.norm(row_dir)
    if abs(column_dir @ row_dir) > 1e-2:
        raise DataError(f"{_where(ds)}: ImageOrientationPatient {list(orientation)} is not orthogonal")
    row_spacing, column_spacing = _floats(ds, "PixelSpacing", 2)
    if row_spacing <= 0 or column_spacing <= 0:
        raise DataError(f"{_where(ds)}: PixelSpacing {[row_spacing, column_spacing]} must be positive")
    return SliceGeometry(
        column_dir=column_dir,
        row_dir=row_dir,
        normal=np.cross(column_dir, row_dir),
        position=_floats(ds, "ImagePositionPatient", 3),
        row_spacing=float(row_spacing),
        column_spacing=float(column_spacing),
    )


def read_header(path: str | os.PathLike[str], pixels: bool = False) -> Dataset:
    """One instance, header only unless ``pixels``. Raises :class:`DataError` for a missing or non-DICOM file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: DICOM file not found")
    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable DICOM file ({exc})") from None


def read_series_headers(directory: str | os.PathLike[str]) -> list[Dataset]:
    """Headers of every ``*.dcm`` instance in ``directory`` (unsorted)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"{directory}: DICOM series folder not found")
    files = sorted(directory.glob("*.dcm"))
    if not files:
        raise DataError(f"{directory}: no .dcm files in the series folder")
    return [read_header(f) for f in files]


def instance_number(ds: Dataset) -> int:
    """InstanceNumber of an instance (-1 when absent)."""
    number = tag_number(ds, "InstanceNumber", -1)
    if number != int(number):
        raise DataError(f"{_where(ds)}: InstanceNumber {number} is not a whole number")
    return int(number)


def sort_series(headers: Sequence[Dataset], require_uniform: bool = True) -> tuple[list[Dataset], float]:
    """Sort the instances of one stack along its normal and return them with the slice step in mm.

    Raises :class:`DataError` for mixed orientations, mixed pixel spacings or matrix sizes, two instances at the same
    position, multi-frame instances, and (with ``require_uniform``) non-uniform slice steps.
    """
    if not headers:
        raise DataError("empty DICOM series")
    where = str(Path(_where(headers[0])).parent)
    for ds in headers:
        if (tag_number(ds, "NumberOfFrames", 1) or 1) > 1:
            raise DataError(f"{_where(ds)}: multi-frame DICOM is not supported; export one file per slice")
    geometries = [slice_geometry(ds) for ds in headers]
    first, first_ds = geometries[0], headers[0]
    for g, ds in zip(geometries[1:], headers[1:]):
        if not (
            np.allclose(g.column_dir, first.column_dir, atol=ORIENTATION_TOLERANCE)
            and np.allclose(g.row_dir, first.row_dir, atol=ORIENTATION_TOLERANCE)
        ):
            raise DataError(
                f"{where}: mixed orientations in one series (ImageOrientationPatient "
                f"{np.round(np.r_[first.column_dir, first.row_dir], 4).tolist()} in {Path(_where(first_ds)).name} vs "
                f"{np.round(np.r_[g.column_dir, g.row_dir], 4).tolist()} in {Path(_where(ds)).name}); "
                "expected one parallel stack"
            )
        if not np.allclose((g.row_spacing, g.column_spacing), (first.row_spacing, first.column_spacing), rtol=1e-3):
            raise DataError(f"{where}: mixed PixelSpacing in one series ({Path(_where(ds)).name})")
        if (ds.get("Rows"), ds.get("Columns")) != (first_ds.get("Rows"), first_ds.get("Columns")):
            raise DataError(f"{where}: mixed image sizes (Rows/Columns) in one series ({Path(_where(ds)).name})")
    depth = np.array([g.position @ first.normal for g in geometries])
    order = sorted(range(len(headers)), key=lambda i: (depth[i], instance_number(headers[i])))
    sorted_depth = depth[order]
    steps = np.diff(sorted_depth)
    if steps.size and steps.min() < 1e-3:
        i = int(np.argmin(steps))
        raise DataError(
            f"{where}: two instances at the same position ({Path(_where(headers[order[i]])).name}, "
            f"{Path(_where(headers[order[i + 1]])).name}); expected one instance per slice"
        )
    if steps.size:
        step = float(np.median(steps))
        if require_uniform and np.max(np.abs(steps - step)) > SPACING_TOLERANCE * step:
            raise DataError(
                f"{where}: non-uniform slice spacing ({steps.min():.3g}-{steps.max():.3g} mm); "
                "expected one evenly spaced stack"
            )
    else:
        step = _single_slice_step(headers[0])
    return [headers[i] for i in order], step


def _single_slice_step(ds: Dataset) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = tag_number(ds, keyword)
        if value is not None and value > 0:
            return value
    return 1.0


def pixel_values(ds: Dataset) -> np.ndarray:
    """Modality values ``[rows, columns]`` (float32): stored value × RescaleSlope + RescaleIntercept."""
    if "PixelData" not in ds:
        ds = read_header(_where(ds), pixels=True)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for unsupported transfer syntaxes / corrupt data
        raise DataError(f"{_where(ds)}: cannot decode pixel data ({exc})") from None
    if stored.ndim != 2:
        raise DataError(f"{_where(ds)}: expected one 2D grey-level frame, got pixel array of shape {stored.shape}")
    slope = tag_number(ds, "RescaleSlope", 1.0) or 1.0
    intercept = tag_number(ds, "RescaleIntercept", 0.0) or 0.0
    return (stored.astype(np.float32) * slope + intercept).astype(np.float32)


def read_dicom_slice(path: str | os.PathLike[str]) -> Volume:
    """One instance as a one-slice :class:`Volume` (slice step = SpacingBetweenSlices or SliceThickness)."""
    ds = read_header(path, pixels=True)
    geometry = slice_geometry(ds)
    data = pixel_values(ds).T[:, :, None]
    return check_finite(Volume(data, geometry.affine(_single_slice_step(ds)), source=str(path)))


def read_dicom_series(directory: str | os.PathLike[str], require_uniform: bool = True) -> Volume:
    """All ``*.dcm`` instances of a series folder as one sorted :class:`Volume` (RAS affine, rescaled values)."""
    ordered, step = sort_series(read_series_headers(directory), require_uniform=require_uniform)
    data = np.stack([pixel_values(ds).T for ds in ordered], axis=-1)
    return check_finite(Volume(data, slice_geometry(ordered[0]).affine(step), source=str(directory)))
