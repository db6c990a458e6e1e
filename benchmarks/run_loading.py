"""Loading a run directory back: its config, its trained model and the data loader of one split.

These helpers sit below both :mod:`benchmarks.runner` (which trains and writes runs) and
:mod:`benchmarks.evaluation` (which scores them), so neither has to import the other to read a run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lss_vlm.errors import ConfigError, DataError

from .config import ExperimentConfig, config_from_dict, read_yaml_mapping
from .data import resolve_manifest

if TYPE_CHECKING:
    import torch

#: The overlay figure of a run directory (JPEG: the leaderboard page embeds one per loss and must stay small).
OVERLAY_FILE = "overlay.jpg"
#: What runs written before the JPEG overlay hold instead of :data:`OVERLAY_FILE`.
LEGACY_OVERLAY_FILE = "overlay.png"
#: Reliability-diagram bins of the grade head on the evaluated split (see ``benchmarks.evaluation``).
CALIBRATION_FILE = "calibration.csv"
#: The clinical-fusion normalisation of a run (benchmarks.clinical writes it; a reloaded model needs it).
CLINICAL_STATS_FILE = "clinical_stats.json"
#: Model arguments added after runs were trained, with the value that rebuilds those runs' models: a ``config.yaml``
#: written before the argument existed does not name it, and the current default would build another network.
LEGACY_MODEL_PARAMS: dict[str, Any] = {"full_resolution_skip": False}


def read_json_mapping(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object (``metrics.json``); :class:`DataError` naming the file otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: damaged JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def load_run_config(run_dir: str | Path) -> ExperimentConfig:
    """The resolved config of a run directory (``config.yaml``)."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no config.yaml)")
    raw = read_yaml_mapping(path, "config", "config sections")
    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("params"), dict) and "image_size" in model["params"]:
        # a resolved config (every argument written out): what it does not name predates the argument
        accepted = model_arguments(str(model.get("name", "")))
        legacy = {k: v for k, v in LEGACY_MODEL_PARAMS.items() if k in accepted}
        model["params"] = {**legacy, **model["params"]}
    return config_from_dict(raw, source=str(path))


def build_model_from_config(
    cfg: ExperimentConfig, report_vocab: dict | None = None, clinical_stats: dict | None = None
) -> torch.nn.Module:
    """``lss_vlm.models.build_model(cfg.model.name, **cfg.model.params)``, plus ``report_vocab`` for a model with a
    learned report decoder (one that takes a ``report_vocab`` argument) and the training split's ``clinical_stats``
    for a model with clinical fusion (:mod:`benchmarks.clinical`)."""
    from lss_vlm.models import build_model

    extra = {"report_vocab": report_vocab} if report_vocab is not None and takes_report_vocab(cfg) else {}
    if clinical_stats is not None:
        extra["clinical_stats"] = clinical_stats
    return build_model(cfg.model.name, **{**cfg.model.params, **extra})


def takes_report_vocab(cfg: ExperimentConfig) -> bool:
    return "report_vocab" in model_arguments(cfg.model.name)


def model_arguments(name: str) -> set[str]:
    """The keyword arguments of a registered model's factory (empty for an unknown name)."""
    import inspect

    from lss_vlm.models import MODELS, available_models

    available_models()  # imports (registers) every model factory
    try:
        return set(inspect.signature(MODELS.get(name)).parameters)
    except (ConfigError, ValueError, TypeError):  # unknown name; a factory without a signature
        return set()


def build_split_loader(
    cfg: ExperimentConfig, split: str, train: bool = False, clinical_columns: list[str] | None = None
) -> torch.utils.data.DataLoader:
    """The data loader of one split as the config describes it (augmented and shuffled only for training);
    ``clinical_columns``: those of the model's clinical fusion (``model.clinical_columns``; None = the six)."""
    from lss_vlm.data.dataset import build_dataloader

    data = cfg.data
    return build_dataloader(
        resolve_manifest(data),
        split,
        spatial_size=data.spatial_size,
        batch_size=data.batch_size,
        augment=train and data.augment,
        shuffle=train,
        seed=cfg.train.seed,
        num_workers=data.num_workers,
        target_spacing=view_spacing(data),
        augment_profile=data.augment_profile,
        views=data.views,
        clinical_columns=clinical_columns,
    )


def view_spacing(data: Any) -> dict[str, float]:
    """mm per pixel per view type of a data config: ``target_spacing`` or ``fov_mm / spatial_size``."""
    return {
        kind: getattr(data.target_spacing, kind) or getattr(data.fov_mm, kind) / data.spatial_size
        for kind in ("sagittal", "axial")
    }


def load_trained_model(run_dir: Path, cfg: ExperimentConfig) -> tuple[torch.nn.Module, torch.device]:
    """The run's final ``model.safetensors`` in a freshly built model, on the config's device."""
    from lss_vlm.engine.checkpoints import load_weights
    from lss_vlm.engine.trainer import resolve_device

    weights = run_dir / "model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"{run_dir}: no model.safetensors (the run has not completed training)")
    device = resolve_device(cfg.train.device)
    vocab_file = run_dir / "report_vocab.json"
    vocab = json.loads(vocab_file.read_text()) if vocab_file.is_file() else None
    model = build_model_from_config(cfg, vocab, read_clinical_stats(run_dir)).to(device)
    load_weights(model, weights)
    return model, device


def read_clinical_stats(run_dir: Path) -> dict[str, Any] | None:
    """``run_dir/clinical_stats.json`` (the clinical-fusion normalisation a run was trained with, written by
    :func:`benchmarks.clinical.build_clinical_stats`), or None when the run has none (no clinical fusion)."""
    path = run_dir / CLINICAL_STATS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


__all__ = [
    "CALIBRATION_FILE",
    "CLINICAL_STATS_FILE",
    "LEGACY_OVERLAY_FILE",
    "OVERLAY_FILE",
    "build_model_from_config",
    "build_split_loader",
    "load_run_config",
    "load_trained_model",
    "read_clinical_stats",
    "read_json_mapping",
    "takes_report_vocab",
    "view_spacing",
]
