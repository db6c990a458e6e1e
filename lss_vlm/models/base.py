"""What every model of the registry shares: input checks, report tokenisation, the output contract."""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..constants import NUM_VIEWS, VIEWS
from ..errors import ConfigError
from .encoders import check_image_size


class MultiViewModel(nn.Module, abc.ABC):
    """Base of the registry's models.

    ``forward(views [B, V, 1, H, W], report_ids=None, report_mask=None, view_valid=None)`` returns a dict with
    ``seg_logits [B, V, 6, H, W]``, ``grade_logits [B, 5, 4]``, ``attention {name: [B, V, P, h, w]}`` (each map
    sums to 1 over its h·w patches) and, when ``report_ids`` are given and the model has a report decoder,
    ``report_logits [B, T, vocab]`` and ``report_loss``. ``view_valid [B, V]`` (optional) marks missing views.
    """

    tokenizer: PreTrainedTokenizerBase
    report_max_length: int

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config = dict(config)  # constructor arguments, for checkpoints and run records

    @property
    def prompt_names(self) -> list[str]:
        return []

    @property
    def clinical_columns(self) -> list[str] | None:
        """Clinical columns the model reads as ``forward(..., clinical=[B, F])``; None: it reads none."""
        return None

    @staticmethod
    def check_views(views: torch.Tensor) -> tuple[int, int, int, int]:
        """Validate ``views [B, V, 1, H, W]`` and return ``(B, V, H, W)``."""
        if views.ndim != 5 or views.shape[1] != NUM_VIEWS or views.shape[2] != 1:
            raise ConfigError(
                f"views must be [B, {NUM_VIEWS}, 1, H, W] (views {', '.join(VIEWS)}), got {tuple(views.shape)}"
            )
        b, v, _, h, w = views.shape
        check_image_size(h, w)
        return b, v, h, w

    def tokenize_reports(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Reports → ``ids int64 [B, T]`` (``[CLS] … [SEP]``, padded) and ``mask bool [B, T]``, T ≤ the length limit."""
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.report_max_length, return_tensors="pt"
        )
        return batch["input_ids"].long(), batch["attention_mask"].bool()

    @torch.no_grad()
    def generate_reports(
        self,
        views: torch.Tensor,
        num_beams: int = 1,
        max_length: int | None = None,
        view_valid: torch.Tensor | None = None,
        causes: Sequence[Mapping[str, Sequence[str]] | None] | None = None,
        clinical: torch.Tensor | None = None,
    ) -> list[str]:
        """One report per case (``num_beams=1`` greedy, else beam search; ``max_length`` tokens at most).

        ``causes``: per case, the contributing causes to state per level (``{level: [cause, ...]}``, keys of
        :data:`lss_vlm.reports.writer.CAUSE_PHRASES`, e.g. from :func:`lss_vlm.reports.composer.level_causes` of the
        predicted masks); ``None`` lets the model decide. Runs in eval mode without gradients and restores the
        previous mode afterwards. ``clinical [B, F]`` goes to a model with :attr:`clinical_columns` only.
        """
        was_training = self.training
        self.eval()
        extra = {"clinical": clinical} if clinical is not None and self.clinical_columns is not None else {}
        try:
            return self._generate_reports(views, num_beams, max_length, view_valid, causes, **extra)
        finally:
            self.train(was_training)

    @abc.abstractmethod
    def _generate_reports(
        self,
        views: torch.Tensor,
        num_beams: int,
        max_length: int | None,
        view_valid: torch.Tensor | None,
        causes: Sequence[Mapping[str, Sequence[str]] | None] | None = None,
    ) -> list[str]:
        """The model's own report writer (a learned decoder, or templates from the predicted grades)."""
