"""Leaderboard exports for reuse: ``leaderboard.json`` (documented schema) and a LaTeX booktabs table.

The JSON follows the spirit of lm-evaluation-harness's results file (results per task and metric, the config that
produced them, the versions): one row per loss with its resolved loss config, the package versions of its runs, the
summary statistics and the per-seed values of every metric. The schema is documented in docs/leaderboard.md
("leaderboard.json"); :data:`SCHEMA_VERSION` changes when a key changes meaning or disappears.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.comparability import VARYING_KEYS
from benchmarks.metric_names import metric_info
from benchmarks.ranking import Leaderboard, is_reference_row, loss_rows
from benchmarks.run_records import RunRecord

SCHEMA_VERSION = 1
#: Statistics of a metric in a row of leaderboard.json (``<metric>_<stat>`` columns of the table).
METRIC_STATS: tuple[str, ...] = ("mean", "std", "ci_low", "ci_high")


# ------------------------------------------------------------------------------------------------------------- json
def _number(value: Any) -> float | int | None:
    """A JSON-safe number: NaN/inf/None -> null, numpy scalars -> Python."""
    if value is None or isinstance(value, str):
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _package_versions(runs: Sequence[RunRecord]) -> dict[str, str]:
    """The package versions most of ``runs`` recorded (``provenance.json``), {} when none did."""
    seen = Counter(
        json.dumps(r.provenance().get("packages"), sort_keys=True)
        for r in runs
        if isinstance(r.provenance().get("packages"), dict)
    )
    return json.loads(seen.most_common(1)[0][0]) if seen else {}


def _loss_config(runs: Sequence[RunRecord]) -> dict[str, Any] | None:
    """``{"name", "params"}`` of the loss as resolved in the runs' ``config.yaml`` (first run that has one)."""
    for r in runs:
        config = r.config()
        if config and isinstance(config.get("loss"), dict):
            return config["loss"]
    return None


def shared_config(board: Leaderboard) -> dict[str, Any] | None:
    """The resolved experiment config every comparable run shares: that of the first completed run that is not
    incomparable, without the keys that vary between runs (loss, seed, name, ...). None when no run stored one."""
    for r in board.runs:
        config = r.config() if r.completed and r.name not in board.mismatches else None
        if config:
            return _without(config, VARYING_KEYS)
    return None


