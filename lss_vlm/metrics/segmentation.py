"""Segmentation metrics per 2D view: Dice, IoU, HD95, mean surface distance (mm) and structure area (mm²).

**The empty-class rule** (one rule for every metric, applied per image and foreground class):

* class absent from both the prediction and the ground truth: the image is *excluded* for that class (NaN in
  :meth:`SegmentationMetrics.per_case`); ``n/<class>`` in :meth:`SegmentationMetrics.aggregate` counts the images that
  were counted;
* class present in only one of them: Dice = IoU = 0 and HD95 = MSD = the image diagonal in mm
  (``sqrt((H * row_mm)² + (W * col_mm)²)``), the largest distance possible inside the image. MONAI would return
  ``inf`` or ``NaN`` here and silently drop or poison the mean (MONAI issue #9095).

Dice and IoU are computed from a per-image confusion count (one ``bincount`` over the whole batch) and equal MONAI
``DiceMetric(include_background=False)`` wherever both are defined. Surface distances come from MONAI
(:func:`monai.metrics.utils.get_edge_surface_distance`, Euclidean, with the pixel spacing), computed once per image and
class and shared by HD95 and MSD, so the numbers equal :func:`monai.metrics.compute_hausdorff_distance` (percentile 95)
and :func:`monai.metrics.compute_average_surface_distance` (``symmetric=True``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from ..constants import IGNORE_LABEL, LABELS, NUM_LABELS

#: Per-image quantities stored per foreground class, in the column order of :meth:`SegmentationMetrics.per_case`.
PER_IMAGE_METRICS: tuple[str, ...] = ("dice", "iou", "hd95", "msd", "area_pred", "area_true")
#: Quantities averaged into ``<metric>_macro`` over the foreground classes.
MACRO_METRICS: tuple[str, ...] = ("dice", "iou", "hd95", "msd")


def _to_numpy(x: torch.Tensor | np.ndarray | Sequence, dtype: type | None = None) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def confusion_counts(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-image confusion counts ``[N, C_true, C_pred]`` of integer label maps ``[N, H, W]`` (one ``bincount``)."""
    n = pred.shape[0]
    flat = (np.arange(n, dtype=np.int64)[:, None] * num_classes + target.reshape(n, -1)) * num_classes
    flat = flat + pred.reshape(n, -1)
    counts = np.bincount(flat.ravel(), minlength=n * num_classes * num_classes)
    return counts.reshape(n, num_classes, num_classes)


