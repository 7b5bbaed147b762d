"""Seeds on demand: train more seeds only where an effect is still undecided.

`run_until_decided` trains a grid's own seeds, computes the report's verdicts, and for every
undecided main effect adds the next seed to exactly the cells its pairs need (every configuration
on either side of the comparison, so the new seed completes its pairs), trains that round as one
batch with the chosen executor, and repeats until every effect is decided, the grid's `max_seeds`
is reached for what is still open, or the `max_cells` budget is spent. (Stopping an effect early because its
seeds estimate exceeds `max_seeds` was tried and dropped: on the quickstart it gave up on effects
that 10 seeds do decide; see benchmarks/README.md.) Added seeds are ordinary
cells (same run ids, records, claims and resume), so a second call continues from what is stored.
Interactions and per-class effects are reported, not chased.

Every round is a look at the verdicts, so they come from the sequential analysis
(`stats.Design`): its design (the first look, `max_seeds`, the seed order) is written to
seeding.json before the first seed is added, with the seed count of each effect at each look,
and a later call or `report` continues that design instead of starting a new one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from .executors import executor_for, run_grids
from .runner import RunOptions
from .errors import AblatrixError
from .effects import effect_tables, report_settings
from .frames import collect, tuned_views
from .sequential import SEEDING_FILE, design_of, design_record, new_design, report_dir, seeding_state
from .spec import Cell, Grid, axis_value
from .boundaries import Design
from .store import ResultStore, atomic_write_text

Config = tuple  # (grid, variant, axis values..., dataset): a configuration on one dataset


@dataclass(frozen=True)
class Plan:
    """What the verdicts ask for next: the cells of the next round, and the effects still open."""

    cells: tuple[Cell, ...]  # each with `reason`: the effects it is added for
    undecided: tuple[str, ...]  # every undecided main effect, capped or not
    capped: tuple[str, ...]  # undecided ones whose configurations have every seed up to max_seeds
    stored: int  # cells with a record, added seeds included
    possible: int  # cells up to max_seeds
    looks: dict[str, int] = field(default_factory=dict)  # each main effect's seed count at this look


@dataclass(frozen=True)
class Outcome:
    reason: str  # "decided" | "cap" | "budget" | "elsewhere" (another runner holds the round's cells)
    trained: int  # cells trained by this call, the grid's own seeds included
    rounds: int
    plan: Plan  # the state it stopped in

    @property
    def stopped(self) -> str:
        """Why seeding stopped, for the terminal and the report."""
        if self.reason == "decided":
            return f"all effects decided after {self.plan.stored:,} of {self.plan.possible:,} possible runs"
        if self.reason == "cap":
            return f"seed cap (max_seeds) reached for: {', '.join(self.plan.capped)}"
        if self.reason == "budget":
            return (f"--max-cells budget spent ({self.trained} trained); still undecided: "
                    f"{', '.join(self.plan.undecided)}")
        return "another runner holds the next round's cells; run again to continue"


def _config(values: dict[str, Any] | Cell, axes: Sequence[str]) -> Config:
    if isinstance(values, Cell):
        return (values.grid, values.variant, *(axis_value(values.axes[a]) if a in values.axes else "—"
                                               for a in axes), values.config.dataset)
    return (values["grid"], values["variant"], *(values[a] for a in axes), values["dataset"])


def plan(grids: Sequence[Grid], results: Path, design: Design) -> Plan:
    """The next round for the stored records of `grids` (nothing if every effect is decided)."""
    res = collect(grids, results, write=False)
    stored = int((res.runs["status"] != "pending").sum())
    possible = sum(len(g.cells) + len(g.extra_cells) for g in grids)
    if res.done.empty:
        return Plan((), (), (), stored, possible)
    analysed = tuned_views(res)[0] if any(g.tune for g in grids) else res  # a tuned grid: its selected runs
    deltas = effect_tables(analysed, report_settings(grids), design)["deltas"]
    looks = {_effect(row): int(row.n) for row in deltas.itertuples(index=False)}
    # Cells are told apart by their axes and tuned fields: a seed added to a configuration trains
    # every candidate of it.
    axes = list(dict.fromkeys(a for g in grids for a in g.cell_keys))
    cells = {(_config(c, axes), c.config.seed): c for g in grids for c in (*g.cells, *g.extra_cells)}
    seeds = list(dict.fromkeys(s for g in grids for s in (*g.seeds, *g.extra_seeds)))
    have: dict[Config, set[int]] = {}  # seeds with a record (failed ones too: not chased again)
    for row in res.runs[res.runs["status"] != "pending"].to_dict("records"):
        have.setdefault(_config(row, axes), set()).add(row["seed"])
    added: dict[str, tuple[Cell, list[str]]] = {}
    undecided, capped = [], []
    for row in deltas[deltas["verdict"] == "undecided"].itertuples(index=False):
        effect = _effect(row)
        undecided.append(effect)
        sides = res.runs[res.runs[row.factor].isin([row.baseline, row.level]) & (res.runs["dataset"] == row.dataset)]
        configs = {_config(r, axes) for r in sides.to_dict("records")}
        seed = next((s for s in seeds if any(s not in have.get(c, ()) for c in configs)), None)
        if seed is None:
            capped.append(effect)
            continue
        for config in configs:
            if seed not in have.get(config, ()) and (config, seed) in cells:  # not excluded
                cell = cells[config, seed]
                added.setdefault(cell.run_id, (cell, []))[1].append(effect)
    batch = tuple(replace(cell, reason="; ".join(effects)) for cell, effects in added.values())
    return Plan(batch, tuple(undecided), tuple(capped), stored, possible, looks)


def _effect(row: Any) -> str:
    return f"{row.factor} {row.comparison} on {row.dataset}"


def run_until_decided(grids: Sequence[Grid], results: Path, options: RunOptions,
                      max_cells: int | None = None) -> Outcome:
    """Train the grids, then add seeds round by round where effects are undecided (module doc);
    the outcome is also written to <report folder>/seeding.json for the report to state."""
    path = report_dir(grids, results) / SEEDING_FILE
    state = seeding_state(grids, results)
    wanted = new_design(grids)
    design = design_of(grids, state) or wanted
    if wanted.max_seeds > design.max_seeds:
        raise AblatrixError(
            f"these results were seeded on demand with a sequential design for max_seeds = {design.max_seeds} "
            f"({path}); its error rate holds only up to that cap, so max_seeds = {wanted.max_seeds} cannot extend it. "
            "Use a new --results folder to start a new design")
    looks: dict[str, list[int]] = state.get("looks", {})
    state = {**state, "design": design_record(design), "looks": looks}
    atomic_write_text(path, json.dumps(state, indent=1) + "\n")  # the design is fixed before any seed is added
    with executor_for(grids, options) as executor:  # one set of workers for every round
        trained = run_grids(grids, results, options, executor).trained
        rounds = 0
        while True:
            step = plan(grids, results, design)
            for effect, n in step.looks.items():
                if n not in looks.setdefault(effect, []):
                    looks[effect].append(n)
            if not step.cells:
                outcome = Outcome("cap" if step.undecided else "decided", trained, rounds, step)
                break
            if max_cells is not None and trained + len(step.cells) > max_cells:
                outcome = Outcome("budget", trained, rounds, step)
                break
            summary = executor.run([(cell, ResultStore(results, cell.grid)) for cell in step.cells])
            trained += summary.trained
            rounds += 1
            if summary.trained + summary.failed == 0:
                outcome = Outcome("elsewhere", trained, rounds, step)
                break
    state = {**state, "stopped": outcome.stopped, "reason": outcome.reason, "rounds": rounds,
             "trained_by_this_run": trained, "runs_stored": outcome.plan.stored,
             "runs_possible": outcome.plan.possible,
             "undecided": list(outcome.plan.undecided), "at_seed_cap": list(outcome.plan.capped),
             "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_text(path, json.dumps(state, indent=1) + "\n")
    return outcome
