"""The runner of one unit: claim its cells, train it with the trainer the options name, store one
record per cell, release the claims. Every executor runs units through here, in its own processes.

A record is written only when its cell ends (done or failed), atomically, so Ctrl-C or a crash
loses at most the cells in progress and the next `run` trains only what is missing.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm import tqdm

from . import record
from .claims import Claims
from .data import Splits, load_splits
from .environment import Environment
from .errors import AblatrixError
from .evaluation import Execution
from .loop import Checkpoint, OnEpoch, Row
from .packed import pack_id
from .record import Record
from .scheduling import Job, Unit, one_training
from .spec import Cell
from .store import ResultStore
from .train import Measured, train_unit

Weights = dict[str, dict[str, torch.Tensor]]
# What trains a unit: `train.train_unit`, or in tests a fake that answers in milliseconds. A
# module-level function, so that it reaches worker processes and Ray workers by name.
Trainer = Callable[[Sequence[Any], Splits, torch.device, Execution, OnEpoch, Checkpoint | None],
                   list[Measured | BaseException]]


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
    environment: Environment = Environment()  # the grids' plugins and datasets by path, for worker processes
    retry_failed: bool = False  # train cells whose record says `failed` again
    max_retries: int = 2  # times a cell is trained again after its worker process or node died
    pack: int = 1  # local: train up to this many cells of one shape as one fused model; 0: auto
    # Epoch checkpoints: written at most every `checkpoint_seconds` (0: every epoch) under
    # `checkpoint_dir`/<grid>/ (default: the results folder's <grid>/checkpoints/ with the local
    # executor; none with Ray unless a folder every node sees is given).
    checkpoint_seconds: float = 10.0
    checkpoint_dir: Path | None = None
    slurm: Any = None  # slurm: the array's `executors.slurm.SlurmOptions`
    trainer: Trainer = train_unit

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


def unit_checkpoint(cells: Sequence[Cell], store: ResultStore | None, options: RunOptions) -> Path | None:
    """Where the training of a unit (or a pack) keeps its epoch checkpoint; None where there is no
    such folder (a Ray task without --checkpoint-dir: `store` is None there)."""
    name = f"{cells[0].config.training_id if one_training(cells) else pack_id([c.config for c in cells])}.pt"
    if options.checkpoint_dir is not None:
        return options.checkpoint_dir / cells[0].grid / name
    return None if store is None else store.dir / "checkpoints" / name


def run_unit(cells: Sequence[Cell], options: RunOptions, on_epoch: OnEpoch = lambda b, row: None,
             earlier: Sequence[Sequence[str]] = (), checkpoint: Path | None = None
             ) -> list[tuple[Record, Weights | None]]:
    """Train a unit (the cells of one training, or a pack), resumed from `checkpoint` where it holds
    one; per cell its full record, `done` or `failed` with the reason, and the weights it tested.

    A failure of the whole unit (its data, out of memory) fails every cell of it; a pack member's
    divergence is its own. A pack's records say its size and the other cells in it
    (`execution.packed`), and `wall_seconds` is each cell's share of the unit's time.
    """
    at, clock, execution = datetime.now(timezone.utc), time.perf_counter(), options.execution
    shared = one_training(cells)
    env = record.environment(options.device)
    records = [record.started(cell, past, env, {**asdict(execution), **options.placement()}, at)
               for cell, past in zip(cells, earlier or [()] * len(cells))]
    if not shared:
        ids = [c.run_id for c in cells]
        for rec in records:
            rec["execution"]["packed"] = {"size": len(cells), "with": [i for i in ids if i != rec["run_id"]]}
    try:
        config = cells[0].config
        data = load_splits(config.dataset, config.train.val_fraction, options.device, options.data_root,
                           config.train.standardize)
        outcomes = options.trainer([c.config for c in cells], data, options.device, execution, on_epoch,
                                   checkpoint and Checkpoint(checkpoint, options.checkpoint_seconds))
    except Exception as exc:  # any failure of a unit is recorded and the grid goes on
        outcomes = [exc] * len(cells)
    finally:
        torch.cuda.empty_cache()  # an out-of-memory unit leaves nothing cached for the next one
    wall = time.perf_counter() - clock
    done = []
    for cell, rec, result in zip(cells, records, outcomes):
        result, weights = (result, None) if isinstance(result, BaseException) else result
        rec.update(record.outcome(result))
        rec.update(training=record.training(cells, wall) if shared else record.training([cell], wall / len(cells)),
                   wall_seconds=wall / len(cells))
        if not shared:
            rec["execution"]["packed"]["wall_seconds"] = wall
        done.append((rec, weights))
    return done


def store_record(cell: Cell, store: ResultStore, rec: Record, weights: Weights | None = None) -> str:
    """Store a record (and the weights it tested, which go to its training's weights file)."""
    if weights:
        store.put_weights(rec["training"]["id"], weights)
    store.put(rec)
    if rec["status"] != "done":
        tqdm.write(f"failed: {cell.label()} ({rec['error']})")
    return rec["status"]


def run_claimed(unit: Unit, options: RunOptions, on_epoch: Callable[[Row], None] = lambda row: None) -> list[str]:
    """Claim, train and store a unit: the cells of one training, or a pack of which the cells still
    pending train fused. Each epoch renews the claims of the cells it trained."""
    claims = Claims(options.retry_failed)
    try:
        # Inside the try: a Ctrl-C held while a claim is made is raised as the claim returns, and
        # the claim must still be released (the sequential runner left one there; CI caught it).
        claimed = [job for job in unit if claims.take(job)]
        statuses = ["elsewhere"] * (len(unit) - len(claimed))
        if claimed:
            cells = [job.cell for job in claimed]
            renewed = 0  # the epoch whose end renewed the claims

            def beat(b: int, row: Row) -> None:
                nonlocal renewed
                if row["epoch"] != renewed:  # once an epoch, every claim: a pack's stopped members' too
                    renewed = row["epoch"]
                    claims.renew(claimed, row["epoch"])
                on_epoch(row)
            checkpoint = unit_checkpoint(cells, claimed[0].store, options)
            results = run_unit(cells, options, beat, [job.earlier for job in claimed], checkpoint)
            statuses += [store_record(job.cell, job.store, *result) for job, result in zip(claimed, results)]
            if checkpoint is not None:
                Checkpoint(checkpoint).remove()  # the records hold it all now
    finally:
        claims.release_all()
    return statuses


def after_death(unit: Unit, options: RunOptions, error: str, detail: str) -> tuple[Unit, list[tuple[Job, Record]]]:
    """The one retry policy, for a unit whose worker process or node died: each cell gets another
    attempt up to `max_retries` times (returned as a unit to queue again), else a failed record."""
    retried, lost = [], []
    for job in unit:
        attempts = len(job.earlier) + 1
        if attempts > options.max_retries:
            lost.append((job, record.lost(job.cell, options.placement(), job.earlier, error, detail)))
            continue
        tqdm.write(f"retrying: {job.cell.label()} (attempt {attempts + 1} of {options.max_retries + 1}): {error}")
        retried.append(job.again(error))
    return tuple(retried), lost
