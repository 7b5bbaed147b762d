"""Statistics over seeds, checked against scipy or against values worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from ablatrix.stats import (adjusted_level, benjamini_hochberg, decide, holm, interaction_deltas, interval,
                            mark_best, paired_deltas, probability_of_improvement, seeds_needed,
                            summarize_deltas, t_interval, t_test_p, verdict)

T_975_DF1, T_975_DF2 = 12.706205, 4.302653  # Student-t 97.5% quantiles from a printed table


@pytest.mark.parametrize("values, mean, half", [
    ([0.9, 0.8], 0.85, T_975_DF1 * math.sqrt(0.005) / math.sqrt(2)),
    ([1.0, 2.0, 3.0], 2.0, T_975_DF2 * 1.0 / math.sqrt(3)),
    ([5.0, 5.0, 5.0], 5.0, 0.0),
])
def test_t_interval_matches_hand_computation(values, mean, half):
    """mean ± t(0.975, n-1) * s / sqrt(n)."""
    m, low, high = t_interval(values)
    assert m == pytest.approx(mean)
    assert (low, high) == (pytest.approx(mean - half, abs=1e-5), pytest.approx(mean + half, abs=1e-5))


def test_t_interval_of_one_value_has_no_bounds():
    """With one seed there is no interval, only the value."""
    m, low, high = t_interval([0.7])
    assert m == 0.7 and math.isnan(low) and math.isnan(high)


def test_mark_best_and_ties_per_dataset():
    """The best mean per dataset is 'best'; a mean inside the best's CI is 'tie', others blank."""
    table = pd.DataFrame({"dataset": ["a", "a", "a", "b", "b"], "mean": [90, 89, 80, 50, 60],
                          "ci_low": [88, 85, 79, math.nan, math.nan]})
    assert list(mark_best(table)) == ["best", "tie", "", "", "best"]


def runs(rows):
    return pd.DataFrame(rows, columns=["variant", "bn", "dataset", "seed", "acc"])


def test_paired_deltas_match_on_every_other_factor():
    """bn=False − bn=True per (variant, dataset, seed); unpaired runs are left out."""
    frame = runs([("v", True, "d", 0, 90.0), ("v", False, "d", 0, 88.0),
                  ("v", True, "d", 1, 92.0), ("v", False, "d", 1, 93.0),
                  ("w", True, "d", 0, 70.0), ("w", False, "d", 0, 70.0),
                  ("w", True, "d", 1, 75.0)])  # no bn=False partner: unpaired
    deltas = paired_deltas(frame, "bn", ["variant", "bn"], "acc")
    assert sorted(deltas["delta"]) == [-2.0, 0.0, 1.0]
    assert set(deltas["comparison"]) == {"False − True"}
    (row,) = summarize_deltas(deltas, ["comparison", "dataset"]).to_dict("records")
    assert (row["n"], row["wins"], row["ties"], row["losses"]) == (3, 1, 1, 1)
    assert row["mean"] == pytest.approx(-1 / 3)
    s = math.sqrt(((-2 + 1 / 3) ** 2 + (1 / 3) ** 2 + (1 + 1 / 3) ** 2) / 2)
    assert row["ci_high"] == pytest.approx(-1 / 3 + T_975_DF2 * s / math.sqrt(3), abs=1e-5)


def test_paired_deltas_against_the_first_value_for_three_levels():
    """A factor with three values gives two comparisons, each against the first value."""
    frame = pd.DataFrame({"variant": "v", "p": [0.0, 0.2, 0.5], "dataset": "d", "seed": 0,
                          "acc": [80.0, 85.0, 70.0]})
    deltas = paired_deltas(frame, "p", ["variant", "p"], "acc")
    assert dict(zip(deltas["comparison"], deltas["delta"])) == {"0.2 − 0.0": 5.0, "0.5 − 0.0": -10.0}


@pytest.mark.parametrize("values", [[1.0, 2.0, 0.5], [-0.3, 0.1, -0.8, -0.2], [2.0, 2.5]])
def test_t_test_p_matches_scipy(values):
    """The paired t-test p-value is scipy's one-sample t-test of the differences against 0."""
    assert t_test_p(values) == pytest.approx(scipy_stats.ttest_1samp(values, 0).pvalue)


@pytest.mark.parametrize("values, p", [([3.0, 3.0], 0.0), ([0.0, 0.0, 0.0], 1.0)])
def test_t_test_p_without_spread(values, p):
    """Identical differences: p is 0 for a nonzero difference, 1 for none (scipy gives NaN)."""
    assert t_test_p(values) == p and math.isnan(t_test_p([1.0]))


def test_probability_of_improvement_by_hand_and_against_scipys_bootstrap():
    """Wins count 1, ties half: [1, -1, 0, 2, 3] gives 3.5 / 5; the interval is scipy's percentile bootstrap."""
    d = [1.0, -1.0, 0.0, 2.0, 3.0]
    p, low, high = probability_of_improvement(d)
    assert p == pytest.approx(0.7)
    scores = np.array([1, 0, 0.5, 1, 1])
    ref = scipy_stats.bootstrap((scores,), np.mean, method="percentile", n_resamples=20000,
                                rng=np.random.default_rng(1)).confidence_interval
    assert (low, high) == (pytest.approx(ref.low, abs=0.05), pytest.approx(ref.high, abs=0.05))
    assert probability_of_improvement([1.0, 2.0]) == (1.0, 1.0, 1.0)
    assert math.isnan(probability_of_improvement([1.0])[1])


