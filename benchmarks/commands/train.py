"""``lss-bench train``: train one experiment config into a run directory."""

from __future__ import annotations

import argparse
import json

from benchmarks.commands import add_set_argument
from lss_vlm.errors import ConfigError

HELP = "train one experiment config into a run directory"
DESCRIPTION = """Train the model of an experiment YAML with its segmentation loss, then evaluate it on the test split.

The run directory gets config.yaml (resolved, every default), history.csv, checkpoints/{last,best}/,
model.safetensors, metrics.json, per_case.csv, reports.jsonl, confusion_matrix.csv, calibration.csv, overlay.jpg,
tb/ (TensorBoard event files), provenance.json and, written last, status.json. Rerunning the same command resumes
from the last checkpoint; a completed run is not retrained.

Data-parallel training of one model: 'torchrun --nproc-per-node N -m benchmarks.cli train CONFIG' (or '--ddp N',
which starts torchrun for you on this machine). Each of the N processes trains on its shard of every epoch with
data.batch_size cases a step (effective batch N x data.batch_size), gradients are averaged (DistributedDataParallel:
gloo on CPU, NCCL on CUDA, one GPU per process), and only rank 0 writes the run directory. See docs/cluster.md.
"""
EXAMPLES = """\
examples:
  lss-bench train configs/experiments/phantom_quick.yaml
  lss-bench train configs/experiments/phantom_default.yaml --set loss.name=pid_tversky --set train.epochs=5
  lss-bench train configs/experiments/phantom_quick.yaml --set loss.params.kp=0.3 --out lss_runs/kp03
  lss-bench train configs/experiments/phantom_quick.yaml --set loss.name=my_loss:MyLoss --import my_loss.py
  lss-bench train configs/experiments/phantom_quick.yaml --ddp 2 --set data.batch_size=2
  torchrun --nproc-per-node 4 -m benchmarks.cli train configs/experiments/phantom_paper.yaml
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
    parser.add_argument(
        "--ddp",
        type=int,
        default=0,
        metavar="N",
        help="train with N data-parallel processes on this machine (starts torchrun --standalone); 0 = one process",
    )


def run(args: argparse.Namespace) -> int:
    from benchmarks.config import load_config
    from benchmarks.outputs import default_run_dir, locked_folder
    from benchmarks.runner import check_run_folder, run_experiment
    from lss_vlm.engine import distributed

    if args.ddp < 0 or args.ddp == 1:
        raise ConfigError(f"--ddp {args.ddp}: expected 0 (one process) or a number of processes >= 2")
    overrides = list(args.overrides) + (["train.quiet=true"] if args.quiet else [])
    cfg = load_config(args.config, overrides)
    out = args.out or str(default_run_dir(cfg))
    if args.ddp:
        return _launch_torchrun(args, out)
    if distributed.launched_by_torchrun():
        distributed.init_from_env(cfg.train.device)
    try:
        if not distributed.is_main_process():  # rank 0 checks, locks and writes; the others only train
            run_experiment(cfg, out, resume=not args.restart)
            return 0
        check_run_folder(cfg, out, resume=not args.restart)  # a damaged or foreign run folder: refused before locking
        with locked_folder(out, "train"):
            metrics = run_experiment(cfg, out, resume=not args.restart)
    finally:
        distributed.shutdown()
    print(f"run directory: {out}")
    print(_headline(metrics))
    return 0


def _launch_torchrun(args: argparse.Namespace, out: str) -> int:
    """Run this same command under ``torchrun --standalone --nproc-per-node N``; returns its exit code."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.ddp}"]
    command += ["-m", "benchmarks.cli", "train", args.config, "--out", out]
    for item in args.overrides:
        command += ["--set", item]
    for module in args.imports:
        command += ["--import", module]
    command += [flag for flag, on in (("--restart", args.restart), ("--quiet", args.quiet)) if on]
    return subprocess.run(command, check=False).returncode


def _headline(metrics: dict[str, float]) -> str:
    """The key numbers of a run in one JSON line."""
    from benchmarks.leaderboard import DEFAULT_METRICS

    return json.dumps({k: round(metrics[k], 4) for k in DEFAULT_METRICS if k in metrics})
