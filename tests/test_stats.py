"""Statistics over seeds, checked against scipy or against values worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from ablatrix.boundaries import Design
from ablatrix.stats import (decide, interaction_deltas, look_floors, mark_best, outliers,
                            paired_deltas, per_seed, probability_of_improvement, seed_rank, seed_summary,
                            seeds_needed, spread_floor, summarize, summarize_deltas, t_interval, t_test_p, verdict,
                            wilson)

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
    """bn=False − bn=True per (variant, dataset, seed); unpaired runs are left out; the summary
    averages the pairs of a seed and counts seeds."""
    frame = runs([("v", True, "d", 0, 90.0), ("v", False, "d", 0, 88.0),
                  ("v", True, "d", 1, 92.0), ("v", False, "d", 1, 93.0),
                  ("w", True, "d", 0, 70.0), ("w", False, "d", 0, 70.0),
                  ("w", True, "d", 1, 75.0)])  # no bn=False partner: unpaired
    deltas = paired_deltas(frame, "bn", ["variant", "bn"], "acc")
    assert sorted(deltas["delta"]) == [-2.0, 0.0, 1.0]
    assert set(deltas["comparison"]) == {"False − True"}
    (row,) = summarize_deltas(deltas, ["comparison", "dataset"]).to_dict("records")
    assert (row["n"], row["pairs"], row["wins"], row["ties"], row["losses"]) == (2, 3, 1, 1, 1)
    assert row["values"] == (-1.0, 1.0)  # seed 0: (-2 + 0) / 2; seed 1: +1
    assert row["mean"] == pytest.approx(0.0)
    assert row["ci_high"] == pytest.approx(T_975_DF1 * math.sqrt(2) / math.sqrt(2), abs=1e-5)


@pytest.mark.parametrize("copies", [1, 3])
def test_pairs_that_share_a_seed_are_not_separate_replicates(copies):
    """Three evaluations of one trained model per seed (identical deltas) give the interval and p
    of one pair per seed: rows do not shrink it."""
    rows = [{"comparison": "x", "dataset": "d", "seed": s, "delta": d}
            for s, d in enumerate([0.5, 1.5, 0.2, 1.1]) for _ in range(copies)]
    (row,) = summarize_deltas(pd.DataFrame(rows), ["comparison", "dataset"]).to_dict("records")
    ref = scipy_stats.ttest_1samp([0.5, 1.5, 0.2, 1.1], 0)
    ci = ref.confidence_interval()
    assert (row["n"], row["pairs"]) == (4, 4 * copies)
    assert (row["ci_low"], row["ci_high"], row["p"]) == (pytest.approx(ci.low), pytest.approx(ci.high),
                                                          pytest.approx(ref.pvalue))


def test_paired_deltas_against_the_first_value_for_three_levels():
    """A factor with three values gives two comparisons, each against the first value."""
    frame = pd.DataFrame({"variant": "v", "p": [0.0, 0.2, 0.5], "dataset": "d", "seed": 0,
                          "acc": [80.0, 85.0, 70.0]})
    deltas = paired_deltas(frame, "p", ["variant", "p"], "acc")
    assert dict(zip(deltas["comparison"], deltas["delta"])) == {"0.2 − 0.0": 5.0, "0.5 − 0.0": -10.0}
    # each row also carries the values it compares, so code never parses the label
    assert list(zip(deltas["level"], deltas["baseline"])) == [(0.2, 0.0), (0.5, 0.0)]


@pytest.mark.parametrize("values", [[1.0, 2.0, 0.5], [-0.3, 0.1, -0.8, -0.2], [2.0, 2.5]])
def test_t_test_p_matches_scipy(values):
    """The paired t-test p-value is scipy's one-sample t-test of the differences against 0."""
    assert t_test_p(values) == pytest.approx(scipy_stats.ttest_1samp(values, 0).pvalue)


@pytest.mark.parametrize("values, p", [([3.0, 3.0], 0.0), ([0.0, 0.0, 0.0], 1.0)])
def test_t_test_p_without_spread(values, p):
    """Identical differences: p is 0 for a nonzero difference, 1 for none (scipy gives NaN)."""
    assert t_test_p(values) == p and math.isnan(t_test_p([1.0]))


