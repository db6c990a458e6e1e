"""HTML of the reports of the fixed overlay case: generated, composed and one reference, side by side (issue 13).

The overlay case is the first test case in sorted order (the case ``overlay.jpg`` shows, see
:mod:`benchmarks.evaluation`); per loss, the lowest completed seed's ``reports.jsonl`` is read.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path


def overlay_case_reports(run_dir: Path) -> dict | None:
    """The ``reports.jsonl`` record of the overlay case (smallest case id) of a run, or None without reports."""
    path = Path(run_dir) / "reports.jsonl"
    if not path.is_file():
        return None
    try:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError):
        return None
    return min(records, key=lambda r: r.get("case_id", "")) if records else None


def overlay_reports_html(runs: Sequence, losses: Sequence[str]) -> str:
    """A ``<h2>`` section with one row per loss: case id, generated, composed and first reference report.

    ``runs``: the leaderboard's run records (``loss``, ``seed``, ``path``, ``completed``); ``losses``: row order.
    Returns ``""`` when no run has reports.
    """
    rows = []
    for loss in losses:
        done = sorted((r for r in runs if r.loss == loss and r.completed), key=lambda r: r.seed)
        found = next(((r.seed, rec) for r in done if (rec := overlay_case_reports(r.path)) is not None), None)
        if found is None:
            continue
        seed, record = found
        cells = [record.get("generated", ""), record.get("composed", ""), (record.get("references") or [""])[0]]
        tds = "".join(f'<td class="report">{html.escape(str(c))}</td>' for c in cells)
        head = f"{html.escape(loss)}<br><small>seed {seed}, case {html.escape(str(record.get('case_id', '')))}</small>"
        rows.append(f'<tr><td class="report-loss">{head}</td>{tds}</tr>')
    if not rows:
        return ""
    return (
        "<h2>Reports of the overlay case</h2>\n"
        '<div class="scroll"><table class="reports"><thead><tr><th>loss</th><th>generated (learned decoder)</th>'
        "<th>composed (from the predicted masks)</th><th>reference 1</th></tr></thead><tbody>\n"
        + "\n".join(rows)
        + "\n</tbody></table></div>\n"
        "<style>table.reports td.report { white-space: normal; text-align: left; vertical-align: top;"
        " min-width: 22em; max-width: 32em; font-size: 0.85em; } table.reports td.report-loss { text-align: left;"
        " vertical-align: top; }</style>"
    )
