"""Phantom generation speed: ``python -m benchmarks.perf.synth_speed [--cases 200] [--size 128] [--workers 1]``.

Prints wall-clock seconds, CPU seconds (including worker processes) and cases per second of ``synthesize`` into a
fresh temporary folder (montage not included), and the ratios to the 30 s budget for 200 cases at 128² on 2 cores.
On a shared, loaded machine the wall time overstates the cost; CPU / workers is what an idle machine would take.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

BUDGET_S = 30.0  # 200 cases at 128² on 2 cores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=200)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from lss_vlm.data.phantom import synthesize

    def cpu_seconds() -> float:  # this process and its finished worker processes
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    with tempfile.TemporaryDirectory() as out:
        wall, cpu = time.perf_counter(), cpu_seconds()
        synthesize(out, n_cases=args.cases, size=args.size, seed=args.seed, workers=args.workers)
        wall, cpu = time.perf_counter() - wall, cpu_seconds() - cpu
    budget = BUDGET_S * args.cases / 200 * (args.size / 128) ** 2
    print(f"cases {args.cases}  size {args.size}  workers {args.workers}")
    print(f"wall {wall:.2f} s  cpu {cpu:.2f} s (all processes)  {args.cases / wall:.1f} cases/s")
    print(
        f"cpu per case {1000 * cpu / args.cases:.0f} ms; idle-machine estimate on {args.workers} core(s): "
        f"{cpu / args.workers:.1f} s"
    )
    print(
        f"wall / budget ({budget:.1f} s) = {wall / budget:.2f}   cpu / workers / budget = "
        f"{cpu / args.workers / budget:.2f}"
    )


if __name__ == "__main__":
    main()
