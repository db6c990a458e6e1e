"""``lss-bench tune``: Optuna search over loss hyperparameters (PID gains) on SQLite/PostgreSQL storage."""

from __future__ import annotations

import argparse

HELP = "Optuna search over loss hyperparameters (PID gains) on SQLite/PostgreSQL storage"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    from lss_vlm.errors import NotAvailableError

    raise NotAvailableError("'lss-bench tune' is not available yet in this build (issue #7)")
