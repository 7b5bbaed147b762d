"""Designs: which combinations of a grid's axis values train, and what their effects can tell apart.

- `full` trains every combination (the factorial).
- `one-at-a-time` trains the base (each axis's first value) and each other value changed alone: a
  paper's ablation table, 1 + the other values' count instead of their product. Each effect is a
  value against the base on the same seed; interactions cannot be estimated.
- `fractional` (two-level axes): a regular fraction of the 2^k factorial, from a `resolution` (the
  smallest such design) or explicit `generators` ("E = ABC": factor E's level is the product of
  A's, B's and C's). Main effects come from contrasts over all its runs, at the price of aliasing:
  an estimate is the sum of every effect whose column the design makes identical (its alias chain).
- `plackett-burman` (two-level axes): a screening design of N runs (a multiple of 4) for up to N - 1
  factors; main effects are partially aliased with two-factor interactions.

`fold = true` adds the mirror of every run (each level flipped), which separates main effects
from two-factor interactions; the stored runs stay and only the mirrors train. Factors are lettered
A, B, ... in the axes' order; -1 is an axis's first value, +1 its second. The design matrices and
alias chains come from pyDOE3 (`fracfact`, `fracfact_by_res`, `pbdesign`, `fold`,
`fracfact_aliasing`), a maintained BSD package, so no generator algebra is written here. No design
is part of a run id: a cell is the same run in every design, so changing the design retrains only
runs it adds.
"""
from __future__ import annotations

import itertools
import re
import string
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import AblatrixError

DESIGNS = ("full", "one-at-a-time", "fractional", "plackett-burman")
TWO_LEVEL = ("fractional", "plackett-burman")  # designs of -1/+1 factors, analysed by contrasts
DESIGN_KEYS = ("kind", "resolution", "generators", "fold")
ROMAN = {3: "III", 4: "IV", 5: "V", 6: "VI", 7: "VII", 8: "VIII"}
GENERATOR = re.compile(r"\s*([A-Za-z])\s*=\s*([A-Za-z]+)\s*")


@dataclass(frozen=True)
class DesignSpec:
    """A grid's `design`: its kind (`DESIGNS`) and, for a fraction, how it is generated."""

    kind: str = "full"
    resolution: int | None = None
    generators: tuple[str, ...] = ()  # "E = ABC", as written
    fold: bool = False

    def __str__(self) -> str:
        return self.kind + (" (folded over)" if self.fold else "")

    def excluding(self, combo: int, rules: list[dict[str, Any]], axes: dict[str, list[Any]]) -> str:
        """What `[[exclude]]` rules matching the design's `combo`-th configuration would break ('' if nothing)."""
        if self.kind == "one-at-a-time" and combo == 0 and axes:
            return "the base of the one-at-a-time design: every change is measured against it"
        if self.kind in TWO_LEVEL and any(set(rule) & set(axes) for rule in rules):
            return (f"a configuration of the {self.kind} design: its contrasts need every one (exclude whole "
                    "datasets, seeds or variants)")
        return ""


def letters(axes: dict[str, list[Any]]) -> dict[str, str]:
    """Each axis's factor letter: A, B, ... in the axes' order."""
    return dict(zip(axes, string.ascii_uppercase))


def parse_design(value: Any, axes: dict[str, list[Any]]) -> DesignSpec:
    """A grid's `design` value (a kind, or a table with `kind` and its options) checked against its
    axes; every problem is one AblatrixError line."""
    table = {"kind": value} if isinstance(value, str) else value
    if not isinstance(table, dict):
        raise AblatrixError(f"design = {value!r}; expected a kind ({', '.join(DESIGNS)}) or a [design] table")
    unknown = [k for k in table if k not in DESIGN_KEYS]
    if unknown:
        raise AblatrixError(f"design: unknown field {unknown[0]}; allowed: {', '.join(DESIGN_KEYS)}")
    kind = table.get("kind", "full")
    if kind not in DESIGNS:
        raise AblatrixError(f"design = {kind!r}; choose from: {', '.join(DESIGNS)}")
    resolution, generators, fold = table.get("resolution"), table.get("generators", []), table.get("fold", False)
    if kind not in TWO_LEVEL and (resolution is not None or generators or fold):
        raise AblatrixError(f"design {kind!r} takes no resolution, generators or fold (fractional and "
                            "plackett-burman designs do)")
    if not isinstance(fold, bool):
        raise AblatrixError(f"design.fold = {fold!r}; expected true or false")
    spec = DesignSpec(kind, resolution, tuple(generators) if isinstance(generators, list) else generators, fold)
    if kind in TWO_LEVEL:
        three = [f"{axis} has {len(values)}" for axis, values in axes.items() if len(values) != 2]
        if three or len(axes) < 2:
            raise AblatrixError(f"a {kind} design needs two or more axes of exactly two values each"
                                + (f"; {three[0]}" if three else ""))
        matrix(spec, len(axes))  # raises for a resolution or generators the factors cannot have
    return spec


