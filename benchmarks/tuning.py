"""Optuna studies over loss hyperparameters (PID gains) on SQLite, journal or PostgreSQL storage.

A study is declared in YAML (``configs/studies/*.yaml``, see :class:`StudySpec` and ``docs/tuning.md``). A trial is one
``benchmarks.runner.run_experiment`` with the base experiment's budget and the suggested parameters, in
``<out>/trials/<number>/``. Its validation metric is reported each epoch so a pruner can stop it early.

**Exact budgets across processes and machines.** The process that creates a study enqueues exactly ``n_trials``
WAITING trials ("tickets"). Workers only pop tickets (Optuna's pop is atomic in every storage); they never create a
fresh trial (:class:`QueueOnlyStorage`), so K local workers or workers on other machines against one PostgreSQL
database finish exactly ``n_trials`` trials between them. A trial whose worker died (no heartbeat for the grace period)
is failed and re-enqueued with the same parameters by Optuna's retry callback, so the study still reaches the budget.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import math
import multiprocessing
import os
import random
import socket
import sys
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import optuna
from optuna.trial import FrozenTrial, TrialState
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from benchmarks.config import read_yaml_mapping
from lss_vlm.errors import ConfigError
from lss_vlm.io import atomic_path, atomic_write_json

LOSS_PARAMS_PREFIX = "loss.params."
# Heartbeats, retries and the plots are "experimental" in Optuna 4 and warn on every use; the pin <5 keeps them stable.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
BUDGET_ATTR = "lss_vlm:n_trials"
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
SAMPLERS = ("tpe", "cmaes", "random", "grid", "nsga2")
PRUNERS = ("median", "hyperband", "none")


# ---------------------------------------------------------------------------------------------------------------------
# Study YAML
# ---------------------------------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParamSpec(_Strict):
    """One searched parameter: ``float`` (optionally ``log``/``step``), ``int`` or ``categorical`` (``choices``).

    ``grid`` lists the values the grid sampler visits (default: ``choices``, or ``low``/``high`` for an int).
    """

    type: Literal["float", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    grid: list[Any] | None = None

    @model_validator(mode="after")
    def _check_range(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a {self.type} parameter needs 'low' and 'high'")
        if self.low > self.high:
            raise ValueError(f"low={self.low} is greater than high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log=true needs low > 0, got low={self.low}")
        return self

    def grid_values(self) -> list[Any]:
        """The values the grid sampler visits."""
        if self.grid is not None:
            return list(self.grid)
        if self.type == "categorical":
            return list(self.choices)
        if self.type == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        raise ValueError("the grid sampler needs a 'grid' list of values for a float or log-int parameter")


class SearchSpaceSpec(_Strict):
    """``params`` (dotted config key -> :class:`ParamSpec`) and/or ``from_loss`` (the loss's registered tunables)."""

    from_loss: bool = False
    exclude: list[str] = Field(default_factory=list)
    params: dict[str, ParamSpec] = Field(default_factory=dict)


class ObjectiveSpec(_Strict):
    """A metric (validation key reported by the runner, e.g. ``val/dice/ligamentum_flavum``) and its direction."""

    metric: str = "val/dice/ligamentum_flavum"
    direction: Literal["maximize", "minimize"] = "maximize"


class SamplerSpec(_Strict):
    """``name`` (tpe default, nsga2 for several objectives), ``seed`` and keyword ``options`` of the sampler."""

    name: Literal["tpe", "cmaes", "random", "grid", "nsga2"] | None = None
    seed: int = 0
    options: dict[str, Any] = Field(default_factory=dict)


class PrunerSpec(_Strict):
    """``name`` (median, hyperband, none) and keyword ``options`` of the Optuna pruner."""

    name: Literal["median", "hyperband", "none"] = "median"
    options: dict[str, Any] = Field(default_factory=dict)


class StorageSpec(_Strict):
    """Stale-trial detection (RDB storages): heartbeat every ``heartbeat_interval`` s, stale after ``grace_period``."""

    heartbeat_interval: int = 60
    grace_period: int = 180
    max_retry: int = 3
    sqlite_timeout: float = 60.0
    poll_interval: float = 2.0


class RunnerSpec(_Strict):
    """What a trial runs: ``experiment`` (a real training run) or ``synthetic``.

    ``synthetic`` is a fast stand-in objective for checking a storage or multi-machine setup without training:
    ``value = -mean(((x - centre) / (high - low))**2)`` over the numeric parameters (centre = middle of the range),
    reported over ``epochs`` epochs with ``sleep_s`` seconds each; trials whose number ``n`` has
    ``n % fail_every == fail_every - 1`` raise (to exercise failure recording); 0 never fails.
    """

    name: Literal["experiment", "synthetic"] = "experiment"
    epochs: int = 3
    sleep_s: float = 0.0
    fail_every: int = 0


class StudySpec(_Strict):
    """A study YAML file, resolved: the base experiment, objectives, search space, sampler, pruner, storage, runner.

    ``overrides`` (``key=value``) apply to the trials and to ``best.yaml``; ``trial_overrides`` to the trials only
    (e.g. ``eval.text_metrics=false`` to skip the final CIDEr scoring that the objective does not use).
    """

    path: Path
    experiment: Path | None = None
    overrides: list[str] = Field(default_factory=list)
    trial_overrides: list[str] = Field(default_factory=list)
    study_name: str | None = None
    objectives: list[ObjectiveSpec] = Field(default_factory=lambda: [ObjectiveSpec()])
    search_space: SearchSpaceSpec = Field(default_factory=SearchSpaceSpec)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec = Field(default_factory=PrunerSpec)
    storage: StorageSpec = Field(default_factory=StorageSpec)
    runner: RunnerSpec = Field(default_factory=RunnerSpec)

    @field_validator("objectives")
    @classmethod
    def _at_least_one(cls, value: list[ObjectiveSpec]) -> list[ObjectiveSpec]:
        if not value:
            raise ValueError("at least one objective is needed")
        return value

    @property
    def name(self) -> str:
        return self.study_name or self.path.stem

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1


def load_study_spec(path: str | os.PathLike[str]) -> StudySpec:
    """Read a study YAML file. ``objective:`` (one) or ``objectives:`` (a list) name the metric(s) to optimise;
    ``experiment:`` is resolved relative to the study file. Raises :class:`ConfigError` naming the file and field."""
    path = Path(path)
    raw = read_yaml_mapping(path, "study", "study settings")
    if "objective" in raw:
        if "objectives" in raw:
            raise ConfigError(f"{path}: give either 'objective' or 'objectives', not both")
        raw["objectives"] = [raw.pop("objective")]
    if raw.get("experiment") is not None:
        raw["experiment"] = (path.parent / str(raw["experiment"])).resolve()
    try:
        spec = StudySpec(path=path, **raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_first_error(exc)}") from None
    if spec.runner.name == "experiment" and spec.experiment is None:
        raise ConfigError(f"{path}: field 'experiment' (the base experiment config) is required")
    return spec


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    return f"field '{where}': {err['msg']} (got {err.get('input')!r})"


def param_name(key: str) -> str:
    """The Optuna parameter name of a dotted config key: ``loss.params.kp`` -> ``kp``, others unchanged."""
    return key[len(LOSS_PARAMS_PREFIX) :] if key.startswith(LOSS_PARAMS_PREFIX) else key


def loss_search_space(loss_name: str) -> dict[str, ParamSpec]:
    """The registered tunables of a loss (``losses.loss_spec``) as dotted ``loss.params.<name>`` keys."""
    import losses

    spec = losses.loss_spec(loss_name)
    space = spec.get("search_space", spec.get("tunables", {})) if isinstance(spec, dict) else spec.search_space
    return {f"{LOSS_PARAMS_PREFIX}{name}": ParamSpec(**dict(dist)) for name, dist in space.items()}


def resolve_search_space(spec: StudySpec, loss_name: str | None) -> dict[str, ParamSpec]:
    """Dotted config key -> :class:`ParamSpec`: the loss's tunables (``from_loss``) updated by explicit ``params``."""
    space: dict[str, ParamSpec] = {}
    if spec.search_space.from_loss:
        if not loss_name:
            raise ConfigError(f"{spec.path}: search_space.from_loss needs a base experiment with loss.name")
        try:
            space.update(loss_search_space(loss_name))
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"{spec.path}: search_space.from_loss: loss {loss_name!r}: {exc}") from None
    space.update(spec.search_space.params)
    for key in spec.search_space.exclude:
        space.pop(key, None) or space.pop(f"{LOSS_PARAMS_PREFIX}{key}", None)
    if not space:
        raise ConfigError(f"{spec.path}: field 'search_space' declares no parameter to search")
    names = [param_name(k) for k in space]
    if len(set(names)) != len(names):
        raise ConfigError(f"{spec.path}: search_space: two keys share a parameter name: {sorted(space)}")
    return space


