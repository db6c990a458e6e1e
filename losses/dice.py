"""Soft Dice loss (MONAI ``DiceLoss``) on softmax probabilities and one-hot labels."""

from __future__ import annotations

from .base import LabelMapAdapter
from .registry import register_loss, register_nobg_variant

SEARCH_SPACE = {"squared_pred": {"type": "categorical", "choices": [False, True]}}


@register_loss(
    "dice",
    source="monai.losses.DiceLoss",
    requires=("monai",),
    search_space=SEARCH_SPACE,
)
def dice(
    include_background: bool = True,
    batch: bool = True,
    squared_pred: bool = False,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
) -> LabelMapAdapter:
    """Soft Dice, L = mean_c 1 − (2·Σpg + s_nr) / (Σp + Σg + s_dr) (Milletari et al. 2016), batch-level by default."""
    from monai.losses import DiceLoss  # on first build: listing or checking losses stays light

    loss = DiceLoss(
        include_background=include_background,
        to_onehot_y=True,
        softmax=True,
        batch=batch,
        squared_pred=squared_pred,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
    )
    return LabelMapAdapter(loss, "channel")


register_nobg_variant("dice")  # the collapse-prone setting, by name (docs/losses.md)