def _chains(x: np.ndarray) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """A design's defining relation (the words whose column is all +1) and its other alias chains, in
    factor letters, from pyDOE3's `fracfact_aliasing`."""
    from pyDOE3 import fracfact_aliasing
    names = string.ascii_uppercase[:x.shape[1]]
    chains, defining = [], []
    for text in fracfact_aliasing(x)[0]:
        terms = tuple(t.upper() for t in text.split(" = "))
        column = np.prod(x[:, [names.index(c) for c in terms[0]]], axis=1)
        (defining if np.all(column == 1) else chains).append(terms)
    return tuple(w for chain in defining for w in chain), chains


def _resolution(x: np.ndarray) -> int:
    """The length of the shortest word of a design's defining relation (its number of factors if none)."""
    return min(map(len, _chains(x)[0]), default=x.shape[1] + 1)


def _by_resolution(k: int, resolution: int) -> np.ndarray | None:
    """The smallest regular fraction of k factors of at least `resolution` that pyDOE3 builds.

    pyDOE3 1.6.2's `fracfact_by_res` skips the word of all base factors (no 2^(4-1) of resolution IV)
    and can return less than it was asked (7 factors at resolution V come back as IV), so resolutions
    III and IV use the standard constructions on b base factors, fewest first: III takes any distinct
    words of two or more base factors, IV only odd words of three or more (products of odd words are
    even, so every defining word has four letters or more); the longest words first. Resolution V and
    above take the smaller of the half fraction (resolution k) and `fracfact_by_res`, each checked."""
    from pyDOE3 import fracfact, fracfact_by_res
    names = string.ascii_lowercase
    if resolution <= 4:
        for b in range(1, k):
            words = ["".join(w) for n in range(b, 1, -1) for w in itertools.combinations(names[:b], n)
                     if resolution == 3 or n % 2]
            if len(words) >= k - b:
                return fracfact(" ".join([*names[:b], *words[:k - b]]))
        return None
    found = [fracfact(" ".join([*names[:k - 1], names[:k - 1]]))] if k >= resolution else []
    try:
        found.append(fracfact_by_res(k, resolution))
    except ValueError:
        pass
    found = [x for x in found if _resolution(x) >= resolution]
    return min(found, key=len) if found else None


def _fraction(spec: DesignSpec, k: int) -> np.ndarray:
    from pyDOE3 import fracfact
    if spec.generators and spec.resolution is not None:
        raise AblatrixError("design: give a resolution or generators, not both")
    if not spec.generators:
        resolution = 4 if spec.resolution is None else spec.resolution
        if not (isinstance(resolution, int) and not isinstance(resolution, bool) and resolution >= 3):
            raise AblatrixError(f"design.resolution = {resolution!r}; expected an integer >= 3")
        design = _by_resolution(k, resolution)
        if design is None:
            raise AblatrixError(f"no fraction of resolution {resolution} exists for {k} factors (smaller than "
                                f"the {2 ** k} runs of the full factorial) that ablatrix can build: lower the "
                                'resolution, give design.generators, or use design = "full"')
        return design
    names = string.ascii_uppercase[:k]
    if not (isinstance(spec.generators, tuple) and all(isinstance(g, str) for g in spec.generators)):
        raise AblatrixError(f"design.generators = {spec.generators!r}; expected a list like [\"E = ABC\"]")
    words: dict[str, str] = {}
    for text in spec.generators:
        match = GENERATOR.fullmatch(text)
        if not match:
            raise AblatrixError(f"design.generators: {text!r} is not of the form \"E = ABC\"")
        factor, word = match[1].upper(), match[2].upper()
        unknown = [c for c in factor + word if c not in names]
        if unknown:
            raise AblatrixError(f"design.generators: {text!r} names unknown factor {unknown[0]}; the factors "
                                f"are {', '.join(names)}")
        if factor in words:
            raise AblatrixError(f"design.generators: {factor} is generated twice")
        words[factor] = word
    base = [c for c in names if c not in words]
    for factor, word in words.items():
        if len(set(word)) != len(word) or len(word) < 2 or any(c not in base for c in word):
            raise AblatrixError(f"design.generators: {factor} = {word} must be a product of two or more distinct "
                                f"base factors ({', '.join(base)})")
    repeated = [w for w in words.values() if list(words.values()).count(w) > 1]
    if repeated:
        raise AblatrixError(f"design.generators: two factors repeat the column {repeated[0]}")
    return fracfact(" ".join(words.get(c, c).lower() for c in names))


