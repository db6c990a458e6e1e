"""The leaderboard as one self-contained HTML page that cannot mislead.

* A header states what was run: the data, the number of test cases, the budget (epochs, batch size, image size),
  the seeds, the date, the git sha and the lss-vlm version (from the runs' ``config.yaml``, ``metrics.json`` and
  ``provenance.json``).
* A one-seed suite carries a warning: its p-values compare two trained models over test cases, not two losses.
* Each metric cell shows mean ± std over seeds and, on a second line, the 95 % CI.
* The best value of each metric column is bold, chosen by the metric's direction (↑ / ↓), not by row position, so
  it stays right after re-sorting. The first click on a column sorts best-first (↑ descending, ↓ ascending).
* A metric that is 0 or missing for every loss gets a footnote saying why.
* Figures are embedded as ``data:`` URIs (PNG plots, JPEG overlays).
"""

from __future__ import annotations

import datetime
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.leaderboard import (
    WIDE_FIGURES,
    Leaderboard,
    format_p,
    format_value,
    metric_info,
    notes,
)
from benchmarks.leaderboard_formats import best_rows as best_rows_of
from benchmarks.ood import ood_table
from benchmarks.ood import to_html as ood_html
from benchmarks.plots import embed_image
from benchmarks.ranking import is_reference_row, loss_rows
from benchmarks.report_pages import overlay_reports_html
from benchmarks.versions import git_sha, package_version


# ------------------------------------------------------------------------------------------------------ the header
def _data_label(cfg: dict) -> str:
    data = cfg.get("data") or {}
    if data.get("manifest"):
        manifest = Path(str(data["manifest"]))
        return f"dataset {manifest.parent.name} ({manifest})"
    ph = data.get("phantom") or {}
    shift = f", shift {ph['shift']}" if ph.get("shift") else ""
    return f"phantom ({ph.get('n_cases', '?')} cases, {ph.get('size', '?')} px, seed {ph.get('seed', '?')}{shift})"


def _budget_label(cfg: dict) -> str:
    data, train = cfg.get("data") or {}, cfg.get("train") or {}
    return (
        f"{train.get('epochs', '?')} epochs, batch size {data.get('batch_size', '?')}, "
        f"image size {data.get('spatial_size', '?')} px"
    )


def _joined(values: Sequence[str], fallback: str = "unknown") -> str:
    unique = list(dict.fromkeys(v for v in values if v))
    return "; ".join(unique) if unique else fallback


def _seeds_label(board: Leaderboard) -> str:
    counts = loss_rows(board.table)["n_seeds"].astype(int).tolist()
    if not counts:
        return "0"
    low, high = min(counts), max(counts)
    text = f"{high} per loss" if low == high else f"{low}–{high} per loss (completed)"
    failed = len(board.failed_runs)
    return text + (f", {failed} failed run(s)" if failed else "")


def header_fields(board: Leaderboard, today: datetime.date | None = None) -> list[tuple[str, str]]:
    """(label, value) pairs of the page header: data, test cases, budget, seeds, date, git sha, lss-vlm version.

    Values that differ between runs are all listed (``; ``-separated). The git sha and version come from the runs'
    ``provenance.json``; without one, from the code that writes the page (git sha "unknown" outside a git checkout).
    """
    done = [r for r in board.runs if r.completed]
    configs = [r.config() or {} for r in done]
    provenance = [r.provenance() for r in done]
    cases = sorted({int(r.metrics["n_cases"]) for r in done if math.isfinite(r.metrics.get("n_cases", math.nan))})
    shas = [str(p["git_sha"]) for p in provenance if p.get("git_sha")]
    versions = [str((p.get("packages") or {}).get("lss-vlm") or "") for p in provenance]
    today = today or datetime.datetime.now(datetime.timezone.utc).date()
    return [
        ("Data", _joined([_data_label(c) for c in configs if c])),
        ("Test cases", ", ".join(str(n) for n in cases) if cases else "unknown"),
        ("Budget", _joined([_budget_label(c) for c in configs if c])),
        ("Seeds", _seeds_label(board)),
        ("Date", today.isoformat()),
        ("Git sha", _joined(shas, fallback=git_sha() or "unknown")),
        ("lss-vlm version", _joined(versions, fallback=package_version("lss-vlm") or "unknown")),
    ]


