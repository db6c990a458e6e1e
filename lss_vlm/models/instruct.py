"""Test-time text intervention: a clinician's instruction modulates the segmentation decoder's features by FiLM.

Causal-SAM-LLM (test-time intervention through text) lets a user steer a segmentation with a sentence. Here the
sentence ("the ligamentum flavum at L4-L5 is thicker than predicted") is encoded by the model's own text encoder
(the prompt path of :class:`~lss_vlm.models.text.PromptBank`: mean of the token embeddings), and FiLM
(Perez et al. 2018, "FiLM: Visual Reasoning with a General Conditioning Layer") maps it to a per-channel scale and
shift of the U-Net decoder's last feature map, just before the logit head::

    [γ - 1, β] = W₂ · GELU(W₁ · e + b₁) + b₂          e = text embedding of the instruction  [D]
    features ← γ ⊙ features + β                          features [N, C, H, W] (C = last decoder width)

``W₂, b₂`` start at zero, so an untrained FiLM is the identity: **a model whose FiLM was never trained with
instructions ignores them** (the "after" masks equal the "before" masks). The layer is trained only by the
instruction term of :mod:`lss_vlm.engine.instruction` (``model.params.instruct_film: true``; off by default, so the
model and every existing suite are unchanged).

Where an instruction names a level (``L4-L5``), it acts on that level's axial view only; otherwise on every view.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import nn

from ..constants import AXIAL_VIEW_OF_LEVEL, FOREGROUND_LABELS, LEVELS, NUM_LABELS, VIEWS
from ..errors import ConfigError

#: Words of the instruction templates for "more of the class" (+1) and "less of it" (-1).
DIRECTION_WORDS: dict[int, tuple[str, ...]] = {
    1: ("larger", "thicker", "bigger", "wider"),
    -1: ("smaller", "thinner", "narrower", "less extensive"),
}
#: How each foreground class is named in an instruction.
CLASS_PHRASES: dict[str, str] = {
    "vertebral_body": "vertebral body",
    "disc": "intervertebral disc",
    "thecal_sac": "thecal sac",
    "posterior_elements": "posterior elements",
    "ligamentum_flavum": "ligamentum flavum",
}
FILM_HIDDEN = 64
_LEVEL_PATTERN = re.compile(r"\b(L[1-5])\s*[-/]\s*(L[1-5]|S1)\b", re.IGNORECASE)


def instruction_text(label: str, direction: int, level: str | None = None, variant: int = 0) -> str:
    """The template sentence: ``"the ligamentum flavum at L4-L5 is thicker than predicted"``.

    ``label``: a foreground class of :data:`~lss_vlm.constants.LABELS`; ``direction`` +1 (more) or -1 (less);
    ``variant`` picks the word of :data:`DIRECTION_WORDS` (modulo their number). Raises :class:`ConfigError` on an
    unknown label or direction.
    """
    if label not in CLASS_PHRASES:
        raise ConfigError(f"instruction class {label!r} is unknown; classes: {', '.join(FOREGROUND_LABELS)}")
    if direction not in DIRECTION_WORDS:
        raise ConfigError(f"instruction direction must be +1 or -1, got {direction!r}")
    words = DIRECTION_WORDS[direction]
    where = f" at {level}" if level else ""
    return f"the {CLASS_PHRASES[label]}{where} is {words[variant % len(words)]} than predicted"


def instruction_views(text: str) -> torch.Tensor:
    """Views an instruction acts on, bool ``[V]``: the axial view of the level it names, else every view.

    Raises :class:`ConfigError` for an empty text or a level that is not one of :data:`LEVELS`.
    """
    if not text or not text.strip():
        raise ConfigError("--instruct: the instruction is empty; e.g. 'the thecal sac is smaller than predicted'")
    found = _LEVEL_PATTERN.search(text)
    views = torch.ones(len(VIEWS), dtype=torch.bool)
    if found is None:
        return views
    level = f"{found[1].upper()}-{found[2].upper()}"
    if level not in AXIAL_VIEW_OF_LEVEL:
        raise ConfigError(f"instruction names level {level!r}; levels: {', '.join(LEVELS)}")
    views[:] = False
    views[VIEWS.index(AXIAL_VIEW_OF_LEVEL[level])] = True
    return views


class InstructionFiLM(nn.Module):
    """FiLM of the decoder's last features from an instruction's text embedding (module docstring).

    ``channels``: width C of the features; ``text_dim``: width D of the text embedding; ``weight``: weight of the
    instruction term in training (read by :mod:`lss_vlm.engine.instruction`). Identity until trained.
    """

    def __init__(self, text_dim: int, channels: int, weight: float = 1.0, hidden: int = FILM_HIDDEN) -> None:
        super().__init__()
        if weight < 0:
            raise ConfigError(f"model.params.instruct_weight must be >= 0, got {weight}")
        self.weight = float(weight)
        self.channels = int(channels)
        self.mlp = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, 2 * channels))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)
        self._cache: dict[str, torch.Tensor] = {}
        self.active: tuple[torch.Tensor, torch.Tensor] | None = None  # (embedding [D], views [V]) at inference

    def modulate(self, features: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """``γ ⊙ features + β`` for ``features [N, C, H, W]`` and one embedding per image ``[N, D]``."""
        delta_gamma, beta = self.mlp(embedding.to(features.dtype)).chunk(2, dim=-1)
        return (1.0 + delta_gamma)[:, :, None, None] * features + beta[:, :, None, None]

    @torch.no_grad()
    def embed(self, text_encoder: nn.Module, texts: Sequence[str]) -> torch.Tensor:
        """Mean token embedding ``[len(texts), D]`` of each text (the prompt path), cached per text."""
        missing = sorted({t for t in texts if t not in self._cache})
        if missing:
            hidden, mask = text_encoder(missing)
            pooled = (hidden.float() * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            self._cache.update({t: row for t, row in zip(missing, pooled)})
        return torch.stack([self._cache[t] for t in texts])

    def segment(
        self, decoder: nn.Module, features: list[torch.Tensor], b: int, v: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Seg logits ``[B, V, 6, H, W]`` (with the active instruction applied, if any) and the decoder's last
        features ``[B, V, C, H, W]`` before FiLM. ``decoder``: a :class:`~lss_vlm.models.decoders.SegmentationDecoder`.
        """
        decoded = decoder.decode(features)
        n, c, h, w = decoded.shape
        if self.active is None:
            logits = decoder.head(decoded)
        else:
            embedding, views = self.active
            views = views.to(decoded.device)[None].expand(b, v).reshape(n)
            modulated = self.modulate(decoded, embedding.to(decoded.device)[None].expand(n, -1))
            logits = decoder.head(torch.where(views[:, None, None, None], modulated, decoded))
        return logits.reshape(b, v, NUM_LABELS, h, w), decoded.reshape(b, v, c, h, w)

    def head_logits(self, decoder: nn.Module, features: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, 6, H, W]`` of decoder features ``[N, C, H, W]`` modulated by embeddings ``[N, D]``."""
        return decoder.head(self.modulate(features, embedding))
