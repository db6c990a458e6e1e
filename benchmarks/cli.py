"""``lss-bench``: the command-line entry point. Each subcommand lives in ``benchmarks/commands/<name>.py``.

A command module defines ``HELP`` (one line), ``DESCRIPTION`` (optional), ``EXAMPLES`` (the epilog of its ``--help``),
``add_arguments(parser)`` and ``run(args) -> int``. Modules import heavy libraries (torch, MONAI, ...) inside ``run``
so ``--help`` stays fast. Every command takes ``--import MODULE`` (repeatable): user code imported before the command
runs (and in every worker process it spawns), e.g. a module that registers a loss (:mod:`benchmarks.plugins`).
Errors that come from the user's files, folders or values are printed as one ``error:`` line with exit code 2, no
traceback (:func:`user_error_message`): the toolkit's :class:`lss_vlm.errors.LssError`, and :class:`OSError` (an
output that is a file, a read-only folder, a name too long, a full disk ...), which names the path the system refused.
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
    "refine",
    "validate",
    "list",
    "demo",
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the layout of descriptions and epilogs and, like :class:`argparse.ArgumentDefaultsHelpFormatter`, adds
    ``(default: X)`` to an option's help; left out when the help already states its default or there is none to show
    (``None``, ``False``, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        nothing = default is None or default is False or default == [] or default == argparse.SUPPRESS
        if "default" in text or nothing or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


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
            epilog=module.EXAMPLES,
            formatter_class=HelpFormatter,
        )
        module.add_arguments(p)
        p.add_argument(
            "--import",
            dest="imports",
            action="append",
            default=[],
            metavar="MODULE",
            help="import user code first (repeatable): a module name or a .py path, e.g. one that registers a loss "
            "with @losses.register_loss; worker processes import it too",
        )
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
        parser.print_usage(sys.stderr)
        parser.exit(2, f"{parser.prog}: error: a command is required; run 'lss-bench --help' for the list\n")
    try:
        if args.imports:
            from benchmarks.plugins import import_user_modules

            import_user_modules(args.imports)
        return int(args._run(args) or 0)
    except (LssError, OSError, ValueError) as exc:
        if isinstance(exc, BrokenPipeError) or (isinstance(exc, ValueError) and not _is_loss_error(exc)):
            raise
        print(f"lss-bench {args.command}: error: {user_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lss-bench {args.command}: interrupted", file=sys.stderr)
        return 130


def _is_loss_error(exc: BaseException) -> bool:
    """A :class:`losses.errors.LossConfigError` (bad loss name or argument), checked without importing the zoo."""
    errors = sys.modules.get("losses.errors")
    return errors is not None and isinstance(exc, errors.LossConfigError)


def user_error_message(exc: BaseException) -> str:
    """One line for a user-facing error: the toolkit's message, or ``PATH: reason`` for an operating-system error."""
    if isinstance(exc, OSError) and not isinstance(exc, LssError):
        reason = exc.strerror or str(exc) or type(exc).__name__
        paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
        text = f"{' -> '.join(paths)}: {reason}" if paths else reason
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
