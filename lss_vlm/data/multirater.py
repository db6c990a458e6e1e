"""Multi-rater annotation merging: several annotators' boxes or points for the same structure become one.

CliniQure (multi-rater lumbar MRI annotations) merges overlapping boxes of different raters into one box and drops the
redundant duplicates; the same idea for points is a merge within a distance.

**Boxes** ``(x0, y0, x1, y1)``, ``x0 ≤ x1``, ``y0 ≤ y1`` (any unit): two boxes *agree* when

    IoU(a, b) = |a ∩ b| / |a ∪ b| ≥ iou_threshold    and    |log(r_a / r_b)| ≤ log(1 + aspect_tolerance),

with ``r = width / height`` the aspect ratio. The groups are the connected components of the "agree" graph
(``scipy.sparse.csgraph.connected_components``, so A~B and B~C merge A, B, C); each group becomes the box of its
min/max corners ``(min x0, min y0, max x1, max y1)``. Exact duplicates are one box already before grouping.

**Points** ``[N, D]`` (mm): the groups are the connected components of "closer than ``radius``"; each group becomes
its mean. Where the raters disagree (more than one group), :func:`consensus_point` keeps the group with the most raters.

IoU by ``torchvision.ops.box_iou``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist
from torchvision.ops import box_iou

#: Defaults: boxes overlap enough at IoU 0.5 (the PASCAL VOC match) and differ in aspect ratio by at most 25 %.
IOU_THRESHOLD = 0.5
ASPECT_TOLERANCE = 0.25


def _groups(adjacency: np.ndarray) -> np.ndarray:
    """Connected-component label of each node of a symmetric boolean adjacency matrix ``[N, N]``."""
    if len(adjacency) == 0:
        return np.zeros(0, dtype=int)
    return connected_components(csr_matrix(adjacency), directed=False)[1]


def _check_boxes(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        raise ValueError("boxes must be finite numbers (x0, y0, x1, y1)")
    if (boxes[:, 2] < boxes[:, 0]).any() or (boxes[:, 3] < boxes[:, 1]).any():
        raise ValueError("boxes must be (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1")
    return boxes


def merge_boxes(
    boxes: np.ndarray, iou_threshold: float = IOU_THRESHOLD, aspect_tolerance: float = ASPECT_TOLERANCE
) -> tuple[np.ndarray, np.ndarray]:
    """Merge the raters' boxes ``[N, 4]`` of one structure (module docstring).

    Returns ``(merged [M, 4], group [N])``: the merged boxes, ordered by their first member, and the index into
    ``merged`` of each input box. Raises ``ValueError`` for a non-finite box or one with ``x1 < x0`` / ``y1 < y0``.
    """
    boxes = _check_boxes(boxes)
    if not 0 < iou_threshold <= 1 or aspect_tolerance < 0:
        raise ValueError(
            f"iou_threshold must be in (0, 1] and aspect_tolerance >= 0, got {iou_threshold}, {aspect_tolerance}"
        )
    t = torch.as_tensor(boxes, dtype=torch.float64)
    iou = box_iou(t, t).numpy() if len(boxes) else np.zeros((0, 0))
    size = boxes[:, 2:] - boxes[:, :2]
    aspect = np.log(np.maximum(size[:, 0], 1e-9) / np.maximum(size[:, 1], 1e-9))
    similar = np.abs(aspect[:, None] - aspect[None, :]) <= np.log1p(aspect_tolerance) + 1e-12
    duplicate = (boxes[:, None, :] == boxes[None, :, :]).all(axis=2)
    labels = _ordered(_groups(((iou >= iou_threshold) & similar) | duplicate))
    merged = np.array(
        [np.r_[boxes[labels == g, :2].min(0), boxes[labels == g, 2:].max(0)] for g in range(labels.max(initial=-1) + 1)]
    )
    return merged.reshape(-1, 4), labels


def merge_points(points: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Merge points ``[N, D]`` closer than ``radius`` (chains included) into their mean.

    Returns ``(merged [M, D], group [N])``, groups ordered by their first member. ``ValueError`` for a non-finite point
    or a negative radius.
    """
    points = np.asarray(points, dtype=float)
    points = points.reshape(len(points), -1)
    if not np.isfinite(points).all() or radius < 0:
        raise ValueError(f"points must be finite and radius >= 0, got radius {radius}")
    labels = _ordered(_groups(cdist(points, points) <= radius)) if len(points) else np.zeros(0, dtype=int)
    merged = np.array([points[labels == g].mean(axis=0) for g in range(labels.max(initial=-1) + 1)])
    return merged.reshape(-1, points.shape[1]), labels


def _ordered(labels: np.ndarray) -> np.ndarray:
    """Relabel groups in order of their first member (deterministic output order)."""
    first: dict[int, int] = {}
    for label in labels:
        first.setdefault(int(label), len(first))
    return np.array([first[int(label)] for label in labels], dtype=int)


@dataclass(frozen=True)
class Consensus:
    """The merged point of the largest group of raters: ``point [D]``, ``n_raters`` in it, ``n_dropped`` outside it."""

    point: np.ndarray
    n_raters: int
    n_dropped: int


def consensus_point(points: np.ndarray, radius: float) -> Consensus:
    """One point from several raters' points ``[N, D]`` (N ≥ 1): the mean of the largest group of
    :func:`merge_points` (ties: the group whose first member came first); the other groups are dropped and counted."""
    merged, labels = merge_points(points, radius)
    if len(merged) == 0:
        raise ValueError("consensus_point needs at least one point")
    counts = np.bincount(labels)
    best = int(np.argmax(counts))  # argmax returns the first of equal counts
    return Consensus(merged[best], int(counts[best]), int(len(labels) - counts[best]))
