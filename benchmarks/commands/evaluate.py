"""``lss-bench evaluate``: score a trained run on a split (metrics.json, per_case.csv, reports.jsonl)."""

from __future__ import annotations

import argparse

HELP = "score a trained run on a split or on another dataset (metrics.json, per_case.csv, reports.jsonl)"
DESCRIPTION = """Re-score the model.safetensors of a trained run directory on a split.

The config's evaluation split (test by default) rewrites metrics.json, per_case.csv, reports.jsonl,
confusion_matrix.csv, calibration.csv and overlay.jpg in the run directory; another split writes them into
RUN_DIR/eval_<split>/.
--manifest scores the run on another prepared dataset (same preprocessing as the run) without touching the run:
results go to --out (default RUN_DIR/eval_<dataset folder>_<split>/). --split all scores every case.
--instructions measures the test-time text intervention of a run trained with model.params.instruct_film=true: for
every view with a mask, foreground class and direction it applies "the <class> [at <level>] is thicker/thinner than
predicted" and records the class's Dice and predicted area before and after (instruction_effect.csv), with the share
of instructions that moved them in the stated direction (instruction_effect.json; default folder
RUN_DIR/eval_instructions_<split>/). docs/model.md, "Test-time text intervention".
"""
EXAMPLES = """\
examples:
  lss-bench evaluate lss_runs/train/phantom_quick-dice-seed0
  lss-bench evaluate lss_runs/train/phantom_quick-dice-seed0 --split val
  lss-bench evaluate runs/sim2real --manifest data/vert/manifest.csv --split all --out results/sim2real_on_vert
  lss-bench evaluate runs/instruct --instructions
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by 'lss-bench train'")
    parser.add_argument(
        "--split",
        choices=("train", "val", "test", "all"),
        default=None,
        help="split to score (default: the config's, test); all = every case",
    )
    parser.add_argument("--manifest", default=None, metavar="M", help="score on this prepared dataset's manifest.csv")
    parser.add_argument("--out", default=None, metavar="DIR", help="folder of the result files")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="measure how instructions move each class's Dice and area (a run trained with instruct_film)",
    )


def run(args: argparse.Namespace) -> int:
    from benchmarks.commands.train import _headline
    from benchmarks.runner import evaluate_run

    if args.instructions:
        return _run_instructions(args)
    metrics = evaluate_run(args.run_dir, args.split, manifest=args.manifest, out=args.out)
    print(_headline(metrics))
    return 0


def _run_instructions(args: argparse.Namespace) -> int:
    from benchmarks.intervention import summary_lines, write_effect
    from lss_vlm.errors import ConfigError

    if args.manifest is not None:
        raise ConfigError("--instructions: scores the run's own data; drop --manifest")
    split = args.split or "test"
    if split == "all":
        raise ConfigError("--instructions: give one split (train, val or test), not all")
    folder, summary = write_effect(args.run_dir, args.out, split)
    print("\n".join(summary_lines(summary)))
    print(f"written: {folder}")
    return 0
