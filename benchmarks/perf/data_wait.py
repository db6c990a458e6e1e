"""What a training epoch spends drawing augmented batches: MetaTensor chain vs plain tensors (issue 18).

Builds the training loader of an experiment twice with the same seed: as before (the cached views are MONAI
``MetaTensor``s, deep-copied and tracked through every random transform) and as now (:class:`DropMetad` after the
cache, MONAI tracking off while drawing). Each is iterated for ``--epochs`` epochs; the script prints the CPU and wall
seconds an epoch (median) and their ratio, and checks that both yield the same pixels and masks.
``tests/test_dataset.py`` checks the equality on the tiny phantom (no timing in tests).

Run: ``OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/perf/data_wait.py [--config configs/suites/standard.yaml]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from contextlib import nullcontext
from unittest import mock

import torch


def epoch_times(reference: bool, config: str, overrides: Sequence[str], epochs: int) -> tuple[list, list, list]:
    """(CPU s, wall s, batches) of each epoch of the training loader; ``reference``: the MetaTensor chain."""
    from benchmarks.config import load_config
    from benchmarks.run_loading import build_split_loader
    from lss_vlm.data.transforms import DropMetad

    cfg = load_config(config, list(overrides))
    with mock.patch.object(DropMetad, "__call__", lambda self, data: dict(data)) if reference else nullcontext():
        loader = build_split_loader(cfg, "train", train=True)
        if reference:
            loader.dataset.untracked_draws = False
        cpus, walls, batches = [], [], []
        for _ in range(epochs):
            cpu, wall = time.process_time(), time.perf_counter()
            batches += [(b["views"].clone(), b["masks"].clone()) for b in loader]
            cpus.append(time.process_time() - cpu)
            walls.append(time.perf_counter() - wall)
    return cpus, walls, batches


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/experiments/phantom_quick.yaml")
    parser.add_argument("--set", action="append", default=["data.phantom.n_cases=80"], help="config override")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    old = epoch_times(True, args.config, args.set, args.epochs)
    new = epoch_times(False, args.config, args.set, args.epochs)
    same = all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(old[2], new[2]))
    print(f"{args.config} {' '.join(args.set)}: {len(new[2]) // args.epochs} batches an epoch, {args.epochs} epochs")
    for name, (cpus, walls, _) in (("MetaTensor chain (before)", old), ("plain tensors (now)", new)):
        print(f"  {name:<26} CPU {statistics.median(cpus):.3f} s/epoch, wall {statistics.median(walls):.3f} s/epoch")
    ratio = statistics.median(new[0]) / statistics.median(old[0])
    print(f"  ratio now/before: CPU {ratio:.2f}; identical pixels and masks: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
