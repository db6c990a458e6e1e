"""Grade heads: per disc level, 4 stenosis grades from the sagittal views and that level's axial view."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..constants import AXIAL_VIEW_OF_LEVEL, LEVELS, NUM_GRADES, SAGITTAL_VIEWS, VIEWS

#: For each level, the view indices it is graded from: both sagittal views, then the level's axial view.
LEVEL_VIEW_INDEX: torch.Tensor = torch.tensor(
    [[VIEWS.index(v) for v in SAGITTAL_VIEWS] + [VIEWS.index(AXIAL_VIEW_OF_LEVEL[level])] for level in LEVELS]
)


def gather_level_views(per_view: torch.Tensor) -> torch.Tensor:
    """``[B, V, L, d]`` (a vector per view and level) → ``[B, L, 3·d]``: sag_t1, sag_t2 and the level's axial view."""
    b, _, num_levels, d = per_view.shape
    index = LEVEL_VIEW_INDEX.to(per_view.device)  # [L, 3]
    levels = torch.arange(num_levels, device=per_view.device)[:, None].expand_as(index)
    return per_view[:, index, levels].reshape(b, num_levels, -1)  # [B, L, 3, d] → [B, L, 3d]


def grade_mlp(in_features: int, hidden: int, dropout: float = 0.1) -> nn.Sequential:
    """Shared classifier of the per-level feature vector → 4 grade logits."""
    return nn.Sequential(
        nn.LayerNorm(in_features),
        nn.Linear(in_features, hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, NUM_GRADES),
    )


class LevelQueryGradeHead(nn.Module):
    r"""Attention pooling of patch tokens with a level-specific text query, then an MLP to 4 grades.

    For view :math:`v` with patch tokens :math:`X_v \in \mathbb{R}^{N \times d}` and level query
    :math:`q_l = W_q\, \bar e_l` (:math:`\bar e_l` = cached mean text embedding of ``"spinal canal at <level>"``):

    .. math::

        a_{v,l} = \mathrm{softmax}_n\!\left(\frac{\mathrm{LN}(X_v) W_k\, q_l}{\sqrt d}\right),\quad
        z_{v,l} = a_{v,l}^\top X_v,\quad
        \mathrm{logits}_l = \mathrm{MLP}\big([z_{\text{sag\_t1},l};\ z_{\text{sag\_t2},l};\ z_{\text{ax}_l,l}]\big)

    The pooling maps :math:`a_{v,l}` (one distribution over the patches of each view) are returned for explanations.
    """

    def __init__(self, dim: int, text_dim: int, hidden: int = 128, dropout: float = 0.1) -> None:
        super().__init__()
        self.query_proj = nn.Linear(text_dim, dim)
        self.key_norm = nn.LayerNorm(dim)
        self.key_proj = nn.Linear(dim, dim)
        self.classifier = grade_mlp(3 * dim, hidden, dropout)

    def forward(
        self, grid: torch.Tensor, level_text: torch.Tensor, view_valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``grid [B, V, d, h, w]``, ``level_text [L, d_text]`` → ``logits [B, L, 4]``, ``maps [B, V, L, h, w]``."""
        features, maps = self.pool(grid, level_text, view_valid)
        return self.classifier(features), maps

    def pool(
        self, grid: torch.Tensor, level_text: torch.Tensor, view_valid: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's input ``[B, L, 3·d]`` (pooled ``[sag_t1; sag_t2; ax_l]`` per level) and the maps."""
        b, v, d, h, w = grid.shape
        tokens = grid.flatten(3).transpose(2, 3)  # [B, V, N, d]
        queries = self.query_proj(level_text)  # [L, d]
        scores = self.key_proj(self.key_norm(tokens)) @ queries.t() / math.sqrt(d)  # [B, V, N, L]
        weights = scores.softmax(dim=2)
        pooled = weights.transpose(2, 3) @ tokens  # [B, V, L, d]
        if view_valid is not None:
            pooled = pooled * view_valid[:, :, None, None].to(pooled.dtype)
        return gather_level_views(pooled), weights.transpose(2, 3).reshape(b, v, -1, h, w)
