"""Leaderboards of a suite directory: one row per loss, ranked, with seed spread, bootstrap CIs and paired tests.

A suite directory (made by ``lss-bench compare``) holds ``runs/<loss>/seed<k>/`` run directories. Only final
directories count (``seed<k>.partial/`` is a run in progress). A run counts as completed when its ``status.json``
says so; every other run is counted in ``n_failed`` and listed with its reason. See docs/leaderboard.md.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import stats
from lss_vlm.errors import ConfigError, DataError
from lss_vlm.io import atomic_write_text

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
    "composed/cider_x100",
    "composed/grade_f1_from_text",
    "area_mae_mm2",
)
DEFAULT_RANK_METRIC = "dice_macro"
DEFAULT_BASELINE = "dice"
FORMATS: tuple[str, ...] = ("csv", "md", "html")
#: Figures that span the whole page width in the HTML (grids of panels).
WIDE_FIGURES = ("pid_trajectories", "confusion_matrices", "attention_overlays")
RUN_DIR_PATTERN = re.compile(r"^seed(\d+)$")

#: The reference row (issue 13): leave-one-out CIDEr-D of each reference against the case's others, from the runs'
#: ``reference/cider_x100``; generated and composed CIDEr×100 are read against it. Not ranked, not tested.
REFERENCE_ROW = "reference ceiling (leave-one-out)"
REFERENCE_METRICS: dict[str, str] = {"cider_x100": "reference/cider_x100"}

_LOWER_IS_BETTER = ("hd95", "msd", "ece", "mae", "loss", "brier")


@dataclass(frozen=True)
class MetricInfo:
    """How a metric is shown: label, direction (↑ higher is better / ↓ lower is better) and decimals."""

    key: str
    label: str
    short: str
    higher_is_better: bool
    digits: int = 3

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    @property
    def header(self) -> str:
        return f"{self.label} {self.arrow}"

    @property
    def short_header(self) -> str:
        return f"{self.short} {self.arrow}"


_KNOWN_METRICS: dict[str, tuple[str, str, int]] = {  # key: (label, short label for the terminal, decimals)
    "dice_macro": ("Dice (macro)", "Dice", 3),
    "dice/ligamentum_flavum": ("Dice ligamentum flavum", "Dice LF", 3),
    "dice/thecal_sac": ("Dice thecal sac", "Dice TS", 3),
    "iou_macro": ("IoU (macro)", "IoU", 3),
    "hd95_macro": ("HD95 mm", "HD95", 2),
    "msd_macro": ("MSD mm", "MSD", 2),
    "accuracy": ("Grade acc.", "Acc", 3),
    "balanced_accuracy": ("Grade bal. acc.", "BalAcc", 3),
    "macro_f1": ("Grade macro-F1", "F1", 3),
    "qwk": ("Grade QWK", "QWK", 3),
    "auroc": ("Grade AUROC", "AUROC", 3),
    "ece": ("Grade ECE", "ECE", 3),
    "cider": ("CIDEr", "CIDEr", 3),
    "cider_x100": ("CIDEr×100", "CIDEr×100", 1),
    "composed/cider_x100": ("Composed CIDEr×100", "cCIDEr", 1),
    "rouge_l": ("ROUGE-L", "ROUGE-L", 3),
    "meteor": ("METEOR", "METEOR", 3),
    "bleu_4": ("BLEU-4", "BLEU-4", 3),
    "bertscore_f1": ("BERTScore F1 (MiniLM, raw)", "BERTS", 3),
    "grade_f1_from_text": ("Report grade-F1", "RepF1", 3),
    "composed/grade_f1_from_text": ("Composed grade-F1", "cRepF1", 3),
    "area_mae_mm2": ("Area MAE mm²", "AreaMAE", 1),
}
#: The minority classes whose Dice the notes compare best vs worst.
MINORITY_METRICS: tuple[str, ...] = ("dice/ligamentum_flavum", "dice/thecal_sac")
#: A class whose predicted area exceeds its true area this many times over the test set is flagged as collapsed.
COLLAPSE_RATIO = 3.0

#: Columns of the compact terminal table (plus the rank metric).
TERMINAL_METRICS: tuple[str, ...] = (
    "dice_macro",
    "dice/ligamentum_flavum",
    "dice/thecal_sac",
    "accuracy",
    "macro_f1",
    "qwk",
    "cider_x100",
)


def metric_info(key: str) -> MetricInfo:
    """Display info of a metric key; unknown keys get their key as label and a direction guessed from the name."""
    higher = not any(token in key for token in _LOWER_IS_BETTER)
    if key in _KNOWN_METRICS:
        label, short, digits = _KNOWN_METRICS[key]
    elif "/" in key:
        kind, name = key.split("/", 1)
        label, short, digits = f"{kind} {name.replace('_', ' ')}", key, 3
    else:
        label, short, digits = key, key, 3
    return MetricInfo(key=key, label=label, short=short, higher_is_better=higher, digits=digits)


@dataclass
class RunRecord:
    """One finished run directory of a suite."""

    loss: str
    seed: int
    path: Path
    status: str
    reason: str | None = None
    wall_time_s: float = math.nan
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def per_case(self) -> pd.DataFrame | None:
        """This run's ``per_case.csv`` (None when absent)."""
        path = self.path / "per_case.csv"
        return pd.read_csv(path) if path.is_file() else None

    def history(self) -> pd.DataFrame | None:
        """This run's ``history.csv`` (None when absent, empty or unreadable)."""
        path = self.path / "history.csv"
        if not path.is_file() or path.stat().st_size == 0:
            return None
        try:
            return pd.read_csv(path)
        except (ValueError, UnicodeDecodeError, OSError):  # pandas' ParserError/EmptyDataError are ValueErrors
            return None


