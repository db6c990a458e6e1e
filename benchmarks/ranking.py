"""Ranking the runs of one or more suite directories: one row per loss, seed spread, CIs, paired tests.

See docs/leaderboard.md for the columns and the statistics. The rendered formats live in :mod:`benchmarks.leaderboard`
(csv, md, html, terminal) and :mod:`benchmarks.leaderboard_formats` (json, latex); the run directories are read by
:mod:`benchmarks.run_records`, and :mod:`benchmarks.comparability` checks that the pooled runs can be ranked together.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import stats
from benchmarks.comparability import check_comparable
from benchmarks.metric_names import metric_bounds, metric_info, metric_names
from benchmarks.run_records import RunRecord, collect_runs, pooled_case_values, read_suite_yaml
from lss_vlm.errors import ConfigError

#: Leaderboard columns when the suite does not choose its own (each shown when at least one run reports it).
DEFAULT_METRICS: tuple[str, ...] = (
    "dice_macro",
    "dice/ligamentum_flavum",
    "dice/thecal_sac",
    "hd95_macro",
    "accuracy",
    "macro_f1",
    "qwk",
    "cider_x100",
    "grade_f1_from_text",
    "cause_f1_from_text",
    "composed/cider_x100",
    "composed/grade_f1_from_text",
    "area_mae_mm2",
)
DEFAULT_RANK_METRIC = "dice_macro"
DEFAULT_BASELINE = "dice"
#: The reference rows (issue 13), unranked and untested: the leave-one-out CIDEr-D of each reference against the
#: case's others (``reference/cider_x100``), and the same with the held-out reference's numbers measured on the true
#: masks on the grid of ``eval.measure_on`` (``reference/measured_cider_x100``): what a model whose text is right and
#: whose masks equal the truth on its grid would score. Generated and composed CIDEr×100 are read against both.
REFERENCE_ROW = "reference ceiling (leave-one-out)"
MEASURED_REFERENCE_ROW = "measurement ceiling (true masks)"
REFERENCE_ROWS: dict[str, dict[str, str]] = {
    REFERENCE_ROW: {"cider_x100": "reference/cider_x100"},
    MEASURED_REFERENCE_ROW: {
        "cider_x100": "reference/measured_cider_x100",
        "area_exact": "true_numbers/area_exact",
        "ap_exact": "true_numbers/ap_exact",
    },
}
REFERENCE_METRICS: dict[str, str] = REFERENCE_ROWS[REFERENCE_ROW]


def is_reference_row(name: object) -> bool:
    """Whether a leaderboard row label is one of :data:`REFERENCE_ROWS` (not a loss)."""
    return name in REFERENCE_ROWS


def loss_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of a leaderboard table that are losses (without the :data:`REFERENCE_ROWS`)."""
    return table[~table["loss"].isin(REFERENCE_ROWS)]


#: A class whose predicted area exceeds its true area this many times over the test set is flagged as collapsed.
COLLAPSE_RATIO = 3.0


