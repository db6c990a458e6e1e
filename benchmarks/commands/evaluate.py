"""``lss-bench evaluate``: score a trained run on a split (metrics.json, per_case.csv, reports.jsonl)."""

from __future__ import annotations

import argparse

HELP = "score a trained run on a split (metrics.json, per_case.csv, reports.jsonl)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from lss_vlm.errors import NotAvailableError

    raise NotAvailableError("'lss-bench evaluate' is not available yet in this build (issue #6)")
