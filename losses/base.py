"""The common base class of every loss in the zoo and the adapters that give library losses the common call."""

from __future__ import annotations

import torch
from torch import nn

from .errors import LossConfigError


class SegLoss(nn.Module):
    """A segmentation loss called as ``loss(logits [N,C,*spatial], target [N,1,*spatial] int64) -> scalar``.

    The hooks are no-ops for static losses; adaptive losses (PID-Tversky) override them. The trainer calls
    ``on_step_end()`` after every optimizer step, ``on_epoch_end()`` after every epoch, and logs
    ``controller_state()`` (quantity -> {class index -> value}; ``{}`` for static losses).
    """

    def on_step_end(self) -> None:
        """Called by the trainer after every optimizer step."""

    def on_epoch_end(self) -> None:
        """Called by the trainer after every epoch."""

    def on_validation(self, area_ratio: torch.Tensor) -> None:
        """Called by the trainer after each validation pass with the per-class predicted/true area ratio of the
        validation split, ``[C]`` float in label order (NaN for a class with no true pixel)."""

    def controller_state(self) -> dict[str, dict[int, float]]:
        """The adaptive state to log, quantity -> {class index -> value}; empty for static losses."""
        return {}


def check_label_target(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Validate an integer label map and return it as ``[N,1,*spatial]`` int64.

    Accepts ``[N,1,*spatial]`` or ``[N,*spatial]`` integer labels in ``[0, C)`` for logits ``[N,C,*spatial]``.
    """
    if logits.ndim < 3:
        raise LossConfigError(f"logits must be [N,C,*spatial], got shape {tuple(logits.shape)}")
    if target.ndim == logits.ndim - 1:
        target = target.unsqueeze(1)
    expected = (logits.shape[0], 1, *logits.shape[2:])
    if tuple(target.shape) != expected:
        raise LossConfigError(
            f"target must be [N,1,*spatial] labels matching logits {tuple(logits.shape)}; "
            f"expected {expected}, got {tuple(target.shape)}"
        )
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise LossConfigError(f"target must hold integer class labels, got dtype {target.dtype}")
    target = target.long()
    low, high = int(target.min()), int(target.max())
    if low < 0 or high >= logits.shape[1]:
        raise LossConfigError(f"target labels must be in [0, {logits.shape[1] - 1}], got values in [{low}, {high}]")
    return target


def check_class_indices(classes: object = None, **_: object) -> None:
    """``ValueError`` unless ``classes`` is None (all classes) or a list of distinct non-negative int class indices.

    smp's losses accept any value here and fail (or silently index wrongly) at the first step; this is their
    registered ``check`` (:func:`losses.registry.check_loss`), called by the factories too.
    """
    if classes is None:
        return
    ok = isinstance(classes, (list, tuple)) and all(type(c) is int and c >= 0 for c in classes)
    if not ok or not classes or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be a non-empty list of distinct class indices >= 0 (or null); got {classes!r}")


class LabelMapAdapter(SegLoss):
    """Wraps a library loss (MONAI, smp, torch) so that it takes the common ``(logits, target [N,1,...])`` call.

    ``target_format`` is what the wrapped loss expects: ``"channel"`` = ``[N,1,*spatial]`` int labels (MONAI with
    ``to_onehot_y=True``), ``"index"`` = ``[N,*spatial]`` int64 labels (torch ``CrossEntropyLoss``, smp multiclass).
    """

    def __init__(self, loss: nn.Module, target_format: str) -> None:
        super().__init__()
        if target_format not in ("channel", "index"):
            raise LossConfigError(f"target_format must be 'channel' or 'index', got {target_format!r}")
        self.loss = loss
        self.target_format = target_format

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = check_label_target(logits, target)
        if self.target_format == "index":
            target = target[:, 0]
        return self.loss(logits, target)

    def extra_repr(self) -> str:
        return f"target_format={self.target_format!r}"
