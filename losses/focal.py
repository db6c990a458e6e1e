"""Softmax focal loss (MONAI ``FocalLoss``, Lin et al. 2017)."""

from __future__ import annotations

from .base import LabelMapAdapter
from .registry import register_loss


@register_loss(
    "focal",
    source="monai.losses.FocalLoss",
    requires=("monai",),
    search_space={"gamma": {"type": "float", "low": 0.5, "high": 5.0}},
)
def focal(gamma: float = 2.0) -> LabelMapAdapter:
    """Focal loss, L = −mean_{pixels,classes} g_c·(1 − p_c)^γ·log p_c on softmax probabilities over all classes."""
    from monai.losses import FocalLoss  # on first build: listing or checking losses stays light

    return LabelMapAdapter(FocalLoss(to_onehot_y=True, use_softmax=True, gamma=gamma), "channel")
