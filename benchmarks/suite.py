"""Suites: the same experiment trained once per (loss × seed), resumable, into a suite directory.

A suite YAML (``configs/suites/<name>.yaml``; format in docs/leaderboard.md)::

    name: quick
    base: ../experiments/quick.yaml        # experiment config (relative to this file)
    set: [train.epochs=3]                  # --set overrides applied to every run
    losses: [dice, {name: pid_tversky, params: {kp: 0.5}, label: pid_kp05}]
    seeds: 1                               # a count (0..N-1) or an explicit list
    rank_by: dice_macro
    baseline: dice

Only ``loss`` and ``train.seed`` differ between the runs. A run lives in ``runs/<label>/seed<k>.partial/`` while it
trains and is renamed to ``seed<k>/`` once its ``status.json`` is written, so a killed suite never counts half a run;
rerunning resumes a partial run from its last checkpoint and skips the finished ones. A run that raises (NaN loss, bad
case, ...) is recorded as failed with its reason and the suite goes on.

Runs are the unit, so a suite folder grows: other losses (:func:`select_losses`) or more seeds add runs beside the
finished ones, and a finished run is reused when its stored resolved config (``config.yaml``) equals the planned one.
The suite file itself is not compared: ``rank_by``, ``baseline``, ``columns`` or ``description`` may change freely.
A run whose resolved config changed is refused (:func:`changed_runs`), or retrained with ``retrain_changed``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmarks.config import read_yaml_mapping
from lss_vlm.errors import ConfigError
from lss_vlm.io import atomic_write_json, atomic_write_text

#: Folder of the shipped suites (``configs/suites/`` at the repository root).
SUITE_DIR = Path(__file__).resolve().parent.parent / "configs" / "suites"
PARTIAL_SUFFIX = ".partial"
#: Files and folders of a suite directory that ``--no-resume`` removes before starting again.
SUITE_OUTPUTS = (
    "runs",
    "figures",
    "leaderboard.csv",
    "leaderboard.md",
    "leaderboard.html",
    "leaderboard.json",
    "leaderboard.tex",
    "suite.yaml",
    "ood_shift.csv",
    "ood_shift.md",
    "ood_shift.json",
)

Runner = Callable[..., dict[str, float]]


class LossEntry(BaseModel):
    """One loss of a suite: registry ``name``, its ``params`` and the ``label`` of its runs (default: name)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: str = ""

    @model_validator(mode="after")
    def _default_label(self) -> LossEntry:
        if not self.label:
            self.label = self.name
        if "/" in self.label or self.label.startswith("."):
            raise ValueError(f"label {self.label!r} must be usable as a folder name")
        return self


