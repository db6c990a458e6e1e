"""``lss-bench`` subcommands; shared argument helpers live here."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def seed_int(text: str) -> int:
    """An argparse type for seeds: a whole number from 0 to 2**32 - 1 (what numpy's generators accept)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"expected a seed from 0 to {2**32 - 1}, got {value}")
    return value


def bounded_number(kind: type, low: float, what: str, strict: bool = False) -> Callable[[str], int | float]:
    """An argparse type: a finite ``kind`` (``int`` or ``float``) ``>= low`` (``> low`` when ``strict``); else the
    error ``expected <what>, got '<text>'``."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def add_set_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """The repeatable ``--set KEY=VALUE`` config override (collected in ``args.overrides``)."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)


def add_dry_run_argument(parser: argparse.ArgumentParser) -> None:
    """``--dry-run``: resolve and check the whole plan, print it, train nothing (see ``lss-bench validate``)."""
    parser.add_argument(
        "--dry-run", action="store_true", help="resolve and check the plan, print it and exit; nothing is trained"
    )


def add_mismatch_argument(parser: argparse.ArgumentParser) -> None:
    """``--mismatch refuse|flag``: what the leaderboard does with incomparable runs (``benchmarks.comparability``)."""
    parser.add_argument(
        "--mismatch",
        choices=("refuse", "flag"),
        default="refuse",
        help="runs whose versions, budget or data differ from the others: refuse with one error line naming them, "
        "or rank them with an INCOMPARABLE footnote (default: %(default)s)",
    )