class DamagedRun(Exception):
    """A file of a run directory cannot be read as what the toolkit wrote; the message says which and why."""


def read_run(path: Path, loss: str, seed: int) -> RunRecord:
    """Read ``status.json`` and ``metrics.json`` of a run directory; a run without status.json counts as failed.

    A damaged run (truncated or non-object ``status.json``/``metrics.json``, unreadable ``per_case.csv``) counts as
    failed, with the reason ("damaged: ..."), so the rest of the suite is still ranked.
    """
    try:
        return _read_run(path, loss, seed)
    except DamagedRun as exc:
        return RunRecord(loss, seed, path, "failed", f"damaged: {exc}")


def _read_run(path: Path, loss: str, seed: int) -> RunRecord:
    status_path = path / "status.json"
    if not status_path.is_file():
        return RunRecord(loss, seed, path, "failed", f"no status.json in {path}")
    status = _json_object(status_path)
    try:
        wall = float(status.get("wall_time_s") or math.nan)
    except (TypeError, ValueError):
        raise DamagedRun(f"{status_path}: wall_time_s {status.get('wall_time_s')!r} is not a number") from None
    reason = status.get("reason")
    record = RunRecord(loss, seed, path, str(status.get("status", "failed")), None if reason is None else str(reason))
    record.wall_time_s = wall
    metrics_path = path / "metrics.json"
    if record.completed and metrics_path.is_file():
        raw = _json_object(metrics_path)
        record.metrics = {k: float(v) for k, v in raw.items() if isinstance(v, (int, float)) and v is not None}
        _check_per_case(path / "per_case.csv")
    elif record.completed:
        record.status, record.reason = "failed", f"no metrics.json in {path}"
    return record


