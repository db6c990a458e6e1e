"""Statistics of a leaderboard: seed summaries, bootstrap confidence intervals, paired tests and Holm correction.

Conventions (also in docs/leaderboard.md):

- **Spread over seeds.** ``mean`` and sample ``std`` (ddof = 1) of one metric over the completed seeds of a loss;
  the std of a single seed is NaN (undefined), not 0.
- **95 % CI.** Student t-interval of the mean, ``x̄ ± t_{n−1, 0.975} · s / √n`` (:func:`t_interval`). With ≥ 2 seeds
  it is taken over the seed values; with 1 seed over the per-case values of the test split (when the metric exists
  per case, e.g. Dice), so the interval then reflects case-to-case variation, not training variation. Not the
  percentile bootstrap: over 3 seeds that is just [min, max] of the seeds and covers the true mean ~76 % of the time;
  the t-interval keeps its ~95 % coverage at 3–5 seeds (tests/test_stats_hardening.py simulates it). The leaderboard
  clips it to the metric's range (``benchmarks.metric_names.metric_bounds``: a Dice CI never reaches below 0).
- **Paired test vs the baseline.** Over test cases: each case's value is its mean over views and seeds
  (:func:`case_level_values`), paired by ``case_id`` with the baseline's. Wilcoxon signed-rank (two-sided,
  ``scipy.stats.wilcoxon``) by default, or a paired bootstrap of the mean difference. Differences are rounded to
  :data:`TIE_DECIMALS` decimals first, so values equal in exact arithmetic (0.05 arriving as 0.050000000000000044 and
  0.049999999999999933) rank as ties.
- **Multiple comparisons.** Holm's step-down correction over the losses compared with the same baseline.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lss_vlm.constants import FOREGROUND_LABELS

PAIRED_TESTS: tuple[str, ...] = ("wilcoxon", "bootstrap")
#: Paired differences are rounded to this many decimals (1e-12) before ranking: floating-point noise is not a rank.
TIE_DECIMALS = 12
#: How the leaderboard's confidence interval is computed (stated in its footnote).
CI_METHOD = "Student t-interval of the mean (x̄ ± t_{n−1} · s/√n)"


@dataclass(frozen=True)
class Summary:
    """Mean, sample std and 95 % bootstrap CI of one metric for one loss."""

    mean: float
    std: float
    ci_low: float
    ci_high: float
    n: int


def finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """The finite entries of ``values`` as a float array."""
    arr = np.asarray(values, dtype=float).ravel()
    return arr[np.isfinite(arr)]


def mean_std(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1) of the finite values; NaN where undefined.

    ``std = sqrt(Σ (x_i − x̄)² / (n − 1))``; NaN when n < 2, (NaN, NaN) when n = 0.
    """
    arr = finite(values)
    if arr.size == 0:
        return math.nan, math.nan
    std = float(np.std(arr, ddof=1)) if arr.size > 1 else math.nan
    return float(np.mean(arr)), std