def matrix(spec: DesignSpec, k: int) -> np.ndarray:
    """The -1/+1 matrix (runs x k factors) of a two-level design, mirrors appended when folded."""
    from pyDOE3 import fold, pbdesign
    design = pbdesign(k) if spec.kind == "plackett-burman" else _fraction(spec, k)
    return fold(design) if spec.fold else design


def design_combos(axes: dict[str, list[Any]], design: DesignSpec) -> list[dict[str, Any]]:
    """The combinations of axis values a design trains, in its order (the base first for `full` and
    `one-at-a-time`)."""
    if design.kind == "full":
        return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]
    base = {axis: values[0] for axis, values in axes.items()}
    if design.kind == "one-at-a-time":
        return [base] + [{**base, axis: value} for axis, values in axes.items() for value in values[1:]]
    rows = matrix(design, len(axes)) > 0
    return [{axis: values[int(high)] for (axis, values), high in zip(axes.items(), row)} for row in rows]


@dataclass(frozen=True)
class Aliasing:
    """What a two-level design's estimates can tell apart, in factor letters."""

    runs: int
    regular: bool  # every two columns identical or orthogonal (not so a Plackett-Burman of 12, 20 runs)
    resolution: int | None  # the shortest defining word; None when nothing is aliased
    defining: tuple[str, ...]  # the words of its defining relation (I = ABCE = ...)
    chains: tuple[tuple[str, ...], ...]  # each estimable column's terms, shortest first
    partial: dict[str, float]  # main effect -> largest |correlation| with a two-factor interaction

    def chain(self, term: str) -> tuple[str, ...]:
        """The terms estimated together with `term` (itself included); (term,) when unaliased."""
        return next((c for c in self.chains if term in c), (term,))


def aliasing(design: DesignSpec, k: int) -> Aliasing:
    """The alias structure of a two-level design of k factors (pyDOE3's `fracfact_aliasing`)."""
    x = matrix(design, k)
    names = string.ascii_uppercase[:k]
    words, chains = _chains(x)
    chains.sort(key=lambda chain: (len(chain[0]), chain[0]))
    products = _main_by_pair(x)
    regular = all(abs(c) in (0, len(x)) for c in products.values())
    partial = {} if regular else {
        names[i]: max(abs(c) / len(x) for (j, _), c in products.items() if j == i) for i in range(k)}
    return Aliasing(len(x), regular, min(map(len, words)) if regular and words else None, words, tuple(chains),
                    partial)


def _main_by_pair(x: np.ndarray) -> dict[tuple[int, tuple[int, int]], float]:
    """Each main effect column's inner product with each two-factor interaction column not involving it."""
    k = x.shape[1]
    return {(i, pair): float(x[:, i] @ (x[:, pair[0]] * x[:, pair[1]]))
            for i in range(k) for pair in itertools.combinations(range(k), 2) if i not in pair}


def describe(axes: dict[str, list[Any]], design: DesignSpec, shown: int = 3) -> list[str]:
    """What `ablatrix list` says of a two-level design: the factor letters, runs, resolution, the
    defining relation and each alias chain (terms of up to `shown` factors)."""
    alias = aliasing(design, len(axes))
    lines = ["factors: " + ", ".join(f"{letter} = {axis} ({values[0]} / {values[1]})" for (axis, values), letter
                                     in zip(axes.items(), letters(axes).values()))]
    full = 2 ** len(axes)
    if alias.regular and alias.resolution is None:
        lines.append(f"{alias.runs} configurations: the full factorial of {full}, nothing aliased")
    elif alias.regular:
        lines.append(f"{alias.runs} configurations of the {full} of the full factorial, resolution "
                     f"{ROMAN.get(alias.resolution, alias.resolution)}; defining relation I = "
                     + " = ".join(alias.defining))
    else:
        worst = max(alias.partial.values())
        lines.append(f"{alias.runs} configurations; every main effect is partially aliased with two-factor "
                     f"interactions not involving it (correlation up to {worst:.2f}): a screen, not an estimate "
                     "of interactions")
    aliased = [c for c in alias.chains if len(c) > 1 and len(c[0]) <= 2]
    lines += ["alias chains (terms of up to three factors):"] + [
        "  " + " = ".join(t for t in chain if len(t) <= shown) for chain in aliased] if aliased else []
    return lines
