"""Statistics over seeds, checked against values worked out by hand with t-table quantiles."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from ablatrix.stats import mark_best, paired_deltas, summarize_deltas, t_interval

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