def _without(config: dict[str, Any], dotted: Sequence[str]) -> dict[str, Any]:
    out = json.loads(json.dumps(config))
    for key in dotted:
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.get(part, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    return out


def _run_entry(run: RunRecord, board: Leaderboard) -> dict[str, Any]:
    provenance = run.provenance()
    return {
        "seed": run.seed,
        "status": run.status,
        "reason": run.reason,
        "path": str(run.path),
        "wall_time_s": _number(run.wall_time_s),
        "config_hash": provenance.get("config_hash"),
        "data_manifest_hash": provenance.get("data_manifest_hash"),
        "git_sha": provenance.get("git_sha"),
        "incomparable": {
            k: {"value": v, "reference": ref} for k, (v, ref) in board.mismatches.get(run.name, {}).items()
        },
    }


def _metric_entry(board: Leaderboard, row: pd.Series, metric: str, runs: Sequence[RunRecord]) -> dict[str, Any]:
    entry: dict[str, Any] = {stat: _number(row.get(f"{metric}_{stat}")) for stat in METRIC_STATS}
    if board.baseline is not None and f"{metric}_p_vs_{board.baseline}" in row:
        entry["p_vs_baseline"] = _number(row[f"{metric}_p_vs_{board.baseline}"])
    entry["per_seed"] = {str(r.seed): _number(r.metrics.get(metric)) for r in runs if r.completed}
    return entry


def _row_entry(board: Leaderboard, row: pd.Series) -> dict[str, Any]:
    name = str(row["loss"])
    runs = [r for r in board.runs if r.loss == name]
    reference = is_reference_row(name)
    entry: dict[str, Any] = {
        "rank": _number(row.get("rank")),
        "loss": name,
        "kind": "reference" if reference else "loss",
        "n_seeds": _number(row.get("n_seeds")),
        "n_failed": _number(row.get("n_failed")),
    }
    if not reference:
        entry["config"] = {"loss": _loss_config(runs)}
        entry["versions"] = _package_versions([r for r in runs if r.completed])
    if board.baseline is not None and not reference:
        entry["p_vs_baseline"] = _number(row.get(f"p_vs_{board.baseline}"))
        entry["p_holm_vs_baseline"] = _number(row.get(f"p_holm_vs_{board.baseline}"))
    entry["metrics"] = {m: _metric_entry(board, row, m, runs) for m in board.metrics if f"{m}_mean" in row}
    if reference:
        for m in entry["metrics"].values():
            m["per_seed"] = {}
    else:
        entry["collapsed"] = row.get("collapsed") if isinstance(row.get("collapsed"), str) else ""
        entry["missing"] = row.get("missing") if isinstance(row.get("missing"), str) else ""
        entry["wall_time_s_mean"] = _number(row.get("wall_time_s_mean"))
        entry["runs"] = [_run_entry(r, board) for r in runs]
    return entry


def to_json(board: Leaderboard, notes: Sequence[str] = ()) -> dict[str, Any]:
    """The leaderboard as a JSON-ready dict (schema in docs/leaderboard.md, version :data:`SCHEMA_VERSION`)."""
    from benchmarks.run_records import read_suite_yaml

    return {
        "schema_version": SCHEMA_VERSION,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "lss_vlm_version": _lss_version(),
        "title": board.title,
        "suites": [{"path": str(d), "name": read_suite_yaml(d).get("name", d.name)} for d in board.suite_dirs],
        "rank_by": board.rank_by,
        "baseline": board.baseline,
        "test": board.test,
        "confidence": board.confidence,
        "metrics": {
            m: {"label": metric_info(m).label, "higher_is_better": metric_info(m).higher_is_better}
            for m in board.metrics
        },
        "shared_config": shared_config(board),
        "rows": [_row_entry(board, row) for _, row in board.table.iterrows()],
        "notes": list(notes),
    }


def _lss_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("lss-vlm")
    except metadata.PackageNotFoundError:
        return None


def json_text(board: Leaderboard, notes: Sequence[str] = ()) -> str:
    """:func:`to_json` serialised (indented, UTF-8, no NaN: missing values are null)."""
    return json.dumps(to_json(board, notes), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# ------------------------------------------------------------------------------------------------------------ latex
_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "×": r"$\times$",
    "²": r"$^2$",
    "±": r"$\pm$",
    "–": "--",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
}


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (and ×, ², ±, ↑, ↓ as math)."""
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def best_rows(board: Leaderboard, metric: str) -> set[int]:
    """Table indices of the loss rows whose mean of ``metric``, rounded as shown, is the best (max for ↑, min for ↓);
    ties are all best. The reference-ceiling row never counts."""
    column = f"{metric}_mean"
    if column not in board.table:
        return set()
    info = metric_info(metric)
    losses = loss_rows(board.table)
    shown = losses[column].astype(float).round(info.digits)
    shown = shown[np.isfinite(shown)]
    if shown.empty:
        return set()
    best = shown.max() if info.higher_is_better else shown.min()
    return set(shown.index[shown == best])


def _cell(mean: float, std: float, digits: int, bold: bool) -> str:
    if not np.isfinite(mean):
        return "--"
    text = f"{mean:.{digits}f}"
    text = rf"\textbf{{{text}}}" if bold else text
    return text + (rf" $\pm$ {std:.{digits}f}" if np.isfinite(std) else "")


def to_latex(board: Leaderboard, notes: Sequence[str] = ()) -> str:
    """A booktabs ``table`` (needs ``\\usepackage{booktabs}``): rank, loss, seeds, mean ± std per metric with ↑/↓ in
    the header, the best value of each column in bold (respecting the metric's direction), p vs the baseline (Holm);
    the footnotes follow as LaTeX comments."""
    metrics = list(board.metrics)
    best = {m: best_rows(board, m) for m in metrics}
    headers = [r"\#", "Loss", "Seeds ok/failed"] + [latex_escape(metric_info(m).header) for m in metrics]
    align = "rlc" + "r" * len(metrics)
    if board.baseline:
        headers.append(latex_escape(f"p vs {board.baseline} (Holm)"))
        align += "r"
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{latex_escape(board.title)}. Mean $\pm$ std over seeds; best per column in bold.}}",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(headers) + r" \\",
        r"\midrule",
    ]
    for index, row in board.table.iterrows():
        rank = "" if not np.isfinite(row["rank"]) else str(int(row["rank"]))
        cells = [rank, latex_escape(row["loss"]), f"{int(row['n_seeds'])}/{int(row['n_failed'])}"]
        for m in metrics:
            info = metric_info(m)
            cells.append(_cell(row[f"{m}_mean"], row[f"{m}_std"], info.digits, index in best[m]))
        if board.baseline:
            cells.append(_p_cell(row.get(f"p_holm_vs_{board.baseline}")))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    lines += [f"% {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _p_cell(p: Any) -> str:
    if p is None or not np.isfinite(p):
        return "--"
    return "$<$0.001" if p < 0.001 else f"{p:.3g}"