def suggest(trial: optuna.Trial, space: dict[str, ParamSpec]) -> dict[str, Any]:
    """Ask the trial for every parameter; returns dotted config key -> value."""
    return {key: suggest_one(trial, param_name(key), p) for key, p in space.items()}


def suggest_one(trial: optuna.Trial, name: str, p: ParamSpec) -> Any:
    """``trial.suggest_float`` / ``suggest_int`` / ``suggest_categorical`` for one parameter."""
    if p.type == "categorical":
        return trial.suggest_categorical(name, p.choices)
    if p.type == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)


# ---------------------------------------------------------------------------------------------------------------------
# Experiment configs
# ---------------------------------------------------------------------------------------------------------------------


def base_config(spec: StudySpec, extra_overrides: Sequence[str] = ()) -> Any:
    """The base :class:`benchmarks.config.ExperimentConfig` of the study (file + study overrides + CLI ``--set``)."""
    from benchmarks.config import load_config

    return load_config(spec.experiment, [*spec.overrides, *extra_overrides])


def apply_params(cfg: Any, params: dict[str, Any]) -> Any:
    """A copy of ``cfg`` with dotted keys (``loss.params.kp``) set to the given values, validated again."""
    from benchmarks.config import config_from_dict

    data = cfg.model_dump(mode="json")
    for key, value in params.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"search_space: config key {key!r} does not exist ({part!r} is not a section)")
            node = node[part]
        node[leaf] = value
    return config_from_dict(data, source=f"trial params {params}")


