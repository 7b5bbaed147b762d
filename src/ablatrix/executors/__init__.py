"""Executors: where units run. Each trains todo lists with `run` (as many as it is given: the rounds
of --until-decided), through `runner.run_claimed` or the same steps spread over a driver and its
tasks, and keeps its workers until `close` (it is a context manager).

`local` runs units one after another, or in `workers` worker processes; `ray` makes each unit a
Ray task on a cluster (or a local Ray); `slurm` submits the units as a Slurm job array. A new executor is one module here with a class taking
`RunOptions`, registered in `EXECUTORS`, and its flags in `cli._run_options`.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from ..data import DATASETS
from ..environment import Environment
from ..registry import Registry
from ..runner import RunOptions
from ..scheduling import Summary, Todo, pending, trainings
from ..spec import Grid
from ..store import ResultStore
from .local import LocalExecutor
from .ray import RayExecutor
from .slurm import SlurmExecutor


class Executor(Protocol):
    def __enter__(self) -> "Executor": ...
    def __exit__(self, *exc: Any) -> None: ...
    def run(self, todo: Todo) -> Summary: ...


EXECUTORS: Registry[Callable[[RunOptions], Executor]] = Registry("executor")
EXECUTORS.register("local")(LocalExecutor)
EXECUTORS.register("ray")(RayExecutor)
EXECUTORS.register("slurm")(SlurmExecutor)


def executor_for(grids: Sequence[Grid], options: RunOptions) -> Executor:
    """The executor `options.executor` names, its workers preparing the grids' environment."""
    environment = Environment.joined([g.environment for g in grids])
    return EXECUTORS.lookup(options.executor)(replace(options, environment=environment))


def run_grids(grids: Sequence[Grid], results: Path, options: RunOptions, executor: Executor | None = None) -> Summary:
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
