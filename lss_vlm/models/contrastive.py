r"""Image–text contrastive alignment of each level's pooled patch tokens with its reference sentence.

A symmetric InfoNCE (CLIP, Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
Supervision"; the image–text alignment that LUMEN and Causal-SAM-LLM also use). For the :math:`N` (case, level)
pairs of a batch that have a reference sentence, with :math:`u_i = \mathrm{norm}(P_v f_i)` the projected image
feature of pair :math:`i` (the grade head's attention-pooled ``[sag_t1; sag_t2; ax_l]`` vector, before any clinical
fusion) and :math:`t_i = \mathrm{norm}(P_t \bar e_i)` the projected mean token embedding of its sentence under the
frozen text encoder:

.. math::

    s_{ij} = u_i^\top t_j / \tau, \qquad
    \mathcal L = \frac{1}{2N} \sum_{i=1}^{N} \Big[ -\log \frac{e^{s_{ii}}}{\sum_j e^{s_{ij}}}
                 - \log \frac{e^{s_{ii}}}{\sum_j e^{s_{ji}}} \Big]

with a fixed temperature :math:`\tau` (``train.contrastive_temperature``, CLIP's initial 0.07). Every other pair
of the batch is a negative, including the same level of another case with an equally worded grade: with ~10 pairs a
batch, such false negatives are common on the phantom (most levels are normal), which bounds what the term can teach.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def symmetric_info_nce(image: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE of ``N`` matched pairs (row ``i`` of ``image [N, p]`` matches row ``i`` of ``text [N, p]``).

    Both are L2-normalised here; ``temperature`` > 0. Returns a scalar (0-dim) tensor; ``N = 0`` gives 0 (no
    gradient), ``N = 1`` gives 0 (a pair without negatives carries no contrast).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if image.shape[0] == 0:
        return image.sum() * 0.0
    logits = F.normalize(image.float(), dim=-1) @ F.normalize(text.float(), dim=-1).t() / temperature
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class ContrastiveHead(nn.Module):
    """The two projections :math:`P_v` (image, ``image_dim`` → ``dim``) and :math:`P_t` (text, ``text_dim`` →
    ``dim``) of :func:`symmetric_info_nce`; the text encoder itself stays frozen."""

    def __init__(self, image_dim: int, text_dim: int, dim: int) -> None:
        super().__init__()
        self.image_proj = nn.Linear(image_dim, dim)
        self.text_proj = nn.Linear(text_dim, dim)

    def forward(self, image: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
        """``image [N, image_dim]``, ``text [N, text_dim]`` (pairs row by row) → the symmetric InfoNCE."""
        return symmetric_info_nce(self.image_proj(image), self.text_proj(text.to(image.dtype)), temperature)
