"""One experiment end to end: data → model → loss → Trainer → final evaluation → a complete run directory.

Contract for callers (suite runner, Optuna tuner, ``lss-bench train``):

* ``run_experiment(cfg, out_dir)`` returns the final metrics (flat floats) when the run completes.
* A run that fails (NaN/Inf loss, bad case, any error inside the run) writes ``status.json`` with
  ``{"status": "failed", "reason": ...}`` and then raises :class:`RunFailed` (an :class:`LssError`), so a suite
  catches ``RunFailed``, records the failure and goes on.
* An exception raised by ``on_epoch`` (e.g. ``optuna.TrialPruned``) writes status ``"pruned"`` and propagates unchanged.
* ``KeyboardInterrupt`` writes no status; the last checkpoint stays and the next call resumes from it.
* ``status.json`` is always the last file written. A completed run directory is not retrained: calling again with
  ``resume=True`` returns its ``metrics.json``.
* ``timing.json`` holds the wall seconds per stage (``time/<stage>_s``: start-up, setup, optimizer steps, data,
  validation, checkpoints, final inference, generation, composer, JVM text metrics, BERTScore, outputs) and the
  fraction of the process's wall time spent in optimizer steps. Timings never enter ``metrics.json`` (reproducible).
* Under ``torchrun`` (:mod:`lss_vlm.engine.distributed`) every rank trains; only rank 0 writes into ``out_dir`` and
  runs the final evaluation. The other ranks return an empty dict.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from lss_vlm.errors import ConfigError, LssError
from lss_vlm.io import atomic_path, atomic_write_json

from .clinical import build_clinical_stats, uses_clinical_fusion, write_clinical_outputs
from .config import ExperimentConfig, config_hash, dump_config
from .contact_sheet import write_contact_sheet
from .data import resolve_manifest
from .evaluation import evaluate_model
from .measurement import Measurer
from .run_loading import (
    build_model_from_config,
    build_split_loader,
    load_run_config,
    load_trained_model,
    read_json_mapping,
    takes_report_vocab,
    view_spacing,
)
from .run_status import STATUS_FILE, TRAINING_SUMMARY_KEYS, check_inputs, read_status
from .tensorboard_log import ScalarLog
from .versions import git_sha, package_version
from .warmup_cache import cached_warm_up

TIMING_FILE = "timing.json"
PACKAGES: tuple[str, ...] = (
    "lss-vlm",  # with git_sha null (code outside a git checkout) the version is what identifies it
    "torch",
    "monai",
    "transformers",
    "segmentation-models-pytorch",
    "timm",
    "numpy",
    "pandas",
    "pydantic",
    "pycocoevalcap",
    "optuna",
)


class RunFailed(LssError):
    """A run ended as failed; ``status.json`` in ``run_dir`` already says so, with ``reason``."""

    def __init__(self, run_dir: Path, reason: str) -> None:
        super().__init__(f"run {run_dir} failed: {reason}")
        self.run_dir = Path(run_dir)
        self.reason = reason


class _OnEpochRaised(Exception):
    """Wraps an exception of the caller's ``on_epoch`` so it is told apart from a failure of the run itself."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


def run_experiment(
    cfg: ExperimentConfig,
    out_dir: str | Path,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    resume: bool = True,
) -> dict[str, float]:
    """Train and evaluate ``cfg`` into the run directory ``out_dir``; returns the final metrics.

    ``on_epoch(epoch, val_metrics)`` is called after every epoch with the validation metrics (keys without the
    ``val/`` prefix, e.g. ``dice_macro``). ``resume=False`` deletes what ``out_dir`` holds and starts over.
    See the module docstring for the failure contract.
    """
    from lss_vlm.engine import distributed

    out_dir = Path(out_dir)
    started, timing = time.time(), {"startup": _startup_s()}
    status = read_status(out_dir)
    if resume and status is not None and status.get("status") == "completed":
        return read_json_mapping(out_dir / "metrics.json")
    check_inputs(cfg)
    main = distributed.is_main_process()
    if main:
        if not resume and out_dir.exists():
            _clear_folder(out_dir)
        _check_same_config(cfg, out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / STATUS_FILE).unlink(missing_ok=True)
        dump_config(cfg, out_dir / "config.yaml")
    distributed.barrier()  # the other ranks read checkpoints only once rank 0 has prepared the folder
    if not main:
        _train_and_evaluate(cfg, out_dir, None, resume, timing)
        return {}
    try:
        metrics = _train_and_evaluate(cfg, out_dir, on_epoch, resume, timing)
    except _OnEpochRaised as stop:
        _write_status(out_dir, "pruned", str(stop.original) or type(stop.original).__name__, started)
        raise stop.original from None
    except Exception as exc:  # noqa: BLE001 - every failure of a run is recorded, then reported as RunFailed
        reason = f"{type(exc).__name__}: {exc}"
        _write_status(out_dir, "failed", reason, started)
        raise RunFailed(out_dir, reason) from exc
    write_provenance(out_dir, cfg, time.time() - started)
    write_timing(out_dir, timing, time.time() - started)
    _write_status(out_dir, "completed", None, started)
    return metrics