def _json_object(path: Path) -> dict:
    """A JSON file holding an object, or :class:`DamagedRun` naming the file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise DamagedRun(f"{path.name} is unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise DamagedRun(f"{path.name} holds a {type(data).__name__}, expected a JSON object")
    return data


def _check_per_case(path: Path) -> None:
    """An existing ``per_case.csv`` must parse and have a ``case_id`` column (else :class:`DamagedRun`)."""
    if not path.is_file():
        return
    try:
        columns = pd.read_csv(path).columns
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        raise DamagedRun(f"{path.name} is unreadable ({' '.join(str(exc).split())[:120]})") from None
    if "case_id" not in columns:
        raise DamagedRun(f"{path.name} has no case_id column")


def read_suite_yaml(suite_dir: Path, problems: list[str] | None = None) -> dict:
    """The resolved ``suite.yaml`` of a suite directory ({} when absent).

    A damaged ``suite.yaml`` (not YAML, not a mapping) also gives {}: the leaderboard falls back to its defaults and the
    problem is appended to ``problems`` for a footnote.
    """
    path = suite_dir / "suite.yaml"
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as exc:
        data, why = {}, f"unreadable ({' '.join(str(exc).split())[:120]})"
    else:
        why = None if isinstance(data, dict) else f"holds a {type(data).__name__}, expected a mapping"
    if why is None:
        data, why = _typed_suite_keys(data)
    if why is not None and problems is not None:
        problems.append(f"{path} is damaged: {why}; the leaderboard uses its defaults there.")
    return data if isinstance(data, dict) else {}


#: Keys of suite.yaml the leaderboard reads, with the type each must have.
_SUITE_KEY_TYPES: dict[str, tuple[type, ...]] = {"name": (str,), "rank_by": (str,), "baseline": (str,)}


def _typed_suite_keys(data: dict) -> tuple[dict, str | None]:
    """``data`` without the keys the leaderboard reads whose type is wrong, and what was dropped (None if nothing)."""
    bad = [k for k, types in _SUITE_KEY_TYPES.items() if data.get(k) is not None and not isinstance(data[k], types)]
    columns = data.get("columns")
    if columns is not None and not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
        bad.append("columns")
    if not isinstance(data.get("losses", []), list):
        bad.append("losses")
    kept = {k: v for k, v in data.items() if k not in bad}
    return kept, (f"bad value(s) for {', '.join(bad)}" if bad else None)


def collect_runs(suite_dir: str | Path) -> list[RunRecord]:
    """Every finished run of ``suite_dir/runs/<loss>/seed<k>/`` (partial runs skipped), ordered by loss, seed."""
    root = Path(suite_dir) / "runs"
    if not root.is_dir():
        raise DataError(f"{suite_dir}: no runs/ directory (expected a suite directory written by 'lss-bench compare')")
    records = []
    for loss_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for run_dir in sorted(loss_dir.iterdir()):
            match = RUN_DIR_PATTERN.match(run_dir.name)
            if run_dir.is_dir() and match:
                records.append(read_run(run_dir, loss_dir.name, int(match.group(1))))
    if not records:
        raise DataError(f"{root}: no finished runs yet (runs/<loss>/seed<k>/)")
    return sorted(records, key=lambda r: (r.loss, r.seed))


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
    problems: list[str] = field(default_factory=list)  # damaged suite files, stated in a footnote

    def best_vs_worst(self, metric: str) -> tuple[str, str, float, float] | None:
        """(best loss, worst loss, gap of their means, paired p over test cases) for ``metric``; None if < 2 losses."""
        column = f"{metric}_mean"
        if column not in self.table:
            return None
        ranked = (
            self.table[self.table["loss"] != REFERENCE_ROW]
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


def collapsed_classes(runs: Sequence[RunRecord], threshold: float = COLLAPSE_RATIO) -> dict[str, float]:
    """{class: mean predicted/true area ratio} of the classes whose ``area_ratio/<class>`` (mean over the completed
    runs) exceeds ``threshold``: the class is painted over other classes' pixels, as a background collapsed into
    the smallest class is. Such a class's Dice measures that artifact, not the loss."""
    ratios: dict[str, list[float]] = {}
    for r in runs:
        if r.completed:
            for key, value in r.metrics.items():
                if key.startswith("area_ratio/") and math.isfinite(value):
                    ratios.setdefault(key.split("/", 1)[1], []).append(value)
    means = {name: float(np.mean(values)) for name, values in ratios.items()}
    return {name: ratio for name, ratio in sorted(means.items(), key=lambda kv: -kv[1]) if ratio > threshold}


def collapse_notes(board: Leaderboard) -> list[str]:
    """One footnote per loss with a collapsed class (see :func:`collapsed_classes`)."""
    lines = []
    for _, row in board.table.iterrows():
        if isinstance(row.get("collapsed"), str) and row["collapsed"]:  # NaN for the reference-ceiling row
            lines.append(
                f"COLLAPSE: {row['loss']} predicts {row['collapsed']} its true area over the test set (mean over "
                f"{int(row['n_seeds'])} seed(s); flagged above {COLLAPSE_RATIO:g}x). Its Dice for "
                f"{'that class' if ',' not in row['collapsed'] else 'those classes'} measures a collapsed "
                "background, not the loss; see docs/losses.md."
            )
    return lines


def _loss_order(runs: Sequence[RunRecord], suite: dict) -> list[str]:
    found = list(dict.fromkeys(r.loss for r in runs))
    declared = [entry["label"] for entry in suite.get("losses", []) if isinstance(entry, dict) and "label" in entry]
    return [name for name in declared if name in found] + [name for name in found if name not in declared]


def pooled_case_values(runs: Sequence[RunRecord], metric: str) -> pd.Series:
    """Case-level values of ``metric`` (mean over views and the completed seeds' per_case.csv), by case_id."""
    frames = [df for r in runs if r.completed and (df := r.per_case()) is not None and "case_id" in df.columns]
    if not frames:
        return pd.Series(dtype=float)
    return stats.case_level_values(pd.concat(frames, ignore_index=True), metric)


