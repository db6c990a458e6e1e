"""``lss-bench demo``: synthesise the phantom, run the quick suite and print the leaderboard."""

from __future__ import annotations

import argparse

HELP = "synthesise the phantom, run the quick suite and print the leaderboard"
DESCRIPTION = """The embedded demo: synthesise the phantom (cached), train the SPCA VLM with 4+ segmentation losses
(the 'quick' suite: 1 seed, small budget, a few minutes on a laptop CPU), print the leaderboard (Dice, grade accuracy,
CIDEr) and write the HTML page with figures. Rerunning resumes (finished runs are skipped)."""
EXAMPLES = """\
examples:
  lss-bench demo
  lss-bench demo --out /tmp/demo --no-progress
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from benchmarks.outputs import OUTPUT_ROOT

    parser.add_argument("--out", default=str(OUTPUT_ROOT / "demo"), metavar="DIR", help="suite directory")
    parser.add_argument("--no-progress", action="store_true", help="no live progress view")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console

    from benchmarks.leaderboard import build_leaderboard, print_terminal
    from benchmarks.leaderboard_files import write_leaderboard
    from benchmarks.outputs import locked_folder
    from benchmarks.suite import SuiteProgress, load_suite, run_suite

    console = Console(stderr=True)
    out = Path(args.out)
    suite = load_suite("quick")
    losses = ", ".join(entry.label for entry in suite.losses)
    console.print(f"[bold]lss-bench demo[/]: suite 'quick' ({losses}; {len(suite.seed_list())} seed) -> {out}")
    with locked_folder(out, "demo"):
        run_suite(suite, out, progress=SuiteProgress(live=not args.no_progress, console=console))
        board = build_leaderboard(out, rank_by=suite.rank_by, baseline=suite.baseline, metrics=suite.columns)
        written = write_leaderboard(board, out)
    print_terminal(board)
    print(f"\nLeaderboard page: {written['html'].resolve()}")
    print(f"Tables: {written['csv']}  {written['md']}   Runs: {out / 'runs'}")
    return 0
