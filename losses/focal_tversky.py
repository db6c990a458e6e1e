"""Focal Tversky loss (smp ``TverskyLoss`` with ``gamma``, Abraham & Khan 2019)."""

from __future__ import annotations

from .base import LabelMapAdapter, check_class_indices
from .registry import register_loss


@register_loss(
    "focal_tversky",
    requires=("segmentation_models_pytorch",),
    check=check_class_indices,
    source="segmentation_models_pytorch.losses.TverskyLoss",
    search_space={
        "alpha": {"type": "float", "low": 0.1, "high": 0.9},
        "beta": {"type": "float", "low": 0.1, "high": 0.9},
        "gamma": {"type": "float", "low": 0.5, "high": 2.0},
    },
)
def focal_tversky(
    alpha: float = 0.3,
    beta: float = 0.7,
    gamma: float = 0.75,
    classes: list[int] | None = None,
    smooth: float = 0.0,
) -> LabelMapAdapter:
    """Focal Tversky as smp defines it, L = (mean_c [1 − T_c])^γ, T_c = TP/(TP + α·FP + β·FN) over the batch.

    Classes absent from the batch contribute 0 (smp masks them); ``classes`` restricts the mean (default: all,
    background included). The default γ = 0.75 is Abraham & Khan's 1/γ with their γ = 4/3.
    """
    check_class_indices(classes)
    from segmentation_models_pytorch.losses import TverskyLoss  # on first build: listing or checking losses stays light

    loss = TverskyLoss(
        mode="multiclass", classes=classes, from_logits=True, alpha=alpha, beta=beta, gamma=gamma, smooth=smooth
    )
    return LabelMapAdapter(loss, "index")
