"""``lss-bench leaderboard``: rank the losses of a suite directory (csv, md, html + figures)."""

from __future__ import annotations

import argparse

HELP = "rank the losses of a suite directory (csv, md, html + figures)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from lss_vlm.errors import NotAvailableError

    raise NotAvailableError("'lss-bench leaderboard' is not available yet in this build (issue #6)")
