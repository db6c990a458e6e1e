"""Leaderboard figures (matplotlib): per-class Dice, seed spread, critical-difference diagram, training curves,
PID α/β, confusion, reliability diagram, overlays.

Every function takes the runs of a :class:`benchmarks.ranking.Leaderboard`, writes one image atomically (PNG for
plots; JPEG for the attention overlays, which are photographs and would weigh megabytes as PNG) and returns its path,
or None when the runs hold nothing to draw (e.g. no history.csv). A loss keeps its colour in every figure.
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
from benchmarks.cd_diagram import draw_cd_diagram, friedman_p
from benchmarks.metric_names import metric_info
from benchmarks.overlay import save_figure
from benchmarks.run_loading import CALIBRATION_FILE, LEGACY_OVERLAY_FILE, OVERLAY_FILE
from benchmarks.run_records import pooled_case_values
from lss_vlm.constants import FOREGROUND_LABELS, GRADES

if TYPE_CHECKING:
    from benchmarks.ranking import Leaderboard
    from benchmarks.run_records import RunRecord

DPI = 110


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def embed_image(path: str | Path) -> str:
    """``data:`` URI of a PNG or JPEG file (MIME type from the suffix), for self-contained HTML."""
    path = Path(path)
    mime = _MIME.get(path.suffix.lower(), "image/png")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


embed_png = embed_image  # the name before JPEG figures


def loss_colors(losses: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per loss (tab10, then tab20)."""
    plt = _plt()
    cmap = plt.get_cmap("tab10" if len(losses) <= 10 else "tab20")
    return {name: cmap(i % cmap.N) for i, name in enumerate(losses)}


#: Resolution of the overlay grid: ~800 px wide, about 1.7× the 64 px views of the demo, so that the page with four
#: losses' overlays stays under 1 MB.
OVERLAY_GRID_DPI = 80


def _save(fig, path: Path, dpi: int = DPI) -> Path:
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    for ax in fig.axes:
        if ax.get_xlabel() == "epoch":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    save_figure(fig, path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def _completed(runs: Sequence[RunRecord], loss: str) -> list[RunRecord]:
    return [r for r in runs if r.loss == loss and r.completed]


def _finish_grouped_bars(
    fig, ax, path: Path, x: np.ndarray, groups: Sequence[str], ylabel: str, ymax: float, title: str, n_losses: int
) -> Path:
    """Shared styling of the grouped bar charts (one group per class or shift, one bar per loss), then save."""
    ax.set_xticks(x, [g.replace("_", "\n") for g in groups])
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, ymax)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(4, n_losses), loc="upper center", bbox_to_anchor=(0.5, -0.18), frameon=False)
    return _save(fig, path)


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
    return _finish_grouped_bars(
        fig, ax, path, x, classes, "Dice", 1.05, "Dice per class (error bars: 95% CI)", len(losses)
    )


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


#: The training-curve panel: the segmentation loss under test, unweighted; the weighted total (λ_seg·L_seg +
#: λ_cls·CE + λ_txt·CE) mixes scales that differ per loss. ``train/loss`` only for runs without the column.
TRAIN_LOSS_COLUMNS: tuple[str, ...] = ("train/seg_loss", "train/loss")
_TRAIN_LOSS_LABELS = {"train/seg_loss": "segmentation loss (train, unweighted)", "train/loss": "total loss (train)"}