@dataclass
class Leaderboard:
    """A ranked leaderboard and what it was built from."""

    table: pd.DataFrame
    rank_by: str
    baseline: str | None
    metrics: list[str]
    runs: list[RunRecord]
    test: str
    title: str = "lss-vlm leaderboard"
    case_values: dict[str, dict[str, pd.Series]] = field(default_factory=dict)  # metric -> loss -> per-case values
    problems: list[str] = field(default_factory=list)  # damaged suite files, incomparable runs: footnotes
    suite_dirs: list[Path] = field(default_factory=list)  # the suite folders the runs were pooled from
    mismatches: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)  # run -> field -> (value, ref)
    confidence: float = 0.95

    def best_vs_worst(self, metric: str) -> tuple[str, str, float, float] | None:
        """(best loss, worst loss, gap of their means, paired p over test cases) for ``metric``; None if < 2 losses."""
        column = f"{metric}_mean"
        if column not in self.table:
            return None
        ranked = (
            loss_rows(self.table)
            .dropna(subset=[column])
            .sort_values(column, ascending=not metric_info(metric).higher_is_better, kind="stable")
        )
        if len(ranked) < 2:
            return None
        best, worst = ranked.iloc[0], ranked.iloc[-1]
        per_loss = self.case_values.get(metric, {})
        diffs = stats.paired_differences(
            per_loss.get(best["loss"], pd.Series(dtype=float)), per_loss.get(worst["loss"], pd.Series(dtype=float))
        )
        return (
            str(best["loss"]),
            str(worst["loss"]),
            float(best[column] - worst[column]),
            stats.paired_p(diffs, self.test),
        )

    def rank_agreement(self, metric: str) -> stats.RankAgreement:
        """Kendall's W of the per-seed rankings on ``metric``, over the seeds every ranked loss completed."""
        values: dict[str, dict[int, float]] = {}
        for r in self.runs:
            if r.completed and math.isfinite(r.metrics.get(metric, math.nan)):
                values.setdefault(r.loss, {})[r.seed] = r.metrics[metric]
        common = sorted(set.intersection(*(set(v) for v in values.values()))) if values else []
        scores = np.array([[values[loss][seed] for loss in sorted(values)] for seed in common], dtype=float)
        return stats.rank_agreement(scores)

    @property
    def failed_runs(self) -> list[RunRecord]:
        return [r for r in self.runs if not r.completed]


def area_ratios(runs: Sequence[RunRecord]) -> dict[str, list[float]]:
    """{class: the finite ``area_ratio/<class>`` values of the completed runs, in run order}."""
    ratios: dict[str, list[float]] = {}
    for r in runs:
        if r.completed:
            for key, value in r.metrics.items():
                if key.startswith("area_ratio/") and math.isfinite(value):
                    ratios.setdefault(key.split("/", 1)[1], []).append(value)
    return ratios


def collapsed_classes(runs: Sequence[RunRecord], threshold: float = COLLAPSE_RATIO) -> dict[str, float]:
    """{class: mean predicted/true area ratio} of the classes whose ``area_ratio/<class>`` (mean over the completed
    runs) exceeds ``threshold``: the class is painted over other classes' pixels, as a background collapsed into
    the smallest class is. Such a class's Dice measures that artifact, not the loss."""
    means = {name: float(np.mean(values)) for name, values in area_ratios(runs).items()}
    return {name: ratio for name, ratio in sorted(means.items(), key=lambda kv: -kv[1]) if ratio > threshold}


def missing_classes(runs: Sequence[RunRecord], threshold: float = 1.0 / COLLAPSE_RATIO) -> dict[str, list[float]]:
    """{class: per-seed predicted/true area ratios} of the classes that at least one completed run predicts at under
    ``threshold`` of their true area over the test set: the class is lost into its neighbours (the other side of a
    collapse, e.g. the disc painted as vertebral body). Checked per seed: a mean over seeds hides one lost seed."""
    return {name: values for name, values in sorted(area_ratios(runs).items()) if min(values) < threshold}


def _loss_order(runs: Sequence[RunRecord], suite: dict) -> list[str]:
    found = list(dict.fromkeys(r.loss for r in runs))
    declared = [entry["label"] for entry in suite.get("losses", []) if isinstance(entry, dict) and "label" in entry]
    return [name for name in declared if name in found] + [name for name in found if name not in declared]


def choose_metrics(runs: Sequence[RunRecord], wanted: Sequence[str], rank_by: str) -> list[str]:
    """The wanted metrics that at least one completed run reports, with ``rank_by`` first (must be reported)."""
    reported = {k for r in runs if r.completed for k in r.metrics}
    if reported and rank_by not in reported:
        raise ConfigError(f"metric {rank_by!r} is in no run's metrics.json; {_absent_metric_hint(rank_by, reported)}")
    return [rank_by] + [m for m in wanted if m in reported and m != rank_by]


