"""``lss-bench report``: print the generated and composed report of one case and save an overlay PNG."""

from __future__ import annotations

import argparse

HELP = "print the generated and composed report of one case and save an overlay PNG"
DESCRIPTION = """Run a trained model on one case and explain it.

Prints the report the model generates, the structured report composed from its predicted masks (with the measured
dural-sac areas) and the reference reports, and saves a PNG with every view's image, predicted labels and the
text->patch attention map of one prompt (--prompt: label/<label>, level/<level>; default label/thecal_sac).
"""
EXAMPLES = """\
examples:
  lss-bench report lss_runs/train/phantom_quick-dice-seed0 --case ph0007
  lss-bench report lss_runs/train/phantom_quick-dice-seed0 --case ph0007 --prompt "level/L4-L5" --out l45.png
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by 'lss-bench train'")
    parser.add_argument("--case", required=True, metavar="ID", help="case_id from the dataset manifest")
    parser.add_argument(
        "--prompt",
        default=None,
        help="prompt whose attention map is drawn, e.g. level/L4-L5 (default: label/thecal_sac)",
    )
    parser.add_argument("--out", default=None, metavar="PNG", help="overlay path (default: RUN_DIR/report_<ID>.png)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks.evaluation import inspect_case
    from benchmarks.outputs import check_figure_path
    from benchmarks.overlay import save_case_overlay
    from lss_vlm.constants import GRADES, LEVELS

    out = Path(args.out) if args.out else Path(args.run_dir) / f"report_{args.case}.png"
    if args.out:  # a bad image path fails before the model runs
        check_figure_path(out, "--out")
    found = inspect_case(args.run_dir, args.case, args.prompt)
    save_case_overlay(out, found.view)
    truth = ", ".join(f"{lv} {GRADES[g] if g >= 0 else 'unknown'}" for lv, g in zip(LEVELS, found.true_grades))
    print(f"case {args.case} ({found.split} split)")
    print(f"\ntrue grades: {truth}")
    print(f"\ngenerated report:\n  {found.generated}")
    print(f"\ncomposed report (from the predicted masks):\n  {found.composed or '(no report composer in this build)'}")
    for i, ref in enumerate(found.references, start=1):
        print(f"\nreference {i}:\n  {ref}")
    print(f"\noverlay ({found.view.prompt or 'no attention'}): {out}")
    return 0
