"""``lss-bench`` subcommands; shared argument helpers live here."""

from __future__ import annotations

import argparse


def add_set_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """The repeatable ``--set KEY=VALUE`` config override (collected in ``args.overrides``)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)
