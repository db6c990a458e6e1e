"""``lss-bench leaderboard``: rank the losses of a suite directory (csv, md, html + figures)."""

from __future__ import annotations

import argparse

HELP = "rank the losses of a suite directory (csv, md, html + figures)"
DESCRIPTION = """Rank the losses of a suite directory (written by 'lss-bench compare') by a metric: mean +- std over
seeds, 95% t-interval CI, and a paired test over test cases against the baseline loss (Holm-corrected).
Writes DIR/leaderboard.csv, .md, .html (+ DIR/figures/*.png) and prints the table."""
EXAMPLES = """\
examples:
  lss-bench leaderboard lss_runs/standard
  lss-bench leaderboard lss_runs/standard --metric dice/ligamentum_flavum --baseline dice --test bootstrap
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="suite directory (holds runs/<loss>/seed<k>/)")
    parser.add_argument("--format", choices=("csv", "md", "html", "all"), default="all", help="files to write")
    parser.add_argument("--baseline", default=None, metavar="LOSS", help="loss to test against (default: suite's)")
    parser.add_argument("--metric", default=None, metavar="M", help="rank metric, e.g. dice/ligamentum_flavum")
    parser.add_argument("--test", choices=("wilcoxon", "bootstrap"), default="wilcoxon", help="paired test")
    parser.add_argument("--no-figures", action="store_true", help="html without figures (faster)")


def run(args: argparse.Namespace) -> int:
    from benchmarks.leaderboard import FORMATS, build_leaderboard, print_terminal, write_leaderboard

    board = build_leaderboard(args.dir, rank_by=args.metric, baseline=args.baseline, test=args.test)
    formats = FORMATS if args.format == "all" else (args.format,)
    written = write_leaderboard(board, args.dir, formats=formats, figures=not args.no_figures)
    print_terminal(board)
    for kind, path in written.items():
        print(f"{kind:>4}: {path}")
    return 0
