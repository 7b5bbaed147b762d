"""Reports from stored runs alone: tidy CSV tables (the contract other tools read) and REPORT.md.

runs.csv has one row per cell of the grid, including cells not yet trained (status `pending`)
and failed ones, so a partial grid is visible as such rather than silently averaged away. The
report's statistics use finished runs only and count the others beside them.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from tabulate import tabulate

from . import figures
from .data import DATASETS, data_root
from .errors import AblatrixError
from .spec import Grid
from .stats import CONFIDENCE, mark_best, paired_deltas, summarize, summarize_deltas
from .store import ResultStore, atomic_write_text

RUN_COLUMNS = ("run_id", "variant", "dataset", "seed")
METRIC_COLUMNS = ("params", "epochs_trained", "best_epoch", "val_accuracy", "test_accuracy",
                  "test_loss", "wall_seconds", "status")
FORMATS = ("md", "tex", "csv")


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
            "val_accuracy": record["history"][record["best_epoch"] - 1]["val_accuracy"]
            if done and record["best_epoch"] else None,
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


@dataclass
class Results:
    """The stored runs of one or more grids, as frames the tables and figures are computed from."""

    grids: list[Grid]
    runs: pd.DataFrame  # runs.csv rows of every grid, with a `grid` column
    per_class: pd.DataFrame  # per_class.csv rows joined to their run's factors
    records: dict[str, dict[str, Any]]  # finished and failed records by run id
    factors: list[str]  # columns that identify a configuration: [grid,] variant, axes

    @property
    def done(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "done"]


def collect(grids: Sequence[Grid], results: Path) -> Results:
    """Read every grid's records, write its runs.csv and per_class.csv, and join them."""
    runs, per_class, all_records = [], [], {}
    for grid in grids:
        store = ResultStore(results, grid.name)
        ids = {c.run_id for c in grid.cells}
        records = {k: v for k, v in store.records().items() if k in ids}
        grid_runs, grid_classes = runs_frame(grid, records), per_class_frame(grid, records)
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


def config_label(row: pd.Series | dict, factors: Sequence[str]) -> str:
    """'base bn=true dropout=0.3' style label of one configuration, for figures and column heads."""
    parts = [str(row[f]) for f in factors if f in ("grid", "variant")]
    parts += [f"{f.split('.')[-1]}={row[f]}" for f in factors if f not in ("grid", "variant")]
    return " ".join(parts)


def accuracy_table(res: Results) -> pd.DataFrame:
    """Test accuracy (%) per configuration and dataset: mean, std, t-CI, seeds, best/tie, gaps."""
    keys = [*res.factors, "dataset"]
    status = res.runs.groupby(keys, sort=False)["status"].value_counts().unstack(fill_value=0)
    summary = res.done.groupby(keys, sort=False)["test_accuracy"].apply(
        lambda s: summarize(100 * s)).unstack()
    table = status.join(summary, how="left").reset_index()
    for column in ("done", "failed", "pending"):
        table[column] = table[column] if column in table else 0
    table["n"] = table["done"]
    table["mark"] = mark_best(table.dropna(subset=["mean"])).reindex(table.index).fillna("")
    return table[[*keys, "mean", "std", "ci_low", "ci_high", "n", "failed", "pending", "mark"]]


def per_class_table(res: Results) -> pd.DataFrame:
    """Per-class accuracy (%) per configuration: mean over seeds, and the summed correct/total."""
    keys = [*res.factors, "dataset", "class_index", "class"]
    grouped = res.per_class.groupby(keys, sort=False)
    return pd.DataFrame({"accuracy": 100 * grouped["accuracy"].mean(), "n": grouped.size(),
                         "correct": grouped["correct"].sum(), "total": grouped["support"].sum()}
                        ).reset_index()


def varied(res: Results) -> list[str]:
    """The factors that take more than one value among finished runs."""
    return [f for f in res.factors if res.done[f].nunique() > 1]


