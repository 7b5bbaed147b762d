"""Executors train the cells that have no finished record and store one record per cell.

A record is written only when its cell ends (done or failed), atomically, so Ctrl-C or a crash
loses at most the cells in progress and the next `run` trains only what is missing. A cell is
claimed before it trains, so concurrent runners on one results folder never train it twice.

The `local` executor runs cells one after another, or in `workers` processes at once: on CPU
each process gets cores/workers torch threads (small models scale better over processes than over
threads); on CUDA several processes share each GPU (`--runs-per-gpu`), since one small CNN leaves
a GPU mostly idle. The `ray` executor makes each cell a Ray task on a cluster (or a local Ray)
that asks for a share of a GPU or some CPUs; the driver claims cells and writes their records.
"""
from __future__ import annotations

import math
import multiprocessing
import signal
import socket
import sys
import time
import traceback
from collections import Counter, deque
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm import tqdm

from .data import DATASETS, load_splits
from .datasets import register_named
from .cores import Runner, threads_for
from .progress import PROGRESS_SECONDS, Progress
from .errors import AblatrixError
from .registry import Registry
from .spec import Cell, Grid, import_plugins
from .config import SCHEMA
from .store import ResultStore, environment
from .packed import pack_id, pack_key, pack_size, train_pack
from .train import Checkpoint, Execution, train_cells


@dataclass(frozen=True)
class RunOptions:
    """Where and how cells run; none of it is part of a run's identity (records store it)."""

    device: torch.device  # with the ray executor: the kind of device each task gets
    data_root: Path
    fp32: bool = False  # CUDA: no mixed precision, no channels_last
    compile: bool = False
    executor: str = "local"
    workers: int = 1  # local: cells at once, in that many processes
    address: str | None = None  # ray: the cluster to join; None starts a local Ray
    gpus_per_run: float = 0.0  # ray: GPU share each cell requests (0: CPU cells)
    cpus_per_run: int = 1  # ray: CPUs each cell requests, and its torch threads
    plugins: tuple[str, ...] = ()  # imported by worker processes, which start with built-ins only
    sources: tuple[tuple[str, str], ...] = ()  # datasets named by path (`Grid.sources`), read by workers too
    retry_failed: bool = False  # train cells whose record says `failed` again
    max_retries: int = 2  # times a cell is trained again after its worker process or node died
    pack: int = 1  # local: train up to this many cells of one shape as one fused model; 0: auto
    # Epoch checkpoints: written at most every `checkpoint_seconds` (0: every epoch) under
    # `checkpoint_dir`/<grid>/ (default: the results folder's <grid>/checkpoints/ with the local
    # executor; none with Ray unless a folder every node sees is given).
    checkpoint_seconds: float = 10.0
    checkpoint_dir: Path | None = None

    @property
    def execution(self) -> Execution:
        """Computed where the cell runs: a Ray driver without a GPU cannot ask about bf16."""
        return Execution(compile=self.compile) if self.fp32 else Execution.default_for(self.device, self.compile)

    def placement(self) -> dict[str, Any]:
        """What a record says about how its cell was scheduled."""
        if self.executor == "ray":
            return {"executor": "ray", "address": self.address, "gpus_per_run": self.gpus_per_run,
                    "cpus_per_run": self.cpus_per_run}
        return {"executor": self.executor, "workers": self.workers}


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


Todo = list[tuple[Cell, ResultStore]]
# A cell handed to a worker, with the system failures (dead worker or node) of its earlier attempts.
Job = tuple[Cell, ResultStore, tuple[str, ...]]
Unit = tuple[Job, ...]  # what one worker trains at once: one cell, or a pack of cells fused into one model


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


