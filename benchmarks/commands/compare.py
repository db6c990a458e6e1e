"""``lss-bench compare``: run every loss x seed of a suite (resumable) and write its leaderboard."""

from __future__ import annotations

import argparse

HELP = "run every loss x seed of a suite (resumable) and write its leaderboard"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from lss_vlm.errors import NotAvailableError

    raise NotAvailableError("'lss-bench compare' is not available yet in this build (issue #6)")