def validate_study(spec: StudySpec, overrides: Sequence[str] = ()) -> dict[str, ParamSpec]:
    """Check everything a trial will need before any study or output exists; returns the search space.

    The base experiment must load with the study's and the command's ``--set`` overrides, and a config with every
    searched key set to its lowest value (first choice) must validate, so a typo fails here with one
    :class:`ConfigError` instead of failing every trial of a study that then cannot be rerun.
    """
    needs_config = spec.runner.name == "experiment" or spec.search_space.from_loss
    cfg = base_config(spec, [*overrides, *spec.trial_overrides]) if needs_config else None
    space = resolve_search_space(spec, cfg.loss.name if cfg is not None else None)
    if cfg is not None and spec.runner.name == "experiment":
        from benchmarks.runner import check_inputs

        check_inputs(apply_params(cfg, {key: _probe_value(p) for key, p in space.items()}))
    return space


def _probe_value(p: ParamSpec) -> Any:
    """A value inside the declared range of one parameter (its first choice, or its low end)."""
    if p.type == "categorical":
        return p.choices[0]
    return int(p.low) if p.type == "int" else float(p.low)


# ---------------------------------------------------------------------------------------------------------------------
# Storages
# ---------------------------------------------------------------------------------------------------------------------


class QueueEmpty(Exception):
    """Raised by :class:`QueueOnlyStorage` when a worker asks for a trial and no WAITING trial is left."""


class QueueOnlyStorage:
    """Storage mixin: trials come only from the queue (enqueued templates), never fresh, so budgets are exact."""

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None:
            raise QueueEmpty("no WAITING trial left in the study")
        return super().create_new_trial(study_id, template_trial)  # type: ignore[misc]


class QueueOnlyRDBStorage(QueueOnlyStorage, optuna.storages.RDBStorage):
    """An :class:`optuna.storages.RDBStorage` (SQLite, PostgreSQL, MySQL) that only runs enqueued trials.

    Optuna wraps an RDB storage in a cache that calls ``_create_new_trial`` directly, so that is guarded too.
    """

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        if template_trial is None:
            raise QueueEmpty("no WAITING trial left in the study")
        return super()._create_new_trial(study_id, template_trial)


class QueueOnlyJournalStorage(QueueOnlyStorage, optuna.storages.JournalStorage):
    """An :class:`optuna.storages.JournalStorage` that only runs enqueued trials."""


def default_storage_url(out_dir: Path) -> str:
    """SQLite in the output directory: ``sqlite:///<out>/study.db``."""
    return f"sqlite:///{(out_dir / 'study.db').resolve()}"


def open_storage(url: str, settings: StorageSpec | None = None) -> optuna.storages.BaseStorage:
    """The storage for ``url``: ``journal:PATH`` (journal file), ``sqlite:///PATH`` (busy timeout) or any SQLAlchemy
    URL (``postgresql://user@host/db``). RDB storages get a heartbeat and retry the trials of dead workers."""
    settings = settings or StorageSpec()
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url[len("journal:") :]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return QueueOnlyJournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ConfigError(
            f"--storage {url!r}: expected an SQLAlchemy URL (sqlite:///PATH, postgresql://...) or journal:PATH"
        )
    url = with_available_driver(url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": settings.sqlite_timeout}}
        db_path = url.split(":///", 1)[-1].split("?", 1)[0]
        if db_path and db_path != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
    try:
        return QueueOnlyRDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=settings.heartbeat_interval,
            grace_period=settings.grace_period,
            **{_RETRY_KWARG: _RETRY_CALLBACK(max_retry=settings.max_retry)},
        )
    except ImportError as exc:
        raise ConfigError(f"--storage {_redact(url)}: database driver missing ({exc})") from None
    except Exception as exc:  # sqlalchemy.exc.ArgumentError / OperationalError: bad URL or unreachable server
        raise ConfigError(f"--storage {_redact(url)}: cannot open ({type(exc).__name__}: {exc})") from None


