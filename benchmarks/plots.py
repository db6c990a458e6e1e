"""Leaderboard figures (matplotlib, PNG): per-class Dice, seed spread, training curves, PID α/β, confusion, overlays.

Every function takes the runs of a :class:`benchmarks.ranking.Leaderboard`, writes one PNG atomically and returns
its path, or None when the runs hold nothing to draw (e.g. no history.csv). A loss keeps its colour in every figure.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from benchmarks import stats
from benchmarks.metric_names import metric_info
from benchmarks.run_records import pooled_case_values
from lss_vlm.constants import FOREGROUND_LABELS, GRADES
from lss_vlm.io import atomic_path

if TYPE_CHECKING:
    from benchmarks.ranking import Leaderboard
    from benchmarks.run_records import RunRecord

DPI = 110


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def embed_png(path: str | Path) -> str:
    """``data:`` URI of a PNG file, for self-contained HTML."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def loss_colors(losses: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per loss (tab10, then tab20)."""
    plt = _plt()
    cmap = plt.get_cmap("tab10" if len(losses) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(losses)}


def _save(fig, path: Path) -> Path:
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    for ax in fig.axes:
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def _completed(runs: Sequence[RunRecord], loss: str) -> list[RunRecord]:
    return [r for r in runs if r.loss == loss and r.completed]


def dice_per_class(board: Leaderboard, path: Path) -> Path | None:
    """Grouped bars: mean Dice of each foreground class per loss, error bars = 95 % bootstrap CI (as in the table)."""
    losses = [name for name in board.table["loss"] if _completed(board.runs, name)]
    classes = [c for c in FOREGROUND_LABELS if any(f"dice/{c}" in r.metrics for r in board.runs)]
    if not losses or not classes:
        return None
    plt = _plt()
    colors = loss_colors(list(board.table["loss"]))
    width = 0.8 / len(losses)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(classes) + 0.25 * len(losses)), 4.2))
    x = np.arange(len(classes))
    for i, name in enumerate(losses):
        runs = _completed(board.runs, name)
        means, lows, highs = [], [], []
        for c in classes:
            key = f"dice/{c}"
            s = stats.summarize([r.metrics.get(key, math.nan) for r in runs], pooled_case_values(runs, key).to_numpy())
            means.append(s.mean)
            lows.append(s.mean - s.ci_low if np.isfinite(s.ci_low) else 0.0)
            highs.append(s.ci_high - s.mean if np.isfinite(s.ci_high) else 0.0)
        ax.bar(x + (i - (len(losses) - 1) / 2) * width, means, width, yerr=[lows, highs], capsize=2,
               color=colors[name], label=name)  # fmt: skip
    ax.set_xticks(x, [c.replace("_", "\n") for c in classes])
    ax.set_ylabel("Dice")
    ax.set_ylim(0, 1.05)
    ax.set_title("Dice per class (error bars: 95% bootstrap CI)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(4, len(losses)), loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    return _save(fig, path)


def seed_boxplot(board: Leaderboard, path: Path) -> Path | None:
    """Box plot of the rank metric per loss: over seeds (points = seeds); with one seed, over test cases."""
    metric = board.rank_by
    losses = [name for name in board.table["loss"] if _completed(board.runs, name)]
    if not losses:
        return None
    one_seed = max(len(_completed(board.runs, n)) for n in losses) < 2
    data = []
    for name in losses:
        runs = _completed(board.runs, name)
        values = pooled_case_values(runs, metric).to_numpy() if one_seed else None
        if values is None or values.size == 0:
            values = stats.finite([r.metrics.get(metric, math.nan) for r in runs])
        data.append(values)
    plt = _plt()
    colors = loss_colors(list(board.table["loss"]))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(losses) + 2), 4.0))
    box = ax.boxplot(data, patch_artist=True, widths=0.6, showfliers=not one_seed)
    for patch, name in zip(box["boxes"], losses):
        patch.set_facecolor((*colors[name][:3], 0.35))
    rng = np.random.default_rng(0)
    for i, values in enumerate(data):
        ax.scatter(i + 1 + rng.uniform(-0.12, 0.12, len(values)), values, s=10 if one_seed else 22,
                   color=colors[losses[i]], zorder=3, alpha=0.7 if one_seed else 1.0)  # fmt: skip
    ax.set_xticks(range(1, len(losses) + 1), losses, rotation=30, ha="right")
    info = metric_info(metric)
    ax.set_ylabel(info.header)
    what = "test cases (1 seed)" if one_seed else "seeds"
    ax.set_title(f"{info.label} over {what}")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _history_frames(board: Leaderboard) -> dict[str, list[pd.DataFrame]]:
    frames: dict[str, list[pd.DataFrame]] = {}
    for name in board.table["loss"]:
        hist = [h for r in _completed(board.runs, name) if (h := r.history()) is not None and "epoch" in h.columns]
        if hist:
            frames[name] = hist
    return frames


