"""lss-bench tune through the real ``run_experiment``: tiny phantom, tiny SPCA model (tiny-bert), one epoch a trial."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import yaml
from optuna.trial import TrialState

from benchmarks.config import load_config
from benchmarks.runner import read_status
from benchmarks.tuning import load_study_spec, tune


def _tiny_study(tmp_path: Path, manifest: Path) -> Path:
    experiment = {
        "name": "tune_tiny",
        "data": {"manifest": str(manifest), "spatial_size": 64, "batch_size": 4, "augment": False},
        "model": {"preset": "spca_tiny"},
        "loss": {"name": "dice"},
        "train": {"epochs": 1, "seed": 0, "quiet": True, "schedule": "constant"},
        "eval": {"text_metrics": False},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(experiment), encoding="utf-8")
    study = {
        "experiment": "tiny.yaml",
        "overrides": ["loss.name=pid_tversky"],
        "objective": {"metric": "val/dice_macro", "direction": "maximize"},
        "search_space": {"from_loss": True, "exclude": ["cadence", "beta", "leak", "integral_max", "gamma"]},
        "sampler": {"seed": 0},
        "pruner": {"name": "median"},
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study), encoding="utf-8")
    return path


def test_tune_trains_real_trials_and_writes_a_loadable_best_config(tmp_path: Path, tiny_phantom: Path) -> None:
    spec = load_study_spec(_tiny_study(tmp_path, tiny_phantom))
    out = tmp_path / "out"
    summary = tune(spec, n_trials=2, out_dir=out, figures=False)

    trials = optuna.load_study(study_name="study", storage=f"sqlite:///{out / 'study.db'}").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE], summary["failures"]
    assert set(trials[0].params) == {"kp", "ki", "kd"}  # from the loss's registered tunables, minus the excluded
    for trial in trials:
        run_dir = out / "trials" / str(trial.number)
        assert read_status(run_dir)["status"] == "completed"
        history = pd.read_csv(run_dir / "history.csv")
        last = history.iloc[-1]
        assert trial.intermediate_values == {int(last["epoch"]): last["val/dice_macro"]}  # reported for pruning
        assert trial.value == last["val/dice_macro"]
        run_cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert run_cfg["loss"]["name"] == "pid_tversky"
        assert {k: run_cfg["loss"]["params"][k] for k in ("kp", "ki", "kd")} == trial.params

    best = load_config(out / "best.yaml")  # a full experiment config, loadable by lss-bench train
    winner = max(trials, key=lambda t: t.value)
    assert summary["best_trial"] == winner.number
    assert {k: best.loss.params[k] for k in ("kp", "ki", "kd")} == winner.params
    assert (
        best.loss.name == "pid_tversky" and best.train.epochs == 1 and best.model.params["text_encoder"] == "tiny-bert"
    )
    assert len(pd.read_csv(out / "trials.csv")) == 2
