"""``lss-bench evaluate``: score a trained run on a split (metrics.json, per_case.csv, reports.jsonl)."""

from __future__ import annotations

import argparse

#: Views drawn when ``--contact-sheet`` is given without a number.
DEFAULT_CONTACT_SHEET = 24

HELP = "score a trained run on a split or on another dataset (metrics.json, per_case.csv, reports.jsonl)"
DESCRIPTION = """Re-score the model.safetensors of a trained run directory on a split.

The config's evaluation split (test by default) rewrites metrics.json, per_case.csv, reports.jsonl,
confusion_matrix.csv, calibration.csv and overlay.jpg in the run directory; another split writes them into
RUN_DIR/eval_<split>/.
--manifest scores the run on another prepared dataset (same preprocessing as the run) without touching the run:
results go to --out (default RUN_DIR/eval_<dataset folder>_<split>/). --split all scores every case.
--contact-sheet [N] also draws the N views with the lowest mean Dice (default 24), ground truth beside prediction
and the per-class Dice in each title, into cases.jpg beside per_case.csv: where the model fails, at a glance.
--shifts t1_contrast,bias_field scores a phantom run on the test split of its phantom re-synthesised under each shift
preset (synthesised once, cached): segmentation and grade metrics into RUN_DIR/ood/<shift>/ (no reports), and a line
per shift with Dice and HD95 and their change from the run's own metrics.json (docs/leaderboard.md, "The
out-of-distribution suite").
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
  lss-bench evaluate runs/sim2real --manifest data/vert/manifest.csv --split all --contact-sheet 12
  lss-bench evaluate runs/instruct --instructions
  lss-bench evaluate lss_runs/train/phantom_quick-dice-seed0 --shifts t1_contrast,low_field_noise,anisotropic,bias_field
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
        "--contact-sheet",
        type=_count,
        nargs="?",
        const=DEFAULT_CONTACT_SHEET,
        default=0,
        metavar="N",
        help=f"also draw the N worst-scored views (truth beside prediction) into cases.jpg "
        f"(N defaults to {DEFAULT_CONTACT_SHEET})",
    )
    mode = parser.add_mutually_exclusive_group()  # each writes its own results: one at a time
    mode.add_argument(
        "--shifts",
        default=None,
        metavar="S[,S...]",
        help="score on the phantom under these shift presets (t1_contrast, low_field_noise, anisotropic, bias_field)",
    )
    mode.add_argument(
        "--instructions",
        action="store_true",
        help="measure how instructions move each class's Dice and area (a run trained with instruct_film)",
    )


def _count(text: str) -> int:
    """A positive whole number of views for ``--contact-sheet``."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number of views, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from benchmarks.commands.train import _headline
    from benchmarks.runner import evaluate_run

    if args.contact_sheet and (args.instructions or args.shifts is not None):
        from lss_vlm.errors import ConfigError

        raise ConfigError("--contact-sheet: draws a plain evaluation's views; drop --shifts/--instructions")
    if args.instructions:
        return _run_instructions(args)
    if args.shifts is not None:
        return _run_shifts(args)
    metrics = evaluate_run(
        args.run_dir, args.split, manifest=args.manifest, out=args.out, contact_sheet=args.contact_sheet
    )
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


def _run_shifts(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from benchmarks.ood import score_run_shifts
    from lss_vlm.errors import ConfigError

    if args.manifest is not None or args.split is not None or args.out is not None:
        raise ConfigError(
            "--shifts: scores the run's eval split into RUN_DIR/ood/<shift>/; drop --manifest/--split/--out"
        )
    shifts = [s.strip() for s in args.shifts.split(",") if s.strip()]
    if not shifts:
        raise ConfigError("--shifts: give at least one preset, e.g. --shifts t1_contrast,bias_field")
    clean = (
        json.loads((Path(args.run_dir) / "metrics.json").read_text())
        if (Path(args.run_dir) / "metrics.json").is_file()
        else {}
    )
    for shift, metrics in score_run_shifts(args.run_dir, shifts).items():
        dice, hd95 = metrics.get("dice_macro", float("nan")), metrics.get("hd95_macro", float("nan"))
        drop = clean.get("dice_macro", float("nan")) - dice
        rise = hd95 - clean.get("hd95_macro", float("nan"))
        print(f"{shift:<16} dice_macro={dice:.4f} (drop {drop:+.4f})  hd95_macro={hd95:.2f} mm (rise {rise:+.2f})")
    print(f"written: {Path(args.run_dir) / 'ood'}")
    return 0
