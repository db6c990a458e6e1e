"""``lss-bench synth``: generate the multi-view LSS phantom (NIfTI + manifest.csv)."""

from __future__ import annotations

import argparse

HELP = "generate the multi-view LSS phantom (NIfTI + manifest.csv)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from lss_vlm.errors import NotAvailableError

    raise NotAvailableError("'lss-bench synth' is not available yet in this build (issue #2)")