def test_probability_of_improvement_by_hand_and_against_scipys_bootstrap():
    """Wins count 1, ties half: [1, -1, 0, 2, 3] gives 3.5 / 5; the interval spans scipy's percentile
    bootstrap (one pair per seed) and Wilson's interval of 3.5 of 5."""
    d = [1.0, -1.0, 0.0, 2.0, 3.0]
    p, low, high = probability_of_improvement(d)
    assert p == pytest.approx(0.7)
    scores = np.array([1, 0, 0.5, 1, 1])
    ref = scipy_stats.bootstrap((scores,), np.mean, method="percentile", n_resamples=20000,
                                rng=np.random.default_rng(1)).confidence_interval
    w_low, w_high = wilson(0.7, 5)
    assert low == pytest.approx(min(ref.low, w_low), abs=0.05) and high == pytest.approx(max(ref.high, w_high), abs=0.05)
    assert math.isnan(probability_of_improvement([1.0])[1])


@pytest.mark.parametrize("share, n, low, high", [(1.0, 3, 0.4385, 1.0), (0.5, 10, 0.2366, 0.7634), (0.0, 2, 0.0, 0.6576)])
def test_wilson_by_hand(share, n, low, high):
    """(p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n), z = 1.96: all 3 of 3 seeds is [0.44, 1]."""
    assert wilson(share, n) == (pytest.approx(low, abs=1e-4), pytest.approx(high, abs=1e-4))


def test_probability_of_improvement_resamples_seeds_and_says_how_little_three_agreeing_seeds_show():
    """Three seeds that all win, with four pairs each: not [1.00, 1.00] but Wilson's [0.44, 1.00] for
    3 observations, not for 12; one seed alone has no interval."""
    p, low, high = probability_of_improvement([1.0] * 12, [0] * 4 + [1] * 4 + [2] * 4)
    assert (p, high) == (1.0, 1.0) and low == pytest.approx(wilson(1.0, 3)[0])
    assert math.isnan(probability_of_improvement([1.0, 2.0], [0, 0])[1])


@pytest.mark.parametrize("low, high, expected", [(0.1, 2.0, "better"), (-3.0, -0.2, "worse"),
                                                 (-0.3, 0.4, "equivalent"), (0.1, 0.4, "equivalent"),
                                                 (-0.3, 0.6, "undecided"), (math.nan, math.nan, "undecided")])
def test_verdict(low, high, expected):
    """Inside ±0.5 pp is equivalent (even off 0); else excluding 0 decides the direction; else open."""
    assert verdict(low, high, 0.5) == expected


@pytest.mark.parametrize("mean, sd, n, expected", [
    (1.0, 1.0, 2, 7),  # t(5) / sqrt(6) = 1.05 > 1, t(6) / sqrt(7) = 0.925 < 1
    (0.1, 0.5, 3, 9),  # equivalence: half-width below 0.5 - 0.1 = 0.4 first at 9 seeds
    (0.01, 10.0, 2, math.inf),  # more than the cap
    (1.0, 1.0, 1, math.nan),  # one seed: no spread to extrapolate from
])
def test_seeds_needed_known_answers(mean, sd, n, expected):
    """The first seed count whose t half-width drops below |mean| or margin - |mean|."""
    got = seeds_needed(mean, sd, n, margin=0.5)
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
                          "sd": [1.0, 1.0, 1.0], "n": [10, 10, 10]})
    out = decide(table, ["dataset"], "holm")
    assert list(out["p_adjusted"]) == pytest.approx([0.02, 0.2, 0.01])


def seeds_on_demand(effect: float, design: Design, trials: int, margin: float, sequential: bool = True,
                    seed: int = 0) -> dict[str, float]:
    """Simulate one effect (seed sd 1) seeded on demand: decide at every seed count from the design's
    first look, stop at the first verdict; the share of trials ending in each verdict."""
    rng = np.random.default_rng(seed)
    values = effect + rng.standard_normal((trials, design.max_seeds))
    final = np.full(trials, "undecided", dtype=object)
    for n in design.counts:  # each trial is its own family, so only the open ones need deciding
        open_ = np.flatnonzero(final == "undecided")
        means = pd.DataFrame({"trial": np.repeat(open_, n), "seed": np.tile(np.arange(n), len(open_)),
                              "delta": values[open_, :n].ravel()})
        out = decide(seed_summary(means, ["trial"]), ["trial"], margin=margin,
                     design=design if sequential else None)
        final[out["trial"].to_numpy()] = out["verdict"].to_numpy()
    return {v: float(np.mean(final == v)) for v in ("better", "worse", "equivalent", "undecided")}


