"""Leaderboard outputs: the ranked table of :mod:`benchmarks.ranking` as csv, Markdown, terminal and HTML (with
figures); json and LaTeX come from :mod:`benchmarks.leaderboard_formats`. See docs/leaderboard.md.

The ranking API (:func:`build_leaderboard`, :class:`Leaderboard`, ...) and the run records are re-exported here, so
``from benchmarks.leaderboard import build_leaderboard`` keeps working.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import stats
from benchmarks.metric_names import MetricInfo, metric_info
from benchmarks.ranking import (
    COLLAPSE_RATIO,
    DEFAULT_BASELINE,
    DEFAULT_METRICS,
    DEFAULT_RANK_METRIC,
    REFERENCE_METRICS,
    REFERENCE_ROW,
    Leaderboard,
    build_leaderboard,
    choose_metrics,
    collapsed_classes,
)
from benchmarks.report_pages import overlay_reports_html
from benchmarks.run_records import DamagedRun, RunRecord, collect_runs, pooled_case_values, read_run, read_suite_yaml
from lss_vlm.io import atomic_write_text

__all__ = [
    "COLLAPSE_RATIO",
    "DEFAULT_BASELINE",
    "DEFAULT_METRICS",
    "DEFAULT_RANK_METRIC",
    "FORMATS",
    "REFERENCE_METRICS",
    "REFERENCE_ROW",
    "DamagedRun",
    "Leaderboard",
    "MetricInfo",
    "RunRecord",
    "build_leaderboard",
    "choose_metrics",
    "collapsed_classes",
    "collect_runs",
    "metric_info",
    "notes",
    "pooled_case_values",
    "print_terminal",
    "read_run",
    "read_suite_yaml",
    "to_html",
    "to_markdown",
    "write_leaderboard",
]

#: Files ``write_leaderboard`` can write: leaderboard.csv, .md, .html (+ figures/), .json (docs/leaderboard.md), .tex.
FORMATS: tuple[str, ...] = ("csv", "md", "html", "json", "latex")
#: Figures that span the whole page width in the HTML (grids of panels).
WIDE_FIGURES = ("pid_trajectories", "confusion_matrices", "attention_overlays")

#: The minority classes whose Dice the notes compare best vs worst.
MINORITY_METRICS: tuple[str, ...] = ("dice/ligamentum_flavum", "dice/thecal_sac")
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


def to_html(board: Leaderboard, figures: dict[str, Path] | None = None) -> str:
    """A self-contained HTML page: sortable table (inline CSS/JS, CI in tooltips) and figures as base64 PNG."""
    from benchmarks.plots import embed_png

    headers, rows = display_rows(board)
    sort_keys = _sort_keys(board)
    head = "".join(
        f'<th onclick="sortBy({i})" title="click to sort">{html.escape(h)}</th>' for i, h in enumerate(headers)
    )
    body = []
    for (_, row), cells, keys in zip(board.table.iterrows(), rows, sort_keys):
        tds = []
        for j, (cell, key) in enumerate(zip(cells, keys)):
            tip = _ci_tooltip(board, row, j)
            warn = ' class="warn"' if j == 2 and row["n_failed"] else ""
            tds.append(f'<td data-v="{html.escape(str(key))}"{tip}{warn}>{html.escape(cell)}</td>')
        cls = ' class="failed"' if row["n_seeds"] == 0 else ""
        body.append(f"<tr{cls}>{''.join(tds)}</tr>")
    figure_html = "".join(
        f'<figure class="{"wide" if name in WIDE_FIGURES else ""}"><img alt="{html.escape(name)}" '
        f'src="{embed_png(path)}"><figcaption>{html.escape(caption)}'
        f"</figcaption></figure>"
        for name, (path, caption) in (figures or {}).items()
    )
    note_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes(board))
    return _HTML_TEMPLATE.format(
        title=html.escape(board.title),
        head=head,
        body="\n".join(body),
        notes=note_html,
        figures=figure_html,
        reports=overlay_reports_html(board.runs, [n for n in board.table["loss"] if n != REFERENCE_ROW]),
    )


def _sort_keys(board: Leaderboard) -> list[list[object]]:
    keys = []
    for _, row in board.table.iterrows():
        line: list[object] = [row["rank"], row["loss"], row["n_seeds"]]
        line += [row[f"{m}_mean"] for m in board.metrics] + [row[f"{board.rank_by}_ci_low"]]
        if board.baseline:
            line += [row[f"p_vs_{board.baseline}"], row[f"p_holm_vs_{board.baseline}"]]
        keys.append(["" if isinstance(k, float) and not np.isfinite(k) else k for k in line])
    return keys


def _ci_tooltip(board: Leaderboard, row: pd.Series, column: int) -> str:
    index = column - 3
    if not 0 <= index < len(board.metrics):
        return ""
    m = board.metrics[index]
    low, high, d = row[f"{m}_ci_low"], row[f"{m}_ci_high"], metric_info(m).digits
    if not np.isfinite(low):
        return ""
    return f' title="95% CI [{format_value(low, d)}, {format_value(high, d)}]"'


_HTML_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 1.4em; }}
table {{ border-collapse: collapse; font-size: 0.9em; margin-bottom: 12px; }}
.scroll {{ overflow-x: auto; max-width: 100%; }}
th, td {{ border: 1px solid #ccc; padding: 4px 6px; text-align: right; white-space: nowrap; }}
th {{ background: #f0f3f7; cursor: pointer; user-select: none; white-space: normal; max-width: 7em;
      vertical-align: bottom; }}
td.warn {{ color: #a00; font-weight: bold; }}
th:hover {{ background: #dde6f0; }}
td:nth-child(2), td:nth-child(3), th:nth-child(2), th:nth-child(3) {{ text-align: left; }}
tbody tr:nth-child(odd) {{ background: #fafafa; }}
tbody tr:first-child {{ font-weight: bold; }}
tr.failed td {{ color: #a00; }}
th.asc::after {{ content: " \\25B2"; }} th.desc::after {{ content: " \\25BC"; }}
.notes {{ color: #555; font-size: 0.85em; }}
.figures {{ display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 12px; }}
figure {{ margin: 0; }}
figure.wide {{ grid-column: 1 / -1; max-width: 1200px; }}
figure img {{ max-width: 100%; height: auto; border: 1px solid #ddd; }}
figcaption {{ font-size: 0.85em; color: #444; text-align: center; }}
</style></head><body>
<h1>{title}</h1>
<div class="scroll"><table id="board"><thead><tr>{head}</tr></thead><tbody>
{body}
</tbody></table></div>
<ul class="notes">{notes}</ul>
<h2>Figures</h2>
<div class="figures">{figures}</div>
{reports}
<script>
let sortState = {{col: -1, asc: true}};
function sortBy(col) {{
  const table = document.getElementById("board");
  const rows = Array.from(table.tBodies[0].rows);
  sortState = {{col: col, asc: sortState.col === col ? !sortState.asc : true}};
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
  Array.from(table.tHead.rows[0].cells).forEach((th, i) => {{
    th.classList.remove("asc", "desc");
    if (i === col) th.classList.add(sortState.asc ? "asc" : "desc");
  }});
}}
</script>
</body></html>
"""


def write_leaderboard(
    board: Leaderboard, out_dir: str | Path, formats: Sequence[str] = FORMATS, figures: bool = True
) -> dict[str, Path]:
    """Write ``leaderboard.{csv,md,html,json,tex}`` (the ``formats`` asked for; ``figures/`` with html) into
    ``out_dir`` atomically (each file to a temporary sibling, then renamed); return the paths by format."""
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
        atomic_write_text(out_dir / "leaderboard.html", to_html(board, figure_paths))
        written["html"] = out_dir / "leaderboard.html"
    written.update(_write_exports(board, out_dir, formats))
    return written


def _write_exports(board: Leaderboard, out_dir: Path, formats: Sequence[str]) -> dict[str, Path]:
    """leaderboard.json and leaderboard.tex (:mod:`benchmarks.leaderboard_formats`), with the footnotes."""
    from benchmarks.leaderboard_formats import json_text, to_latex

    written = {}
    for kind, name, render in (("json", "leaderboard.json", json_text), ("latex", "leaderboard.tex", to_latex)):
        if kind in formats:
            atomic_write_text(out_dir / name, render(board, notes(board)))
            written[kind] = out_dir / name
    return written
