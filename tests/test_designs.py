"""Designs: which combinations of the axes' values a grid trains, and what a two-level design aliases."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from ablatrix.designs import DesignSpec, aliasing, describe, design_combos, matrix, parse_design
from ablatrix.errors import AblatrixError

AXES = {"a": [1, 2, 3], "b": ["x", "y"]}
SIX = {f"model.f{i}": [False, True] for i in range(6)}  # six two-level factors, A..F


@pytest.mark.parametrize("design, expected", [
    ("full", [{"a": a, "b": b} for a in (1, 2, 3) for b in ("x", "y")]),
    ("one-at-a-time", [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}, {"a": 3, "b": "x"}, {"a": 1, "b": "y"}]),
])
def test_a_design_gives_its_combinations_base_first(design, expected):
    """Full: the product (6); one-at-a-time: the base (first values), then each other value alone (1 + 2 + 1)."""
    assert design_combos(AXES, DesignSpec(design)) == expected


@pytest.mark.parametrize("design", ["full", "one-at-a-time"])
def test_without_axes_a_design_is_the_base_alone(design):
    assert design_combos({}, DesignSpec(design)) == [{}]


@pytest.mark.parametrize("spec, runs", [
    (DesignSpec("fractional"), 16),  # 2^(6-2), resolution IV
    (DesignSpec("fractional", resolution=3), 8),
    (DesignSpec("fractional", generators=("E = ABC", "F = BCD")), 16),
    (DesignSpec("fractional", resolution=3, fold=True), 16),
    (DesignSpec("plackett-burman"), 8),
])
def test_a_two_level_design_is_a_balanced_orthogonal_subset_of_the_full_factorial(spec, runs):
    """Distinct configurations of the 64, each factor at each value in half of them, every two factors'
    columns orthogonal (so each main effect is estimated from all runs)."""
    combos = design_combos(SIX, spec)
    assert len(combos) == runs == len({tuple(c.values()) for c in combos})
    x = matrix(spec, 6)
    assert (x.sum(axis=0) == 0).all() and (x.T @ x == runs * np.eye(6)).all()
    assert [[c[a] for a in SIX] for c in combos] == (x > 0).tolist()


@pytest.mark.parametrize("k, resolution, runs", [
    (3, 3, 4), (4, 4, 8), (5, 5, 16), (6, 4, 16), (7, 3, 8), (7, 4, 16), (7, 5, 64), (8, 4, 16), (9, 4, 32),
    (11, 3, 16)])
def test_the_default_fraction_is_the_smallest_of_its_resolution(k, resolution, runs):
    """The textbook minimum runs (Box, Hunter and Hunter, table 6.22), where pyDOE3's own search finds more
    runs (7 at III: 16), none (4 at IV, 5 at V) or a lower resolution (7 at V: IV)."""
    spec = DesignSpec("fractional", resolution=resolution)
    alias = aliasing(spec, k)
    assert alias.runs == runs and alias.resolution >= resolution


def test_folding_keeps_every_run_and_adds_the_mirrors():
    """Growing a design by its fold-over retrains nothing: the first half is the unfolded design."""
    small = design_combos(SIX, DesignSpec("fractional", resolution=3))
    folded = design_combos(SIX, DesignSpec("fractional", resolution=3, fold=True))
    assert folded[:len(small)] == small
    assert folded[len(small):] == [{k: not v for k, v in c.items()} for c in small]


@pytest.mark.parametrize("spec, resolution, defining, chains", [
    (DesignSpec("fractional"), 4, {"ABCE", "ABDF", "CDEF"}, [("A", "BCE", "BDF"), ("AB", "CE", "DF"), ("AC", "BE")]),
    (DesignSpec("fractional", generators=("E = ABC", "F = BCD")), 4, {"ABCE", "BCDF", "ADEF"}, [("AB", "CE")]),
    (DesignSpec("fractional", resolution=3), 3, {"ABE", "ACF", "CDE"}, [("A", "BE", "CF")]),
    (DesignSpec("fractional", resolution=3, fold=True), 4, {"ABCD", "ADEF", "BCEF"}, [("A", "BCD", "DEF"), ("AB", "CD")]),
])
def test_a_fraction_states_its_resolution_defining_relation_and_alias_chains(spec, resolution, defining, chains):
    """Resolution IV: main effects aliased only with three-factor terms, pairs with pairs; III: mains with pairs;
    the fold-over of a resolution III design is resolution IV."""
    alias = aliasing(spec, 6)
    assert alias.regular and alias.resolution == resolution and not alias.partial
    assert defining <= set(alias.defining)
    for chain in chains:
        assert alias.chain(chain[0])[:len(chain)] == chain


def test_a_plackett_burman_of_12_runs_aliases_each_main_effect_partially():
    """11 factors in 12 runs: no column repeats another, each main effect correlates 1/3 with pairs not involving it."""
    axes = {f"model.f{i}": [0, 1] for i in range(11)}
    alias = aliasing(DesignSpec("plackett-burman"), 11)
    assert (alias.runs, alias.regular, alias.resolution) == (12, False, None)
    assert set(alias.partial) == set("ABCDEFGHIJK") and max(alias.partial.values()) == pytest.approx(1 / 3)
    assert "partially aliased with two-factor interactions" in describe(axes, DesignSpec("plackett-burman"))[1]


def test_list_describes_a_fraction_in_factor_letters():
    """The factor legend, runs of the full factorial, resolution in roman numerals, defining relation, chains."""
    lines = describe(SIX, DesignSpec("fractional"))
    assert lines[0].startswith("factors: A = model.f0 (False / True), B = model.f1")
    assert lines[1] == ("16 configurations of the 64 of the full factorial, resolution IV; defining relation "
                        "I = ABCE = ABDF = CDEF")
    assert "  A = BCE = BDF" in lines and "  AB = CE = DF" in lines


@pytest.mark.parametrize("value, axes, message", [
    ("fractional", {"model.a": [1, 2, 3], "model.b": [0, 1]}, "two values each; model.a has 3"),
    ("fractional", {"model.a": [0, 1]}, "two or more axes"),
    ({"kind": "fractional", "resolution": 5}, dict(itertools.islice(SIX.items(), 4)),
     "no fraction of resolution 5 exists for 4 factors"),
    ({"kind": "fractional", "resolution": 4}, dict(itertools.islice(SIX.items(), 3)),
     "no fraction of resolution 4 exists for 3 factors"),
    ({"kind": "fractional", "resolution": 2}, SIX, "expected an integer >= 3"),
    ({"kind": "fractional", "generators": ["E = ABG"]}, SIX, "names unknown factor G; the factors are A, B, C"),
    ({"kind": "fractional", "generators": ["E = ABC", "F = ABC"]}, SIX, "repeat the column ABC"),
    ({"kind": "fractional", "generators": ["E = A"]}, SIX, "two or more distinct base factors"),
    ({"kind": "fractional", "generators": ["E = ABF", "F = BCD"]}, SIX, "two or more distinct base factors"),
    ({"kind": "fractional", "generators": ["E := ABC"]}, SIX, "is not of the form"),
    ({"kind": "fractional", "generators": ["E = ABC"], "resolution": 4}, SIX, "not both"),
    ({"kind": "full", "fold": True}, SIX, "takes no resolution, generators or fold"),
    ({"kind": "fractional", "runs": 8}, SIX, "unknown field runs; allowed: kind, resolution"),
    ("latin-square", SIX, "choose from: full, one-at-a-time, fractional, plackett-burman"),
])
def test_a_design_the_axes_cannot_have_is_one_error_line(value, axes, message):
    """Three levels, impossible resolutions, bad generators, stray options: each names what is wrong."""
    with pytest.raises(AblatrixError, match=message) as caught:
        parse_design(value, axes)
    assert "\n" not in str(caught.value)