if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # Optuna >= 4.9 renamed the callback
    _RETRY_CALLBACK, _RETRY_KWARG = optuna.storages.RetryHeartbeatStaleTrialCallback, "heartbeat_stale_trial_callback"
else:  # pragma: no cover - Optuna 4.0-4.8
    _RETRY_CALLBACK, _RETRY_KWARG = optuna.storages.RetryFailedTrialCallback, "failed_trial_callback"


def with_available_driver(url: str) -> str:
    """``postgresql://`` with the installed driver named: SQLAlchemy 2.1 defaults to psycopg 3, many have psycopg2."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres"):
        return url
    for module, dialect in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"{dialect}{sep}{rest}"
    return url


def _redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url


# ---------------------------------------------------------------------------------------------------------------------
# Samplers, pruners, studies
# ---------------------------------------------------------------------------------------------------------------------


def build_sampler(
    spec: StudySpec, space: dict[str, ParamSpec], name: str | None = None, seed: int | None = None
) -> optuna.samplers.BaseSampler:
    """The seeded sampler: ``name`` (CLI) or the YAML's, default TPE (one objective) or NSGA-II (several)."""
    name = name or spec.sampler.name or ("nsga2" if spec.multi_objective else "tpe")
    seed = spec.sampler.seed if seed is None else seed
    options = dict(spec.sampler.options)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, **options)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **options)
    if name == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            raise ConfigError("--sampler cmaes needs the 'cmaes' package (pip install cmaes)") from None
        return optuna.samplers.CmaEsSampler(seed=seed, **options)
    if name == "grid":  # the grid points are enqueued as the study's tickets (grid_points); nothing left to sample
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"--sampler {name!r}: expected one of {', '.join(SAMPLERS)}")


def build_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """The pruner of the YAML (``median`` default); none for multi-objective studies (Optuna cannot prune those)."""
    if spec.multi_objective or spec.pruner.name == "none":
        return optuna.pruners.NopPruner()
    try:
        if spec.pruner.name == "median":
            return optuna.pruners.MedianPruner(**spec.pruner.options)
        return optuna.pruners.HyperbandPruner(**spec.pruner.options)
    except TypeError as exc:
        raise ConfigError(f"{spec.path}: field 'pruner.options': {exc}") from None