def one_seed_warning(board: Leaderboard) -> str | None:
    """The warning of a suite whose losses ran one seed each (None with ≥ 2 seeds for some loss)."""
    counts = loss_rows(board.table)["n_seeds"]
    if counts.empty or int(counts.max()) >= 2:
        return None
    return (
        "One seed per loss: each row is one trained model. The p-values and CIs are over test cases, so they compare "
        "two trained models, not two losses; seed-to-seed variation (often as large as the gaps) is not in them. "
        "Run at least 3 seeds (lss-bench compare SUITE --seeds 3) before concluding that one loss is better."
    )


# ------------------------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Column:
    """One column of the HTML table: header text, first-click sort direction and, for a metric, its key."""

    header: str
    first_sort: str  # "asc" or "desc": the direction of the first click (best first for a metric)
    metric: str | None = None


def columns(board: Leaderboard) -> list[Column]:
    """The table's columns: rank, loss, seeds, one per metric (best first on the first click), p-values."""
    cols = [Column("#", "asc"), Column("loss", "asc"), Column("seeds ok/failed", "desc")]
    for m in board.metrics:
        info = metric_info(m)
        cols.append(Column(info.header, "desc" if info.higher_is_better else "asc", m))
    if board.baseline:
        cols += [Column(f"p vs {board.baseline}", "asc"), Column("p (Holm)", "asc")]
    return cols


def _ranked(board: Leaderboard) -> pd.DataFrame:
    """The rows that compete: losses with at least one completed seed (not the reference-ceiling row)."""
    table = board.table
    losses = loss_rows(table)
    return losses[losses["n_seeds"] > 0]


def best_rows(board: Leaderboard) -> dict[str, set[int]]:
    """{metric: indices of ``board.table`` rows whose mean, as printed, is the column's best} (by the metric's
    direction; ties all count; the reference-ceiling row never does): :func:`benchmarks.leaderboard_formats.best_rows`
    per column, the same rule as the LaTeX table."""
    best = {m: best_rows_of(board, m) for m in board.metrics}
    return {m: rows for m, rows in best.items() if rows}


#: Why a metric can be 0 or missing for every loss, by key prefix (first match wins): (if all missing, if all 0).
_EMPTY_REASONS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (
        (
            "cider",
            "bleu",
            "meteor",
            "rouge",
            "bertscore",
            "composed/cider",
            "composed/bleu",
            "composed/meteor",
            "composed/rouge",
            "composed/bertscore",
        ),
        "not computed: text metrics are off (eval.text_metrics: false), Java is missing (pycocoevalcap's tokenizer "
        "needs it) or the data has no reference reports",
        "the reports share no n-grams with the references: the report decoder has not learnt to write at this "
        "budget, or the model has no learned decoder (template reports)",
    ),  # fmt: skip
    (
        ("grade_f1_from_text", "composed/grade_f1_from_text"),
        "no report was generated, or the data has no grade labels",
        "no stenosis grade could be read from the reports (fragments without a level and grade)",
    ),
    (
        ("dice", "iou", "hd95", "msd"),
        "not scored: the data has no ground-truth masks (e.g. RSNA 2024), or no prediction of the class",
        "no loss segmented the class at this budget (see the collapse notes)",
    ),
    (
        ("accuracy", "balanced_accuracy", "macro_f1", "qwk", "auroc", "ece"),
        "not scored: the data has no grade labels (e.g. SPIDER, Mendeley), or a grade lacks positives or negatives",
        "no grade was predicted right",
    ),
    (
        ("area_mae",),
        "no area was measured: the build has no report composer, or no axial view had a predicted dural sac",
        "every measured area matched",
    ),
)