def delta_tables(res: Results) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Paired effects of every varied factor on accuracy, overall and per class (percentage points)."""
    overall, per_class = [], []
    done = res.done.assign(accuracy=100 * res.done["test_accuracy"])
    classes = res.per_class.assign(accuracy=100 * res.per_class["accuracy"])
    for factor in varied(res):
        pairs = paired_deltas(done, factor, res.factors, "accuracy")
        overall.append(summarize_deltas(pairs, ["comparison", "dataset"]).assign(factor=factor))
        class_pairs = paired_deltas(classes, factor, res.factors, "accuracy", ["class_index", "class"])
        per_class.append(summarize_deltas(class_pairs, ["comparison", "dataset", "class_index", "class"]
                                          ).assign(factor=factor))
    columns = ["factor", "comparison", "dataset"]
    if not overall:
        return pd.DataFrame(columns=columns), pd.DataFrame(columns=columns)

    def factor_first(frames: list[pd.DataFrame]) -> pd.DataFrame:
        frame = pd.concat(frames, ignore_index=True)
        return frame[columns + [k for k in frame if k not in columns]]
    return factor_first(overall), factor_first(per_class)


def cost_table(res: Results) -> pd.DataFrame:
    """Parameters, epochs to the best validation loss, wall time per run and in total."""
    keys = [*res.factors, "dataset"]
    grouped = res.runs.groupby(keys, sort=False)
    return pd.DataFrame({"params": grouped["params"].first(),
                         "best_epoch": grouped["best_epoch"].mean(),
                         "epochs_trained": grouped["epochs_trained"].mean(),
                         "seconds_per_run": grouped["wall_seconds"].mean(),
                         "seconds_total": grouped["wall_seconds"].sum()}).reset_index()


def reference_table(res: Results) -> pd.DataFrame:
    """Each published number beside ours (%, mean ± std over the matching finished runs)."""
    rows = []
    for grid in res.grids:
        for ref in grid.references:
            ids = {c.run_id for c in grid.cells if ref.matches(c.facts)}
            ours = 100 * res.done.loc[res.done["run_id"].isin(ids), ref.metric]
            rows.append({"source": ref.source, "cells": " ".join(f"{k}={v}" for k, v in ref.match.items()),
                         "metric": ref.metric, "published": ref.value, "ours": ours.mean(),
                         "std": ours.std(), "n": len(ours), "ours − published": ours.mean() - ref.value})
    return pd.DataFrame(rows, columns=["source", "cells", "metric", "published", "ours", "std", "n",
                                       "ours − published"])


def unavailable_data(grids: Sequence[Grid], done: pd.DataFrame, root: Path) -> dict[str, str]:
    """Datasets of the grids with no finished run whose files are not there: the loader's message."""
    missing = {}
    for dataset in dict.fromkeys(d for g in grids for d in g.datasets):
        if dataset in set(done["dataset"]):
            continue
        try:
            DATASETS[dataset].load(root)
        except AblatrixError as exc:
            missing[dataset] = str(exc)
    return missing


def _fmt(x: Any) -> str:
    """Measurements to 2 decimals (no '-0.00'), NaN as blank, anything else as is."""
    if isinstance(x, float) and math.isnan(x):
        return ""
    return f"{round(x, 2) + 0.0:.2f}" if isinstance(x, float) else str(x)


def render(table: pd.DataFrame, fmt: str, verbatim: Sequence[str] = ()) -> str:
    """A table as GitHub Markdown or booktabs LaTeX (2 decimals), or as full-precision CSV.

    `verbatim` columns (the grid's factors, e.g. a dropout rate of 0.3) are printed as they are.
    """
    if fmt == "csv":
        return table.to_csv(index=False)
    cells = [[str(v) if c in verbatim else _fmt(v) for c, v in zip(table.columns, row)]
             for row in table.itertuples(index=False)]
    return tabulate(cells, headers=list(table.columns), tablefmt="github" if fmt == "md" else
                    "latex_booktabs", disable_numparse=True)