def bootstrap_ci(
    values: Sequence[float] | np.ndarray, confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of the mean of the finite ``values`` (scipy, seeded).

    The interval is ``[q_{(1−c)/2}, q_{(1+c)/2}]`` of the means of ``n_resamples`` resamples drawn with replacement.
    NaN for fewer than two values; a point interval when all values are equal.
    """
    arr = finite(values)
    if arr.size < 2:
        return math.nan, math.nan
    if np.all(arr == arr[0]):
        return float(arr[0]), float(arr[0])
    from scipy.stats import bootstrap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bootstrap(
            (arr,),
            np.mean,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def t_interval(values: Sequence[float] | np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean of the finite ``values``.

    ``x̄ ± t_{n−1, (1+c)/2} · s / √n`` with the sample std ``s`` (ddof = 1). Exact for normal data and robust at the
    small n of a leaderboard (3–5 seeds), where a percentile bootstrap collapses to [min, max]. NaN for fewer than two
    values; a point interval when all values are equal.
    """
    from scipy.stats import t

    arr = finite(values)
    if arr.size < 2:
        return math.nan, math.nan
    mean = float(arr.mean())
    half = float(t.ppf((1 + confidence) / 2, df=arr.size - 1) * arr.std(ddof=1) / math.sqrt(arr.size))
    return mean - half, mean + half


def summarize(
    seed_values: Sequence[float] | np.ndarray,
    case_values: Sequence[float] | np.ndarray | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> Summary:
    """Mean ± std over seeds and the t-interval CI: over seeds when ≥ 2 seeds, else over ``case_values`` if given.

    ``seed`` is unused (the t-interval is exact arithmetic); it is kept so callers need not change.
    """
    seeds = finite(seed_values)
    mean, std = mean_std(seeds)
    if seeds.size >= 2 or case_values is None:
        low, high = t_interval(seeds, confidence)
    else:
        low, high = t_interval(case_values, confidence)
    return Summary(mean=mean, std=std, ci_low=low, ci_high=high, n=int(seeds.size))


def case_level_values(per_case: pd.DataFrame, metric: str) -> pd.Series:
    """One value per ``case_id``: the mean over the rows of that case (views, and seeds if concatenated).

    ``metric`` is a ``per_case.csv`` column (``dice/thecal_sac``) or a macro name (``dice_macro``) that is not a
    column but whose per-class columns ``dice/<class>`` are: the macro value of a row is then the mean over the
    foreground classes present in that row. NaN cells (class absent in a view) are skipped. Empty when the metric is
    not available per case.
    """
    if metric in per_case.columns:
        row_values = pd.to_numeric(per_case[metric], errors="coerce")
    elif metric.endswith("_macro"):
        prefix = metric[: -len("_macro")]
        columns = [f"{prefix}/{name}" for name in FOREGROUND_LABELS if f"{prefix}/{name}" in per_case.columns]
        if not columns:
            return pd.Series(dtype=float)
        row_values = per_case[columns].apply(pd.to_numeric, errors="coerce").mean(axis=1, skipna=True)
    else:
        return pd.Series(dtype=float)
    values = pd.Series(row_values.to_numpy(dtype=float), index=per_case["case_id"].astype(str).to_numpy())
    return values.groupby(level=0).mean().dropna()


def paired_differences(values: pd.Series, baseline: pd.Series) -> np.ndarray:
    """``values − baseline`` over the case_ids both have (finite on both sides), sorted by case_id."""
    joined = pd.concat([values.rename("a"), baseline.rename("b")], axis=1, join="inner").dropna().sort_index()
    return (joined["a"] - joined["b"]).to_numpy(dtype=float)


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences d_i (scipy; zero differences dropped).

    The differences are rounded to :data:`TIE_DECIMALS` decimals before ranking, so ties in exact arithmetic stay ties.
    Statistic ``W = Σ_{d_i > 0} rank(|d_i|)``; H0: the differences are symmetric about 0. 1.0 when every difference is
    0; NaN with fewer than two pairs.
    """
    d = np.round(finite(differences), TIE_DECIMALS)  # floating-point noise must not break ties
    if d.size < 2:
        return math.nan
    if np.all(d == 0):
        return 1.0
    from scipy.stats import wilcoxon

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(wilcoxon(d, zero_method="wilcox", alternative="two-sided").pvalue)


def paired_bootstrap_p(differences: np.ndarray, n_resamples: int = 9999, seed: int = 0) -> float:
    """Two-sided paired-bootstrap p-value of the mean difference d̄ (cases resampled with replacement, seeded).

    The bootstrap means d̄*_b are shifted to the null (mean 0): ``p = (1 + #{|d̄*_b − d̄| ≥ |d̄|}) / (B + 1)``.
    1.0 when every difference is 0; NaN with fewer than two pairs.
    """
    d = finite(differences)
    if d.size < 2:
        return math.nan
    observed = float(d.mean())
    if np.all(d == d[0]):
        return 1.0 if observed == 0 else 1.0 / (n_resamples + 1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_resamples, d.size))
    boot = d[idx].mean(axis=1)
    extreme = np.abs(boot - observed) >= abs(observed)
    return float((1 + extreme.sum()) / (n_resamples + 1))


def paired_p(differences: np.ndarray, test: str = "wilcoxon", seed: int = 0) -> float:
    """p-value of paired differences with ``test`` in :data:`PAIRED_TESTS`."""
    if test == "wilcoxon":
        return wilcoxon_p(differences)
    if test == "bootstrap":
        return paired_bootstrap_p(differences, seed=seed)
    raise ValueError(f"unknown paired test {test!r}; expected one of {', '.join(PAIRED_TESTS)}")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (family = the finite entries; NaN stay NaN).

    With the m finite p-values sorted ascending, ``p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) · p_(j))`` (i, j from 1).
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, math.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


@dataclass(frozen=True)
class RankAgreement:
    """How consistently the seeds rank the losses: Kendall's W and the Friedman test behind it."""

    w: float
    friedman_p: float
    n_seeds: int
    n_losses: int


def rank_agreement(scores: np.ndarray) -> RankAgreement:
    """Kendall's coefficient of concordance W of the loss rankings given by each seed.

    ``scores`` is ``[m seeds, n losses]`` (no NaN). Each seed ranks the n losses; with ``R_j`` the rank sum of loss
    j and ``S = Σ_j (R_j − m(n+1)/2)²``, ``W = 12 S / (m² (n³ − n))`` (1 = every seed gives the same ranking, 0 = no
    agreement). Computed from the tie-corrected Friedman statistic as ``W = χ²_F / (m (n − 1))``
    (``scipy.stats.friedmanchisquare``), whose p-value tests that the losses differ consistently across seeds.
    Needs m ≥ 2 and n ≥ 3; NaN otherwise.
    """
    from scipy.stats import friedmanchisquare

    scores = np.asarray(scores, dtype=float)
    m, n = scores.shape if scores.ndim == 2 else (0, 0)
    if m < 2 or n < 3 or not np.isfinite(scores).all():
        return RankAgreement(math.nan, math.nan, m, n)
    if np.all(scores == scores[:, :1]):  # every seed ties every loss: no ranking to agree on
        return RankAgreement(math.nan, math.nan, m, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        chi2, p = friedmanchisquare(*scores.T)
    return RankAgreement(float(chi2) / (m * (n - 1)), float(p), m, n)
