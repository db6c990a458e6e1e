"""Soft Jaccard (IoU) loss (smp ``JaccardLoss``)."""

from __future__ import annotations

from .base import LabelMapAdapter, check_class_indices
from .registry import register_loss


@register_loss(
    "jaccard",
    requires=("segmentation_models_pytorch",),
    check=check_class_indices,
    source="segmentation_models_pytorch.losses.JaccardLoss",
    search_space={"log_loss": {"type": "categorical", "choices": [False, True]}},
)
def jaccard(classes: list[int] | None = None, log_loss: bool = False, smooth: float = 0.0) -> LabelMapAdapter:
    """Soft Jaccard, L = mean_c 1 − Σpg / (Σp + Σg − Σpg) over the batch (−log IoU if ``log_loss``)."""
    check_class_indices(classes)
    from segmentation_models_pytorch.losses import JaccardLoss  # on first build: listing or checking losses stays light

    loss = JaccardLoss(mode="multiclass", classes=classes, log_loss=log_loss, from_logits=True, smooth=smooth)
    return LabelMapAdapter(loss, "index")
