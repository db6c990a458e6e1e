"""Dice + softmax focal loss, a weighted sum of MONAI ``DiceLoss`` and ``FocalLoss``."""

from __future__ import annotations

import torch

from .base import SegLoss, check_label_target
from .registry import register_loss


class DiceFocalLoss(SegLoss):
    """L = λ_dice·Dice + λ_focal·Focal with a *softmax* focal term over all classes.

    MONAI's own ``DiceFocalLoss`` applies a sigmoid focal term even with ``softmax=True``, and MONAI's softmax focal
    loss renormalises over the foreground channels when background is excluded, so this composes the two MONAI
    losses instead: ``include_background`` affects the Dice term only.
    """

    def __init__(
        self, include_background: bool, batch: bool, gamma: float, lambda_dice: float, lambda_focal: float
    ) -> None:
        from monai.losses import DiceLoss, FocalLoss  # on first build: listing or checking losses stays light

        super().__init__()
        self.dice = DiceLoss(include_background=include_background, to_onehot_y=True, softmax=True, batch=batch)
        self.focal = FocalLoss(to_onehot_y=True, use_softmax=True, gamma=gamma)
        self.lambda_dice, self.lambda_focal = float(lambda_dice), float(lambda_focal)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = check_label_target(logits, target)
        return self.lambda_dice * self.dice(logits, target) + self.lambda_focal * self.focal(logits, target)


@register_loss(
    "dice_focal",
    source="monai.losses.DiceLoss + monai.losses.FocalLoss",
    requires=("monai",),
    search_space={
        "gamma": {"type": "float", "low": 0.5, "high": 5.0},
        "lambda_focal": {"type": "float", "low": 0.1, "high": 2.0},
    },
)
def dice_focal(
    include_background: bool = False,
    batch: bool = True,
    gamma: float = 2.0,
    lambda_dice: float = 1.0,
    lambda_focal: float = 1.0,
) -> DiceFocalLoss:
    """L = λ_dice·Dice + λ_focal·Focal (softmax focal over all classes; Dice per ``include_background``)."""
    return DiceFocalLoss(include_background, batch, gamma, lambda_dice, lambda_focal)
