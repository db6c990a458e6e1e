"""Helpers shared by the tuning tests: a synthetic study YAML, the ``lss-bench tune`` subprocess, budget checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import yaml
from optuna.trial import TrialState

from benchmarks.tuning import budget_trials, with_available_driver

REPO = Path(__file__).resolve().parents[1]
PID_SPACE = {
    "loss.params.kp": {"type": "float", "low": 0.0, "high": 2.0},
    "loss.params.ki": {"type": "float", "low": 0.001, "high": 1.0, "log": True},
    "loss.params.kd": {"type": "float", "low": 0.0, "high": 0.5},
}


def write_synthetic_study(
    directory: Path, epochs: int = 2, sleep_s: float = 0.0, fail_every: int = 0, **extra: object
) -> Path:
    """A study over Kp/Ki/Kd with the fast synthetic runner, a 1 s heartbeat and a 3 s grace period."""
    study = {
        "study_name": "synthetic",
        "runner": {"name": "synthetic", "epochs": epochs, "sleep_s": sleep_s, "fail_every": fail_every},
        "objective": {"metric": "val/dice/ligamentum_flavum", "direction": "maximize"},
        "search_space": {"params": PID_SPACE},
        "sampler": {"name": "tpe", "seed": 0, "options": {"n_startup_trials": 3}},
        "pruner": {"name": "none"},
        "storage": {"heartbeat_interval": 1, "grace_period": 3, "poll_interval": 0.3},
        **extra,
    }
    if "objectives" in extra:
        del study["objective"]
    path = directory / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


def tune_command(study: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "benchmarks.cli", "tune", str(study), *args]


def tune_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_tune(study: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``lss-bench tune STUDY ARGS`` in a subprocess (workers are real processes)."""
    return subprocess.run(
        tune_command(study, *args), env=tune_env(), capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def load_trials(storage: str, study_name: str = "synthetic") -> list[optuna.trial.FrozenTrial]:
    """The study's trials, read without creating tables (safe while ``lss-bench tune`` is still creating them)."""
    rdb = optuna.storages.RDBStorage(with_available_driver(storage), skip_table_creation=True)
    return optuna.load_study(study_name=study_name, storage=rdb).get_trials(deepcopy=False)


def assert_exact_budget(trials: list[optuna.trial.FrozenTrial], n_trials: int, fail_every: int) -> None:
    """Exactly ``n_trials`` finished, numbered 0..n-1 once each, the synthetic failures recorded with their reason."""
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(n_trials)), numbers
    assert len(budget_trials(trials)) == n_trials
    assert not [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
    failed = {t.number for t in trials if t.state == TrialState.FAIL}
    assert failed == {n for n in range(n_trials) if n % fail_every == fail_every - 1}
    for trial in trials:
        if trial.state == TrialState.FAIL:
            assert "synthetic failure" in trial.user_attrs["fail_reason"]
        else:
            assert trial.state == TrialState.COMPLETE and trial.value is not None


def summary_of(out_dir: Path) -> dict:
    return json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
