"""``lss-bench``: the command-line entry point. Each subcommand lives in ``benchmarks/commands/<name>.py``.

A command module defines ``HELP`` (one line), ``DESCRIPTION`` (optional), ``add_arguments(parser)`` and
``run(args) -> int``. Modules import heavy libraries (torch, MONAI, ...) inside ``run`` so ``--help`` stays fast.
User errors (:class:`lss_vlm.errors.LssError`) are printed as one ``error:`` line with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from lss_vlm.errors import LssError

COMMANDS: tuple[str, ...] = (
    "synth",
    "prepare",
    "train",
    "evaluate",
    "compare",
    "leaderboard",
    "tune",
    "report",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lss-bench",
        description="Benchmark segmentation losses for lumbar spinal stenosis on multi-view MRI "
        "(phantom or real data): train the SPCA vision-language model, score Dice / grade accuracy / CIDEr, "
        "rank losses in leaderboards, tune PID-Tversky gains with Optuna.",
        epilog="Run 'lss-bench COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"benchmarks.commands.{name}")
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lss-vlm")
    except PackageNotFoundError:
        return "0+unknown"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except LssError as exc:
        print(f"lss-bench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lss-bench {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