def cell_record(cell: Cell, earlier: Sequence[str] = ()) -> dict[str, Any]:
    """The part of a record that says which cell it is, and how many attempts it took."""
    return {"run_id": cell.run_id, "schema": SCHEMA, "grid": cell.grid, "variant": cell.variant,
            "axes": cell.axes, "dataset": cell.config.dataset, "seed": cell.config.seed,
            "config": cell.config.to_dict(), "params": cell.params, "attempts": len(earlier) + 1,
            **({"system_failures": list(earlier)} if earlier else {}),
            **({"added_for": cell.reason} if cell.reason else {})}


OOM_HINT = ("the cell needs more GPU memory than was free: train fewer cells per GPU "
            "(--runs-per-gpu, --gpus-per-run) or use a smaller train.batch_size")


def _record_head(cell: Cell, options: RunOptions, earlier: Sequence[str], started: datetime,
                 execution: Execution) -> dict[str, Any]:
    return {**cell_record(cell, earlier), **environment(options.device),
            "execution": {**asdict(execution), **options.placement()}, "started_at": started.isoformat()}


def _failure(exc: BaseException) -> dict[str, str]:
    """A failed record's error and traceback; out of memory gets a hint, since retrying the same way fails."""
    detail = "".join(traceback.format_exception(exc))
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return {"status": "failed", "error": f"OutOfMemoryError: {str(exc).splitlines()[0]} ({OOM_HINT})",
                "traceback": detail}
    return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": detail}


def _training(cells: Sequence[Cell], wall: float) -> dict[str, Any]:
    """What a record says of the training it measured: its id, every cell measured from it in this
    run (itself included), and the training's whole time (the record's `wall_seconds` is its share)."""
    return {"id": cells[0].config.training_id, "cells": [c.run_id for c in cells], "wall_seconds": wall}


def one_training(cells: Sequence[Cell]) -> bool:
    """Whether a unit's cells are the measurements of one training (else they are a pack)."""
    return len({c.config.training_id for c in cells}) == 1


def unit_checkpoint(cells: Sequence[Cell], store: ResultStore | None, options: RunOptions) -> Path | None:
    """Where the training of a unit (or a pack) keeps its epoch checkpoint; None where there is no
    such folder (a Ray task without --checkpoint-dir: `store` is None there)."""
    name = f"{cells[0].config.training_id if one_training(cells) else pack_id([c.config for c in cells])}.pt"
    if options.checkpoint_dir is not None:
        return options.checkpoint_dir / cells[0].grid / name
    return None if store is None else store.dir / "checkpoints" / name


def run_training(cells: Sequence[Cell], options: RunOptions,
                 on_epoch: Callable[[dict[str, float]], None] = lambda row: None,
                 earlier: Sequence[Sequence[str]] = (), checkpoint: Path | None = None) -> list[dict[str, Any]]:
    """Train the cells of one training once and measure each its own way; one full record per
    cell, status `done` or `failed` with the reason (a failed training fails every cell of it).

    A done record carries its tested weights under "weights" (for `store_record` to store).
    """
    started, clock, execution = datetime.now(timezone.utc), time.perf_counter(), options.execution
    records = [_record_head(cell, options, past, started, execution)
               for cell, past in zip(cells, earlier or [()] * len(cells))]
    try:
        data = load_splits(cells[0].config.dataset, cells[0].config.train.val_fraction, options.device,
                           options.data_root, cells[0].config.train.standardize)
        results, weights = train_cells([c.config for c in cells], data, options.device, execution, on_epoch,
                                       checkpoint and Checkpoint(checkpoint, options.checkpoint_seconds))
        for record, result in zip(records, results):
            record.update(result, status="done", weights={result["tested"]["weights"]: weights[result["tested"]["weights"]]})
    except Exception as exc:  # any failure of one training is recorded and the grid goes on
        for record in records:
            record.update(_failure(exc))
    finally:
        torch.cuda.empty_cache()  # an out-of-memory cell leaves nothing cached for the next one
    wall = time.perf_counter() - clock
    for record in records:
        record.update(training=_training(cells, wall), wall_seconds=wall / len(cells))
    return records