def training_curves(board: Leaderboard, path: Path) -> Path | None:
    """The training segmentation loss and the validation rank metric per epoch (mean over seeds, band = min-max over
    seeds). Each loss has its own scale (a Dice loss in [0, 1], a CE term in nats), so compare shapes, not levels."""
    frames = _history_frames(board)
    if not frames:
        return None
    all_columns = {c for fs in frames.values() for f in fs for c in f.columns}
    val_column = f"val/{board.rank_by}" if f"val/{board.rank_by}" in all_columns else None
    val_column = val_column or next((c for c in sorted(all_columns) if c.startswith("val/")), None)
    train_column = next((c for c in TRAIN_LOSS_COLUMNS if c in all_columns), None)
    panels = [c for c in (train_column, val_column) if c]
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
        if column in _TRAIN_LOSS_LABELS:
            ax.set_title("training: segmentation loss under test" if column == "train/seg_loss" else column)
            ax.set_ylabel(_TRAIN_LOSS_LABELS[column])
        else:
            header = metric_info(column.split("/", 1)[1]).header
            ax.set_title(f"validation {header}")
            ax.set_ylabel(f"{header} (validation)")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][-1].get_legend_handles_labels()  # below the panels: the curves stay readable
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(6, len(labels)), frameon=False)
    fig.subplots_adjust(bottom=0.2 + 0.05 * ((len(labels) - 1) // 6), wspace=0.3)
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


def _overlay_file(run: RunRecord) -> Path | None:
    for name in (OVERLAY_FILE, LEGACY_OVERLAY_FILE):
        if (run.path / name).is_file():
            return run.path / name
    return None


def attention_overlays(board: Leaderboard, path: Path) -> Path | None:
    """Each loss's overlay figure (its lowest completed seed; the same fixed test case for all), one loss a row."""
    images = {}
    for name in board.table["loss"]:
        found = next(((r, f) for r in _completed(board.runs, name) if (f := _overlay_file(r)) is not None), None)
        if found is not None:
            images[f"{name} (seed {found[0].seed})"] = found[1]
    if not images:
        return None
    plt = _plt()
    first = plt.imread(next(iter(images.values())))
    aspect = first.shape[0] / max(1, first.shape[1])
    width = 10.0
    fig, axes = plt.subplots(len(images), 1, figsize=(width, (width * aspect + 0.35) * len(images)), squeeze=False)
    for ax, (title, image_path) in zip(axes.ravel(), images.items()):
        ax.imshow(plt.imread(image_path))
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    return _save(fig, path, dpi=OVERLAY_GRID_DPI)


def _rank_blocks(board: Leaderboard, losses: list[str]) -> tuple[pd.DataFrame, str]:
    """Blocks for the CD diagram: test cases (values averaged over seeds) when runs have per-case values of the rank
    metric, else seeds (the run's value); and what a block is, for the title."""
    per_case = board.case_values.get(board.rank_by, {})
    cases = pd.DataFrame({name: per_case[name] for name in losses if name in per_case and len(per_case[name])})
    if cases.shape[1] == len(losses) and len(cases.dropna()) >= 2:
        return cases, "test cases"
    seeds = {
        name: {r.seed: r.metrics.get(board.rank_by, math.nan) for r in _completed(board.runs, name)} for name in losses
    }
    return pd.DataFrame(seeds), "seeds"


def critical_difference(board: Leaderboard, path: Path) -> Path | None:
    """Mean rank of each loss on the rank metric with the Nemenyi critical difference (Demšar 2006; see
    :mod:`benchmarks.cd_diagram`). Blocks = test cases (per-case values averaged over seeds), else seeds."""
    losses = [name for name in board.table["loss"] if _completed(board.runs, name)]
    if len(losses) < 2:
        return None
    blocks, unit = _rank_blocks(board, losses)
    n = len(blocks.dropna())
    n_seeds = max(len(_completed(board.runs, name)) for name in losses)
    info = metric_info(board.rank_by)
    p = friedman_p(blocks)
    friedman = f", Friedman p = {p:.3g}" if math.isfinite(p) else ""
    averaged = f", each averaged over {n_seeds} seeds" if unit == "test cases" and n_seeds > 1 else ""
    title = f"Mean rank on {info.label} ({n} {unit}{averaged}); Nemenyi CD at α = 0.05{friedman}"
    return draw_cd_diagram(blocks, info.higher_is_better, path, title, loss_colors(list(board.table["loss"])))


def _calibration(run: RunRecord) -> pd.DataFrame | None:
    path = run.path / CALIBRATION_FILE
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path)
    except (ValueError, OSError):
        return None
    return table if {"count", "confidence", "accuracy"} <= set(table.columns) else None


def reliability_diagram(board: Leaderboard, path: Path) -> Path | None:
    """Grade-head reliability diagram per loss: accuracy vs mean confidence per bin (the bins of ``ece``), pooled over
    seeds (count-weighted); below, the share of predictions per bin. The diagonal is perfect calibration."""
    pooled: dict[str, pd.DataFrame] = {}
    for name in board.table["loss"]:
        tables = [t for r in _completed(board.runs, name) if (t := _calibration(r)) is not None]
        if not tables:
            continue
        joined = pd.concat(tables).fillna({"confidence": 0.0, "accuracy": 0.0})
        joined["conf_sum"] = joined["confidence"] * joined["count"]
        joined["acc_sum"] = joined["accuracy"] * joined["count"]
        sums = joined.groupby(["low", "high"], as_index=False)[["count", "conf_sum", "acc_sum"]].sum()
        if sums["count"].sum() > 0:
            pooled[name] = sums
    if not pooled:
        return None
    plt = _plt()
    colors = loss_colors(list(board.table["loss"]))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.6, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1, label="perfect calibration")
    for name, t in pooled.items():
        full = t[t["count"] > 0]
        ece = [r.metrics.get("ece", math.nan) for r in _completed(board.runs, name)]
        label = f"{name} (ECE {np.nanmean(ece):.3f})" if np.isfinite(ece).any() else name
        top.plot(full["conf_sum"] / full["count"], full["acc_sum"] / full["count"], marker="o", ms=4,
                 color=colors[name], label=label)  # fmt: skip
        centres = (t["low"] + t["high"]) / 2
        bottom.step(centres, t["count"] / t["count"].sum(), where="mid", color=colors[name])
    top.set_ylabel("accuracy (fraction correct)")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.grid(alpha=0.3)
    top.legend(fontsize=7, loc="upper left")
    top.set_title("Grade-head reliability (test split, all levels pooled)", fontsize=10)
    bottom.set_xlabel("confidence (probability of the predicted grade)")
    bottom.set_ylabel("share of\npredictions", fontsize=8)
    bottom.grid(alpha=0.3)
    return _save(fig, path)


