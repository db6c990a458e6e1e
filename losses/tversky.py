"""Static Tversky loss (MONAI ``TverskyLoss``, Salehi et al. 2017)."""

from __future__ import annotations

from .base import LabelMapAdapter
from .registry import register_loss, register_nobg_variant

SEARCH_SPACE = {
    "alpha": {"type": "float", "low": 0.1, "high": 0.9},
    "beta": {"type": "float", "low": 0.1, "high": 0.9},
}


@register_loss(
    "tversky",
    source="monai.losses.TverskyLoss",
    requires=("monai",),
    search_space=SEARCH_SPACE,
)
def tversky(
    alpha: float = 0.5,
    beta: float = 0.5,
    include_background: bool = True,
    batch: bool = True,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
) -> LabelMapAdapter:
    """Tversky, L = mean_c 1 − (TP + s_nr)/(TP + α·FP + β·FN + s_nr + s_dr); α weighs FP, β weighs FN."""
    from monai.losses import TverskyLoss  # on first build: listing or checking losses stays light

    loss = TverskyLoss(
        include_background=include_background,
        to_onehot_y=True,
        softmax=True,
        alpha=alpha,
        beta=beta,
        batch=batch,
        smooth_nr=smooth_nr,
        smooth_dr=smooth_dr,
    )
    return LabelMapAdapter(loss, "channel")


register_nobg_variant("tversky")  # the collapse-prone setting, by name (docs/losses.md)