def run_pack(cells: Sequence[Cell], options: RunOptions,
             on_epoch: Callable[[int, dict[str, float]], None] = lambda b, row: None,
             earlier: Sequence[Sequence[str]] = (), checkpoint: Path | None = None) -> list[dict[str, Any]]:
    """Train cells that share a pack key as one fused model; one full record per cell.

    `execution.packed` names the pack's size and the other cells in it; `wall_seconds` is the
    cell's share of the pack's time (the pack's own is `execution.packed.wall_seconds`).
    """
    started, clock, execution = datetime.now(timezone.utc), time.perf_counter(), options.execution
    ids = [c.run_id for c in cells]
    records = [_record_head(cell, options, past, started, execution)
               for cell, past in zip(cells, earlier or [()] * len(cells))]
    for record in records:
        record["execution"]["packed"] = {"size": len(cells), "with": [i for i in ids if i != record["run_id"]]}
    try:
        data = load_splits(cells[0].config.dataset, cells[0].config.train.val_fraction, options.device,
                           options.data_root, cells[0].config.train.standardize)
        results = train_pack([c.config for c in cells], data, options.device, execution, on_epoch,
                             checkpoint and Checkpoint(checkpoint, options.checkpoint_seconds))
        for record, result in zip(records, results):  # a member's failure is its own
            record.update(_failure(result) if isinstance(result, Exception)
                          else {**result[0], "status": "done", "weights": result[1]})
    except Exception as exc:  # the pack as a whole failed (e.g. out of memory): every member did
        for record in records:
            record.update(_failure(exc))
    finally:
        torch.cuda.empty_cache()
    wall = time.perf_counter() - clock
    for cell, record in zip(cells, records):
        record.update(training=_training([cell], wall / len(cells)), wall_seconds=wall / len(cells))
        record["execution"]["packed"]["wall_seconds"] = wall
    return records


def run_unit(cells: Sequence[Cell], options: RunOptions,
             on_epoch: Callable[[int, dict[str, float]], None] = lambda b, row: None,
             earlier: Sequence[Sequence[str]] = (), checkpoint: Path | None = None) -> list[dict[str, Any]]:
    """Train a unit (`units`): the cells of one training, or a pack, resumed from `checkpoint` where
    it holds one. `on_epoch(b, row)`: b is the member whose epoch ended (the whole training's: 0)."""
    if one_training(cells):
        return run_training(cells, options, lambda row: on_epoch(0, row), earlier, checkpoint)
    return run_pack(cells, options, on_epoch, earlier, checkpoint)


def claim_pending(cell: Cell, store: ResultStore, retry_failed: bool) -> bool:
    """Claim a cell that still needs training; False if another runner has it or finished it.

    Two runners (or workers) that list the same pending cell never both train it: the claim is
    atomic, and a record that appeared since the cell was listed is respected.
    """
    if not store.claim(cell.run_id):
        return False
    record = store.get(cell.run_id)
    if record is not None and (record["status"] == "done" or not retry_failed):
        store.release(cell.run_id)
        return False
    return True


def store_record(cell: Cell, store: ResultStore, record: dict[str, Any]) -> str:
    """Store a record (and the weights it tested, which go to the training's weights file)."""
    weights = record.pop("weights", None)
    if weights:
        store.put_weights(record["training"]["id"], weights)
    store.put(record)
    if record["status"] != "done":
        tqdm.write(f"failed: {cell.label()} ({record['error']})")
    return record["status"]


