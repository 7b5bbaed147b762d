"""Executors train the cells that have no finished record and store one record per cell.

A record is written only when its cell ends (done or failed), atomically, so Ctrl-C or a crash
loses at most the cells in progress and the next `run` trains only what is missing. A cell is
claimed before it trains, so concurrent runners on one results folder never train it twice.

The `local` executor runs cells one after another, or in `workers` processes at once: on CPU
each process gets cores/workers torch threads (small models scale better over processes than over
threads); on CUDA several processes share each GPU (`--runs-per-gpu`), since one small CNN leaves
a GPU mostly idle.
"""
from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm import tqdm

from .data import DATASETS, load_splits
from .errors import AblatrixError
from .registry import Registry
from .spec import Cell, Grid, import_plugins
from .store import ResultStore, environment
from .train import Execution, train_run


@dataclass(frozen=True)
class RunOptions:
    """Where and how cells run; none of it is part of a run's identity (records store it)."""

    device: torch.device
    data_root: Path
    execution: Execution = Execution()
    workers: int = 1
    plugins: tuple[str, ...] = ()  # imported by worker processes, which start with built-ins only
    retry_failed: bool = False  # train cells whose record says `failed` again


@dataclass(frozen=True)
class Summary:
    trained: int
    failed: int
    skipped: int  # finished before this run (or failed, without --retry-failed)
    elsewhere: int = 0  # claimed by another runner, or finished by one while this run went on


Todo = list[tuple[Cell, ResultStore]]


