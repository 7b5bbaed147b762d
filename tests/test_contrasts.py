"""Contrasts of designed experiments and variance shares, against paired differences and hand computations."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from ablatrix.contrasts import interaction_contrasts, main_contrasts, variance_shares
from ablatrix.designs import DesignSpec, design_combos
from ablatrix.stats import interaction_deltas, paired_deltas, per_seed

FACTORS = ["a", "b", "c"]
LEVELS = {"a": [False, True], "b": [0.0, 0.3], "c": ["[16]", "[16,32]"]}


def factorial_runs(seeds: int = 4, seed: int = 0, combos=None) -> pd.DataFrame:
    """Accuracies on a 100-image test set (whole points) for every configuration and seed."""
    rng = np.random.default_rng(seed)
    combos = combos or [dict(zip(LEVELS, v)) for v in itertools.product(*LEVELS.values())]
    rows = [{**c, "dataset": "d", "seed": s, "acc": float(rng.integers(80, 100))} for s in range(seeds) for c in combos]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("factor", FACTORS)
def test_on_a_full_factorial_a_main_contrast_is_the_mean_paired_difference(factor):
    """Per seed, mean(y at the second value) - mean(y at the first) equals the seed's mean paired difference."""
    runs = factorial_runs()
    contrast = main_contrasts(runs, factor, LEVELS[factor], ["dataset", "seed"], "acc")
    paired = per_seed(paired_deltas(runs, factor, FACTORS, "acc"), ["level", "baseline", "comparison", "dataset"])
    assert contrast["delta"].to_numpy() == pytest.approx(paired["delta"].to_numpy(), abs=1e-12)
    assert contrast["comparison"].iat[0] == paired["comparison"].iat[0]
    assert contrast["weight"].tolist() == [0.5] * 4  # 1/4 + 1/4: four runs at each value


@pytest.mark.parametrize("a, b", list(itertools.combinations(FACTORS, 2)))
def test_on_a_full_factorial_an_interaction_contrast_is_the_mean_paired_interaction(a, b):
    """The four-quarter contrast equals the mean of the matched quadruples' interactions, per seed."""
    runs = factorial_runs()
    contrast = interaction_contrasts(runs, a, b, LEVELS[a], LEVELS[b], ["dataset", "seed"], "acc")
    paired = interaction_deltas(runs, a, b, FACTORS, "acc").groupby("seed")[
        ["effect_at_base", "effect_at_level", "delta"]].mean()
    assert contrast[["effect_at_base", "effect_at_level", "delta"]].to_numpy() == pytest.approx(paired.to_numpy())


def test_a_contrast_uses_only_blocks_holding_both_values():
    """A seed whose runs all sit at one value of the factor gives no contrast."""
    runs = factorial_runs(2)
    runs = runs[~((runs["seed"] == 1) & runs["a"])]
    assert main_contrasts(runs, "a", LEVELS["a"], ["dataset", "seed"], "acc")["seed"].tolist() == [0]


def test_in_a_half_fraction_a_contrast_recovers_a_planted_main_effect_beside_an_aliased_pair():
    """2^(3-1) with C = AB: A's contrast is A's effect alone (its chain is A = BC, and B x C is absent),
    C's contrast carries the A x B interaction that the design aliases with it."""
    axes = {k: v for k, v in LEVELS.items()}
    combos = design_combos(axes, DesignSpec("fractional", generators=("C = AB",)))
    runs = pd.DataFrame([{**c, "dataset": "d", "seed": 0} for c in combos])
    x = {k: np.where(runs[k] == LEVELS[k][1], 1.0, -1.0) for k in LEVELS}
    runs["acc"] = 90 + 2 * x["a"] + 1.5 * x["a"] * x["b"]  # A: +4 pp; A x B: half-effect 1.5
    effect = {f: main_contrasts(runs, f, LEVELS[f], ["dataset", "seed"], "acc")["delta"].iat[0] for f in LEVELS}
    assert effect == pytest.approx({"a": 4.0, "b": 0.0, "c": 3.0})


def test_variance_shares_split_a_full_factorial_by_hand():
    """y = 2a + b + ab on ±1 codes: variances 4, 1, 1 of 6 -> 66.7 %, 16.7 %, 16.7 %, nothing left."""
    runs = pd.DataFrame([{"a": a, "b": b, "dataset": "d", "seed": 0, "y": 2 * a + b + a * b}
                         for a in (-1, 1) for b in (-1, 1)])
    shares = variance_shares(runs, [("a",), ("b",), ("a", "b")], ["dataset", "seed"], "y").set_index("term")["share"]
    assert shares.to_dict() == pytest.approx({"a": 400 / 6, "b": 100 / 6, "a × b": 100 / 6, "rest": 0.0})


def test_variance_shares_of_a_three_level_factorial_sum_to_100_with_the_rest():
    """Functional ANOVA on any levels: main effects and pairs, the three-way term in `rest`, all >= 0."""
    rng = np.random.default_rng(1)
    runs = pd.DataFrame([{"a": a, "b": b, "c": c, "dataset": "d", "seed": 0, "y": rng.normal()}
                         for a in range(3) for b in range(2) for c in range(2)])
    terms = [("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c")]
    shares = variance_shares(runs, terms, ["dataset", "seed"], "y")["share"]
    assert shares.sum() == pytest.approx(100) and (shares >= 0).all()


def test_a_replicate_whose_configurations_all_tie_has_no_shares():
    runs = pd.DataFrame([{"a": a, "dataset": "d", "seed": 0, "y": 1.0} for a in (0, 1)])
    assert variance_shares(runs, [("a",)], ["dataset", "seed"], "y").empty