def train_claimed_unit(unit: Unit, options: RunOptions,
                       on_epoch: Callable[[dict[str, float]], None] = lambda row: None) -> list[str]:
    """Claim, train and store a unit: the cells of one training, or a pack of which the cells still
    pending train fused. Each epoch renews the claims of the cells it trained."""
    claimed = [job for job in unit if claim_pending(job[0], job[1], options.retry_failed)]
    statuses = ["elsewhere"] * (len(unit) - len(claimed))
    try:
        if claimed:
            cells = [job[0] for job in claimed]

            renewed = 0  # the epoch whose end renewed the claims

            def beat(b: int, row: dict[str, float]) -> None:
                nonlocal renewed
                if row["epoch"] != renewed:  # once an epoch, every claim: a pack's stopped members' too
                    renewed = row["epoch"]
                    for cell, store, _ in claimed:
                        store.heartbeat(cell.run_id, f"{row['epoch']}/{cell.config.train.epochs}")
                on_epoch(row)
            checkpoint = unit_checkpoint(cells, claimed[0][1], options)
            records = run_unit(cells, options, beat, [job[2] for job in claimed], checkpoint)
            statuses += [store_record(cell, store, record) for (cell, store, _), record in zip(claimed, records)]
            if checkpoint is not None:
                Checkpoint(checkpoint).remove()  # the records hold it all now
    finally:
        for cell, store, _ in claimed:
            store.release(cell.run_id)
    return statuses


def trainings(todo: Todo) -> list[Unit]:
    """The pending cells grouped by training (`RunConfig.training_id`): each group trains once."""
    groups: dict[tuple[str, str], list[Job]] = {}
    for cell, store in todo:
        groups.setdefault((cell.grid, cell.config.training_id), []).append((cell, store, ()))
    return [tuple(jobs) for jobs in groups.values()]


def units(todo: Todo, options: RunOptions) -> list[Unit]:
    """The pending cells as units: the cells of one training together; with --pack, single-cell
    trainings in packs of up to `options.pack` cells of one grid and pack key, as even in size as
    their number allows; cells that cannot be fused go one training at a time, said once."""
    shared = trainings(todo)
    if options.pack == 1:
        return shared
    groups: dict[tuple[str, str | None], list[Job]] = {}
    alone: list[Unit] = []
    for unit in shared:
        key = pack_key(unit[0][0].config) if len(unit) == 1 else None
        if key is None:
            alone.append(unit)
        else:
            groups.setdefault((unit[0][0].grid, key), []).append(unit[0])
    if alone:
        models = sorted({job[0].config.model.name for unit in alone for job in unit})
        tqdm.write(f"--pack: {sum(map(len, alone))} cell(s) train unpacked (model {', '.join(models)}; only "
                   "convnet cells with a training of their own, eval-mode evaluation, and adam, adamw or sgd "
                   "without optimizer_args, schedule or warm-up fuse)")
    packed: list[Unit] = []
    for jobs in groups.values():
        size = options.pack or pack_size(jobs[0][0].config, options.device)
        count = math.ceil(len(jobs) / size)
        bounds = [round(i * len(jobs) / count) for i in range(count + 1)]
        packed += [tuple(jobs[a:b]) for a, b in zip(bounds, bounds[1:])]
    return packed + alone


def system_failure(cell: Cell, options: RunOptions, earlier: tuple[str, ...], error: str) -> bool:
    """Note a dead worker or node under `cell`; True if the cell gets another attempt."""
    attempts = len(earlier) + 1
    if attempts > options.max_retries:
        return False
    tqdm.write(f"retrying: {cell.label()} (attempt {attempts + 1} of {options.max_retries + 1}): {error}")
    return True


def run_sequential(todo: Todo, options: RunOptions, bar: Progress) -> list[str]:
    statuses, threads = [], torch.get_num_threads()
    try:
        for unit in units(todo, options):
            if options.device.type == "cpu":  # this runner's share of the cores, as the training starts
                torch.set_num_threads(threads_for(1))
            kind = "one training" if one_training([job[0] for job in unit]) else "packed"
            bar.set_description(unit[0][0].label() + (f" and {len(unit) - 1} more, {kind}" if len(unit) > 1 else ""))
            statuses += train_claimed_unit(unit, options, lambda row: bar.set_postfix(
                epoch=row["epoch"], val_acc=f"{row['val_accuracy']:.3f}"))
            bar.done([job[0] for job in unit])
    finally:
        torch.set_num_threads(threads)  # a notebook's own setting, as it was
    return statuses


