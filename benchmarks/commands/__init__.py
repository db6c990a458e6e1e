"""``lss-bench`` subcommands; shared argument helpers live here."""

from __future__ import annotations

import argparse


def seed_int(text: str) -> int:
    """An argparse type for seeds: a whole number from 0 to 2**32 - 1 (what numpy's generators accept)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {2**32 - 1}, got {value}")
    return value


def add_set_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """The repeatable ``--set KEY=VALUE`` config override (collected in ``args.overrides``)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)
