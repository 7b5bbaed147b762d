"""Designs: which combinations of the axes' values a grid trains."""
from __future__ import annotations

import pytest

from ablatrix.designs import design_combos

AXES = {"a": [1, 2, 3], "b": ["x", "y"]}


@pytest.mark.parametrize("design, expected", [
    ("full", [{"a": a, "b": b} for a in (1, 2, 3) for b in ("x", "y")]),
    ("one-at-a-time", [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}, {"a": 3, "b": "x"}, {"a": 1, "b": "y"}]),
])
def test_a_design_gives_its_combinations_base_first(design, expected):
    """Full: the product (6); one-at-a-time: the base (first values), then each other value alone (1 + 2 + 1)."""
    assert design_combos(AXES, design) == expected


@pytest.mark.parametrize("design", ["full", "one-at-a-time"])
def test_without_axes_a_design_is_the_base_alone(design):
    assert design_combos({}, design) == [{}]
