"""Share of a quick-budget run spent on report generation (and on the decoder's text-only warm-up), issue 13.

Run: ``PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/perf/report_generation.py [--config C] [--set k=v ...]
[--run-dir DIR]``. Trains one run (or reads a finished ``--run-dir``) and prints the run's wall and CPU seconds, the
final evaluation's generation seconds (``report_generation.json``: greedy/beam decoding of every test case) and the
warm-up seconds (``report_warmup.json``), each as a share of the run. CPU seconds (this process, one thread) are the
robust measure on a shared machine; wall seconds include waiting for the CPU. Target: generation ≤ 20 % of the run.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from benchmarks.config import CONFIG_ROOT, load_config
from benchmarks.data import resolve_manifest
from benchmarks.runner import run_experiment


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (the Java text metrics)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def shares(run_dir: Path, wall: float, cpu: float | None) -> None:
    """Print generation and warm-up seconds of ``run_dir`` against the run's ``wall`` / ``cpu`` seconds."""
    generation = json.loads((run_dir / "report_generation.json").read_text())
    warm_file = run_dir / "report_warmup.json"
    warmup = json.loads(warm_file.read_text()) if warm_file.is_file() else {}
    print(f"run            wall {wall:7.1f} s" + (f"   cpu {cpu:7.1f} s" if cpu is not None else ""))
    rows = [("generation", generation.get("seconds"), generation.get("cpu_seconds"))]
    rows.append(("warm-up", warmup.get("report_warmup/seconds"), warmup.get("report_warmup/cpu_seconds")))
    for name, w, c in rows:
        if w is None:
            continue
        line = f"{name:<14} wall {w:7.1f} s ({100 * w / wall:4.1f} %)"
        if cpu is not None and c is not None:
            line += f"   cpu {c:7.1f} s ({100 * c / cpu:4.1f} %)"
        print(line)
    print(f"generated reports: {generation.get('n_cases')} test cases")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--config", default=str(CONFIG_ROOT / "experiments" / "phantom_quick.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--run-dir", type=Path, default=None, help="a finished run (wall time from status.json)")
    args = parser.parse_args()
    if args.run_dir is not None:
        status = json.loads((args.run_dir / "status.json").read_text())
        shares(args.run_dir, float(status["wall_time_s"]), None)
        return
    cfg = load_config(args.config, [*args.overrides, "train.quiet=true"])
    resolve_manifest(cfg.data)  # the phantom is cached; not part of the run
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), cpu_seconds()
        run_experiment(cfg, Path(tmp) / "run")
        shares(Path(tmp) / "run", time.perf_counter() - wall, cpu_seconds() - cpu)


if __name__ == "__main__":
    main()