def empty_column_notes(board: Leaderboard) -> dict[str, str]:
    """{metric: footnote} for each shown metric that is 0 or missing (NaN) for every competing loss."""
    ranked = _ranked(board)
    found: dict[str, str] = {}
    for m in board.metrics:
        values = pd.to_numeric(ranked[f"{m}_mean"], errors="coerce").to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        if finite.size and np.any(finite != 0):
            continue
        missing = finite.size == 0
        why_missing, why_zero = next(
            ((a, b) for prefixes, a, b in _EMPTY_REASONS if m.startswith(prefixes)),
            ("no run reports it", "every run reports 0"),
        )
        label = metric_info(m).label
        found[m] = (
            f"{label} is {'missing (–)' if missing else '0'} for every loss: {why_missing if missing else why_zero}."
        )
    return found


def _metric_cell(row: pd.Series, m: str, bold: bool) -> tuple[object, str]:
    digits = metric_info(m).digits
    mean, std, low, high = (row.get(f"{m}_{k}", math.nan) for k in ("mean", "std", "ci_low", "ci_high"))
    text = html.escape(format_value(mean, digits))
    if np.isfinite(std):
        text += f" ± {html.escape(format_value(std, digits))}"
    if bold:
        text = f"<b>{text}</b>"
    if np.isfinite(low) and np.isfinite(high):
        text += f'<br><small class="ci">[{format_value(low, digits)}, {format_value(high, digits)}]</small>'
    return mean, text


def _cells(board: Leaderboard, index: int, row: pd.Series, best: dict[str, set[int]]) -> list[tuple[object, str]]:
    """(sort key, inner HTML) per column of one row."""
    failed = int(row["n_failed"]) if np.isfinite(row["n_failed"]) else 0
    cells: list[tuple[object, str]] = [
        (row["rank"], html.escape(format_value(row["rank"], 0))),
        (row["loss"], html.escape(str(row["loss"]))),
        (row["n_seeds"], f"{format_value(row['n_seeds'], 0)}/{failed}"),
    ]
    cells += [_metric_cell(row, m, index in best.get(m, set())) for m in board.metrics]
    if board.baseline:
        for key in (f"p_vs_{board.baseline}", f"p_holm_vs_{board.baseline}"):
            cells.append((row.get(key, math.nan), html.escape(format_p(row.get(key, math.nan)))))
    return cells


def _sort_key(value: object) -> str:
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return ""
    return html.escape(str(value))


def table_html(board: Leaderboard) -> tuple[str, list[str]]:
    """``<table>`` of the leaderboard and the footnotes of its all-empty columns (marked † in the header)."""
    cols = columns(board)
    empty = empty_column_notes(board)
    marks = {m: f"†{i}" for i, m in enumerate(empty, start=1)}
    head = "".join(
        f'<th data-first="{c.first_sort}" onclick="sortBy({i})" title="click to sort; first click: '
        f'{"best first" if c.metric else c.first_sort + "ending"}">{html.escape(c.header)}'
        + (f'<sup><a href="#empty-{marks[c.metric][1:]}">{marks[c.metric]}</a></sup>' if c.metric in marks else "")
        + "</th>"
        for i, c in enumerate(cols)
    )
    best = best_rows(board)
    body = []
    for index, row in board.table.iterrows():
        tds = []
        for j, (key, inner) in enumerate(_cells(board, int(index), row, best)):
            warn = ' class="warn"' if j == 2 and row["n_failed"] else ""
            tds.append(f'<td data-v="{_sort_key(key)}"{warn}>{inner}</td>')
        cls = ' class="reference"' if is_reference_row(row["loss"]) else ""
        cls = ' class="failed"' if not cls and row["n_seeds"] == 0 else cls
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    table = f'<table id="board"><thead><tr>{head}</tr></thead><tbody>\n' + "\n".join(body) + "\n</tbody></table>"
    footnotes = [f'<li id="empty-{marks[m][1:]}">{marks[m]} {html.escape(text)}</li>' for m, text in empty.items()]
    return table, footnotes


