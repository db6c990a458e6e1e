"""Checkpoints: model weights as safetensors plus optimizer / scheduler / loss-controller / RNG state.

A checkpoint is a folder ``<name>/`` holding ``model.safetensors`` and ``state.pt``. It is written to a temporary
sibling and renamed into place, so a killed process leaves either the previous checkpoint or the new one, never a mix.

``state.pt`` holds only tensors and plain Python values (dicts, lists, tuples, numbers, strings): numpy values are
converted on save, and it is read back with ``torch.load(weights_only=True)``, which refuses any other pickled object.
Run folders are shared between colleagues, so a planted ``state.pt`` must never execute code on resume.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from ..errors import DataError
from ..io import atomic_path
from .seeding import rng_state, set_rng_state

WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"


def save_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Write the model's weights to a safetensors file atomically (shared/tied tensors are stored once)."""
    with atomic_path(path) as tmp:
        save_model(model, str(tmp))


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load safetensors weights into ``model`` (strict: every key must match).

    Raises :class:`DataError` naming ``path`` when the file is damaged or its tensors do not fit the model.
    """
    device = next(model.parameters()).device
    try:
        load_model(model, str(path), strict=True, device=str(device))
    except SafetensorError as exc:
        raise DataError(f"{path}: damaged or not a safetensors file ({exc})") from None
    except RuntimeError as exc:  # missing/unexpected keys or shape mismatches: the weights are of another model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{path}: the weights do not fit the model its config.yaml describes ({first.rstrip(':.')} ...); "
            "was config.yaml edited after training, or was the run trained by another lss-vlm version "
            "(its provenance.json says which)?"
        ) from None


class InitWeightsWarning(UserWarning):
    """Some tensors of ``train.init_weights`` did not fit the model and kept their fresh initialisation."""


def load_matching_weights(
    model: nn.Module, path: str | os.PathLike[str], fresh: tuple[str, ...] = ()
) -> tuple[int, list[str]]:
    """Load the tensors of a safetensors file whose name and shape match ``model``'s (fine-tuning from another run,
    as Hugging Face's ``from_pretrained(ignore_mismatched_sizes=True)``); what the library call lacks: a shape
    filter before ``load_state_dict``, a list of what was left out, and a refusal when nothing fits.

    ``fresh``: model tensor names to leave at their initialisation even when a tensor of that name and shape is in the
    file (a report decoder's word embeddings when the two runs' vocabularies differ). Tied tensors are stored once.

    Returns ``(loaded, skipped)``: the number of model tensors loaded and one line per model tensor left out
    (``name (reason)``). Raises :class:`DataError` naming ``path`` when the file is damaged or fewer than half of
    the model's tensors fit (the weights of another architecture).
    """
    from safetensors.torch import load_file

    try:
        stored = load_file(str(path), device=str(next(model.parameters()).device))
    except (SafetensorError, OSError) as exc:
        raise DataError(f"{path}: damaged or not a safetensors file ({exc})") from None
    own = model.state_dict()
    use, skipped, absent = {}, [], []
    for name, tensor in own.items():
        if name in fresh:
            skipped.append(f"{name} (the runs' report vocabularies differ)")
        elif name not in stored:
            absent.append(name)
        elif tuple(stored[name].shape) != tuple(tensor.shape):
            shapes = "x".join(map(str, stored[name].shape)), "x".join(map(str, tensor.shape))
            skipped.append(f"{name} (shape {shapes[0]} in the file, {shapes[1]} here)")
        else:
            use[name] = stored[name]
    tied = {own[name].data_ptr() for name in use}  # a tied tensor is written once, under one of its names
    skipped += [f"{name} (not in the file)" for name in absent if own[name].data_ptr() not in tied]
    if len(use) * 2 < len(own):
        raise DataError(
            f"{path}: only {len(use)} of the model's {len(own)} tensors fit (by name and shape); "
            "these are the weights of another model"
        )
    model.load_state_dict(use, strict=False)
    return len(use), skipped


def save_checkpoint(
    folder: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    loss: nn.Module,
    trainer_state: dict[str, Any],
    scaler: Any = None,
    ema: nn.Module | None = None,
) -> None:
    """Write a complete training checkpoint to ``folder`` (replaced atomically); ``ema``, the trainer's weight
    average, goes into ``state.pt``."""
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
            "ema": ema.state_dict() if ema is not None else None,
        }
        state = _plain(state)
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
    ema: nn.Module | None = None,
) -> dict[str, Any]:
    """Restore what :func:`save_checkpoint` wrote into the given objects; returns the saved trainer state.

    Raises :class:`DataError` when ``ema`` is given and the checkpoint holds no weight average (it was trained
    without ``train.ema_decay``)."""
    found = _complete(Path(folder))
    if found is None:
        raise FileNotFoundError(f"{folder}: no complete checkpoint")
    state = _load_state(found / STATE_FILE)  # first: a planted or foreign state.pt is refused before anything else
    load_weights(model, found / WEIGHTS_FILE)
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if loss is not None:
        loss.load_state_dict(state["loss"])
    if scaler is not None and state["scaler"] is not None:
        scaler.load_state_dict(state["scaler"])
    if ema is not None:
        if state.get("ema") is None:
            raise DataError(
                f"{found}: this checkpoint has no weight average (trained without train.ema_decay); "
                "resume or evaluate it with the config it was trained with, or start over with --restart"
            )
        ema.load_state_dict(state["ema"])
    if restore_rng:
        set_rng_state(state["rng"])
    return state["trainer"]


def _plain(value: Any) -> Any:
    """``value`` with numpy arrays turned into tensors and numpy scalars into Python numbers (``weights_only``-safe)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.astype(np.int64) if value.dtype == np.uint32 else value.copy())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _load_state(path: Path) -> dict[str, Any]:
    """``state.pt`` read with ``weights_only=True``: tensors and plain values only, never arbitrary objects."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unpickling refusal or a damaged file: both mean "not ours"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"{path}: not a training state this toolkit wrote, refused to load it ({reason[:200]}); "
            "delete the run folder's checkpoints/ or start over with --restart"
        ) from None
    if not isinstance(state, dict) or not {"optimizer", "rng", "trainer"} <= set(state):
        raise DataError(f"{path}: not a training state this toolkit wrote (missing keys); start over with --restart")
    return state


def _complete(folder: Path) -> Path | None:
    for candidate in (folder, folder.with_name(f".{folder.name}.old")):
        if (candidate / WEIGHTS_FILE).is_file() and (candidate / STATE_FILE).is_file():
            return candidate
    return None