def dice_iou_from_counts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dice and IoU ``[N, C]`` from confusion counts ``[N, C, C]``.

    ``Dice = 2|P∩T| / (|P| + |T|)``, ``IoU = |P∩T| / |P∪T|``; NaN where the class is in neither P nor T.
    """
    tp = np.diagonal(counts, axis1=1, axis2=2).astype(np.float64)
    true_count = counts.sum(axis=2).astype(np.float64)
    pred_count = counts.sum(axis=1).astype(np.float64)
    total = true_count + pred_count
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(total > 0, 2.0 * tp / total, np.nan)
        iou = np.where(total > 0, tp / (total - tp), np.nan)
    return dice, iou


def image_diagonal_mm(shape: Sequence[int], spacing: Sequence[float]) -> float:
    """Length of the image diagonal in mm: ``sqrt(sum((n_i * s_i)²))``."""
    return float(math.sqrt(sum((n * s) ** 2 for n, s in zip(shape, spacing))))


def surface_distances_mm(
    pred: np.ndarray, target: np.ndarray, spacing: Sequence[float], percentile: float = 95.0
) -> tuple[float, float]:
    """Hausdorff distance at ``percentile`` and symmetric mean surface distance (mm) of two binary 2D masks.

    ``HDp = max(P_p(d(∂P→∂T)), P_p(d(∂T→∂P)))`` (percentile with linear interpolation, as MONAI);
    ``MSD = mean(d(∂P→∂T) ∪ d(∂T→∂P))``. Empty-class rule: NaN if both masks are empty, the image diagonal if one is.
    """
    pred_any, target_any = bool(pred.any()), bool(target.any())
    if not pred_any and not target_any:
        return math.nan, math.nan
    if pred_any != target_any:
        diagonal = image_diagonal_mm(pred.shape, spacing)
        return diagonal, diagonal
    from monai.metrics.utils import get_edge_surface_distance

    with warnings.catch_warnings():  # MONAI >= 1.5 warns on every call about an argument it passes itself
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        _, distances, _ = get_edge_surface_distance(
            torch.from_numpy(pred),
            torch.from_numpy(target),
            distance_metric="euclidean",
            spacing=[float(s) for s in spacing],
            symmetric=True,
            warn_empty=False,
        )
    q = percentile / 100.0
    hd = max(float(torch.quantile(d.double(), q)) for d in distances)
    msd = float(torch.cat(distances).double().mean())
    return hd, msd


class SegmentationMetrics:
    """Accumulates per-image segmentation metrics over a split (``update`` / ``aggregate`` / ``per_case`` / ``reset``).

    Each image is one 2D view of one case. Per foreground class ``c`` and image:

    * ``dice = 2|P∩T| / (|P| + |T|)``, ``iou = |P∩T| / |P∪T|``;
    * ``hd95`` = 95th-percentile symmetric Hausdorff distance between the mask borders, in mm (pixel spacing);
    * ``msd`` = symmetric mean surface distance in mm;
    * ``area_pred`` / ``area_true`` = pixel count × row_mm × col_mm, in mm².

    Empty-class rule: absent in both → excluded (NaN, not counted in ``n/<class>``); present in only one →
    Dice = IoU = 0 and HD95 = MSD = image diagonal in mm (MONAI issue #9095).

    :meth:`aggregate` averages each class over its counted images (``<metric>/<class>``), then the classes
    (``<metric>_macro``, classes never counted are left out), and reports ``n/<class>``, ``n_images``,
    ``area_mae/<class>`` (mean |area_pred - area_true| in mm² over the counted images) and the collapse detector
    ``area_ratio/<class>`` = Σ area_pred / Σ area_true over the whole split (1 = the predicted area matches the
    truth; ≫ 1 = the class is painted over pixels of other classes, e.g. a background collapsed into it; NaN when
    the split has no true pixel of the class). It is SimpleITK's volume similarity VS = 2(|P| − |G|)/(|P| + |G|)
    in ratio form: VS = 2(r − 1)/(r + 1), pooled over the split instead of per image.

    Args:
        num_classes: number of labels including background (label 0, never scored).
        class_names: one name per label, used in the metric keys.
        distances: compute HD95/MSD (the slow part); ``False`` gives Dice/IoU/area only, e.g. for per-epoch validation.
        percentile: Hausdorff percentile (95 = HD95).
    """

    def __init__(
        self,
        num_classes: int = NUM_LABELS,
        class_names: Sequence[str] = LABELS,
        distances: bool = True,
        percentile: float = 95.0,
    ) -> None:
        if len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.foreground = self.class_names[1:]
        self.distances = distances
        self.percentile = percentile
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated image."""
        self._values: dict[str, list[np.ndarray]] = {m: [] for m in PER_IMAGE_METRICS}
        self._case_ids: list[str] = []
        self._views: list[str] = []

    def update(
        self,
        pred: torch.Tensor | np.ndarray,
        target: torch.Tensor | np.ndarray,
        spacing: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
        case_ids: Sequence[str],
        views: Sequence[str],
        labelled: torch.Tensor | np.ndarray | None = None,
    ) -> None:
        """Add a batch of images.

        Args:
            pred: predicted label maps ``[N, H, W]`` (integers; argmax of the logits).
            target: ground-truth label maps ``[N, H, W]``. Pass only views that have a mask.
            spacing: mm per pixel ``[N, 2]`` as (row, col).
            case_ids: case id of each image.
            views: view name of each image (e.g. ``"ax_l4_l5"``).
            labelled: bool ``[N, C]``, the classes each image's mask annotates (partial labels; ``None`` = all).
                A class not annotated on an image is not scored there (NaN, like an empty class), and target
                pixels equal to :data:`~lss_vlm.constants.IGNORE_LABEL` are left out of every count.
        """
        pred_np = _to_numpy(pred, np.int64)
        target_np = _to_numpy(target, np.int64)
        spacing_np = _to_numpy(spacing, np.float64).reshape(-1, 2)
        n = pred_np.shape[0]
        if pred_np.shape != target_np.shape or pred_np.ndim != 3:
            raise ValueError(f"pred and target must both be [N, H, W], got {pred_np.shape} and {target_np.shape}")
        if not (len(spacing_np) == len(case_ids) == len(views) == n):
            raise ValueError(
                f"batch of {n} images needs {n} spacings, case_ids and views, "
                f"got {len(spacing_np)}, {len(case_ids)}, {len(views)}"
            )
        ignored = target_np == IGNORE_LABEL
        if ignored.any():  # not annotated: both maps get a label outside the classes, so no count sees them
            pred_np = np.where(ignored, 0, pred_np)
            target_np = np.where(ignored, 0, target_np)
        for name, arr in (("pred", pred_np), ("target", target_np)):
            if arr.size and (arr.min() < 0 or arr.max() >= self.num_classes):
                raise ValueError(f"{name} labels must lie in [0, {self.num_classes - 1}], got {arr.min()}..{arr.max()}")

        counts = confusion_counts(pred_np, target_np, self.num_classes)
        if ignored.any():
            counts[:, 0, 0] -= ignored.reshape(n, -1).sum(axis=1)
        dice, iou = dice_iou_from_counts(counts)
        if labelled is not None:
            not_scored = ~_to_numpy(labelled, bool).reshape(n, self.num_classes)
            dice[not_scored], iou[not_scored] = np.nan, np.nan
        pixel_mm2 = spacing_np[:, 0] * spacing_np[:, 1]
        self._values["dice"].append(dice[:, 1:])
        self._values["iou"].append(iou[:, 1:])
        self._values["area_pred"].append(counts.sum(axis=1)[:, 1:] * pixel_mm2[:, None])
        self._values["area_true"].append(counts.sum(axis=2)[:, 1:] * pixel_mm2[:, None])
        hd = np.full((n, self.num_classes - 1), np.nan)
        msd = np.full((n, self.num_classes - 1), np.nan)
        if self.distances:
            for i in range(n):
                for c in range(1, self.num_classes):
                    if np.isnan(dice[i, c]):
                        continue
                    hd[i, c - 1], msd[i, c - 1] = surface_distances_mm(
                        (pred_np[i] == c) & ~ignored[i], target_np[i] == c, spacing_np[i], self.percentile
                    )
        self._values["hd95"].append(hd)
        self._values["msd"].append(msd)
        self._case_ids.extend(str(c) for c in case_ids)
        self._views.extend(str(v) for v in views)

    def _stacked(self, metric: str) -> np.ndarray:
        parts = self._values[metric]
        return np.concatenate(parts, axis=0) if parts else np.zeros((0, self.num_classes - 1))

    def per_case(self) -> pd.DataFrame:
        """One row per image: ``case_id``, ``view`` and ``<metric>/<class>`` for every per-image metric."""
        columns: dict[str, object] = {"case_id": list(self._case_ids), "view": list(self._views)}
        for metric in PER_IMAGE_METRICS:
            values = self._stacked(metric)
            for j, name in enumerate(self.foreground):
                columns[f"{metric}/{name}"] = values[:, j]
        return pd.DataFrame(columns)

    def aggregate(self) -> dict[str, float]:
        """Flat dict of split-level metrics (see the class docstring). NaN where nothing was counted."""
        dice = self._stacked("dice")
        counted = ~np.isnan(dice)
        out: dict[str, float] = {"n_images": float(len(self._case_ids))}
        for metric in MACRO_METRICS:
            if metric in ("hd95", "msd") and not self.distances:
                continue
            values = self._stacked(metric)
            per_class = [_nanmean(values[:, j]) for j in range(len(self.foreground))]
            for name, value in zip(self.foreground, per_class):
                out[f"{metric}/{name}"] = value
            out[f"{metric}_macro"] = _nanmean(np.asarray(per_class))
        area_error = np.abs(self._stacked("area_pred") - self._stacked("area_true"))
        pred_total, true_total = self._stacked("area_pred").sum(axis=0), self._stacked("area_true").sum(axis=0)
        for j, name in enumerate(self.foreground):
            out[f"n/{name}"] = float(counted[:, j].sum())
            out[f"area_mae/{name}"] = _nanmean(np.where(counted[:, j], area_error[:, j], np.nan))
            out[f"area_ratio/{name}"] = float(pred_total[j] / true_total[j]) if true_total[j] > 0 else math.nan
        return out


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else math.nan