def resolve_device(name: str | None) -> torch.device:
    """`None` -> CUDA when available, else CPU; an explicit device must exist."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AblatrixError(f"--device {name!r}: expected cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise AblatrixError(f"--device {name!r}: expected cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AblatrixError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise AblatrixError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def pending(grids: Sequence[Grid], results: Path, retry_failed: bool = False) -> Todo:
    """Cells without a record; with `retry_failed`, also those whose record says `failed`."""
    todo = []
    for grid in grids:
        store = ResultStore(results, grid.name)
        for cell in grid.cells:
            record = store.get(cell.run_id)
            if record is None or (retry_failed and record["status"] == "failed"):
                todo.append((cell, store))
    return todo


def grid_status(grid: Grid, results: Path) -> tuple[Counter, list[str]]:
    """Counts of done | failed (from records) | running (claimed by a live process) | pending
    cells, and the stored run ids no cell of the grid has any more (the grid was edited)."""
    store = ResultStore(results, grid.name)
    records = store.records()
    counts = Counter(records[c.run_id]["status"] if c.run_id in records
                     else "running" if store.claim_alive(c.run_id) else "pending" for c in grid.cells)
    ids = {cell.run_id for cell in grid.cells}
    return counts, [run_id for run_id in records if run_id not in ids]


def run_cell(cell: Cell, options: RunOptions,
             on_epoch: Callable[[dict[str, float]], None] = lambda row: None) -> dict[str, Any]:
    """Train one cell and return its full record, status `done` or `failed` with the reason."""
    started = datetime.now(timezone.utc)
    clock = time.perf_counter()
    record: dict[str, Any] = {
        "run_id": cell.run_id, "grid": cell.grid, "variant": cell.variant, "axes": cell.axes,
        "dataset": cell.config.dataset, "seed": cell.config.seed, "config": cell.config.to_dict(),
        "params": cell.params, **environment(options.device),
        "execution": {**asdict(options.execution), "workers": options.workers},
        "started_at": started.isoformat()}
    try:
        data = load_splits(cell.config.dataset, cell.config.train.val_fraction, options.device,
                           options.data_root)
        record.update(train_run(cell.config, data, options.device, options.execution, on_epoch),
                      status="done")
    except Exception as exc:  # any failure of one cell is recorded and the grid goes on
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                      traceback=traceback.format_exc())
    record["wall_seconds"] = time.perf_counter() - clock
    return record


def train_claimed(cell: Cell, store: ResultStore, options: RunOptions,
                  on_epoch: Callable[[dict[str, float]], None] = lambda row: None) -> str:
    """Claim, train and store one cell; return its status, or `elsewhere` if another runner has it.

    Two runners (or workers) that list the same pending cell never both train it: the claim is
    atomic, and a record that appeared since the cell was listed is respected.
    """
    if not store.claim(cell.run_id):
        return "elsewhere"
    try:
        record = store.get(cell.run_id)
        if record is not None and (record["status"] == "done" or not options.retry_failed):
            return "elsewhere"

        def beat(row: dict[str, float]) -> None:
            store.heartbeat(cell.run_id)
            on_epoch(row)
        record = run_cell(cell, options, beat)
        store.put(record)
        if record["status"] != "done":
            tqdm.write(f"failed: {cell.label()} ({record['error']})")
        return record["status"]
    finally:
        store.release(cell.run_id)


def run_sequential(todo: Todo, options: RunOptions, bar: tqdm) -> list[str]:
    statuses = []
    for cell, store in todo:
        bar.set_description(cell.label())
        statuses.append(train_claimed(cell, store, options, lambda row: bar.set_postfix(
            epoch=row["epoch"], val_acc=f"{row['val_accuracy']:.3f}")))
        bar.update()
    return statuses


_WORKER_DEVICE: torch.device | None = None


def _start_worker(plugins: tuple[str, ...], threads: int, devices: Any) -> None:
    global _WORKER_DEVICE
    import_plugins(plugins)  # spawned processes start with only the built-in registries
    torch.set_num_threads(threads)
    _WORKER_DEVICE = torch.device(devices.get())


def _work(cell: Cell, store: ResultStore, options: RunOptions) -> str:
    return train_claimed(cell, store, replace(options, device=_WORKER_DEVICE))


def run_parallel(todo: Todo, options: RunOptions, bar: tqdm) -> list[str]:
    """Cells in `options.workers` spawned processes, each with its own device and thread share."""
    ctx = multiprocessing.get_context("spawn")  # fork after torch has run threads can deadlock
    devices = ctx.Queue()  # handed to each worker as it starts
    if options.device.type == "cuda" and options.device.index is None:
        gpus = [f"cuda:{i % torch.cuda.device_count()}" for i in range(options.workers)]
    else:
        gpus = [str(options.device)] * options.workers
    for device in gpus:
        devices.put(device)
    threads = max(1, available_cores() // options.workers) if options.device.type == "cpu" else 1
    statuses = []
    pool = ProcessPoolExecutor(options.workers, ctx, _start_worker, (options.plugins, threads, devices))
    try:
        running = {pool.submit(_work, cell, store, options) for cell, store in todo}
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                statuses.append(future.result())
                bar.update()
    finally:  # on Ctrl-C: drop queued cells; running ones end with their processes
        pool.shutdown(wait=True, cancel_futures=True)
    return statuses


def run_local(todo: Todo, options: RunOptions) -> Summary:
    with tqdm(total=len(todo), unit="run", disable=None, dynamic_ncols=True) as bar:
        run = run_parallel if options.workers > 1 and len(todo) > 1 else run_sequential
        statuses = run(todo, options, bar)
    return Summary(trained=statuses.count("done"), failed=statuses.count("failed"), skipped=0,
                   elsewhere=statuses.count("elsewhere"))


EXECUTORS: Registry[Callable[[Todo, RunOptions], Summary]] = Registry("executor")
EXECUTORS.register("local")(run_local)


def run_grids(grids: Sequence[Grid], results: Path, options: RunOptions,
              executor: str = "local") -> Summary:
    """Train every cell of `grids` that has no finished record in `results`.

    Every dataset a pending cell needs is loaded first, so missing files stop the run before
    anything trains (AblatrixError), rather than failing each cell in turn.
    """
    run = EXECUTORS.lookup(executor)
    options = replace(options, plugins=tuple(dict.fromkeys(p for g in grids for p in g.plugins)))
    todo = pending(grids, results, options.retry_failed)
    for dataset in dict.fromkeys(cell.config.dataset for cell, _ in todo):
        DATASETS[dataset].load(options.data_root)
    summary = run(todo, options)
    total = sum(len(g.cells) for g in grids)
    return Summary(summary.trained, summary.failed, total - len(todo), summary.elsewhere)
