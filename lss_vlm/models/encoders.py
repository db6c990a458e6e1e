"""Image encoders shared over views: multi-scale feature pyramids and stride-16 patch tokens.

Every encoder maps ``x [N, 1, H, W]`` to the smp feature list ``[x, f/2, f/4, f/8, f/16]`` (strides 1..16, the
first entry being the input itself, as smp's decoders expect) and exposes ``out_channels`` (one per entry).
Backbones: ``"lite_cnn"`` (small fast CNN written here, the CPU default) or any smp encoder name
(``"resnet18"``, ``"efficientnet-b0"``, ...) including timm encoders through smp's ``"tu-<timm name>"`` prefix.
smp/timm encoders are built with ``encoder_weights=None`` (random init, no download) unless a user passes weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import ConfigError

PATCH_STRIDE = 16
ENCODER_DEPTH = 4  # stages after the input: strides 2, 4, 8, 16
LITE_CNN_CHANNELS: tuple[int, ...] = (24, 48, 96, 160)


def _conv_bn_act(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True)
    )


class LiteCNNEncoder(nn.Module):
    """Small fast CNN: four stages, each a stride-2 conv then a residual 3×3 conv (strides 2, 4, 8, 16)."""

    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = LITE_CNN_CHANNELS) -> None:
        super().__init__()
        if len(channels) != ENCODER_DEPTH:
            raise ConfigError(f"lite_cnn needs {ENCODER_DEPTH} stage widths (strides 2..16), got channels={channels}")
        self.down = nn.ModuleList()
        self.refine = nn.ModuleList()
        prev = in_channels
        for ch in channels:
            self.down.append(_conv_bn_act(prev, ch, stride=2))
            self.refine.append(_conv_bn_act(ch, ch))
            prev = ch
        self.out_channels: tuple[int, ...] = (in_channels, *channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = [x]
        for down, refine in zip(self.down, self.refine):
            x = down(x)
            x = x + refine(x)
            features.append(x)
        return features


class SmpEncoder(nn.Module):
    """Any smp encoder (``"resnet18"``, ``"tu-convnext_atto"``, ...) cut at stride 16, single-channel input."""

    def __init__(self, name: str, in_channels: int = 1, weights: str | None = None) -> None:
        super().__init__()
        import segmentation_models_pytorch as smp  # on first build: checking a config stays light (decoders.py)

        try:
            self.encoder = smp.encoders.get_encoder(name, in_channels=in_channels, depth=ENCODER_DEPTH, weights=weights)
        except (KeyError, ValueError, RuntimeError) as err:
            raise ConfigError(f"model.encoder={name!r} (weights={weights!r}) cannot be built: {err}") from None
        self.out_channels = tuple(self.encoder.out_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.encoder(x))


def build_image_encoder(name: str = "lite_cnn", weights: str | None = None, in_channels: int = 1) -> nn.Module:
    """Image encoder by name: ``"lite_cnn"`` or an smp encoder name (``"tu-"`` prefix for timm)."""
    if name == "lite_cnn":
        if weights is not None:
            raise ConfigError("model.encoder='lite_cnn' has no pretrained weights; set encoder_weights to None")
        return LiteCNNEncoder(in_channels)
    return SmpEncoder(name, in_channels=in_channels, weights=weights)


def sincos_position_code(height: int, width: int, dim: int) -> torch.Tensor:
    """Fixed 2D sine-cosine position code ``[height*width, dim]`` (row-major), MAE style.

    Half the channels encode the row, half the column; each half is ``[sin(p·ω_k), cos(p·ω_k)]`` with
    ``ω_k = 10000^(-k/(dim/4))``, ``k = 0..dim/4-1``.
    """
    if dim % 4:
        raise ConfigError(f"model.embed_dim must be a multiple of 4 for the 2D position code, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    rows, cols = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([encode(rows), encode(cols)], dim=1)


class PatchTokenizer(nn.Module):
    """Stride-16 feature map → patch tokens ``[N, d, h, w]`` (2D layout kept) + view embedding + 2D position code."""

    def __init__(self, in_channels: int, embed_dim: int, num_views: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=1)
        self.view_embedding = nn.Parameter(torch.zeros(num_views, embed_dim))
        nn.init.trunc_normal_(self.view_embedding, std=0.02)
        self.embed_dim = embed_dim
        self._position_cache: dict[tuple[int, int], torch.Tensor] = {}

    def position_code(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        key = (height, width)
        if key not in self._position_cache:
            self._position_cache[key] = sincos_position_code(height, width, self.embed_dim)
        code = self._position_cache[key].to(device)
        return code.t().reshape(1, self.embed_dim, height, width)

    def forward(self, feature: torch.Tensor, num_views: int, view_index: torch.Tensor | None = None) -> torch.Tensor:
        """``feature [B*V, C, h, w]`` (views folded into the batch, case-major) → tokens ``[B*V, d, h, w]``.
        ``view_index [V]``: which views the V columns are (default: the first V, in order)."""
        tokens = self.proj(feature)
        n, d, h, w = tokens.shape
        table = self.view_embedding[:num_views] if view_index is None else self.view_embedding[view_index]
        views = table.repeat(n // num_views, 1).reshape(n, d, 1, 1)
        return tokens + views + self.position_code(h, w, tokens.device)


def check_image_size(height: int, width: int) -> None:
    """Raise ConfigError unless both sides are positive multiples of the patch stride."""
    if height % PATCH_STRIDE or width % PATCH_STRIDE or min(height, width) < PATCH_STRIDE:
        raise ConfigError(
            f"image size {height}x{width} must be a multiple of {PATCH_STRIDE} (patch stride); "
            f"set data.spatial_size to e.g. {max(PATCH_STRIDE, math.ceil(max(height, width) / PATCH_STRIDE) * 16)}"
        )
