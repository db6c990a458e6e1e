"""Images in patient space: a :class:`Volume` (3D array + RAS affine), 2D :class:`Slice2D` views, slicing and reslicing.

Geometry conventions (the same for every reader):

* Every affine maps voxel indices to **RAS+ millimetres**, the NIfTI world convention: x grows towards the patient's
  Right, y towards Anterior, z towards Superior. DICOM and ITK/SimpleITK (``.mha``) use LPS+ (x towards Left,
  y towards Posterior, z towards Superior); their readers convert with :data:`LPS_TO_RAS` (negate x and y), so a
  point keeps its anatomical place whatever the source.
* :class:`Volume` data is indexed ``[i, j, k]`` like nibabel and SimpleITK: ``i`` = column of a DICOM/ITK slice (x),
  ``j`` = row (y), ``k`` = slice. The affine column ``c`` is the step in mm (RAS) of index axis ``c``.
* :class:`Slice2D` arrays are indexed ``[row, col]`` in **display orientation** (:func:`orient_display`):
  sagittal views have rows running superior→inferior and columns anterior→posterior (patient facing left);
  axial views have rows running anterior→posterior and columns patient-right→patient-left (radiological convention).
  The 4x4 affine maps ``(row, col, 0, 1)`` to RAS mm; ``spacing`` is ``(row_mm, col_mm)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from ...errors import DataError

#: LPS+ (DICOM, ITK) → RAS+ (NIfTI) world coordinates: negate x and y.
LPS_TO_RAS: np.ndarray = np.diag([-1.0, -1.0, 1.0, 1.0])

#: RAS+ unit vectors of the anatomical directions.
RIGHT_TO_LEFT = np.array([-1.0, 0.0, 0.0])
ANTERIOR_TO_POSTERIOR = np.array([0.0, -1.0, 0.0])
SUPERIOR_TO_INFERIOR = np.array([0.0, 0.0, -1.0])

Plane = Literal["sagittal", "axial"]
#: (row direction, column direction) of the display orientation of each plane, in RAS+.
DISPLAY_DIRECTIONS: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "sagittal": (SUPERIOR_TO_INFERIOR, ANTERIOR_TO_POSTERIOR),
    "axial": (ANTERIOR_TO_POSTERIOR, RIGHT_TO_LEFT),
}
#: Normal of each plane (the anatomical axis a stack of such slices runs along), RAS+.
PLANE_NORMALS: dict[str, np.ndarray] = {"sagittal": RIGHT_TO_LEFT, "axial": SUPERIOR_TO_INFERIOR}


@dataclass(frozen=True)
class Volume:
    """A 3D image ``data[i, j, k]`` with ``affine`` (4x4) mapping voxel indices to RAS+ mm."""

    data: np.ndarray
    affine: np.ndarray
    source: str = ""

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``i, j, k``."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def axis_along(self, direction: np.ndarray) -> int:
        """Index axis whose direction is closest (up to sign) to ``direction`` (RAS)."""
        units = self.affine[:3, :3] / np.linalg.norm(self.affine[:3, :3], axis=0)
        return int(np.argmax(np.abs(units.T @ direction)))

    def world_to_voxel(self, points_ras: np.ndarray) -> np.ndarray:
        """Continuous voxel indices ``[..., 3]`` of RAS points ``[..., 3]``."""
        return apply_affine(np.linalg.inv(self.affine), points_ras)

    def voxel_to_world(self, indices: np.ndarray) -> np.ndarray:
        """RAS mm ``[..., 3]`` of voxel indices ``[..., 3]``."""
        return apply_affine(self.affine, indices)


@dataclass(frozen=True)
class Slice2D:
    """A 2D view ``array[row, col]`` with ``affine`` mapping ``(row, col, 0)`` to RAS+ mm."""

    array: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float]:
        """Pixel size in mm ``(row, col)``."""
        row, col = np.linalg.norm(self.affine[:3, :2], axis=0)
        return float(row), float(col)

    def pixel_to_world(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """RAS mm ``[N, 3]`` of pixel positions."""
        rc = np.stack([np.asarray(rows, float), np.asarray(cols, float), np.zeros(np.shape(rows))], axis=-1)
        return apply_affine(self.affine, rc)

    def world_to_pixel(self, points_ras: np.ndarray) -> np.ndarray:
        """``(row, col, out-of-plane distance in slice units)`` ``[..., 3]`` of RAS points."""
        return apply_affine(np.linalg.inv(self.affine), points_ras)


def check_finite(volume: Volume) -> Volume:
    """``volume`` itself; :class:`DataError` naming its source file when its affine or any voxel is NaN or infinite."""
    affine = np.asarray(volume.affine, dtype=float)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise DataError(f"{volume.source or 'image'}: the affine (voxel-to-world geometry) has NaN or infinite entries")
    if np.any(np.linalg.norm(affine[:3, :3], axis=0) == 0):
        raise DataError(f"{volume.source or 'image'}: the affine has a zero voxel size")
    data = np.asarray(volume.data)
    if np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.complexfloating):
        bad = ~np.isfinite(data)
        if bad.any():
            raise DataError(
                f"{volume.source or 'image'}: {int(bad.sum())} voxel(s) are NaN or infinite; "
                "expected finite intensities (replace them before preparing)"
            )
    return volume


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``affine @ [p, 1]`` for points ``[..., 3]``."""
    points = np.asarray(points, dtype=float)
    return points @ affine[:3, :3].T + affine[:3, 3]


