"""Group-sequential boundaries: the recursion against a published table and scipy's bivariate normal."""
from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from ablatrix.boundaries import spent, z_boundaries


GSDESIGN_LDOF_5 = [4.8769, 3.3569, 2.6803, 2.2898, 2.0310]  # published: 5 equal looks, alpha 0.025 a side


def obrien_fleming_type(t: float, alpha: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type spending as gsDesign's sfLDOF: alpha / 2 a side."""
    return 4 * scipy_stats.norm.sf(scipy_stats.norm.isf(alpha / 4) / math.sqrt(t))


def test_the_boundary_recursion_matches_a_published_table():
    """With Lan-DeMets O'Brien-Fleming-type spending, 5 equally spaced looks, two-sided 0.05, the
    recursion gives gsDesign's published boundaries."""
    got = z_boundaries([0.2, 0.4, 0.6, 0.8, 1.0], 0.05, points_per_sd=16, spending=obrien_fleming_type)
    assert got == pytest.approx(GSDESIGN_LDOF_5, abs=2e-4)


@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_one_look_is_the_z_test_and_two_looks_spend_what_the_function_allows(alpha):
    """One look at t = 1: z_(1 - alpha/2). Two looks at 0.5 and 1: the first spends spent(0.5), and both
    together keep 1 - alpha inside (the bivariate normal of Z1, Z2, correlation sqrt(0.5), by scipy)."""
    assert z_boundaries([1.0], alpha)[0] == pytest.approx(scipy_stats.norm.isf(alpha / 2))
    c1, c2 = z_boundaries([0.5, 1.0], alpha, points_per_sd=16)
    assert 2 * scipy_stats.norm.sf(c1) == pytest.approx(spent(0.5, alpha))
    both = scipy_stats.multivariate_normal([0, 0], [[1, math.sqrt(0.5)], [math.sqrt(0.5), 1]])
    inside = both.cdf([c1, c2], lower_limit=[-c1, -c2])
    assert inside == pytest.approx(1 - alpha, abs=2e-4)
    assert spent(1.0, alpha) == pytest.approx(alpha) and spent(0.5, alpha) == pytest.approx(alpha / 8)