def _accuracy_md(table: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    shown = table[[*factors, "dataset"]].copy()
    shown["accuracy %"] = [("**" if m == "best" else "") + (f"{a:.2f} ± {s:.2f}" if n > 1 else _fmt(a))
                           + ("**" if m == "best" else "") for a, s, n, m in
                           zip(table["mean"], table["std"], table["n"], table["mark"])]
    shown["95% CI"] = [f"[{lo:.2f}, {hi:.2f}]" if not math.isnan(lo) else "" for lo, hi in
                       zip(table["ci_low"], table["ci_high"])]
    shown["seeds"] = table["n"]
    shown["failed / pending"] = [f"{f} / {p}" if f or p else "" for f, p in
                                 zip(table["failed"], table["pending"])]
    shown["vs best"] = table["mark"]
    return shown


def _per_class_md(per_class: pd.DataFrame, res: Results, dataset: str) -> pd.DataFrame:
    rows = per_class[per_class["dataset"] == dataset]
    labels = rows.apply(lambda r: config_label(r, res.factors), axis=1)
    return rows.assign(config=labels).pivot_table(index=["class_index", "class"], columns="config",
                                                  values="accuracy", sort=False).reset_index(
        ).drop(columns="class_index")


def _deltas_md(deltas: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "factor": deltas["factor"], "comparison": deltas["comparison"], "dataset": deltas["dataset"],
        "mean Δ (pp)": [f"{m:+.2f}" for m in deltas["mean"]],
        "95% CI": [f"[{lo:+.2f}, {hi:+.2f}]" if not math.isnan(lo) else "" for lo, hi in
                   zip(deltas["ci_low"], deltas["ci_high"])],
        "pairs": deltas["n"],
        "wins / ties / losses": [f"{w} / {t} / {lost}" for w, t, lost in
                                 zip(deltas["wins"], deltas["ties"], deltas["losses"])]})


def _class_deltas_md(class_deltas: pd.DataFrame, dataset: str) -> pd.DataFrame:
    rows = class_deltas[class_deltas["dataset"] == dataset]
    effect = rows["factor"].str.split(".").str[-1] + ": " + rows["comparison"].astype(str)
    return rows.assign(effect=effect).pivot_table(index=["class_index", "class"], columns="effect",
                                                  values="mean", sort=False).reset_index(
        ).drop(columns="class_index")


def _provenance(records: list[dict[str, Any]]) -> list[str]:
    devices = sorted({f"{r['device']} ({r['device_name']})" for r in records})
    torch_versions = sorted({r["versions"]["torch"] for r in records})
    revisions = sorted({r["code_revision"] for r in records})
    return [f"- device: {', '.join(devices)}", f"- torch: {', '.join(torch_versions)}",
            f"- ablatrix code: {', '.join(revisions)}"]


def report_dir(grids: Sequence[Grid], results: Path) -> Path:
    """<results>/<grid> for one grid, <results>/<grid1>+<grid2>... for several together."""
    return Path(results) / "+".join(g.name for g in grids)


