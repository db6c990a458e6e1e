"""``lss-bench report``: print the generated and composed report of one case and save an overlay PNG."""

from __future__ import annotations

import argparse

HELP = "print the generated and composed report of one case and save an overlay PNG"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from lss_vlm.errors import NotAvailableError

    raise NotAvailableError("'lss-bench report' is not available yet in this build (issue #6)")
