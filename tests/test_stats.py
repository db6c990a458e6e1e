"""Leaderboard statistics against hand-computed and scipy values."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from benchmarks import stats


def test_mean_std_hand_values():
    mean, std = stats.mean_std([1.0, 2.0, 3.0, 4.0, float("nan")])
    assert mean == pytest.approx(2.5)
    assert std == pytest.approx(math.sqrt(5 / 3))  # sample std, ddof = 1


def test_mean_std_single_and_empty():
    assert math.isnan(stats.mean_std([0.7])[1])
    assert stats.mean_std([0.7])[0] == pytest.approx(0.7)
    assert all(math.isnan(v) for v in stats.mean_std([]))


def test_bootstrap_ci_matches_normal_theory_on_large_sample():
    values = np.random.default_rng(1).normal(10.0, 2.0, size=400)
    low, high = stats.bootstrap_ci(values, seed=3)
    half_width = 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert low < values.mean() < high
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.1)


def test_bootstrap_ci_is_seeded_and_degenerate_cases():
    values = [0.71, 0.75, 0.69]
    assert stats.bootstrap_ci(values, seed=5) == stats.bootstrap_ci(values, seed=5)
    low, high = stats.bootstrap_ci(values, seed=5)
    assert min(values) - 1e-9 <= low <= high <= max(values) + 1e-9
    assert all(math.isnan(v) for v in stats.bootstrap_ci([0.7]))
    assert stats.bootstrap_ci([0.5, 0.5, 0.5]) == (0.5, 0.5)


def test_summarize_uses_seeds_when_several_else_cases():
    cases = np.linspace(0.2, 0.9, 30)
    several = stats.summarize([0.70, 0.72, 0.74], cases)
    assert several.n == 3
    assert (several.ci_low, several.ci_high) == pytest.approx(stats.t_interval([0.70, 0.72, 0.74]))  # over seeds
    assert several.ci_high - several.ci_low < 0.2  # not the wide case spread
    single = stats.summarize([0.55], cases)
    assert math.isnan(single.std)
    assert single.ci_low < 0.55 < single.ci_high  # over the 30 cases (mean 0.55)
    assert math.isnan(stats.summarize([0.55]).ci_low)


def test_wilcoxon_hand_value_and_scipy():
    from scipy.stats import wilcoxon

    # all 5 differences positive: exact two-sided p = 2 / 2**5
    assert stats.wilcoxon_p(np.array([1.0, 2.0, 3.0, 4.0, 5.0])) == pytest.approx(2 / 32)
    d = np.array([0.3, -0.1, 0.25, 0.4, 0.05, -0.02, 0.2, 0.15])
    assert stats.wilcoxon_p(d) == pytest.approx(wilcoxon(d).pvalue)
    assert stats.wilcoxon_p(np.zeros(6)) == 1.0
    assert math.isnan(stats.wilcoxon_p(np.array([0.1])))


def test_paired_bootstrap_detects_shift_and_not_noise():
    rng = np.random.default_rng(0)
    shifted = rng.normal(0.1, 0.05, size=40)
    noise = rng.normal(0.0, 0.05, size=40) - 0.0
    noise -= noise.mean()  # exactly zero mean difference
    assert stats.paired_bootstrap_p(shifted, seed=1) < 0.01
    assert stats.paired_bootstrap_p(noise, seed=1) > 0.5
    assert stats.paired_bootstrap_p(shifted, seed=1) == stats.paired_bootstrap_p(shifted, seed=1)
    with pytest.raises(ValueError, match="unknown paired test"):
        stats.paired_p(shifted, test="t")


def test_holm_hand_values():
    adjusted = stats.holm([0.01, 0.04, 0.03, float("nan")])
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04)
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(adjusted[3])
    assert stats.holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])


def test_case_level_values_average_views_and_macro_over_present_classes():
    per_case = pd.DataFrame(
        {
            "case_id": ["a", "a", "b", "b"],
            "view": ["sag_t1", "ax_l4_l5", "sag_t1", "ax_l4_l5"],
            "dice/thecal_sac": [0.8, 0.6, 0.5, np.nan],
            "dice/disc": [1.0, np.nan, 0.3, 0.1],
        }
    )
    ts = stats.case_level_values(per_case, "dice/thecal_sac")
    assert ts.to_dict() == pytest.approx({"a": 0.7, "b": 0.5})
    macro = stats.case_level_values(per_case, "dice_macro")  # rows: 0.9, 0.6 | 0.4, 0.1
    assert macro.to_dict() == pytest.approx({"a": 0.75, "b": 0.25})
    assert stats.case_level_values(per_case, "accuracy").empty


def test_paired_differences_align_on_case_id():
    a = pd.Series({"c1": 0.9, "c2": 0.8, "c3": 0.7})
    b = pd.Series({"c3": 0.5, "c1": 0.6, "c4": 0.1})
    assert stats.paired_differences(a, b) == pytest.approx([0.3, 0.2])


def test_rank_agreement_hand_values():
    identical = np.array([[0.9, 0.8, 0.7, 0.6], [0.8, 0.7, 0.6, 0.5], [0.95, 0.9, 0.5, 0.1]])
    assert stats.rank_agreement(identical).w == pytest.approx(1.0)
    reversed_ = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])  # rank sums 4, 4, 4 -> S = 0
    assert stats.rank_agreement(reversed_).w == pytest.approx(0.0)
    # rankings (1,2,3) and (1,3,2): rank sums 2,5,5, S = 4+1+1 = 6, W = 12*6 / (2^2 (27-3)) = 0.75
    one_swap = np.array([[3.0, 2.0, 1.0], [3.0, 1.0, 2.0]])
    agreement = stats.rank_agreement(one_swap)
    assert agreement.w == pytest.approx(0.75) and (agreement.n_seeds, agreement.n_losses) == (2, 3)
    assert 0.0 < agreement.friedman_p < 1.0


def test_rank_agreement_undefined_cases():
    assert math.isnan(stats.rank_agreement(np.array([[1.0, 2.0, 3.0]])).w)  # one seed
    assert math.isnan(stats.rank_agreement(np.array([[1.0, 2.0], [2.0, 1.0]])).w)  # two losses
    assert math.isnan(stats.rank_agreement(np.array([[1.0, math.nan, 3.0], [1.0, 2.0, 3.0]])).w)
