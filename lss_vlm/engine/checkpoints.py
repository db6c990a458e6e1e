"""Checkpoints: model weights as safetensors plus optimizer / scheduler / loss-controller / RNG state.

A checkpoint is a folder ``<name>/`` holding ``model.safetensors`` and ``state.pt``. It is written to a temporary
sibling and renamed into place, so a killed process leaves either the previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from ..io import atomic_path
from .seeding import rng_state, set_rng_state

WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"


def save_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write the model's weights to a safetensors file atomically (shared/tied tensors are stored once)."""
    with atomic_path(path) as tmp:
        save_model(model, str(tmp))


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load safetensors weights into ``model`` (strict: every key must match)."""
    device = next(model.parameters()).device
    load_model(model, str(path), strict=True, device=str(device))


def save_checkpoint(
    folder: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loss: nn.Module,
    trainer_state: dict[str, Any],
    scaler: Any = None,
) -> None:
    """Write a complete training checkpoint to ``folder`` (replaced atomically)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        save_model(model, str(tmp / WEIGHTS_FILE))
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "loss": loss.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": rng_state(),
            "trainer": trainer_state,
        }
        torch.save(state, tmp / STATE_FILE)
        old = folder.with_name(f".{folder.name}.old")
        if folder.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def checkpoint_exists(folder: str | os.PathLike[str]) -> bool:
    """True when ``folder`` (or the copy kept while it was being replaced) holds a complete checkpoint."""
    return _complete(Path(folder)) is not None


def load_checkpoint(
    folder: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    loss: nn.Module | None = None,
    scaler: Any = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote into the given objects; returns the saved trainer state."""
    found = _complete(Path(folder))
    if found is None:
        raise FileNotFoundError(f"{folder}: no complete checkpoint")
    load_weights(model, found / WEIGHTS_FILE)
    state = torch.load(found / STATE_FILE, map_location="cpu", weights_only=False)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if loss is not None:
        loss.load_state_dict(state["loss"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return state["trainer"]


def _complete(folder: Path) -> Path | None:
    for candidate in (folder, folder.with_name(f".{folder.name}.old")):
        if (candidate / WEIGHTS_FILE).is_file() and (candidate / STATE_FILE).is_file():
            return candidate
    return None
