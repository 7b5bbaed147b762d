"""The seeding file of `run --until-decided` (`seeding.json` in the report folder): the
sequential design fixed before the first added seed, the looks, and why seeding stopped. Written
by `adaptive`, read by the report, which analyses records seeded on demand sequentially.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from .spec import Grid
from .boundaries import Design


SEEDING_FILE = "seeding.json"  # what the last `run --until-decided` did, written by `adaptive`


def report_dir(grids: Sequence[Grid], results: Path) -> Path:
    """<results>/<grid> for one grid, <results>/<grid1>+<grid2>... for several together."""
    return Path(results) / "+".join(g.name for g in grids)


def seeding_state(grids: Sequence[Grid], results: Path) -> dict[str, Any]:
    """What the last `run --until-decided` of these grids wrote to seeding.json ({} if none)."""
    seeding = report_dir(grids, results) / SEEDING_FILE
    return json.loads(seeding.read_text(encoding="utf-8")) if seeding.exists() else {}


def design_of(grids: Sequence[Grid], state: dict[str, Any]) -> Design | None:
    """The sequential design of the grids' records when `run --until-decided` made them (its
    seeding.json `state`), else None: a fixed seed list is analysed as a fixed sample."""
    if not state:
        return None
    stored = state.get("design")
    if stored is None:  # written before designs were stored: the one that run followed
        return new_design(grids)
    return Design(stored["first_look"], stored["max_seeds"], tuple(stored["seed_order"]))


def design_record(design: Design) -> dict[str, Any]:
    """A design as seeding.json keeps it, for `design_of` to read back."""
    return {"method": design.METHOD, "first_look": design.first_look, "max_seeds": design.max_seeds,
            "seed_order": list(design.order)}


def new_design(grids: Sequence[Grid]) -> Design:
    """A look at every seed count from the grids' own seeds to their max_seeds, seeds in the order
    `run --until-decided` adds them."""
    order = tuple(dict.fromkeys(s for g in grids for s in (*g.seeds, *g.extra_seeds)))
    return Design(min(len(g.seeds) for g in grids), max(len(g.seeds) + len(g.extra_seeds) for g in grids), order)
