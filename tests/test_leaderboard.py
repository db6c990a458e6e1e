"""Leaderboards built from synthetic run directories (tests/synthetic_runs.py): ranking, columns, formats, failures."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from synthetic_runs import write_run, write_suite

from benchmarks.cli import main
from benchmarks.leaderboard import build_leaderboard, metric_info, to_markdown
from benchmarks.leaderboard_files import write_leaderboard
from lss_vlm.errors import ConfigError, DataError

QUALITIES = {"dice": 0.70, "pid_tversky": 0.80, "focal": 0.60, "tversky": 0.75}


@pytest.fixture()
def suite_dir(tmp_path):
    return write_suite(tmp_path / "suite", QUALITIES, seeds=3, failed={("focal", 2): "TrainingDiverged: NaN loss"})


def test_ranking_follows_quality_and_direction(suite_dir):
    board = build_leaderboard(suite_dir)
    assert list(board.table["loss"]) == ["pid_tversky", "tversky", "dice", "focal"]
    assert list(board.table["rank"]) == [1, 2, 3, 4]
    by_hd95 = build_leaderboard(suite_dir, rank_by="hd95_macro")  # lower is better
    assert list(by_hd95.table["loss"]) == ["pid_tversky", "tversky", "dice", "focal"]
    assert by_hd95.table["hd95_macro_mean"].is_monotonic_increasing
    assert not metric_info("hd95_macro").higher_is_better and metric_info("dice_macro").higher_is_better


def test_columns_follow_the_contract(suite_dir):
    table = build_leaderboard(suite_dir, baseline="dice").table
    for metric in ("dice_macro", "dice/ligamentum_flavum", "dice/thecal_sac", "accuracy", "macro_f1", "qwk",
                   "cider_x100"):  # fmt: skip
        for stat in ("mean", "std", "ci_low", "ci_high"):
            assert f"{metric}_{stat}" in table.columns
    assert {"n_seeds", "n_failed", "p_vs_dice", "p_holm_vs_dice"} <= set(table.columns)
    row = table.set_index("loss").loc["pid_tversky"]
    assert row["dice_macro_ci_low"] <= row["dice_macro_mean"] <= row["dice_macro_ci_high"]
    assert row["n_seeds"] == 3


def test_paired_test_against_baseline(suite_dir):
    table = build_leaderboard(suite_dir, baseline="dice").table.set_index("loss")
    assert math.isnan(table.loc["dice", "p_vs_dice"])
    assert table.loc["pid_tversky", "p_vs_dice"] < 0.01  # +0.10 Dice on every case
    assert table.loc["pid_tversky", "p_holm_vs_dice"] >= table.loc["pid_tversky", "p_vs_dice"]
    bootstrap = build_leaderboard(suite_dir, baseline="dice", test="bootstrap").table.set_index("loss")
    assert bootstrap.loc["pid_tversky", "p_vs_dice"] < 0.01


def test_best_vs_worst_gap_with_paired_p(suite_dir):
    board = build_leaderboard(suite_dir)
    best, worst, gap, p = board.best_vs_worst("dice/ligamentum_flavum")
    assert (best, worst) == ("pid_tversky", "focal")
    table = board.table.set_index("loss")
    expected = (
        table.loc["pid_tversky", "dice/ligamentum_flavum_mean"] - table.loc["focal", "dice/ligamentum_flavum_mean"]
    )
    assert gap == pytest.approx(expected) and gap > 0.15
    assert p < 0.01
    assert "Best vs worst on Dice ligamentum flavum: pid_tversky − focal" in to_markdown(board)


def test_failed_runs_are_counted_and_shown(suite_dir):
    board = build_leaderboard(suite_dir)
    focal = board.table.set_index("loss").loc["focal"]
    assert (focal["n_seeds"], focal["n_failed"]) == (2, 1)
    assert "NaN loss" in focal["failed_reasons"]
    assert "FAILED run focal seed2: TrainingDiverged: NaN loss" in to_markdown(board)


def test_loss_with_only_failed_runs_is_ranked_last(tmp_path):
    suite = write_suite(tmp_path / "s", {"dice": 0.7, "ce": 0.6}, seeds=2)
    for seed in range(2):
        write_run(suite / "runs" / "broken" / f"seed{seed}", 0.5, seed, status="failed", reason="DataError: bad case")
    table = build_leaderboard(suite).table
    assert list(table["loss"]) == ["dice", "ce", "broken"]
    assert math.isnan(table["rank"].iloc[-1]) and table["n_failed"].iloc[-1] == 2


def test_partial_runs_are_ignored(suite_dir):
    write_run(suite_dir / "runs" / "dice" / "seed3.partial", 0.99, 3)
    table = build_leaderboard(suite_dir).table.set_index("loss")
    assert table.loc["dice", "n_seeds"] == 3


def test_single_seed_ci_over_cases(tmp_path):
    suite = write_suite(tmp_path / "s", {"dice": 0.7, "pid_tversky": 0.75}, seeds=1)
    table = build_leaderboard(suite).table.set_index("loss")
    assert math.isnan(table.loc["dice", "dice_macro_std"])
    assert table.loc["dice", "dice_macro_ci_low"] < table.loc["dice", "dice_macro_ci_high"]
    assert math.isnan(table.loc["dice", "accuracy_ci_low"])  # no per-case grade values with one seed


def test_all_formats_written(suite_dir):
    board = build_leaderboard(suite_dir)
    written = write_leaderboard(board, suite_dir)
    csv = pd.read_csv(written["csv"])
    assert list(csv["loss"]) == list(board.table["loss"])
    md = written["md"].read_text()
    assert "| Dice (macro) ↑ |" in md and "HD95 mm ↓" in md and "CIDEr×100" in md
    page = written["html"].read_text()
    assert "<table" in page and "function sortBy" in page
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 7  # every figure embedded
    assert len(re.findall(r'src="data:image/jpeg;base64,', page)) == 1  # the overlays, as JPEG
    assert not re.search(r'(src|href)="(https?:)?//', page)  # self-contained
    assert sorted(p.name for p in (suite_dir / "figures").iterdir()) == sorted(
        [
            "dice_per_class.png",
            "seed_boxplot.png",
            "critical_difference.png",
            "training_curves.png",
            "pid_trajectories.png",
            "confusion_matrices.png",
            "reliability_diagram.png",
            "attention_overlays.jpg",
        ]  # fmt: skip
    )


def test_bad_inputs_are_one_line_errors(suite_dir, tmp_path):
    with pytest.raises(ConfigError, match="'bleu_9' is in no run"):
        build_leaderboard(suite_dir, rank_by="bleu_9")
    with pytest.raises(ConfigError, match="baseline 'nope'"):
        build_leaderboard(suite_dir, baseline="nope")
    with pytest.raises(DataError, match="no runs/ directory"):
        build_leaderboard(tmp_path / "empty")


def test_cli_writes_the_chosen_format(suite_dir, capsys):
    assert main(["leaderboard", str(suite_dir), "--format", "md", "--metric", "dice/ligamentum_flavum"]) == 0
    assert (suite_dir / "leaderboard.md").is_file() and not (suite_dir / "leaderboard.html").exists()
    out = capsys.readouterr().out
    assert "pid_tversky" in out and "Dice LF" in out
    assert main(["leaderboard", str(suite_dir), "--baseline", "nope"]) == 2


def test_leaderboard_says_when_segmentation_was_not_scored(tmp_path):
    """A dataset without masks (RSNA 2024) gives runs without Dice: the leaderboard says so instead of a blank."""
    import json

    suite = write_suite(tmp_path / "suite", {"dice": 0.7, "tversky": 0.75}, seeds=1)
    for metrics_file in (suite / "runs").glob("*/seed0/metrics.json"):
        metrics = json.loads(metrics_file.read_text())
        metrics = {k: (math.nan if k.startswith(("dice", "hd95")) else v) for k, v in metrics.items()}
        metrics_file.write_text(json.dumps(metrics))
    markdown = to_markdown(build_leaderboard(suite))
    assert "Segmentation (Dice, IoU, HD95) not scored: the data has no ground-truth masks" in markdown
    assert "Stenosis grades not scored" not in markdown
    full = to_markdown(build_leaderboard(write_suite(tmp_path / "full", {"dice": 0.7, "tversky": 0.75}, seeds=1)))
    assert "not scored" not in full
    # a suite's columns may leave out a family its runs scored: not shown is not "not scored"
    narrow = to_markdown(build_leaderboard(tmp_path / "full", metrics=["dice_macro"]))
    assert "accuracy" not in narrow.splitlines()[2] and "not scored" not in narrow


def test_rank_agreement_over_seeds_is_reported(suite_dir, tmp_path):
    board = build_leaderboard(suite_dir)  # focal seed2 failed: W over seeds 0-1, where every loss completed
    agreement = board.rank_agreement("dice_macro")
    assert (agreement.n_seeds, agreement.n_losses) == (2, 4)
    assert agreement.w == pytest.approx(1.0)  # qualities 0.10 apart, seed noise 0.02: every seed ranks alike
    assert "Kendall's W = 1.00 (2 seeds × 4 losses" in to_markdown(board)
    single = write_suite(tmp_path / "single", QUALITIES, seeds=1)
    assert "Kendall" not in to_markdown(build_leaderboard(single))


def test_a_collapsed_class_is_flagged_in_the_table_and_a_footnote(tmp_path):
    """A run whose flavum is predicted over 40x its true area gets a COLLAPSE footnote; honest runs get none."""
    import json

    suite = write_suite(tmp_path / "suite", {"dice_nobg": 0.6, "dice": 0.7}, seeds=2)
    for seed in range(2):
        for loss, ratio in (("dice_nobg", 40.0), ("dice", 0.8)):
            path = suite / "runs" / loss / f"seed{seed}" / "metrics.json"
            metrics = json.loads(path.read_text())
            metrics.update({"area_ratio/ligamentum_flavum": ratio, "area_ratio/thecal_sac": 1.1})
            path.write_text(json.dumps(metrics))
    board = build_leaderboard(suite)
    flagged = dict(zip(board.table["loss"], board.table["collapsed"]))
    assert flagged == {"dice": "", "dice_nobg": "ligamentum_flavum (40.0x)"}
    collapse = [n for n in to_markdown(board).splitlines() if "COLLAPSE" in n]
    assert len(collapse) == 1 and "dice_nobg" in collapse[0] and "ligamentum_flavum" in collapse[0]


def test_a_class_lost_in_one_seed_is_flagged_missing(tmp_path):
    """generalized_dice lost the disc in 2 of 3 standard-suite seeds (area ratio 0.00, 0.84, 0.00; mean 0.28): the
    per-seed check flags it where a mean over seeds could not; a loss whose classes are all present gets nothing."""
    import json

    suite = write_suite(tmp_path / "suite", {"generalized_dice": 0.68, "dice": 0.81}, seeds=3)
    for seed, lost in enumerate((0.0, 0.84, 0.0)):
        for loss, ratio in (("generalized_dice", lost), ("dice", 0.9)):
            path = suite / "runs" / loss / f"seed{seed}" / "metrics.json"
            metrics = json.loads(path.read_text())
            metrics.update({"area_ratio/disc": ratio, "area_ratio/thecal_sac": 1.1})
            path.write_text(json.dumps(metrics))
    board = build_leaderboard(suite)
    missing = dict(zip(board.table["loss"], board.table["missing"]))
    assert missing == {"dice": "", "generalized_dice": "disc (area ratio 0.00, 0.84, 0.00)"}
    notes = [n for n in to_markdown(board).splitlines() if "MISSING" in n]
    assert len(notes) == 1 and "generalized_dice predicts disc" in notes[0]
    assert not any("COLLAPSE" in n for n in to_markdown(board).splitlines())


def test_reference_ceiling_is_an_unranked_row_when_runs_report_it(tmp_path):
    """Issue 13: the leave-one-out CIDEr of the references sits in the table, so CIDEr×100 is read against it."""
    import json

    suite = write_suite(tmp_path / "suite", {"dice": 0.7, "tversky": 0.75}, seeds=2)
    assert "reference ceiling" not in to_markdown(build_leaderboard(suite))
    for metrics_file in (suite / "runs").glob("*/seed*/metrics.json"):
        metrics = json.loads(metrics_file.read_text())
        metrics_file.write_text(json.dumps({**metrics, "reference/cider_x100": 480.0}))
    board = build_leaderboard(suite, rank_by="cider_x100")
    last = board.table.iloc[-1]
    assert last["loss"].startswith("reference ceiling") and math.isnan(last["rank"])
    assert last["cider_x100_mean"] == pytest.approx(480.0) and last["n_seeds"] == 4
    assert list(board.table["rank"][:2]) == [1, 2] and board.best_vs_worst("cider_x100")[0] == "tversky"
    markdown = to_markdown(board)
    assert "| reference ceiling (leave-one-out) |" in markdown and "480.0" in markdown
    ci_line = next(line for line in markdown.splitlines() if line.startswith("- 95% CI"))
    assert ci_line.endswith("over seeds.")  # 2 seeds a loss: the CI is over seeds
    write_leaderboard(board, tmp_path / "out", figures=False)
    assert "reference ceiling" in (tmp_path / "out" / "leaderboard.csv").read_text()


def test_measurement_ceiling_is_a_second_unranked_row(tmp_path):
    """The references with the numbers measured on the true masks: a row below the leave-one-out ceiling, unranked,
    left out of the seed counts, with its footnote; the HTML marks both rows as references."""
    import json

    suite = write_suite(tmp_path / "suite", {"dice": 0.7, "tversky": 0.75}, seeds=1)
    for metrics_file in (suite / "runs").glob("*/seed*/metrics.json"):
        metrics = json.loads(metrics_file.read_text())
        extra = {"reference/cider_x100": 480.0, "reference/measured_cider_x100": 330.0}
        metrics_file.write_text(json.dumps({**metrics, **extra}))
    board = build_leaderboard(suite, rank_by="cider_x100")
    rows = board.table.set_index("loss")
    assert list(board.table["loss"][-2:]) == ["reference ceiling (leave-one-out)", "measurement ceiling (true masks)"]
    assert rows.loc["measurement ceiling (true masks)", "cider_x100_mean"] == pytest.approx(330.0)
    assert math.isnan(rows.loc["measurement ceiling (true masks)", "rank"])
    markdown = to_markdown(board)
    assert "| measurement ceiling (true masks) |" in markdown and "330.0" in markdown
    note = next(line for line in markdown.splitlines() if line.startswith("- measurement ceiling (true masks): "))
    assert "CIDEr×100 is the leave-one-out ceiling with the held-out reference's numbers" in note
    assert "exact" not in note  # no exact columns shown
    assert next(line for line in markdown.splitlines() if line.startswith("- 95% CI")).endswith("(1 seed per loss).")
    write_leaderboard(board, tmp_path / "out", formats=("html",), figures=False)
    assert (tmp_path / "out" / "leaderboard.html").read_text().count('<tr class="reference">') == 2


def test_measurement_ceiling_row_shows_the_true_masks_exact_numbers(tmp_path):
    """With the area_exact / ap_exact columns, the measurement-ceiling row carries the true masks' shares
    (true_numbers/area_exact, true_numbers/ap_exact); the leave-one-out row has none (its numbers are the
    references')."""
    import json

    suite = write_suite(tmp_path / "suite", {"dice": 0.7, "ce": 0.72}, seeds=2)
    for k, metrics_file in enumerate(sorted((suite / "runs").glob("*/seed*/metrics.json"))):
        metrics = json.loads(metrics_file.read_text())
        extra = {"reference/cider_x100": 480.0, "reference/measured_cider_x100": 330.0, "area_exact": 0.1 * k,
                 "ap_exact": 0.2, "true_numbers/area_exact": 0.9, "true_numbers/ap_exact": 0.95}  # fmt: skip
        metrics_file.write_text(json.dumps({**metrics, **extra}))
    board = build_leaderboard(suite, metrics=["dice_macro", "cider_x100", "area_exact", "ap_exact"])
    rows = board.table.set_index("loss")
    assert rows.loc["measurement ceiling (true masks)", "area_exact_mean"] == pytest.approx(0.9)
    assert rows.loc["measurement ceiling (true masks)", "ap_exact_mean"] == pytest.approx(0.95)
    assert math.isnan(rows.loc["reference ceiling (leave-one-out)", "area_exact_mean"])
    assert rows.loc["ce", "area_exact_mean"] == pytest.approx(0.05) and rows.loc["dice", "area_exact_mean"] == 0.25
    markdown = to_markdown(board)
    note = next(line for line in markdown.splitlines() if line.startswith("- measurement ceiling (true masks): "))
    assert "Area exact and AP exact are the true masks' shares (true_numbers/area_exact, true_numbers/ap_exact)" in note
    # no per-case values of area_exact: the footnotes say there is no paired test instead of describing one
    exact_board = build_leaderboard(suite, rank_by="area_exact", metrics=["area_exact", "ap_exact"])
    lines = to_markdown(exact_board).splitlines()
    assert any(
        line.startswith("- p vs dice: no paired test: the runs have no per-case values of area_exact") for line in lines
    )
    assert any(line.startswith("- Best vs worst on Area exact:") and "(no per-case values)" in line for line in lines)
    assert not any("Wilcoxon signed-rank test over test cases of area_exact" in line for line in lines)


def test_columns_the_runs_lack_are_named_and_an_absent_rank_metric_says_how_to_get_it(tmp_path):
    """Runs scored before a metric existed: an asked-for column is left out with a footnote naming it; ranking by it
    is refused with one line that says to re-score (not a list of every key); a typo gets the closest keys."""
    suite = write_suite(tmp_path / "suite", {"dice": 0.7, "ce": 0.72}, seeds=1)
    board = build_leaderboard(suite, metrics=["dice_macro", "area_exact", "ap_exact"])
    assert "area_exact_mean" not in board.table
    note = "Columns in no run's metrics.json, left out: area_exact, ap_exact"
    assert any(line.startswith(f"- {note}") for line in to_markdown(board).splitlines())
    assert not any("left out" in line for line in to_markdown(build_leaderboard(suite)).splitlines())
    with pytest.raises(ConfigError, match="re-score them with 'lss-bench evaluate RUN'$"):
        build_leaderboard(suite, rank_by="area_exact")
    with pytest.raises(ConfigError, match="did you mean dice_macro"):
        build_leaderboard(suite, rank_by="dice_makro")


def test_html_shows_the_overlay_case_reports_side_by_side(tmp_path):
    """Issue 13: generated, composed and one reference report of the fixed overlay case (smallest case id)."""
    import json

    suite = write_suite(tmp_path / "suite", {"dice": 0.7}, seeds=2)
    for seed in (0, 1):
        records = [
            {
                "case_id": f"case{i}",
                "generated": f"gen <{seed}> {i}",
                "composed": f"comp {i}",
                "references": [f"ref {i}"],
            }
            for i in (3, 1, 2)
        ]
        (suite / "runs" / "dice" / f"seed{seed}" / "reports.jsonl").write_text(
            "\n".join(json.dumps(r) for r in records) + "\n"
        )
    write_leaderboard(build_leaderboard(suite), tmp_path / "out", formats=("html",), figures=False)
    page = (tmp_path / "out" / "leaderboard.html").read_text()
    assert "Reports of the overlay case" in page
    assert "gen &lt;0&gt; 1" in page and "comp 1" in page and "ref 1" in page and "seed 0, case case1" in page
    assert "gen &lt;1&gt;" not in page and "comp 3" not in page


def test_one_seed_ci_footnote_ignores_the_reference_ceiling_row(tmp_path):
    """The ceiling row's n_seeds counts runs (4 here); the footnote must still say the CI is over test cases."""
    import json

    suite = write_suite(tmp_path / "suite", {"dice": 0.7, "tversky": 0.75, "focal": 0.6, "ce": 0.65}, seeds=1)
    for metrics_file in (suite / "runs").glob("*/seed*/metrics.json"):
        metrics = json.loads(metrics_file.read_text())
        metrics_file.write_text(json.dumps({**metrics, "reference/cider_x100": 480.0}))
    markdown = to_markdown(build_leaderboard(suite, rank_by="cider_x100"))
    assert "| reference ceiling (leave-one-out) |" in markdown
    ci_line = next(line for line in markdown.splitlines() if line.startswith("- 95% CI"))
    assert ci_line.endswith("over test cases (1 seed per loss).")
