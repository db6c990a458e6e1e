"""Wall time and peak memory of ``lss-bench demo`` (the quick suite) against its targets: ≤ 600 s and ≤ 3 GB.

Run: ``PYTHONPATH=. python benchmarks/perf/quick_suite.py [--out DIR] [--fresh-cache]``. The demo runs in a child
process (phantom synthesis, 4 trainings with final evaluation, leaderboard + figures); the script prints its wall
time, CPU time, peak resident memory (the child's ``ru_maxrss``) and the ratios to the targets, plus the load
average, since on a shared machine the wall time depends on it (the CPU time much less).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_WALL_S = 600.0
TARGET_RSS_GB = 3.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="demo output folder (default: a temporary folder, deleted)")
    parser.add_argument("--fresh-cache", action="store_true", help="synthesise the phantom into an empty cache")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="lss-quick-"))
    env = dict(os.environ)
    cache = Path(tempfile.mkdtemp(prefix="lss-cache-")) if args.fresh_cache else None
    if cache is not None:
        env["LSS_VLM_CACHE"] = str(cache)
    load_before = os.getloadavg()
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "benchmarks.cli", "demo", "--out", str(out), "--no-progress"]
    code = subprocess.call(cmd, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    rss_gb = usage.ru_maxrss / 1024**2  # KiB on Linux
    print(f"exit code        {code}")
    print(f"wall time        {wall:8.1f} s   ratio to {TARGET_WALL_S:.0f} s target: {wall / TARGET_WALL_S:.2f}")
    print(f"CPU time         {usage.ru_utime + usage.ru_stime:8.1f} s   (user + system, all children)")
    print(f"peak RSS         {rss_gb:8.2f} GB  ratio to {TARGET_RSS_GB:.0f} GB target: {rss_gb / TARGET_RSS_GB:.2f}")
    print(f"load average     {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} cores)")
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
