"""Synthetic run directories (the run-directory contract of HELPERS.md / DESIGN.md §7) for leaderboard tests.

Values are drawn from a seeded generator around a per-loss ``quality`` so that rankings are known in advance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from lss_vlm.constants import FOREGROUND_LABELS, GRADES, VIEWS


def write_run(
    run_dir: Path,
    quality: float,
    seed: int,
    n_cases: int = 12,
    status: str = "completed",
    reason: str | None = None,
    pid: bool = False,
    epochs: int = 4,
) -> Path:
    """Write a run directory whose Dice values scatter around ``quality`` (per case, view and class)."""
    rng = np.random.default_rng(abs(hash((round(quality, 6), seed))) % 2**32)
    run_dir.mkdir(parents=True, exist_ok=True)
    if status != "completed":
        (run_dir / "status.json").write_text(json.dumps({"status": status, "reason": reason, "wall_time_s": 1.0}))
        return run_dir
    rows = []
    for case in range(n_cases):
        case_effect = rng.normal(0, 0.05)
        for view in VIEWS:
            row = {"case_id": f"case{case:03d}", "view": view}
            for c in FOREGROUND_LABELS:
                row[f"dice/{c}"] = float(np.clip(quality + case_effect + rng.normal(0, 0.02), 0, 1))
            rows.append(row)
    per_case = pd.DataFrame(rows)
    per_case.to_csv(run_dir / "per_case.csv", index=False)
    metrics = {f"dice/{c}": float(per_case[f"dice/{c}"].mean()) for c in FOREGROUND_LABELS}
    metrics["dice_macro"] = float(np.mean(list(metrics.values())))
    metrics.update(
        accuracy=float(np.clip(quality - 0.1 + rng.normal(0, 0.01), 0, 1)),
        macro_f1=float(np.clip(quality - 0.2 + rng.normal(0, 0.01), 0, 1)),
        qwk=float(np.clip(quality - 0.15 + rng.normal(0, 0.01), 0, 1)),
        cider=float(quality + rng.normal(0, 0.01)),
        hd95_macro=float(10 * (1 - quality) + rng.normal(0, 0.1)),
    )
    metrics["cider_x100"] = 100 * metrics["cider"]
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    history = {"epoch": np.arange(1, epochs + 1), "train/loss": 1.0 / np.arange(1, epochs + 1) + rng.normal(0, 0.01)}
    history["val/dice_macro"] = quality * (1 - 0.5 / np.arange(1, epochs + 1))
    for c in FOREGROUND_LABELS:
        beta = np.clip(0.5 + 0.05 * np.arange(epochs), 0, 1) if pid else np.full(epochs, np.nan)
        history[f"beta/{c}"], history[f"alpha/{c}"] = beta, 1 - beta
    pd.DataFrame(history).to_csv(run_dir / "history.csv", index=False)
    if pid:  # one controller update per step, 5 steps an epoch, the output sliding onto its upper clamp
        updates = [(e, k) for e in range(1, epochs + 1) for k in range(1, 6)]
        log: dict[str, object] = {"epoch": [e for e, _ in updates], "step": [k for _, k in updates]}
        for c in FOREGROUND_LABELS:
            output = np.minimum(1.0 + 0.2 * np.arange(len(updates)), 4.0)
            log[f"output/{c}"], log[f"output_min/{c}"], log[f"output_max/{c}"] = output, 0.25, 4.0
            log[f"clamp_fraction/{c}"] = np.cumsum(output >= 4.0) / np.arange(1, len(updates) + 1)
        pd.DataFrame(log).to_csv(run_dir / "controller.csv", index=False)
    counts = rng.integers(0, 10, size=(len(GRADES), len(GRADES))) + np.eye(len(GRADES), dtype=int) * 20
    np.savetxt(run_dir / "confusion_matrix.csv", counts, fmt="%d", delimiter=",")
    confidence = np.clip(rng.uniform(0.3, 1.0, 200), 0, 1)  # a grade head a little over-confident
    from lss_vlm.metrics.classification import reliability_bins

    bins = reliability_bins(confidence, rng.random(200) < confidence - 0.1)
    pd.DataFrame(bins).rename_axis("bin").to_csv(run_dir / "calibration.csv")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(run_dir / "overlay.png", rng.random((32, 96)), cmap="gray")  # the name before overlay.jpg
    (run_dir / "status.json").write_text(json.dumps({"status": "completed", "reason": None, "wall_time_s": 2.5}))
    return run_dir


def write_suite(suite_dir: Path, qualities: dict[str, float], seeds: int = 3, failed: dict | None = None) -> Path:
    """A suite directory with ``runs/<loss>/seed<k>/`` for each loss; ``failed`` maps (loss, seed) -> reason."""
    failed = failed or {}
    for loss, quality in qualities.items():
        for seed in range(seeds):
            run_dir = suite_dir / "runs" / loss / f"seed{seed}"
            if (loss, seed) in failed:
                write_run(run_dir, quality, seed, status="failed", reason=failed[(loss, seed)])
            else:
                write_run(run_dir, quality, seed, pid=loss.startswith("pid"))
    return suite_dir