_RUNS_STARTED: list[float] = []  # run_experiment calls of this process (start-up is counted for the first only)


def _startup_s() -> float:
    """Process age at the first run of this process (interpreter, imports, config); 0 for later runs of a suite."""
    _RUNS_STARTED.append(time.time())
    return process_age_s() if len(_RUNS_STARTED) == 1 else 0.0


def process_age_s() -> float:
    """Wall seconds since this process started (interpreter start-up and imports included); NaN if unknown."""
    try:
        import psutil

        return max(0.0, time.time() - psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - psutil missing or the platform refuses: the figure is only informative
        return float("nan")


def write_timing(out_dir: Path, timing: dict[str, float], wall_s: float) -> dict[str, float]:
    """``timing.json``: ``time/<stage>_s`` per stage, ``time/run_wall_s`` (this call of :func:`run_experiment`),
    ``time/total_s`` (start-up + run wall: what the run cost) and ``time/steps_fraction`` = optimizer steps /
    total. The start-up is counted for the first run of a process only (a suite imports once)."""
    record = {f"time/{stage}_s": round(float(seconds), 3) for stage, seconds in timing.items()}
    record["time/run_wall_s"] = round(wall_s, 3)
    startup = float(timing.get("startup", 0.0))
    total = wall_s + (startup if startup == startup else 0.0)  # NaN start-up (unknown): the run's wall alone
    record["time/total_s"] = round(total, 3)
    steps = float(timing.get("train_steps", 0.0))
    record["time/steps_fraction"] = round(steps / total, 4) if total > 0 else float("nan")
    atomic_write_json(out_dir / TIMING_FILE, record)
    return record


def evaluate_run(
    run_dir: str | Path,
    split: str | None = None,
    manifest: str | Path | None = None,
    out: str | Path | None = None,
    contact_sheet: int = 0,
) -> dict[str, float]:
    """Re-score a finished run's ``model.safetensors`` on ``split`` (default: the config's ``eval.split``; ``"all"``
    = every case of the manifest).

    ``manifest``: score on another prepared dataset (cross-dataset evaluation) with the run's preprocessing
    (spatial size, target spacing); the run's files are never modified. ``out``: where ``metrics.json``,
    ``per_case.csv``, ... go. Without ``out``, the config's split on the run's own data rewrites the run directory's
    results; any other evaluation writes into ``run_dir/eval_<split>/`` (``eval_<dataset folder>_<split>/`` for
    another manifest). ``contact_sheet``: also draw the ``contact_sheet`` worst-scored views into ``cases.jpg`` beside
    ``per_case.csv`` (:mod:`benchmarks.contact_sheet`; 0 = none).
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    split = split or cfg.eval.split
    if manifest is not None:
        manifest = Path(manifest)
        if not manifest.is_file():
            raise ConfigError(f"--manifest {manifest}: file not found")
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"manifest": manifest})})
    model, device = load_trained_model(run_dir, cfg)  # the run itself first: damaged weights are named before data
    loader = build_split_loader(cfg, split, clinical_columns=getattr(model, "clinical_columns", None))
    if out is not None or manifest is not None or split != cfg.eval.split:
        if out is None:
            out = run_dir / (
                f"eval_{manifest.resolve().parent.name}_{split}" if manifest is not None else f"eval_{split}"
            )
        # another dataset: the network's own masks (a sac refiner reads the contrast it was fitted on)
        measurer = Measurer(cfg.eval.measure_on) if manifest is not None else None
        metrics = _evaluate(model, loader, cfg, Path(out), device, measurer)
    else:
        previous = run_dir / "metrics.json"
        summary = read_json_mapping(previous) if previous.is_file() else {}
        metrics = _evaluate(model, loader, cfg, run_dir, device)
        metrics.update({k: summary[k] for k in TRAINING_SUMMARY_KEYS if k in summary})
        atomic_write_json(previous, metrics)
        out = run_dir
    if contact_sheet > 0:
        write_contact_sheet(model, loader, device, Path(out), contact_sheet, amp=cfg.train.amp)
    return metrics


def _evaluate(
    model: torch.nn.Module, loader: Any, cfg: ExperimentConfig, out: Path, device: Any, measurer: Any = None
) -> dict[str, float]:
    """:func:`evaluate_model`, plus the clinical correlation outputs of a model with clinical fusion. ``measurer``:
    see :func:`evaluate_model` (a cross-dataset evaluation passes one without the sac refiner)."""
    metrics = evaluate_model(model, loader, cfg, out, device, measurer=measurer)
    if uses_clinical_fusion(cfg):
        write_clinical_outputs(model, loader, device, out)
    return metrics


def build_report_vocab(cfg: ExperimentConfig, out_dir: Path, save: bool = True) -> dict | None:
    """The word-level report vocabulary of the training split's references, saved as ``out_dir/report_vocab.json``
    when ``save`` (issue 13; None for a model without a learned report decoder or a training split without
    reports)."""
    from lss_vlm.data.manifest import parse_reports, read_manifest
    from lss_vlm.reports.vocabulary import DEFAULT_MIN_FREQ, VOCAB_FILE, ReportVocabulary

    if not takes_report_vocab(cfg):
        return None
    table = read_manifest(resolve_manifest(cfg.data))
    train = table[table["split"] == "train"]
    reports = [r for cell in train.get("reports", []) for r in parse_reports(cell, "train split")]
    if not any(r and r.strip() for r in reports):
        return None
    vocab = ReportVocabulary.build(reports, min_freq=DEFAULT_MIN_FREQ)
    if save:
        vocab.save(out_dir / VOCAB_FILE)
    return vocab.to_dict()


# ------------------------------------------------------------------------------------------------------------ steps
def _load_init_weights(model: torch.nn.Module, path: Path) -> None:
    """``train.init_weights``: every tensor of ``path`` that fits the model by name and shape; the report decoder's
    word embeddings stay fresh when the two runs' report vocabularies differ (the saved ``report_vocab.json`` beside
    ``path``, or none), since a word's row means another word there. What is left out is named in one
    :class:`~lss_vlm.engine.checkpoints.InitWeightsWarning`."""
    import warnings

    from lss_vlm.engine.checkpoints import InitWeightsWarning, load_matching_weights
    from lss_vlm.errors import DataError
    from lss_vlm.models.decoders import ReportDecoder
    from lss_vlm.reports.vocabulary import VOCAB_FILE, ReportVocabulary

    run_dir = path.parents[2] if path.parent.parent.name == "checkpoints" else path.parent  # checkpoints/best/…
    saved = run_dir / VOCAB_FILE
    try:  # a missing or unreadable vocabulary counts as another one: the word embeddings stay fresh
        theirs = list(ReportVocabulary.load(saved).tokens)
    except DataError:
        theirs = None
    fresh = tuple(
        f"{prefix}.{tensor}"
        for prefix, module in model.named_modules()
        if isinstance(module, ReportDecoder) and list(module.vocab.tokens) != theirs
        for tensor in ReportDecoder.VOCABULARY_TENSORS
    )
    loaded, skipped = load_matching_weights(model, path, fresh)
    if skipped:
        shown = "; ".join(skipped[:4]) + (f"; and {len(skipped) - 4} more" if len(skipped) > 4 else "")
        warnings.warn(
            f"train.init_weights {path}: {loaded} tensors loaded, {len(skipped)} kept at their fresh "
            f"initialisation: {shown}",
            InitWeightsWarning,
            stacklevel=2,
        )


def _train_and_evaluate(
    cfg: ExperimentConfig,
    out_dir: Path,
    on_epoch: Callable[[int, dict[str, float]], None] | None,
    resume: bool,
    timing: dict[str, float],
) -> dict[str, float]:
    """Build, train and (on rank 0) evaluate; ``timing`` gets the seconds per stage. Non-zero ranks write nothing
    and return an empty dict after training."""
    import losses
    from lss_vlm.engine import distributed
    from lss_vlm.engine.checkpoints import save_weights
    from lss_vlm.engine.seeding import seed_everything
    from lss_vlm.engine.trainer import Trainer, TrainerSettings

    setup_started = time.perf_counter()
    main = distributed.is_main_process()
    seed_everything(cfg.train.seed, cfg.train.deterministic)

    clinical_stats = build_clinical_stats(cfg, out_dir if main else None)  # normalisation fit on the training split
    model = build_model_from_config(cfg, build_report_vocab(cfg, out_dir, save=main), clinical_stats)
    columns = getattr(model, "clinical_columns", None)
    if cfg.train.init_weights is not None:  # fine-tuning: the weights of another run that fit this model
        if not Path(cfg.train.init_weights).is_file():
            raise ConfigError(f"train.init_weights: {cfg.train.init_weights} not found")
        _load_init_weights(model, Path(cfg.train.init_weights))
    warmup = {}
    if not (resume and (out_dir / "checkpoints").is_dir()):  # the same for every loss: cached per model, data, seed
        warmup = cached_warm_up(model, cfg, lambda: _warm_up_report_decoder(model, cfg))
    loss = losses.build_loss(cfg.loss.name, **cfg.loss.params)
    history_path = out_dir / "history.csv"
    tensorboard = ScalarLog(out_dir) if main else None  # rank 0 alone writes tb/

    def epoch_done(epoch: int, val: dict[str, float]) -> None:
        if not main:
            return
        write_history(history_path, trainer.state.history)
        tensorboard.add_row(trainer.state.history[-1])
        write_history(out_dir / "controller.csv", trainer.state.controller_log)
        if on_epoch is not None:
            try:
                on_epoch(epoch, val)
            except Exception as exc:
                raise _OnEpochRaised(exc) from exc

    t = cfg.train
    settings = TrainerSettings(
        epochs=t.epochs,
        lr=t.lr,
        weight_decay=t.weight_decay,
        schedule=t.schedule,
        grad_clip=t.grad_clip,
        lambda_seg=t.lambda_seg,
        lambda_cls=t.lambda_cls,
        lambda_txt=t.lambda_txt,
        lambda_cause=t.lambda_cause,
        lambda_con=t.lambda_contrastive,
        seed=t.seed,
        deterministic=t.deterministic,
        device=t.device,
        amp=t.amp,
        compile=t.compile,
        monitor=t.early_stopping.metric,
        monitor_mode=t.early_stopping.mode,
        patience=t.early_stopping.patience,
        quiet=t.quiet,
        ema_decay=t.ema_decay,
    )
    trainer = Trainer(
        model,
        loss,
        build_split_loader(cfg, "train", train=True, clinical_columns=columns),
        build_split_loader(cfg, "val", clinical_columns=columns),
        settings,
        out_dir / "checkpoints",
        epoch_done,
    )
    timing["setup"] = time.perf_counter() - setup_started
    try:
        result = trainer.fit(resume=resume)
    finally:
        if main:
            write_history(history_path, trainer.state.history)
            write_history(out_dir / "controller.csv", trainer.state.controller_log)
            tensorboard.close()
    timing.update(trainer.state.timing)
    if not main:
        return {}
    chosen = trainer.best_checkpoint if cfg.eval.checkpoint == "best" else trainer.last_checkpoint
    trainer.load_for_evaluation(chosen)
    save_weights(trainer.model, out_dir / "model.safetensors")
    loader = build_split_loader(cfg, cfg.eval.split, clinical_columns=columns)
    metrics = evaluate_model(trainer.model, loader, cfg, out_dir, trainer.device, timing)
    if uses_clinical_fusion(cfg):
        write_clinical_outputs(trainer.model, loader, trainer.device, out_dir)
    summary = (float(result.best_epoch), float(len(result.history)), float(result.stop_reason == "early_stopping"))
    metrics.update(zip(TRAINING_SUMMARY_KEYS, summary))
    if warmup:  # not in metrics.json: its seconds vary and a re-evaluation could not reproduce it
        atomic_write_json(out_dir / "report_warmup.json", warmup)
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics


def _warm_up_report_decoder(model: torch.nn.Module, cfg: ExperimentConfig) -> dict[str, float]:
    """Text-only warm-up of a learned report decoder on the training split's references and grades (issue 13)."""
    if not hasattr(model, "warm_up_report_decoder") or cfg.train.lambda_txt <= 0:
        return {}
    from lss_vlm.constants import LEVELS, level_key
    from lss_vlm.data.manifest import parse_reports, read_manifest

    table = read_manifest(resolve_manifest(cfg.data))
    train = table[table["split"] == "train"]
    if "reports" not in train:
        return {}
    reports = [parse_reports(cell, "train split") for cell in train["reports"]]
    columns = [f"grade_{level_key(lv)}" for lv in LEVELS]
    values = train.reindex(columns=columns).apply(pd.to_numeric, errors="coerce").fillna(-1).astype(int)
    grades = values.to_numpy().tolist()
    return model.warm_up_report_decoder(reports, grades, seed=cfg.train.seed)


