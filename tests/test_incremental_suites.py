"""Suite folders grow by runs; leaderboards check that runs are comparable, pool folders, export json and LaTeX.

Training is faked (like tests/test_suite.py): a runner that writes a synthetic run directory, so every test takes
seconds. The suite machinery around it (planning, reuse, config.yaml, provenance, ranking) is the real one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from synthetic_runs import write_run, write_suite

import benchmarks.suite as suite_module
from benchmarks.cli import main
from benchmarks.leaderboard import build_leaderboard, to_markdown
from benchmarks.leaderboard_formats import SCHEMA_VERSION, to_json, to_latex
from benchmarks.suite import load_suite, run_suite, select_losses
from lss_vlm.errors import ConfigError, DataError

QUALITY = {"dice": 0.70, "tversky": 0.75, "focal": 0.60}


class FakeRunner:
    """Stands in for run_experiment: writes a synthetic run directory and records each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, cfg, out_dir, on_epoch=None):
        self.calls.append((cfg.loss.name, cfg.train.seed))
        write_run(Path(out_dir), QUALITY[cfg.loss.name], cfg.train.seed)
        return json.loads((Path(out_dir) / "metrics.json").read_text())


@pytest.fixture()
def fake_cli(monkeypatch):
    """`lss-bench compare` with the fake runner (and no dataset preparation)."""
    runner = FakeRunner()
    monkeypatch.setattr(suite_module, "_default_runner", lambda: runner)
    monkeypatch.setattr(suite_module, "prepare_data", lambda plans, progress: [])
    return runner


