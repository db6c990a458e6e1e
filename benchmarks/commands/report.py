"""``lss-bench report``: print the generated and composed report of one case and save an overlay PNG."""

from __future__ import annotations

import argparse

HELP = "print the generated and composed report of one case and save an overlay PNG"
DESCRIPTION = """Run a trained model on one case and explain it.

Prints the report the model generates, the structured report composed from its predicted masks (with the measured
dural-sac areas) and the reference reports, and saves a PNG with every view's image, predicted labels and the
text->patch attention map of one prompt (--prompt: label/<label>, level/<level>; default label/thecal_sac).

--instruct TEXT (test-time text intervention, Causal-SAM-LLM): the instruction's text embedding modulates the
segmentation decoder's features by FiLM. The PNG then shows the predicted masks before and after the instruction and
the pixels that changed, and a table gives each class's area and Dice before and after in the views it acts on (the
axial view of a level it names, e.g. L4-L5, else every view). Needs a run trained with
model.params.instruct_film=true (docs/model.md, "Test-time text intervention"); other runs are refused.
"""
EXAMPLES = """\
examples:
  lss-bench report lss_runs/train/phantom_quick-dice-seed0 --case ph0007
  lss-bench report lss_runs/train/phantom_quick-dice-seed0 --case ph0007 --prompt "level/L4-L5" --out l45.png
  lss-bench report runs/instruct --case ph0007 --instruct "the ligamentum flavum at L4-L5 is thicker than predicted"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by 'lss-bench train'")
    parser.add_argument("--case", required=True, metavar="ID", help="case_id from the dataset manifest")
    parser.add_argument(
        "--prompt",
        default=None,
        help="prompt whose attention map is drawn, e.g. level/L4-L5 (default: label/thecal_sac)",
    )
    parser.add_argument(
        "--instruct",
        default=None,
        metavar="TEXT",
        help="a clinician's instruction applied by FiLM; the PNG shows the masks before and after (default: none)",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="PNG",
        help="overlay path (default: RUN_DIR/report_<ID>.png, RUN_DIR/report_<ID>_instruct.png with --instruct)",
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from benchmarks.evaluation import inspect_case
    from benchmarks.outputs import check_figure_path
    from benchmarks.overlay import save_case_overlay
    from lss_vlm.constants import GRADES, LEVELS

    suffix = "_instruct" if args.instruct is not None else ""
    out = Path(args.out) if args.out else Path(args.run_dir) / f"report_{args.case}{suffix}.png"
    if args.out:  # a bad image path fails before the model runs
        check_figure_path(out, "--out")
    if args.instruct is not None:
        return _run_instruction(args, out)
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


def _run_instruction(args: argparse.Namespace, out) -> int:
    """``--instruct``: the case without and with the instruction, the before/after PNG and the area table."""
    import textwrap

    from benchmarks.evaluation import inspect_case
    from benchmarks.intervention import area_changes, save_intervention_overlay
    from lss_vlm.models.instruct import instruction_views

    views = instruction_views(args.instruct).numpy()  # an empty text or unknown level fails before the model runs
    before = inspect_case(args.run_dir, args.case, args.prompt)
    after = inspect_case(args.run_dir, args.case, args.prompt, instruction=args.instruct)
    save_intervention_overlay(out, before.view, after.view, args.instruct)
    print(f"case {args.case} ({before.split} split), instruction: {textwrap.shorten(repr(args.instruct), 200)}")
    header = ("class", "area before", "area after", "change", "Dice before", "Dice after")
    print("\n{:<20} {:>11} {:>10} {:>8} {:>11} {:>10}".format(*header))
    for row in area_changes(before.view, after.view, views):
        change = (row.area_after - row.area_before) / max(row.area_before, 1)
        print(
            f"{row.label:<20} {row.area_before:>9}px {row.area_after:>8}px {change:>+8.1%} "
            f"{row.dice_before:>11.3f} {row.dice_after:>10.3f}"
        )
    print(f"\ncomposed report with the instruction (from the changed masks):\n  {after.composed or '(none)'}")
    print(f"\nbefore/after overlay: {out}")
    return 0
