"""Generalized Dice loss (MONAI ``GeneralizedDiceLoss``, Sudre et al. 2017)."""

from __future__ import annotations

from .base import LabelMapAdapter
from .registry import register_loss

#: MONAI ``Weight`` values (``monai.utils.enums.Weight``), checked before MONAI is imported.
W_TYPES = ("square", "simple", "uniform")


def check_w_type(w_type: str = "simple", **_: object) -> None:
    """``ValueError`` unless ``w_type`` is a MONAI ``GeneralizedDiceLoss`` weight type (:data:`W_TYPES`)."""
    if w_type not in W_TYPES:
        raise ValueError(f"w_type must be one of {', '.join(W_TYPES)}; got {w_type!r}")


@register_loss(
    "generalized_dice",
    source="monai.losses.GeneralizedDiceLoss",
    search_space={"w_type": {"type": "categorical", "choices": list(W_TYPES)}},
    requires=("monai",),
    check=check_w_type,
)
def generalized_dice(include_background: bool = False, batch: bool = True, w_type: str = "simple") -> LabelMapAdapter:
    """GDL, L = 1 − 2·Σ_c w_c Σpg / Σ_c w_c Σ(p + g), w_c = 1/(Σg)² ("square"), 1/Σg ("simple") or 1."""
    check_w_type(w_type)
    from monai.losses import GeneralizedDiceLoss  # on first build: listing or checking losses stays light

    loss = GeneralizedDiceLoss(
        include_background=include_background, to_onehot_y=True, softmax=True, batch=batch, w_type=w_type
    )
    return LabelMapAdapter(loss, "channel")