def test_seeds_on_demand_keeps_its_error_rate_where_the_fixed_interval_does_not():
    """No effect, seeds added one at a time up to 8: the sequential decisions are wrong at most 5% of
    the time (within 3 Monte-Carlo standard errors); the fixed-sample interval at every look, over 10%."""
    design, trials = Design(2, 8), 3000
    se = 3 * math.sqrt(0.05 * 0.95 / trials)
    sequential = seeds_on_demand(0.0, design, trials, margin=0.5)
    fixed = seeds_on_demand(0.0, design, trials, margin=0.5, sequential=False)
    assert sequential["better"] + sequential["worse"] <= 0.05 + se
    assert fixed["better"] + fixed["worse"] > 0.10


def test_stopping_for_equivalence_rarely_misses_an_effect_of_twice_the_margin():
    """An effect of 2 x margin (margin 1 seed sd) is called `equivalent` at most 5% of the time, while a
    null effect often is: the equivalence stop works and is controlled."""
    design, trials = Design(2, 10), 3000
    assert seeds_on_demand(2.0, design, trials, margin=1.0)["equivalent"] <= 0.05
    assert seeds_on_demand(0.0, design, trials, margin=1.0)["equivalent"] > 0.3


def test_the_repeated_interval_is_the_intersection_of_the_looks_so_verdicts_stay_decided():
    """Seeds [3, 3.1, 2.9] decide `better`; a fourth, wild seed widens the last look's interval but the
    intersection keeps excluding 0. Its bounds are each look's t-interval at the design's boundary."""
    design = Design(2, 6)
    first = pd.DataFrame({"g": "x", "seed": [0, 1, 2], "delta": [3.0, 3.1, 2.9]})
    later = pd.DataFrame({"g": "x", "seed": [0, 1, 2, 3], "delta": [3.0, 3.1, 2.9, -9.0]})
    before, after = (decide(seed_summary(f, ["g"]), ["g"], design=design).iloc[0] for f in (first, later))
    assert before["verdict"] == after["verdict"] == "better"
    c = design.boundaries(np.array([0.05]))[0]
    looks = [[3.0, 3.1], [3.0, 3.1, 2.9]]
    lows = [np.mean(v) - scipy_stats.t.isf(scipy_stats.norm.sf(c[i]), len(v) - 1) * np.std(v, ddof=1) / math.sqrt(len(v))
            for i, v in enumerate(looks)]
    assert before["ci_low_adjusted"] == pytest.approx(max(lows))


def test_a_sequential_seeds_estimate_uses_the_later_looks_boundaries():
    """An undecided effect's seeds estimate under a design is at least the fixed-sample one (its
    boundaries are wider), and inf where even max_seeds would not decide it."""
    design = Design(2, 10)
    summary = pd.DataFrame({"g": ["a", "b"], "seed": 0, "mean": [1.0, 0.01], "sd": [1.0, 10.0], "n": [3, 3],
                            "values": [(1.0 - 1, 1.0, 1.0 + 1), (0.01 - 10, 0.01, 0.01 + 10)], "p": 0.0})
    fixed, seq = (decide(summary, ["g"], margin=0.5, design=d)["seeds_needed"] for d in (None, design))
    assert list(fixed) == [seeds_needed(1.0, 1.0, 3, margin=0.5), math.inf]
    assert fixed[0] < seq[0] <= 10 and seq[1] == math.inf


STEP = 100 / 359  # one image of the digits test set, in pp


def pair_rows(per_seed_pairs: dict[int, list[float]]) -> pd.DataFrame:
    """Pair deltas (pp) of one effect: seed -> the deltas of its pairs, pair j in column `other`."""
    return pd.DataFrame([{"comparison": "b − a", "dataset": "d", "other": j, "seed": s, "delta": d, "step": STEP}
                         for s, deltas in per_seed_pairs.items() for j, d in enumerate(deltas)])


