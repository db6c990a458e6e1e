"""Marginal loss for partially labelled cases: any registered loss, trained on masks that annotate only some classes.

Shi, Miao, Zhang, Li, Zhou, Liu, Xu (2021), "Marginal loss and exclusion loss for partially supervised multi-organ
segmentation", Medical Image Analysis 70, 101979. A case that annotates only the classes ``S`` draws the pixels of the
other classes as background, so "background" in its mask means "background or an unannotated class". The marginal loss
merges the probabilities of those classes with background before the loss:

    p̃_bg = p_bg + Σ_{c ∉ S} p_c,   p̃_c = p_c (c ∈ S),   p̃_c = 0 (c ∉ S, c ≠ bg)

done on the logits, so that any loss that starts from a softmax sees exactly these probabilities:

    z̃_bg = logsumexp(z_bg, z_c for c ∉ S),   z̃_c = z_c (c ∈ S),   z̃_c = −10⁴ (c ∉ S; softmax gives 0)

A correct prediction of an unannotated structure is then not penalised, and the unannotated channels still learn
through the merged background term. Pixels whose target is ``ignore_index`` get no gradient: their logits are replaced
by a constant, confident background prediction and their target by background, so they add nothing to foreground
overlap terms and a constant to per-pixel terms. With every class annotated and no ignored pixel the wrapped loss is
called unchanged (identical value and gradient).

The wrapper keeps the loss's class count, so per-class state (PID-Tversky buffers, class weights) is untouched.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import SegLoss

#: Logit given to merged-away channels and to the non-background channels of ignored pixels (finite in fp16).
NEGATIVE_LOGIT = -1.0e4


class MarginalLoss(SegLoss):
    """``MarginalLoss(loss)(logits [N,C,*S], target [N,1,*S] int64, labelled [N,C] bool | None) -> scalar``.

    Args:
        loss: any loss of the zoo (``loss(logits, target)`` with labels in ``[0, C)``).
        ignore_index: target value of pixels that are not annotated (no gradient).
        background: index of the background class (always annotated).

    ``labelled[n, c]`` says whether case ``n`` annotates class ``c`` (``None``: every class). Target values of
    unannotated classes, if any, are read as background. Hooks (``on_step_end`` ...) are forwarded to ``loss``.
    """

    def __init__(self, loss: nn.Module, ignore_index: int = 255, background: int = 0) -> None:
        super().__init__()
        self.loss = loss
        self.ignore_index = int(ignore_index)
        self.background = int(background)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, labelled: torch.Tensor | None = None) -> torch.Tensor:
        n, c = logits.shape[:2]
        if target.ndim == logits.ndim - 1:
            target = target.unsqueeze(1)
        target = target.long()
        ignored = target == self.ignore_index  # [N,1,*S]
        if labelled is None:
            labelled = torch.ones(n, c, dtype=torch.bool, device=logits.device)
        labelled = labelled.to(device=logits.device, dtype=torch.bool).clone()
        labelled[:, self.background] = True
        if bool(labelled.all()) and not bool(ignored.any()):
            return self.loss(logits, target)
        spatial = (1,) * (logits.ndim - 2)
        unlabelled = (~labelled).view(n, c, *spatial)
        channel = torch.arange(c, device=logits.device).view(1, c, *spatial)
        is_background = channel == self.background
        pooled = logits.masked_fill(~(unlabelled | is_background), float("-inf"))
        merged_background = torch.logsumexp(pooled, dim=1, keepdim=True)  # [N,1,*S]
        merged = torch.where(unlabelled, torch.full_like(logits, NEGATIVE_LOGIT), logits)
        merged = torch.where(is_background, merged_background, merged)
        neutral = torch.where(is_background, 0.0, NEGATIVE_LOGIT).to(logits.dtype).expand_as(logits)
        merged = torch.where(ignored, neutral, merged)
        safe_target = torch.where(ignored, self.background, target).clamp(0, c - 1)
        target_unlabelled = (~labelled).gather(1, safe_target.view(n, -1)).view_as(safe_target)
        new_target = torch.where(target_unlabelled, self.background, safe_target)
        return self.loss(merged, new_target)

    def on_step_end(self) -> None:
        if hasattr(self.loss, "on_step_end"):
            self.loss.on_step_end()

    def on_epoch_end(self) -> None:
        if hasattr(self.loss, "on_epoch_end"):
            self.loss.on_epoch_end()

    def controller_state(self) -> dict[str, dict[int, float]]:
        return self.loss.controller_state() if hasattr(self.loss, "controller_state") else {}
