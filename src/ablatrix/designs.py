"""Designs: which combinations of a grid's axis values train.

`full` trains every combination (the factorial). `one-at-a-time` trains the base (each axis's first
value) and each other value changed alone: a paper's ablation table, 1 + the other values' count
instead of their product. Each effect is then a value against the base on the same seed (the
paired differences of the report); interactions cannot be estimated. The design is not part of
any run id: a cell is the same run in either design, so changing the design retrains nothing.
"""
from __future__ import annotations

import itertools
from typing import Any

DESIGNS = ("full", "one-at-a-time")


def design_combos(axes: dict[str, list[Any]], design: str) -> list[dict[str, Any]]:
    """The combinations of axis values a design trains (`DESIGNS`), the base (first values) first."""
    if design == "full":
        return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    base = {axis: values[0] for axis, values in axes.items()}
    return [base] + [{**base, axis: value} for axis, values in axes.items() for value in values[1:]]