def test_seed_means_that_tie_by_chance_decide_nothing():
    """The quickstart case: both seeds' mean differences are exactly -1 image while their pairs range
    from -2.5 to +1.1 pp. A zero sd over seeds called it `equivalent` with a zero-width interval;
    the pairs' own spread now floors it, and the effect stays undecided."""
    pairs = pair_rows({0: [-9 * STEP, 4 * STEP, 2 * STEP, -1 * STEP], 1: [3 * STEP, -6 * STEP, 1 * STEP, -2 * STEP]})
    row = decide(summarize_deltas(pairs, ["comparison", "dataset"]), ["dataset"]).iloc[0]
    assert row["values"] == pytest.approx((-STEP, -STEP)) and row["sd"] == pytest.approx(0, abs=1e-12)
    assert row["verdict"] == "undecided" and row["p"] > 0.05
    assert row["ci_high_adjusted"] - row["ci_low_adjusted"] > 2 * 0.5


def test_spread_floor_by_hand():
    """Residual mean square of the seed x pair table over its (S-1)(K-1) df, per pair of a seed mean;
    with one pair per seed, the rounding sd of the step (Sheppard: step / sqrt(12))."""
    pairs = pair_rows({0: [1.0, 3.0], 1: [2.0, 0.0], 2: [4.0, 2.0]})
    # seed means 2, 1, 3; pair means 7/3, 5/3; grand 2: residuals -4/3, +4/3, +2/3, -2/3, +2/3, -2/3,
    # MS_e = 48/9 over 6 - 3 - 2 + 1 = 2 df; k s^2 = 2 < MS_e, so pooled: (k s^2 + (k - 1) MS_e) / k^2
    (floor,) = spread_floor(pairs, ["comparison", "dataset"])["sd_floor"]
    assert floor == pytest.approx(math.sqrt((2 * 1 + 24 / 9) / 4))
    single = pair_rows({0: [-STEP], 1: [-STEP]})
    (floor,) = spread_floor(single, ["comparison", "dataset"])["sd_floor"]
    assert floor == pytest.approx(STEP / math.sqrt(12))
    row = decide(summarize_deltas(single, ["comparison", "dataset"]), ["dataset"]).iloc[0]
    half = T_975_DF1 * floor / math.sqrt(2)
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(-STEP - half), pytest.approx(-STEP + half))
    assert row["verdict"] == "undecided"


@pytest.mark.parametrize("values, bounds, expected", [
    ([99.72, 100.0], (0, 100), (None, 100.0)),  # t(1) reaches far past 100
    ([0.0, 0.28], (0, 100), (0.0, None)),
    ([97.49, 97.49], (0, 100), (97.49 - T_975_DF1 * STEP / math.sqrt(12) / math.sqrt(2), None)),
])
def test_accuracy_intervals_stay_in_range_and_never_shrink_to_a_point(values, bounds, expected):
    """The accuracy table's interval: inside [0, 100], and tied seeds give the rounding sd's width."""
    summary = summarize(pd.Series(values), step=STEP, bounds=bounds)
    assert bounds[0] <= summary["ci_low"] < summary["ci_high"] <= bounds[1]
    for got, want in zip((summary["ci_low"], summary["ci_high"]), expected):
        if want is not None:
            assert got == pytest.approx(want)


@pytest.mark.parametrize("values, flagged", [
    ([0.1, -0.2, 0.0, 0.15, 0.05, 0.1, -0.1, 8.0], "7: +8.00"),  # one seed of eight diverging
    ([0.1, -0.2, 0.0, 0.15, 0.05, 0.1, -0.1, 0.3], ""),
    ([1.0, 2.0, 3.0, 4.0], ""),
    ([0.0, 0.0, 0.0, 5.0], "3: +5.00"),  # the others tie: their floor, not 0, is the yardstick
    ([0.0, 0.0, 9.0], ""),  # under 4 seeds nothing is called an outlier
])
def test_outlier_seeds(values, flagged):
    """A seed outside the others' prediction interval (Bonferroni over the seeds) is named with its value."""
    assert outliers(values, list(range(len(values))), sd_floor=0.1) == flagged


