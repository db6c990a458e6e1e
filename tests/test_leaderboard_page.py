"""The HTML leaderboard page (benchmarks/leaderboard_html.py) and its figures: nothing on it may mislead."""

from __future__ import annotations

import html.parser
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_runs import write_suite

from benchmarks import plots
from benchmarks.cd_diagram import average_ranks, cliques, nemenyi_cd
from benchmarks.config import dump_config, load_config
from benchmarks.leaderboard import build_leaderboard, metric_info
from benchmarks.leaderboard_files import write_leaderboard
from benchmarks.leaderboard_html import best_rows, columns, empty_column_notes, header_fields, to_html
from benchmarks.overlay import CaseView, save_case_overlay
from lss_vlm.constants import VIEWS

QUALITIES = {"dice": 0.70, "pid_tversky": 0.75, "tversky": 0.72, "focal": 0.60}


class _Cells(html.parser.HTMLParser):
    """Rows of ``<table id="board">``: per cell, its text and whether it holds ``<b>``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[dict]] = []
        self.heads: list[dict] = []
        self._in_board = False
        self._cell: dict | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._in_board = attrs.get("id") == "board"
        elif self._in_board and tag == "tr":
            self.rows.append([])
        elif self._in_board and tag in ("td", "th"):
            self._cell = {"text": "", "bold": False, **attrs}
            (self.heads if tag == "th" else self.rows[-1]).append(self._cell)
        elif self._cell is not None and tag == "b":
            self._cell["bold"] = True

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._cell = None
        elif tag == "table":
            self._in_board = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def parse(page: str) -> _Cells:
    parser = _Cells()
    parser.feed(page)
    parser.rows = [r for r in parser.rows if r]
    return parser


@pytest.fixture(scope="module")
def suite(tmp_path_factory) -> Path:
    return write_suite(tmp_path_factory.mktemp("page") / "suite", QUALITIES, seeds=3)


def _set_metric(suite: Path, loss: str, key: str, value: float) -> None:
    for path in (suite / "runs" / loss).glob("seed*/metrics.json"):
        metrics = json.loads(path.read_text())
        metrics[key] = value
        path.write_text(json.dumps(metrics))


def test_bold_marks_the_best_of_each_column_by_its_direction_not_the_top_row(tmp_path):
    suite = write_suite(tmp_path / "suite", QUALITIES, seeds=2)
    _set_metric(suite, "focal", "hd95_macro", 0.5)  # worst Dice, best (lowest) HD95
    _set_metric(suite, "dice", "accuracy", 0.99)  # not top-ranked, best accuracy
    board = build_leaderboard(suite)
    best = best_rows(board)
    loss_of = board.table["loss"]
    assert {loss_of[i] for i in best["dice_macro"]} == {"pid_tversky"}
    assert {loss_of[i] for i in best["hd95_macro"]} == {"focal"}
    assert {loss_of[i] for i in best["accuracy"]} == {"dice"}

    page = parse(to_html(board))
    heads = [h["text"] for h in page.heads]
    for metric, loss in (("hd95_macro", "focal"), ("accuracy", "dice"), ("dice_macro", "pid_tversky")):
        col = heads.index(metric_info(metric).header)
        bold = [row[1]["text"] for row in page.rows if row[col]["bold"]]
        assert bold == [loss], metric  # the bold travels with its row's cell, wherever sorting puts the row


def test_first_click_sorts_best_first(suite):
    board = build_leaderboard(suite)
    by_metric = {c.metric: c.first_sort for c in columns(board) if c.metric}
    assert by_metric["dice_macro"] == "desc" and by_metric["hd95_macro"] == "asc"
    page = parse(to_html(board))
    first = {h["text"]: h["data-first"] for h in page.heads}
    assert first["HD95 mm ↓"] == "asc" and first["Dice (macro) ↑"] == "desc" and first["#"] == "asc"
    assert 'th.dataset.first !== "desc"' in to_html(board)  # the script honours data-first on a new column


def test_header_states_data_cases_budget_seeds_date_sha_version(tmp_path):
    suite = write_suite(tmp_path / "suite", QUALITIES, seeds=2)
    cfg = load_config(None, ["train.epochs=7", "data.batch_size=3", "data.spatial_size=96"])
    for run in (suite / "runs").glob("*/seed*"):
        dump_config(cfg, run / "config.yaml")
        (run / "provenance.json").write_text(json.dumps({"git_sha": "abc1234", "packages": {"lss-vlm": "9.8.7"}}))
        _metrics = json.loads((run / "metrics.json").read_text())
        (run / "metrics.json").write_text(json.dumps({**_metrics, "n_cases": 12.0}))
    board = build_leaderboard(suite)
    fields = dict(header_fields(board))
    assert fields["Data"].startswith("phantom (")
    assert fields["Test cases"] == "12"
    assert fields["Budget"] == "7 epochs, batch size 3, image size 96 px"
    assert fields["Seeds"] == "2 per loss"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", fields["Date"])
    assert fields["Git sha"] == "abc1234" and fields["lss-vlm version"] == "9.8.7"
    page = to_html(board)
    for label, value in fields.items():
        assert f"<dt>{label}</dt><dd>{value}</dd>" in page


def test_one_seed_suite_warns_that_p_values_compare_models_not_losses(tmp_path, suite):
    one = to_html(build_leaderboard(write_suite(tmp_path / "one", QUALITIES, seeds=1)))
    assert 'class="warning"' in one and "compare two trained models, not two losses" in one
    assert 'class="warning"' not in to_html(build_leaderboard(suite))


def test_cells_show_the_ci_not_only_a_tooltip(suite):
    board = build_leaderboard(suite)
    page = parse(to_html(board))
    col = [h["text"] for h in page.heads].index("Dice (macro) ↑")
    for (_, row), cells in zip(board.table.iterrows(), page.rows):
        low, high = row["dice_macro_ci_low"], row["dice_macro_ci_high"]
        assert f"[{low:.3f}, {high:.3f}]" in cells[col]["text"]
        assert f"{row['dice_macro_mean']:.3f} ± " in cells[col]["text"]


def test_a_column_zero_or_missing_for_every_loss_gets_a_footnote(tmp_path):
    suite = write_suite(tmp_path / "suite", QUALITIES, seeds=1)
    for loss in QUALITIES:
        _set_metric(suite, loss, "cider_x100", 0.0)
        _set_metric(suite, loss, "qwk", math.nan)
    _set_metric(suite, "dice", "accuracy", 0.0)  # 0 for one loss only: no footnote
    board = build_leaderboard(suite)
    found = empty_column_notes(board)
    assert set(found) == {"cider_x100", "qwk"}
    assert "is 0 for every loss" in found["cider_x100"] and "report decoder" in found["cider_x100"]
    assert "missing (–) for every loss" in found["qwk"] and "no grade labels" in found["qwk"]
    page = to_html(board)
    assert page.count('<sup><a href="#empty-') == 2 and 'id="empty-1"' in page and 'id="empty-2"' in page


def _case(truth: bool) -> CaseView:
    rng = np.random.default_rng(0)
    v, s = len(VIEWS), 32
    return CaseView(
        case_id="ph0001",
        image=rng.random((v, s, s)),
        pred=rng.integers(0, 6, (v, s, s)),
        view_valid=np.ones(v, bool),
        attention=rng.random((v, 4, 4)),
        prompt="label/thecal_sac",
        truth=rng.integers(0, 6, (v, s, s)) if truth else None,
        mask_valid=np.array([True] * (v - 1) + [False]) if truth else None,
    )


def test_overlay_is_a_jpeg_with_a_ground_truth_row(tmp_path):
    from PIL import Image

    with_truth = save_case_overlay(tmp_path / "overlay.jpg", _case(truth=True))
    without = save_case_overlay(tmp_path / "no_truth.jpg", _case(truth=False))
    assert with_truth.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG magic
    with Image.open(with_truth) as a, Image.open(without) as b:
        assert a.format == "JPEG" and a.height > b.height  # one more row: the ground truth
    assert list(tmp_path.iterdir()) and not list(tmp_path.glob(".*"))  # nothing half-written left


def test_attention_overlays_figure_is_jpeg_and_embedded_as_jpeg(tmp_path, suite):
    board = build_leaderboard(suite)
    path = plots.attention_overlays(board, tmp_path / "attention_overlays.jpg")
    assert path.read_bytes()[:3] == b"\xff\xd8\xff"
    assert plots.embed_image(path).startswith("data:image/jpeg;base64,")


def test_training_curve_plots_the_segmentation_loss_with_a_labelled_axis(tmp_path, monkeypatch):
    suite = write_suite(tmp_path / "suite", {"dice": 0.7, "focal": 0.6}, seeds=1)
    for path in (suite / "runs").glob("*/seed*/history.csv"):
        history = pd.read_csv(path)
        history["train/seg_loss"] = 0.3 / history["epoch"]
        history["train/loss"] = 50.0  # the weighted total: not what is drawn
        history.to_csv(path, index=False)
    drawn = {}

    def keep(fig, path):
        drawn["axes"] = fig.axes
        return path

    monkeypatch.setattr(plots, "_save", keep)
    plots.training_curves(build_leaderboard(suite), tmp_path / "curves.png")
    ax = drawn["axes"][0]
    assert "segmentation loss" in ax.get_ylabel()
    assert max(line.get_ydata().max() for line in ax.get_lines()) == pytest.approx(0.3)


def test_cd_diagram_ranks_and_critical_difference():
    blocks = pd.DataFrame({"a": [0.9, 0.8, 0.7], "b": [0.5, 0.8, 0.6], "c": [0.1, 0.2, 0.3]})
    ranks = average_ranks(blocks, higher_is_better=True)
    assert ranks.to_dict() == pytest.approx({"a": 1 + 0.5 / 3, "b": 2 - 0.5 / 3, "c": 3.0})  # tie -> mean rank
    assert average_ranks(blocks, higher_is_better=False)["c"] == pytest.approx(1.0)
    # Demšar 2006, §3.2.2: k = 4 methods over N = 14 data sets, q_0.05 = 2.569, CD = 1.25
    assert nemenyi_cd(4, 14) == pytest.approx(2.569 * math.sqrt(4 * 5 / (6 * 14)), abs=2e-3)
    assert cliques(pd.Series({"a": 1.0, "b": 1.5, "c": 3.5, "d": 3.9}), cd=1.0) == [["a", "b"], ["c", "d"]]


def test_cd_and_reliability_figures_are_drawn(tmp_path, suite):
    board = build_leaderboard(suite)
    assert plots.critical_difference(board, tmp_path / "cd.png").is_file()
    assert plots.reliability_diagram(board, tmp_path / "rel.png").is_file()
    written = write_leaderboard(board, tmp_path, formats=("html",))
    assert written["html"].stat().st_size < 1_000_000


def test_reliability_bins_are_the_bins_of_ece():
    from lss_vlm.metrics.classification import expected_calibration_error, reliability_bins

    rng = np.random.default_rng(1)
    confidence = rng.uniform(0.25, 1.0, 500)
    correct = rng.random(500) < confidence
    bins = reliability_bins(confidence, correct)
    full = bins["count"] > 0
    gap = np.abs(bins["accuracy"][full] - bins["confidence"][full])
    assert bins["count"].sum() == 500
    assert np.sum(bins["count"][full] * gap) / 500 == pytest.approx(expected_calibration_error(confidence, correct))


def test_tensorboard_missing_degrades_with_one_warning(tmp_path, monkeypatch):
    import sys

    import benchmarks.tensorboard_log as tb

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import raises ImportError
    monkeypatch.setattr(tb, "_warned", False)
    with pytest.warns(UserWarning, match="no TensorBoard event files") as caught:
        logs = [tb.ScalarLog(tmp_path / f"run{i}") for i in range(2)]
    assert len(caught) == 1
    logs[0].add_row({"epoch": 1.0, "train/seg_loss": 0.5})
    logs[0].close()
    assert not logs[0].enabled and not (tmp_path / "run0" / "tb").exists()


def test_tensorboard_event_file_holds_the_history_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from benchmarks.tensorboard_log import ScalarLog

    log = ScalarLog(tmp_path)
    for epoch in (1, 2):
        log.add_row({"epoch": float(epoch), "train/seg_loss": 1.0 / epoch, "val/dice_macro": 0.1 * epoch})
    log.close()
    events = [e for f in (tmp_path / "tb").iterdir() for e in EventFileLoader(str(f)).Load()]
    scalars = {(v.tag, e.step): v for e in events for v in e.summary.value}
    assert set(scalars) == {("train/seg_loss", 1), ("train/seg_loss", 2), ("val/dice_macro", 1), ("val/dice_macro", 2)}


@pytest.mark.parametrize("n_views", [1, 7])
def test_overlay_legend_and_colourbar_fit_inside_the_figure(tmp_path, monkeypatch, n_views):
    """A 2D dataset has one view: its overlay clipped the legend ("c", "posterior_eleme") and the colourbar."""
    from benchmarks import overlay

    case = _case(truth=True)
    case.view_valid[:] = np.arange(len(case.view_valid)) < n_views
    seen = {}

    def keep(fig, path):
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        seen["fig"] = fig.bbox
        seen["parts"] = [fig.legends[0].get_window_extent(renderer), fig.axes[-1].get_tightbbox(renderer)]

    monkeypatch.setattr(overlay, "save_figure", keep)
    overlay.save_case_overlay(tmp_path / "overlay.jpg", case)
    for box in seen["parts"]:
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= seen["fig"].x1 and box.y1 <= seen["fig"].y1
