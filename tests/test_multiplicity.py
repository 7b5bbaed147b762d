"""Multiplicity: Holm and Benjamini-Hochberg by hand and against scipy, within families, and the
confidence level an adjusted p-value carries to its interval."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from ablatrix.config import CONFIDENCE
from ablatrix.multiplicity import adjusted_level, benjamini_hochberg, holm
from ablatrix.stats import interval, t_test_p


def test_holm_by_hand():
    """Sorted p times (m - rank + 1), made monotone, capped at 1; NaN stays NaN and is not counted."""
    adjusted = holm([0.01, 0.04, 0.03, math.nan, 0.005])
    assert adjusted[[0, 1, 2, 4]] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[3])
    assert list(holm([0.5, 0.9])) == [1.0, 1.0]


@pytest.mark.parametrize("adjust", [holm, benjamini_hochberg])
def test_adjusting_within_families_equals_adjusting_each_family_alone(adjust):
    """Interleaved families give each family's own adjustment, as if it were alone."""
    p = np.random.default_rng(3).uniform(0, 0.2, 30)
    families = np.arange(30) % 4
    together = adjust(p, families)
    for f in range(4):
        assert together[families == f] == pytest.approx(adjust(p[families == f]))


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
    low, high = interval(float(np.mean(d)), float(np.std(d, ddof=1)), n, adjusted_level(p, p_adj, CONFIDENCE))
    assert (low > 0 or high < 0) == (p_adj < 0.05)
    assert (low, high) == pytest.approx(interval(float(np.mean(d)), float(np.std(d, ddof=1)), n, 0.95)) \
        if multiplier == 1 else True