def suite_yaml(tmp_path: Path, **changes) -> Path:
    suite = {"name": "t", "losses": ["dice"], "seeds": 2, "baseline": "dice", "set": ["train.epochs=2"], **changes}
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def file_times(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def compare(*args: str) -> int:
    return main(["compare", *args, "--no-progress"])


# ------------------------------------------------------------------------------------------------- incremental suites
def test_compare_losses_trains_only_the_new_runs_and_ranks_all(tmp_path, fake_cli, capsys):
    out = tmp_path / "out"
    assert compare(str(suite_yaml(tmp_path)), "--out", str(out)) == 0
    assert fake_cli.calls == [("dice", 0), ("dice", 1)]
    before = file_times(out / "runs" / "dice")
    fake_cli.calls.clear()
    assert compare(str(suite_yaml(tmp_path)), "--out", str(out), "--losses", "tversky,focal") == 0
    assert fake_cli.calls == [("tversky", 0), ("focal", 0), ("tversky", 1), ("focal", 1)]
    assert file_times(out / "runs" / "dice") == before  # the old runs were not touched
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["dice", "focal", "tversky"]
    table = pd.read_csv(out / "leaderboard.csv")
    assert list(table["loss"]) == ["tversky", "dice", "focal"] and table["n_seeds"].tolist() == [2, 2, 2]
    record = yaml.safe_load((out / "suite.yaml").read_text())
    assert [e["label"] for e in record["losses"]] == ["tversky", "focal", "dice"] and record["baseline"] == "dice"
    fake_cli.calls.clear()
    assert compare(str(suite_yaml(tmp_path)), "--out", str(out), "--seeds", "3") == 0  # the suite's loss, a new seed
    assert fake_cli.calls == [("dice", 2)]


def test_losses_resolve_suite_labels_with_their_params(tmp_path):
    path = suite_yaml(tmp_path, losses=["dice", {"name": "tversky", "params": {"beta": 0.7}, "label": "tv07"}])
    chosen = select_losses(load_suite(path), ["tv07", "focal"])
    assert [(e.name, e.label, e.params) for e in chosen.losses] == [
        ("tversky", "tv07", {"beta": 0.7}),
        ("focal", "focal", {}),
    ]
    with pytest.raises(ConfigError, match="no_such_loss"):
        suite_module.plan_runs(select_losses(load_suite(path), ["no_such_loss"]))


def test_ranking_and_columns_changes_never_retrain(tmp_path):
    out = tmp_path / "out"
    run_suite(load_suite(suite_yaml(tmp_path, losses=["dice", "tversky"])), out, runner=FakeRunner())
    before = file_times(out / "runs")
    changed = suite_yaml(
        tmp_path,
        losses=["dice", "tversky"],
        rank_by="hd95_macro",
        baseline="tversky",
        columns=["dice_macro", "accuracy"],
        description="now ranked by HD95",
    )
    again = FakeRunner()
    run_suite(load_suite(changed), out, runner=again)
    assert again.calls == [] and file_times(out / "runs") == before
    board = build_leaderboard(out)
    assert (board.rank_by, board.baseline) == ("hd95_macro", "tversky")
    assert board.metrics == ["hd95_macro", "dice_macro", "accuracy"]


def test_changed_resolved_config_is_refused_then_retrained_on_request(tmp_path, fake_cli, capsys):
    out = tmp_path / "out"
    assert compare(str(suite_yaml(tmp_path)), "--out", str(out)) == 0
    fake_cli.calls.clear()
    before = file_times(out / "runs")
    longer = suite_yaml(tmp_path, set=["train.epochs=3"])
    capsys.readouterr()
    assert compare(str(longer), "--out", str(out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dice seed0 (train.epochs)" in err[0] and "--retrain-changed" in err[0]
    assert fake_cli.calls == [] and file_times(out / "runs") == before
    assert compare(str(longer), "--out", str(out), "--retrain-changed") == 0
    assert fake_cli.calls == [("dice", 0), ("dice", 1)]
    stored = yaml.safe_load((out / "runs/dice/seed0/config.yaml").read_text())
    assert stored["train"]["epochs"] == 3


def test_compare_help_names_the_retrain_flag(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = capsys.readouterr().out
    assert "--retrain-changed" in text and "--losses" in text and "--mismatch" in text


# ------------------------------------------------------------------------------------------------------ comparability
@pytest.fixture()
def finished(tmp_path) -> Path:
    """A finished 2-loss x 2-seed suite folder made through the suite machinery (config.yaml, provenance.json)."""
    out = tmp_path / "finished"
    run_suite(load_suite(suite_yaml(tmp_path, losses=["dice", "tversky"])), out, runner=FakeRunner())
    return out


def edit_yaml(path: Path, section: str, key: str, value) -> None:
    data = yaml.safe_load(path.read_text())
    data[section][key] = value
    path.write_text(yaml.safe_dump(data))


def test_incomparable_run_is_refused_by_default_and_flagged_on_request(finished, capsys):
    capsys.readouterr()
    edit_yaml(finished / "runs/tversky/seed0/config.yaml", "train", "epochs", 99)
    with pytest.raises(ConfigError, match=r"tversky seed0 \(train\.epochs 99 vs 2\)"):
        build_leaderboard(finished)
    assert main(["leaderboard", str(finished), "--format", "md"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--mismatch flag" in err[0]
    board = build_leaderboard(finished, mismatch="flag")
    assert set(board.mismatches) == {"tversky seed0"}
    assert "INCOMPARABLE run tversky seed0: train.epochs 99 vs 2" in to_markdown(board)
    assert main(["leaderboard", str(finished), "--format", "md", "--mismatch", "flag"]) == 0
    assert "INCOMPARABLE run tversky seed0" in (finished / "leaderboard.md").read_text()


def test_other_package_versions_are_incomparable(finished):
    path = finished / "runs/dice/seed1/provenance.json"
    provenance = json.loads(path.read_text())
    provenance["packages"]["torch"] = "0.0.1"
    path.write_text(json.dumps(provenance))
    with pytest.raises(ConfigError, match=r"dice seed1 \(packages\.torch 0\.0\.1 vs"):
        build_leaderboard(finished)
    assert build_leaderboard(finished, mismatch="flag").mismatches["dice seed1"]["packages.torch"][0] == "0.0.1"


# ------------------------------------------------------------------------------------------------------------ exports
def test_json_rows_carry_config_versions_and_per_seed_values(finished):
    board = build_leaderboard(finished)
    data = json.loads(json.dumps(to_json(board, ["a note"]), allow_nan=False))
    assert data["schema_version"] == SCHEMA_VERSION
    assert {"created", "lss_vlm_version", "title", "suites", "rank_by", "baseline", "test", "confidence", "metrics",
            "shared_config", "rows", "notes"} <= set(data)  # fmt: skip
    assert data["metrics"]["hd95_macro"]["higher_is_better"] is False and data["notes"] == ["a note"]
    assert data["shared_config"]["train"]["epochs"] == 2 and "seed" not in data["shared_config"]["train"]
    row = next(r for r in data["rows"] if r["loss"] == "tversky")
    assert {"rank", "loss", "kind", "n_seeds", "n_failed", "config", "versions", "metrics", "runs"} <= set(row)
    assert row["config"]["loss"]["name"] == "tversky" and row["config"]["loss"]["params"]["alpha"] == 0.5
    assert row["versions"]["torch"]
    dice = row["metrics"]["dice_macro"]
    stored = {
        s: json.loads((finished / f"runs/tversky/seed{s}/metrics.json").read_text())["dice_macro"] for s in (0, 1)
    }
    assert dice["per_seed"] == {"0": stored[0], "1": stored[1]}
    assert dice["mean"] == pytest.approx(sum(stored.values()) / 2)
    assert [r["seed"] for r in row["runs"]] == [0, 1] and row["runs"][0]["incomparable"] == {}


def test_latex_is_booktabs_with_the_best_value_per_column_in_bold(tmp_path):
    suite = write_suite(tmp_path / "s", {"dice": 0.70, "pid_tversky": 0.80, "focal": 0.60}, seeds=2)
    board = build_leaderboard(suite, metrics=["dice_macro", "hd95_macro"])
    text = to_latex(board)
    for command in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}"):
        assert command in text
    assert r"Dice (macro) $\uparrow$" in text and r"HD95 mm $\downarrow$" in text
    rows = {line.split(" & ")[1]: line for line in text.splitlines() if line.count(" & ") > 3 and "Loss" not in line}
    # pid_tversky has the highest Dice and the lowest HD95: both bold; the others bold nowhere
    assert rows["pid\\_tversky"].count(r"\textbf{") == 2
    assert r"\textbf{" not in rows["focal"] and r"\textbf{" not in rows["dice"]
    assert re.search(r"\\textbf\{[0-9.]+\} \$\\pm\$ [0-9.]+", rows["pid\\_tversky"])


def test_leaderboard_out_writes_elsewhere_and_leaves_the_suite_folder_alone(tmp_path, capsys):
    suite = write_suite(tmp_path / "s", {"dice": 0.70, "tversky": 0.75}, seeds=2)
    before = file_times(suite)
    out = tmp_path / "by_thecal_sac"
    assert main(["leaderboard", str(suite), "--metric", "dice/thecal_sac", "--out", str(out), "--no-figures"]) == 0
    assert file_times(suite) == before
    assert {p.name for p in out.iterdir()} == {f"leaderboard.{x}" for x in ("csv", "md", "html", "json", "tex")}
    assert json.loads((out / "leaderboard.json").read_text())["rank_by"] == "dice/thecal_sac"
    assert not list(out.glob(".*tmp*"))


def test_pooled_leaderboard_of_two_folders(tmp_path, capsys):
    first = write_suite(tmp_path / "a", {"dice": 0.70, "tversky": 0.75}, seeds=2)
    second = tmp_path / "b"
    for loss, quality in {"dice": 0.70, "tversky": 0.75}.items():
        for seed in (2, 3):
            write_run(second / "runs" / loss / f"seed{seed}", quality, seed)
    out = tmp_path / "pooled"
    assert main(["leaderboard", str(first), str(second), "--out", str(out), "--format", "json"]) == 0
    data = json.loads((out / "leaderboard.json").read_text())
    assert [r["n_seeds"] for r in data["rows"]] == [4, 4] and len(data["suites"]) == 2
    assert sorted(data["rows"][0]["metrics"]["dice_macro"]["per_seed"]) == ["0", "1", "2", "3"]
    assert main(["leaderboard", str(first), str(second)]) == 2
    assert "--out: required" in capsys.readouterr().err
    with pytest.raises(DataError, match="dice seed0 is in both"):
        build_leaderboard([first, first])


@pytest.mark.parametrize("name", ["quick", "standard", "minority", "ood", "reports"])
def test_a_stored_config_reads_back_equal_to_its_plan(tmp_path, name):
    """Reuse rests on this: config.yaml as the suite writes it resolves to the planned config again (no key differs)."""
    from benchmarks.config import dump_config
    from benchmarks.run_records import config_differences, read_run_config

    for plan in suite_module.plan_runs(load_suite(name), seeds=[0]):
        folder = tmp_path / plan.label
        dump_config(plan.config, folder / "config.yaml")
        assert config_differences(read_run_config(folder), plan.config.model_dump(mode="json")) == []
    changed = plan.config.model_copy(update={"train": plan.config.train.model_copy(update={"epochs": 7})})
    assert config_differences(read_run_config(folder), changed.model_dump(mode="json")) == ["train.epochs"]


@pytest.mark.slow  # two real runs: about 5 min on 2 shared cores
def test_real_tiny_suite_grows_by_one_loss(tmp_path, tiny_phantom, capsys):
    """The real engine (1 epoch, tiny model): the second loss is trained, the first run is reused untouched, and the
    runs (real config.yaml + provenance.json with the data hash) are comparable."""
    tiny = ["model.preset=spca_tiny", "data.batch_size=4", "data.spatial_size=64", "eval.text_metrics=false"]
    path = suite_yaml(tmp_path, seeds=1, set=[*tiny, "train.epochs=1", f"data.manifest={tiny_phantom}"])
    out = tmp_path / "out"
    assert compare(str(path), "--out", str(out)) == 0
    before = file_times(out / "runs/dice")
    assert compare(str(path), "--out", str(out), "--losses", "tversky") == 0
    assert file_times(out / "runs/dice") == before
    assert "dice seed0: already completed" not in capsys.readouterr().err  # dice was not even planned
    board = build_leaderboard(out)
    assert sorted(board.table["loss"]) == ["dice", "tversky"] and board.mismatches == {}
    assert all(r.provenance().get("data_manifest_hash") for r in board.runs)
