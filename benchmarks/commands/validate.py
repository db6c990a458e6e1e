"""``lss-bench validate``: resolve and check a suite, an experiment config or a study, print its plan, train nothing."""

from __future__ import annotations

import argparse

from benchmarks.commands import add_set_argument

HELP = "resolve and check a suite, config or study and print its plan; trains nothing"
DESCRIPTION = """\
Check everything a suite, an experiment config or a study names, in seconds and without training: YAML keys,
every loss name and its parameters (each loss is built, or, for a MONAI loss, checked against its factory's
signature and value checks without importing MONAI), the model preset and its arguments, metric names (rank_by,
columns, train.early_stopping.metric, study objectives), the data (a data.manifest must exist and read as a
manifest) and, for an output folder that already holds runs, that they belong to the same suite. Then print the
plan: the runs that would be trained (loss x seed, and whether each is new, resumes or is already done), the trials
of a study, the output folder. A mistake prints one 'error:' line naming it (with a suggestion when a name is close
to a known one) and exits with code 2.

TARGET is a shipped suite name ('lss-bench list suites') or a YAML file: a suite (it has 'losses:'), a
study (it has 'objective(s)' / 'search_space') or an experiment config. 'compare --dry-run' and 'tune --dry-run' do
the same with the options of those commands."""
EXAMPLES = """\
examples:
  lss-bench validate standard
  lss-bench validate configs/experiments/phantom_quick.yaml --set loss.name=pid_tversky
  lss-bench validate configs/studies/pid_gains.yaml
  lss-bench validate my_suite.yaml --import my_loss.py --out lss_runs/mine
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET", help="suite name or YAML, experiment config, or study YAML")
    add_set_argument(parser, "override a config key of an experiment config or a study's base experiment (repeatable)")
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder to check and show (default: the command's, under lss_runs/)",
    )


def run(args: argparse.Namespace) -> int:
    from benchmarks.planning import validate_target

    print(validate_target(args.target, args.overrides, args.out))
    print("ok: nothing to fix")
    return 0
