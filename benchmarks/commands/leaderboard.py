"""``lss-bench leaderboard``: rank the losses of one or more suite directories (csv, md, html, json, latex)."""

from __future__ import annotations

import argparse

from benchmarks.commands import add_mismatch_argument

HELP = "rank the losses of one or more suite directories (csv, md, html + figures, json, latex)"
DESCRIPTION = """Rank the losses of a suite directory (written by 'lss-bench compare') by a metric: mean +- std over
seeds, 95% t-interval CI, and a paired test over test cases against the baseline loss (Holm-corrected). Several
DIRs pool their runs into one leaderboard (a (loss, seed) may appear in only one of them).

Runs must be comparable: a run whose budget (epochs, batch size, ...), data hash, model or package versions differ
from the majority of the runs is refused (one error line naming the run and the fields), or, with --mismatch flag,
ranked with a footnote. Writes leaderboard.csv, .md, .html (+ figures/*.png), .json (schema: docs/leaderboard.md)
and .tex into DIR (or --out) and prints the table.
"""
EXAMPLES = """\
examples:
  lss-bench leaderboard lss_runs/quick
  lss-bench leaderboard lss_runs/quick --metric dice/thecal_sac --out lss_runs/quick/by_thecal_sac
  lss-bench leaderboard runs/seeds0-2 runs/seeds3-5 --out runs/pooled --format latex
  lss-bench leaderboard runs/old runs/new --out runs/both --mismatch flag"""

FORMAT_CHOICES = ("csv", "md", "html", "json", "latex", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="suite directory (holds runs/<loss>/seed<k>/)")
    parser.add_argument(
        "--format", choices=FORMAT_CHOICES, default="all", help="file(s) to write (default: %(default)s)"
    )
    parser.add_argument("--baseline", default=None, metavar="LOSS", help="loss to test against (default: suite's)")
    parser.add_argument("--metric", default=None, metavar="M", help="rank metric, e.g. dice/ligamentum_flavum")
    parser.add_argument(
        "--test", choices=("wilcoxon", "bootstrap"), default="wilcoxon", help="paired test (default: %(default)s)"
    )
    parser.add_argument("--no-figures", action="store_true", help="html without figures (faster)")
    parser.add_argument(
        "--out",
        default=None,
        metavar="OUT",
        help="folder to write the files into (default: DIR itself; required with several DIRs)",
    )
    add_mismatch_argument(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks.leaderboard import build_leaderboard, print_terminal
    from benchmarks.leaderboard_files import FORMATS, write_leaderboard
    from benchmarks.ood import print_ood
    from lss_vlm.errors import ConfigError

    if len(args.dirs) > 1 and args.out is None:
        raise ConfigError(f"--out: required when pooling {len(args.dirs)} suite folders (the leaderboard of the pool)")
    board = build_leaderboard(
        args.dirs, rank_by=args.metric, baseline=args.baseline, test=args.test, mismatch=args.mismatch
    )
    formats = FORMATS if args.format == "all" else (args.format,)
    out = Path(args.out) if args.out is not None else Path(args.dirs[0])
    written = write_leaderboard(board, out, formats=formats, figures=not args.no_figures)
    print_terminal(board)
    print_ood(board)  # the OOD suite's per-shift table (nothing for other suites)
    for kind, path in written.items():
        print(f"{kind:>5}: {path}")
    return 0
