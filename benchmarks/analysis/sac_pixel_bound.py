"""How many dural-sac areas does the sac boundary refiner give back to the pixel, and how does that grow with data?
(issue 13)

Run: ``PYTHONPATH=. python benchmarks/analysis/sac_pixel_bound.py [--manifest M | --cases N] [--train-cases K ...]``.
A reference quotes the sac area as its acquired pixel count x pixel area, rounded to the mm², so a report number is
right only when every pixel of the sac is. This script fits :class:`lss_vlm.reports.boundary.SacBoundaryRefiner` on
the acquired axial views of the first K training cases and lets it decide the boundary band of each test view's
*true* sac (the true mask as the "prediction": only the edge is asked, not where the sac is). It prints the share of
test levels whose sac pixel count (largest 8-connected component, as the composer counts) equals the reference's and
the mean number of wrong pixels per level, for each K. That is the refiner's own limit at a given amount of data;
a run's refined numbers stay below it where the network misplaces the sac by more than the band (3 px).

Without ``--manifest`` the script synthesises the ``standard`` phantom (64 px; ``--cases``, default 320) into a
temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from lss_vlm.constants import AXIAL_VIEWS, LABEL_INDEX, NUM_LABELS
from lss_vlm.data.acquired import AcquiredAxialViews
from lss_vlm.data.manifest import read_manifest
from lss_vlm.reports.boundary import SacBoundaryRefiner
from lss_vlm.reports.composer import largest_component

SAC = LABEL_INDEX["thecal_sac"]


def training_views(manifest: Path, cases: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Labelled acquired axial views of the first ``cases`` training cases (None = all)."""
    table = read_manifest(manifest)
    keep = table[table["split"] == "train"]["case_id"].astype(str).tolist()[:cases]
    views = AcquiredAxialViews(manifest, "train")
    found = [views.get(case_id, view) for case_id in keep for view in AXIAL_VIEWS]
    return [f for f in found if f is not None and f[1] is not None]


def exact_share(manifest: Path, train_cases: int | None) -> tuple[float, float, int]:
    """``(share of test levels with the exact sac pixel count, mean wrong pixels per level, levels)``."""
    refiner = SacBoundaryRefiner.fit(training_views(manifest, train_cases))
    exact, wrong = [], []
    for image, labels in AcquiredAxialViews(manifest, "test").labelled():
        truth = largest_component(labels == SAC)
        if not truth.any():
            continue
        onehot = np.eye(NUM_LABELS, dtype=np.float32)[np.clip(labels, 0, NUM_LABELS - 1)].transpose(2, 0, 1)
        refined = largest_component(refiner.refine(image, onehot) == SAC)
        exact.append(int(refined.sum()) == int(truth.sum()))
        wrong.append(int((refined != truth).sum()))
    return float(np.mean(exact)), float(np.mean(wrong)), len(exact)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, help="a prepared dataset's manifest.csv (default: a fresh phantom)")
    parser.add_argument("--cases", type=int, default=320, help="phantom cases when no --manifest is given")
    parser.add_argument("--train-cases", type=int, nargs="+", default=[46, 92, 0], help="0 = the whole split")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest
        if manifest is None:
            from lss_vlm.data.phantom import synthesize

            manifest = Path(synthesize(Path(tmp), n_cases=args.cases, size=64, seed=0))
        print(f"{'train cases':>11}  {'exact sac areas':>15}  {'wrong px / level':>16}  levels")
        for n in args.train_cases:
            share, wrong, levels = exact_share(manifest, n or None)
            print(f"{str(n) if n else 'all':>11}  {100 * share:14.1f}%  {wrong:16.2f}  {levels}")


if __name__ == "__main__":
    main()
