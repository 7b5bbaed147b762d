"""Multiplicity: p-values adjusted within families of comparisons (Holm's step-down for the
family-wise error, Benjamini-Hochberg for the false discovery rate), and the confidence level an
adjusted p-value carries over to its interval.

Every function is pure: numbers in, numbers out.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def holm(p_values: Sequence[float], families: Sequence[int] | None = None) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (family-wise error), within each family (an integer code
    per p-value; one family if None); NaN entries stay NaN, uncounted."""
    return _adjust(p_values, families, holm=True)


def benjamini_hochberg(p_values: Sequence[float], families: Sequence[int] | None = None) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate) within each family; NaN stays NaN."""
    return _adjust(p_values, families, holm=False)


def _adjust(p_values: Sequence[float], families: Sequence[int] | None, holm: bool) -> np.ndarray:
    """Holm: the k-th smallest of m times (m - k + 1), running maximum upwards; BH: times m / k,
    running minimum from the largest. Vectorised over families, for the calibration benchmark's
    thousands of simulated grids."""
    p = np.asarray(p_values, dtype=float)
    family = np.zeros(len(p), dtype=int) if families is None else np.asarray(families)
    adjusted = np.full_like(p, math.nan)
    valid = np.flatnonzero(~np.isnan(p))
    if not len(valid):
        return adjusted
    order = valid[np.lexsort((p[valid], family[valid]))]
    fam = family[order]
    starts = np.flatnonzero(np.r_[True, fam[1:] != fam[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    m = np.repeat(sizes, sizes)
    rank = np.arange(len(order)) - np.repeat(starts, sizes)  # 0-based within the family
    group = np.repeat(np.arange(len(starts)), sizes)
    if holm:
        steps = (m - rank) * p[order]
        offset = group * (m.max() + 1.0)  # running maximum within each family
        steps = np.maximum.accumulate(steps + offset) - offset
    else:
        steps = p[order] * m / (rank + 1)
        offset = group * (steps.max() + 1.0)  # running minimum from each family's largest
        steps = np.minimum.accumulate((steps + offset)[::-1])[::-1] - offset
    adjusted[order] = np.minimum(steps, 1.0)
    return adjusted


ADJUSTMENTS = {"holm": holm, "bh": benjamini_hochberg}


def adjusted_level(p: float | np.ndarray, p_adjusted: float | np.ndarray,
                   confidence: float) -> float | np.ndarray:
    """The confidence level whose t-interval excludes 0 exactly when the adjusted p is below
    1 - confidence: the p-value's adjustment carried over to the interval (element-wise)."""
    p, q = np.asarray(p, dtype=float), np.asarray(p_adjusted, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        level = np.where(np.isnan(p) | np.isnan(q) | (q == 0), confidence, 1 - (1 - confidence) * p / q)
    return float(level) if level.ndim == 0 else level
