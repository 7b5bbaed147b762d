"""Scheduling: from stored records to the work still to do, grouped into units.

A unit is what one worker trains at once: the cells of one training (they differ only in how the
trained model is measured), or with --pack, single-cell trainings of one shape fused into one
model. Nothing here trains or claims; it reads records and groups cells.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from .packed import pack_key, pack_size
from .spec import Cell, Grid
from .store import ResultStore

Todo = list[tuple[Cell, ResultStore]]


@dataclass(frozen=True)
class Job:
    """A cell handed to a worker, with the system failures (dead worker or node) of its earlier attempts."""

    cell: Cell
    store: ResultStore
    earlier: tuple[str, ...] = ()

    def again(self, error: str) -> "Job":
        return Job(self.cell, self.store, (*self.earlier, error))


Unit = tuple[Job, ...]


@dataclass(frozen=True)
class Summary:
    trained: int
    failed: int
    skipped: int  # finished before this run (or failed, without --retry-failed)
    elsewhere: int = 0  # claimed by another runner, or finished by one while this run went on
    trainings: int = 0  # the distinct trainings of the cells this run had to train (`trainings`)

    @staticmethod
    def of(statuses: list[str]) -> "Summary":
        """What an executor did with its cells (`run_grids` adds the skipped ones)."""
        return Summary(statuses.count("done"), statuses.count("failed"), 0, statuses.count("elsewhere"))


def pending(grids: Sequence[Grid], results: Path, retry_failed: bool = False) -> Todo:
    """Cells without a record; with `retry_failed`, also those whose record says `failed`. Dead
    claims of done cells are removed on the way (`ResultStore.release_dead_claims`)."""
    todo = []
    for grid in grids:
        store = ResultStore(results, grid.name, grid.path.resolve())  # resolved: Ray workers have another cwd
        records = store.records()
        store.release_dead_claims(records)
        for cell in grid.cells:
            record = records.get(cell.run_id)
            if record is None or (retry_failed and record["status"] == "failed"):
                todo.append((cell, store))
    return todo


@dataclass(frozen=True)
class GridStatus:
    counts: Counter  # done | failed (from records) | running (claimed by a live process) | pending
    stale: list[str]  # stored run ids that no cell of the grid has any more (the grid was edited)
    damaged: list[Path]  # records moved aside because they could not be read
    added: int  # cells of seeds beyond the grid's `seeds` that have records (run --until-decided)
    running: list[tuple[Cell, str, float, str]]  # cells in training: owner (host:pid), seconds, epoch ('3/40')


def grid_status(grid: Grid, results: Path) -> GridStatus:
    """Where every cell of `grid` stands in `results`."""
    store = ResultStore(results, grid.name)
    records = store.records()
    cells = grid.stored_cells(records)
    states = {c.run_id: records[c.run_id]["status"] if c.run_id in records
              else "running" if store.claim_alive(c.run_id) else "pending" for c in cells}
    ids = {cell.run_id for cell in (*grid.cells, *grid.extra_cells)}
    running = [(cell, *store.claim_info(cell.run_id)) for cell in cells if states[cell.run_id] == "running"]
    return GridStatus(Counter(states.values()), [run_id for run_id in records if run_id not in ids], store.damaged(),
                      len(cells) - len(grid.cells), running)


def one_training(cells: Sequence[Cell]) -> bool:
    """Whether a unit's cells are the measurements of one training (else they are a pack)."""
    return len({c.config.training_id for c in cells}) == 1


def trainings(todo: Todo) -> list[Unit]:
    """The pending cells grouped by training (`RunConfig.training_id`): each group trains once."""
    groups: dict[tuple[str, str], list[Job]] = {}
    for cell, store in todo:
        groups.setdefault((cell.grid, cell.config.training_id), []).append(Job(cell, store))
    return [tuple(jobs) for jobs in groups.values()]


def units(todo: Todo, pack: int, device: torch.device) -> list[Unit]:
    """The pending cells as units: the cells of one training together; with `pack` (0: as many as
    fit, `pack_size`), single-cell trainings in packs of up to `pack` cells of one grid and pack
    key, as even in size as their number allows; cells that cannot be fused go one training at a
    time, said once."""
    shared = trainings(todo)
    if pack == 1:
        return shared
    groups: dict[tuple[str, str | None], list[Job]] = {}
    alone: list[Unit] = []
    for unit in shared:
        key = pack_key(unit[0].cell.config) if len(unit) == 1 else None
        if key is None:
            alone.append(unit)
        else:
            groups.setdefault((unit[0].cell.grid, key), []).append(unit[0])
    if alone:
        models = sorted({job.cell.config.model.name for unit in alone for job in unit})
        tqdm.write(f"--pack: {sum(map(len, alone))} cell(s) train unpacked (model {', '.join(models)}; only "
                   "convnet cells with a training of their own, eval-mode evaluation, and adam, adamw or sgd "
                   "without optimizer_args, schedule or warm-up fuse)")
    packed: list[Unit] = []
    for jobs in groups.values():
        size = pack or pack_size(jobs[0].cell.config, device)
        count = math.ceil(len(jobs) / size)
        bounds = [round(i * len(jobs) / count) for i in range(count + 1)]
        packed += [tuple(jobs[a:b]) for a, b in zip(bounds, bounds[1:])]
    return packed + alone