def write_report(grids: Sequence[Grid], results: Path, formats: Sequence[str] = ("md",),
                 data_dir: Path | None = None) -> Path:
    """Rewrite the tables, figures and REPORT.md of `grids` from their stored records alone."""
    res = collect(grids, results)
    out = report_dir(grids, results)
    missing = unavailable_data(grids, res.done, data_root(data_dir))
    counts = res.runs["status"].value_counts()
    paths = " ".join(g.path.as_posix() for g in grids)
    datasets = list(dict.fromkeys(res.runs["dataset"]))
    lines = [f"# {out.name}: ablation report", ""]
    lines += [f"{g.name}: {g.description}" if len(grids) > 1 else g.description
              for g in grids if g.description] + [""]
    lines += [f"Grid file(s) `{paths}`: {len(res.runs)} cells ({counts.get('done', 0)} done, "
              f"{counts.get('failed', 0)} failed, {counts.get('pending', 0)} pending). "
              f"Regenerate with `ablatrix report {paths}` (trains nothing).", ""]
    lines += [f"- generated: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"]
    finished = [r for r in res.records.values() if r["status"] == "done"]  # the numbers' sources
    lines += _provenance(finished) if finished else []
    lines += ["- datasets: " + "; ".join(f"{d}: {DATASETS[d].description}" for d in datasets)]
    lines += [f"- statistics: mean ± sample std over seeds; {CONFIDENCE:.0%} CI is the Student-t "
              "interval of the mean; paired differences match dataset, seed and every other factor; "
              "figure bands and bars are ± 1 std over seeds", ""]
    if missing:
        lines += ["## Data not available here", "",
                  "No run of these datasets was made, because their files are not on this machine. "
                  f"To run them: put the files where the message says (or `ablatrix fetch NAME`), "
                  f"then `ablatrix run {paths}` and `ablatrix report {paths}`.", ""]
        lines += [f"- `{name}`: {message}" for name, message in missing.items()] + [""]
    references = reference_table(res)
    if len(references):
        shown = references.assign(**{
            "published %": references["published"].map(lambda v: f"{v:.2f}"),
            "ours %": [f"{m:.2f} ± {s:.2f} (n={n})" if n > 1 else f"{m:.2f} (n=1)" if n else "not run"
                       for m, s, n in zip(references["ours"], references["std"], references["n"])],
            "ours − published (pp)": references["ours − published"].map(
                lambda v: "" if math.isnan(v) else f"{v:+.2f}")})
        lines += ["## Published results beside ours", "",
                  render(shown[["source", "cells", "metric", "published %", "ours %", "ours − published (pp)"]],
                         "md", ["source", "cells", "metric"]), ""]
    if res.done.empty:
        atomic_write_text(out / "REPORT.md", "\n".join(lines + ["No finished runs yet."]) + "\n")
        return out / "REPORT.md"

    tables = {"accuracy": accuracy_table(res), "per_class_accuracy": per_class_table(res),
              "cost": cost_table(res)}
    tables["deltas"], tables["per_class_deltas"] = delta_tables(res)
    for name, table in tables.items():
        for fmt in set(formats) - {"md"}:
            atomic_write_text(out / f"{name}.{fmt}", render(table, fmt, res.factors))

    figs = figures.draw_all(res, tables["accuracy"], out / "figures")
    lines += ["## Test accuracy per configuration", "",
              "**Bold**: best mean per dataset; `tie`: mean inside the best's 95% CI.", "",
              render(_accuracy_md(tables["accuracy"], res.factors), "md", res.factors), ""]
    lines += ["## Ablation effects (paired differences, percentage points)", "",
              "Each row changes one factor from its first value in the grid, everything else equal, "
              "paired on dataset and seed.", ""]
    lines += [render(_deltas_md(tables["deltas"]), "md") if len(tables["deltas"])
              else "Nothing varies yet, or no complete pairs.", ""]
    for dataset in datasets:
        if dataset not in set(res.done["dataset"]):
            continue
        lines += [f"## Per-class accuracy (%) on {dataset}", "",
                  render(_per_class_md(tables["per_class_accuracy"], res, dataset), "md"), ""]
        if len(tables["per_class_deltas"]):
            lines += [f"### Per-class effects (mean Δ pp) on {dataset}", "",
                      render(_class_deltas_md(tables["per_class_deltas"], dataset), "md"), ""]
    total = res.runs["wall_seconds"].sum()
    lines += ["## Cost", "", f"Total wall time of stored runs: {total:.1f} s.", "",
              render(tables["cost"], "md", res.factors), ""]
    damaged = [path for g in grids for path in ResultStore(results, g.name).damaged()]
    if damaged:
        lines += ["## Damaged records", "", "These files could not be read as records and were set "
                  "aside; their cells count as not trained. Delete them once you have looked.", ""]
        lines += [f"- `{path.relative_to(results).as_posix()}`" for path in damaged] + [""]
    failed = res.runs[res.runs["status"] == "failed"]
    if len(failed):
        lines += ["## Failed runs", ""]
        lines += [f"- `{r.run_id}` {r.variant} {r.dataset} seed {r.seed}: {res.records[r.run_id]['error']}"
                  for r in failed.itertuples()] + [""]
    lines += ["## Figures", ""] + [f"![{caption}]({path.relative_to(out).as_posix()})\n"
                                   for caption, path in figs]
    atomic_write_text(out / "REPORT.md", "\n".join(lines) + "\n")
    return out / "REPORT.md"
