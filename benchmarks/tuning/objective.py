"""The Optuna objective of a trial: suggest the parameters, run the trial (a training run or the synthetic stand-in),
report each epoch to the pruner, return the objective value(s); a failure keeps its reason."""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna

from .spec import ParamSpec, StudySpec, apply_params, base_config, param_name


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
