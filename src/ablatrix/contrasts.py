"""Effects of a designed experiment by contrasts, and each term's share of the variance between
configurations. Pure functions: frames in, frames out.

In a fraction no two runs differ in one factor only, so the paired differences of `stats` find
nothing. A main effect is instead the design's contrast over one replicate (the runs of one dataset,
seed and variant): mean(y at the factor's second value) - mean(y at its first). An interaction of
two factors is the difference of one factor's effect at the other's two values, from the four
quarter means. The seed stays the unit: these per-replicate contrasts are what `stats` summarises
and decides, as it does paired differences. On a complete full factorial of two-level factors the
main contrast equals the mean paired difference, and the interaction contrast the mean interaction
of `stats.interaction_deltas` (each cell is in the same number of pairs).

Each contrast row carries `weight`, the sum of its squared coefficients (1/n_high + 1/n_low), so
that the resolution floor of `stats.spread_floor` can be scaled: a contrast of values recorded on a
grid of `step` carries a rounding sd of step * sqrt(weight / 12).
"""
from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np
import pandas as pd


def _cells(runs: pd.DataFrame, factors: Sequence[str], blocks: Sequence[str], value: str) -> pd.DataFrame:
    """Mean and count of `value` per block and combination of `factors`, the combinations as columns."""
    grouped = runs.groupby([*blocks, *factors], sort=False, observed=True)[value].agg(["mean", "size"])
    return grouped.unstack(list(factors))


def main_contrasts(runs: pd.DataFrame, factor: str, levels: Sequence, blocks: Sequence[str],
                   value: str) -> pd.DataFrame:
    """One row per block holding both `levels` of `factor` (its first value, then its second):
    level, baseline, comparison (as `stats.paired_deltas` labels it), the block keys, `delta` (the
    contrast) and `weight`."""
    low, high = levels
    cells = _cells(runs, [factor], blocks, value)
    columns = ["level", "baseline", "comparison", *blocks, "delta", "weight"]
    if not {low, high} <= set(cells["mean"].columns):
        return pd.DataFrame(columns=columns)
    out = pd.DataFrame({"delta": cells["mean"][high] - cells["mean"][low],
                        "weight": 1 / cells["size"][high] + 1 / cells["size"][low]}).dropna().reset_index()
    return out.assign(level=high, baseline=low, comparison=f"{high} − {low}")[columns]


def interaction_contrasts(runs: pd.DataFrame, a: str, b: str, levels_a: Sequence, levels_b: Sequence,
                          blocks: Sequence[str], value: str) -> pd.DataFrame:
    """One row per block holding all four combinations of `a`'s and `b`'s two levels: a's effect at
    b's first value and at its second, their difference (`delta`, the interaction) and `weight`;
    labelled as `stats.interaction_deltas` labels its rows."""
    (a0, a1), (b0, b1) = levels_a, levels_b
    cells = _cells(runs, [a, b], blocks, value)
    corners = [(a0, b0), (a1, b0), (a0, b1), (a1, b1)]
    columns = ["comparison_a", "level_b", "base_b", *blocks, "effect_at_base", "effect_at_level", "delta", "weight"]
    if not set(corners) <= set(cells["mean"].columns):
        return pd.DataFrame(columns=columns)
    mean = cells["mean"]
    out = pd.DataFrame({"effect_at_base": mean[a1, b0] - mean[a0, b0], "effect_at_level": mean[a1, b1] - mean[a0, b1],
                        "weight": sum(1 / cells["size"][c] for c in corners)}).dropna()
    out["delta"] = out["effect_at_level"] - out["effect_at_base"]
    return out.reset_index().assign(comparison_a=f"{a1} − {a0}", level_b=str(b1), base_b=str(b0))[columns]


def variance_shares(runs: pd.DataFrame, terms: Sequence[tuple[str, ...]], blocks: Sequence[str],
                    value: str) -> pd.DataFrame:
    """Each term's share (%) of the variance of `value` between the configurations of one block (the
    functional ANOVA decomposition of Hutter et al., ICML 2014, on the design's runs), one row per
    block and term, plus the term `rest` (every term not listed: higher-order interactions).

    A term's component is the inclusion-exclusion of marginal means, f_S = sum over T in S of
    (-1)^(|S|-|T|) m_T, and its share mean(f_S^2) / var(y). On a complete factorial the components
    are orthogonal and the shares sum to 100. On a regular fraction a term's component is the
    component of its whole alias chain; list one term per chain and none aliased with a main effect.
    Blocks whose configurations do not vary get no rows."""
    rows = []
    for key, block in runs.groupby(list(blocks), sort=False, observed=True):
        y = block[value].to_numpy(dtype=float)
        total = float(np.mean((y - y.mean()) ** 2))
        if total == 0:
            continue
        marginal = {(): np.full(len(y), y.mean())}
        shares = {}
        for term in terms:
            component = np.zeros(len(y))
            for size in range(len(term) + 1):
                for subset in itertools.combinations(term, size):
                    if subset not in marginal:
                        marginal[subset] = block.groupby(list(subset), sort=False, observed=True)[value].transform(
                            "mean").to_numpy(dtype=float)
                    component += (-1) ** (len(term) - size) * marginal[subset]
            shares[term] = 100 * float(np.mean(component ** 2)) / total
        shares[("rest",)] = max(0.0, 100 - sum(shares.values()))
        key = key if isinstance(key, tuple) else (key,)
        rows += [{**dict(zip(blocks, key)), "term": " × ".join(term), "share": share}
                 for term, share in shares.items()]
    return pd.DataFrame(rows, columns=[*blocks, "term", "share"])
