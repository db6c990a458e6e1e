"""The model registry: ``build_model(name, **cfg)``, ``available_models()``, ``count_parameters(model)``."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..registry import Registry
from .base import MultiViewModel

#: Entry-point group of installed model plugins (``[project.entry-points."lss_vlm.models"]``).
ENTRY_POINT_GROUP = "lss_vlm.models"
MODELS: Registry[MultiViewModel] = Registry("model", entry_point_group=ENTRY_POINT_GROUP)
DEFAULT_MODEL = "spca_vlm"


def build_model(name: str = DEFAULT_MODEL, **cfg: Any) -> MultiViewModel:
    """Build a registered model by name with its keyword configuration (unknown keys are a ConfigError)."""
    from . import baselines, vlm  # noqa: F401  (importing registers the factories)

    model = MODELS.build(name, **cfg)
    model.model_name = name
    return model


def available_models() -> list[str]:
    """Sorted names of every registered model (installed plugins of :data:`ENTRY_POINT_GROUP` included)."""
    from . import baselines, vlm  # noqa: F401

    return MODELS.names()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` parameter counts (frozen text-encoder weights count in the total only)."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)
