"""Start-up cost of the light commands: ``lss-bench --help``, ``list losses``, ``validate standard`` (issue 16).

Each command runs ``--repeats`` times in a fresh interpreter; the best wall and CPU seconds (the child's user +
system time, less sensitive to a loaded machine) are printed beside those of a bare ``python -c 'import torch'``,
with their ratio to it. Target: ``validate standard`` under 10 s.
``tests/test_cli_startup.py`` checks which libraries these commands import (no timing in tests).

Run: ``PYTHONPATH=. python benchmarks/perf/cli_startup.py [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

COMMANDS: dict[str, list[str]] = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "lss-bench --help": [sys.executable, "-m", "benchmarks.cli", "--help"],
    "lss-bench list losses": [sys.executable, "-m", "benchmarks.cli", "list", "losses"],
    "lss-bench validate standard": [sys.executable, "-m", "benchmarks.cli", "validate", "standard"],
}


def children_cpu() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(argv: Sequence[str], repeats: int) -> tuple[float, float]:
    """Best (wall s, CPU s) of ``repeats`` runs of ``argv``; the command must exit with 0."""
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), children_cpu()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        walls.append(time.perf_counter() - wall)
        cpus.append(children_cpu() - cpu)
    return min(walls), min(cpus)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="runs per command; the best is shown (default: 3)")
    args = parser.parse_args(argv)
    results = {name: measure(cmd, args.repeats) for name, cmd in COMMANDS.items()}
    base_wall, base_cpu = results["python -c 'import torch'"]
    print(f"{'command':<30} {'wall s':>7} {'CPU s':>7} {'wall/torch':>10} {'CPU/torch':>9}")
    for name, (wall, cpu) in results.items():
        print(f"{name:<30} {wall:7.2f} {cpu:7.2f} {wall / base_wall:10.2f} {cpu / base_cpu:9.2f}")
    wall, cpu = results["lss-bench validate standard"]
    print(f"validate standard: {cpu:.1f} s CPU, {wall:.1f} s wall (target < 10 s)")


if __name__ == "__main__":
    main()