def _worker(conn: Connection, device: str, workers: int, options: RunOptions) -> None:
    """A spawned worker: trains the units (a cell or a pack) the parent sends, one at a time, until
    None, each with its share of the CPU threads (`cores.threads_for`) as the unit starts."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle...
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # ...it stops us so that claims are released
    prepare_worker(options)
    options = replace(options, device=torch.device(device))
    while (unit := conn.recv()) is not None:
        torch.set_num_threads(threads_for(workers) if options.device.type == "cpu" else 1)
        conn.send(train_claimed_unit(unit, options))
    # Done: holding no claim, a SIGTERM (the parent's exit ends daemonic workers still tearing
    # down torch) may end us quietly, not as a SystemExit inside an atexit callback.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass
class _Slot:
    """One worker process and the cell or pack it is training."""

    device: str
    process: BaseProcess
    conn: Connection
    unit: Unit | None = None


def lost_record(cell: Cell, options: RunOptions, earlier: tuple[str, ...], error: str,
                detail: str) -> dict[str, Any]:
    """The record of a cell whose worker died on every attempt: no environment or history to tell."""
    return {**cell_record(cell, earlier), "status": "failed", "execution": options.placement(),
            "error": error, "traceback": detail, "wall_seconds": None}


class LocalExecutor:
    """Cells in this process, or in `options.workers` spawned processes, each with its own device
    and thread share. The workers live until `close` (the executor is a context manager), so the
    rounds of `run --until-decided` pay their start-up once.

    Each worker holds one unit (a training, or a pack with --pack) at a time and the parent knows
    which, so a worker that dies (killed for memory, a crash in native code) costs only its own
    cells' attempt: a new worker takes its place, and the cells are queued again up to
    `max_retries` times before they are recorded failed.
    """

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.slots: list[_Slot] = []
        self.ctx = multiprocessing.get_context("spawn")  # fork after torch has run threads can deadlock
        if options.device.type == "cuda" and options.device.index is None:
            self.devices = [f"cuda:{i % torch.cuda.device_count()}" for i in range(options.workers)]
        else:
            self.devices = [str(options.device)] * options.workers
        self.runner = Runner()

    def __enter__(self) -> "LocalExecutor":
        self.runner.__enter__()  # counted among this machine's runners while it lives (`cores`)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
        self.runner.__exit__()

    def close(self) -> None:
        """Tell the idle workers to exit. They are not joined: their torch teardown (about 1 s)
        need not hold up the caller."""
        for slot in self.slots:
            try:
                slot.conn.send(None)
            except OSError:  # already gone
                pass
        self.slots = []

    def run(self, todo: Todo) -> Summary:
        with Progress([cell for cell, _ in todo]) as bar:
            if self.options.workers > 1 and len(todo) > 1:
                statuses = self._parallel(todo, bar)
            else:
                statuses = run_sequential(todo, self.options, bar)
        return Summary.of(statuses)

    def _start(self, device: str) -> _Slot:
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=_worker, args=(child, device, len(self.devices), self.options), daemon=True)
        process.start()
        child.close()  # the worker's end: when the worker dies, reading ours gives EOFError
        return _Slot(device, process, parent)

    def _parallel(self, todo: Todo, bar: Progress) -> list[str]:
        options, slots = self.options, self.slots
        queue: deque[Unit] = deque(units(todo, options))
        slots += [self._start(device) for device in self.devices[len(slots):len(queue)]]

        def hand_out(slot: _Slot) -> None:
            """Give an idle worker the next unit (a worker that died while idle is replaced first)."""
            slot.unit = queue.popleft() if queue else None
            if slot.unit is not None:
                try:
                    slot.conn.send(slot.unit)
                except OSError:
                    fresh = self._start(slot.device)
                    slots[slots.index(slot)], fresh.unit = fresh, slot.unit
                    fresh.conn.send(fresh.unit)

        statuses = []
        try:
            for slot in list(slots):
                hand_out(slot)
            while busy := {slot.conn: slot for slot in slots if slot.unit}:
                bar.running(len(busy))
                ready = wait(list(busy), timeout=PROGRESS_SECONDS)
                bar.set_postfix()  # a progress line while long trainings run
                for conn in ready:
                    slot = busy[conn]
                    try:
                        statuses += conn.recv()
                        bar.done([job[0] for job in slot.unit])
                    except (EOFError, ConnectionResetError):  # the worker died with its training or pack
                        slot.process.join()
                        code = slot.process.exitcode
                        error = (f"WorkerDied: the worker process training this cell ended with exit code "
                                 f"{code}" + (" (killed by a signal, e.g. for memory)" if code < 0 else ""))
                        retried = []
                        for cell, store, earlier in slot.unit:
                            if not store.claim_alive(cell.run_id):
                                store.release(cell.run_id)
                            if system_failure(cell, options, earlier, error):
                                retried.append((cell, store, (*earlier, error)))
                                continue
                            statuses.append(store_record(cell, store, lost_record(
                                cell, options, earlier, error, "no traceback: the process died")))
                            bar.done([cell])
                        slots[slots.index(slot)] = slot = self._start(slot.device)
                        if retried:
                            queue.append(tuple(retried))
                    hand_out(slot)
        finally:
            # On Ctrl-C or an error, stop the busy workers (and drop them from the pool).
            busy = [slot for slot in slots if slot.unit is not None]
            for slot in busy:
                slot.process.terminate()
            for slot in busy:
                slot.process.join()
                slots.remove(slot)
                for cell, store, _ in slot.unit:
                    if not store.claim_alive(cell.run_id):  # stopped between claiming and its try block
                        store.release(cell.run_id)
        return statuses


HEARTBEAT_SECONDS = 60  # how often the Ray driver renews its claims; well inside STALE_SECONDS


def _ray_unit(cells: Sequence[Cell], options: RunOptions, earlier: Sequence[tuple[str, ...]]) -> list[dict[str, Any]]:
    """A unit (the cells of one training, or a pack) inside a Ray worker, on the GPU share Ray assigned (it sets CUDA_VISIBLE_DEVICES)."""
    import ray
    prepare_worker(options)
    torch.set_num_threads(options.cpus_per_run)
    options = replace(options, device=torch.device("cuda" if options.gpus_per_run else "cpu"))
    records = run_unit(cells, options, earlier=earlier, checkpoint=unit_checkpoint(cells, None, options))
    for record in records:
        record["execution"].update(host=socket.gethostname(), node_id=ray.get_runtime_context().get_node_id())
    return records


def _check_reachable(address: str) -> None:
    """Ray retries an unreachable address for minutes; fail in seconds, with one clear line."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not port.isdigit():  # "auto" and other forms Ray resolves itself
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise AblatrixError(f"--address {address}: no Ray cluster answers there ({exc})") from None