def write_history(path: Path, history: list[dict[str, float]]) -> None:
    """``history.csv`` (one row per epoch) or ``controller.csv`` (one row per controller update), columns in
    first-seen order; nothing is written for an empty list."""
    if history:
        with atomic_path(path) as tmp:
            pd.DataFrame(history).to_csv(tmp, index=False)


def check_run_folder(cfg: ExperimentConfig, out_dir: str | Path, resume: bool = True) -> None:
    """What :func:`run_experiment` checks before it writes: the config's inputs exist, ``status.json`` is readable and,
    when resuming, the folder's ``config.yaml`` is that of ``cfg``. Lets a command refuse before it locks the folder."""
    check_inputs(cfg)
    out_dir = Path(out_dir)
    if out_dir.is_dir() and resume:
        status = read_status(out_dir)
        if status is None or status.get("status") != "completed":
            _check_same_config(cfg, out_dir)


def _check_same_config(cfg: ExperimentConfig, out_dir: Path) -> None:
    """Refuse to resume a folder trained with another config (``train.quiet`` may differ: it changes no number)."""

    def comparable(c: ExperimentConfig) -> str:
        return config_hash(c.model_copy(update={"train": c.train.model_copy(update={"quiet": False})}))

    existing = out_dir / "config.yaml"
    if existing.is_file() and comparable(load_run_config(out_dir)) != comparable(cfg):
        raise ConfigError(
            f"{out_dir} holds a run of a different config; use another output folder or start over (resume=False)"
        )


