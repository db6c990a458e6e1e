"""Writing a leaderboard to disk: ``leaderboard.{csv,md,html,json,tex}`` and ``figures/``, each file atomically.

Sits above the text tables (:mod:`benchmarks.leaderboard`), the page (:mod:`benchmarks.leaderboard_html`), the exports
(:mod:`benchmarks.leaderboard_formats`) and the figures (:mod:`benchmarks.plots`); none of them imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from benchmarks.leaderboard import notes, to_markdown
from benchmarks.ood import write_ood_tables
from benchmarks.ranking import Leaderboard
from lss_vlm.io import atomic_path, atomic_write_text

#: Files ``write_leaderboard`` can write: leaderboard.csv, .md, .html (+ figures/), .json (docs/leaderboard.md), .tex.
FORMATS: tuple[str, ...] = ("csv", "md", "html", "json", "latex")


def write_leaderboard(
    board: Leaderboard, out_dir: str | Path, formats: Sequence[str] = FORMATS, figures: bool = True
) -> dict[str, Path]:
    """Write ``leaderboard.{csv,md,html,json,tex}`` (the ``formats`` asked for; ``figures/`` with html) into
    ``out_dir`` atomically (each file to a temporary sibling, then renamed); return the paths by format."""
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    if "csv" in formats:
        with atomic_path(out_dir / "leaderboard.csv") as tmp:
            board.table.to_csv(tmp, index=False, float_format="%.6g")
        written["csv"] = out_dir / "leaderboard.csv"
    if "md" in formats:
        atomic_write_text(out_dir / "leaderboard.md", to_markdown(board))
        written["md"] = out_dir / "leaderboard.md"
    if "html" in formats:
        written["html"] = _write_page(board, out_dir, figures)
    written.update(_write_exports(board, out_dir, formats))
    written.update(write_ood_tables(board, out_dir, formats))  # ood_shift.{csv,md,json} of an OOD suite
    return written


def _write_page(board: Leaderboard, out_dir: Path, figures: bool) -> Path:
    """leaderboard.html with its figures (matplotlib is imported only when figures are drawn)."""
    from benchmarks.leaderboard_html import to_html

    figure_paths = {}
    if figures:
        from benchmarks.plots import make_figures

        figure_paths = make_figures(board, out_dir / "figures")
    atomic_write_text(out_dir / "leaderboard.html", to_html(board, figure_paths))
    return out_dir / "leaderboard.html"


def _write_exports(board: Leaderboard, out_dir: Path, formats: Sequence[str]) -> dict[str, Path]:
    """leaderboard.json and leaderboard.tex (:mod:`benchmarks.leaderboard_formats`), with the footnotes."""
    from benchmarks.leaderboard_formats import json_text, to_latex

    written = {}
    for kind, name, render in (("json", "leaderboard.json", json_text), ("latex", "leaderboard.tex", to_latex)):
        if kind in formats:
            atomic_write_text(out_dir / name, render(board, notes(board)))
            written[kind] = out_dir / name
    return written