def has_case_values(per_loss: dict[str, pd.Series]) -> bool:
    """Whether any loss has per-case values of a metric (``{loss: per-case values}``): the paired tests need them."""
    return any(len(values) for values in per_loss.values())


def _absent_metric_hint(name: str, reported: set[str]) -> str:
    """Why a metric can be absent from every run, and what to do: a metric the toolkit knows was not scored by these
    runs (they predate it, or their data lack what it needs); an unknown name gets the closest reported keys."""
    if name in metric_names():
        return (
            "the runs were scored before it existed or their data lack it: re-score them with 'lss-bench evaluate RUN'"
        )
    close = difflib.get_close_matches(name, sorted(reported), n=3)
    return f"did you mean {', '.join(close)}?" if close else "'lss-bench list metrics' lists the metric keys"


def absent_columns_note(runs: Sequence[RunRecord], wanted: Sequence[str]) -> str | None:
    """A footnote naming the asked-for columns (``--metric`` list or the suite's ``columns``) that no completed run
    reports, which the table leaves out; None when every one is there."""
    reported = {k for r in runs if r.completed for k in r.metrics}
    absent = [m for m in dict.fromkeys(wanted) if m not in reported]
    if not reported or not absent:
        return None
    return (
        f"Columns in no run's metrics.json, left out: {', '.join(absent)} (runs scored before these metrics existed, "
        "or data without what they need; 'lss-bench evaluate RUN' re-scores a run with the current metrics)."
    )


