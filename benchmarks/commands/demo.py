"""``lss-bench demo``: synthesise the phantom, run the quick suite and print the leaderboard."""

from __future__ import annotations

import argparse

HELP = "synthesise the phantom, run the quick suite and print the leaderboard"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from lss_vlm.errors import NotAvailableError

    raise NotAvailableError("'lss-bench demo' is not available yet in this build (issue #6)")
