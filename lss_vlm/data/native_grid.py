"""Predictions back on each view's acquired pixel grid, where its measurements are made.

The loader resamples every view to the model's grid (``data.target_spacing``, then a centre crop or pad to
``spatial_size``). Measurements quoted in a report (dural-sac area, AP diameter) belong to the image as acquired: a
radiologist measures on the scanner's pixels, and so does the phantom's reference writer. Measuring on the model's grid
instead adds the error of a second resampling, about ±1 px of 1.72 mm at the default 64 px: on the ground-truth masks
of the standard phantom's test split, only 2.7 % of the areas rounded to the integer mm² (4.0 % of the AP diameters
to 0.1 mm) equal the reference's when measured on the model's grid, against 56 % (69 %) after the loader's masks are
resampled back to the acquired grid (docs/metrics.md, "Which grid, which pixels").

What this module adds to MONAI: :class:`RecordNativeGridd` stores the acquired grid (after the canonical orientation,
before any resampling) in each view's metadata, and :func:`to_native_grid` resamples a ``[C, H, W]`` probability map
from the model's grid onto it with MONAI's :class:`~monai.transforms.SpatialResample` (bilinear, zeros outside the
model's field of view), as nnU-Net exports its predictions in the original image geometry and MONAI's
``SaveImage(resample=True)`` writes them to ``original_affine``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, SpatialResample

#: MetaTensor metadata keys of the acquired (oriented, not resampled) grid.
NATIVE_AFFINE, NATIVE_SHAPE = "native_affine", "native_shape"


class RecordNativeGridd(MapTransform):
    """Store each present key's current affine ``[4, 4]`` and spatial shape ``(H, W, D)`` in its metadata
    (:data:`NATIVE_AFFINE`, :data:`NATIVE_SHAPE`). Placed after ``Orientationd`` and before ``Spacingd``; MONAI's
    later transforms carry the metadata along."""

    def __init__(self, keys: Sequence[str]) -> None:
        super().__init__(keys=keys, allow_missing_keys=True)

    def __call__(self, data: Any) -> dict[str, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if isinstance(image, MetaTensor):
                image.meta[NATIVE_AFFINE] = image.affine.clone().to(torch.float64)
                image.meta[NATIVE_SHAPE] = torch.tensor(image.shape[1:], dtype=torch.int64)
        return d


def native_grid_of(image: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(affine [4, 4] float64, shape [3] int64)`` recorded by :class:`RecordNativeGridd`, or None."""
    meta = getattr(image, "meta", None) or {}
    if NATIVE_AFFINE not in meta or NATIVE_SHAPE not in meta:
        return None
    return torch.as_tensor(meta[NATIVE_AFFINE], dtype=torch.float64), torch.as_tensor(meta[NATIVE_SHAPE]).long()


def _usable_affine(affine: torch.Tensor) -> bool:
    """A finite 4 x 4 affine whose 3 x 3 part can be inverted (a grid, not zeros)."""
    a = torch.as_tensor(affine, dtype=torch.float64)
    return a.shape == (4, 4) and bool(torch.isfinite(a).all()) and abs(float(torch.linalg.det(a[:3, :3]))) > 1e-9


def _usable_shape(shape: torch.Tensor | Sequence[int]) -> bool:
    """``(H, W, 1)`` with H, W > 0: one slice."""
    s = [int(v) for v in shape]
    return len(s) == 3 and s[0] > 0 and s[1] > 0 and s[2] == 1


def has_native_grid(affine: torch.Tensor, native_affine: torch.Tensor, native_shape: torch.Tensor) -> bool:
    """Whether a batch item's view carries both grids (finite, invertible affines; a one-slice ``(H, W, 1)`` shape)."""
    return _usable_affine(affine) and _usable_affine(native_affine) and _usable_shape(native_shape)


def native_spacing(native_affine: torch.Tensor | np.ndarray) -> tuple[float, float]:
    """(row_mm, col_mm) of an acquired grid: the lengths of its affine's first two columns."""
    a = np.asarray(native_affine, dtype=np.float64)[:3, :3]
    return float(np.linalg.norm(a[:, 0])), float(np.linalg.norm(a[:, 1]))


def to_native_grid(
    probabilities: torch.Tensor,
    affine: torch.Tensor,
    native_affine: torch.Tensor,
    native_shape: torch.Tensor | Sequence[int],
) -> torch.Tensor:
    """Resample class probabilities from the model's grid onto the acquired grid.

    Args:
        probabilities: ``[C, H, W]`` (softmax over C classes) on the model's grid.
        affine: ``[4, 4]`` voxel-to-world affine of the model's grid (the batch's ``affine``; 2D views are one slice).
        native_affine: ``[4, 4]`` affine of the acquired grid (the batch's ``native_affine``).
        native_shape: its shape ``(H', W', 1)`` (the batch's ``native_shape``).

    Returns:
        ``[C, H', W']`` float32 probabilities on the acquired grid (bilinear; outside the model's field of view every
        class is 0, so an argmax reads background there).

    Raises:
        ValueError: ``probabilities`` is not ``[C, H, W]``, an affine is not a finite, invertible ``[4, 4]``, or
            ``native_shape`` is not ``(H', W', 1)`` with positive sides.
    """
    if probabilities.ndim != 3:
        raise ValueError(f"to_native_grid: expected probabilities [C, H, W], got shape {tuple(probabilities.shape)}")
    if not (_usable_affine(affine) and _usable_affine(native_affine)):
        raise ValueError("to_native_grid: affine and native_affine must be finite, invertible 4 x 4 matrices")
    if not _usable_shape(native_shape):
        raise ValueError(f"to_native_grid: native_shape must be (rows, cols, 1), got {list(native_shape)}")
    src, dst = torch.as_tensor(affine, dtype=torch.float64), torch.as_tensor(native_affine, dtype=torch.float64)
    image = MetaTensor(probabilities.detach().float().cpu()[..., None], affine=src)
    resampled = SpatialResample(mode="bilinear", padding_mode="zeros", dtype=torch.float64)(
        image, dst_affine=dst, spatial_size=[int(v) for v in native_shape]
    )
    plain = resampled.as_tensor() if isinstance(resampled, MetaTensor) else torch.as_tensor(resampled)
    return plain.float()[..., 0]
