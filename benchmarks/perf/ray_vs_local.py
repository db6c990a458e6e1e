"""The ``quick`` suite on a 2-worker local Ray cluster against the local backend run one job at a time (issue 18).

Run: ``PYTHONPATH=. python benchmarks/perf/ray_vs_local.py [--suite quick] [--keep DIR]`` on an otherwise idle
machine. Both legs train the same (loss x seed) runs with **one thread per run** (local: ``OMP_NUM_THREADS=1``; Ray:
``--num-cpus 1``, so a local Ray cluster on 2 cores runs two at a time). It prints each leg's wall time, the ratio, and
whether every run's metrics agree between the legs (they must: same seeds, same thread count). The phantom is
synthesised before the clock starts, so neither leg pays for it; each leg pays its own report-decoder warm-up.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Metrics compared run by run between the two legs (exact equality expected; 1e-9 allows float printing).
COMPARED = ("dice_macro", "hd95_macro", "accuracy", "qwk", "cider")


def _leg(suite: str, out: Path, env: dict[str, str], extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "benchmarks.cli", "compare", suite, "--out", str(out), "--no-progress", *extra]
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def _metrics(out: Path) -> dict[str, dict[str, float]]:
    return {
        str(p.parent.relative_to(out / "runs")): json.loads(p.read_text())
        for p in sorted((out / "runs").glob("*/seed*/metrics.json"))
    }


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= 1e-9


def _warm_phantom(suite: str) -> None:
    """Synthesise the suite's phantom into the cache that both legs read (``LSS_VLM_CACHE``)."""
    from benchmarks.data import resolve_manifest
    from benchmarks.suite import load_suite, plan_runs

    resolve_manifest(plan_runs(load_suite(suite))[0].config.data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="quick", help="suite name or YAML (default: quick)")
    parser.add_argument("--keep", default=None, metavar="DIR", help="keep both suite folders under DIR")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="lss-ray-vs-local-"))
    root.mkdir(parents=True, exist_ok=True)
    os.environ["LSS_VLM_CACHE"] = str(root / "cache")
    _warm_phantom(args.suite)  # synthesised once, outside both clocks; each leg then starts from its own copy, so
    for leg in ("local", "ray"):  # each pays its own report-decoder warm-up (cached per seed) and nothing else
        shutil.copytree(root / "cache", root / f"cache_{leg}", dirs_exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    load_before = os.getloadavg()
    local = _leg(args.suite, root / "local", {**env, "LSS_VLM_CACHE": str(root / "cache_local")}, [])
    ray_env = {**env, "LSS_VLM_CACHE": str(root / "cache_ray")}
    ray = _leg(args.suite, root / "ray", ray_env, ["--backend", "ray", "--num-cpus", "1"])
    a, b = _metrics(root / "local"), _metrics(root / "ray")
    differing = [
        f"{run}: {key} {a[run].get(key)} vs {b[run].get(key)}"
        for run in sorted(set(a) | set(b))
        for key in COMPARED
        if run not in a or run not in b or not _same(a[run].get(key), b[run].get(key))
    ]
    print(f"suite {args.suite}: {len(a)} runs local, {len(b)} runs ray; load average before {load_before[0]:.2f}")
    print(f"local backend, one run at a time, 1 thread: {local:7.1f} s")
    print(f"ray backend, 2 workers x 1 CPU:             {ray:7.1f} s")
    print(f"ratio ray / local: {ray / local:.2f}  (target < 1)")
    print("metrics: identical in every run" if not differing else "metrics DIFFER:\n  " + "\n  ".join(differing))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
