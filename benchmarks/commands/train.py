"""``lss-bench train``: train one experiment config into a run directory."""

from __future__ import annotations

import argparse

HELP = "train one experiment config into a run directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from lss_vlm.errors import NotAvailableError

    raise NotAvailableError("'lss-bench train' is not available yet in this build (issue #6)")