def _mean_curve(frames: list[pd.DataFrame], column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    joined = pd.concat([f[["epoch", column]] for f in frames if column in f.columns], ignore_index=True)
    grouped = joined.groupby("epoch")[column]
    return (
        grouped.mean().index.to_numpy(),
        grouped.mean().to_numpy(),
        grouped.min().to_numpy(),
        grouped.max().to_numpy(),
    )


def training_curves(board: Leaderboard, path: Path) -> Path | None:
    """Training loss and the validation rank metric per epoch (mean over seeds, band = min-max over seeds)."""
    frames = _history_frames(board)
    if not frames:
        return None
    all_columns = {c for fs in frames.values() for f in fs for c in f.columns}
    val_column = f"val/{board.rank_by}" if f"val/{board.rank_by}" in all_columns else None
    val_column = val_column or next((c for c in sorted(all_columns) if c.startswith("val/")), None)
    panels = [c for c in ("train/loss", val_column) if c and c in all_columns]
    if not panels:
        return None
    plt = _plt()
    colors = loss_colors(list(board.table["loss"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, column in zip(axes[0], panels):
        for name, fs in frames.items():
            if not any(column in f.columns for f in fs):
                continue
            epoch, mean, low, high = _mean_curve(fs, column)
            ax.plot(epoch, mean, color=colors[name], label=name, marker="o", ms=3)
            if len(fs) > 1:
                ax.fill_between(epoch, low, high, color=colors[name], alpha=0.15)
        key = column.split("/", 1)[1]
        ax.set_title(column if column == "train/loss" else f"validation {metric_info(key).header}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][-1].get_legend_handles_labels()  # below the panels: the curves stay readable
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(6, len(labels)), frameon=False)
    fig.subplots_adjust(bottom=0.18 + 0.05 * ((len(labels) - 1) // 6))
    return _save(fig, path)


def _controller_frames(board: Leaderboard) -> dict[str, list[pd.DataFrame]]:
    """Per loss, each completed run's ``controller.csv`` (one row per controller update) with an ``x`` column in
    epochs (an update at step k of an epoch of n steps sits at epoch − 1 + k/n; the end-of-epoch hook at epoch)."""
    frames: dict[str, list[pd.DataFrame]] = {}
    for name in board.table["loss"]:
        for r in _completed(board.runs, name):
            path = r.path / "controller.csv"
            if not path.is_file() or path.stat().st_size == 0:
                continue
            frame = pd.read_csv(path)
            steps = frame.groupby("epoch")["step"].transform("max").replace(0, 1)
            frame["x"] = np.where(frame["step"] > 0, frame["epoch"] - 1 + frame["step"] / steps, frame["epoch"])
            frames.setdefault(name, []).append(frame)
    return frames


def pid_trajectories(board: Leaderboard, path: Path) -> Path | None:
    """The controller output y_c per foreground class over training (every update, seed 0 drawn; the legend gives
    the share of updates that sat on a clamp, pooled over seeds), with the clamp limits dotted."""
    frames = _controller_frames(board)
    classes = [c for c in FOREGROUND_LABELS if any(f"output/{c}" in f.columns for fs in frames.values() for f in fs)]
    if not classes:
        return None
    plt = _plt()
    colors = loss_colors(list(board.table["loss"]))
    n_seeds = max(len(fs) for fs in frames.values())
    cols = min(3, len(classes))
    rows = math.ceil(len(classes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.3 * cols, 3.2 * rows), squeeze=False, sharex=True)
    for ax, c in zip(axes.ravel(), classes):
        for name, fs in frames.items():
            first = fs[0]
            if f"output/{c}" not in first.columns:
                continue
            clamped = pd.concat([f[f"clamp_fraction/{c}"].iloc[-1:] for f in fs if f"clamp_fraction/{c}" in f])
            label = f"{name} ({100 * float(clamped.mean()):.0f}% on clamp)" if len(clamped) else name
            ax.plot(first["x"], first[f"output/{c}"], color=colors[name], lw=1.2, label=label)
            for bound in ("output_min", "output_max"):
                if f"{bound}/{c}" in first:
                    ax.axhline(float(first[f"{bound}/{c}"].iloc[0]), color=colors[name], ls=":", lw=0.9)
        ax.set_title(c.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="best")
    for ax in axes.ravel()[len(classes) :]:
        ax.axis("off")
    seeds = "1 seed" if n_seeds == 1 else f"seed 0 of {n_seeds}; clamp share pooled over seeds"
    fig.suptitle(f"PID controller output per class (clamp limits dotted; {seeds})")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    return _save(fig, path)


def confusion_matrices(board: Leaderboard, path: Path) -> Path | None:
    """Grade confusion matrix per loss (counts summed over seeds; colour = row-normalised, rows = truth)."""
    matrices = {}
    for name in board.table["loss"]:
        mats = [
            pd.read_csv(r.path / "confusion_matrix.csv", header=None).apply(pd.to_numeric, errors="coerce")
            for r in _completed(board.runs, name)
            if (r.path / "confusion_matrix.csv").is_file()
        ]
        mats = [m.dropna(how="all").dropna(axis=1, how="all").to_numpy()[-len(GRADES) :, -len(GRADES) :] for m in mats]
        mats = [m for m in mats if m.shape == (len(GRADES), len(GRADES))]
        if mats:
            matrices[name] = np.sum(mats, axis=0)
    if not matrices:
        return None
    plt = _plt()
    cols = min(4, len(matrices))
    rows = math.ceil(len(matrices) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, counts) in zip(axes.ravel(), matrices.items()):
        totals = counts.sum(axis=1, keepdims=True)
        norm = np.divide(counts, totals, out=np.zeros_like(counts, dtype=float), where=totals > 0)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(GRADES)):
            for j in range(len(GRADES)):
                ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.6 else "black")  # fmt: skip
        ax.set_xticks(range(len(GRADES)), [g[:3] for g in GRADES], fontsize=8)
        ax.set_yticks(range(len(GRADES)), [g[:3] for g in GRADES], fontsize=8)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(name, fontsize=9)
    for ax in axes.ravel()[len(matrices) :]:
        ax.axis("off")
    fig.suptitle("Stenosis grade confusion (test split)")
    fig.tight_layout()
    return _save(fig, path)


def attention_overlays(board: Leaderboard, path: Path) -> Path | None:
    """One ``overlay.png`` per loss (its lowest completed seed; same fixed test case for all), in a grid."""
    images = {}
    for name in board.table["loss"]:
        run = next((r for r in _completed(board.runs, name) if (r.path / "overlay.png").is_file()), None)
        if run is not None:
            images[f"{name} (seed {run.seed})"] = run.path / "overlay.png"
    if not images:
        return None
    plt = _plt()
    cols = 1  # an overlay shows every view side by side: one loss per row keeps them readable
    rows = len(images)
    first = plt.imread(next(iter(images.values())))
    aspect = first.shape[0] / max(1, first.shape[1])
    width = 10.0
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, width * aspect * rows + 0.4 * rows), squeeze=False)
    for ax, (title, image_path) in zip(axes.ravel(), images.items()):
        ax.imshow(plt.imread(image_path))
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    for ax in axes.ravel()[len(images) :]:
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path)


FIGURES = {
    "dice_per_class": (dice_per_class, "Dice per foreground class and loss, 95% bootstrap CI."),
    "seed_boxplot": (seed_boxplot, "Spread of the rank metric over seeds (or test cases with one seed)."),
    "training_curves": (training_curves, "Training loss and validation metric per epoch."),
    "pid_trajectories": (pid_trajectories, "PID-Tversky controller output per class and update, with its clamps."),
    "confusion_matrices": (confusion_matrices, "Grade confusion matrices on the test split."),
    "attention_overlays": (attention_overlays, "Image, predicted mask and attention map of a fixed test case."),
}


def make_figures(board: Leaderboard, out_dir: str | Path) -> dict[str, tuple[Path, str]]:
    """Write every figure that has data into ``out_dir``; returns {name: (png path, caption)}."""
    out_dir = Path(out_dir)
    made = {}
    for name, (draw, caption) in FIGURES.items():
        path = draw(board, out_dir / f"{name}.png")
        if path is not None:
            made[name] = (path, caption)
    return made
