"""``lss-bench synth``: generate the multi-view LSS phantom (NIfTI + manifest.csv)."""

from __future__ import annotations

import argparse

from benchmarks.commands import seed_int

HELP = "generate the multi-view LSS phantom (NIfTI + manifest.csv)"
DESCRIPTION = """\
Generate the embedded multi-view lumbar-spinal-stenosis phantom: per case a mid-sagittal T1 and T2 slice and
one axial T2 slice per disc level (L1-L2 … L5-S1), each with a label mask (background, vertebral body, disc,
thecal sac, posterior elements, ligamentum flavum), written as NIfTI with mm affines, plus manifest.csv
(files, grades, dural-sac areas, reference reports, clinical table, patient-level split) and montage.png.

Grades come from the measured dural-sac area: normal > 100 mm², mild 76-100, moderate 50-75, severe < 50.
The output depends only on the arguments: the same seed gives byte-identical files, and re-running into a
complete folder with the same arguments returns at once.
"""
EXAMPLES = """\
examples:
  lss-bench synth --out data/phantom                      # 200 cases, 128 px, seed 0
  lss-bench synth --out /tmp/ph --cases 40 --stats        # small, print class shares and grade prevalence
  lss-bench synth --out data/ood_t1 --shift t1_contrast   # an out-of-distribution variant
"""


def _bounded_int(high: int):
    """An argparse type: a whole number from 1 to ``high`` (an unbounded count would run for days or exhaust memory)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not 1 <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a number from 1 to {high}, got {value}")
        return value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lss_vlm.data.phantom.config import SHIFT_PRESETS

    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--cases", type=_bounded_int(100_000), default=200, metavar="N", help="number of cases (≥ 5)")
    parser.add_argument("--size", type=_bounded_int(1024), default=128, metavar="PX", help="image side in pixels")
    parser.add_argument("--seed", type=seed_int, default=0, metavar="S", help="random seed")
    parser.add_argument(
        "--shift",
        default=None,
        metavar="NAME",
        help="acquisition-shift preset for out-of-distribution tests: "
        + "; ".join(f"{name}: {desc}" for name, (desc, _) in SHIFT_PRESETS.items()),
    )
    parser.add_argument("--workers", type=_bounded_int(256), default=1, metavar="K", help="processes")
    parser.add_argument("--stats", action="store_true", help="print class pixel shares, grade prevalence, areas")
    parser.add_argument(
        "--montage", default=None, metavar="PNG", help="where to save the montage (default DIR/montage.png)"
    )
    parser.add_argument("--no-montage", action="store_true", help="do not render the montage")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace what a non-empty --out folder holds (default: refuse)"
    )


def run(args: argparse.Namespace) -> int:
    import time

    from tqdm import tqdm

    from benchmarks.outputs import check_figure_path
    from lss_vlm.data.phantom import format_stats, phantom_stats, resolve_config, save_montage, synthesize
    from lss_vlm.data.phantom.generate import MIN_CASES
    from lss_vlm.errors import ConfigError

    resolve_config(args.shift, size=args.size)  # bad shift / size: one clear error before any work
    if args.cases < MIN_CASES:
        raise ConfigError(f"--cases must be at least {MIN_CASES} (train/val/test need patients), got {args.cases}")
    if not args.no_montage and args.montage:  # a bad image path fails now, not after the data is written
        check_figure_path(args.montage, "--montage")
    start = time.perf_counter()
    with tqdm(total=args.cases, desc="synth", unit="case", leave=False) as bar:
        manifest = synthesize(
            args.out,
            n_cases=args.cases,
            size=args.size,
            seed=args.seed,
            shift=args.shift,
            workers=args.workers,
            progress=bar.update,
            overwrite=args.overwrite,
        )
    elapsed = time.perf_counter() - start
    print(f"wrote {args.cases} cases ({args.size}² px, seed {args.seed}) to {manifest} in {elapsed:.1f} s")
    if not args.no_montage:
        png = save_montage(manifest, args.montage or manifest.parent / "montage.png")
        print(f"montage: {png}")
    if args.stats:
        print(format_stats(phantom_stats(manifest)))
    return 0
