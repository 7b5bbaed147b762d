"""Statistics over seeds: t-intervals of means, and paired differences between axis values.

Ablation grids have few seeds (2-10), so intervals are Student-t intervals of the mean, not
bootstrap ones: with n this small a bootstrap underestimates the spread.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

CONFIDENCE = 0.95


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """Mean and the two-sided Student-t confidence interval of the mean (NaN bounds for n < 2)."""
    x = np.asarray(values, dtype=float)
    mean = float(x.mean()) if len(x) else math.nan
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = scipy_stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def summarize(values: pd.Series) -> pd.Series:
    """mean, std (n-1), ci_low, ci_high of one group."""
    mean, low, high = t_interval(values.to_numpy())
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


def summarize_deltas(deltas: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Mean delta with its t-interval and wins/ties/losses per group of `by`."""
    def one(group: pd.DataFrame) -> pd.Series:
        d = group["delta"]
        mean, low, high = t_interval(d.to_numpy())
        return pd.Series({"mean": mean, "ci_low": low, "ci_high": high, "n": len(d),
                          "wins": int((d > 0).sum()), "ties": int((d == 0).sum()),
                          "losses": int((d < 0).sum())})
    if deltas.empty:
        return pd.DataFrame(columns=[*by, "mean", "ci_low", "ci_high", "n", "wins", "ties", "losses"])
    summary = deltas.groupby(list(by), sort=False).apply(one, include_groups=False).reset_index()
    return summary.astype({k: int for k in ("n", "wins", "ties", "losses")})
