"""Decoders: the U-Net segmentation decoder (smp) and the transformer report decoder (GPT-2 with cross-attention)."""

from __future__ import annotations

import re

import torch
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

from ..constants import NUM_GRADES, NUM_LABELS, NUM_LEVELS

IGNORE_INDEX = -100  # label value ignored by the token cross-entropy
#: Report length limit in word-piece tokens ([CLS] and [SEP] included). Reference reports of the phantom / report
#: writer are 131 tokens (median), 162 (90th percentile) and up to ~190 long with the MiniLM tokenizer.
DEFAULT_REPORT_MAX_LENGTH = 192


class SegmentationDecoder(nn.Module):
    """smp's U-Net decoder over the (fused) feature pyramid ``[x, f/2, f/4, f/8, f/16]`` + a 3×3 logit head."""

    def __init__(
        self, encoder_channels: tuple[int, ...], decoder_channels: tuple[int, ...], num_classes: int = NUM_LABELS
    ) -> None:
        super().__init__()
        self.decoder = UnetDecoder(
            encoder_channels=encoder_channels, decoder_channels=decoder_channels, n_blocks=len(decoder_channels)
        )
        self.head = SegmentationHead(decoder_channels[-1], num_classes, kernel_size=3)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head(self.decoder(features))


_LEVEL_PATTERN = re.compile(r"\b([lst])\s*(\d)\s*-\s*([lst])\s*(\d)\b", re.IGNORECASE)


def tidy_decoded_report(text: str) -> str:
    """Undo the uncased word-piece spacing: ``"l4 - l5 : mild stenosis ."`` → ``"L4-L5: mild stenosis."``."""
    text = _LEVEL_PATTERN.sub(lambda m: f"{m[1].upper()}{m[2]}-{m[3].upper()}{m[4]}", text)
    text = re.sub(r"\s+([.,;:)])", r"\1", text)
    text = re.sub(r"\(\s+", "(", text)
    sentences = re.split(r"(?<=[.;:])\s+", text.strip())
    return " ".join(s[:1].upper() + s[1:] for s in sentences if s)


class ReportDecoder(nn.Module):
    r"""Small GPT-2 decoder cross-attending to visual tokens and predicted-grade embeddings.

    Memory: :math:`M = [\,\mathrm{LN}(W_m X)\,;\ \mathrm{LN}(p_l^\top E_g + e_l)\,]` with :math:`X` the fused patch
    tokens of all views, :math:`p_l` the predicted grade probabilities of level :math:`l`, :math:`E_g` grade and
    :math:`e_l` level embeddings. Training uses teacher forcing with the token cross-entropy
    :math:`\mathcal L_{txt} = -\frac{1}{|\mathcal T|}\sum_{t \in \mathcal T} \log p(y_{t+1} \mid y_{\le t}, M)`
    over non-padding target tokens :math:`\mathcal T`; evaluation uses ``transformers``' greedy or beam search.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        memory_dim: int,
        width: int = 128,
        num_layers: int = 2,
        num_heads: int = 4,
        max_length: int = DEFAULT_REPORT_MAX_LENGTH,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.bos_id = int(tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id)
        self.eos_id = int(tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id)
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=width,
            n_layer=num_layers,
            n_head=num_heads,
            n_positions=max_length,
            n_inner=2 * width,
            add_cross_attention=True,
            resid_pdrop=dropout,
            embd_pdrop=dropout,
            attn_pdrop=dropout,
            bos_token_id=self.bos_id,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
        )
        self.lm = GPT2LMHeadModel(config)
        self.lm.loss_type = "ForCausalLM"  # shifted token CE, IGNORE_INDEX skipped, mean over target tokens
        self.memory_proj = nn.Linear(memory_dim, width)
        self.memory_norm = nn.LayerNorm(width)
        self.grade_embedding = nn.Parameter(torch.randn(NUM_GRADES, width) * 0.02)
        self.level_embedding = nn.Parameter(torch.randn(NUM_LEVELS, width) * 0.02)

    def memory(
        self, visual: torch.Tensor, visual_mask: torch.Tensor, grade_probs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``visual [B, M, d]``, ``visual_mask [B, M]`` (bool), ``grade_probs [B, L, 4]`` → memory and its mask."""
        grades = grade_probs @ self.grade_embedding + self.level_embedding  # [B, L, width]
        memory = self.memory_norm(torch.cat([self.memory_proj(visual), grades], dim=1))
        mask = torch.cat([visual_mask, visual_mask.new_ones(grades.shape[:2])], dim=1)
        return memory, mask

    def forward(
        self, memory: torch.Tensor, memory_mask: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: logits ``[B, T, vocab]`` and the shifted token CE (padding ignored; 0 without targets)."""
        labels = ids.masked_fill(~mask.bool(), IGNORE_INDEX)
        out = self.lm(
            input_ids=ids,
            attention_mask=mask.long(),
            encoder_hidden_states=memory,
            encoder_attention_mask=memory_mask.long(),
            labels=labels,
        )
        if not bool((labels[:, 1:] != IGNORE_INDEX).any()):  # no target token at all: nothing to learn, loss 0
            return out.logits, out.logits.sum() * 0.0
        return out.logits, out.loss

    @torch.no_grad()
    def generate(
        self, memory: torch.Tensor, memory_mask: torch.Tensor, num_beams: int = 1, max_length: int | None = None
    ) -> list[str]:
        """Greedy (``num_beams=1``) or beam-search decoding, at most ``max_length`` tokens (default: the limit)."""
        length = min(max_length or self.max_length, self.max_length)
        start = torch.full((memory.shape[0], 1), self.bos_id, dtype=torch.long, device=memory.device)
        ids = self.lm.generate(
            input_ids=start,
            attention_mask=torch.ones_like(start),
            encoder_hidden_states=memory,
            encoder_attention_mask=memory_mask.long(),
            max_length=length,
            num_beams=num_beams,
            do_sample=False,
            bos_token_id=self.bos_id,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
        )
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [tidy_decoded_report(t) for t in texts]
