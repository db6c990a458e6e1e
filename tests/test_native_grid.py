"""Predictions resampled back to the acquired grid: geometry, the loader's record of it, and the measurements."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from lss_vlm.constants import AXIAL_VIEWS, NUM_LABELS, VIEWS
from lss_vlm.data.dataset import build_dataloader, build_dataset
from lss_vlm.data.manifest import read_manifest
from lss_vlm.data.native_grid import has_native_grid, native_spacing, to_native_grid
from lss_vlm.reports.composer import SAC, measure_level
from lss_vlm.reports.writer import format_ap, format_area


def _affine(spacing: float, origin: float = 0.0) -> torch.Tensor:
    a = torch.eye(4, dtype=torch.float64)
    a[0, 0] = a[1, 1] = spacing
    a[:2, 3] = origin
    return a


def _disc_probabilities(size: int, spacing: float, radius_mm: float, centre_mm: float) -> torch.Tensor:
    """Two classes: the fraction of each pixel inside a circle (supersampled), and the rest."""
    fine = 8
    coords = (np.arange(size * fine) + 0.5) / fine * spacing - spacing / 2  # pixel centres at k * spacing
    rr, cc = np.meshgrid(coords, coords, indexing="ij")
    inside = ((rr - centre_mm) ** 2 + (cc - centre_mm) ** 2 <= radius_mm**2).astype(np.float32)
    frac = inside.reshape(size, fine, size, fine).mean(axis=(1, 3))
    return torch.from_numpy(np.stack([1.0 - frac, frac]))


def test_identical_grids_give_the_input_back() -> None:
    probs = torch.rand(3, 16, 12).softmax(dim=0)
    out = to_native_grid(probs, _affine(1.5), _affine(1.5), (16, 12, 1))
    assert out.shape == (3, 16, 12)
    assert torch.allclose(out, probs, atol=1e-5)


def test_resampling_keeps_position_and_area_of_a_structure() -> None:
    # model grid 2 mm x 32, acquired grid 1 mm x 64 over the same field (pixel centres at k * spacing)
    probs = _disc_probabilities(32, 2.0, radius_mm=9.0, centre_mm=30.0)
    out = to_native_grid(probs, _affine(2.0), _affine(1.0), (64, 64, 1))
    labels = out.argmax(dim=0).numpy()
    area = labels.sum() * 1.0
    assert area == pytest.approx(math.pi * 81, rel=0.06)
    rows, cols = np.nonzero(labels)
    assert rows.mean() == pytest.approx(30.0, abs=0.6) and cols.mean() == pytest.approx(30.0, abs=0.6)
    # outside the model's field of view every class is 0
    far = to_native_grid(probs, _affine(2.0), _affine(1.0, origin=200.0), (8, 8, 1))
    assert float(far.abs().max()) == 0.0


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[C, H, W\]"):
        to_native_grid(torch.zeros(4, 4), _affine(1.0), _affine(1.0), (4, 4, 1))
    nan = torch.full((4, 4), math.nan, dtype=torch.float64)
    for bad in (nan, torch.zeros(4, 4, dtype=torch.float64)):
        with pytest.raises(ValueError, match="finite, invertible 4 x 4"):
            to_native_grid(torch.zeros(2, 4, 4), bad, _affine(1.0), (4, 4, 1))
        assert not has_native_grid(bad, _affine(1.0), torch.tensor([4, 4, 1]))
    for shape in ((4, 4, 2), (4, 4), (0, 4, 1)):
        with pytest.raises(ValueError, match="native_shape must be"):
            to_native_grid(torch.zeros(2, 4, 4), _affine(1.0), _affine(1.0), shape)
    out = to_native_grid(torch.zeros(2, 4, 4), _affine(1.0), _affine(1.0), (4, 4, 1))
    assert type(out) is torch.Tensor and out.dtype == torch.float32


def test_native_spacing_reads_the_affine_columns() -> None:
    a = _affine(1.0)
    a[:3, 0] = torch.tensor([0.0, -1.5, 0.0], dtype=torch.float64)
    a[:3, 1] = torch.tensor([-0.7, 0.0, 0.0], dtype=torch.float64)
    assert native_spacing(a) == pytest.approx((1.5, 0.7))


def test_loader_records_the_acquired_grid(tiny_phantom: Path) -> None:
    batch = next(iter(build_dataloader(tiny_phantom, "train", spatial_size=48, batch_size=2)))
    table = read_manifest(tiny_phantom).set_index("case_id")
    j = VIEWS.index(AXIAL_VIEWS[0])
    image = nib.load(tiny_phantom.parent / table.loc[batch["case_id"][0], f"img_{AXIAL_VIEWS[0]}"])
    assert batch["native_shape"][0, j].tolist() == [64, 64, 1]
    assert native_spacing(batch["native_affine"][0, j]) == pytest.approx(image.header.get_zooms()[:2], rel=1e-5)
    assert has_native_grid(batch["affine"][0, j], batch["native_affine"][0, j], batch["native_shape"][0, j])
    augmented = next(iter(build_dataloader(tiny_phantom, "train", spatial_size=48, batch_size=2, augment=True)))
    assert not has_native_grid(
        augmented["affine"][0, j], augmented["native_affine"][0, j], augmented["native_shape"][0, j]
    )


def test_true_masks_measured_on_the_acquired_grid_match_the_references(tiny_phantom: Path) -> None:
    """The phantom writes each reference's numbers from its acquired label map; the loader's 64 px, 1.72 mm masks
    measured where they are rarely repeat them, resampled back they mostly do (the reason for eval.measure_on)."""
    table = read_manifest(tiny_phantom).set_index("case_id")
    same = {"model": [0, 0], "native": [0, 0]}
    total = 0
    for item in build_dataset(tiny_phantom, "train", spatial_size=64):
        for j, view in enumerate(VIEWS):
            if view not in AXIAL_VIEWS:
                continue
            acquired = nib.load(tiny_phantom.parent / table.loc[item["case_id"], f"seg_{view}"])
            truth = measure_level(np.asarray(acquired.dataobj).squeeze().astype(int), acquired.header.get_zooms()[:2])
            labels = item["masks"][j]
            onehot = torch.nn.functional.one_hot(labels.clamp(0, NUM_LABELS - 1), NUM_LABELS).permute(2, 0, 1).float()
            native = to_native_grid(onehot, item["affine"][j], item["native_affine"][j], item["native_shape"][j])
            routes = {
                "model": measure_level(labels.numpy(), tuple(item["spacing"][j].tolist())),
                "native": measure_level(native.argmax(dim=0).numpy(), native_spacing(item["native_affine"][j])),
            }
            total += 1
            for name, m in routes.items():
                same[name][0] += format_area(m.area_mm2) == format_area(truth.area_mm2)
                same[name][1] += format_ap(m.ap_mm) == format_ap(truth.ap_mm)
            assert bool((native.argmax(dim=0) == SAC).any())
    assert total >= 20
    area_model, ap_model = (n / total for n in same["model"])
    area_native, ap_native = (n / total for n in same["native"])
    assert area_native >= 0.25 and ap_native >= 0.5, (same, total)
    assert area_native > 3 * area_model and ap_native > 3 * ap_model, (same, total)


def _true_mask_exact_shares(phantom: Path, spatial_size: int) -> tuple[float, float, int]:
    """(area, AP) share of the train split's axial views whose true masks, loaded on a ``spatial_size`` px grid over
    the default 110 mm axial field of view and measured back on the acquired grid as a prediction is
    (``measurement_labels``), repeat the acquired label map's rounded numbers; and the number of views."""
    from lss_vlm.reports.composer import measurement_labels

    table = read_manifest(phantom).set_index("case_id")
    same, total = [0, 0], 0
    for item in build_dataset(phantom, "train", spatial_size=spatial_size):
        for j, view in enumerate(VIEWS):
            if view not in AXIAL_VIEWS:
                continue
            acquired = nib.load(phantom.parent / table.loc[item["case_id"], f"seg_{view}"])
            truth = measure_level(np.asarray(acquired.dataobj).squeeze().astype(int), acquired.header.get_zooms()[:2])
            labels = item["masks"][j].clamp(0, NUM_LABELS - 1)
            onehot = torch.nn.functional.one_hot(labels, NUM_LABELS).permute(2, 0, 1).float()
            native = to_native_grid(onehot, item["affine"][j], item["native_affine"][j], item["native_shape"][j])
            m = measure_level(measurement_labels(native.numpy()), native_spacing(item["native_affine"][j]))
            same[0] += format_area(m.area_mm2) == format_area(truth.area_mm2)
            same[1] += format_ap(m.ap_mm) == format_ap(truth.ap_mm)
            total += 1
    return same[0] / total, same[1] / total, total


