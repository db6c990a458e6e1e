"""``lss-bench compare``: run every loss x seed of a suite (resumable) and write its leaderboard."""

from __future__ import annotations

import argparse

from benchmarks.commands import add_dry_run_argument, add_mismatch_argument

HELP = "run every loss x seed of a suite (resumable) and write its leaderboard"
DESCRIPTION = """Run every (loss x seed) of a suite: the same experiment, data and budget; only the loss and
train.seed differ. Runs go to OUT/runs/<loss>/seed<k>/. Rerunning the same command resumes: finished runs are skipped,
a run that was interrupted resumes from its last checkpoint. A failed run (NaN loss, bad case) is recorded with its
reason and the suite goes on. At the end the leaderboard (csv, md, html + figures, json, tex) is written into OUT.

A suite folder grows: '--losses my_dice --out OUT' on a finished folder trains only the new (loss x seed) runs and
re-ranks them with the old ones; a larger --seeds adds seeds. A finished run is reused when its stored resolved config
(config.yaml) equals the one the suite now gives; rank_by, baseline, columns and description never retrain anything.
A run whose resolved config changed (e.g. another train.epochs in the suite's 'set') stops the command before
anything trains, with one line naming each such run and the differing keys; --retrain-changed retrains them instead
(each old run folder is replaced once its new run has finished).

A suite with 'shifts' (the shipped 'ood' suite) then scores every completed run on the test split of its phantom
re-synthesised under each shift preset (synthesised once, cached) into RUN/ood/<shift>/, and writes ood_shift.csv,
.md, .json and figures/ood_shift.png: Dice and HD95 per shift and the drop from in-distribution.

SUITE is a YAML path or the name of a shipped suite in configs/suites/ ('lss-bench list suites' lists them). A suite
may name your own loss: a loss registered by a module given to --import, or 'package.module:factory' (docs/losses.md).

--backend ray runs every (loss x seed) as a Ray task (pip install 'lss-vlm[ray]'), on a local Ray cluster or the one
at --address; each task asks for --num-cpus/--num-gpus (default: from the config: 1 CPU + data.num_workers, 1 GPU
when train.device is cuda). OUT must be a folder every Ray node sees. Resume and lock rules are those of the local
backend; a run whose worker dies is retried from its last checkpoint (docs/cluster.md)."""
EXAMPLES = """\
examples:
  lss-bench compare quick --out lss_runs/quick
  lss-bench compare quick --out lss_runs/quick --losses focal,lovasz      # add two losses to the finished folder
  lss-bench compare standard --seeds 5 --out lss_runs/standard           # add seeds 3 and 4
  lss-bench compare standard --seeds 5 --dry-run          # the 60 runs it would train, checked in seconds
  lss-bench compare my_suite.yaml --import my_loss.py     # a suite that names a loss registered in my_loss.py
  lss-bench compare ood --out lss_runs/ood                # train on the clean phantom, score on 4 shifts
  lss-bench compare quick --backend ray --num-cpus 1      # a local Ray cluster, one CPU per run
  lss-bench compare paper --backend ray --address auto --out /shared/lss_runs/paper   # an existing cluster
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("suite", metavar="SUITE", help="suite YAML or shipped suite name (lss-bench list suites)")
    parser.add_argument("--seeds", type=int, default=None, metavar="N", help="run seeds 0..N-1 (default: the suite's)")
    parser.add_argument("--out", default=None, metavar="DIR", help="suite directory (default: lss_runs/<suite name>)")
    parser.add_argument("--no-resume", action="store_true", help="delete the runs and leaderboard in DIR, start over")
    parser.add_argument("--retry-failed", action="store_true", help="run the failed runs again when resuming")
    parser.add_argument("--no-progress", action="store_true", help="no live progress view (one line per run only)")
    parser.add_argument("--backend", choices=("local", "ray"), default="local", help="where the runs are executed")
    parser.add_argument("--address", default=None, help="Ray cluster address (auto, HOST:6379, ray://HOST:10001)")
    parser.add_argument("--num-cpus", type=float, default=None, help="CPUs per Ray task (default: from the config)")
    parser.add_argument("--num-gpus", type=float, default=None, help="GPUs per Ray task (default: from the config)")
    add_dry_run_argument(parser)
    add_incremental_arguments(parser)


def add_incremental_arguments(parser: argparse.ArgumentParser) -> None:
    """Growing a suite folder: --losses, --retrain-changed, --mismatch."""
    parser.add_argument(
        "--losses",
        default=None,
        metavar="L[,L...]",
        help="run only these losses: suite labels, labels recorded in OUT, or registry names (default: the suite's)",
    )
    parser.add_argument(
        "--retrain-changed",
        action="store_true",
        help="retrain the runs of OUT whose resolved config changed (default: refuse and list them)",
    )
    add_mismatch_argument(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks.backends import check_backend_options, make_executor
    from benchmarks.leaderboard import build_leaderboard, print_terminal
    from benchmarks.leaderboard_files import write_leaderboard
    from benchmarks.ood import print_ood
    from benchmarks.outputs import OUTPUT_ROOT, locked_folder
    from benchmarks.suite import SuiteProgress, check_suite_folder, load_suite, run_suite, select_losses
    from lss_vlm.errors import ConfigError

    suite = load_suite(args.suite)
    if args.seeds is not None and args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    seeds = list(range(args.seeds)) if args.seeds is not None else None
    out = Path(args.out) if args.out else OUTPUT_ROOT / suite.name
    if args.losses is not None:
        suite = select_losses(suite, [n.strip() for n in args.losses.split(",") if n.strip()], out)
    check_backend_options(args.backend, args.address, args.num_cpus, args.num_gpus)
    if args.dry_run:
        from benchmarks.planning import suite_plan

        print(suite_plan(suite, out, seeds))
        return 0
    executor = make_executor(args.backend, args.address, args.num_cpus, args.num_gpus)
    retrain = args.retrain_changed
    check_suite_folder(suite, out, seeds, resume=not args.no_resume, retrain_changed=retrain)  # before the lock
    with locked_folder(out, "compare"):
        run_suite(
            suite,
            out,
            seeds=seeds,
            resume=not args.no_resume,
            retry_failed=args.retry_failed,
            progress=SuiteProgress(live=not args.no_progress),
            retrain_changed=retrain,
            executor=executor,
        )
        board = build_leaderboard(out, mismatch=args.mismatch)  # rank_by, baseline, columns: OUT/suite.yaml
        written = write_leaderboard(board, out)
    print_terminal(board)
    print_ood(board)  # the OOD suite's per-shift table (nothing for other suites)
    for kind, path in written.items():
        print(f"{kind:>5}: {path}")
    return 0
