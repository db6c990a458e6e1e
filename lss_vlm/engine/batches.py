"""Helpers that turn a loader batch and a model output into what losses and metrics take."""

from __future__ import annotations

from typing import Any

import torch

from ..constants import VIEWS


def move_batch(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Copy the tensors of a batch dict to ``device`` (lists of strings stay as they are)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def valid_view_pairs(
    seg_logits: torch.Tensor, masks: torch.Tensor, mask_valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Segmentation logits ``[N, C, H, W]`` and targets ``[N, 1, H, W]`` of the views that have a mask.

    ``seg_logits [B, V, C, H, W]``, ``masks [B, V, H, W]``, ``mask_valid [B, V]``; ``N = mask_valid.sum()``.
    """
    return seg_logits[mask_valid], masks[mask_valid].unsqueeze(1)


def valid_view_labelled(labelled: torch.Tensor | None, mask_valid: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Annotated classes ``[N, C]`` (bool) of the views selected by :func:`valid_view_pairs`.

    ``labelled [B, C]`` is per case (the batch's ``labelled`` key; ``None`` = every class), ``mask_valid [B, V]``.
    """
    n = int(mask_valid.sum())
    if labelled is None:
        return torch.ones(n, num_classes, dtype=torch.bool, device=mask_valid.device)
    views = mask_valid.shape[1]
    return labelled[:, None, :].expand(-1, views, -1)[mask_valid]


def valid_view_ids(case_ids: list[str], mask_valid: torch.Tensor) -> tuple[list[str], list[str]]:
    """Case id and view name of every view selected by :func:`valid_view_pairs`, in the same order."""
    rows, cols = torch.nonzero(mask_valid.cpu(), as_tuple=True)
    return [case_ids[int(r)] for r in rows], [VIEWS[int(c)] for c in cols]


def pick_references(reports: list[list[str]], epoch: int) -> tuple[list[str], torch.Tensor]:
    """One reference report per case, cycling through each case's references by epoch.

    Returns the texts (``""`` where a case has none) and a bool ``[B]`` telling which cases have one.
    """
    texts = [refs[epoch % len(refs)] if refs else "" for refs in reports]
    return texts, torch.tensor([bool(refs) for refs in reports], dtype=torch.bool)


def model_inputs(model: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """Optional keyword inputs of ``model(views, ...)`` from a batch: ``clinical [B, F]`` for a model with
    ``clinical_columns`` (clinical fusion), nothing for the others."""
    if getattr(model, "clinical_columns", None) and "clinical" in batch:
        return {"clinical": batch["clinical"]}
    return {}


def level_references(reports: list[list[str]], epoch: int) -> list[list[str | None]]:
    """Per case, the sentence of each level in the reference :func:`pick_references` picks for ``epoch``
    (``None`` where the case has no reference, or its reference has no sentence for that level or says only "not
    assessed")."""
    from ..constants import LEVELS, MISSING_GRADE
    from ..reports.writer import level_sentence, level_sentences

    texts, _ = pick_references(reports, epoch)
    unknown = {level: level_sentence(level, MISSING_GRADE, "", "", "") for level in LEVELS}  # "L1-L2: not assessed."
    rows = [level_sentences(text) for text in texts]
    return [[row[lv] if lv in row and row[lv] != unknown[lv] else None for lv in LEVELS] for row in rows]
