"""Group-sequential analysis for seeds on demand: boundaries, the `Design`, repeated p-values and intervals.

Seeds on demand looks at the verdicts after every seed it adds. Deciding each look with the
fixed-sample 95% interval would make a factor that does nothing `better` or `worse` about one
time in five over ten looks (Armitage, McPherson and Rowe, 1969). A `Design` therefore replaces
the interval by repeated confidence intervals (Jennison and Turnbull, JRSS B 1989): a look at
every seed count from the first to `max_seeds`, each with the boundary of an alpha-spending
function (Lan and DeMets, 1983; `spent`) at information n / max_seeds, which spends almost
nothing at 2-3 seeds (their estimates of spread are poor) and keeps nearly the fixed-sample power
at the cap. The boundaries are computed by the recursive integration of Armitage, McPherson and
Rowe, carried over to t-statistics of the estimated variance by their nominal significance level
(the significance level approach of Jennison and Turnbull, Group Sequential Methods with
Applications to Clinical Trials, 2000), and calibrated for the t-statistics' small degrees of
freedom by simulation (`Design`). The intervals of
every look all cover the true effect with probability >= 95% at once, so the report keeps their
intersection: `better`/`worse` (it excludes 0) and `equivalent` (it lies inside the margin) are
each wrong with probability <= 5% however the looks stop, and a decided verdict stays decided.
Confidence sequences (Howard et al., 2021) give the same guarantee for unbounded looks, but are
several times wider at 3-10 seeds. Holm's correction across the effects of a dataset applies on
top, to the repeated p-values.

Every function is pure: numbers or DataFrames in, numbers or DataFrames out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from scipy.optimize import brentq


def spent(t: np.ndarray | float, alpha: float) -> np.ndarray:
    """Kim and DeMets' power-family spending with rho = 3, alpha t^3: the error allowed by
    information fraction t (two-sided, symmetric), alpha at t = 1. Rho = 3 is the member close
    to O'Brien and Fleming's boundaries (Jennison and Turnbull 2000, ch. 7): it spends little
    while 2-4 seeds give poor estimates of spread and keeps nearly the fixed-sample power at the
    cap, yet spends more mid-way than Lan and DeMets' O'Brien-Fleming-type function (in the
    calibration benchmark, null effects reach `equivalent` 0.6 seeds sooner at the same power)."""
    return alpha * np.minimum(np.asarray(t, dtype=float), 1.0) ** 3


def z_boundaries(fractions: Sequence[float], alpha: float, points_per_sd: int = 12,
                 spending: Callable[[float, float], float] = spent) -> np.ndarray:
    """Two-sided z boundaries c_k of a group-sequential test with looks at information `fractions`:
    under no effect, the chance of first crossing |Z_k| >= c_k at look k is what `spending` adds
    between looks k-1 and k.

    Armitage, McPherson and Rowe's recursion on the score S_k = Z_k sqrt(t_k), a Brownian motion
    at times t_k: the density of S_k among paths not yet stopped is the previous one convolved
    with the increment's normal density and cut at the boundary; trapezoid rule on a grid of
    `points_per_sd` points per increment sd, truncated at 9 sd (mass beyond < 1e-18)."""
    bounds, spent_before, t_before = [], 0.0, 0.0
    x = weights = density = None
    for t in fractions:
        step = float(spending(t, alpha)) - spent_before
        if density is None:  # the first look is a plain z-test at the level spent so far
            bound_s = math.sqrt(t) * scipy_stats.norm.isf(step / 2)
            sd = math.sqrt(t)
        else:
            sd = math.sqrt(t - t_before)
            mass = weights * density

            def log_crossing(b: float) -> float:
                tails = scipy_stats.norm.sf((b - x) / sd) + scipy_stats.norm.sf((b + x) / sd)
                return math.log(max(float(mass @ tails), 1e-300)) - math.log(step)
            if step <= 0:
                bound_s = math.inf
            elif log_crossing(1e-9) <= 0:  # less is left to spend than this look's share (levels near 1)
                bound_s = 1e-9
            else:
                bound_s = brentq(log_crossing, 1e-9, 40 * math.sqrt(t), xtol=1e-12)
        top = min(bound_s, 9 * math.sqrt(t))
        y = np.linspace(-top, top, max(int(2 * top / sd * points_per_sd), 2) | 1)
        if density is None:
            density = scipy_stats.norm.pdf(y, scale=sd)
        else:
            density = scipy_stats.norm.pdf((y[:, None] - x[None, :]) / sd) @ mass / sd
        x, weights = y, np.full(len(y), y[1] - y[0])
        weights[[0, -1]] /= 2
        bounds.append(bound_s / math.sqrt(t))
        spent_before, t_before = spent_before + step, t
    return np.array(bounds)


LEVELS = np.logspace(-12, math.log10(0.999), 40)  # error levels the boundary table is computed at
NULL_PATHS = 200_000  # simulated seed sequences without an effect, to calibrate a design's t-looks


@dataclass(frozen=True)
class Design:
    """The sequential design of seeds on demand: a look at every seed count from `first_look`
    (at least 2, the first with a spread) to `max_seeds`, fixed before the first seed is added
    and kept in seeding.json. Seeds come in `order` (the grid's own, then the added ones).

    The z boundaries hold exactly for a known variance; with t-statistics of 1-19 degrees of
    freedom the nominal-level conversion alone lets about 5.6% through at 5% (measured: 100,000
    null paths of 10 seeds). The t-statistics' joint law does not depend on the unknown spread,
    so the design is calibrated once by simulating `NULL_PATHS` seed sequences without an effect
    (a fixed random seed: the same design always gives the same numbers): a repeated p-value is
    reported as the share of null sequences whose own repeated p-value by `max_seeds` is as small,
    and an interval at error e uses the boundaries whose null crossing rate by `max_seeds` is e."""

    first_look: int
    max_seeds: int
    order: tuple[int, ...] = ()

    METHOD = "alpha spending (Kim–DeMets power family, rho 3), repeated t-intervals calibrated by simulation"

    @property
    def counts(self) -> np.ndarray:
        return np.arange(max(self.first_look, 2), self.max_seeds + 1)

    def boundaries(self, errors: np.ndarray) -> np.ndarray:
        """z boundaries at every look (rows: `errors`, columns: `counts`) whose null chance of a
        crossing by max_seeds is each error."""
        nominal = self._nominal(np.asarray(errors, dtype=float))
        table = _boundary_table(int(self.counts[0]), self.max_seeds)
        logs = np.log(np.clip(nominal, LEVELS[0], LEVELS[-1]))
        return np.stack([np.interp(logs, np.log(LEVELS), column) for column in table.T], axis=1)

    def p_values(self, values: np.ndarray, floor: np.ndarray | float = 0.0) -> np.ndarray:
        """Calibrated repeated p-values of rows of seed means (rows x n seeds, in seed order), each
        look's sd at least the row's `floor` (`spread_floor`)."""
        return self._calibrated(_raw_repeated_p(values, self, floor))

    def intervals(self, values: np.ndarray, errors: np.ndarray, floor: np.ndarray | float = 0.0
                  ) -> tuple[np.ndarray, np.ndarray]:
        """The intersection of the repeated t-intervals of every look so far, at each row's error."""
        mean, sd, counts, _ = _looks(values, self, floor)
        nominal = 2 * scipy_stats.norm.sf(self.boundaries(errors)[:, :len(counts)])
        half = scipy_stats.t.isf(nominal / 2, counts - 1) * sd / np.sqrt(counts)
        low, high = (mean - half).max(axis=1), (mean + half).min(axis=1)
        empty = low > high  # the looks disagree beyond their error: keep the latest
        return (np.where(empty, mean[:, -1] - half[:, -1], low), np.where(empty, mean[:, -1] + half[:, -1], high))

    def _calibrated(self, raw: np.ndarray) -> np.ndarray:
        null = _null_p(int(self.counts[0]), self.max_seeds)
        ranks = np.searchsorted(null, raw, side="right") / len(null)
        floor = null[CALIBRATION_TAIL]  # below it too few null paths: scale by the ratio there
        return np.where(raw < floor, raw * (CALIBRATION_TAIL + 1) / len(null) / floor, ranks)

    def _nominal(self, errors: np.ndarray) -> np.ndarray:
        null = _null_p(int(self.counts[0]), self.max_seeds)
        floor, share = null[CALIBRATION_TAIL], (CALIBRATION_TAIL + 1) / len(null)
        inside = np.quantile(null, np.clip(errors, share, 1.0))
        return np.where(errors < share, errors * floor / share, inside)


CALIBRATION_TAIL = 50  # null p-values below the 51st smallest are calibrated by the ratio at it


@lru_cache(maxsize=32)
def _boundary_table(first: int, max_seeds: int) -> np.ndarray:
    fractions = np.arange(first, max_seeds + 1) / max_seeds
    return np.array([z_boundaries(fractions, level, points_per_sd=8) for level in LEVELS])


@lru_cache(maxsize=32)
def _null_p(first: int, max_seeds: int) -> np.ndarray:
    """Sorted raw repeated p-values by max_seeds of `NULL_PATHS` simulated seed sequences without an effect."""
    paths = np.random.default_rng(20261202).standard_normal((NULL_PATHS, max_seeds))
    return np.sort(_raw_repeated_p(paths, Design(first, max_seeds)))


def _looks(values: np.ndarray, design: Design, floor: np.ndarray | float = 0.0) -> tuple[np.ndarray, ...]:
    """For rows of seed means (rows x seeds, all rows equal in length n): each look's mean, sd (at
    least the row's `floor`) and seed count, and its t-statistic as a z value (equal nominal
    two-sided p), columns = the design's counts up to n."""
    counts = design.counts[design.counts <= values.shape[1]]
    sums, squares = np.cumsum(values, axis=1), np.cumsum(values ** 2, axis=1)
    mean = sums[:, counts - 1] / counts
    sd = np.sqrt(np.maximum(squares[:, counts - 1] - counts * mean ** 2, 0) / (counts - 1))
    tiny = sd <= 1e-9 * np.maximum(np.abs(mean), 1)  # identical seeds, up to rounding
    if np.ndim(floor) == 2:  # a floor per look (`look_floors`)
        floor = np.asarray(floor)[:, counts - 1]
    elif np.ndim(floor) == 1:
        floor = np.reshape(floor, (-1, 1))
    sd = np.fmax(np.where(tiny, 0.0, sd), floor)
    tiny = sd == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(tiny, np.where(mean == 0, 0.0, np.inf), np.abs(mean) / (sd / np.sqrt(counts)))
    return mean, sd, counts, scipy_stats.norm.isf(scipy_stats.t.sf(t, counts - 1))


def _raw_repeated_p(values: np.ndarray, design: Design, floor: np.ndarray | float = 0.0) -> np.ndarray:
    """The smallest spending level whose (uncalibrated) boundary some look so far crosses."""
    _, _, counts, z = _looks(values, design, floor)
    table, logs = _boundary_table(int(design.counts[0]), design.max_seeds), np.log(LEVELS)
    at = np.stack([np.interp(-z[:, j], -table[:, j], logs, left=logs[0], right=0.0)
                   for j in range(len(counts))], axis=1)
    return np.where(np.isinf(z), 0.0, np.exp(at)).min(axis=1)


def sequential(summary: pd.DataFrame, design: Design, errors: Sequence[float] | None = None
               ) -> tuple[np.ndarray, ...]:
    """Calibrated repeated p-values of every row of `summary` (its `values`), or with `errors` the
    bounds of its repeated intervals at those error levels. Rows with fewer than 2 seeds: NaN."""
    n = summary["n"].to_numpy()
    out = [np.full(len(summary), math.nan) for _ in range(1 if errors is None else 2)]
    for count in np.unique(n[n >= 2]):
        rows = np.flatnonzero(n == count)
        values = np.array([summary["values"].iat[i] for i in rows], dtype=float)
        if "look_floors" in summary:  # rows x looks: each look's own floor
            floor = np.array([summary["look_floors"].iat[i][:count] for i in rows], dtype=float)
        else:
            floor = summary["sd_floor"].to_numpy(dtype=float)[rows] if "sd_floor" in summary else 0.0
        got = (design.p_values(values, floor),) if errors is None else design.intervals(
            values, np.asarray(errors)[rows], floor)
        for target, part in zip(out, got):
            target[rows] = part
    return tuple(out)
