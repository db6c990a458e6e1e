"""What a run folder says about its state, and the inputs a config names: checks that need no torch.

``lss-bench validate`` and the suite's up-front checks call these before any training; :mod:`benchmarks.runner`
re-exports them. Kept apart from the runner so that checking a plan does not import the training and evaluation
stack (torch, scikit-learn, peft, ...).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lss_vlm.errors import ConfigError, DataError

STATUS_FILE = "status.json"
#: Keys of metrics.json that describe the training, not the evaluation (kept when a run is re-evaluated).
TRAINING_SUMMARY_KEYS: tuple[str, ...] = ("best_epoch", "epochs_run", "early_stopped")


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """The parsed ``status.json`` of a run directory, or None when the run has not ended.

    Raises :class:`DataError` naming the file when it is damaged or not a JSON object."""
    path = Path(run_dir) / STATUS_FILE
    if not path.is_file():
        return None
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: damaged ({exc}); delete it to resume the run, or start over with --restart") from None
    if not isinstance(status, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(status).__name__}; start over with --restart")
    return status


def check_inputs(cfg: Any) -> None:
    """Inputs a config (:class:`benchmarks.config.ExperimentConfig`) names, checked before a run starts: a
    ``data.manifest`` that exists (:class:`ConfigError`) and reads as a valid manifest (:class:`DataError` naming the
    file and the problem)."""
    from lss_vlm.data.manifest import read_manifest

    manifest = cfg.data.manifest
    if manifest is None:
        return
    if not Path(manifest).is_file():
        raise ConfigError(f"data.manifest: {manifest} not found (a manifest.csv from 'lss-bench prepare' or 'synth')")
    read_manifest(manifest)
