"""Cost of one quick-budget run (train + final evaluation): wall time, CPU time, peak RSS of the run and of Java.

Run: ``PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/perf/quick_run.py [--config C] [--set k=v ...]``.
The phantom is synthesised first (cached, timed separately), then one run goes into a temporary folder. CPU seconds
include child processes (the Java text metrics) and equal the wall time on a free core with one thread; the quick
suite budget (demo: >= 4 losses in <= 10 min on 2 cores) needs about <= 90 s per run.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from benchmarks.config import CONFIG_ROOT, load_config
from benchmarks.data import resolve_manifest
from benchmarks.runner import run_experiment


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", default=str(CONFIG_ROOT / "experiments" / "phantom_quick.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    cfg = load_config(args.config, [*args.overrides, "train.quiet=true"])

    wall, cpu = time.perf_counter(), cpu_seconds()
    resolve_manifest(cfg.data)
    wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    print(f"phantom (cached after the first call): wall {wall:.1f} s, cpu {cpu:.1f} s")

    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), cpu_seconds()
        metrics = run_experiment(cfg, Path(tmp) / "run", resume=False)
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    java_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"run: wall {wall:.1f} s, cpu {cpu:.1f} s (cpu/wall {cpu / wall:.2f}), budget ratio cpu/90s {cpu / 90:.2f}")
    print(f"peak RSS: run {rss:.0f} MB, largest child (Java) {java_rss:.0f} MB")
    keys = ("dice_macro", "dice/ligamentum_flavum", "accuracy", "macro_f1", "cider_x100", "composed/cider_x100")
    print("metrics:", {k: round(metrics[k], 4) for k in keys if k in metrics})


if __name__ == "__main__":
    main()