def test_a_finer_model_grid_gives_back_the_references_numbers(tiny_phantom: Path) -> None:
    """Why configs/suites/reports.yaml trains on 96 px: the true masks survive the round trip through a 1.15 mm grid
    (the phantom's acquired pixels are 1.5-1.95 mm) almost digit for digit, through 1.72 mm (64 px) only about half the
    time (standard phantom test split: 93 % / 97 % against 56 % / 69 %; docs/metrics.md, "Exact numbers")."""
    area64, ap64, n = _true_mask_exact_shares(tiny_phantom, 64)
    area96, ap96, _ = _true_mask_exact_shares(tiny_phantom, 96)
    assert n >= 20
    assert area96 >= 0.8 and ap96 >= 0.85, (area96, ap96, n)
    assert area96 >= area64 + 0.2 and ap96 >= ap64, (area64, ap64, area96, ap96, n)


def _one_axial_view_batch(native: bool) -> tuple[dict, torch.Tensor]:
    """A batch of one case whose first axial view sits on a 2 mm x 32 grid, acquired at 1 mm x 64."""
    n_views = len(VIEWS)
    j = VIEWS.index(AXIAL_VIEWS[0])
    probs = _disc_probabilities(32, 2.0, radius_mm=9.0, centre_mm=30.0)
    probabilities = torch.zeros(1, n_views, NUM_LABELS, 32, 32)
    probabilities[0, j, 0], probabilities[0, j, SAC] = probs[0], probs[1]
    affine = torch.full((1, n_views, 4, 4), math.nan, dtype=torch.float64)
    native_affine = affine.clone()
    affine[0, j], native_affine[0, j] = _affine(2.0), _affine(1.0)
    batch = {
        "view_valid": torch.zeros(1, n_views, dtype=torch.bool),
        "spacing": torch.full((1, n_views, 2), 2.0),
        "affine": affine,
        "native_affine": native_affine if native else torch.full_like(affine, math.nan),
        "native_shape": torch.tensor([[[64, 64, 1]] * n_views]),
    }
    batch["view_valid"][0, j] = True
    return batch, probabilities


def test_evaluation_measures_on_the_acquired_grid_unless_told_otherwise() -> None:
    from benchmarks.measurement import Measurer, NativeGridMissingWarning

    view = AXIAL_VIEWS[0]
    batch, logits = _one_axial_view_batch(native=True)
    masks, spacing = Measurer("native").masks(batch, logits, 0)
    assert set(masks) == {view} and masks[view].shape == (64, 64) and spacing[view] == (1.0, 1.0)
    assert measure_level(masks[view], spacing[view]).area_mm2 == pytest.approx(math.pi * 81, rel=0.06)
    masks, spacing = Measurer("model").masks(batch, logits, 0)
    assert masks[view].shape == (32, 32) and spacing[view] == (2.0, 2.0)
    batch, logits = _one_axial_view_batch(native=False)  # no recorded grid (e.g. augmented): the model's grid
    with pytest.warns(NativeGridMissingWarning, match=f"{view}: the batch does not record the acquired grid"):
        masks, spacing = Measurer("native").masks(batch, logits, 0)
    assert masks[view].shape == (32, 32) and spacing[view] == (2.0, 2.0)
