"""Turning volumes into the 2D views of a case: mid-sagittal slices, native axial slices, masks on the same grid."""

from __future__ import annotations

import numpy as np

from ...errors import DataError
from ..labels import apply_label_mapping
from ..readers.volume import (
    PLANE_NORMALS,
    Plane,
    Slice2D,
    Volume,
    extract_slice,
    orient_display,
    resample_to_plane,
    same_grid,
)


def plane_of_view(view: str) -> Plane:
    """``sagittal`` for ``sag_*`` views, ``axial`` for ``ax_*`` views."""
    return "sagittal" if view.startswith("sag_") else "axial"


def slice_axis(volume: Volume, plane: Plane) -> int:
    """Index axis to slice along for ``plane``: a unit axis if the volume is 2D, else the one nearest the normal."""
    unit = [a for a in range(3) if volume.data.shape[a] == 1]
    if unit:
        return unit[-1]
    return volume.axis_along(PLANE_NORMALS[plane])


def middle_index(volume: Volume, axis: int, mask: np.ndarray | None = None) -> int:
    """Slice index at the centre of the labelled voxels of ``mask`` along ``axis`` (the middle slice without)."""
    if mask is not None and mask.any():
        other = tuple(a for a in range(3) if a != axis)
        weights = mask.sum(axis=other).astype(float)
        return int(round(float(np.arange(weights.size) @ weights / weights.sum())))
    return volume.data.shape[axis] // 2


def display_slice(volume: Volume, plane: Plane, index: int | None = None, axis: int | None = None) -> Slice2D:
    """Slice ``index`` (default: the middle) of ``volume`` across ``plane``, in display orientation."""
    axis = slice_axis(volume, plane) if axis is None else axis
    index = volume.data.shape[axis] // 2 if index is None else index
    return orient_display(extract_slice(volume, axis, index), plane)


def mask_on_view(mask: Volume, image_volume: Volume, view: Slice2D, axis: int, index: int, plane: Plane) -> Slice2D:
    """The mask on the pixel grid of ``view``: the same native slice when grids match, else nearest-neighbour."""
    if same_grid(mask, image_volume):
        return orient_display(extract_slice(mask, axis, index), plane)
    if mask.data.ndim != 3:
        raise DataError(f"{mask.source}: mask must be 2D or 3D")
    return resample_to_plane(mask, view.affine, view.array.shape, order=0)


def mapped_mask(volume: Volume, mapping: dict[int, int] | None) -> Volume:
    """A copy of a mask volume with values mapped onto our labels."""
    return Volume(apply_label_mapping(volume.data, mapping, where=volume.source), volume.affine, volume.source)