class SuiteConfig(BaseModel):
    """A suite YAML, validated. ``base`` is resolved relative to the suite file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    base: Path | None = Field(None, description="experiment YAML shared by every run; null = all defaults")
    set: list[str] = Field(default_factory=list, description="key=value overrides applied to every run")
    losses: list[LossEntry] = Field(min_length=1)
    seeds: int | list[int] = Field(1, description="number of seeds (0..N-1) or explicit train.seed values")
    rank_by: str = "dice_macro"
    baseline: str | None = None
    columns: list[str] | None = Field(None, description="leaderboard metrics; null = the default set")
    shifts: list[str] = Field(
        default_factory=list, description="phantom shift presets every run is also scored on (benchmarks.ood)"
    )

    @field_validator("losses", mode="before")
    @classmethod
    def _names_to_entries(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("shifts", mode="before")
    @classmethod
    def _shift_list(cls, value: Any) -> Any:
        """A non-empty list of preset names (leave the key out for no OOD scores); else one line with the presets."""
        from lss_vlm.data.phantom.config import SHIFT_PRESETS

        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ValueError(
                f"shifts: expected a non-empty list of shift presets from {', '.join(SHIFT_PRESETS)} "
                f"(leave the key out for no OOD scores), got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> SuiteConfig:
        labels = [entry.label for entry in self.losses]
        duplicates = sorted({x for x in labels if labels.count(x) > 1})
        if duplicates:
            raise ValueError(f"losses: duplicate label(s) {', '.join(duplicates)}; give each entry its own 'label'")
        if self.baseline is not None and self.baseline not in labels:
            raise ValueError(f"baseline {self.baseline!r} is not one of the losses: {', '.join(labels)}")
        if isinstance(self.seeds, int) and self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
        if isinstance(self.seeds, list):
            if not self.seeds:
                raise ValueError("seeds: an empty list runs nothing; give a count (e.g. 3) or a list of seeds")
            if any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
                raise ValueError(f"seeds: expected distinct seeds >= 0, got {self.seeds}")
        if self.shifts:
            from benchmarks.ood import check_shift_names

            check_shift_names(self.shifts)
        return self

    def check_metrics(self, source: str) -> None:
        """``rank_by`` and ``columns`` must be metric keys of the registry (:mod:`benchmarks.metric_names`)."""
        from benchmarks.metric_names import check_metric_name

        check_metric_name(self.rank_by, f"{source}: rank_by")
        for i, name in enumerate(self.columns or []):
            check_metric_name(name, f"{source}: columns[{i}]")

    def seed_list(self) -> list[int]:
        """The ``train.seed`` values of the suite."""
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)


def resolve_suite_path(name_or_path: str | Path) -> Path:
    """A suite YAML path, or the name of a shipped suite (``quick`` -> ``configs/suites/quick.yaml``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SUITE_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    available = ", ".join(sorted(p.stem for p in SUITE_DIR.glob("*.yaml")))
    raise ConfigError(f"suite {str(name_or_path)!r}: no such file and no shipped suite of that name ({available})")


def load_suite(name_or_path: str | Path) -> SuiteConfig:
    """Read and validate a suite YAML; errors name the file and the key."""
    path = resolve_suite_path(name_or_path)
    raw = read_yaml_mapping(path, "suite", "suite settings (name, base, set, losses, seeds, rank_by, baseline)")
    raw.setdefault("name", path.stem)
    try:
        suite = SuiteConfig.model_validate(raw)
    except ValidationError as exc:
        details = "; ".join(_error_text(e) for e in exc.errors())
        raise ConfigError(f"{path}: {details}") from None
    suite.check_metrics(str(path))
    if suite.base is not None and not suite.base.is_absolute():
        suite.base = (path.parent / suite.base).resolve()
    return suite


def _error_text(error: dict[str, Any]) -> str:
    """``key: message`` of one pydantic error; a message of our validators already starts with its key."""
    message, loc = error["msg"].removeprefix("Value error, "), error["loc"]
    if not loc or message.startswith(f"{loc[-1]}:"):
        return message
    return f"{'.'.join(map(str, loc))}: {message}"


@dataclass
class PlannedRun:
    """One (loss × seed) of a suite with its resolved experiment config."""

    label: str
    seed: int
    config: Any  # benchmarks.config.ExperimentConfig

    def final_dir(self, out_dir: Path) -> Path:
        return out_dir / "runs" / self.label / f"seed{self.seed}"

    def partial_dir(self, out_dir: Path) -> Path:
        return out_dir / "runs" / self.label / f"seed{self.seed}{PARTIAL_SUFFIX}"


def plan_runs(suite: SuiteConfig, seeds: Sequence[int] | None = None) -> list[PlannedRun]:
    """Resolve the experiment config of every (seed × loss), seed-major; every config is validated before any run.

    Seed-major order means an interrupted long suite already has a one-seed leaderboard of every loss.
    """
    from benchmarks.config import config_from_dict, load_config

    base_config = load_config(suite.base, list(suite.set))
    if suite.shifts:  # refused before any run is trained, not after the last one
        from benchmarks.ood import check_shiftable

        check_shiftable(base_config.data, f"suite {suite.name!r}: shifts")
    base = base_config.model_dump(mode="json")
    plans = []
    for seed in seeds if seeds is not None else suite.seed_list():  # seed-major: every loss has seed 0 first
        for i, entry in enumerate(suite.losses):
            raw = {**base, "name": f"{suite.name}/{entry.label}/seed{seed}"}
            raw["loss"] = {"name": entry.name, "params": dict(entry.params)}
            raw["train"] = {**base["train"], "seed": int(seed), "quiet": True}  # the suite shows its own progress
            cfg = config_from_dict(raw, source=f"suite {suite.name!r} losses[{i}] ({entry.label})")
            plans.append(PlannedRun(entry.label, int(seed), cfg))
    return plans


def select_losses(suite: SuiteConfig, names: Sequence[str], out_dir: str | Path | None = None) -> SuiteConfig:
    """``suite`` with only the losses ``names``: a label of the suite, else a label recorded in ``out_dir/suite.yaml``
    (with its params), else a registry loss name with its defaults (checked when the runs are planned)."""
    known = {entry.label: entry for entry in _recorded_losses(out_dir)}
    known.update({entry.label: entry for entry in suite.losses})
    chosen, seen = [], set()
    for name in names:
        if name in seen:
            continue
        seen.add(name)
        chosen.append(known.get(name) or LossEntry(name=name))
    if not chosen:
        raise ConfigError("--losses: give at least one loss name, e.g. --losses dice,my_dice")
    return suite.model_copy(update={"losses": chosen})


def _recorded_losses(out_dir: str | Path | None) -> list[LossEntry]:
    """The loss entries of a suite folder's ``suite.yaml`` (empty when absent or unreadable)."""
    if out_dir is None or not (Path(out_dir) / "suite.yaml").is_file():
        return []
    try:
        record = yaml.safe_load((Path(out_dir) / "suite.yaml").read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return []
    entries = []
    for raw in record.get("losses", []) if isinstance(record, dict) else []:
        try:
            entries.append(LossEntry.model_validate(raw))
        except ValidationError:
            continue
    return entries


def suite_record(suite: SuiteConfig, out_dir: str | Path | None = None) -> dict[str, Any]:
    """What ``suite.yaml`` of a suite directory stores: the suite (resolved), its losses plus those recorded before
    in ``out_dir`` (a folder grows), ``baseline`` kept only when it is one of them. Read by the leaderboard."""
    record = suite.model_dump(mode="json")
    losses = [entry.model_dump() for entry in suite.losses]
    labels = {entry["label"] for entry in losses}
    losses += [entry.model_dump() for entry in _recorded_losses(out_dir) if entry.label not in labels]
    record["losses"] = losses
    if record.get("baseline") not in {entry["label"] for entry in losses}:
        record["baseline"] = None
    return record


@dataclass
class ChangedRun:
    """A finished (or partial) run whose stored resolved config differs from the planned one."""

    plan: PlannedRun
    path: Path
    keys: list[str]

    def line(self) -> str:
        shown = ", ".join(self.keys[:6]) + (f", +{len(self.keys) - 6} more" if len(self.keys) > 6 else "")
        return f"{self.plan.label} seed{self.plan.seed} ({shown})"


def changed_runs(plans: Sequence[PlannedRun], out_dir: str | Path) -> list[ChangedRun]:
    """The planned runs whose folder (final or ``.partial``) holds a ``config.yaml`` that resolves to another config
    than the planned one (keys of :data:`benchmarks.run_records.CONFIG_KEYS_IGNORED` left out). A folder without
    ``config.yaml`` has nothing to compare and is reused as it is."""
    from benchmarks.run_records import config_differences, read_run_config

    out_dir = Path(out_dir)
    changed = []
    for plan in plans:
        for folder in (plan.final_dir(out_dir), plan.partial_dir(out_dir)):
            stored = read_run_config(folder) if folder.is_dir() else None
            keys = config_differences(stored, plan.config.model_dump(mode="json")) if stored is not None else []
            if keys:
                changed.append(ChangedRun(plan, folder, keys))
    return changed


def _check_record(out_dir: Path) -> None:
    """A suite folder's ``suite.yaml`` (the losses it has held, with their params) must read as a mapping: a damaged
    one is not overwritten silently."""
    path = out_dir / "suite.yaml"
    if not path.is_file():
        return
    try:
        read_yaml_mapping(path, "suite record", "the suite's settings")
    except ConfigError as exc:
        raise ConfigError(
            f"{exc}; the suite folder's record is damaged: repair or delete {path} (the runs are kept and it is "
            "written again), or use a new --out"
        ) from None


def _refuse_changed(changed: Sequence[ChangedRun], out_dir: Path) -> None:
    if changed:
        raise ConfigError(
            f"{out_dir}: {len(changed)} run(s) were trained with another resolved config than the suite now gives: "
            f"{'; '.join(c.line() for c in changed)}; add --retrain-changed to retrain them, or use a new --out"
        )


def check_suite_folder(
    suite: SuiteConfig,
    out_dir: str | Path,
    seeds: Sequence[int] | None = None,
    resume: bool = True,
    retrain_changed: bool = False,
) -> None:
    """What :func:`run_suite` checks before it writes: every run's config, and (resuming) that no finished run of the
    plan was trained with another resolved config (unless ``retrain_changed``). Lets a command refuse bad input
    before it locks or touches the suite folder."""
    from benchmarks.run_status import check_inputs

    plans = plan_runs(suite, seeds)
    for plan in plans:
        check_inputs(plan.config)
    if resume and Path(out_dir).is_dir():
        _check_record(Path(out_dir))
        if not retrain_changed:
            _refuse_changed(changed_runs(plans, out_dir), Path(out_dir))


def _clean(out_dir: Path) -> None:
    for name in SUITE_OUTPUTS:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


@dataclass
class RunOutcome:
    """What happened to one planned run in this invocation."""

    plan: PlannedRun
    status: str  # completed | failed | pruned | skipped
    reason: str | None
    wall_time_s: float
    metrics: dict[str, float]


def _default_runner() -> Runner:
    from benchmarks.runner import run_experiment

    return run_experiment


def _read_status(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "status.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def execute_run(plan: PlannedRun, out_dir: Path, runner: Runner, on_epoch=None) -> RunOutcome:
    """Train one run in its ``.partial`` folder (resuming from its checkpoint if any), then rename it final.

    An exception from the runner is recorded as a failed run (``status.json`` with the reason); KeyboardInterrupt
    leaves the partial folder in place for the next resume. A partial folder that already has its ``status.json``
    (killed between the end of the run and the rename) is only renamed.
    """
    from benchmarks.config import dump_config

    partial, final = plan.partial_dir(out_dir), plan.final_dir(out_dir)
    partial.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    metrics: dict[str, float] = {}
    ended = _read_status(partial)
    if ended is not None:
        _promote(partial, final)
        return RunOutcome(plan, str(ended.get("status")), ended.get("reason"), 0.0, _read_metrics(final))
    try:
        metrics = dict(runner(plan.config, partial, on_epoch=on_epoch) or {})
        status = _read_status(partial) or {"status": "completed", "reason": None}
    except Exception as exc:  # noqa: BLE001 - any failure of one run is recorded and the suite goes on
        (partial / "traceback.txt").write_text(traceback.format_exc(), encoding="utf-8")
        status = _read_status(partial) or {}
        if status.get("status") not in ("failed", "pruned"):
            status = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}".strip()}
    wall = time.perf_counter() - start
    status.setdefault("wall_time_s", wall)
    if not (partial / "config.yaml").is_file():
        dump_config(plan.config, partial / "config.yaml")
    if status.get("status") == "completed" and not (partial / "provenance.json").is_file():
        _write_minimal_provenance(plan, partial)
    if _read_status(partial) != status:
        atomic_write_json(partial / "status.json", status)
    _promote(partial, final)
    return RunOutcome(plan, str(status["status"]), status.get("reason"), wall, metrics)


def _write_minimal_provenance(plan: PlannedRun, run_dir: Path) -> None:
    """``provenance.json`` for a run whose runner wrote none (a plugged-in ``runner``): package versions and config
    hash, so the leaderboard can still check that pooled runs are comparable. No data hash (the runner owns it)."""
    import platform
    from importlib import metadata

    from benchmarks.config import config_hash
    from benchmarks.runner import PACKAGES

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    record = {
        "packages": {name: version(name) for name in PACKAGES},
        "python": platform.python_version(),
        "config_hash": config_hash(plan.config),
        "seed": plan.seed,
        "written_by": "benchmarks.suite (the runner wrote no provenance.json)",
    }
    atomic_write_json(run_dir / "provenance.json", record)


def _promote(partial: Path, final: Path) -> None:
    """Rename a finished ``seed<k>.partial`` to ``seed<k>`` (replacing an older final folder on --retry-failed)."""
    if final.exists():
        shutil.rmtree(final)
    partial.rename(final)


def _read_metrics(run_dir: Path) -> dict[str, float]:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def run_suite(
    suite: SuiteConfig,
    out_dir: str | Path,
    seeds: Sequence[int] | None = None,
    resume: bool = True,
    retry_failed: bool = False,
    runner: Runner | None = None,
    progress: SuiteProgress | None = None,
    retrain_changed: bool = False,
    executor: Any = None,
) -> list[RunOutcome]:
    """Run every planned (loss × seed) of ``suite`` into ``out_dir`` (a suite directory); see the module docstring.

    With ``resume`` (default) finished runs are skipped (failed ones too, unless ``retry_failed``) and partial runs
    resume from their last checkpoint; without it the suite directory's outputs are deleted first. A finished or
    partial run whose stored resolved config differs from the planned one raises :class:`ConfigError` (nothing is
    trained), or with ``retrain_changed`` is trained again from scratch (the old folder is replaced once the new run
    has finished). Runs of ``out_dir`` outside the plan (other losses, other seeds) are kept as they are.
    ``executor``: how the pending runs are run (:mod:`benchmarks.backends`; default: one after the other here).
    """
    from benchmarks.backends import LocalExecutor

    out_dir = Path(out_dir)
    plans = plan_runs(suite, seeds)
    out_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        _check_record(out_dir)
    else:
        _clean(out_dir)
    changed = changed_runs(plans, out_dir)
    if not retrain_changed:
        _refuse_changed(changed, out_dir)
    record = suite_record(suite, out_dir)
    atomic_write_text(out_dir / "suite.yaml", yaml.safe_dump(record, sort_keys=False))
    retrain = {(c.plan.label, c.plan.seed) for c in changed}
    for c in changed:
        if c.path == c.plan.partial_dir(out_dir):  # a partial run of the old config cannot be resumed
            shutil.rmtree(c.path)
    progress = progress or SuiteProgress(live=False, lines=False)
    outcomes = []
    with progress:
        if runner is None:  # the real engine: build the dataset once, before the first run
            runner = _default_runner()
            prepare_data(plans, progress)
        progress.start(len(plans))
        pending = []
        for plan in plans:
            done = _read_status(plan.final_dir(out_dir)) if plan.final_dir(out_dir).is_dir() else None
            again = (plan.label, plan.seed) in retrain
            if done is not None and not again and (done.get("status") == "completed" or not retry_failed):
                outcomes.append(RunOutcome(plan, "skipped", done.get("status"), 0.0, {}))
                progress.skipped(plan, done.get("status", "?"))
                continue
            if again:
                progress.message(
                    f"{plan.label} seed{plan.seed}: resolved config changed, retraining (--retrain-changed)"
                )
            pending.append(plan)
        outcomes += (executor or LocalExecutor()).run(
            pending,
            out_dir,
            runner,
            begin=lambda plan: progress.begin(plan, resuming=plan.partial_dir(out_dir).is_dir()),
            finished=lambda outcome: progress.finished(outcome, suite.rank_by),
            on_epoch=progress.on_epoch,
        )
        if suite.shifts:  # the OOD suite: every completed run scored on each shifted test set (benchmarks.ood)
            from benchmarks.ood import score_suite_shifts

            score_suite_shifts(suite.shifts, plans, out_dir, progress.message)
    return outcomes


def prepare_data(plans: Sequence[PlannedRun], progress: SuiteProgress) -> list[Path]:
    """Resolve the dataset of the runs once before training (synthesises the phantom into its cache if needed)."""
    from benchmarks.data import resolve_manifest

    manifests = []
    distinct = {json.dumps(p.config.data.model_dump(mode="json"), sort_keys=True): p.config.data for p in plans}
    for data in distinct.values():
        start = time.perf_counter()
        progress.message(f"data: preparing {'manifest' if data.manifest else 'phantom (cached after the first time)'}")
        manifest = resolve_manifest(data)
        progress.message(f"data: {manifest} ({time.perf_counter() - start:.0f}s)")
        manifests.append(manifest)
    return manifests


class SuiteProgress:
    """Progress of a suite: a live rich view (runs done/total, current loss/seed/epoch, ETA from this session's runs)
    when ``live``, and one printed line per finished run when ``lines`` (so a ``nohup`` log shows progress too).
    """

    def __init__(self, live: bool = True, lines: bool = True, console=None) -> None:
        self.live = live
        self.lines = lines or live
        self.console = console
        self._progress = None
        self._task = None
        self._durations: list[float] = []
        self._total = 0
        self._done = 0
        self._current = ""
        self._epochs: object = "?"

    def __enter__(self) -> SuiteProgress:
        if self.lines and self.console is None:
            from rich.console import Console

            self.console = Console(stderr=True)
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]suite"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("runs"),
                TimeElapsedColumn(),
                TextColumn("ETA {task.fields[eta]}"),
                TextColumn("{task.description}"),
                console=self.console,
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc_info)

    def message(self, text: str) -> None:
        """Print one line (above the live view)."""
        self._print(text)

    def _print(self, text: str) -> None:
        if self.lines and self.console is not None:
            self.console.print(text, highlight=False)

    def _eta(self) -> str:
        if not self._durations:
            return "?"
        seconds = sum(self._durations) / len(self._durations) * (self._total - self._done)
        return time.strftime("%H:%M:%S", time.gmtime(seconds))

    def _update(self, description: str) -> None:
        if self._progress is not None:
            if self._task is None:
                self._task = self._progress.add_task(description, total=self._total, eta="?")
            self._progress.update(self._task, completed=self._done, description=description, eta=self._eta())

    def start(self, total: int) -> None:
        self._total = total
        self._update("")

    def skipped(self, plan: PlannedRun, status: str) -> None:
        self._done += 1
        self._print(f"[{self._done}/{self._total}] {plan.label} seed{plan.seed}: already {status}, skipped")
        self._update("")

    def begin(self, plan: PlannedRun, resuming: bool) -> None:
        self._current = f"{plan.label} seed{plan.seed}"
        self._epochs = getattr(getattr(plan.config, "train", None), "epochs", "?")
        self._update(f"{self._current}{' (resuming)' if resuming else ''}")

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        """Trainer hook: show the epoch and the validation rank metric of the current run."""
        key = next((k for k in ("dice_macro", "val/dice_macro") if k in metrics), None)
        shown = f" val dice {metrics[key]:.3f}" if key else ""
        self._update(f"{self._current} epoch {epoch}/{self._epochs}{shown}")

    def finished(self, outcome: RunOutcome, rank_by: str) -> None:
        self._done += 1
        self._durations.append(outcome.wall_time_s)
        value = outcome.metrics.get(rank_by, math.nan)
        detail = f"{rank_by}={value:.4f}" if math.isfinite(value) else (outcome.reason or "")
        colour = "green" if outcome.status == "completed" else "red"
        self._print(
            f"[{self._done}/{self._total}] {outcome.plan.label} seed{outcome.plan.seed}: "
            f"[{colour}]{outcome.status}[/] in {outcome.wall_time_s:.0f}s {detail}"
        )
        self._update("")