def _largest_node(ray: Any, resource: str) -> float:
    return max((node["Resources"].get(resource, 0) for node in ray.nodes() if node["Alive"]), default=0)


def _join_ray(options: RunOptions) -> bool:
    """Start a local Ray, or join the one at `options.address`; True if this call started Ray."""
    import ray
    if ray.is_initialized():
        return False
    if options.address:
        _check_reachable(options.address)
    try:
        # "local": a fresh Ray of our own; without it Ray joins any cluster it finds running
        # on this machine (or in RAY_ADDRESS), a dead one included.
        ray.init(address=options.address or "local", include_dashboard=False,
                 logging_level="ERROR", configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise AblatrixError(f"--address {options.address}: cannot join the Ray cluster: {exc}") from None
    return True


class RayExecutor:
    """Each cell a Ray task asking for `cpus_per_run` CPUs and `gpus_per_run` of a GPU (`run_ray`).
    Ray is joined (or a local one started) at the first `run` and left (stopped) at `close`, so
    the rounds of `run --until-decided` share one Ray."""

    def __init__(self, options: RunOptions) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise AblatrixError("--executor ray needs Ray: pip install 'ablatrix[ray]'") from None
        self.options = replace(options, data_root=options.data_root.resolve())  # workers have another cwd
        self.joined = self.started = False

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, todo: Todo) -> Summary:
        if not self.joined:
            self.started, self.joined = _join_ray(self.options), True
        return run_ray(todo, self.options, self.started)

    def close(self) -> None:
        import ray
        if self.started:
            ray.shutdown()
        self.joined = self.started = False


