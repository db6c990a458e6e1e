"""Baselines with the same output contract as ``spca_vlm``.

* ``unet_image_only``: smp U-Net per view, a CNN grade classifier on the pooled deepest encoder features, and a
  template report written from its predicted grades (no text anywhere in the network).
* ``global_pool_fusion``: the ``spca_vlm`` network with SPCA replaced by global pooling: each view's patch grid is
  averaged to one vector, concatenated with the mean prompt embedding, mixed by an MLP and broadcast back over the
  grid, then decoded by the same heads. It tests the claim that pooling before fusion loses anatomy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..constants import NUM_LABELS, NUM_LEVELS, NUM_VIEWS
from ..errors import ConfigError
from ..reports.writer import write_reports
from .base import MultiViewModel
from .decoders import DEFAULT_REPORT_MAX_LENGTH
from .encoders import PATCH_STRIDE, PatchTokenizer, check_image_size
from .heads import gather_level_views, grade_mlp
from .registry import MODELS
from .text import DEFAULT_TEXT_ENCODER, PromptEncoding, load_tokenizer
from .vlm import VisionLanguageModel, pyramid_index


class GlobalPoolFusion(nn.Module):
    r"""Pooled fusion: :math:`g = \mathrm{MLP}([\frac1N\sum_n x_n;\ W_t \frac1P\sum_p \bar e_p])`, broadcast to h×w."""

    def __init__(self, encoder_channels: tuple[int, ...], embed_dim: int, text_dim: int, num_views: int) -> None:
        super().__init__()
        i = pyramid_index(PATCH_STRIDE)
        self.tokenizer = PatchTokenizer(encoder_channels[i], embed_dim, num_views)
        self.text_proj = nn.Linear(text_dim, embed_dim)
        self.mix = nn.Sequential(nn.Linear(2 * embed_dim, embed_dim), nn.GELU(), nn.Linear(embed_dim, embed_dim))
        channels = list(encoder_channels)
        channels[i] = embed_dim
        self.out_channels = tuple(channels)

    def forward(
        self,
        features: list[torch.Tensor],
        num_views: int,
        prompts: PromptEncoding,
        view_index: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        features = list(features)
        i = pyramid_index(PATCH_STRIDE)
        tokens = self.tokenizer(features[i], num_views, view_index)
        pooled = tokens.mean(dim=(2, 3))  # [N, d]: the global pooling under test
        text = self.text_proj(prompts.pooled.mean(0)).expand_as(pooled)
        fused = self.mix(torch.cat([pooled, text], dim=1))
        features[i] = fused[:, :, None, None].expand_as(tokens)
        return features, {}


class GlobalPoolFusionModel(VisionLanguageModel):
    """``spca_vlm`` with global-pooled fusion instead of SPCA (same encoder, prompts and heads)."""

    def build_fusion(
        self,
        encoder_channels: tuple[int, ...],
        embed_dim: int,
        text_dim: int,
        num_heads: int,
        spca_strides: Sequence[int],
        gate_init: float,
    ) -> nn.Module:
        return GlobalPoolFusion(encoder_channels, embed_dim, text_dim, NUM_VIEWS)


class UNetImageOnly(MultiViewModel):
    """smp U-Net per view + CNN grade classifier + template report from the predicted grades (no text input)."""

    def __init__(
        self,
        encoder: str = "resnet18",
        encoder_weights: str | None = None,
        image_size: int = 128,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        grade_hidden: int = 128,
        dropout: float = 0.1,
        text_encoder: str = DEFAULT_TEXT_ENCODER,
        report_max_length: int = DEFAULT_REPORT_MAX_LENGTH,
    ) -> None:
        config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        super().__init__(config)
        check_image_size(image_size, image_size)
        import segmentation_models_pytorch as smp  # on first build: checking a config stays light (decoders.py)

        try:
            self.unet = smp.Unet(
                encoder_name=encoder,
                encoder_weights=encoder_weights,
                in_channels=1,
                classes=NUM_LABELS,
                decoder_channels=tuple(decoder_channels),
            )
        except (KeyError, ValueError, RuntimeError) as err:
            raise ConfigError(f"model.encoder={encoder!r} cannot be built for unet_image_only: {err}") from None
        deepest = self.unet.encoder.out_channels[-1]
        self.grade_classifier = grade_mlp(3 * deepest, grade_hidden, dropout)
        self.tokenizer = load_tokenizer(text_encoder)  # only to tokenise reference reports for the harness
        self.report_max_length = report_max_length

    def forward(
        self,
        views: torch.Tensor,
        report_ids: torch.Tensor | None = None,
        report_mask: torch.Tensor | None = None,
        view_valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Same contract; no ``report_logits``/``report_loss`` (its reports are templates, not learned)."""
        b, v, h, w = self.check_views(views)
        features = self.unet.encoder(views.reshape(b * v, 1, h, w))
        seg = self.unet.segmentation_head(self.unet.decoder(features)).reshape(b, v, NUM_LABELS, h, w)
        pooled = features[-1].mean(dim=(2, 3)).reshape(b, v, 1, -1)  # [B, V, 1, C]
        if view_valid is not None:
            pooled = pooled * view_valid[:, :, None, None].to(pooled.dtype)
        per_level = pooled.expand(-1, -1, NUM_LEVELS, -1)
        grade_logits = self.grade_classifier(gather_level_views(per_level))
        return {"seg_logits": seg, "grade_logits": grade_logits, "attention": {}}

    def _generate_reports(
        self,
        views: torch.Tensor,
        num_beams: int,
        max_length: int | None,
        view_valid: torch.Tensor | None,
        causes: Sequence[Mapping[str, Sequence[str]] | None] | None = None,
    ) -> list[str]:
        """Template reports (:func:`write_reports`, one wording) from the predicted grades and the given ``causes``;
        beams unused."""
        grades = self(views, view_valid=view_valid)["grade_logits"].argmax(-1).tolist()
        causes = causes if causes is not None else [None] * len(grades)
        return [write_reports(g, n=1, findings=c)[0] for g, c in zip(grades, causes)]


MODELS.register("global_pool_fusion")(GlobalPoolFusionModel)
MODELS.register("unet_image_only")(UNetImageOnly)
