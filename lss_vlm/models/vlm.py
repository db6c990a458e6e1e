"""The Spatial Patch Cross-Attention vision-language model (``spca_vlm``).

views [B, V, 1, H, W] → fold V into the batch → shared image encoder (pyramid at strides 1..16)
→ stride-16 patch tokens (+ view embedding + 2D sin-cos position code, 2D layout kept)
→ SPCA with the cached prompt tokens at one or more strides (fused grids replace those pyramid levels)
→ (a) smp U-Net decoder → seg logits per view, (b) level-query grade head → grades per level,
(c) GPT-2 report decoder cross-attending to all fused patch tokens + predicted-grade embeddings.
No global pooling on the main path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ..constants import LEVELS, NUM_LABELS, NUM_VIEWS
from ..errors import ConfigError
from .attention import SpatialPatchCrossAttention
from .base import MultiViewModel
from .decoders import DEFAULT_REPORT_MAX_LENGTH, ReportDecoder, SegmentationDecoder
from .encoders import PATCH_STRIDE, PatchTokenizer, build_image_encoder, check_image_size
from .heads import LevelQueryGradeHead
from .registry import MODELS
from .text import DEFAULT_TEXT_ENCODER, PromptBank, PromptEncoding, TextEncoder, default_prompts

DEFAULT_DECODER_CHANNELS: tuple[int, ...] = (96, 48, 24, 16)


def pyramid_index(stride: int) -> int:
    """Index of a stride in the encoder pyramid ``[x, f/2, f/4, f/8, f/16]``."""
    if stride not in (2, 4, 8, 16):
        raise ConfigError(f"model.spca_strides entries must be among 2, 4, 8, 16, got {stride}")
    return int(math.log2(stride))


class SpcaFusion(nn.Module):
    """SPCA at each stride of ``strides``: tokenise that pyramid level, cross-attend to the prompts, replace it."""

    def __init__(
        self,
        encoder_channels: tuple[int, ...],
        embed_dim: int,
        text_dim: int,
        num_views: int,
        strides: Sequence[int] = (PATCH_STRIDE,),
        num_heads: int = 8,
        gate_init: float = 0.1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.strides = tuple(sorted(set(int(s) for s in strides)))
        if PATCH_STRIDE not in self.strides:
            raise ConfigError(f"model.spca_strides must include {PATCH_STRIDE} (the patch grid), got {strides}")
        if embed_dim % num_heads:
            raise ConfigError(f"model.embed_dim={embed_dim} must be divisible by model.num_heads={num_heads}")
        self.tokenizers = nn.ModuleDict(
            {str(s): PatchTokenizer(encoder_channels[pyramid_index(s)], embed_dim, num_views) for s in self.strides}
        )
        self.blocks = nn.ModuleDict(
            {
                str(s): SpatialPatchCrossAttention(embed_dim, text_dim, num_heads, gate_init=gate_init, dropout=dropout)
                for s in self.strides
            }
        )
        channels = list(encoder_channels)
        for s in self.strides:
            channels[pyramid_index(s)] = embed_dim
        self.out_channels = tuple(channels)

    def forward(
        self, features: list[torch.Tensor], num_views: int, prompts: PromptEncoding
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        features = list(features)
        maps: dict[str, torch.Tensor] = {}
        num_prompts = len(prompts.pooled)
        for s in self.strides:
            i = pyramid_index(s)
            tokens = self.tokenizers[str(s)](features[i], num_views)
            features[i], maps[f"spca/s{s}"] = self.blocks[str(s)](
                tokens, prompts.tokens, prompts.token_prompt, num_prompts
            )
        return features, maps


class VisionLanguageModel(MultiViewModel):
    """Multi-view VLM: image encoder, cached prompt bank, a fusion of text into the patch grid, three heads.

    Subclasses change only :meth:`build_fusion` (``global_pool_fusion`` pools instead of cross-attending).
    """

    def __init__(
        self,
        text_encoder: str = DEFAULT_TEXT_ENCODER,
        encoder: str = "lite_cnn",
        encoder_weights: str | None = None,
        image_size: int = 128,
        embed_dim: int = 128,
        num_heads: int = 8,
        spca_strides: Sequence[int] = (PATCH_STRIDE,),
        gate_init: float = 0.1,
        decoder_channels: Sequence[int] = DEFAULT_DECODER_CHANNELS,
        grade_hidden: int = 128,
        report_width: int = 128,
        report_layers: int = 2,
        report_heads: int = 4,
        report_max_length: int = DEFAULT_REPORT_MAX_LENGTH,
        prompts: dict[str, str] | None = None,
        indication: str | None = None,
        freeze_text: bool = True,
        dropout: float = 0.1,
    ) -> None:
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__(config)
        check_image_size(image_size, image_size)
        self.report_max_length = report_max_length
        self.text = TextEncoder(text_encoder, frozen=freeze_text)
        self.tokenizer = self.text.tokenizer
        unknown = sorted(set(prompts or {}) - set(default_prompts(indication)) - {"indication"})
        if unknown:
            raise ConfigError(f"model.prompts has unknown name(s) {', '.join(unknown)}")
        self.prompts = PromptBank(self.text, {**default_prompts(indication), **(prompts or {})})
        self.encoder = build_image_encoder(encoder, encoder_weights)
        self.fusion = self.build_fusion(
            encoder_channels=tuple(self.encoder.out_channels),
            embed_dim=embed_dim,
            text_dim=self.text.hidden_size,
            num_heads=num_heads,
            spca_strides=spca_strides,
            gate_init=gate_init,
        )
        self.seg_decoder = SegmentationDecoder(tuple(self.fusion.out_channels), tuple(decoder_channels), NUM_LABELS)
        self.grade_head = LevelQueryGradeHead(embed_dim, self.text.hidden_size, grade_hidden, dropout)
        self.report_decoder = ReportDecoder(
            self.tokenizer, embed_dim, report_width, report_layers, report_heads, report_max_length, dropout
        )

    def build_fusion(
        self,
        encoder_channels: tuple[int, ...],
        embed_dim: int,
        text_dim: int,
        num_heads: int,
        spca_strides: Sequence[int],
        gate_init: float,
    ) -> nn.Module:
        """The text-into-image fusion: SPCA here; ``out_channels`` tells the decoder the fused pyramid widths."""
        return SpcaFusion(encoder_channels, embed_dim, text_dim, NUM_VIEWS, spca_strides, num_heads, gate_init)

    @property
    def prompt_names(self) -> list[str]:
        return self.prompts.names

    def set_prompts(self, prompts: dict[str, str]) -> None:
        """Change prompt texts (names from :attr:`prompt_names`, or ``indication``); re-encodes them once."""
        unknown = sorted(set(prompts) - set(self.prompts.names) - {"indication"})
        if unknown:
            raise ConfigError(f"unknown prompt(s) {', '.join(unknown)}; prompts are: {', '.join(self.prompt_names)}")
        self.prompts.set_prompts(prompts)
        self.config["prompts"] = {**(self.config.get("prompts") or {}), **prompts}

    def level_text(self, prompts: PromptEncoding) -> torch.Tensor:
        """Mean text embedding of each level query ``[L, d_text]``."""
        return prompts.pooled[[self.prompts.index(f"level/{level}") for level in LEVELS]]

    def encode(self, views: torch.Tensor, view_valid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Everything but the report: seg/grade logits, attention maps and the fused patch grid ``[B, V, d, h, w]``."""
        b, v, h, w = self.check_views(views)
        features = self.encoder(views.reshape(b * v, 1, h, w))
        prompts = self.prompts.encoding()
        features, maps = self.fusion(features, v, prompts)
        seg = self.seg_decoder(features).reshape(b, v, NUM_LABELS, h, w)
        grid = features[pyramid_index(PATCH_STRIDE)]
        grid = grid.reshape(b, v, *grid.shape[1:])
        grade_logits, grade_maps = self.grade_head(grid, self.level_text(prompts), view_valid)
        attention = {name: m.reshape(b, v, *m.shape[1:]) for name, m in maps.items()}
        attention["grade"] = grade_maps
        return {"seg_logits": seg, "grade_logits": grade_logits, "attention": attention, "grid": grid}

    def report_memory(
        self, grid: torch.Tensor, grade_logits: torch.Tensor, view_valid: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, v, d, h, w = grid.shape
        visual = grid.flatten(3).transpose(2, 3).reshape(b, v * h * w, d)
        valid = view_valid if view_valid is not None else torch.ones(b, v, dtype=torch.bool, device=grid.device)
        visual_mask = valid.bool()[:, :, None].expand(b, v, h * w).reshape(b, v * h * w)
        return self.report_decoder.memory(visual, visual_mask, grade_logits.detach().softmax(-1))

    def forward(
        self,
        views: torch.Tensor,
        report_ids: torch.Tensor | None = None,
        report_mask: torch.Tensor | None = None,
        view_valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        out = self.encode(views, view_valid)
        grid = out.pop("grid")
        if report_ids is not None:
            mask = report_mask if report_mask is not None else report_ids != self.report_decoder.pad_id
            memory, memory_mask = self.report_memory(grid, out["grade_logits"], view_valid)
            out["report_logits"], out["report_loss"] = self.report_decoder(memory, memory_mask, report_ids, mask)
        return out

    def _generate_reports(
        self, views: torch.Tensor, num_beams: int, max_length: int | None, view_valid: torch.Tensor | None
    ) -> list[str]:
        out = self.encode(views, view_valid)
        memory, memory_mask = self.report_memory(out["grid"], out["grade_logits"], view_valid)
        return self.report_decoder.generate(memory, memory_mask, num_beams, max_length)


MODELS.register("spca_vlm")(VisionLanguageModel)