def choose_metrics(runs: Sequence[RunRecord], wanted: Sequence[str], rank_by: str) -> list[str]:
    """The wanted metrics that at least one completed run reports, with ``rank_by`` first (must be reported)."""
    reported = {k for r in runs if r.completed for k in r.metrics}
    if reported and rank_by not in reported:
        close = sorted(k for k in reported if not k.startswith(("n/",)))
        raise ConfigError(f"metric {rank_by!r} is in no run's metrics.json; available: {', '.join(close)}")
    return [rank_by] + [m for m in wanted if m in reported and m != rank_by]


def build_leaderboard(
    suite_dir: str | Path,
    rank_by: str | None = None,
    baseline: str | None = None,
    metrics: Sequence[str] | None = None,
    test: str = "wilcoxon",
    confidence: float = 0.95,
    seed: int = 0,
) -> Leaderboard:
    """Rank the losses of a suite directory by the mean of ``rank_by`` over their completed seeds.

    Defaults come from the suite's ``suite.yaml`` (``rank_by``, ``baseline``, ``columns``), then from
    :data:`DEFAULT_RANK_METRIC`, :data:`DEFAULT_BASELINE` (if that loss ran) and :data:`DEFAULT_METRICS`.
    Losses whose runs all failed are kept, ranked last.
    """
    if test not in stats.PAIRED_TESTS:
        raise ConfigError(f"paired test {test!r} is unknown; expected one of {', '.join(stats.PAIRED_TESTS)}")
    suite_dir = Path(suite_dir)
    runs = collect_runs(suite_dir)
    problems: list[str] = []
    suite = read_suite_yaml(suite_dir, problems)
    rank_by = rank_by or suite.get("rank_by") or DEFAULT_RANK_METRIC
    losses = _loss_order(runs, suite)
    baseline = baseline or suite.get("baseline") or (DEFAULT_BASELINE if DEFAULT_BASELINE in losses else None)
    if baseline is not None and baseline not in losses:
        raise ConfigError(f"baseline {baseline!r} has no runs in {suite_dir / 'runs'}; losses: {', '.join(losses)}")
    chosen = choose_metrics(runs, metrics or suite.get("columns") or DEFAULT_METRICS, rank_by)
    by_loss = {name: [r for r in runs if r.loss == name] for name in losses}
    case_values = {m: {name: pooled_case_values(by_loss[name], m) for name in losses} for m in chosen}
    per_case_metrics = [m for m in chosen if any(len(v) for v in case_values[m].values())]

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
        }
        for m in chosen:
            cases = case_values[m][name]
            s = stats.summarize([r.metrics.get(m, math.nan) for r in done], cases.to_numpy(), confidence, seed)
            row.update({f"{m}_mean": s.mean, f"{m}_std": s.std, f"{m}_ci_low": s.ci_low, f"{m}_ci_high": s.ci_high})
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
    title = f"lss-vlm leaderboard: {suite.get('name', suite_dir.name)}"
    return Leaderboard(table, rank_by, baseline, chosen, runs, test, title, case_values, problems)


def _with_reference_row(table: pd.DataFrame, runs: Sequence[RunRecord], chosen: Sequence[str]) -> pd.DataFrame:
    """Append :data:`REFERENCE_ROW` (unranked) when completed runs report a reference ceiling for a shown metric."""
    row: dict[str, object] = {}
    for metric, source in REFERENCE_METRICS.items():
        values = [r.metrics.get(source, math.nan) for r in runs if r.completed]
        values = [v for v in values if math.isfinite(v)]
        if metric in chosen and values:
            mean, std = stats.mean_std(values)
            row.update({f"{metric}_mean": mean, f"{metric}_std": std, "n_seeds": len(values), "n_failed": 0})
    if not row:
        return table
    row.update(loss=REFERENCE_ROW, rank=math.nan, failed_reasons="")
    return pd.concat([table, pd.DataFrame([row])], ignore_index=True)


# ---------------------------------------------------------------------------------------------------------- formats
def format_value(value: float, digits: int) -> str:
    """A number with ``digits`` decimals, or "–" for NaN."""
    return "–" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def format_p(p: float) -> str:
    """p-value for humans: 3 significant digits, "<0.001" below 0.001, "–" for NaN."""
    if p is None or not np.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3g}"


