"""The out-of-distribution suite: `shifts` in a suite, shifted test sets cached once, per-shift tables and figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from synthetic_runs import write_suite

from benchmarks.cli import main
from benchmarks.config import DataConfig
from benchmarks.data import resolve_manifest
from benchmarks.leaderboard import build_leaderboard
from benchmarks.leaderboard_files import write_leaderboard
from benchmarks.ood import CLEAN, OOD_FOLDER, ood_table, shifted_data, shifted_manifests
from benchmarks.suite import load_suite
from lss_vlm.data.manifest import read_manifest
from lss_vlm.errors import ConfigError

SHIFT_DICE = {"t1_contrast": 0.30, "bias_field": 0.55}  # fraction of the clean Dice kept under each shift


def add_ood_scores(suite: Path) -> dict[tuple[str, int, str], float]:
    """Write ``ood/<shift>/metrics.json`` into every run: Dice = clean × SHIFT_DICE[shift]; returns the drops."""
    drops = {}
    for run in sorted((suite / "runs").glob("*/seed*")):
        clean = json.loads((run / "metrics.json").read_text())
        for shift, kept in SHIFT_DICE.items():
            folder = run / OOD_FOLDER / shift
            folder.mkdir(parents=True)
            metrics = {"dice_macro": clean["dice_macro"] * kept, "hd95_macro": clean["hd95_macro"] + 5.0}
            (folder / "metrics.json").write_text(json.dumps(metrics))
            drops[(run.parent.name, int(run.name[4:]), shift)] = clean["dice_macro"] * (1 - kept)
    return drops


def test_the_shipped_ood_suite_names_every_shift_preset() -> None:
    from lss_vlm.data.phantom import SHIFT_PRESETS

    suite = load_suite("ood")
    assert sorted(suite.shifts) == sorted(SHIFT_PRESETS)
    assert suite.seed_list() == [0, 1, 2]


@pytest.mark.parametrize(
    ("shifts", "match"),
    [("[t2_contrast]", "unknown preset.*'t2_contrast'.*valid: t1_contrast"), ("[bias_field, bias_field]", "once")],
)
def test_a_bad_shift_is_one_error_line_naming_it(tmp_path: Path, capsys, shifts: str, match: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(f"name: bad\nlosses: [dice]\nshifts: {shifts}\n")
    with pytest.raises(ConfigError, match=match):
        load_suite(path)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and "shifts" in err[0]


def test_a_prepared_manifest_cannot_be_shifted(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("case_id\n")
    with pytest.raises(ConfigError, match="data.manifest is set"):
        shifted_data(DataConfig(manifest=tmp_path / "manifest.csv"), "bias_field")


def test_shifted_test_sets_are_synthesised_once_and_keep_the_cases(tmp_path: Path) -> None:
    data = DataConfig.model_validate({"phantom": {"n_cases": 8, "size": 64, "seed": 3}, "cache_dir": tmp_path})
    first = shifted_manifests(data, ["t1_contrast"])["t1_contrast"]
    stamp = first.stat().st_mtime_ns
    again = shifted_manifests(data, ["t1_contrast"])["t1_contrast"]
    assert again == first and again.stat().st_mtime_ns == stamp  # cached, not synthesised again
    clean_manifest = resolve_manifest(data)
    clean, shifted = read_manifest(clean_manifest), read_manifest(first)
    assert list(clean["case_id"]) == list(shifted["case_id"]) and list(clean["split"]) == list(shifted["split"])
    assert json.loads((first.parent / "phantom.json").read_text())["shift"] == "t1_contrast"
    assert json.loads((clean_manifest.parent / "phantom.json").read_text())["shift"] is None


def test_ood_table_reports_dice_hd95_and_the_drop_per_shift(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"dice": 0.7, "pid_tversky": 0.8}, seeds=3)
    drops = add_ood_scores(suite)
    board = build_leaderboard(suite)
    table = ood_table(board.runs, ["pid_tversky", "dice"])
    assert list(table["shift"][:3]) == [CLEAN, "t1_contrast", "bias_field"]  # clean first, then SHIFT_PRESETS order
    assert list(dict.fromkeys(table["loss"])) == ["pid_tversky", "dice"]
    row = table[(table["loss"] == "dice") & (table["shift"] == "t1_contrast")].iloc[0]
    expected = [drops[("dice", s, "t1_contrast")] for s in range(3)]
    assert row["dice_drop_mean"] == pytest.approx(sum(expected) / 3)
    assert row["dice_drop_std"] == pytest.approx(pd.Series(expected).std())
    assert row["hd95_rise_mean"] == pytest.approx(5.0)
    assert int(row["n_seeds"]) == 3
    clean = table[(table["loss"] == "dice") & (table["shift"] == CLEAN)].iloc[0]
    assert clean["dice_drop_mean"] == pytest.approx(0.0) and math.isfinite(clean["hd95_mean"])


def test_leaderboard_writes_the_ood_tables_figure_and_html_section(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"dice": 0.7, "pid_tversky": 0.8}, seeds=2)
    add_ood_scores(suite)
    written = write_leaderboard(build_leaderboard(suite), suite)
    assert {"ood-csv", "ood-md", "ood-json"} <= set(written)
    csv = pd.read_csv(suite / "ood_shift.csv")
    assert len(csv) == 2 * 3 and {"dice_mean", "dice_drop_mean", "hd95_mean", "hd95_rise_mean"} <= set(csv.columns)
    assert "| dice | t1_contrast | 2 |" in (suite / "ood_shift.md").read_text()
    assert len(json.loads((suite / "ood_shift.json").read_text())["rows"]) == 6
    assert (suite / "figures" / "ood_shift.png").stat().st_size > 1000
    assert "Out-of-distribution shifts" in (suite / "leaderboard.html").read_text()


def test_a_suite_without_ood_scores_writes_no_ood_files(tmp_path: Path) -> None:
    suite = write_suite(tmp_path / "suite", {"dice": 0.7}, seeds=1)
    written = write_leaderboard(build_leaderboard(suite), suite, formats=("csv", "md"))
    assert not any(k.startswith("ood") for k in written) and not (suite / "ood_shift.csv").exists()


def test_suite_scoring_covers_completed_runs_once_and_goes_on_after_a_failure(tmp_path: Path, monkeypatch) -> None:
    """score_suite_shifts (called by run_suite for a suite with shifts): shifted sets prepared once per data config,
    only completed runs scored, finished shifts skipped, a run that cannot be scored reported and skipped."""
    import benchmarks.ood as ood
    from benchmarks.suite import SuiteConfig, plan_runs
    from lss_vlm.errors import DataError

    suite = SuiteConfig(name="s", losses=["dice", "tversky"], seeds=2, shifts=["t1_contrast", "bias_field"])
    plans = plan_runs(suite)
    for plan in plans:
        folder = plan.final_dir(tmp_path)
        folder.mkdir(parents=True)
        status = "failed" if plan.label == "tversky" and plan.seed == 1 else "completed"
        (folder / "status.json").write_text(json.dumps({"status": status}))
    done_before = plans[0].final_dir(tmp_path) / OOD_FOLDER / "bias_field"
    done_before.mkdir(parents=True)
    (done_before / "metrics.json").write_text(json.dumps({"dice_macro": 0.5}))
    prepared, scored = [], []
    monkeypatch.setattr(
        ood, "shifted_manifests", lambda data, shifts: prepared.append(shifts) or {s: Path(s) for s in shifts}
    )

    def fake_score(run_dir: Path, shift: str, manifest: Path) -> Path:
        if run_dir.parent.name == "tversky" and shift == "t1_contrast":
            raise DataError(f"{run_dir}: damaged weights")
        scored.append((run_dir.parent.name, run_dir.name, shift))
        (run_dir / OOD_FOLDER / shift).mkdir(parents=True)
        (run_dir / OOD_FOLDER / shift / "metrics.json").write_text(json.dumps({"dice_macro": 0.4}))
        return run_dir / OOD_FOLDER / shift

    messages: list[str] = []
    monkeypatch.setattr(ood, "score_run_on_shift", fake_score)
    assert ood.score_suite_shifts(suite.shifts, plans, tmp_path, messages.append) == 4
    assert prepared == [["t1_contrast", "bias_field"]]  # one data config: prepared once
    assert ("dice", "seed0", "bias_field") not in scored  # already scored before
    assert not any(r[0] == "tversky" and r[1] == "seed1" for r in scored)  # failed run: not scored
    assert sum("not scored" in m and "damaged weights" in m for m in messages) == 1
    assert ood.score_suite_shifts(suite.shifts, plans, tmp_path, messages.append) == 0  # only the broken one left


@pytest.mark.parametrize(("seeds", "has_bars"), [(1, False), (2, True)])
def test_ood_figure_draws_std_bars_only_with_several_seeds(tmp_path: Path, monkeypatch, seeds: int, has_bars: bool):
    from benchmarks import plots

    suite = write_suite(tmp_path / "suite", {"dice": 0.7}, seeds=seeds)
    add_ood_scores(suite)
    seen = {}

    def keep(fig, path):
        ax = fig.axes[0]
        seen["title"], seen["bars"] = (
            ax.get_title(),
            sum(type(c).__name__ == "ErrorbarContainer" for c in ax.containers),
        )
        return path

    monkeypatch.setattr(plots, "_save", keep)
    plots.ood_shift(build_leaderboard(suite), tmp_path / "ood.png")
    assert seen["bars"] == int(has_bars)  # one bar group per loss; a single seed has no std to draw
    assert ("std over seeds" in seen["title"]) is has_bars and ("1 seed" in seen["title"]) is not has_bars