def test_holm_by_hand():
    """Sorted p times (m - rank + 1), made monotone, capped at 1; NaN stays NaN and is not counted."""
    adjusted = holm([0.01, 0.04, 0.03, math.nan, 0.005])
    assert adjusted[[0, 1, 2, 4]] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[3])
    assert list(holm([0.5, 0.9])) == [1.0, 1.0]


def test_benjamini_hochberg_by_hand_and_against_scipy():
    """p times m / rank, made monotone from the largest: [0.01, 0.04, 0.03, 0.005] -> [0.02, 0.04, 0.04, 0.02]."""
    p = [0.01, 0.04, 0.03, 0.005]
    assert benjamini_hochberg(p) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert benjamini_hochberg(p) == pytest.approx(scipy_stats.false_discovery_control(p))


@pytest.mark.parametrize("mean, sd, n, multiplier", [(1.0, 1.0, 6, 1), (1.0, 1.0, 6, 3), (0.5, 2.0, 10, 5),
                                                     (-2.0, 1.5, 4, 2), (0.2, 0.1, 3, 8)])
def test_the_adjusted_interval_excludes_zero_exactly_when_the_adjusted_p_is_small(mean, sd, n, multiplier):
    """The interval at adjusted_level has 0 on its boundary side matching p_adjusted < 0.05."""
    d = mean + sd * (np.arange(n) - (n - 1) / 2) / np.std(np.arange(n) - (n - 1) / 2, ddof=1)
    p = t_test_p(d)
    p_adj = min(1.0, multiplier * p)
    low, high = interval(float(np.mean(d)), float(np.std(d, ddof=1)), n, adjusted_level(p, p_adj))
    assert (low > 0 or high < 0) == (p_adj < 0.05)
    assert (low, high) == pytest.approx(interval(float(np.mean(d)), float(np.std(d, ddof=1)), n, 0.95)) \
        if multiplier == 1 else True


@pytest.mark.parametrize("low, high, expected", [(0.1, 2.0, "better"), (-3.0, -0.2, "worse"),
                                                 (-0.3, 0.4, "equivalent"), (0.1, 0.4, "equivalent"),
                                                 (-0.3, 0.6, "undecided"), (math.nan, math.nan, "undecided")])
def test_verdict(low, high, expected):
    """Inside ±0.5 pp is equivalent (even off 0); else excluding 0 decides the direction; else open."""
    assert verdict(low, high, 0.5) == expected


@pytest.mark.parametrize("mean, sd, n, per_seed, expected", [
    (1.0, 1.0, 2, 1, 7),  # t(5) / sqrt(6) = 1.05 > 1, t(6) / sqrt(7) = 0.925 < 1
    (0.1, 0.5, 3, 1, 9),  # equivalence: half-width below 0.5 - 0.1 = 0.4 first at 9 pairs
    (1.0, 1.0, 4, 2, 4),  # two pairs per seed: 6 pairs are not enough, 8 are
    (0.01, 10.0, 2, 1, math.inf),  # more than the cap
    (1.0, 1.0, 1, 1, math.nan),  # one pair: no spread to extrapolate from
])
def test_seeds_needed_known_answers(mean, sd, n, per_seed, expected):
    """The first seed count whose t half-width drops below |mean| or margin - |mean|."""
    got = seeds_needed(mean, sd, n, margin=0.5, pairs_per_seed=per_seed)
    assert got == expected or (math.isnan(got) and math.isnan(expected))


def planted(interaction: float, seeds: int = 5) -> pd.DataFrame:
    """A 2x2 runs table: a and b each add 2 pp; together they add `interaction` more; seed noise."""
    rng = np.random.default_rng(0)
    rows = [{"variant": "base", "a": a, "b": b, "dataset": "d", "seed": s,
             "acc": 80 + 2 * a + 2 * b + interaction * a * b + rng.normal(0, 0.3)}
            for s in range(seeds) for a in (0, 1) for b in (0, 1)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("strength, detected", [(-6.0, True), (0.0, False)])
def test_a_planted_interaction_is_detected_and_none_is_not(strength, detected):
    """The interaction contrast recovers the planted value; only a real one is decided."""
    runs = planted(strength)
    pairs = interaction_deltas(runs, "a", "b", ["variant", "a", "b"], "acc")
    assert len(pairs) == 5 and set(pairs["comparison_a"]) == {"1 − 0"} and set(pairs["level_b"]) == {"1"}
    assert pairs["delta"].mean() == pytest.approx(strength, abs=0.6)
    assert pairs["effect_at_base"].mean() == pytest.approx(2, abs=0.6)
    summary = decide(summarize_deltas(pairs, ["comparison_a", "level_b", "dataset"]), ["dataset"])
    assert (summary.loc[0, "verdict"] in ("better", "worse")) is detected


def test_decide_adjusts_within_each_family():
    """Holm within a dataset: a family of two doubles the smaller p; another dataset is its own family."""
    table = pd.DataFrame({"dataset": ["x", "x", "y"], "p": [0.01, 0.2, 0.01], "mean": [1.0, 1.0, 1.0],
                          "sd": [1.0, 1.0, 1.0], "n": [10, 10, 10], "seeds": [10, 10, 10]})
    out = decide(table, ["dataset"], "holm")
    assert list(out["p_adjusted"]) == pytest.approx([0.02, 0.2, 0.01])
