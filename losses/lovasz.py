"""Lovász-softmax loss (smp ``LovaszLoss``, Berman et al. 2018)."""

from __future__ import annotations

from .base import LabelMapAdapter
from .registry import register_loss


@register_loss(
    "lovasz",
    source="segmentation_models_pytorch.losses.LovaszLoss",
    requires=("segmentation_models_pytorch",),
    search_space={"per_image": {"type": "categorical", "choices": [False, True]}},
)
def lovasz(per_image: bool = False) -> LabelMapAdapter:
    """Lovász-softmax: the convex Lovász extension of the Jaccard loss, averaged over the classes present."""
    from segmentation_models_pytorch.losses import LovaszLoss  # on first build: listing or checking losses stays light

    return LabelMapAdapter(LovaszLoss(mode="multiclass", per_image=per_image, from_logits=True), "index")
