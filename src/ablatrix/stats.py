"""Statistics over seeds: t-intervals, paired effects and interactions, and verdicts on them.

The unit of replication is the seed (one random draw of initialisation, batch order and
dropout): paired differences that share a seed (other factors' settings, or evaluation modes of
one trained model) are averaged within the seed first, and every interval, p-value and seeds
estimate counts seeds, not rows (Bouthillier et al., MLSys 2021, treat the seed as the source of
variance to replicate). Ablation grids have few seeds (2-20), so intervals of mean differences
are Student-t intervals, not bootstrap ones: with n this small a bootstrap underestimates the
spread. The one bootstrap here is over the seeds of P(improvement), a proportion, as in rliable
(Agarwal et al., 2021) and Bouthillier et al., who recommend acting on P(A > B) >= 0.75.

Seeds on demand decides with repeated confidence intervals over its looks: `boundaries`.

Every function is pure: numbers or DataFrames in, numbers or DataFrames out.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import special as scipy_special
from scipy import stats as scipy_stats

from .boundaries import Design, sequential
from .config import CONFIDENCE, MARGIN
from .multiplicity import ADJUSTMENTS, adjusted_level

SEEDS_CAP = 50  # seeds_needed beyond this is reported as "more than SEEDS_CAP"
RESAMPLES = 2000  # bootstrap resamples of P(improvement)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE, sd_floor: float = 0.0,
               bounds: tuple[float, float] = (-math.inf, math.inf)) -> tuple[float, float, float]:
    """Mean and the two-sided Student-t confidence interval of the mean (NaN bounds for n < 2), its sd
    taken as at least `sd_floor` and its bounds clipped to `bounds` (the metric's range)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if len(x) else math.nan
    sd = max(float(x.std(ddof=1)), sd_floor) if len(x) > 1 else math.nan
    low, high = interval(mean, sd, len(x), confidence)
    return mean, *(float(np.clip(b, *bounds)) if not math.isnan(b) else b for b in (low, high))


def rounding_sd(step: float | pd.Series, count: float | pd.Series = 1) -> float | pd.Series:
    """The sd that values recorded on a grid of `step` carry from the grid alone: a uniform error
    over one step has variance step^2 / 12 (Sheppard's correction), and a mean of `count` such
    values step^2 / (12 count). Accuracy on a test set of N images moves in steps of 100/N pp, so
    two seeds that tie show a spread below about a step, never a spread of zero."""
    return step / np.sqrt(12 * count)


def summarize(values: pd.Series, confidence: float = CONFIDENCE, step: float = 0.0,
              bounds: tuple[float, float] = (-math.inf, math.inf)) -> pd.Series:
    """mean, std (n-1), ci_low, ci_high of one group; the interval's sd is at least the rounding sd
    of `step` (the metric's resolution) and its bounds stay inside `bounds`."""
    mean, low, high = t_interval(values.to_numpy(), confidence, rounding_sd(step), bounds)
    std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return pd.Series({"mean": mean, "std": std, "ci_low": low, "ci_high": high})


def mark_best(summary: pd.DataFrame, by: str = "dataset") -> pd.Series:
    """'best' for the highest mean per `by` group, 'tie' where a mean lies inside the best's CI."""
    marks = pd.Series("", index=summary.index)
    for _, group in summary.groupby(by, sort=False):
        best = group["mean"].idxmax()
        low = summary.at[best, "ci_low"]
        if not math.isnan(low):
            marks[group.index[(group["mean"] >= low) & (group.index != best)]] = "tie"
        marks[best] = "best"
    return marks


def paired_deltas(runs: pd.DataFrame, factor: str, factors: Sequence[str], value: str,
                  extra_keys: Sequence[str] = ()) -> pd.DataFrame:
    """Differences `value(factor = v) - value(factor = baseline)` on pairs equal in every other factor.

    The baseline is the factor's first value in `runs`. Pairs match on the other factors, the
    dataset, the seed and `extra_keys` (e.g. the class). Returns one row per pair with columns
    `level` and `baseline` (the factor's values: what code compares), `comparison` (their label,
    for people), the match keys and `delta`.
    """
    keys = [f for f in factors if f != factor] + ["dataset", "seed", *extra_keys]
    levels = list(dict.fromkeys(runs[factor]))
    base = runs[runs[factor] == levels[0]].set_index(keys)[value]
    frames = []
    for level in levels[1:]:
        other = runs[runs[factor] == level].set_index(keys)[value]
        joined = pd.concat({"base": base, "other": other}, axis=1, join="inner").dropna()
        delta = (joined["other"] - joined["base"]).rename("delta").reset_index()
        frames.append(delta.assign(level=[level] * len(delta), baseline=[levels[0]] * len(delta),
                                   comparison=f"{level} − {levels[0]}"))
    columns = ["level", "baseline", "comparison", *keys, "delta"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def t_sf(t: float | np.ndarray, df: float | np.ndarray) -> float | np.ndarray:
    """scipy.stats.t.sf(t, df), the same numbers (it is special.stdtr(df, -t)) without the argument
    checks that cost 70 µs a call: two calls per row of a summary made a 3000-row one take seconds."""
    return scipy_special.stdtr(df, -np.asarray(t, dtype=float))


def t_test_p(values: Sequence[float], sd_floor: float = 0.0) -> float:
    """Two-sided p-value of the one-sample t-test of mean 0 (paired differences), the sd taken as at
    least `sd_floor`; NaN for n < 2.

    With zero spread the difference is the same in every pair: p is 0 unless it is 0 everywhere.
    """
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan
    sd = max(x.std(ddof=1), sd_floor)
    if sd == 0:
        return 1.0 if x[0] == 0 else 0.0
    t = x.mean() / (sd / math.sqrt(len(x)))
    return float(2 * t_sf(abs(t), len(x) - 1))


def probability_of_improvement(deltas: Sequence[float], seeds: Sequence[int] | None = None,
                               confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                               seed: int = 0) -> tuple[float, float, float]:
    """P(changed > baseline) over paired runs (a tie counts half) and an interval for it that
    resamples seeds, not pairs (pairs of one seed share its draw); each pair is its own seed when
    `seeds` is None. NaN bounds for fewer than 2 seeds.

    The interval is the hull of the percentile bootstrap over seeds and the Wilson score interval
    with one observation per seed. The bootstrap alone reads [1.00, 1.00] whenever every seed
    agrees, however few there are; Wilson's interval (Brown, Cai and DasGupta, 2001) says what
    that many seeds can show: all 3 of 3 is [0.44, 1.00]."""
    d = np.asarray(deltas, dtype=float)
    if len(d) == 0:
        return math.nan, math.nan, math.nan
    score = (d > 0) + 0.5 * (d == 0)
    codes = np.unique(np.asarray(seeds), return_inverse=True)[1] if seeds is not None else np.arange(len(d))
    n = int(codes.max()) + 1
    if n < 2:
        return float(score.mean()), math.nan, math.nan
    sums, counts = np.bincount(codes, score, n), np.bincount(codes, None, n)
    draws = np.random.default_rng(seed).integers(0, n, (resamples, n))
    boot = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    low, high = np.quantile(boot, [0.5 - confidence / 2, 0.5 + confidence / 2])
    wilson_low, wilson_high = wilson(float(score.mean()), n, confidence)
    return float(score.mean()), float(min(low, wilson_low)), float(max(high, wilson_high))


def wilson(share: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion observed as `share` of `n`."""
    z = scipy_stats.norm.isf((1 - confidence) / 2)
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def interval(mean: float | np.ndarray, sd: float | np.ndarray, n: int | np.ndarray,
             level: float | np.ndarray) -> tuple:
    """The Student-t interval of a mean from its sample sd and n (NaN for n < 2), element-wise."""
    mean, sd, n, level = (np.asarray(v, dtype=float) for v in (mean, sd, n, level))
    with np.errstate(invalid="ignore", divide="ignore"):
        half = scipy_stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n)
    half = np.where((n < 2) | np.isnan(sd), math.nan, half)
    low, high = mean - half, mean + half
    return (float(low), float(high)) if low.ndim == 0 else (low, high)


def verdict(low: float, high: float, margin: float = MARGIN) -> str:
    """`equivalent` if the interval lies inside ± margin (even if it excludes 0: a difference too
    small to matter, as with a ROPE), else `better`/`worse` if it excludes 0, else `undecided`
    (also when there is no interval)."""
    if math.isnan(low) or math.isnan(high):
        return "undecided"
    if -margin < low and high < margin:
        return "equivalent"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "undecided"


def seeds_needed(mean: float, sd: float, n: int, margin: float = MARGIN, level: float = CONFIDENCE,
                 cap: int = SEEDS_CAP) -> float:
    """The number of seeds at which the t half-width of `n` seeds' mean, at `level`, would fall
    below |mean| (the interval then excludes 0) or below margin - |mean| (it then lies inside
    ± margin), if the observed mean and sd held. NaN without a spread estimate; inf beyond `cap`."""
    counts = np.arange(2, cap + 1)
    half = scipy_stats.t.ppf(0.5 + level / 2, counts - 1) * sd / np.sqrt(counts)
    return float(_first_reached(np.array([mean]), np.array([sd]), np.array([n]), margin, counts, half[None, :])[0])


def _first_reached(mean: np.ndarray, sd: np.ndarray, n: np.ndarray, margin: float, counts: np.ndarray,
                   half: np.ndarray) -> np.ndarray:
    """Per row, the first of `counts` beyond n whose half-width (rows x counts) is below the row's
    target max(|mean|, margin - |mean|); inf if none, NaN without a spread (n < 2)."""
    target = np.maximum(np.abs(mean), margin - np.abs(mean))
    ok = (counts[None, :] > n[:, None]) & (half < target[:, None])
    first = np.where(ok.any(axis=1), counts[np.argmax(ok, axis=1)], math.inf) if len(counts) else np.full(len(n), math.inf)
    return np.where((n < 2) | np.isnan(sd), math.nan, first.astype(float))


def per_seed(deltas: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """The mean paired difference per group of `by` and seed: the replicates the tests count."""
    return deltas.groupby([*by, "seed"], sort=False, observed=True)["delta"].mean().reset_index()


def spread_floor(deltas: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per group of `by` (over pair rows: `by`, `seed`, the pair's own keys, `delta` and optionally
    `step`, the resolution of one pair's delta): the least sd of a seed mean that the pairs show,
    `sd_floor`. The sd of seed means can come out far too small by chance, and exactly 0 when a
    discrete metric ties; an interval from it claims a precision the data do not have. Two floors:

    - the pairs' own spread: with d(seed s, pair j) = mu + a_j + b_s + e_sj (a_j the other factors'
      settings, b_s the seed's draw shared by its pairs), a seed mean of k pairs varies by
      var(b) + var(e)/k >= var(e)/k, and the residual mean square of the seed x pair table, MS_e,
      estimates var(e) on its own degrees of freedom. When the seed means vary less than that
      allows (k s^2 < MS_e), the variance-component estimate of var(b) is negative; it is set to
      zero and the two sums of squares are pooled (Searle, Casella and McCulloch, Variance
      Components, 1992, ch. 4): the floor is sqrt((k s^2 + (k - 1) MS_e) / k^2), which exceeds s
      exactly then, so max(s, floor) is that rule.
    - the resolution: `rounding_sd` of the pairs' step, for a mean of k of them.

    Pair keys are the columns other than `by`, seed, delta and step; without them (one pair per
    seed) only the resolution floor applies."""
    keys = list(by)
    pair_keys = [c for c in deltas.columns if c not in (*keys, "seed", "delta", "step")]
    groups = deltas.groupby(keys, sort=False, observed=True)
    out = groups["seed"].nunique().rename("seeds").to_frame()
    out["rows"] = groups.size()
    k = out["rows"] / out["seeds"]
    pooled_sd = pd.Series(math.nan, index=out.index)
    if pair_keys:
        d = deltas["delta"]
        seed_mean = deltas.groupby([*keys, "seed"], sort=False, observed=True)["delta"].transform("mean")
        pair_mean = deltas.groupby([*keys, *pair_keys], sort=False, observed=True)["delta"].transform("mean")
        residual = (d - seed_mean - pair_mean + groups["delta"].transform("mean")) ** 2
        by_group = [deltas[c] for c in keys]
        out["ss"] = residual.groupby(by_group, sort=False, observed=True).sum()
        seed_means = pd.concat([*by_group, seed_mean.rename("_mean"), deltas["seed"]], axis=1).drop_duplicates(
            [*keys, "seed"])
        out["s2"] = seed_means.groupby(keys, sort=False, observed=True)["_mean"].var(ddof=1)
        out["pairs"] = (deltas[[*keys, *pair_keys]].drop_duplicates().groupby(keys, sort=False, observed=True)
                        .size())
        df = out["rows"] - out["seeds"] - out["pairs"] + 1
        ms_e = out["ss"].where(df > 0) / df.where(df > 0)
        pooled_sd = np.sqrt((k * out["s2"] + (k - 1) * ms_e) / k ** 2)
    step = groups["step"].mean() if "step" in deltas else pd.Series(0.0, index=out.index)
    out["sd_floor"] = np.fmax(pooled_sd.fillna(0.0), rounding_sd(step, k).fillna(0.0))
    return out["sd_floor"].reset_index()


def seed_rank(seeds: Sequence[int], order: Sequence[int]) -> list[int]:
    """Each seed's place in the order seeds were added: `order` first, then the others by number."""
    rank = {s: i for i, s in enumerate(order)}
    return [rank.get(s, len(rank) + s) for s in seeds]


def look_floors(deltas: pd.DataFrame, by: Sequence[str], order: Sequence[int] = ()) -> pd.DataFrame:
    """Per group of `by`: `look_floors`, the `spread_floor` of the group's first c seeds for
    c = 1, 2, ... (seeds ranked as `seed_summary` ranks them: `order`, then the others by number).
    A sequential analysis floors each look with what that look's own seeds show: the floor of
    every seed would carry later seeds' spread back to the looks before them."""
    rank = pd.Series(seed_rank(deltas["seed"], order), index=deltas.index)
    dense = rank.groupby([deltas[c] for c in by], sort=False, observed=True).rank(method="dense").astype(int)
    parts = [deltas[dense <= c].assign(_look=c) for c in range(1, int(dense.max()) + 1)]
    floors = spread_floor(pd.concat(parts, ignore_index=True), [*by, "_look"])
    return floors.groupby(list(by), sort=False, observed=True)["sd_floor"].agg(tuple).reset_index(name="look_floors")


def seed_summary(seed_means: pd.DataFrame, by: Sequence[str], order: Sequence[int] = (),
                 confidence: float = CONFIDENCE, floors: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per group of `by` (over `per_seed` rows): mean, sd, `sd_floor` (from `floors`, see
    `spread_floor`; 0 without), t-interval and t-test p from the larger of sd and its floor, the
    number of seeds `n`, and `values` and `seeds`, the seed means and their seeds in the order the
    seeds were added (`order`, then the others by number) that a sequential analysis replays look
    by look."""
    frame = seed_means.assign(_rank=seed_rank(seed_means["seed"], order))
    frame = frame.sort_values("_rank", kind="stable")
    grouped = frame.groupby(list(by), sort=False, observed=True)
    out = grouped["delta"].agg(mean="mean", n="size").reset_index()
    values, seeds = (_per_group(grouped, frame[column]) for column in ("delta", "seed"))
    out["sd"] = [_sd(x) for x in values]
    out["values"] = [tuple(x.tolist()) for x in values]
    out["seeds"] = [tuple(s.tolist()) for s in seeds]
    merged = out[list(by)].merge(floors, on=list(by), how="left") if floors is not None else None
    out["sd_floor"] = 0.0 if merged is None else merged["sd_floor"].fillna(0.0).to_numpy()
    if merged is not None and "look_floors" in merged:
        out["look_floors"] = merged["look_floors"].to_numpy()
    out["p"] = [t_test_p(v, f) for v, f in zip(out["values"], out["sd_floor"])]
    out["ci_low"], out["ci_high"] = interval(out["mean"], used_sd(out), out["n"], confidence)
    out["outlier_seeds"] = [outliers(v, s, f) for v, s, f in zip(out["values"], out["seeds"], out["sd_floor"])]
    return out


def _per_group(grouped: pd.core.groupby.DataFrameGroupBy, column: pd.Series) -> list[np.ndarray]:
    """`column`'s values of each group of `grouped` (in its order), rows in the frame's order: numpy
    slices, where pandas' aggregation by a Python function builds a Series per group (that was most
    of a sequential analysis's time)."""
    codes = grouped.ngroup()
    kept = codes.notna().to_numpy()  # rows of a missing key belong to no group
    codes = codes.to_numpy()[kept].astype(int)
    order = np.argsort(codes, kind="stable")
    return np.split(column.to_numpy()[kept][order], np.cumsum(np.bincount(codes, minlength=grouped.ngroups))[:-1])


def _sd(x: np.ndarray) -> float:
    """pandas' `Series.std(ddof=1)` to the bit: NaN skipped, the two-pass sums over the array with
    NaN as 0 (numpy's pairwise sum groups by position), NaN below 2 values."""
    missing = np.isnan(x)
    count = len(x) - int(missing.sum())
    if count < 2:
        return math.nan
    x = np.where(missing, 0.0, x)
    squares = np.where(missing, 0.0, (x.sum(dtype=np.float64) / count - x) ** 2)
    return float(np.sqrt(squares.sum(dtype=np.float64) / (count - 1)))


def used_sd(summary: pd.DataFrame) -> np.ndarray:
    """The sd every interval and test of `summary`'s rows uses: the observed one, at least its floor
    (a summary without `sd_floor` has none)."""
    floor = summary["sd_floor"].to_numpy(dtype=float) if "sd_floor" in summary else 0.0
    return np.fmax(summary["sd"].to_numpy(dtype=float), floor)


OUTLIER_LEVEL = 0.05  # family-wise over a row's seeds (Bonferroni)


def outliers(values: Sequence[float], seeds: Sequence[int], sd_floor: float = 0.0,
             level: float = OUTLIER_LEVEL) -> str:
    """Seeds whose mean difference lies outside the others' prediction interval at `level`
    Bonferroni-corrected over the seeds (the externally studentized residual, t with n-2 df; the
    others' sd at least `sd_floor`), as 'seed: value' text; '' with fewer than 4 seeds. One seed
    that diverges from the rest (a run that fell into a bad optimum) can carry a t-interval's
    verdict on its own, or, when it has not turned up yet, a small sample misses it: either way the
    reader should see it."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 4:
        return ""
    others = (x.sum() - x) / (n - 1)
    squares = ((x ** 2).sum() - x ** 2 - (n - 1) * others ** 2) / (n - 2)
    sd = np.fmax(np.sqrt(np.maximum(squares, 0)), sd_floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(x - others) / (sd * math.sqrt(1 + 1 / (n - 1)))
    p = 2 * t_sf(t, n - 2)
    return ", ".join(f"{seed}: {value:+.2f}" for seed, value, q in zip(seeds, x, p) if q < level / n)


def summarize_deltas(deltas: pd.DataFrame, by: Sequence[str], confidence: float = CONFIDENCE,
                     order: Sequence[int] = ()) -> pd.DataFrame:
    """Per group of `by`: over seeds, the mean delta, sd, its floor (`spread_floor`; `step`, the
    resolution of one pair's delta, is an optional column of `deltas`), t-interval and t-test p
    (`n` seeds), outlying seeds; over pairs, wins/ties/losses and P(improvement), whose interval
    resamples seeds."""
    if deltas.empty:
        return pd.DataFrame(columns=[*by, *SUMMARY_COLUMNS])
    floors = spread_floor(deltas, by)
    if order:  # a sequential analysis: each look gets its own floor
        floors = floors.merge(look_floors(deltas, by, order), on=list(by))
    summary = seed_summary(per_seed(deltas, by), by, order, confidence, floors)

    def pairs(group: pd.DataFrame) -> pd.Series:
        d = group["delta"].to_numpy(dtype=float)
        p_imp, p_low, p_high = probability_of_improvement(d, group["seed"].to_numpy(), confidence)
        return pd.Series({"pairs": len(d), "wins": int((d > 0).sum()), "ties": int((d == 0).sum()),
                          "losses": int((d < 0).sum()), "p_improvement": p_imp,
                          "p_improvement_low": p_low, "p_improvement_high": p_high})
    counts = deltas.groupby(list(by), sort=False).apply(pairs, include_groups=False).reset_index()
    summary = summary.merge(counts, on=list(by))[[*by, *SUMMARY_COLUMNS, *(["look_floors"] if order else [])]]
    return summary.astype({k: int for k in ("n", "pairs", "wins", "ties", "losses")})


SUMMARY_COLUMNS = ("mean", "sd", "sd_floor", "ci_low", "ci_high", "n", "pairs", "p", "wins", "ties", "losses",
                   "p_improvement", "p_improvement_low", "p_improvement_high", "outlier_seeds", "values", "seeds")
DECISION_COLUMNS = ("p_adjusted", "ci_low_adjusted", "ci_high_adjusted", "verdict", "seeds_needed")


def decide(summary: pd.DataFrame, family: Sequence[str], method: str = "holm",
           confidence: float = CONFIDENCE, margin: float = MARGIN, design: Design | None = None) -> pd.DataFrame:
    """Adjust p-values within each family (rows equal in `family` columns) by `method`, carry the
    adjustment over to the intervals, and give each row a verdict and, if undecided, seeds_needed.

    With a `design` (seeds on demand), `p` becomes the repeated p-value and the intervals the
    intersections of the repeated t-intervals of every look so far (module doc); without one,
    the fixed-sample t-test and t-interval."""
    out = summary.copy()
    if design is not None:
        out["p"] = sequential(out, design)[0]
    codes = out.groupby(list(family), sort=False).ngroup().to_numpy()
    p = out["p"].to_numpy(dtype=float)
    out["p_adjusted"] = ADJUSTMENTS[method](p, codes)
    levels = adjusted_level(p, out["p_adjusted"].to_numpy(dtype=float), confidence)
    mean, n, sd = out["mean"].to_numpy(dtype=float), out["n"].to_numpy(dtype=float), used_sd(out)
    if design is None:
        out["ci_low_adjusted"], out["ci_high_adjusted"] = interval(mean, sd, n, levels)
        counts = np.arange(2, SEEDS_CAP + 1)
        later = scipy_stats.t.ppf(0.5 + levels[:, None] / 2, counts[None, :] - 1) * sd[:, None] / np.sqrt(counts)
    else:
        out["ci_low_adjusted"], out["ci_high_adjusted"] = sequential(out, design, 1 - levels)
        counts = design.counts
        nominal = 2 * scipy_stats.norm.sf(design.boundaries(1 - levels))
        later = scipy_stats.t.isf(nominal / 2, counts[None, :] - 1) * sd[:, None] / np.sqrt(counts)
    out["verdict"] = [verdict(low, high, margin) for low, high in zip(out["ci_low_adjusted"], out["ci_high_adjusted"])]
    needed = _first_reached(mean, sd, n, margin, counts, later)
    out["seeds_needed"] = np.where(out["verdict"] == "undecided", needed, math.nan)
    return out


def expected_max(values: Sequence[float], n: int) -> float:
    """The expected best of n candidates drawn without replacement from these N results: the unbiased
    estimator of Tang et al. (ACL 2020) for the expected validation performance curve of Dodge et
    al. (EMNLP 2019), sum over i of v_(i) C(i-1, n-1) / C(N, n), v sorted ascending."""
    v = np.sort(np.asarray(values, dtype=float))
    total = math.comb(len(v), n)
    return float(sum(v[i - 1] * math.comb(i - 1, n - 1) for i in range(n, len(v) + 1)) / total)


def interaction_deltas(runs: pd.DataFrame, a: str, b: str, factors: Sequence[str], value: str) -> pd.DataFrame:
    """Interaction contrasts of factors `a` and `b` on paired runs.

    For each level a1 of `a` (against its first value a0) and b1 of `b` (against b0), on runs equal
    in every other factor, the dataset and the seed: the effect of a at b1 and at b0, and their
    difference, the contrast y(a1,b1) - y(a0,b1) - y(a1,b0) + y(a0,b0). Zero means a's effect does
    not depend on b. One row per matched quadruple.
    """
    keys = [f for f in factors if f not in (a, b)] + ["dataset", "seed"]
    a_levels, b_levels = list(dict.fromkeys(runs[a])), list(dict.fromkeys(runs[b]))
    cell = runs.set_index([a, b, *keys])[value]
    frames = []
    for a1 in a_levels[1:]:
        for b1 in b_levels[1:]:
            corners = {name: cell.xs((x, y), level=[a, b]) for name, (x, y) in
                       {"00": (a_levels[0], b_levels[0]), "10": (a1, b_levels[0]),
                        "01": (a_levels[0], b1), "11": (a1, b1)}.items()}
            joined = pd.concat(corners, axis=1, join="inner").dropna()
            frame = pd.DataFrame({"effect_at_base": joined["10"] - joined["00"],
                                  "effect_at_level": joined["11"] - joined["01"]}).reset_index()
            frames.append(frame.assign(
                delta=frame["effect_at_level"] - frame["effect_at_base"],
                comparison_a=f"{a1} − {a_levels[0]}", level_b=str(b1), base_b=str(b_levels[0])))
    columns = ["comparison_a", "level_b", "base_b", *keys, "effect_at_base", "effect_at_level", "delta"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]