# -------------------------------------------------------------------------------------------------------- the page
def to_html(board: Leaderboard, figures: dict[str, tuple[Path, str]] | None = None) -> str:
    """The self-contained page: header, warning, sortable table (CIs in the cells), footnotes, figures, reports."""
    header = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in header_fields(board)
    )  # fmt: skip
    warning = one_seed_warning(board)
    table, empty_notes = table_html(board)
    figure_html = "".join(
        f'<figure class="{"wide" if name in WIDE_FIGURES else ""}"><img alt="{html.escape(name)}" '
        f'src="{embed_image(path)}"><figcaption>{html.escape(caption)}</figcaption></figure>'
        for name, (path, caption) in (figures or {}).items()
    )
    note_html = "".join(empty_notes) + "".join(f"<li>{html.escape(n)}</li>" for n in notes(board))
    return _HTML_TEMPLATE.format(
        title=html.escape(board.title),
        header=header,
        warning=f'<p class="warning">⚠ {html.escape(warning)}</p>' if warning else "",
        table=table,
        notes=note_html,
        figures=figure_html,
        ood=ood_html(ood_table(board.runs, [n for n in board.table["loss"] if not is_reference_row(n)])),
        reports=overlay_reports_html(board.runs, [n for n in board.table["loss"] if not is_reference_row(n)]),
    )


_HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 1.4em; }}
dl.meta {{ display: grid; grid-template-columns: max-content auto; gap: 2px 12px; font-size: 0.9em; margin: 0 0 12px; }}
dl.meta dt {{ font-weight: bold; color: #444; }} dl.meta dd {{ margin: 0; }}
p.warning {{ background: #fff4e5; border: 1px solid #e0a040; padding: 8px 12px; max-width: 70em; }}
table {{ border-collapse: collapse; font-size: 0.9em; margin-bottom: 12px; }}
.scroll {{ overflow-x: auto; max-width: 100%; }}
th, td {{ border: 1px solid #ccc; padding: 4px 6px; text-align: right; white-space: nowrap; vertical-align: top; }}
th {{ background: #f0f3f7; cursor: pointer; user-select: none; white-space: normal; max-width: 7em;
      vertical-align: bottom; }}
td small.ci {{ color: #666; }}
td.warn {{ color: #a00; font-weight: bold; }}
th:hover {{ background: #dde6f0; }}
td:nth-child(2), td:nth-child(3), th:nth-child(2), th:nth-child(3) {{ text-align: left; }}
tbody tr:nth-child(odd) {{ background: #fafafa; }}
tr.failed td {{ color: #a00; }}
tr.reference td {{ color: #555; font-style: italic; }}
th.asc::after {{ content: " \\25B2"; }} th.desc::after {{ content: " \\25BC"; }}
.notes {{ color: #555; font-size: 0.85em; }}
.figures {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 12px; }}
figure {{ margin: 0; }}
figure.wide {{ grid-column: 1 / -1; max-width: 1200px; }}
figure img {{ max-width: 100%; height: auto; border: 1px solid #ddd; }}
figcaption {{ font-size: 0.85em; color: #444; text-align: center; }}
</style></head><body>
<h1>{title}</h1>
<dl class="meta">{header}</dl>
{warning}
<div class="scroll">{table}</div>
<p class="notes">Cells: mean ± std over seeds; second line: 95% CI. Bold: the best value of each column (by its
arrow). Click a header to sort (best first), again to reverse.</p>
<ul class="notes">{notes}</ul>
{ood}
<h2>Figures</h2>
<div class="figures">{figures}</div>
{reports}
<script>
let sortState = {{col: -1, asc: true}};
function sortBy(col) {{
  const table = document.getElementById("board");
  const rows = Array.from(table.tBodies[0].rows);
  const th = table.tHead.rows[0].cells[col];
  const firstAsc = th.dataset.first !== "desc";
  sortState = {{col: col, asc: sortState.col === col ? !sortState.asc : firstAsc}};
  const key = r => r.cells[col].dataset.v;
  rows.sort((a, b) => {{
    const x = key(a), y = key(b);
    if (x === "" && y === "") return 0;
    if (x === "") return 1;
    if (y === "") return -1;
    const nx = parseFloat(x), ny = parseFloat(y);
    const c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
    return sortState.asc ? c : -c;
  }});
  rows.forEach(r => table.tBodies[0].appendChild(r));
  Array.from(table.tHead.rows[0].cells).forEach((h, i) => {{
    h.classList.remove("asc", "desc");
    if (i === col) h.classList.add(sortState.asc ? "asc" : "desc");
  }});
}}
</script>
</body></html>
"""