def _clear_folder(out_dir: Path) -> None:
    """Delete what ``out_dir`` holds, except the lock file of the command that owns it (``benchmarks.outputs``)."""
    from .outputs import LOCK_NAME

    for entry in out_dir.iterdir():
        if entry.name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def _write_status(out_dir: Path, status: str, reason: str | None, started: float) -> None:
    atomic_write_json(
        out_dir / STATUS_FILE, {"status": status, "reason": reason, "wall_time_s": round(time.time() - started, 3)}
    )


# -------------------------------------------------------------------------------------------------------- provenance
def write_provenance(out_dir: Path, cfg: ExperimentConfig, wall_time_s: float) -> dict[str, Any]:
    """``provenance.json``: git sha, package versions, config hash, data manifest hash, seed, wall time, device."""
    from lss_vlm.engine.trainer import resolve_device

    manifest = resolve_manifest(cfg.data)
    record = {
        "git_sha": git_sha(),
        "packages": {name: package_version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "config_hash": config_hash(cfg),
        "data_manifest": str(manifest),
        "data_manifest_hash": hashlib.sha256(manifest.read_bytes()).hexdigest(),
        "seed": cfg.train.seed,
        "wall_time_s": round(wall_time_s, 3),
        "device": str(resolve_device(cfg.train.device)),
        "torch_threads": torch.get_num_threads(),
        "peak_rss_mb": _peak_rss_mb(),
    }
    atomic_write_json(out_dir / "provenance.json", record)
    return record


def _peak_rss_mb() -> float:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


__all__ = [
    "RunFailed",
    "build_model_from_config",
    "build_split_loader",
    "evaluate_run",
    "load_run_config",
    "load_trained_model",
    "read_status",
    "run_experiment",
    "view_spacing",
    "write_provenance",
]
