"""Statistics over seeds: t-intervals, paired effects and interactions, and verdicts on them.

Ablation grids have few seeds (2-10), so intervals of mean differences are Student-t intervals,
not bootstrap ones: with n this small a bootstrap underestimates the spread. The one bootstrap
here is over the pairs of P(improvement), a proportion, as in rliable (Agarwal et al., 2021) and
Bouthillier et al. (MLSys 2021), who recommend acting on P(A > B) >= 0.75.

Every function is pure: numbers or DataFrames in, numbers or DataFrames out.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
MARGIN = 0.5  # practical-equivalence margin, percentage points
SEEDS_CAP = 50  # seeds_needed beyond this is reported as "more than SEEDS_CAP"
RESAMPLES = 2000  # bootstrap resamples of P(improvement)


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean and the two-sided Student-t confidence interval of the mean (NaN bounds for n < 2)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if len(x) else math.nan
    sd = float(x.std(ddof=1)) if len(x) > 1 else math.nan
    return (mean, *interval(mean, sd, len(x), confidence))


def summarize(values: pd.Series, confidence: float = CONFIDENCE) -> pd.Series:
    """mean, std (n-1), ci_low, ci_high of one group."""
    mean, low, high = t_interval(values.to_numpy(), confidence)
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
    `comparison`, the match keys and `delta`.
    """
    keys = [f for f in factors if f != factor] + ["dataset", "seed", *extra_keys]
    levels = list(dict.fromkeys(runs[factor]))
    base = runs[runs[factor] == levels[0]].set_index(keys)[value]
    frames = []
    for level in levels[1:]:
        other = runs[runs[factor] == level].set_index(keys)[value]
        joined = pd.concat({"base": base, "other": other}, axis=1, join="inner").dropna()
        delta = (joined["other"] - joined["base"]).rename("delta").reset_index()
        frames.append(delta.assign(comparison=f"{level} − {levels[0]}"))
    if not frames:
        return pd.DataFrame(columns=["comparison", *keys, "delta"])
    return pd.concat(frames, ignore_index=True)[["comparison", *keys, "delta"]]


def t_test_p(values: Sequence[float]) -> float:
    """Two-sided p-value of the one-sample t-test of mean 0 (paired differences); NaN for n < 2.

    With zero spread the difference is the same in every pair: p is 0 unless it is 0 everywhere.
    """
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan
    sd = x.std(ddof=1)
    if sd == 0:
        return 1.0 if x[0] == 0 else 0.0
    t = x.mean() / (sd / math.sqrt(len(x)))
    return float(2 * scipy_stats.t.sf(abs(t), len(x) - 1))


def probability_of_improvement(deltas: Sequence[float], confidence: float = CONFIDENCE,
                               resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """P(changed > baseline) over paired runs (a tie counts half) and its percentile bootstrap
    interval over the pairs; NaN bounds for fewer than 2 pairs."""
    d = np.asarray(deltas, dtype=float)
    if len(d) == 0:
        return math.nan, math.nan, math.nan
    score = (d > 0) + 0.5 * (d == 0)
    if len(d) < 2:
        return float(score.mean()), math.nan, math.nan
    boot = score[np.random.default_rng(seed).integers(0, len(d), (resamples, len(d)))].mean(axis=1)
    low, high = np.quantile(boot, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return float(score.mean()), float(low), float(high)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error); NaN entries stay NaN, uncounted."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    m = len(order)
    steps = np.maximum.accumulate((m - np.arange(m)) * p[order]) if m else np.array([])
    adjusted[order] = np.minimum(steps, 1.0)
    return adjusted


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate); NaN entries stay NaN."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")[::-1]]  # largest first
    m = len(order)
    steps = np.minimum.accumulate(p[order] * m / (m - np.arange(m))) if m else np.array([])
    adjusted[order] = np.minimum(steps, 1.0)
    return adjusted


ADJUSTMENTS = {"holm": holm, "bh": benjamini_hochberg}


def adjusted_level(p: float, p_adjusted: float, confidence: float = CONFIDENCE) -> float:
    """The confidence level whose t-interval excludes 0 exactly when the adjusted p is below
    1 - confidence: the p-value's adjustment carried over to the interval."""
    if math.isnan(p) or math.isnan(p_adjusted) or p_adjusted == 0:
        return confidence
    return 1 - (1 - confidence) * p / p_adjusted


