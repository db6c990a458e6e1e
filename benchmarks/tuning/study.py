"""Creating or joining a study with its exact budget (enqueued tickets), its sampler and pruner, and the queries on its
trials (which count toward the budget, which were retried, which is best)."""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lss_vlm.errors import ConfigError

from .spec import SAMPLERS, ParamSpec, StudySpec, param_name
from .storage import RETRY_CALLBACK

BUDGET_ATTR = "lss_vlm:n_trials"
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


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


def stale_trial_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of the trials that were failed as stale (dead worker) and re-enqueued as a retry."""
    return {n for t in trials for n in RETRY_CALLBACK.retry_history(t)}


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