def grid_points(spec: StudySpec, space: dict[str, ParamSpec], seed: int) -> list[dict[str, Any]]:
    """Every point of the full grid (Optuna parameter name -> value), in an order shuffled by ``seed``."""
    try:
        axes = {param_name(k): p.grid_values() for k, p in space.items()}
    except ValueError as exc:
        raise ConfigError(f"{spec.path}: search_space: {exc}") from None
    points = [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    random.Random(seed).shuffle(points)
    return points


def trial_tickets(
    spec: StudySpec, space: dict[str, ParamSpec], n_trials: int, sampler: str | None, seed: int
) -> list[dict[str, Any]]:
    """The fixed parameters of each enqueued trial: nothing fixed (the sampler suggests), or the grid points."""
    if (sampler or spec.sampler.name) == "grid":
        return grid_points(spec, space, seed)[:n_trials]
    return [{} for _ in range(n_trials)]


def create_or_join_study(
    spec: StudySpec,
    storage: optuna.storages.BaseStorage,
    study_name: str,
    tickets: list[dict[str, Any]],
    sampler: optuna.samplers.BaseSampler,
) -> tuple[optuna.Study, bool]:
    """Create the study and enqueue its tickets (one trial each), or join the existing one (returns ``created``).

    Creation is atomic in the storage (unique study name), so exactly one process enqueues the budget; joiners wait
    until the budget attribute is written.
    """
    pruner = build_pruner(spec)
    try:
        study = optuna.create_study(
            study_name=study_name, storage=storage, sampler=sampler, pruner=pruner, directions=spec.directions
        )
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
        _check_directions(study, spec)
        _wait_for_budget(study, spec.storage.poll_interval)
        return study, False
    for params in tickets:
        study.enqueue_trial(params)
    study.set_user_attr(BUDGET_ATTR, len(tickets))
    return study, True


def _check_directions(study: optuna.Study, spec: StudySpec) -> None:
    found = [d.name.lower() for d in study.directions]
    if found != spec.directions:
        raise ConfigError(
            f"study {study.study_name!r} already exists with directions {found}, but {spec.path} asks for "
            f"{spec.directions}; use another --study name"
        )


def _wait_for_budget(study: optuna.Study, poll_s: float, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while BUDGET_ATTR not in study.user_attrs:
        if time.monotonic() > deadline:
            raise ConfigError(
                f"study {study.study_name!r} exists but has no trial budget (not made by lss-bench tune?)"
            )
        time.sleep(poll_s)


# ---------------------------------------------------------------------------------------------------------------------
# Objectives
# ---------------------------------------------------------------------------------------------------------------------


class TrialFailure(RuntimeError):
    """A trial that cannot produce a usable objective value (NaN metric, missing metric)."""


def metric_value(metrics: dict[str, float], name: str) -> float:
    """``metrics[name]``, accepting the key with or without the ``val/`` prefix."""
    bare = name[len("val/") :] if name.startswith("val/") else name
    for key in (name, f"val/{bare}", bare):
        if key in metrics:
            return float(metrics[key])
    raise TrialFailure(
        f"objective metric {name!r} not among the run's metrics ({', '.join(sorted(metrics)[:12])}, ...)"
    )


def objective_values(metrics: dict[str, float], spec: StudySpec) -> list[float]:
    """The objective value(s) of a finished run; NaN is a failure."""
    values = [metric_value(metrics, o.metric) for o in spec.objectives]
    for objective, value in zip(spec.objectives, values):
        if not math.isfinite(value):
            raise TrialFailure(f"objective metric {objective.metric!r} is {value}")
    return values


def report_epoch(trial: optuna.Trial, spec: StudySpec, epoch: int, metrics: dict[str, float]) -> None:
    """``trial.report`` the epoch's validation metric and raise :class:`optuna.TrialPruned` if the pruner says so."""
    if spec.multi_objective:
        return
    value = metric_value(metrics, spec.objectives[0].metric)
    if not math.isfinite(value):
        return
    trial.report(value, epoch)
    if trial.should_prune():
        raise optuna.TrialPruned(f"pruned at epoch {epoch} ({spec.objectives[0].metric}={value:.4f})")


TrialRunner = Callable[[optuna.Trial, dict[str, Any]], list[float]]


def experiment_runner(spec: StudySpec, out_dir: Path, extra_overrides: Sequence[str] = ()) -> TrialRunner:
    """A trial = ``run_experiment`` of the base config with the trial's params into ``<out>/trials/<number>/``."""

    def run(trial: optuna.Trial, params: dict[str, Any]) -> list[float]:
        from benchmarks.runner import run_experiment

        cfg = apply_params(base_config(spec, [*extra_overrides, *spec.trial_overrides]), params)
        run_dir = out_dir / "trials" / str(trial.number)
        trial.set_user_attr("run_dir", str(run_dir))
        last_epoch: dict[str, float] = {}

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            last_epoch.clear()
            last_epoch.update(metrics)
            report_epoch(trial, spec, epoch, metrics)

        final = run_experiment(cfg, run_dir, on_epoch=on_epoch, resume=False)  # a trial number is one fresh run
        return objective_values(last_epoch or dict(final), spec)

    return run


def synthetic_runner(spec: StudySpec, space: dict[str, ParamSpec]) -> TrialRunner:
    """The fast stand-in objective of :class:`RunnerSpec` (no training)."""
    numeric = {k: p for k, p in space.items() if p.type != "categorical"}

    def run(trial: optuna.Trial, params: dict[str, Any]) -> list[float]:
        every = spec.runner.fail_every
        score = -sum(((params[k] - (p.low + p.high) / 2) / ((p.high - p.low) or 1)) ** 2 for k, p in numeric.items())
        score /= max(len(numeric), 1)
        for epoch in range(spec.runner.epochs):
            time.sleep(spec.runner.sleep_s)
            if every and trial.number % every == every - 1 and epoch == spec.runner.epochs - 1:
                raise TrialFailure(f"synthetic failure of trial {trial.number} (fail_every={every})")
            metrics = {o.metric: score * (epoch + 1) / spec.runner.epochs for o in spec.objectives}
            report_epoch(trial, spec, epoch, metrics)
        return [score for _ in spec.objectives]

    return run


def make_objective(runner: TrialRunner, space: dict[str, ParamSpec]) -> Callable[[optuna.Trial], Any]:
    """The Optuna objective: suggest, run, return the value(s); a failure keeps its reason in ``fail_reason``."""

    def objective(trial: optuna.Trial) -> float | list[float]:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:
            params = suggest(trial, space)
            values = runner(trial, params)
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            trial.set_user_attr("fail_reason", f"{type(exc).__name__}: {exc}"[:1000])
            raise
        return values[0] if len(values) == 1 else values

    return objective


# ---------------------------------------------------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------------------------------------------------


class WorkerJob(BaseModel):
    """Everything one worker process needs (picklable for ``spawn``)."""

    spec: StudySpec
    study_name: str
    storage_url: str
    out_dir: Path
    sampler: str | None = None
    seed: int | None = None
    worker_index: int = 0
    overrides: list[str] = Field(default_factory=list)
    threads: int | None = None


def build_objective(job: WorkerJob, space: dict[str, ParamSpec]) -> Callable[[optuna.Trial], Any]:
    """The objective of the job's runner (experiment or synthetic)."""
    if job.spec.runner.name == "synthetic":
        return make_objective(synthetic_runner(job.spec, space), space)
    return make_objective(experiment_runner(job.spec, job.out_dir, job.overrides), space)


def job_search_space(job: WorkerJob) -> dict[str, ParamSpec]:
    """The job's search space (the base config is loaded only when the loss's tunables are needed)."""
    loss_name = base_config(job.spec, job.overrides).loss.name if job.spec.search_space.from_loss else None
    return resolve_search_space(job.spec, loss_name)


def worker_seed(job: WorkerJob) -> int:
    """Worker 0 uses the seed itself (same seed + one worker = same suggestions); worker k uses ``seed + k``."""
    base = job.spec.sampler.seed if job.seed is None else job.seed
    return base + job.worker_index


def run_worker(job: WorkerJob) -> int:
    """Pop and run trials of the study until none is waiting or running; returns the number of trials it ran."""
    if job.threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(job.threads))
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(job.threads)
    space = job_search_space(job)
    storage = open_storage(job.storage_url, job.spec.storage)
    sampler = build_sampler(job.spec, space, job.sampler, worker_seed(job))
    study = optuna.load_study(
        study_name=job.study_name, storage=storage, sampler=sampler, pruner=build_pruner(job.spec)
    )
    objective = build_objective(job, space)
    counter = _TrialCounter()
    heartbeat = isinstance(storage, optuna.storages.RDBStorage)
    while True:
        with contextlib.suppress(QueueEmpty):
            study.optimize(objective, catch=(Exception,), callbacks=[counter], gc_after_trial=True)
        if not _should_wait(study, heartbeat):
            return counter.n
        time.sleep(job.spec.storage.poll_interval)
        optuna.storages.fail_stale_trials(study)


class _TrialCounter:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.n += 1


def _should_wait(study: optuna.Study, heartbeat: bool) -> bool:
    """Whether trials are still waiting, or running under a heartbeat (they finish or go stale and are retried).

    Without a heartbeat (journal storage) a dead worker's RUNNING trial would never end, so workers stop waiting.
    """
    if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return True
    return heartbeat and bool(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def _spawned_worker(job: WorkerJob) -> None:
    run_worker(job)


def run_workers(jobs: list[WorkerJob]) -> list[int]:
    """Run one job in this process, or each in its own ``spawn`` process; returns the exit codes."""
    if len(jobs) == 1:
        run_worker(jobs[0])
        return [0]
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_spawned_worker, args=(job,), name=f"tune-worker-{job.worker_index}") for job in jobs
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        raise
    return [int(process.exitcode or 0) for process in processes]


# ---------------------------------------------------------------------------------------------------------------------
# Study summary
# ---------------------------------------------------------------------------------------------------------------------


def stale_trial_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of the trials that were failed as stale (dead worker) and re-enqueued as a retry."""
    return {n for t in trials for n in _RETRY_CALLBACK.retry_history(t)}


def budget_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The finished trials that count toward the budget (every finished trial except stale-and-retried ones)."""
    stale = stale_trial_numbers(trials)
    return [t for t in trials if t.state in FINISHED_STATES and t.number not in stale]


def best_trial(study: optuna.Study, spec: StudySpec) -> FrozenTrial | None:
    """The best complete trial; for several objectives, the Pareto-optimal trial best on the first objective."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    if not spec.multi_objective:
        return study.best_trial
    sign = 1.0 if spec.objectives[0].direction == "maximize" else -1.0
    return max(study.best_trials, key=lambda t: sign * t.values[0])


def trials_frame(study: optuna.Study) -> Any:
    """One row per trial: number, value(s), state, params, user attrs (worker, run_dir, fail_reason), retry link."""
    attrs = ("number", "value", "state", "params", "user_attrs", "datetime_start", "datetime_complete", "duration")
    frame = study.trials_dataframe(attrs=attrs)
    trials = study.get_trials(deepcopy=False)
    stale = stale_trial_numbers(trials)
    frame["retry_of"] = [_RETRY_CALLBACK.retried_trial_number(t) for t in trials]
    frame["stale_worker_died"] = [t.number in stale for t in trials]
    return frame


def write_figures(study: optuna.Study, spec: StudySpec, space: dict[str, ParamSpec], out_dir: Path) -> dict[str, str]:
    """Optuna's matplotlib figures into ``out_dir``; returns figure name -> file, or the reason it was skipped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    names = [param_name(k) for k, p in space.items() if p.type != "categorical"]
    pid = [n for n in ("kp", "ki", "kd") if n in names] or names[:3]
    target = (lambda t: t.values[0]) if spec.multi_objective else None
    label = spec.objectives[0].metric
    plots: dict[str, Callable[[], Any]] = {
        "optimization_history": lambda: ovm.plot_optimization_history(study, target=target, target_name=label),
        "param_importances": lambda: ovm.plot_param_importances(study, target=target, target_name=label),
        "slice": lambda: ovm.plot_slice(study, params=pid, target=target, target_name=label),
        "contour": lambda: ovm.plot_contour(study, params=pid, target=target, target_name=label),
    }
    if spec.multi_objective:
        plots["pareto_front"] = lambda: ovm.plot_pareto_front(study, target_names=[o.metric for o in spec.objectives])
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    result: dict[str, str] = {}
    for name, plot in plots.items():
        reason = _figure_unavailable(name, complete, len(pid))
        if reason:
            result[name] = f"skipped: {reason}"
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = plot()
            figure = _tidy_figure(axes)
            path = out_dir / f"{name}.png"
            with atomic_path(path) as tmp:
                figure.savefig(tmp, dpi=120, bbox_inches="tight")
            plt.close(figure)
            result[name] = str(path)
        except Exception as exc:  # a figure must never lose the study's results
            result[name] = f"skipped: {type(exc).__name__}: {exc}"
    return result


def _figure_unavailable(name: str, n_complete: int, n_pid: int) -> str | None:
    if n_complete == 0:
        return "no complete trial"
    if name == "param_importances" and n_complete < 2:
        return "parameter importances need at least 2 complete trials"
    if name == "contour" and n_pid < 2:
        return "a contour plot needs at least 2 numeric parameters"
    return None


def _tidy_figure(axes: Any) -> Any:
    """The figure of Optuna's axes, big enough for its panels, without the overlapping minor labels of log axes."""
    import numpy as np
    from matplotlib.ticker import NullFormatter

    panels = list(np.ravel(axes)) if isinstance(axes, np.ndarray) else [axes]
    for ax in panels:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                axis.set_minor_formatter(NullFormatter())
    figure = panels[0].figure
    width, height = figure.get_size_inches()
    shape = np.shape(axes) if isinstance(axes, np.ndarray) else ()
    rows, columns = (shape[0] if len(shape) == 2 else 1), (shape[-1] if shape else 1)
    figure.set_size_inches(max(width, 4 * columns, 6), max(height, 3.3 * rows, 4.5))
    return figure


def study_summary(
    study: optuna.Study, spec: StudySpec, storage_url: str, wall_time_s: float, workers: int
) -> dict[str, Any]:
    """The study in numbers: budget, states, best trial, failures (with reasons), wall time."""
    trials = study.get_trials(deepcopy=False)
    counted = budget_trials(trials)
    states = {s.name.lower(): sum(t.state == s for t in counted) for s in FINISHED_STATES}
    best = best_trial(study, spec)
    return {
        "study": study.study_name,
        "storage": _redact(storage_url),
        "budget": study.user_attrs.get(BUDGET_ATTR),
        "finished": len(counted),
        "states": states,
        "stale_retried": sorted(stale_trial_numbers(trials)),
        "unfinished": sum(t.state in (TrialState.WAITING, TrialState.RUNNING) for t in trials),
        "objectives": [o.model_dump() for o in spec.objectives],
        "best_trial": None if best is None else best.number,
        "best_values": None if best is None else best.values,
        "best_params": None if best is None else best.params,
        "failures": {
            t.number: t.user_attrs.get("fail_reason", "unknown") for t in counted if t.state == TrialState.FAIL
        },
        "workers": workers,
        "wall_time_s": round(wall_time_s, 1),
    }


def format_summary(summary: dict[str, Any], out_dir: Path) -> str:
    """The terminal summary of a study."""
    s = summary["states"]
    lines = [
        f"study {summary['study']} ({summary['storage']}): {summary['finished']}/{summary['budget']} trials in "
        f"{summary['wall_time_s']:.0f} s with {summary['workers']} worker(s) - {s['complete']} complete, "
        f"{s['pruned']} pruned, {s['fail']} failed",
    ]
    if summary["stale_retried"]:
        lines.append(f"  retried after their worker died: trials {summary['stale_retried']}")
    if summary["unfinished"]:
        lines.append(f"  {summary['unfinished']} trial(s) still waiting or running (rerun the command to finish them)")
    for number, reason in list(summary["failures"].items())[:5]:
        lines.append(f"  trial {number} failed: {reason}")
    if summary["best_trial"] is None:
        lines.append("no trial completed: no best config")
    else:
        metrics = ", ".join(
            f"{o['metric']} = {v:.4f} ({o['direction']})" for o, v in zip(summary["objectives"], summary["best_values"])
        )
        lines.append(f"best trial #{summary['best_trial']}: {metrics}")
        lines.extend(
            f"  {k} = {v:.6g}" if isinstance(v, float) else f"  {k} = {v}" for k, v in summary["best_params"].items()
        )
    lines.append(f"results in {out_dir} (best.yaml, trials.csv, figures/, summary.json)")
    lines.append(f"dashboard: optuna-dashboard {summary['storage']}")
    return "\n".join(lines)


def write_results(
    study: optuna.Study,
    spec: StudySpec,
    space: dict[str, ParamSpec],
    out_dir: Path,
    summary: dict[str, Any],
    overrides: Sequence[str] = (),
    figures: bool = True,
) -> None:
    """``trials.csv``, ``best.yaml`` (full experiment config with the best params), ``figures/``, ``summary.json``."""
    with atomic_path(out_dir / "trials.csv") as tmp:
        trials_frame(study).to_csv(tmp, index=False)
    best = best_trial(study, spec)
    if best is not None and spec.experiment is not None:
        params = {key: best.params[param_name(key)] for key in space if param_name(key) in best.params}
        from benchmarks.config import dump_config

        cfg = apply_params(base_config(spec, overrides), params)
        dump_config(cfg, out_dir / "best.yaml")
    if figures:
        summary["figures"] = write_figures(study, spec, space, out_dir / "figures")
    atomic_write_json(out_dir / "summary.json", summary)


# ---------------------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------------------


def tune(
    spec: StudySpec,
    n_trials: int,
    out_dir: str | os.PathLike[str],
    storage_url: str | None = None,
    study_name: str | None = None,
    workers: int = 1,
    sampler: str | None = None,
    seed: int | None = None,
    overrides: Sequence[str] = (),
    figures: bool = True,
) -> dict[str, Any]:
    """Create (or join) the study, run ``workers`` local workers until its budget is finished, write the results.

    Returns the summary (also in ``<out>/summary.json``). Running the same call on other machines against the same
    PostgreSQL URL adds workers to the study; the budget is the one given by the process that created it.
    """
    if n_trials < 1:
        raise ConfigError(f"--n-trials {n_trials}: expected at least 1")
    if workers < 1:
        raise ConfigError(f"--workers {workers}: expected at least 1")
    start = time.monotonic()
    validate_study(spec, overrides)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    url = storage_url or default_storage_url(out_dir)
    name = study_name or spec.name
    job = WorkerJob(
        spec=spec,
        study_name=name,
        storage_url=url,
        out_dir=out_dir,
        sampler=sampler,
        seed=seed,
        overrides=list(overrides),
    )
    space = job_search_space(job)
    storage = open_storage(url, spec.storage)
    sampler_obj = build_sampler(spec, space, sampler, worker_seed(job))
    tickets = trial_tickets(spec, space, n_trials, sampler, worker_seed(job))
    study, created = create_or_join_study(spec, storage, name, tickets, sampler_obj)
    if not created:
        print(
            f"lss-bench tune: joined the existing study {name!r} (budget {study.user_attrs[BUDGET_ATTR]} trials, "
            f"set by the process that created it; --n-trials {n_trials} is not used)",
            file=sys.stderr,
        )
    offset = 0 if created else 1000 + zlib.crc32(f"{socket.gethostname()}:{os.getpid()}".encode()) % 100_000
    threads = max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None
    jobs = [job.model_copy(update={"worker_index": offset + i, "threads": threads}) for i in range(workers)]
    exit_codes = run_workers(jobs)
    for index, code in enumerate(exit_codes):
        if code:
            print(f"lss-bench tune: worker {index} exited with code {code}", file=sys.stderr)
    summary = study_summary(study, spec, url, time.monotonic() - start, workers)
    write_results(study, spec, space, out_dir, summary, overrides, figures)
    return summary