def p_clause(p: float) -> str:
    """``p <0.001`` or ``p = 0.0302``, for footnotes."""
    text = format_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def display_rows(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of the human table (terminal, Markdown): mean ± std per metric, CI of the rank metric."""
    info = {m: metric_info(m) for m in board.metrics}
    conf = f"{board.rank_by} 95% CI"
    headers = ["#", "loss", "seeds ok/failed"] + [info[m].header for m in board.metrics] + [conf]
    if board.baseline:
        headers += [f"p vs {board.baseline}", "p (Holm)"]
    rows = []
    for _, row in board.table.iterrows():
        cells = [format_value(row["rank"], 0), str(row["loss"]), f"{row['n_seeds']}/{row['n_failed']}"]
        for m in board.metrics:
            mean, std, digits = row[f"{m}_mean"], row[f"{m}_std"], info[m].digits
            cells.append(format_value(mean, digits) + (f" ± {format_value(std, digits)}" if np.isfinite(std) else ""))
        r = board.rank_by
        low, high, d = row[f"{r}_ci_low"], row[f"{r}_ci_high"], info[r].digits
        cells.append(f"[{format_value(low, d)}, {format_value(high, d)}]" if np.isfinite(low) else "–")
        if board.baseline:
            cells += [format_p(row[f"p_vs_{board.baseline}"]), format_p(row[f"p_holm_vs_{board.baseline}"])]
        rows.append(cells)
    return headers, rows


#: (metric, what it stands for, why a dataset may lack it) for the "not scored" footnotes.
UNSCORED_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("dice_macro", "Segmentation (Dice, IoU, HD95)", "the data has no ground-truth masks, e.g. RSNA 2024"),
    ("accuracy", "Stenosis grades", "the data has no grade labels, e.g. SPIDER or Mendeley"),
    ("cider_x100", "Report text", "the data has no reference reports"),
)


def unscored_notes(board: Leaderboard) -> list[str]:
    """One line per metric family that no completed run could score (the column is absent or all NaN)."""
    lines = []
    for metric, family, why in UNSCORED_FAMILIES:
        column = f"{metric}_mean"
        if column not in board.table or not board.table[column].notna().any():
            lines.append(f"{family} not scored: {why}.")
    return lines


def scored_cases_note(board: Leaderboard) -> str | None:
    """How many test images scored each class (``n/<class>`` of the runs; partial labels score a class only where it
    is annotated, and ``dice_macro`` averages only the classes that were scored). None without segmentation."""
    done = [r for r in board.runs if r.completed and any(k.startswith("n/") for k in r.metrics)]
    if not done:
        return None
    counts = {
        k[2:]: int(max(r.metrics.get(k, 0.0) for r in done))
        for k in done[0].metrics
        if k.startswith("n/") and math.isfinite(done[0].metrics[k])
    }
    if not counts:
        return None
    shown = ", ".join(f"{name} {n}" for name, n in counts.items())
    unscored = [name for name, n in counts.items() if n == 0]
    tail = f"; not scored (left out of Dice macro): {', '.join(unscored)}" if unscored else ""
    return f"Test images scored per class: {shown}{tail}."


def notes(board: Leaderboard) -> list[str]:
    """Footnotes explaining the statistics, what was not scored, and the failed runs."""
    losses = board.table[board.table["loss"] != REFERENCE_ROW]  # the ceiling row counts runs, not seeds
    n_seeds = max((int(v) for v in losses["n_seeds"]), default=0)
    ci_over = "seeds" if n_seeds >= 2 else "test cases (1 seed per loss)"
    test = "Wilcoxon signed-rank" if board.test == "wilcoxon" else "paired bootstrap"
    lines = [
        f"Ranked by {metric_info(board.rank_by).header} (mean over completed seeds). Cells: mean ± std over seeds.",
        f"95% CI: {stats.CI_METHOD} over {ci_over}.",
        "↑ higher is better, ↓ lower is better. CIDEr×100 = CIDEr-D × 100. Grade acc. is a fraction (0–1).",
    ]
    if board.baseline:
        lines.append(
            f"p vs {board.baseline}: two-sided {test} test over test cases of {board.rank_by} "
            "(per-case values averaged over views and seeds); Holm-corrected across losses."
        )
    for metric in dict.fromkeys([board.rank_by, *MINORITY_METRICS]):
        spread = board.best_vs_worst(metric) if metric in board.metrics else None
        if spread is not None:
            best, worst, gap, p = spread
            digits = metric_info(metric).digits
            lines.append(
                f"Best vs worst on {metric_info(metric).label}: {best} − {worst} = {gap:+.{digits}f} "
                f"(paired {test} {p_clause(p)})."
            )
    agreement = board.rank_agreement(board.rank_by)
    if math.isfinite(agreement.w):
        lines.append(
            f"Rank agreement across seeds on {metric_info(board.rank_by).label}: Kendall's W = {agreement.w:.2f} "
            f"({agreement.n_seeds} seeds × {agreement.n_losses} losses; 1 = every seed ranks the losses the same; "
            f"Friedman {p_clause(agreement.friedman_p)})."
        )
    if (board.table["loss"] == REFERENCE_ROW).any():
        lines.append(
            f"{REFERENCE_ROW}: CIDEr×100 of each reference report against the case's other references, averaged "
            "(the score a second radiologist gets); read generated and composed CIDEr×100 against it."
        )
    lines += unscored_notes(board)
    lines += collapse_notes(board)
    lines += board.problems
    scored = scored_cases_note(board)
    if scored is not None:
        lines.append(scored)
    for r in board.failed_runs:
        lines.append(f"{r.status.upper()} run {r.loss} seed{r.seed}: {r.reason}")
    return lines


def to_markdown(board: Leaderboard) -> str:
    """The leaderboard as a GitHub-flavoured Markdown table with footnotes."""
    headers, rows = display_rows(board)
    esc = [[cell.replace("|", "\\|") for cell in line] for line in [headers, *rows]]
    lines = [f"# {board.title}", "", "| " + " | ".join(esc[0]) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(line) + " |" for line in esc[1:]]
    lines += [""] + [f"- {note}" for note in notes(board)]
    return "\n".join(lines) + "\n"


def print_terminal(board: Leaderboard, console=None) -> None:
    """Print a compact rich table (mean over ±std per cell, :data:`TERMINAL_METRICS`) and the footnotes."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
    shown = [m for m in board.metrics if m == board.rank_by or m in TERMINAL_METRICS]
    table = Table(title=board.title, header_style="bold", box=box.SIMPLE_HEAD, padding=(0, 1))
    table.add_column("#", justify="right")
    table.add_column("loss")
    table.add_column("seeds\nok/fail", justify="center")
    for m in shown:
        table.add_column(metric_info(m).short_header, justify="right")
    if board.baseline:
        table.add_column(f"p vs {board.baseline}\n(Holm)", justify="right")
    for _, row in board.table.iterrows():
        cells = [format_value(row["rank"], 0), str(row["loss"]), f"{row['n_seeds']}/{row['n_failed']}"]
        for m in shown:
            digits = metric_info(m).digits
            std = row[f"{m}_std"]
            cells.append(
                format_value(row[f"{m}_mean"], digits) + (f"\n[dim]±{std:.{digits}f}[/]" if np.isfinite(std) else "")
            )
        if board.baseline:
            p, holm_p = row[f"p_vs_{board.baseline}"], row[f"p_holm_vs_{board.baseline}"]
            cells.append(format_p(p) + (f"\n[dim]({format_p(holm_p)})[/]" if np.isfinite(holm_p) else ""))
        style = "bold green" if row["rank"] == 1 else ("red" if row["n_seeds"] == 0 else None)
        table.add_row(*cells, style=style, end_section=False)
    console.print(table)
    for note in notes(board):
        console.print(f"  {note}", style="red" if note.startswith(("FAILED", "PRUNED")) else "dim", highlight=False)


def write_leaderboard(
    board: Leaderboard, out_dir: str | Path, formats: Sequence[str] = FORMATS, figures: bool = True
) -> dict[str, Path]:
    """Write ``leaderboard.{csv,md,html}`` (and ``figures/`` for html) into ``out_dir`` atomically; return the paths."""
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    if "csv" in formats:
        from lss_vlm.io import atomic_path

        with atomic_path(out_dir / "leaderboard.csv") as tmp:
            board.table.to_csv(tmp, index=False, float_format="%.6g")
        written["csv"] = out_dir / "leaderboard.csv"
    if "md" in formats:
        atomic_write_text(out_dir / "leaderboard.md", to_markdown(board))
        written["md"] = out_dir / "leaderboard.md"
    if "html" in formats:
        figure_paths = {}
        if figures:
            from benchmarks.plots import make_figures

            figure_paths = make_figures(board, out_dir / "figures")
        from benchmarks.leaderboard_html import to_html

        atomic_write_text(out_dir / "leaderboard.html", to_html(board, figure_paths))
        written["html"] = out_dir / "leaderboard.html"
    return written
