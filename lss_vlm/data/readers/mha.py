"""ITK images (``.mha``, ``.mhd``, ``.nrrd``, and 2D ``.png``/``.tif`` label images) with SimpleITK → RAS+ Volume.

SimpleITK reports origin, spacing and a direction matrix ``D`` (columns = index axis directions) in LPS+; the position
of index ``(i, j, k)`` is ``origin + D · diag(spacing) · (i, j, k)``. ``GetArrayFromImage`` returns ``[k, j, i]``; the
volume is transposed to ``[i, j, k]`` and the affine converted with :data:`LPS_TO_RAS`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ...errors import DataError
from .volume import LPS_TO_RAS, Volume, check_finite


def sitk_affine(image: sitk.Image) -> np.ndarray:
    """RAS affine (4x4) of a 2D or 3D SimpleITK image, for the ``[i, j, k]`` index grid (2D: k is a unit axis)."""
    dim = image.GetDimension()
    direction = np.eye(3)
    direction[:dim, :dim] = np.asarray(image.GetDirection(), dtype=float).reshape(dim, dim)
    spacing = np.ones(3)
    spacing[:dim] = image.GetSpacing()
    origin = np.zeros(3)
    origin[:dim] = image.GetOrigin()
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing
    lps[:3, 3] = origin
    return LPS_TO_RAS @ lps


def read_itk(path: str | os.PathLike[str]) -> Volume:
    """Read an ITK-readable image as a :class:`Volume` (2D images get one slice). Single-component images only."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise DataError(f"{path}: not a readable image ({str(exc).strip().splitlines()[-1]})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(
            f"{path}: expected a grey-level or label image, got {image.GetNumberOfComponentsPerPixel()} components "
            "per pixel (colour image?)"
        )
    if image.GetDimension() not in (2, 3):
        raise DataError(f"{path}: expected a 2D or 3D image, got {image.GetDimension()}D")
    data = sitk.GetArrayFromImage(image).T  # [k, j, i] -> [i, j, k]
    if data.ndim == 2:
        data = data[:, :, None]
    return check_finite(Volume(np.ascontiguousarray(data), sitk_affine(image), source=str(path)))
