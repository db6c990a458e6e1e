"""Segmentation metrics: hand-computed Dice/IoU/HD95/MSD, the empty-class rule, and parity with MONAI."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, compute_average_surface_distance, compute_hausdorff_distance
from monai.networks.utils import one_hot

from lss_vlm.constants import FOREGROUND_LABELS
from lss_vlm.metrics.segmentation import SegmentationMetrics, image_diagonal_mm

pytestmark = pytest.mark.filterwarnings("ignore:the (ground truth|prediction) of class")

BODY, DISC, SAC = FOREGROUND_LABELS[0], FOREGROUND_LABELS[1], FOREGROUND_LABELS[2]


def _score(pred: np.ndarray, target: np.ndarray, spacing=(1.0, 1.0)) -> tuple[SegmentationMetrics, dict[str, float]]:
    metrics = SegmentationMetrics()
    metrics.update(pred[None], target[None], np.array([spacing]), ["case0"], ["ax_l4_l5"])
    return metrics, metrics.aggregate()


def test_dice_and_iou_match_hand_computed_values():
    pred = np.zeros((6, 6), dtype=np.int64)
    target = np.zeros((6, 6), dtype=np.int64)
    pred[0:2, 0:2] = 1  # 4 pixels
    target[0:2, 0:3] = 1  # 6 pixels, 4 shared
    _, out = _score(pred, target)
    assert out[f"dice/{BODY}"] == pytest.approx(2 * 4 / (4 + 6))
    assert out[f"iou/{BODY}"] == pytest.approx(4 / 6)


def test_hd95_and_msd_use_anisotropic_spacing_row_then_column():
    pred = np.zeros((8, 8), dtype=np.int64)
    target = np.zeros((8, 8), dtype=np.int64)
    pred[0, 0] = 1
    target[3, 0] = 1  # 3 rows away
    pred[0, 7] = 2
    target[0, 3] = 2  # 4 columns away
    _, out = _score(pred, target, spacing=(2.0, 0.5))
    assert out[f"hd95/{BODY}"] == pytest.approx(3 * 2.0)
    assert out[f"msd/{BODY}"] == pytest.approx(3 * 2.0)
    assert out[f"hd95/{DISC}"] == pytest.approx(4 * 0.5)


def test_hd95_interpolates_the_95th_percentile_like_monai():
    pred = np.zeros((8, 8), dtype=np.int64)
    target = np.zeros((8, 8), dtype=np.int64)
    pred[0, 0] = 1
    target[0, 0] = 1
    target[0, 4] = 1  # gt->pred distances [0, 2 mm]; pred->gt [0]
    _, out = _score(pred, target, spacing=(1.0, 0.5))
    assert out[f"hd95/{BODY}"] == pytest.approx(0.95 * 2.0)
    assert out[f"msd/{BODY}"] == pytest.approx(2.0 / 3.0)  # mean of [0] ∪ [0, 2]


def test_empty_class_rule_excludes_absent_classes_and_penalises_one_sided_ones():
    pred = np.zeros((8, 8), dtype=np.int64)
    target = np.zeros((8, 8), dtype=np.int64)
    pred[2:4, 2:4] = 1
    target[2:4, 2:4] = 1  # body: perfect
    pred[6, 6] = 3  # sac only predicted (false positive)
    target[0, 7] = 4  # posterior elements only in the ground truth (missed)
    metrics, out = _score(pred, target, spacing=(2.0, 0.5))
    diagonal = math.sqrt((8 * 2.0) ** 2 + (8 * 0.5) ** 2)
    assert image_diagonal_mm((8, 8), (2.0, 0.5)) == pytest.approx(diagonal)
    assert out[f"dice/{SAC}"] == 0.0 and out[f"iou/{SAC}"] == 0.0
    assert out[f"hd95/{SAC}"] == pytest.approx(diagonal) and out[f"msd/{SAC}"] == pytest.approx(diagonal)
    assert out["dice/posterior_elements"] == 0.0 and out["hd95/posterior_elements"] == pytest.approx(diagonal)
    # disc and ligamentum flavum are in neither: excluded, not counted, and left out of the macro mean
    assert math.isnan(out[f"dice/{DISC}"]) and out[f"n/{DISC}"] == 0
    assert out[f"n/{BODY}"] == 1 and out[f"n/{SAC}"] == 1
    assert out["dice_macro"] == pytest.approx((1.0 + 0.0 + 0.0) / 3)
    assert out["hd95_macro"] == pytest.approx((0.0 + 2 * diagonal) / 3)
    row = metrics.per_case().iloc[0]
    assert math.isnan(row[f"dice/{DISC}"]) and math.isnan(row[f"hd95/{DISC}"])


def test_aggregate_averages_each_class_over_its_counted_images_only():
    target = np.zeros((2, 4, 4), dtype=np.int64)
    pred = np.zeros((2, 4, 4), dtype=np.int64)
    target[0, 0:2, 0:2] = 1
    pred[0, 0:2, 0:1] = 1  # image 0: dice 2*2/(2+4) = 2/3
    target[1, 0, 0] = 2
    pred[1, 0, 0] = 2  # image 1: body absent in both -> excluded; disc perfect
    metrics = SegmentationMetrics(distances=False)
    metrics.update(torch.from_numpy(pred), torch.from_numpy(target), torch.ones(2, 2), ["a", "b"], ["sag_t2", "sag_t2"])
    out = metrics.aggregate()
    assert out[f"dice/{BODY}"] == pytest.approx(2 / 3)  # not (2/3 + NaN->0)/2
    assert out[f"n/{BODY}"] == 1 and out[f"n/{DISC}"] == 1 and out["n_images"] == 2
    assert out["dice_macro"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert "hd95_macro" not in out


def test_areas_are_pixel_counts_times_pixel_area_and_feed_area_mae():
    pred = np.zeros((10, 10), dtype=np.int64)
    target = np.zeros((10, 10), dtype=np.int64)
    pred[0:5, 0:4] = 3  # 20 px
    target[0:5, 0:5] = 3  # 25 px
    metrics, out = _score(pred, target, spacing=(0.5, 0.8))
    row = metrics.per_case().iloc[0]
    assert row[f"area_pred/{SAC}"] == pytest.approx(20 * 0.4)
    assert row[f"area_true/{SAC}"] == pytest.approx(25 * 0.4)
    assert out[f"area_mae/{SAC}"] == pytest.approx(5 * 0.4)


def test_per_case_rows_follow_updates_and_reset_clears():
    metrics = SegmentationMetrics(distances=False)
    masks = np.zeros((3, 4, 4), dtype=np.int64)
    metrics.update(masks, masks, np.ones((3, 2)), ["a", "a", "b"], ["sag_t1", "ax_l4_l5", "sag_t1"])
    frame = metrics.per_case()
    assert list(frame["case_id"]) == ["a", "a", "b"] and list(frame["view"]) == ["sag_t1", "ax_l4_l5", "sag_t1"]
    assert {f"dice/{name}" for name in FOREGROUND_LABELS} <= set(frame.columns)
    metrics.reset()
    assert metrics.per_case().empty and math.isnan(metrics.aggregate()["dice_macro"])


def test_update_rejects_mismatched_shapes_and_out_of_range_labels():
    metrics = SegmentationMetrics()
    with pytest.raises(ValueError, match="N, H, W"):
        metrics.update(np.zeros((1, 4, 4)), np.zeros((1, 4, 5)), np.ones((1, 2)), ["a"], ["sag_t1"])
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        metrics.update(np.full((1, 4, 4), 6), np.zeros((1, 4, 4)), np.ones((1, 2)), ["a"], ["sag_t1"])


def _random_blobs(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Label maps of random rectangles per class, so classes are sometimes absent."""
    maps = np.zeros((n, size, size), dtype=np.int64)
    for i in range(n):
        for c in range(1, 6):
            if rng.random() < 0.8:
                r, col = rng.integers(0, size - 4, size=2)
                h, w = rng.integers(2, size // 2, size=2)
                maps[i, r : r + h, col : col + w] = c
    return maps


def test_dice_equals_monai_dice_metric_where_both_are_defined():
    rng = np.random.default_rng(0)
    pred, target = _random_blobs(rng, 40, 24), _random_blobs(rng, 40, 24)
    metrics = SegmentationMetrics(distances=False)
    metrics.update(pred, target, np.ones((40, 2)), [str(i) for i in range(40)], ["sag_t2"] * 40)
    ours = metrics.per_case()[[f"dice/{name}" for name in FOREGROUND_LABELS]].to_numpy()
    monai_dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
    to_onehot = lambda x: one_hot(torch.from_numpy(x)[:, None], num_classes=6)  # noqa: E731
    theirs = monai_dice(to_onehot(pred), to_onehot(target)).numpy()
    defined = ~np.isnan(theirs)
    assert defined.sum() > 100 and (~defined).any()
    np.testing.assert_allclose(ours[defined], theirs[defined], rtol=1e-6)
    # where the ground truth is empty but the prediction is not, MONAI says NaN and we say 0 (a false positive)
    assert (ours[~defined & ~np.isnan(ours)] == 0).all()


def test_hd95_and_msd_equal_monai_where_both_masks_are_present():
    rng = np.random.default_rng(1)
    pred, target = _random_blobs(rng, 12, 20), _random_blobs(rng, 12, 20)
    spacing = rng.uniform(0.4, 2.0, size=(12, 2))
    metrics = SegmentationMetrics()
    metrics.update(pred, target, spacing, [str(i) for i in range(12)], ["ax_l3_l4"] * 12)
    frame = metrics.per_case()
    to_onehot = lambda x: one_hot(torch.from_numpy(x)[:, None], num_classes=6)  # noqa: E731
    spacing_list = [tuple(s) for s in spacing]
    hd = compute_hausdorff_distance(to_onehot(pred), to_onehot(target), percentile=95, spacing=spacing_list).numpy()
    msd = compute_average_surface_distance(
        to_onehot(pred), to_onehot(target), symmetric=True, spacing=spacing_list
    ).numpy()
    both = np.stack([(pred == c).any((1, 2)) & (target == c).any((1, 2)) for c in range(1, 6)], axis=1)
    assert both.sum() > 20
    ours_hd = frame[[f"hd95/{name}" for name in FOREGROUND_LABELS]].to_numpy()
    ours_msd = frame[[f"msd/{name}" for name in FOREGROUND_LABELS]].to_numpy()
    np.testing.assert_allclose(ours_hd[both], hd[both], rtol=1e-5)
    np.testing.assert_allclose(ours_msd[both], msd[both], rtol=1e-5)
    one_sided = ~both & ~np.isnan(ours_hd)
    assert one_sided.any() and np.isfinite(ours_hd[~np.isnan(ours_hd)]).all()  # never inf


def test_area_ratio_is_pooled_over_the_split_and_flags_a_class_painted_over_the_background():
    """The collapse detector: Σ predicted area / Σ true area of each class over all images of the split."""
    metrics = SegmentationMetrics(distances=False)
    target = np.zeros((2, 10, 10), dtype=np.int64)
    target[:, 0:2, 0:2] = 5  # 4 px of ligamentum flavum per image
    target[:, 5:10, 5:10] = 1  # 25 px of vertebral body per image
    collapsed = target.copy()
    collapsed[target == 0] = 5  # the background painted as the smallest class
    honest = target.copy()
    honest[1, 0:2, 0:2] = 0  # the flavum of image 1 missed entirely
    metrics.update(collapsed[:1], target[:1], np.ones((1, 2)), ["a"], ["sag_t1"])
    metrics.update(honest[1:], target[1:], np.ones((1, 2)), ["b"], ["sag_t1"])
    out = metrics.aggregate()
    flavum, body = "ligamentum_flavum", "vertebral_body"
    assert out[f"area_ratio/{flavum}"] == pytest.approx((4 + 71) / 8)  # 100 - 25 - 4 = 71 background px painted
    assert out[f"area_ratio/{body}"] == pytest.approx(1.0)
    assert math.isnan(out["area_ratio/thecal_sac"])  # no true pixel anywhere: no ratio, not 0 or inf
