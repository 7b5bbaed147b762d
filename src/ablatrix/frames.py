"""Stored records as frames: runs.csv (one row per cell, pending and failed included) and
per_class.csv, the tidy tables every other table and figure is computed from.

runs.csv has one row per cell of the grid, including cells not yet trained (status `pending`)
and failed ones, so a partial grid is visible as such rather than silently averaged away. The
report's statistics use finished runs only and count the others beside them.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import pandas as pd

from .data import DATASETS
from .errors import AblatrixError
from .record import RunRecord
from .spec import DEFAULT_MODEL, Grid, axis_value
from .tuning import at_own_values, own_values, select
from .store import ResultStore, atomic_write_text


RUN_COLUMNS = ("run_id", "variant", "dataset", "seed")


METRIC_COLUMNS = ("params", "epochs_trained", "best_epoch", "train_accuracy", "val_accuracy",
                  "test_accuracy", "test_loss", "wall_seconds", "status")


def runs_frame(grid: Grid, records: dict[str, RunRecord]) -> pd.DataFrame:
    """One row per cell: identity, one column per axis, cost, test metrics and status."""
    rows = []
    for cell in grid.stored_cells(records):
        record = records.get(cell.run_id)
        done = record is not None and record.done
        tested = tested_epoch(record) if done else None
        rows.append({
            "run_id": cell.run_id, "variant": cell.variant, "dataset": cell.config.dataset,
            "seed": cell.config.seed, **{k: axis_value(v) for k, v in cell.axes.items()},
            "params": cell.params,
            "epochs_trained": record.epochs_trained if done else None,
            "best_epoch": record.best_epoch if done else None,
            "train_accuracy": tested["train_accuracy"] if tested else None,
            "val_accuracy": tested["val_accuracy"] if tested else None,
            "test_accuracy": record.test.accuracy if done else None,
            "test_loss": record.test.loss if done else None,
            "wall_seconds": record.wall_seconds if record else None,
            "status": record.status if record else "pending"})
    return pd.DataFrame(rows, columns=[*RUN_COLUMNS, *grid.cell_keys, *METRIC_COLUMNS])


def tested_epoch(record: RunRecord) -> dict[str, float] | None:
    """The history row of the weights that were tested (`RunRecord.tested`). Its train accuracy is
    measured during that epoch (dropout on, weights changing), as training loops usually log it."""
    epoch = record.tested.epoch
    return record.history[epoch - 1] if epoch else None


def per_class_frame(grid: Grid, records: dict[str, RunRecord]) -> pd.DataFrame:
    """One row per finished run and class: accuracy with the correct/support counts behind it."""
    rows = []
    for cell in grid.stored_cells(records):
        record = records.get(cell.run_id)
        if record is None or not record.done:
            continue
        names = DATASETS[cell.config.dataset].classes
        for entry in record.test.per_class:
            rows.append({"run_id": cell.run_id, "class_index": entry.index,
                         "class": names[entry.index], "accuracy": entry.accuracy,
                         "correct": entry.correct, "support": entry.support})
    return pd.DataFrame(rows, columns=["run_id", "class_index", "class", "accuracy", "correct", "support"])


@dataclass
class Results:
    """The stored runs of one or more grids, as frames the tables and figures are computed from."""

    grids: list[Grid]
    runs: pd.DataFrame  # runs.csv rows of every grid, with a `grid` column
    per_class: pd.DataFrame  # per_class.csv rows joined to their run's factors
    records: dict[str, RunRecord]  # finished and failed records by run id
    factors: list[str]  # columns that identify a configuration: [grid,] variant, axes

    @property
    def done(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "done"]


def collect(grids: Sequence[Grid], results: Path, write: bool = True) -> Results:
    """Read every grid's records and join them; with `write`, also write runs.csv and per_class.csv."""
    runs, per_class, all_records = [], [], {}
    for grid in grids:
        store = ResultStore(results, grid.name)
        ids = {c.run_id for c in (*grid.cells, *grid.extra_cells)}
        records = {k: RunRecord.of(v) for k, v in store.records().items() if k in ids}
        grid_runs, grid_classes = runs_frame(grid, records), per_class_frame(grid, records)
        if write:
            atomic_write_text(store.dir / "runs.csv", grid_runs.to_csv(index=False))
            atomic_write_text(store.dir / "per_class.csv", grid_classes.to_csv(index=False))
        runs.append(grid_runs.assign(grid=grid.name))
        per_class.append(grid_classes)
        all_records.update(records)
    axes = list(dict.fromkeys(a for g in grids for a in g.axes))
    factors = (["grid"] if len(grids) > 1 else []) + ["variant", *axes]
    runs_all = pd.concat(runs, ignore_index=True)
    runs_all[axes] = runs_all[axes].astype(object).where(runs_all[axes].notna(), "—")
    per_class_all = pd.concat(per_class, ignore_index=True).merge(
        runs_all[["run_id", *factors, "dataset", "seed"]], on="run_id")
    return Results(list(grids), runs_all, per_class_all, all_records, factors)


def tuned_views(res: Results) -> tuple[Results, Results | None]:
    """A tuned grid's records seen two ways (`tuning`): the candidate each configuration selected on
    validation per dataset and seed, and the runs at the grid's own value of every tuned field (None
    when that value is not a candidate). Each view is analysed as an untuned grid's records."""
    if len(res.grids) != 1:
        raise AblatrixError(f"{' '.join(g.name for g in res.grids)}: a grid with [tune] is analysed on its own")
    (grid,) = res.grids
    tune = grid.tune
    keys = [*res.factors, "dataset", "seed"]
    val_loss = {k: tested_epoch(r)["val_loss"] for k, r in res.records.items()
                if r.done and r.tested.epoch} if tune.metric == "val_loss" else {}  # runs.csv has no val_loss
    chosen = select(res.runs, keys, tune.metric, val_loss)
    own = {f: axis_value(v) for f, v in own_values(tune, grid.spec.base, DEFAULT_MODEL).items()}
    fixed = at_own_values(res.runs, own)

    def view(runs: pd.DataFrame) -> Results:
        return replace(res, runs=runs.reset_index(drop=True),
                       per_class=res.per_class[res.per_class["run_id"].isin(runs["run_id"])])
    return view(chosen), view(fixed) if len(fixed) else None


def steps(res: Results) -> dict[str, float]:
    """Each dataset's resolution in pp: one test image of N moves accuracy by 100/N."""
    sizes = res.per_class.groupby(["dataset", "run_id"])["support"].sum().groupby("dataset").max()
    return {dataset: 100 / size for dataset, size in sizes.items()}


def class_steps(res: Results) -> pd.DataFrame:
    """Each class's resolution in pp (100 / its test images), by dataset and class index."""
    support = res.per_class.groupby(["dataset", "class_index"])["support"].max()
    return (100 / support).rename("step").reset_index()


def varied(res: Results) -> list[str]:
    """The factors that take more than one value among finished runs."""
    return [f for f in res.factors if res.done[f].nunique() > 1]
