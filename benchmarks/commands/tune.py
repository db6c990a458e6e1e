"""``lss-bench tune``: Optuna search over loss hyperparameters (PID gains) on SQLite/PostgreSQL storage."""

from __future__ import annotations

import argparse

from benchmarks.commands import add_dry_run_argument, add_set_argument, seed_int

HELP = "Optuna search over loss hyperparameters (PID gains) on SQLite/PostgreSQL storage"
DESCRIPTION = """\
Optuna search over loss hyperparameters (PID gains) declared in a study YAML (configs/studies/).

A trial trains the study's base experiment with the suggested parameters into OUT/trials/<number>/; the validation
metric is reported each epoch so the pruner can stop bad trials. The process that creates the study enqueues exactly
--n-trials trials; --workers K local processes (and the same command on other machines against the same
PostgreSQL URL) share them. On finishing: OUT/best.yaml (full experiment config, for 'lss-bench train' or a suite),
OUT/trials.csv, OUT/figures/*.png, OUT/summary.json and a summary here.

storages:  (default) sqlite:///OUT/study.db    journal:PATH    postgresql://user:password@host:5432/db
"""
EXAMPLES = """\
examples:
  lss-bench tune configs/studies/pid_gains.yaml --n-trials 12 --workers 2
  lss-bench tune configs/studies/pid_gains.yaml --n-trials 12 --dry-run      # check it, print the plan
  lss-bench tune configs/studies/pid_gains.yaml --n-trials 100 --storage postgresql://lss@db-host/optuna --study pid
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="study YAML (configs/studies/*.yaml)")
    parser.add_argument(
        "--n-trials", type=int, required=True, metavar="N", help="total trials of the study (all workers)"
    )
    parser.add_argument(
        "--storage", default=None, metavar="URL", help="Optuna storage URL (default: sqlite:///OUT/study.db)"
    )
    parser.add_argument(
        "--study", default=None, metavar="NAME", help="study name (default: study_name of the YAML or its file name)"
    )
    parser.add_argument("--workers", type=int, default=1, metavar="K", help="local worker processes")
    parser.add_argument(
        "--sampler",
        choices=("tpe", "cmaes", "random", "grid", "nsga2"),
        default=None,
        help="sampler (default: the YAML's, else tpe; nsga2 for several objectives)",
    )
    parser.add_argument(
        "--seed", type=seed_int, default=None, metavar="S", help="sampler seed (default: the YAML's, else 0)"
    )
    parser.add_argument(
        "--out", default=None, metavar="DIR", help="output directory (default: lss_runs/tune/<study name>)"
    )
    parser.add_argument("--no-figures", action="store_true", help="skip the matplotlib figures (they take a while)")
    add_set_argument(
        parser,
        "override a base experiment key (repeatable), e.g. --set train.epochs=2",
    )
    add_dry_run_argument(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks.outputs import OUTPUT_ROOT, locked_folder
    from benchmarks.tuning import format_summary, load_study_spec, tune, validate_study

    spec = load_study_spec(args.config)
    out_dir = Path(args.out) if args.out else OUTPUT_ROOT / "tune" / (args.study or spec.name)
    if args.dry_run:
        from benchmarks.planning import study_plan

        print(study_plan(spec, args.overrides, args.n_trials, out_dir, args.storage))
        return 0
    validate_study(spec, args.overrides)  # --set typos, a missing base experiment: refused before any study exists
    with locked_folder(out_dir, "tune"):
        summary = _tune(args, spec, out_dir, tune)
    print(format_summary(summary, out_dir))
    return 0 if summary["best_trial"] is not None else 1


def _tune(args: argparse.Namespace, spec, out_dir, tune) -> dict:
    """``benchmarks.tuning.tune`` with the command's options."""
    return tune(
        spec,
        n_trials=args.n_trials,
        out_dir=out_dir,
        storage_url=args.storage,
        study_name=args.study,
        workers=args.workers,
        sampler=args.sampler,
        seed=args.seed,
        overrides=args.overrides,
        figures=not args.no_figures,
    )
