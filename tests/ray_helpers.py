"""Helpers of tests/test_ray.py that Ray workers import: a runner that kills its worker process once, after the
first epoch of the first run it trains (the worker-crash case; Ray retries the task, which resumes the run)."""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.runner import run_experiment


def killing_runner(cfg, out_dir, on_epoch=None):
    """``run_experiment``, except that the first run to finish an epoch anywhere in the suite kills its process."""
    marker = Path(out_dir).parents[2] / "killed_once"

    def kill_once(epoch: int, val: dict) -> None:
        if epoch == 1 and not marker.exists():
            marker.write_text(str(out_dir))
            os._exit(1)  # the worker dies without cleaning up, as with kill -9

    return run_experiment(cfg, out_dir, on_epoch=kill_once)