def ood_shift(board: Leaderboard, path: Path) -> Path | None:
    """Grouped bars: macro Dice per acquisition shift (clean first) and loss, error bars = std over seeds, each
    shifted bar labelled with its drop from clean (:func:`benchmarks.ood.ood_table`). None without OOD scores."""
    from benchmarks.ood import CLEAN, ood_table

    table = ood_table(board.runs, [name for name in board.table["loss"]])
    if table is None:
        return None
    plt = _plt()
    losses = list(dict.fromkeys(table["loss"]))
    shifts = list(dict.fromkeys(table["shift"]))
    colors = loss_colors(list(board.table["loss"]))
    width = 0.8 / len(losses)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.5 * len(shifts) + 0.3 * len(losses)), 4.4))
    x = np.arange(len(shifts))
    spread = bool((table["n_seeds"] > 1).any())  # one seed has no std: no zero-height error bars
    for i, name in enumerate(losses):
        rows = table[table["loss"] == name].set_index("shift").reindex(shifts)
        pos = x + (i - (len(losses) - 1) / 2) * width
        std = rows["dice_std"].fillna(0.0).to_numpy() if spread else None
        ax.bar(pos, rows["dice_mean"], width, yerr=std, capsize=2, color=colors[name], label=name)
        for xi, shift, mean, drop in zip(pos, shifts, rows["dice_mean"], rows["dice_drop_mean"]):
            if shift != CLEAN and np.isfinite(mean) and np.isfinite(drop):
                ax.text(xi, mean + 0.02, f"−{drop:.2f}" if drop >= 0 else f"+{-drop:.2f}", ha="center",
                        va="bottom", fontsize=7, rotation=90)  # fmt: skip
    bars = "error bars: std over seeds" if spread else "1 seed, no error bars"
    title = f"Dice under acquisition shift ({bars}; labels: drop from clean)"
    return _finish_grouped_bars(fig, ax, path, x, shifts, "Dice (macro, test split)", 1.1, title, len(losses))


#: name: (draw function, caption, file suffix). Order = order on the page.
FIGURES = {
    "dice_per_class": (dice_per_class, "Dice per foreground class and loss, 95% CI (as in the table).", ".png"),
    "seed_boxplot": (seed_boxplot, "Spread of the rank metric over seeds (or test cases with one seed).", ".png"),
    "critical_difference": (
        critical_difference,
        "Critical-difference diagram (Demšar 2006): mean rank of each loss, best on the left; losses joined by a bar "
        "are not told apart by the Nemenyi test at α = 0.05.",
        ".png",
    ),
    "training_curves": (
        training_curves,
        "Training segmentation loss (unweighted; its scale differs per loss) and validation metric per epoch.",
        ".png",
    ),
    "pid_trajectories": (
        pid_trajectories,
        "PID-Tversky controller output per class and update, with its clamps.",
        ".png",
    ),
    "confusion_matrices": (confusion_matrices, "Grade confusion matrices on the test split.", ".png"),
    "reliability_diagram": (
        reliability_diagram,
        "Reliability of the grade head (the bins behind ECE): below the diagonal = over-confident.",
        ".png",
    ),
    "ood_shift": (
        ood_shift,
        "Out-of-distribution suite: macro Dice on the clean test split and on the same phantom under each "
        "acquisition-shift preset, per loss; the label over a bar is its drop from clean (mean over seeds).",
        ".png",
    ),
    "attention_overlays": (
        attention_overlays,
        "A fixed test case per loss: image, ground truth, predicted labels and the text→patch attention map "
        "(white = most attended).",
        ".jpg",
    ),
}


def make_figures(board: Leaderboard, out_dir: str | Path) -> dict[str, tuple[Path, str]]:
    """Write every figure that has data into ``out_dir``; returns {name: (image path, caption)}."""
    out_dir = Path(out_dir)
    made = {}
    for name, (draw, caption, suffix) in FIGURES.items():
        path = draw(board, out_dir / f"{name}{suffix}")
        if path is not None:
            made[name] = (path, caption)
    return made
