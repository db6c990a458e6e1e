"""NIfTI with nibabel. NIfTI is already RAS+ (nibabel returns the sform/qform affine); 2D images get one slice."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from ...errors import DataError
from .volume import Slice2D, Volume, check_finite


def read_nifti(path: str | os.PathLike[str]) -> Volume:
    """Read a 2D or 3D NIfTI (trailing unit dimensions are dropped) as a :class:`Volume`."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises ImageFileError, OSError, EOFError, zlib errors ...
        raise DataError(f"{path}: not a readable NIfTI file ({exc})") from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 2D or 3D image, got shape {data.shape}")
    return check_finite(Volume(np.ascontiguousarray(data), np.asarray(image.affine, dtype=float), source=str(path)))


def write_view(path: str | os.PathLike[str], view: Slice2D, dtype: type | np.dtype = np.float32) -> None:
    """Write a 2D view as a 2D NIfTI ``[row, col]`` whose affine maps ``(row, col, 0)`` to RAS mm."""
    image = nib.Nifti1Image(np.asarray(view.array).astype(dtype), view.affine)
    image.set_sform(view.affine, code=1)  # scanner anatomical
    image.set_qform(view.affine, code=1)
    nib.save(image, str(path))
