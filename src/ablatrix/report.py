"""Reports from stored runs alone: tidy CSV tables (the contract other tools read) and REPORT.md.

runs.csv has one row per cell of the grid, including cells not yet trained (status `pending`)
and failed ones, so a partial grid is visible as such rather than silently averaged away.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from tabulate import tabulate

from .data import DATASETS
from .spec import Grid
from .store import ResultStore, atomic_write_text

RUN_COLUMNS = ("run_id", "variant", "dataset", "seed")
METRIC_COLUMNS = ("params", "epochs_trained", "best_epoch", "test_accuracy", "test_loss",
                  "wall_seconds", "status")


def axis_value(value: Any) -> Any:
    """Scalars as they are; lists (e.g. conv widths) as compact JSON so they can be grouped on."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else value


def runs_frame(grid: Grid, records: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per cell: identity, one column per axis, cost, test metrics and status."""
    rows = []
    for cell in grid.cells:
        record = records.get(cell.run_id)
        done = record is not None and record["status"] == "done"
        rows.append({
            "run_id": cell.run_id, "variant": cell.variant, "dataset": cell.config.dataset,
            "seed": cell.config.seed, **{k: axis_value(v) for k, v in cell.axes.items()},
            "params": cell.params,
            "epochs_trained": record["epochs_trained"] if done else None,
            "best_epoch": record["best_epoch"] if done else None,
            "test_accuracy": record["test"]["accuracy"] if done else None,
            "test_loss": record["test"]["loss"] if done else None,
            "wall_seconds": record["wall_seconds"] if record else None,
            "status": record["status"] if record else "pending"})
    return pd.DataFrame(rows, columns=[*RUN_COLUMNS, *grid.axes, *METRIC_COLUMNS])


def per_class_frame(grid: Grid, records: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per finished run and class: accuracy with the correct/support counts behind it."""
    rows = []
    for cell in grid.cells:
        record = records.get(cell.run_id)
        if record is None or record["status"] != "done":
            continue
        names = DATASETS[cell.config.dataset].classes
        for entry in record["test"]["per_class"]:
            rows.append({"run_id": cell.run_id, "class_index": entry["class"],
                         "class": names[entry["class"]], "accuracy": entry["accuracy"],
                         "correct": entry["correct"], "support": entry["support"]})
    return pd.DataFrame(rows, columns=["run_id", "class_index", "class", "accuracy", "correct", "support"])


def accuracy_summary(runs: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """Test accuracy mean, std and seed count per variant x axis setting x dataset (done runs)."""
    keys = ["variant", *axes, "dataset"]
    done = runs[runs["status"] == "done"]
    summary = done.groupby(keys, sort=False, dropna=False)["test_accuracy"].agg(["mean", "std", "count"])
    return summary.reset_index()


def _accuracy_table(runs: pd.DataFrame, axes: Sequence[str]) -> str:
    summary = accuracy_summary(runs, axes)
    cell = summary.apply(lambda r: f"{100 * r['mean']:.2f} ± {100 * r['std']:.2f} (n={r['count']})"
                         if r["count"] > 1 else f"{100 * r['mean']:.2f} (n=1)", axis=1)
    table = summary.assign(accuracy=cell).pivot(index=["variant", *axes], columns="dataset",
                                                 values="accuracy").reset_index()
    return tabulate(table, headers="keys", tablefmt="github", showindex=False)


def _provenance(records: list[dict[str, Any]]) -> list[str]:
    devices = sorted({f"{r['device']} ({r['device_name']})" for r in records})
    torch_versions = sorted({r["versions"]["torch"] for r in records})
    revisions = sorted({r["code_revision"] for r in records})
    return [f"- device: {', '.join(devices)}", f"- torch: {', '.join(torch_versions)}",
            f"- ablatrix code: {', '.join(revisions)}"]


def write_report(grid: Grid, results: Path) -> Path:
    """Rewrite runs.csv, per_class.csv and REPORT.md of one grid from its stored records."""
    store = ResultStore(results, grid.name)
    records = {k: v for k, v in store.records().items() if k in {c.run_id for c in grid.cells}}
    runs = runs_frame(grid, records)
    atomic_write_text(store.dir / "runs.csv", runs.to_csv(index=False))
    atomic_write_text(store.dir / "per_class.csv", per_class_frame(grid, records).to_csv(index=False))

    counts = runs["status"].value_counts()
    lines = [f"# {grid.name}: ablation report", ""]
    lines += [grid.description, ""] if grid.description else []
    lines += [f"Grid file `{grid.path.as_posix()}`: {len(grid.cells)} cells "
              f"({counts.get('done', 0)} done, {counts.get('failed', 0)} failed, "
              f"{counts.get('pending', 0)} pending). Regenerate with "
              f"`ablatrix report {grid.path.as_posix()}` (trains nothing).", ""]
    lines += [f"- generated: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"]
    lines += _provenance(list(records.values())) if records else []
    lines += ["", "## Test accuracy (%), mean ± std over seeds", ""]
    lines += [_accuracy_table(runs, list(grid.axes)) if counts.get("done", 0) else "No finished runs yet."]
    failed = runs[runs["status"] == "failed"]
    if len(failed):
        lines += ["", "## Failed runs", ""]
        lines += [f"- `{r.run_id}` {r.variant} {r.dataset} seed {r.seed}: {records[r.run_id]['error']}"
                  for r in failed.itertuples()]
    report = store.dir / "REPORT.md"
    atomic_write_text(report, "\n".join(lines) + "\n")
    return report
