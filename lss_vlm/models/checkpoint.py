"""Model checkpoints: safetensors weights + the registry name and constructor config in the file's metadata.

Frozen text-encoder weights are not stored (they are rebuilt from ``text_encoder``); tied weights are stored once.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_model, save_model

from ..errors import ConfigError, DataError
from ..io import atomic_path
from .base import MultiViewModel
from .registry import build_model


def save_checkpoint(model: MultiViewModel, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` to ``path`` (``.safetensors``) atomically; returns the path."""
    name = getattr(model, "model_name", None)
    if name is None:
        raise ConfigError("only models made by lss_vlm.models.build_model can be checkpointed (no model_name)")
    metadata = {"model": name, "config": json.dumps(model.config, default=list)}
    with atomic_path(path) as tmp:
        save_model(model, str(tmp), metadata=metadata)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str], **overrides: Any) -> MultiViewModel:
    """Rebuild the model saved by :func:`save_checkpoint` (config ``overrides`` allowed) and load its weights."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable safetensors checkpoint ({err})") from None
    if "model" not in metadata or "config" not in metadata:
        raise DataError(f"{path}: safetensors file has no lss-vlm model metadata (model, config)")
    model = build_model(metadata["model"], **{**json.loads(metadata["config"]), **overrides})
    missing, unexpected = load_model(model, str(path), strict=False)
    frozen_text = [k for k in missing if k.startswith("text.backbone.")]
    missing = [k for k in missing if k not in frozen_text]
    if missing or unexpected:
        raise DataError(
            f"{path}: weights do not fit {metadata['model']} (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model
