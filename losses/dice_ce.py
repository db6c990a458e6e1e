"""Dice + cross-entropy (MONAI ``DiceCELoss``), the nnU-Net default objective."""

from __future__ import annotations

from .base import LabelMapAdapter
from .registry import register_loss


def check_weights(lambda_dice: float = 1.0, lambda_ce: float = 1.0, **_: object) -> None:
    """``ValueError`` for a negative term weight (MONAI ``DiceCELoss`` refuses them); checked before importing MONAI."""
    for key, value in (("lambda_dice", lambda_dice), ("lambda_ce", lambda_ce)):
        if value < 0.0:
            raise ValueError(f"{key} should be no less than 0.0, got {value}")


@register_loss(
    "dice_ce",
    source="monai.losses.DiceCELoss",
    search_space={
        "lambda_dice": {"type": "float", "low": 0.1, "high": 2.0},
        "lambda_ce": {"type": "float", "low": 0.1, "high": 2.0},
    },
    requires=("monai",),
    check=check_weights,
)
def dice_ce(
    include_background: bool = False,
    batch: bool = True,
    lambda_dice: float = 1.0,
    lambda_ce: float = 1.0,
    label_smoothing: float = 0.0,
) -> LabelMapAdapter:
    """L = λ_dice·Dice + λ_ce·CE; ``include_background`` affects the Dice term only (CE always uses every class)."""
    check_weights(lambda_dice, lambda_ce)
    from monai.losses import DiceCELoss  # on first build: listing or checking losses stays light

    loss = DiceCELoss(
        include_background=include_background,
        to_onehot_y=True,
        softmax=True,
        batch=batch,
        lambda_dice=lambda_dice,
        lambda_ce=lambda_ce,
        label_smoothing=label_smoothing,
    )
    return LabelMapAdapter(loss, "channel")
