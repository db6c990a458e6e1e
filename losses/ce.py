"""Pixel-wise cross-entropy (torch ``CrossEntropyLoss``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import LabelMapAdapter
from .registry import register_loss


@register_loss(
    "ce",
    source="torch.nn.CrossEntropyLoss",
    search_space={"label_smoothing": {"type": "float", "low": 0.0, "high": 0.2}},
)
def ce(weight: Sequence[float] | None = None, label_smoothing: float = 0.0) -> LabelMapAdapter:
    """Cross-entropy, L = −mean_pixels Σ_c w_c·g_c·log softmax(z)_c, with optional class weights and label smoothing."""
    class_weight = None if weight is None else torch.as_tensor(weight, dtype=torch.float32)
    return LabelMapAdapter(nn.CrossEntropyLoss(weight=class_weight, label_smoothing=label_smoothing), "index")
