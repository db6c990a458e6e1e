"""Per-epoch validation: cheap segmentation (Dice/IoU, no surface distances) and grade metrics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..metrics.classification import GradeMetrics
from ..metrics.segmentation import SegmentationMetrics
from .batches import model_inputs, move_batch, valid_view_ids, valid_view_labelled


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype on ``device``: bfloat16 where the GPU supports it (Ampere and later: no loss scaling
    needed), float16 on older GPUs (with a :class:`torch.amp.GradScaler`)."""
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast_context(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """Autocast (:func:`amp_dtype`) on CUDA when ``amp`` is on; a no-op everywhere else (AMP is never used on CPU)."""
    if amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=amp_dtype(device))
    return contextlib.nullcontext()


@torch.no_grad()
def predict(
    model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = False
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Yield ``(batch, output)`` for every batch of ``loader`` with the model in eval mode (batch moved to device)."""
    model.eval()
    for batch in loader:
        batch = move_batch(batch, device)
        with autocast_context(device, amp):
            out = model(batch["views"], view_valid=batch.get("view_valid"), **model_inputs(model, batch))
        yield batch, out


def update_metrics(
    seg: SegmentationMetrics, grades: GradeMetrics, batch: dict[str, Any], out: dict[str, Any]
) -> torch.Tensor:
    """Feed one batch to the segmentation and grade metrics; returns the predicted label maps ``[B, V, H, W]``."""
    pred = out["seg_logits"].argmax(dim=2)
    valid = batch["mask_valid"]
    if bool(valid.any()):
        case_ids, views = valid_view_ids(batch["case_id"], valid)
        labelled = valid_view_labelled(batch.get("labelled"), valid, out["seg_logits"].shape[2]).cpu()
        seg.update(
            pred[valid].cpu(), batch["masks"][valid].cpu(), batch["spacing"][valid].cpu(), case_ids, views, labelled
        )
    probs = out["grade_logits"].float().softmax(dim=-1)
    grades.update(probs.cpu(), batch["grades"].cpu())
    return pred


def validate(model: nn.Module, loader: DataLoader, device: torch.device, amp: bool = False) -> dict[str, float]:
    """Dice/IoU per class and macro plus grade accuracy/F1/QWK/... of ``model`` on ``loader`` (flat keys)."""
    seg = SegmentationMetrics(distances=False)
    grades = GradeMetrics()
    for batch, out in predict(model, loader, device, amp):
        update_metrics(seg, grades, batch, out)
    metrics = {**seg.aggregate(), **grades.aggregate()}
    return {k: float(v) for k, v in metrics.items() if not k.startswith(("hd95", "msd"))}