def run_ray(todo: Todo, options: RunOptions, owned: bool) -> Summary:
    """Each cell a Ray task asking for `cpus_per_run` CPUs and `gpus_per_run` of a GPU, on the Ray
    this process has joined (`owned`: one it started, and stops on the way out).

    The driver keeps twice as many tasks in flight as the cluster can run at once, claims each
    cell as it submits it (so other runners on the same results share the rest), renews the
    claims while the tasks run, and writes the records the tasks return into the store: workers
    need the data folder and the grid's plugin files (same paths on every node), but not the
    results folder. A task whose worker or node dies (killed for memory, node lost) is submitted
    again, keeping its claim, up to `max_retries` times; an exception raised by training itself is
    recorded `failed` at once (Ray's own retries are off, so the driver decides which is which).
    """
    import ray
    running: dict[Any, Unit] = {}
    held: set[str] = set()  # cells this call claimed (or was claiming), released in `finally`
    try:
        for resource, need in (("CPU", options.cpus_per_run), ("GPU", options.gpus_per_run)):
            have = _largest_node(ray, resource)
            if need > have:
                raise AblatrixError(f"--{resource.lower()}s-per-run {need:g}: the largest node of the "
                                    f"Ray cluster has {have:g} {resource}(s)")
        task = ray.remote(_ray_unit).options(num_cpus=options.cpus_per_run,
                                             num_gpus=options.gpus_per_run, max_retries=0)

        def submit(unit: Unit) -> None:
            running[task.remote([job[0] for job in unit], options, [job[2] for job in unit])] = unit

        def claim(job: Job) -> bool:
            held.add(job[0].run_id)  # before the claim: a Ctrl-C inside it still finds the cell here
            if claim_pending(job[0], job[1], options.retry_failed):
                return True
            held.discard(job[0].run_id)
            return False

        resources = ray.cluster_resources()
        slots = min(resources.get("CPU", 0) // options.cpus_per_run,
                    resources.get("GPU", 0) // options.gpus_per_run if options.gpus_per_run else math.inf)
        in_flight = 2 * max(1, int(slots))  # enough to keep the cluster busy; the rest stay unclaimed
        queue, statuses = deque(units(todo, options)), []
        with Progress([cell for cell, _ in todo]) as bar:
            renewed = time.monotonic()
            while queue or running:
                while queue and len(running) < in_flight:  # claim cells only when submitting them
                    unit = queue.popleft()
                    claimed = tuple(job for job in unit if claim(job))
                    statuses += ["elsewhere"] * (len(unit) - len(claimed))
                    bar.done([job[0] for job in unit if job not in claimed])
                    if claimed:
                        submit(claimed)
                if not running:
                    break
                bar.running(len(running))
                done, _ = ray.wait(list(running), num_returns=1, timeout=min(HEARTBEAT_SECONDS, PROGRESS_SECONDS))
                bar.set_postfix()
                for ref in done:
                    unit = running.pop(ref)
                    try:
                        records = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:  # raised outside training (e.g. unpickling)
                        error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                        records = [lost_record(cell, options, earlier, error, str(exc)) for cell, _, earlier in unit]
                    except ray.exceptions.RayError as exc:  # the worker or its node died
                        error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                        retried, lost = [], []
                        for job in unit:
                            (retried if system_failure(job[0], options, job[2], error) else lost).append(job)
                        if retried:  # they keep their claims
                            submit(tuple((cell, store, (*earlier, error)) for cell, store, earlier in retried))
                        unit = tuple(lost)
                        records = [lost_record(cell, options, earlier, error, str(exc)) for cell, _, earlier in lost]
                    for (cell, store, _), record in zip(unit, records):
                        statuses.append(store_record(cell, store, record))
                        store.release(cell.run_id)
                        held.discard(cell.run_id)
                        bar.done([cell])
                    if unit and (path := unit_checkpoint([job[0] for job in unit], None, options)):
                        Checkpoint(path).remove()  # the records hold it all now
                if time.monotonic() - renewed > HEARTBEAT_SECONDS:
                    renewed = time.monotonic()
                    for unit in running.values():
                        for cell, store, _ in unit:
                            store.heartbeat(cell.run_id)
    finally:  # on Ctrl-C or an error: stop the tasks still running and free their cells
        if not owned:  # a Ray we started goes down whole (at close); a force-cancel that races the
            for ref in running:  # task's completion can abort the driver (a Ray 2.60 CHECK failure)
                ray.cancel(ref)
        # Every claim of this call, not only those of `running`: Ctrl-C can land between a claim
        # and its submit, or between taking a finished task off `running` and storing its record.
        for cell, store in todo:
            if cell.run_id in held:
                store.release_own(cell.run_id)
    return Summary.of(statuses)


# An executor is made from the run's options, trains todo lists with `run` (as many as it is
# given: the rounds of --until-decided) and keeps its workers until `close` (it is a context manager).
EXECUTORS: Registry[Callable[[RunOptions], LocalExecutor | RayExecutor]] = Registry("executor")
EXECUTORS.register("local")(LocalExecutor)
EXECUTORS.register("ray")(RayExecutor)


def with_plugins(grids: Sequence[Grid], options: RunOptions) -> RunOptions:
    """`options` carrying the grids' plugins and datasets named by path, which worker processes
    import and read (`prepare_worker`)."""
    return replace(options, plugins=tuple(dict.fromkeys(p for g in grids for p in g.plugins)),
                   sources=tuple(dict.fromkeys(s for g in grids for s in g.sources)))


def prepare_worker(options: RunOptions) -> None:
    """What a new worker process needs before training: spawned and Ray processes start with only the
    built-in registries."""
    import_plugins(options.plugins)
    for name, path in options.sources:
        register_named(name, path)


def executor_for(grids: Sequence[Grid], options: RunOptions) -> LocalExecutor | RayExecutor:
    """The executor `options.executor` names, its workers carrying the grids' plugins."""
    return EXECUTORS.lookup(options.executor)(with_plugins(grids, options))


def run_grids(grids: Sequence[Grid], results: Path, options: RunOptions,
              executor: LocalExecutor | RayExecutor | None = None) -> Summary:
    """Train every cell of `grids` that has no finished record in `results`, with `executor` (one
    made for `options.executor` and closed again, if none is given).

    Every dataset a pending cell needs is loaded first, so missing files stop the run before
    anything trains (AblatrixError), rather than failing each cell in turn.
    """
    for grid in grids:
        ResultStore(results, grid.name).writable()
    todo = pending(grids, results, options.retry_failed)
    for dataset in dict.fromkeys(cell.config.dataset for cell, _ in todo):
        DATASETS[dataset].load(options.data_root)
    if executor is None:
        with executor_for(grids, options) as executor:
            summary = executor.run(todo)
    else:
        summary = executor.run(todo)
    total = sum(len(g.cells) for g in grids)
    return Summary(summary.trained, summary.failed, total - len(todo), summary.elsewhere, len(trainings(todo)))