def interval(mean: float, sd: float, n: int, level: float) -> tuple[float, float]:
    """The Student-t interval of a mean from its sample sd and n (NaN for n < 2)."""
    if n < 2 or math.isnan(sd):
        return math.nan, math.nan
    half = scipy_stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return mean - half, mean + half


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
                 cap: int = SEEDS_CAP, pairs_per_seed: float = 1.0) -> float:
    """The number of seeds at which the t half-width of `n` pairs' mean, at `level`, would fall
    below |mean| (the interval then excludes 0) or below margin - |mean| (it then lies inside
    ± margin), if the observed mean and sd held; each seed adds `pairs_per_seed` pairs (one per
    setting of the other factors). NaN without a spread estimate; inf beyond `cap` seeds."""
    if n < 2 or math.isnan(sd):
        return math.nan
    target = max(abs(mean), margin - abs(mean))
    seeds = np.arange(math.floor(n / pairs_per_seed) + 1, cap + 1)
    if target <= 0 or not len(seeds):
        return math.inf
    pairs = seeds * pairs_per_seed
    half = scipy_stats.t.ppf(0.5 + level / 2, pairs - 1) * sd / np.sqrt(pairs)
    reached = seeds[half < target]
    return float(reached[0]) if len(reached) else math.inf


def summarize_deltas(deltas: pd.DataFrame, by: Sequence[str], confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per group of `by`: mean delta, sd, t-interval, t-test p, wins/ties/losses, P(improvement)."""
    def one(group: pd.DataFrame) -> pd.Series:
        d = group["delta"].to_numpy(dtype=float)
        mean, low, high = t_interval(d, confidence)
        p_imp, p_low, p_high = probability_of_improvement(d, confidence)
        return pd.Series({"mean": mean, "sd": d.std(ddof=1) if len(d) > 1 else math.nan,
                          "ci_low": low, "ci_high": high, "n": len(d), "seeds": group["seed"].nunique(),
                          "p": t_test_p(d),
                          "wins": int((d > 0).sum()), "ties": int((d == 0).sum()), "losses": int((d < 0).sum()),
                          "p_improvement": p_imp, "p_improvement_low": p_low, "p_improvement_high": p_high})
    if deltas.empty:
        return pd.DataFrame(columns=[*by, *SUMMARY_COLUMNS])
    summary = deltas.groupby(list(by), sort=False).apply(one, include_groups=False).reset_index()
    return summary.astype({k: int for k in ("n", "seeds", "wins", "ties", "losses")})


SUMMARY_COLUMNS = ("mean", "sd", "ci_low", "ci_high", "n", "seeds", "p", "wins", "ties", "losses",
                   "p_improvement", "p_improvement_low", "p_improvement_high")
DECISION_COLUMNS = ("p_adjusted", "ci_low_adjusted", "ci_high_adjusted", "verdict", "seeds_needed")


def decide(summary: pd.DataFrame, family: Sequence[str], method: str = "holm",
           confidence: float = CONFIDENCE, margin: float = MARGIN) -> pd.DataFrame:
    """Adjust p-values within each family (rows equal in `family` columns) by `method`, carry the
    adjustment over to the intervals, and give each row a verdict and, if undecided, seeds_needed."""
    out = summary.copy()
    out["p_adjusted"] = math.nan
    for _, rows in out.groupby(list(family), sort=False):
        out.loc[rows.index, "p_adjusted"] = ADJUSTMENTS[method](rows["p"].to_numpy(dtype=float))
    levels = [adjusted_level(p, q, confidence) for p, q in zip(out["p"], out["p_adjusted"])]
    bounds = [interval(m, s, n, level) for m, s, n, level in zip(out["mean"], out["sd"], out["n"], levels)]
    out["ci_low_adjusted"] = [low for low, _ in bounds]
    out["ci_high_adjusted"] = [high for _, high in bounds]
    out["verdict"] = [verdict(low, high, margin) for low, high in bounds]
    out["seeds_needed"] = [seeds_needed(m, s, n, margin, level, pairs_per_seed=n / k) if v == "undecided" else math.nan
                           for m, s, n, k, level, v in zip(out["mean"], out["sd"], out["n"], out["seeds"], levels,
                                                           out["verdict"])]
    return out


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
