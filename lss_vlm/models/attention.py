r"""Spatial Patch Cross-Attention (SPCA): image patch tokens query the text tokens of the prompts.

For a grid of patch tokens :math:`X \in \mathbb{R}^{N \times d}` (:math:`N = h \cdot w` patches of one view, 2D
layout kept) and the cached text tokens :math:`E \in \mathbb{R}^{K \times d_t}` of all prompts:

.. math::

    T &= E W_t                                   && \text{(text projected to width } d\text{)} \\
    A_j &= \mathrm{softmax}_k\!\left(\frac{(\mathrm{LN}(X) W^Q_j)(\mathrm{LN}(T) W^K_j)^\top}{\sqrt{d/H}}\right)
          && \text{head } j = 1..H,\ A_j \in \mathbb{R}^{N \times K} \\
    X' &= X + \tanh(\gamma_a)\,\big[\,\Vert_j\, A_j\, \mathrm{LN}(T) W^V_j\,\big] W^O \\
    Y  &= X' + \tanh(\gamma_f)\,\mathrm{FFN}(\mathrm{LN}(X')),
          \qquad \mathrm{FFN}(z) = W_2\,\mathrm{GELU}(W_1 z)

The gates :math:`\gamma_a, \gamma_f` start small (``gate_init = 0.1``) so the block begins close to the identity
and the image path is not disturbed early in training (Flamingo-style), yet gradients reach every weight from
step one. ``Y`` is reshaped back to the ``h × w`` grid.

**Text → patch attention maps.** :math:`A_j` is a distribution over text tokens for each patch (softmax over
:math:`k`). For explanations we want, per prompt :math:`p`, a distribution over *patches*. With
:math:`\bar A = \frac1H \sum_j A_j` and :math:`\mathcal K_p` the tokens of prompt :math:`p`:

.. math::

    r_p(n) = \sum_{k \in \mathcal K_p} \bar A_{nk}, \qquad M_p(n) = \frac{r_p(n)}{\sum_{n'} r_p(n')}

:math:`r_p(n)` is the share of patch :math:`n`'s attention that goes to prompt :math:`p`; :math:`M_p` sums to 1
over the patches of each view ("where in this view does the model look at prompt :math:`p`").
"""

from __future__ import annotations

import torch
from torch import nn


class SpatialPatchCrossAttention(nn.Module):
    """One SPCA block: patch queries, text keys/values, gated residual, LayerNorm and FFN (equations above)."""

    def __init__(
        self,
        dim: int,
        text_dim: int,
        num_heads: int = 8,
        ffn_ratio: float = 2.0,
        gate_init: float = 0.1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.text_proj = nn.Linear(text_dim, dim)
        self.norm_query = nn.LayerNorm(dim)
        self.norm_text = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.gate_attn = nn.Parameter(torch.tensor(float(gate_init)))
        self.norm_ffn = nn.LayerNorm(dim)
        hidden = int(dim * ffn_ratio)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.gate_ffn = nn.Parameter(torch.tensor(float(gate_init)))

    def forward(
        self, grid: torch.Tensor, text_tokens: torch.Tensor, token_prompt: torch.Tensor, num_prompts: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fuse text into the patch grid.

        Args:
            grid: patch tokens ``[N, d, h, w]`` (N = batch × views).
            text_tokens: cached text tokens of all prompts ``[K, d_text]`` (shared by the batch).
            token_prompt: prompt index of every text token ``[K]``.
            num_prompts: number of prompts P.

        Returns:
            The fused grid ``[N, d, h, w]`` and the text→patch maps ``[N, P, h, w]`` (each sums to 1 over h·w).
        """
        n, d, h, w = grid.shape
        x = grid.flatten(2).transpose(1, 2)  # [N, h*w, d]
        text = self.norm_text(self.text_proj(text_tokens)).unsqueeze(0).expand(n, -1, -1)  # [N, K, d]
        attended, weights = self.attn(
            self.norm_query(x), text, text, need_weights=True, average_attn_weights=True
        )  # weights [N, h*w, K], mean over heads
        x = x + torch.tanh(self.gate_attn) * attended
        x = x + torch.tanh(self.gate_ffn) * self.ffn(self.norm_ffn(x))
        fused = x.transpose(1, 2).reshape(n, d, h, w)
        return fused, text_to_patch_maps(weights, token_prompt, num_prompts).reshape(n, num_prompts, h, w)


def text_to_patch_maps(weights: torch.Tensor, token_prompt: torch.Tensor, num_prompts: int) -> torch.Tensor:
    """Patch→token attention ``[N, Q, K]`` → per-prompt distributions over patches ``[N, P, Q]`` (M_p above)."""
    one_hot = nn.functional.one_hot(token_prompt, num_prompts).to(weights.dtype)  # [K, P]
    relevance = weights @ one_hot  # [N, Q, P]: r_p(n)
    relevance = relevance / relevance.sum(dim=1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
    return relevance.transpose(1, 2)