def binomial_deltas(effect_pp: float, trials: int, seeds: int, pairs: int, rng: np.random.Generator,
                    images: int = 359, accuracy: float = 0.985) -> pd.DataFrame:
    """Pair deltas of accuracies counted on a finite test set: each model's true accuracy varies by
    seed (0.3 pp) and model (0.2 pp), and its test count is binomial, so values tie and sit near 100%."""
    shape = (trials, seeds, pairs)
    seed_draw = 0.003 * rng.standard_normal((trials, seeds, 1))
    base = np.clip(accuracy + seed_draw + 0.002 * rng.standard_normal(shape), 0, 1)
    changed = np.clip(accuracy + effect_pp / 100 + seed_draw + 0.002 * rng.standard_normal(shape), 0, 1)
    delta = 100 * (rng.binomial(images, changed) - rng.binomial(images, base)) / images
    t, s, j = np.meshgrid(np.arange(trials), np.arange(seeds), np.arange(pairs), indexing="ij")
    return pd.DataFrame({"trial": t.ravel(), "other": j.ravel(), "seed": s.ravel(), "delta": delta.ravel(),
                         "step": 100 / images})


@pytest.mark.parametrize("seeds", [2, 3, 5])
def test_verdicts_on_tied_binomial_accuracies_keep_their_error_rates(seeds):
    """Accuracies near 100% on 359 images (many ties): no effect is called better/worse, and an
    effect of twice the margin is called equivalent, at most 5% of the time (3 Monte-Carlo se)."""
    rng, trials = np.random.default_rng(seeds), 1500
    limit = 0.05 + 3 * math.sqrt(0.05 * 0.95 / trials)
    for effect, wrong in ((0.0, ("better", "worse")), (1.0, ("equivalent",))):
        frame = binomial_deltas(effect, trials, seeds, 2, rng)
        floors = spread_floor(frame, ["trial"])
        out = decide(seed_summary(per_seed(frame, ["trial"]), ["trial"], floors=floors), ["trial"], margin=0.5)
        assert out["verdict"].isin(wrong).mean() <= limit


def test_each_look_is_floored_with_its_own_seeds():
    """look_floors[c - 1] is the spread floor of the first c seeds (in the order they were added):
    two tied early seeds with tied pairs keep the resolution floor at the second look, though a
    third, spread seed raises the floor of all three."""
    pairs = pair_rows({5: [-STEP, -STEP], 3: [-STEP, -STEP], 9: [4 * STEP, -6 * STEP]})
    (floors,) = look_floors(pairs, ["comparison", "dataset"], order=(5, 3, 9))["look_floors"]
    for c, seeds in ((2, [5, 3]), (3, [5, 3, 9])):
        (expected,) = spread_floor(pairs[pairs["seed"].isin(seeds)], ["comparison", "dataset"])["sd_floor"]
        assert floors[c - 1] == pytest.approx(expected)
    assert floors[1] == pytest.approx(STEP / math.sqrt(24)) and floors[2] > 5 * floors[1]


@pytest.mark.parametrize("order", [(), (7, 2)])
def test_seed_summary_gives_pandas_per_group_sd_values_and_seeds_to_the_bit(order):
    """Discrete, tied seed means (a missing one too, groups of 1 to 9 seeds, a key missing): the
    summary's sd equals pandas' `std(ddof=1)` of each group bit for bit, and its values and seeds are
    each group's in the order the seeds were added, as pandas gives them."""
    rng = np.random.default_rng(0)
    rows = [(g, s, rng.integers(-30, 30) / 7) for g in range(40) for s in rng.permutation(10)[:1 + g % 9]]
    frame = pd.DataFrame(rows, columns=["g", "seed", "delta"]).astype({"g": float})
    frame.loc[3, "delta"], frame.loc[5, "g"] = math.nan, math.nan
    out = seed_summary(frame, ["g"], order=order)
    ranked = frame.assign(rank=seed_rank(frame["seed"], order)).sort_values("rank", kind="stable")
    grouped = ranked.groupby("g", sort=False)
    sd = grouped["delta"].agg(lambda x: x.std(ddof=1))
    assert list(out["g"]) == list(sd.index) and out["sd"].to_numpy().tobytes() == sd.to_numpy().tobytes()
    for column in ("delta", "seed"):  # repr: a NaN equals no other
        assert [repr(v) for v in out["values" if column == "delta" else "seeds"]] == \
            [repr(v) for v in grouped[column].agg(tuple)]
