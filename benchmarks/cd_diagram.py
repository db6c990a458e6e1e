"""Critical-difference diagram: average ranks of the losses and the Nemenyi critical difference (Demšar 2006).

Demšar, "Statistical Comparisons of Classifiers over Multiple Data Sets", JMLR 7 (2006), §3.2.2:

* rank the ``k`` losses within each of ``N`` blocks (rank 1 = best, ties share the mean rank);
  average per loss: ``R_j``;
* two losses differ (Nemenyi, all pairs, level α) when ``|R_i − R_j| ≥ CD``, ``CD = q_α · sqrt(k(k+1) / (6N))``,
  ``q_α = Q_{1−α}(k, ∞) / sqrt(2)`` with ``Q`` the studentized range distribution
  (:data:`scipy.stats.studentized_range`);
* the diagram joins with a thick bar each maximal group of losses whose ranks lie within one CD of each other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

ALPHA = 0.05


def average_ranks(blocks: pd.DataFrame, higher_is_better: bool) -> pd.Series:
    """Mean rank per column of ``blocks`` (rows = blocks, columns = losses; rows with a NaN are dropped first).

    Rank 1 is the best value in the row (highest when ``higher_is_better``); ties get their mean rank.
    """
    complete = blocks.dropna()
    ranks = complete.rank(axis=1, ascending=not higher_is_better, method="average")
    return ranks.mean(axis=0)


def nemenyi_cd(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi critical difference of average ranks for ``k`` methods over ``n`` blocks (NaN when k < 2 or n < 1)."""
    if k < 2 or n < 1:
        return math.nan
    from scipy.stats import studentized_range

    q_alpha = float(studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)
    return q_alpha * math.sqrt(k * (k + 1) / (6.0 * n))


def cliques(ranks: pd.Series, cd: float) -> list[list[str]]:
    """Maximal groups (≥ 2 losses, in rank order) whose average ranks all lie within ``cd``: not told apart."""
    ordered = ranks.sort_values()
    names, values = list(ordered.index), ordered.to_numpy()
    groups: list[list[str]] = []
    last_end = -1
    for i in range(len(names)):
        j = i
        while j + 1 < len(names) and values[j + 1] - values[i] < cd:
            j += 1
        if j > i and j > last_end:
            groups.append(names[i : j + 1])
            last_end = j
    return groups


def friedman_p(blocks: pd.DataFrame) -> float:
    """Friedman test p-value over the complete rows of ``blocks`` (NaN for fewer than 3 losses or 2 blocks)."""
    complete = blocks.dropna()
    if complete.shape[1] < 3 or complete.shape[0] < 2:
        return math.nan
    from scipy.stats import friedmanchisquare

    return float(friedmanchisquare(*[complete[c].to_numpy() for c in complete.columns]).pvalue)


def draw_cd_diagram(
    blocks: pd.DataFrame,
    higher_is_better: bool,
    path: Path,
    title: str,
    colors: Mapping[str, tuple] | None = None,
) -> Path | None:
    """Draw the CD diagram of ``blocks`` (rows = blocks, columns = losses) to ``path``; None for < 2 losses or blocks.

    Losses sit on a rank axis (best on the left); a bar of length CD is drawn above it and the losses that the
    Nemenyi test cannot tell apart are joined by thick bars.
    """
    complete = blocks.dropna()
    k, n = complete.shape[1], complete.shape[0]
    if k < 2 or n < 2:
        return None
    ranks = average_ranks(complete, higher_is_better).sort_values()
    cd = nemenyi_cd(k, n)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.overlay import save_figure

    half = math.ceil(k / 2)
    fig, ax = plt.subplots(figsize=(7.0, 1.3 + 0.3 * half))
    ax.set_xlim(0.5, k + 0.5)
    ax.set_ylim(-(0.55 * half + 0.45), 1.6)
    ax.hlines(0, 1, k, color="black", lw=1)
    for r in range(1, k + 1):
        ax.vlines(r, 0, 0.12, color="black", lw=1)
        ax.text(r, 0.22, str(r), ha="center", va="bottom", fontsize=8)
    ax.hlines(1.1, 1, 1 + cd, color="black", lw=1.5)
    ax.vlines([1, 1 + cd], 1.02, 1.18, color="black", lw=1)
    ax.text(1 + cd / 2, 1.22, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=8)
    for i, (name, rank) in enumerate(ranks.items()):
        left = i < half
        y = -(i + 1 if left else k - i) * 0.55 - 0.1
        x_text = 0.9 if left else k + 0.1
        color = (colors or {}).get(name, "black")
        ax.plot([rank, rank, x_text], [0, y, y], color=color, lw=1.2)
        label = f"{name} ({rank:.2f}) " if left else f" {name} ({rank:.2f})"
        ax.text(x_text, y, label, ha="right" if left else "left", va="center", fontsize=8, color=color)
    for g, group in enumerate(cliques(ranks, cd)):
        y = -0.18 - 0.12 * g
        ax.hlines(y, ranks[group[0]] - 0.03, ranks[group[-1]] + 0.03, color="0.3", lw=3.5)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    save_figure(fig, path, bbox_inches="tight")
    plt.close(fig)
    return path
