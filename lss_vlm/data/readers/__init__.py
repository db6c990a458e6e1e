"""Readers for real data: DICOM (pydicom), ITK ``.mha`` (SimpleITK), NIfTI (nibabel), all returning RAS+ volumes.

See :mod:`lss_vlm.data.readers.volume` for the geometry conventions (RAS+ world, ``[i, j, k]`` volumes, display-
oriented 2D views).
"""

from __future__ import annotations

import os
from pathlib import Path

from ...errors import DataError
from .dicom import read_dicom_series, read_dicom_slice
from .mha import read_itk
from .nifti import read_nifti, write_view
from .volume import (
    LPS_TO_RAS,
    Slice2D,
    Volume,
    extract_slice,
    orient_display,
    plane_affine,
    resample_to_plane,
    same_grid,
)

ITK_SUFFIXES: tuple[str, ...] = (".mha", ".mhd", ".nrrd", ".png", ".tif", ".tiff", ".bmp")

__all__ = [
    "LPS_TO_RAS",
    "Slice2D",
    "Volume",
    "extract_slice",
    "orient_display",
    "plane_affine",
    "read_dicom_series",
    "read_dicom_slice",
    "read_itk",
    "read_nifti",
    "read_volume",
    "resample_to_plane",
    "same_grid",
    "write_view",
]


def read_volume(path: str | os.PathLike[str]) -> Volume:
    """Read any supported image: a folder of ``.dcm`` (one series), ``.dcm``, ``.nii(.gz)``, or an ITK format."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        return read_dicom_series(path)
    if not path.exists():
        raise DataError(f"{path}: image file not found")
    if name.endswith((".nii", ".nii.gz")):
        return read_nifti(path)
    if name.endswith(".dcm"):
        return read_dicom_slice(path)
    if name.endswith(ITK_SUFFIXES):
        return read_itk(path)
    raise DataError(
        f"{path}: unsupported image format; expected .nii/.nii.gz, .dcm (or a DICOM folder), {', '.join(ITK_SUFFIXES)}"
    )
