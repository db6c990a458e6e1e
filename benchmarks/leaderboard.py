"""Leaderboard outputs: the ranked table of :mod:`benchmarks.ranking` as csv, Markdown, terminal and HTML (with
figures); json and LaTeX come from :mod:`benchmarks.leaderboard_formats`. See docs/leaderboard.md.

The ranking API (:func:`build_leaderboard`, :class:`Leaderboard`, ...) and the run records are re-exported here, so
``from benchmarks.leaderboard import build_leaderboard`` keeps working.
"""

from __future__ import annotations

import math

import numpy as np

from benchmarks import stats
from benchmarks.metric_names import MetricInfo, metric_info
from benchmarks.ranking import (
    COLLAPSE_RATIO,
    DEFAULT_BASELINE,
    DEFAULT_METRICS,
    DEFAULT_RANK_METRIC,
    MEASURED_REFERENCE_ROW,
    REFERENCE_METRICS,
    REFERENCE_ROW,
    REFERENCE_ROWS,
    Leaderboard,
    build_leaderboard,
    choose_metrics,
    collapsed_classes,
    has_case_values,
    loss_rows,
    missing_classes,
)
from benchmarks.run_records import DamagedRun, RunRecord, collect_runs, pooled_case_values, read_run, read_suite_yaml

__all__ = [
    "COLLAPSE_RATIO",
    "DEFAULT_BASELINE",
    "DEFAULT_METRICS",
    "DEFAULT_RANK_METRIC",
    "MEASURED_REFERENCE_ROW",
    "REFERENCE_METRICS",
    "REFERENCE_ROW",
    "REFERENCE_ROWS",
    "DamagedRun",
    "Leaderboard",
    "MetricInfo",
    "RunRecord",
    "build_leaderboard",
    "choose_metrics",
    "collapsed_classes",
    "missing_classes",
    "collect_runs",
    "metric_info",
    "notes",
    "pooled_case_values",
    "print_terminal",
    "read_run",
    "read_suite_yaml",
    "to_markdown",
]

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


def missing_notes(board: Leaderboard) -> list[str]:
    """One footnote per loss with a class predicted at under 1/COLLAPSE_RATIO of its true area in some seed (see
    :func:`missing_classes`)."""
    return [
        f"MISSING: {row['loss']} predicts {row['missing']} per seed, under {1 / COLLAPSE_RATIO:.2f} of the true area "
        "in at least one seed: the class is lost into its neighbours, so its Dice and the macro mean measure that "
        "failure; see docs/losses.md."
        for _, row in board.table.iterrows()
        if isinstance(row.get("missing"), str) and row["missing"]  # NaN for the reference-ceiling row
    ]


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
    """One line per metric family that no completed run scored (its key absent or NaN in every run's metrics),
    whether or not the table shows the family's column: a suite's ``columns`` may leave a scored family out."""
    done = [r for r in board.runs if r.completed]
    return [
        f"{family} not scored: {why}."
        for metric, family, why in UNSCORED_FAMILIES
        if not any(math.isfinite(r.metrics.get(metric, math.nan)) for r in done)
    ]


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
    losses = loss_rows(board.table)  # the ceiling row counts runs, not seeds
    n_seeds = max((int(v) for v in losses["n_seeds"]), default=0)
    ci_over = "seeds" if n_seeds >= 2 else "test cases (1 seed per loss)"
    test = "Wilcoxon signed-rank" if board.test == "wilcoxon" else "paired bootstrap"
    lines = [
        f"Ranked by {metric_info(board.rank_by).header} (mean over completed seeds). Cells: mean ± std over seeds.",
        f"95% CI: {stats.CI_METHOD} over {ci_over}.",
        "↑ higher is better, ↓ lower is better. CIDEr×100 = CIDEr-D × 100. Grade acc. is a fraction (0–1).",
    ]
    if board.baseline and has_case_values(board.case_values.get(board.rank_by, {})):
        lines.append(
            f"p vs {board.baseline}: two-sided {test} test over test cases of {board.rank_by} "
            "(per-case values averaged over views and seeds); Holm-corrected across losses."
        )
    elif board.baseline:
        lines.append(
            f"p vs {board.baseline}: no paired test: the runs have no per-case values of {board.rank_by} "
            "(per_case.csv holds the per-view segmentation metrics)."
        )
    for metric in dict.fromkeys([board.rank_by, *MINORITY_METRICS]):
        spread = board.best_vs_worst(metric) if metric in board.metrics else None
        if spread is not None:
            best, worst, gap, p = spread
            digits = metric_info(metric).digits
            tested = "no per-case values"
            if has_case_values(board.case_values.get(metric, {})):
                tested = f"paired {test} {p_clause(p)}"
            lines.append(
                f"Best vs worst on {metric_info(metric).label}: {best} − {worst} = {gap:+.{digits}f} ({tested})."
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
    if (board.table["loss"] == MEASURED_REFERENCE_ROW).any():
        lines.append(measured_ceiling_note(board))
    lines += unscored_notes(board)
    lines += collapse_notes(board)
    lines += missing_notes(board)
    lines += board.problems
    scored = scored_cases_note(board)
    if scored is not None:
        lines.append(scored)
    for r in board.failed_runs:
        lines.append(f"{r.status.upper()} run {r.loss} seed{r.seed}: {r.reason}")
    return lines


def measured_ceiling_note(board: Leaderboard) -> str:
    """The footnote of :data:`MEASURED_REFERENCE_ROW`, naming what its cells are for the columns shown."""
    shown = REFERENCE_ROWS[MEASURED_REFERENCE_ROW]
    parts = []
    if "cider_x100" in board.metrics:
        parts.append(
            "CIDEr×100 is the leave-one-out ceiling with the held-out reference's numbers (dural-sac area, AP "
            "diameter) measured on the true masks: the score of a model whose text is right and whose masks equal the "
            "truth on its grid"
        )
    exact = [m for m in ("area_exact", "ap_exact") if m in board.metrics]
    if exact:
        parts.append(
            f"{' and '.join(metric_info(m).label for m in exact)} are the true masks' shares "
            f"({', '.join(shown[m] for m in exact)}): what the measurement route itself allows"
        )
    return (
        f"{MEASURED_REFERENCE_ROW}: the true masks measured like a prediction (resampled from the model's grid to the "
        f"grid of eval.measure_on); {'; '.join(parts)}."
    )


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