def build_leaderboard(
    suite_dir: str | Path | Sequence[str | Path],
    rank_by: str | None = None,
    baseline: str | None = None,
    metrics: Sequence[str] | None = None,
    test: str = "wilcoxon",
    confidence: float = 0.95,
    seed: int = 0,
    mismatch: str = "refuse",
) -> Leaderboard:
    """Rank the losses of one suite directory, or of the runs pooled from several, by the mean of ``rank_by`` over
    their completed seeds.

    Defaults come from the (first) suite's ``suite.yaml`` (``rank_by``, ``baseline``, ``columns``), then from
    :data:`DEFAULT_RANK_METRIC`, :data:`DEFAULT_BASELINE` (if that loss ran) and :data:`DEFAULT_METRICS`.
    Losses whose runs all failed are kept, ranked last. Runs that are not comparable with the majority (budget, data,
    model, package versions; :mod:`benchmarks.comparability`) are refused (``mismatch="refuse"``, a
    :class:`ConfigError`) or ranked with a footnote (``mismatch="flag"``).

    Raises:
        DataError: a folder holds no runs, or two folders hold the same (loss, seed).
        ConfigError: unknown test, baseline without runs, rank metric in no run, incomparable runs (refuse).
    """
    if test not in stats.PAIRED_TESTS:
        raise ConfigError(f"paired test {test!r} is unknown; expected one of {', '.join(stats.PAIRED_TESTS)}")
    dirs = [Path(suite_dir)] if isinstance(suite_dir, (str, Path)) else [Path(d) for d in suite_dir]
    runs = collect_runs(dirs)
    problems: list[str] = []
    suites = [read_suite_yaml(d, problems) for d in dirs]
    suite = {**suites[0], "losses": [e for s in suites for e in s.get("losses", [])]}
    mismatches, mismatch_notes = check_comparable(runs, mismatch)
    problems += mismatch_notes
    rank_by = rank_by or suite.get("rank_by") or DEFAULT_RANK_METRIC
    losses = _loss_order(runs, suite)
    baseline = baseline or suite.get("baseline") or (DEFAULT_BASELINE if DEFAULT_BASELINE in losses else None)
    if baseline is not None and baseline not in losses:
        where = ", ".join(str(d / "runs") for d in dirs)
        raise ConfigError(f"baseline {baseline!r} has no runs in {where}; losses: {', '.join(losses)}")
    asked = metrics or suite.get("columns")
    chosen = choose_metrics(runs, asked or DEFAULT_METRICS, rank_by)
    absent = absent_columns_note(runs, asked) if asked else None  # the default columns show where reported, by design
    problems += [absent] if absent else []
    by_loss = {name: [r for r in runs if r.loss == name] for name in losses}
    case_values = {m: {name: pooled_case_values(by_loss[name], m) for name in losses} for m in chosen}
    per_case_metrics = [m for m in chosen if has_case_values(case_values[m])]

    rows = []
    for name in losses:
        done = [r for r in by_loss[name] if r.completed]
        row: dict[str, object] = {
            "loss": name,
            "n_seeds": len(done),
            "n_failed": len(by_loss[name]) - len(done),
            "failed_reasons": "; ".join(f"seed{r.seed}: {r.reason}" for r in by_loss[name] if not r.completed),
            "wall_time_s_mean": stats.mean_std([r.wall_time_s for r in done])[0],
            "collapsed": ", ".join(f"{c} ({ratio:.1f}x)" for c, ratio in collapsed_classes(done).items()),
            "missing": "; ".join(
                f"{c} (area ratio {', '.join(f'{v:.2f}' for v in ratios)})"
                for c, ratios in missing_classes(done).items()
            ),
        }
        for m in chosen:
            cases = case_values[m][name]
            s = stats.summarize([r.metrics.get(m, math.nan) for r in done], cases.to_numpy(), confidence, seed)
            low, high = np.clip([s.ci_low, s.ci_high], *metric_bounds(m))  # NaN stays NaN
            row.update({f"{m}_mean": s.mean, f"{m}_std": s.std, f"{m}_ci_low": low, f"{m}_ci_high": high})
        if baseline is not None:
            for m in per_case_metrics:
                diffs = stats.paired_differences(case_values[m][name], case_values[m][baseline])
                row[f"{m}_p_vs_{baseline}"] = math.nan if name == baseline else stats.paired_p(diffs, test, seed)
        rows.append(row)

    table = pd.DataFrame(rows)
    info = metric_info(rank_by)
    table = table.sort_values(
        f"{rank_by}_mean", ascending=not info.higher_is_better, na_position="last", kind="stable"
    ).reset_index(drop=True)
    table.insert(0, "rank", [i + 1 if np.isfinite(v) else math.nan for i, v in enumerate(table[f"{rank_by}_mean"])])
    if baseline is not None:
        main_p = f"{rank_by}_p_vs_{baseline}"
        table[f"p_vs_{baseline}"] = table[main_p] if main_p in table else math.nan
        table[f"p_holm_vs_{baseline}"] = stats.holm(table[f"p_vs_{baseline}"].tolist())
    table = _with_reference_row(table, runs, chosen)
    names = dict.fromkeys(str(s.get("name") or d.name) for s, d in zip(suites, dirs))
    title = f"lss-vlm leaderboard: {' + '.join(names)}"
    return Leaderboard(
        table, rank_by, baseline, chosen, runs, test, title, case_values, problems, dirs, mismatches, confidence
    )


def _with_reference_row(table: pd.DataFrame, runs: Sequence[RunRecord], chosen: Sequence[str]) -> pd.DataFrame:
    """Append the :data:`REFERENCE_ROWS` (unranked) that completed runs report for a shown metric."""
    rows = []
    for label, sources in REFERENCE_ROWS.items():
        row: dict[str, object] = {}
        for metric, source in sources.items():
            values = [r.metrics.get(source, math.nan) for r in runs if r.completed]
            values = [v for v in values if math.isfinite(v)]
            if metric in chosen and values:
                mean, std = stats.mean_std(values)
                row.update({f"{metric}_mean": mean, f"{metric}_std": std, "n_seeds": len(values), "n_failed": 0})
        if row:
            rows.append({**row, "loss": label, "rank": math.nan, "failed_reasons": ""})
    return pd.concat([table, pd.DataFrame(rows)], ignore_index=True) if rows else table