def extract_slice(volume: Volume, axis: int, index: int) -> Slice2D:
    """The native slice ``index`` along index ``axis`` (no interpolation); rows/cols = the other axes in order."""
    size = volume.data.shape[axis]
    if not 0 <= index < size:
        raise DataError(f"{volume.source}: slice {index} is outside the {size} slices along axis {axis}")
    keep = [a for a in range(3) if a != axis]
    array = np.take(volume.data, index, axis=axis)
    origin = np.zeros(3)
    origin[axis] = index
    affine = np.eye(4)
    affine[:3, 0] = volume.affine[:3, keep[0]]
    affine[:3, 1] = volume.affine[:3, keep[1]]
    affine[:3, 2] = volume.affine[:3, axis]
    affine[:3, 3] = volume.voxel_to_world(origin)
    return Slice2D(np.ascontiguousarray(array), affine)


def orient_display(view: Slice2D, plane: Plane) -> Slice2D:
    """Transpose/flip a slice (exactly, no interpolation) so it is in the display orientation of ``plane``.

    The in-plane axis closest to the plane's row direction becomes the row axis, and each axis is flipped when it runs
    against its display direction. The affine is updated so every pixel keeps its RAS position.
    """
    row_target, col_target = DISPLAY_DIRECTIONS[plane]
    units = view.affine[:3, :2] / np.linalg.norm(view.affine[:3, :2], axis=0)
    keep = abs(units[:, 0] @ row_target) + abs(units[:, 1] @ col_target)
    swap = abs(units[:, 1] @ row_target) + abs(units[:, 0] @ col_target)
    array, affine = view.array, view.affine.copy()
    if swap > keep:
        array = array.T
        affine[:, [0, 1]] = affine[:, [1, 0]]
    for axis, target in ((0, row_target), (1, col_target)):
        if affine[:3, axis] @ target < 0:
            array = np.flip(array, axis=axis)
            affine[:3, 3] += affine[:3, axis] * (array.shape[axis] - 1)
            affine[:3, axis] = -affine[:3, axis]
    if np.linalg.det(affine[:3, :3]) < 0:  # keep the out-of-plane column a right-handed normal
        affine[:3, 2] = -affine[:3, 2]
    return Slice2D(np.ascontiguousarray(array), affine)


def plane_affine(
    center: np.ndarray, row_dir: np.ndarray, col_dir: np.ndarray, shape: tuple[int, int], spacing: float
) -> np.ndarray:
    """Affine of a ``shape`` grid of square ``spacing`` pixels centred on ``center`` (RAS), rows along ``row_dir``."""
    row_dir = np.asarray(row_dir, float) / np.linalg.norm(row_dir)
    col_dir = np.asarray(col_dir, float) - (np.asarray(col_dir, float) @ row_dir) * row_dir
    col_dir /= np.linalg.norm(col_dir)
    affine = np.eye(4)
    affine[:3, 0] = row_dir * spacing
    affine[:3, 1] = col_dir * spacing
    affine[:3, 2] = np.cross(row_dir, col_dir) * spacing
    affine[:3, 3] = np.asarray(center, float) - affine[:3, 0] * (shape[0] - 1) / 2 - affine[:3, 1] * (shape[1] - 1) / 2
    return affine


def resample_to_plane(volume: Volume, affine: np.ndarray, shape: tuple[int, int], order: int = 1) -> Slice2D:
    """Sample ``volume`` on the 2D grid ``(affine, shape)``; ``order`` 1 = linear (images), 0 = nearest (masks).

    Points more than half a voxel outside the volume get 0 (so a one-slice volume can be sampled in its own plane).
    """
    rows, cols = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    world = apply_affine(affine, np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(float))
    voxels = np.round(volume.world_to_voxel(world), 6)  # [H, W, 3]; rounding absorbs float noise on grid points
    shape = np.asarray(volume.data.shape)
    inside = np.all((voxels >= -0.5) & (voxels <= shape - 0.5), axis=-1)  # within half a voxel of the grid
    data = volume.data.astype(np.float32) if order > 0 else volume.data
    values = ndimage.map_coordinates(data, np.moveaxis(voxels, -1, 0), order=order, mode="nearest")
    values = np.where(inside, values, 0)
    return Slice2D(values.astype(volume.data.dtype if order == 0 else np.float32), affine.copy())


def same_grid(a: Volume, b: Volume, atol_mm: float = 1e-3) -> bool:
    """True when two volumes share shape and affine (within ``atol_mm``)."""
    return a.data.shape == b.data.shape and np.allclose(a.affine, b.affine, atol=atol_mm)
