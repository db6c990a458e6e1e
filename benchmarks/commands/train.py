"""``lss-bench train``: train one experiment config into a run directory."""

from __future__ import annotations

import argparse
import json

from benchmarks.commands import add_set_argument

HELP = "train one experiment config into a run directory"
DESCRIPTION = """Train the model of an experiment YAML with its segmentation loss, then evaluate it on the test split.

The run directory gets config.yaml (resolved, every default), history.csv, checkpoints/{last,best}/,
model.safetensors, metrics.json, per_case.csv, reports.jsonl, confusion_matrix.csv, calibration.csv, overlay.jpg,
tb/ (TensorBoard event files), provenance.json and, written last, status.json. Rerunning the same command resumes
from the last checkpoint; a completed run is not retrained.
"""
EXAMPLES = """\
examples:
  lss-bench train configs/experiments/phantom_quick.yaml
  lss-bench train configs/experiments/phantom_default.yaml --set loss.name=pid_tversky --set train.epochs=5
  lss-bench train configs/experiments/phantom_quick.yaml --set loss.params.kp=0.3 --out lss_runs/kp03
  lss-bench train configs/experiments/phantom_quick.yaml --set loss.name=my_loss:MyLoss --import my_loss.py
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="experiment YAML (e.g. configs/experiments/phantom_quick.yaml)")
    add_set_argument(
        parser,
        "override a config value by dotted key, e.g. train.lr=3e-4 or loss.params.kp=0.5 (repeatable; "
        "the value is parsed as YAML and type-checked)",
    )
    parser.add_argument("--out", help="run directory (default: lss_runs/train/<config name>-<loss>-seed<seed>)")
    parser.add_argument("--restart", action="store_true", help="delete what the run directory holds and start over")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from benchmarks.config import load_config
    from benchmarks.outputs import default_run_dir, locked_folder
    from benchmarks.runner import check_run_folder, run_experiment

    overrides = list(args.overrides) + (["train.quiet=true"] if args.quiet else [])
    cfg = load_config(args.config, overrides)
    out = args.out or str(default_run_dir(cfg))
    check_run_folder(cfg, out, resume=not args.restart)  # a damaged or foreign run folder: refused before locking
    with locked_folder(out, "train"):
        metrics = run_experiment(cfg, out, resume=not args.restart)
    print(f"run directory: {out}")
    print(_headline(metrics))
    return 0


def _headline(metrics: dict[str, float]) -> str:
    """The key numbers of a run in one JSON line."""
    from benchmarks.leaderboard import DEFAULT_METRICS

    return json.dumps({k: round(metrics[k], 4) for k in DEFAULT_METRICS if k in metrics})
