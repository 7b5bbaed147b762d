"""Executors train the cells that have no finished record and store one record per cell.

A record is written only when its cell ends (done or failed), atomically, so Ctrl-C or a crash
loses at most the cell in progress and the next `run` trains only what is missing.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm import tqdm

from .data import DATASETS, load_splits
from .errors import AblatrixError
from .registry import Registry
from .spec import Cell, Grid
from .store import ResultStore, environment
from .train import train_run


@dataclass(frozen=True)
class RunOptions:
    """Where and how cells run; none of it is part of a run's identity."""

    device: torch.device
    data_root: Path


@dataclass(frozen=True)
class Summary:
    trained: int
    failed: int
    skipped: int


def resolve_device(name: str | None) -> torch.device:
    """`None` -> CUDA when available, else CPU; an explicit device must exist."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AblatrixError(f"--device {name!r}: expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AblatrixError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise AblatrixError(f"--device {name!r}: expected cpu, cuda or cuda:N")
    return device


def pending(grids: Sequence[Grid], results: Path) -> list[tuple[Cell, ResultStore]]:
    """Cells without a finished record; failed cells are tried again."""
    todo = []
    for grid in grids:
        store = ResultStore(results, grid.name)
        for cell in grid.cells:
            record = store.get(cell.run_id)
            if record is None or record["status"] != "done":
                todo.append((cell, store))
    return todo


def run_cell(cell: Cell, options: RunOptions,
             on_epoch: Callable[[dict[str, float]], None] = lambda row: None) -> dict[str, Any]:
    """Train one cell and return its full record, status `done` or `failed` with the reason."""
    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    record: dict[str, Any] = {
        "run_id": cell.run_id, "grid": cell.grid, "variant": cell.variant, "axes": cell.axes,
        "dataset": cell.config.dataset, "seed": cell.config.seed, "config": cell.config.to_dict(),
        "params": cell.params, **environment(options.device), "started_at": started.isoformat()}
    try:
        data = load_splits(cell.config.dataset, cell.config.train.val_fraction, options.device,
                           options.data_root)
        record.update(train_run(cell.config, data, options.device, on_epoch), status="done")
    except Exception as exc:  # any failure of one cell is recorded and the grid goes on
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc())
    record["wall_seconds"] = time.perf_counter() - clock
    return record


def run_sequential(todo: list[tuple[Cell, ResultStore]], options: RunOptions) -> Summary:
    failed = 0
    with tqdm(total=len(todo), unit="run", disable=None, dynamic_ncols=True) as bar:
        for cell, store in todo:
            bar.set_description(cell.label())
            record = run_cell(cell, options, lambda row: bar.set_postfix(
                epoch=row["epoch"], val_acc=f"{row['val_accuracy']:.3f}"))
            store.put(record)
            if record["status"] != "done":
                failed += 1
                tqdm.write(f"failed: {cell.label()} ({record['error']})")
            bar.update()
    return Summary(trained=len(todo) - failed, failed=failed, skipped=0)


EXECUTORS: Registry[Callable[[list[tuple[Cell, ResultStore]], RunOptions], Summary]] = \
    Registry("executor")
EXECUTORS.register("local")(run_sequential)


def run_grids(grids: Sequence[Grid], results: Path, options: RunOptions,
              executor: str = "local") -> Summary:
    """Train every cell of `grids` that has no finished record in `results`.

    Every dataset a pending cell needs is loaded first, so missing files stop the run before
    anything trains (AblatrixError), rather than failing each cell in turn.
    """
    run = EXECUTORS.lookup(executor)
    todo = pending(grids, results)
    for dataset in dict.fromkeys(cell.config.dataset for cell, _ in todo):
        DATASETS[dataset].load(options.data_root)
    summary = run(todo, options)
    total = sum(len(g.cells) for g in grids)
    return Summary(summary.trained, summary.failed, skipped=total - len(todo))
