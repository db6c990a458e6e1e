"""lss-bench tune: study YAML, storages, exact budgets across worker processes, dead workers, reproducibility."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState
from tuning_helpers import (
    assert_exact_budget,
    load_trials,
    run_tune,
    summary_of,
    tune_command,
    tune_env,
    write_synthetic_study,
)

from benchmarks.tuning import (
    QueueEmpty,
    create_or_join_study,
    load_study_spec,
    open_storage,
    resolve_search_space,
    stale_trial_numbers,
    tune,
)
from lss_vlm.errors import ConfigError


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- study YAML ------------------------------------------------------------------------------------------------------


def test_study_yaml_resolves_experiment_and_search_space(tmp_path: Path) -> None:
    study = _write(
        tmp_path / "pid.yaml",
        "experiment: ../experiments/pid.yaml\n"
        "objective: {metric: val/dice_macro}\n"
        "search_space:\n"
        "  params:\n"
        "    loss.params.kp: {type: float, low: 0.0, high: 2.0}\n"
        "    loss.params.gamma: {type: categorical, choices: [1.0, 1.33]}\n"
        "    train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n",
    )
    spec = load_study_spec(study)
    assert spec.experiment == (tmp_path.parent / "experiments" / "pid.yaml").resolve()
    assert spec.name == "pid" and spec.objectives[0].metric == "val/dice_macro" and not spec.multi_objective
    space = resolve_search_space(spec, loss_name=None)
    assert list(space) == ["loss.params.kp", "loss.params.gamma", "train.lr"]
    assert space["train.lr"].log and space["loss.params.gamma"].choices == [1.0, 1.33]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("runner: {name: synthetic}\nsearch_space: {params: {kp: {type: float, low: 2, high: 1}}}\n", "low=2.0"),
        ("runner: {name: synthetic}\nsearch_space: {params: {kp: {type: float, low: 0, high: 1, log: true}}}\n", "log"),
        ("runner: {name: synthetic}\nsearch_space: {params: {kp: {type: normal}}}\n", "search_space.params.kp.type"),
        ("runner: {name: synthetic}\nsampler: {name: anneal}\n", "sampler.name"),
        ("runner: {name: synthetic}\nsearch_spaces: {}\n", "search_spaces"),
        ("objective: {metric: dice}\n", "'experiment'"),
        ("objective: {metric: a}\nobjectives: [{metric: b}]\n", "either 'objective' or 'objectives'"),
        ("- just a list\n", "expected a mapping"),
    ],
)
def test_bad_study_yaml_is_one_clear_config_error(tmp_path: Path, text: str, expected: str) -> None:
    study = _write(tmp_path / "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_study_spec(study)
    message = str(info.value)
    assert str(study) in message and expected in message and "\n" not in message


def test_empty_search_space_is_rejected(tmp_path: Path) -> None:
    spec = load_study_spec(_write(tmp_path / "s.yaml", "runner: {name: synthetic}\n"))
    with pytest.raises(ConfigError, match="no parameter to search"):
        resolve_search_space(spec, loss_name=None)


def test_cli_reports_bad_arguments_in_one_line(tmp_path: Path) -> None:
    study = write_synthetic_study(tmp_path)
    result = run_tune(study, "--n-trials", "0", "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stderr.strip() == "lss-bench tune: error: --n-trials 0: expected at least 1"
    result = run_tune(study, "--n-trials", "2", "--storage", "mysql-ish", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "--storage 'mysql-ish'" in result.stderr


# --- storages and the trial queue ------------------------------------------------------------------------------------


def test_queue_only_storage_never_creates_a_trial_beyond_the_budget(tmp_path: Path) -> None:
    spec = load_study_spec(write_synthetic_study(tmp_path))
    storage = open_storage(f"sqlite:///{tmp_path / 'q.db'}", spec.storage)
    study, created = create_or_join_study(spec, storage, "q", [{}, {}], optuna.samplers.RandomSampler(seed=0))
    assert created
    for _ in range(2):
        study.tell(study.ask(), 1.0)
    with pytest.raises(QueueEmpty):
        study.ask()
    assert len(study.trials) == 2
    joined, created = create_or_join_study(spec, storage, "q", [{}] * 5, optuna.samplers.RandomSampler(seed=0))
    assert not created and len(joined.trials) == 2  # joining never adds to the budget


def test_journal_storage_runs_the_exact_budget(tmp_path: Path) -> None:
    spec = load_study_spec(write_synthetic_study(tmp_path, fail_every=2))
    out = tmp_path / "out"
    journal = tmp_path / "journal" / "study.log"
    summary = tune(spec, n_trials=4, out_dir=out, storage_url=f"journal:{journal}", figures=False)
    assert journal.is_file() and not (out / "study.db").exists()
    trials = optuna.load_study(study_name="synthetic", storage=open_storage(f"journal:{journal}")).trials
    assert_exact_budget(trials, 4, fail_every=2)
    assert summary["states"] == {"complete": 2, "pruned": 0, "fail": 2}


def test_sqlite_default_storage_outputs_and_reproducible_suggestions(tmp_path: Path) -> None:
    spec = load_study_spec(write_synthetic_study(tmp_path))
    first = tune(spec, n_trials=6, out_dir=tmp_path / "a", seed=3)
    again = tune(spec, n_trials=6, out_dir=tmp_path / "b", seed=3, figures=False)
    other = tune(spec, n_trials=6, out_dir=tmp_path / "c", seed=4, figures=False)
    params = {}
    for name in ("a", "b", "c"):
        trials = load_trials(f"sqlite:///{tmp_path / name / 'study.db'}")
        params[name] = [t.params for t in sorted(trials, key=lambda t: t.number)]
    assert params["a"] == params["b"]  # same seed, one worker: the same sequence (TPE after 3 random trials)
    assert params["a"] != params["c"]
    assert first["best_params"] == again["best_params"] and other["finished"] == 6
    frame = pd.read_csv(tmp_path / "a" / "trials.csv")
    assert list(frame["number"]) == list(range(6)) and set(frame["state"]) == {"COMPLETE"}
    assert {"params_kp", "params_ki", "params_kd", "user_attrs_worker"} <= set(frame.columns)
    figures = {p.name for p in (tmp_path / "a" / "figures").glob("*.png")}
    assert figures == {"optimization_history.png", "param_importances.png", "slice.png", "contour.png"}
    assert not (tmp_path / "a" / "best.yaml").exists()  # the synthetic runner has no experiment config


def test_param_importances_skipped_with_one_complete_trial(tmp_path: Path) -> None:
    spec = load_study_spec(write_synthetic_study(tmp_path))
    summary = tune(spec, n_trials=1, out_dir=tmp_path / "out")
    assert summary["figures"]["param_importances"].startswith("skipped: ")
    assert Path(summary["figures"]["optimization_history"]).is_file()


def test_grid_sampler_runs_the_grid_once(tmp_path: Path) -> None:
    study = write_synthetic_study(
        tmp_path,
        search_space={
            "params": {
                "loss.params.kp": {"type": "float", "low": 0.0, "high": 1.0, "grid": [0.0, 0.5, 1.0]},
                "loss.params.kd": {"type": "categorical", "choices": [0.0, 0.1]},
            }
        },
    )
    summary = tune(load_study_spec(study), n_trials=50, out_dir=tmp_path / "out", sampler="grid", figures=False)
    trials = load_trials(f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    assert summary["budget"] == 6 and len(trials) == 6
    assert {(t.params["kp"], t.params["kd"]) for t in trials} == {(a, b) for a in (0.0, 0.5, 1.0) for b in (0.0, 0.1)}


def test_multi_objective_uses_nsga2_without_pruning(tmp_path: Path) -> None:
    study = write_synthetic_study(
        tmp_path,
        pruner={"name": "median", "options": {"n_startup_trials": 0}},
        objectives=[{"metric": "val/dice_macro"}, {"metric": "val/accuracy", "direction": "minimize"}],
    )
    spec = load_study_spec(study)
    summary = tune(spec, n_trials=4, out_dir=tmp_path / "out")
    loaded = optuna.load_study(study_name="synthetic", storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    assert [d.name for d in loaded.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert summary["finished"] == 4 and summary["states"]["pruned"] == 0 and len(summary["best_values"]) == 2
    assert Path(summary["figures"]["pareto_front"]).is_file()


# --- worker processes ------------------------------------------------------------------------------------------------


def test_sqlite_two_worker_processes_share_an_exact_budget(tmp_path: Path) -> None:
    study = write_synthetic_study(tmp_path, epochs=2, sleep_s=0.3, fail_every=3)
    out = tmp_path / "out"
    result = run_tune(study, "--n-trials", "8", "--workers", "2", "--out", str(out), "--no-figures")
    assert result.returncode == 0, result.stderr[-2000:]
    trials = load_trials(f"sqlite:///{out / 'study.db'}")
    assert_exact_budget(trials, 8, fail_every=3)
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2 and str(os.getpid()) not in str(workers)
    assert summary_of(out)["finished"] == 8 and "8/8 trials" in result.stdout


@pytest.mark.slow  # ~20-30 s on 2 cores: the default run stays under 10 min
def test_killed_worker_trial_is_failed_retried_and_budget_reached(tmp_path: Path) -> None:
    # 8 epochs of 0.5 s: 3.5 s of work left after the first report, so the kill lands mid-trial even when a loaded
    # machine delays the poll (with 1.5 s left, a trial finished before SIGKILL arrived at load ~9)
    study = write_synthetic_study(tmp_path, epochs=8, sleep_s=0.5)
    out = tmp_path / "out"
    storage = f"sqlite:///{out / 'study.db'}"
    process = subprocess.Popen(
        tune_command(study, "--n-trials", "5", "--workers", "2", "--out", str(out), "--no-figures"),
        env=tune_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        victim = _first_trial_mid_run(storage, process)
        os.kill(int(victim.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=240)
    finally:
        process.kill()
    assert process.returncode == 0, stderr[-2000:]
    trials = {t.number: t for t in load_trials(storage)}
    assert trials[victim.number].state == TrialState.FAIL
    assert stale_trial_numbers(list(trials.values())) == {victim.number}
    retry = [t for t in trials.values() if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE and retry[0].params == victim.params
    finished = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    assert len(finished) == 5 and len(trials) == 6
    assert summary_of(out)["stale_retried"] == [victim.number] and "exited with code -9" in stderr


def _first_trial_mid_run(storage: str, process: subprocess.Popen) -> optuna.trial.FrozenTrial:
    """Poll until a trial has reported its first epoch and is still running (the rest of its epochs left)."""
    for _ in range(600):
        assert process.poll() is None, process.communicate()[1][-2000:]
        try:
            running = [t for t in load_trials(storage) if t.state == TrialState.RUNNING and t.intermediate_values]
        except Exception:  # the database or the study does not exist yet
            running = []
        if running:
            return running[0]
        time.sleep(0.1)
    raise AssertionError("no trial reached its first epoch in 60 s")


def test_two_commands_on_one_storage_share_the_study(tmp_path: Path) -> None:
    """The multi-machine recipe on one machine: a second command joins the first one's study and budget."""
    # 2 s a trial (12 s for the budget): long enough that the second command, whose start-up takes a few seconds
    # (longer on a loaded machine; 0.6 s a trial lost that race under load), joins while trials remain.
    study = write_synthetic_study(tmp_path, epochs=2, sleep_s=1.0)
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    args = ("--n-trials", "6", "--storage", storage, "--study", "shared", "--no-figures")
    first = subprocess.Popen(
        tune_command(study, *args, "--out", str(tmp_path / "a")), env=tune_env(), stdout=subprocess.PIPE, text=True
    )
    try:
        for _ in range(600):
            if (tmp_path / "shared.db").exists() and _has_trials(storage):
                break
            time.sleep(0.1)
        second = run_tune(study, *args, "--n-trials", "99", "--out", str(tmp_path / "b"))
        first.communicate(timeout=240)
    finally:
        first.kill()
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-2000:]
    trials = load_trials(storage, "shared")
    assert sorted(t.number for t in trials) == list(range(6))  # the creator's budget, not the joiner's 99
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    assert yaml.safe_load((tmp_path / "b" / "summary.json").read_text())["budget"] == 6


def _has_trials(storage: str) -> bool:
    try:
        return bool(load_trials(storage, "shared"))
    except Exception:  # the database or the study does not exist yet
        return False
