"""The acquired grid of axial views stored in foreign orientations, anisotropic, larger or smaller than the crop.

The phantom writes every axial view already in the canonical ``PLS`` orientation at a square pixel, so its tests cannot
tell a grid recorded before ``Orientationd`` from one recorded after it. Here a sac (and a disc) is drawn in world
coordinates on grids that are transposed, flipped, anisotropic, cropped and padded; the loader's true mask, resampled
back with :func:`to_native_grid`, must land on the acquired grid turned to ``PLS`` (what nibabel's ``as_reoriented``
gives) and keep the sac's area and AP diameter.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from lss_vlm.constants import AXIAL_VIEWS, NUM_LABELS, VIEWS
from lss_vlm.data.dataset import build_dataset
from lss_vlm.data.native_grid import native_spacing, to_native_grid
from lss_vlm.reports.composer import DISC, SAC, measure_level, measurement_labels

_DIRECTION = {"R": (1, 0, 0), "L": (-1, 0, 0), "A": (0, 1, 0), "P": (0, -1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}
#: (axcodes of rows, columns, slice; (row_mm, col_mm); (H, W)): none canonical, all anisotropic; the first is larger
#: than the model's 64 mm field of view in both directions (cropped), the second and third smaller (padded), the last
#: two mixed.
_GRIDS = (
    ("LPS", (0.6, 0.9), (200, 150)),
    ("RAS", (0.9, 0.7), (60, 80)),
    ("ARI", (0.6, 0.9), (90, 60)),
    ("PRI", (1.1, 0.45), (50, 160)),
    ("LAS", (0.5, 1.0), (150, 50)),
)
_CENTRE = np.array([1.5, -2.0, 10.0])  # world centre of every grid (RAS mm)
_SAC = ((7.0, -9.0), (8.0, 5.5))  # centre (x, y) and semi-axes (lateral, AP) in mm: off the grid's centre
_DISC = ((7.0, 7.0), (13.0, 5.0))  # anterior to the sac


def _affine(codes: str, spacing: tuple[float, float], shape: tuple[int, int]) -> np.ndarray:
    a = np.eye(4)
    a[:3, 0] = np.array(_DIRECTION[codes[0]], float) * spacing[0]
    a[:3, 1] = np.array(_DIRECTION[codes[1]], float) * spacing[1]
    a[:3, 2] = np.array(_DIRECTION[codes[2]], float) * 4.0
    a[:3, 3] = _CENTRE - a[:3, :2] @ (np.array(shape, float) - 1) / 2
    return a


def _labels(affine: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The label map sampled at the pixel centres of a grid."""
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    x, y, _ = affine[:3, :2] @ np.stack([i.ravel(), j.ravel()]) + affine[:3, 3:4]
    labels = np.zeros(i.size, np.uint8)
    for value, ((cx, cy), (ax, ay)) in ((DISC, _DISC), (SAC, _SAC)):
        labels[((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1] = value
    return labels.reshape(shape)


@pytest.fixture(scope="module")
def foreign_views(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-case manifest whose five axial views use :data:`_GRIDS` (uncompressed NIfTI, no sagittal view)."""
    root = tmp_path_factory.mktemp("foreign_views")
    row: dict[str, str] = {"case_id": "c0", "patient_id": "p0", "split": "test", "dataset": "geometry"}
    row.update({f"{kind}_{v}": "" for v in VIEWS for kind in ("img", "seg")})
    for view, (codes, spacing, shape) in zip(AXIAL_VIEWS, _GRIDS):
        affine = _affine(codes, spacing, shape)
        labels = _labels(affine, shape)
        image = (0.1 + 0.4 * (labels == DISC) + 0.9 * (labels == SAC)).astype(np.float32)
        nib.save(nib.Nifti1Image(image[:, :, None], affine), root / f"{view}.nii")
        nib.save(nib.Nifti1Image(labels[:, :, None], affine), root / f"{view}_seg.nii")
        row[f"img_{view}"], row[f"seg_{view}"] = f"{view}.nii", f"{view}_seg.nii"
    pd.DataFrame([row]).to_csv(root / "manifest.csv", index=False)
    return root / "manifest.csv"


def _canonical(path: Path) -> nib.Nifti1Image:
    """The file turned to the loader's axial orientation (rows P, columns L, slice S) by nibabel."""
    image = nib.load(path)
    start = nib.orientations.io_orientation(image.affine)
    return image.as_reoriented(nib.orientations.ornt_transform(start, nib.orientations.axcodes2ornt("PLS")))


def test_true_masks_come_back_onto_the_oriented_acquired_grid(foreign_views: Path) -> None:
    # a 0.5 mm model grid (64 mm field of view), finer than every acquired pixel: the round trip is then nearly exact,
    # so any misplaced grid shows. (At a coarser model grid the sac's area varies by several % either way.)
    item = build_dataset(foreign_views, "test", spatial_size=128, target_spacing={"axial": 0.5}, cache=False)[0]
    for view, (codes, spacing, _shape) in zip(AXIAL_VIEWS, _GRIDS):
        j = VIEWS.index(view)
        acquired = _canonical(foreign_views.parent / f"{view}_seg.nii")
        truth = np.asarray(acquired.dataobj).squeeze().astype(int)
        # the recorded grid is the acquired one after the canonical orientation (transposed, flipped), not the file's
        assert item["native_shape"][j].tolist() == [*truth.shape, 1], (view, codes)
        assert np.allclose(item["native_affine"][j].numpy(), acquired.affine, atol=1e-4), (view, codes)
        row_mm, col_mm = native_spacing(item["native_affine"][j])
        assert {round(row_mm, 4), round(col_mm, 4)} == set(spacing) and row_mm * col_mm == pytest.approx(
            np.prod(spacing), rel=1e-5
        )
        # the loader's true mask, sent back, lands on the sac and keeps its area and AP diameter
        onehot = torch.nn.functional.one_hot(item["masks"][j].clamp(0, NUM_LABELS - 1), NUM_LABELS).permute(2, 0, 1)
        native = to_native_grid(onehot.float(), item["affine"][j], item["native_affine"][j], item["native_shape"][j])
        labels = measurement_labels(native.numpy())
        assert labels.shape == truth.shape, (view, codes)
        sac, true_sac = labels == SAC, truth == SAC
        dice = 2 * (sac & true_sac).sum() / (sac.sum() + true_sac.sum())
        assert dice > 0.97, (view, codes, dice)
        got, want = measure_level(labels, (row_mm, col_mm)), measure_level(truth, (row_mm, col_mm))
        assert abs(int(sac.sum()) - int(true_sac.sum())) <= 2, (view, codes, int(sac.sum()), int(true_sac.sum()))
        assert got.area_mm2 == pytest.approx(want.area_mm2, abs=2.5 * row_mm * col_mm), (view, codes)
        assert got.ap_mm == pytest.approx(want.ap_mm, abs=max(spacing)), (view, codes)
        # rows run anterior → posterior: the sac lies below the disc, as in the oriented file
        assert np.argwhere(sac).mean(axis=0)[0] > np.argwhere(labels == DISC).mean(axis=0)[0], (view, codes)
