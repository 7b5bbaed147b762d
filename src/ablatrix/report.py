"""Reports from stored runs alone: tidy CSV tables (the contract other tools read) and REPORT.md.

runs.csv has one row per cell of the grid, including cells not yet trained (status `pending`)
and failed ones, so a partial grid is visible as such rather than silently averaged away. The
report's statistics use finished runs only and count the others beside them.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Collection, Sequence

import pandas as pd
from tabulate import tabulate

from . import figures, latex
from .report_html import write_html
from .data import DATASETS, data_root
from .errors import AblatrixError
from .figures import MAX_HEATMAP_ROWS, config_label
from .spec import Grid, ReportSettings, axis_value
from .stats import (DECISION_COLUMNS, RESAMPLES, SEEDS_CAP, SUMMARY_COLUMNS, Design, decide, interaction_deltas,
                    mark_best, paired_deltas, summarize, summarize_deltas)
from .store import ResultStore, atomic_write_text

RUN_COLUMNS = ("run_id", "variant", "dataset", "seed")
SEEDING_FILE = "seeding.json"  # what the last `run --until-decided` did, written by `adaptive`
METRIC_COLUMNS = ("params", "epochs_trained", "best_epoch", "train_accuracy", "val_accuracy",
                  "test_accuracy", "test_loss", "wall_seconds", "status")
FORMATS = ("md", "tex", "csv", "html")  # html: REPORT.html, the whole report as one page


def runs_frame(grid: Grid, records: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per cell: identity, one column per axis, cost, test metrics and status."""
    rows = []
    for cell in grid.stored_cells(records):
        record = records.get(cell.run_id)
        done = record is not None and record["status"] == "done"
        tested = tested_epoch(record) if done else None
        rows.append({
            "run_id": cell.run_id, "variant": cell.variant, "dataset": cell.config.dataset,
            "seed": cell.config.seed, **{k: axis_value(v) for k, v in cell.axes.items()},
            "params": cell.params,
            "epochs_trained": record["epochs_trained"] if done else None,
            "best_epoch": record["best_epoch"] if done else None,
            "train_accuracy": tested["train_accuracy"] if tested else None,
            "val_accuracy": tested["val_accuracy"] if tested else None,
            "test_accuracy": record["test"]["accuracy"] if done else None,
            "test_loss": record["test"]["loss"] if done else None,
            "wall_seconds": record["wall_seconds"] if record else None,
            "status": record["status"] if record else "pending"})
    return pd.DataFrame(rows, columns=[*RUN_COLUMNS, *grid.axes, *METRIC_COLUMNS])


def tested_epoch(record: dict[str, Any]) -> dict[str, float] | None:
    """The history row of the weights that were tested: the best epoch's, or with
    `restore_best = false` the last one's. Its train accuracy is measured during that epoch
    (dropout on, weights changing), as training loops usually log it."""
    if not record["history"]:
        return None
    if record["config"]["train"].get("restore_best", True):
        return record["history"][record["best_epoch"] - 1] if record["best_epoch"] else None
    return record["history"][-1]


def per_class_frame(grid: Grid, records: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per finished run and class: accuracy with the correct/support counts behind it."""
    rows = []
    for cell in grid.stored_cells(records):
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


def collect(grids: Sequence[Grid], results: Path, write: bool = True) -> Results:
    """Read every grid's records and join them; with `write`, also write runs.csv and per_class.csv."""
    runs, per_class, all_records = [], [], {}
    for grid in grids:
        store = ResultStore(results, grid.name)
        ids = {c.run_id for c in (*grid.cells, *grid.extra_cells)}
        records = {k: v for k, v in store.records().items() if k in ids}
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


def steps(res: Results) -> dict[str, float]:
    """Each dataset's resolution in pp: one test image of N moves accuracy by 100/N."""
    sizes = res.per_class.groupby(["dataset", "run_id"])["support"].sum().groupby("dataset").max()
    return {dataset: 100 / size for dataset, size in sizes.items()}


def class_steps(res: Results) -> pd.DataFrame:
    """Each class's resolution in pp (100 / its test images), by dataset and class index."""
    support = res.per_class.groupby(["dataset", "class_index"])["support"].max()
    return (100 / support).rename("step").reset_index()


def accuracy_table(res: Results, settings: ReportSettings) -> pd.DataFrame:
    """Test accuracy (%) per configuration and dataset: mean, std, t-CI (its sd at least the test
    set's rounding sd, its bounds inside 0-100), seeds, best/tie, gaps."""
    keys = [*res.factors, "dataset"]
    status = res.runs.groupby(keys, sort=False)["status"].value_counts().unstack(fill_value=0)
    step = steps(res)
    summary = res.done.groupby(keys, sort=False)[["test_accuracy", "dataset"]].apply(
        lambda g: summarize(100 * g["test_accuracy"], settings.confidence, step.get(g["dataset"].iat[0], 0.0),
                            (0.0, 100.0)))
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


EFFECT_KEYS = ["factor", "comparison", "level", "baseline", "dataset"]  # level, baseline: values; comparison: label
INTERACTION_KEYS = ["factor_a", "comparison_a", "factor_b", "level_b", "base_b", "dataset"]
# Main effects and interactions of a dataset are one family (Holm: few, and each may be acted on);
# per-class effects of a dataset another (Benjamini-Hochberg: many, read as a screen).
MAIN_METHOD, CLASS_METHOD = "holm", "bh"
# The seed means (their seeds, each look's floor) the decisions replayed; not table columns.
REPLAYED = ["values", "seeds", "look_floors"]


def _frame(frames: list[pd.DataFrame], keys: list[str], columns: Sequence[str] = SUMMARY_COLUMNS) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame(columns=[*keys, *columns])
    frame = pd.concat(frames, ignore_index=True)
    return frame[keys + [k for k in frame if k not in keys]]


def effect_tables(res: Results, settings: ReportSettings, design: Design | None = None) -> dict[str, pd.DataFrame]:
    """Paired effects of every varied factor on accuracy (percentage points), `deltas`, and the
    interaction of every pair of varied factors, `interactions`; each row with its adjusted p-value,
    adjusted interval, P(improvement), verdict and, if undecided, the seeds that would decide it.
    With a `design` (records made by seeds on demand) the analysis is the sequential one."""
    level = settings.confidence
    order = design.order if design else ()
    done = res.done.assign(accuracy=100 * res.done["test_accuracy"])
    overall, interactions = [], []
    factors = varied(res)
    step = steps(res)
    for factor in factors:
        pairs = paired_deltas(done, factor, res.factors, "accuracy")
        pairs["step"] = pairs["dataset"].map(step)
        overall.append(summarize_deltas(pairs, ["level", "baseline", "comparison", "dataset"], level, order)
                       .assign(factor=factor))
    for a, b in itertools.combinations(factors, 2):
        pairs = interaction_deltas(done, a, b, res.factors, "accuracy")
        if pairs.empty:  # the two factors never vary together (e.g. an axis absent from a variant)
            continue
        by = ["comparison_a", "level_b", "base_b", "dataset"]
        conditional = pairs.groupby(by, sort=False)[["effect_at_base", "effect_at_level"]].mean()
        pairs = pairs.drop(columns=["effect_at_base", "effect_at_level"]).assign(step=pairs["dataset"].map(step))
        interactions.append(summarize_deltas(pairs, by, level, order).join(conditional, on=by)
                            .assign(factor_a=a, factor_b=b))
    main = _frame(overall, EFFECT_KEYS)
    inter = _frame(interactions, INTERACTION_KEYS, [*SUMMARY_COLUMNS, "effect_at_base", "effect_at_level"])
    # One family per dataset: main effects and interactions are adjusted together.
    family = decide(pd.concat([main.assign(kind="main"), inter.assign(kind="interaction")], ignore_index=True),
                    ["dataset"], MAIN_METHOD, level, settings.margin, design)
    family = family.drop(columns=REPLAYED, errors="ignore")
    main = family.loc[family["kind"] == "main", [*main.columns.drop(REPLAYED, errors="ignore"), *DECISION_COLUMNS]]
    inter = family.loc[family["kind"] == "interaction",
                       [*inter.columns.drop(REPLAYED, errors="ignore"), *DECISION_COLUMNS]]
    inter = inter.assign(verdict=inter["verdict"].map({"better": "detected", "worse": "detected",
                                                       "equivalent": "negligible", "undecided": "undecided"}))
    detected = inter[inter["verdict"] == "detected"]
    partners = {}
    for row in detected.itertuples():
        partners.setdefault((row.factor_a, row.dataset), set()).add(row.factor_b)
        partners.setdefault((row.factor_b, row.dataset), set()).add(row.factor_a)
    main["interacts_with"] = [", ".join(sorted(partners.get((f, d), ())))
                              for f, d in zip(main["factor"], main["dataset"])]
    return {"deltas": main.reset_index(drop=True), "interactions": inter.reset_index(drop=True)}


def class_effect_table(res: Results, settings: ReportSettings, design: Design | None = None) -> pd.DataFrame:
    """The paired effect of every varied factor on each class's accuracy (pp), decided per dataset."""
    classes = res.per_class.assign(accuracy=100 * res.per_class["accuracy"])
    per_class = []
    for factor in varied(res):
        pairs = paired_deltas(classes, factor, res.factors, "accuracy", ["class_index", "class"])
        pairs = pairs.merge(class_steps(res), on=["dataset", "class_index"], how="left")
        per_class.append(summarize_deltas(pairs, ["level", "baseline", "comparison", "dataset", "class_index", "class"],
                                          settings.confidence, design.order if design else ()).assign(factor=factor))
    return decide(_frame(per_class, EFFECT_KEYS), ["dataset"], CLASS_METHOD, settings.confidence, settings.margin,
                  design).drop(columns=REPLAYED, errors="ignore")


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
            ids = {c.run_id for c in grid.stored_cells(res.records) if ref.matches(c.facts)}
            ours = 100 * res.done.loc[res.done["run_id"].isin(ids), ref.metric]
            rows.append({"source": ref.source, "cells": " ".join(f"{k}={v}" for k, v in ref.match.items()),
                         "metric": ref.metric, "published": ref.value, "ours": ours.mean(),
                         "std": ours.std(), "n": len(ours), "ours − published": ours.mean() - ref.value})
    return pd.DataFrame(rows, columns=["source", "cells", "metric", "published", "ours", "std", "n",
                                       "ours − published"])


def unavailable_data(grids: Sequence[Grid], root: Path, skip: Collection[str] = ()) -> dict[str, str]:
    """Datasets of the grids (but `skip`, e.g. those with finished runs) whose files are not
    there: the loader's message."""
    missing = {}
    for dataset in dict.fromkeys(d for g in grids for d in g.datasets):
        if dataset in skip:
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


def _accuracy_md(table: pd.DataFrame, factors: Sequence[str], level: str) -> pd.DataFrame:
    shown = table[[*factors, "dataset"]].copy()
    shown["accuracy %"] = [("**" if m == "best" else "") + (f"{a:.2f} ± {s:.2f}" if n > 1 else _fmt(a))
                           + ("**" if m == "best" else "") for a, s, n, m in
                           zip(table["mean"], table["std"], table["n"], table["mark"])]
    shown[f"{level} CI"] = [f"[{lo:.2f}, {hi:.2f}]" if not math.isnan(lo) else "" for lo, hi in
                       zip(table["ci_low"], table["ci_high"])]
    shown["seeds"] = table["n"]
    shown["failed / pending"] = [f"{f} / {p}" if f or p else "" for f, p in
                                 zip(table["failed"], table["pending"])]
    shown["vs best"] = table["mark"]
    return shown


def _per_class_md(per_class: pd.DataFrame, res: Results, dataset: str) -> pd.DataFrame:
    rows = per_class[per_class["dataset"] == dataset]
    labels = [config_label(r, varied(res) or ["variant"]) for r in rows.to_dict("records")]
    return rows.assign(config=labels).pivot_table(index=["class_index", "class"], columns="config",
                                                  values="accuracy", sort=False).reset_index(
        ).drop(columns="class_index")


def _interval(low: float, high: float, signed: bool = True) -> str:
    if math.isnan(low):
        return "n/a"
    return f"[{low:+.2f}, {high:+.2f}]" if signed else f"[{low:.2f}, {high:.2f}]"


def _seeds(needed: float, n: int, cap: int) -> str:
    """What an undecided effect still needs, in words a reader can act on."""
    if math.isnan(needed):
        return "≥ 2 seeds to estimate the spread" if n < 2 else ""
    return f"> {cap}" if math.isinf(needed) else f"{needed:.0f}"


def _replicates(n: int, pairs: int) -> str:
    """Seeds, the unit every interval counts, and the pairs averaged within them."""
    return f"{n} seed{'s' if n != 1 else ''}" + (f", {pairs} pairs" if pairs != n else "")


def _deltas_md(deltas: pd.DataFrame, confidence: float, cap: int) -> pd.DataFrame:
    return pd.DataFrame({
        "factor": deltas["factor"], "comparison": deltas["comparison"], "dataset": deltas["dataset"],
        "mean Δ (pp)": [f"{m:+.2f}" for m in deltas["mean"]],
        f"{confidence:.0%} CI, adjusted": [_interval(lo, hi) for lo, hi in
                                          zip(deltas["ci_low_adjusted"], deltas["ci_high_adjusted"])],
        "p (adj.)": [f"{p:.3g}" if not math.isnan(p) else "n/a" for p in deltas["p_adjusted"]],
        "P(improvement)": [f"{p:.2f} {_interval(lo, hi, False)}" if not math.isnan(lo) else f"{p:.2f}"
                           for p, lo, hi in zip(deltas["p_improvement"], deltas["p_improvement_low"],
                                                deltas["p_improvement_high"])],
        "seeds (pairs)": [f"{n} ({k})" for n, k in zip(deltas["n"], deltas["pairs"])],
        "wins / ties / losses": [f"{w} / {t} / {lost}" for w, t, lost in
                                 zip(deltas["wins"], deltas["ties"], deltas["losses"])],
        "verdict": deltas["verdict"],
        "seeds to decide": [_seeds(x, n, cap) for x, n in zip(deltas["seeds_needed"], deltas["n"])],
        "depends on": deltas["interacts_with"],
        **({"outlying seeds": deltas["outlier_seeds"]} if deltas["outlier_seeds"].astype(bool).any() else {})})


def _interactions_md(interactions: pd.DataFrame, confidence: float, cap: int) -> pd.DataFrame:
    return pd.DataFrame({
        "factor A (change)": interactions["factor_a"] + " " + interactions["comparison_a"],
        "factor B (levels)": interactions["factor_b"] + " " + interactions["base_b"] + " → " + interactions["level_b"],
        "dataset": interactions["dataset"],
        "A's effect at B's first level (pp)": [f"{m:+.2f}" for m in interactions["effect_at_base"]],
        "at the other (pp)": [f"{m:+.2f}" for m in interactions["effect_at_level"]],
        "interaction (pp)": [f"{m:+.2f}" for m in interactions["mean"]],
        f"{confidence:.0%} CI, adjusted": [_interval(lo, hi) for lo, hi in
                                          zip(interactions["ci_low_adjusted"], interactions["ci_high_adjusted"])],
        "p (adj.)": [f"{p:.3g}" if not math.isnan(p) else "n/a" for p in interactions["p_adjusted"]],
        "seeds (pairs)": [f"{n} ({k})" for n, k in zip(interactions["n"], interactions["pairs"])],
        "verdict": interactions["verdict"],
        "seeds to decide": [_seeds(x, n, cap) for x, n in zip(interactions["seeds_needed"], interactions["n"])]})


def _class_deltas_md(class_deltas: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Mean Δ per class and effect; `*` where the BH-adjusted interval excludes 0."""
    rows = class_deltas[class_deltas["dataset"] == dataset]
    effect = rows["factor"].str.split(".").str[-1] + ": " + rows["comparison"].astype(str)
    shown = [f"{m:+.2f}" + ("*" if v in ("better", "worse") else "") for m, v in zip(rows["mean"], rows["verdict"])]
    return rows.assign(effect=effect, shown=shown).pivot_table(
        index=["class_index", "class"], columns="effect", values="shown", aggfunc="first", sort=False
    ).reset_index().drop(columns="class_index")


def _effect_sentence(row: Any, margin: float, cap: int) -> str:
    change = f"`{row.factor}` {row.comparison}"
    evidence = (f"{row.mean:+.2f} pp, adjusted CI {_interval(row.ci_low_adjusted, row.ci_high_adjusted)}, "
                f"P(improvement) {row.p_improvement:.2f}"
                + (f" {_interval(row.p_improvement_low, row.p_improvement_high, False)}"
                   if not math.isnan(row.p_improvement_low) else "") + f", {_replicates(row.n, row.pairs)}")
    depends = f"; but it depends on {row.interacts_with} (see Interactions)" if row.interacts_with else ""
    if row.outlier_seeds:
        depends += (f"; **check seed(s) {row.outlier_seeds}**: far from the other seeds' differences, they can "
                    "carry or hide this verdict on their own")
    if row.verdict in ("better", "worse"):
        word = "raises" if row.verdict == "better" else "lowers"
        return f"- {change} **{word}** test accuracy ({evidence}){depends}."
    if row.verdict == "equivalent":
        return f"- {change} makes **no practical difference** (inside ±{margin:g} pp: {evidence}){depends}."
    if row.n < 2:
        return (f"- {change}: undecided ({row.mean:+.2f} pp from {_replicates(row.n, row.pairs)}; run at least "
                "2 seeds to estimate its spread).")
    seeds = _seeds(row.seeds_needed, row.n, cap)
    more = f"more than {cap} seeds" if seeds.startswith(">") else f"about {seeds} seeds"
    return f"- {change}: undecided ({evidence}); {more} would decide it if the spread holds{depends}."


def _interaction_sentence(row: Any) -> str:
    return (f"- `{row.factor_a}`'s effect ({row.comparison_a}) **depends on** `{row.factor_b}`: "
            f"{row.effect_at_base:+.2f} pp at {row.base_b}, {row.effect_at_level:+.2f} pp at {row.level_b} "
            f"(difference {row.mean:+.2f} pp, adjusted CI {_interval(row.ci_low_adjusted, row.ci_high_adjusted)}, "
            f"{_replicates(row.n, row.pairs)}).")


def findings(tables: dict[str, pd.DataFrame], dataset: str, margin: float, cap: int = SEEDS_CAP) -> list[str]:
    """Findings of one dataset, decided first and largest first, in sentences."""
    deltas = tables["deltas"][tables["deltas"]["dataset"] == dataset]
    deltas = deltas.reindex(deltas["mean"].abs().sort_values(ascending=False).index)
    interactions = tables["interactions"]
    interactions = interactions[(interactions["dataset"] == dataset) & (interactions["verdict"] == "detected")]
    interactions = interactions.reindex(interactions["mean"].abs().sort_values(ascending=False).index)
    decided = deltas[deltas["verdict"].isin(["better", "worse", "equivalent"])]
    open_ = deltas[deltas["verdict"] == "undecided"]
    lines = [f"### {dataset}", ""]
    lines += [_effect_sentence(r, margin, cap) for r in decided.itertuples()] or ["- No effect is decided yet."]
    lines += [_interaction_sentence(r) for r in interactions.itertuples()]
    lines += [_effect_sentence(r, margin, cap) for r in open_.itertuples()]
    return lines + [""]


def _provenance(records: list[dict[str, Any]]) -> list[str]:
    devices = sorted({f"{r['device']} ({r['device_name']})" for r in records})
    torch_versions = sorted({r["versions"]["torch"] for r in records})
    revisions = sorted({r["code_revision"] for r in records})
    return [f"- device: {', '.join(devices)}", f"- torch: {', '.join(torch_versions)}",
            f"- ablatrix code: {', '.join(revisions)}"]


def report_dir(grids: Sequence[Grid], results: Path) -> Path:
    """<results>/<grid> for one grid, <results>/<grid1>+<grid2>... for several together."""
    return Path(results) / "+".join(g.name for g in grids)


def report_settings(grids: Sequence[Grid]) -> ReportSettings:
    """The grids' shared `[report]` settings; grids reported together must agree on them."""
    settings = {g.report for g in grids}
    if len(settings) > 1:
        raise AblatrixError("grids reported together must share their [report] settings; they have "
                            + "; ".join(f"{g.name}: margin {g.report.margin:g}, confidence {g.report.confidence:g}"
                                        for g in grids))
    return settings.pop()


def seeding_state(grids: Sequence[Grid], results: Path) -> dict[str, Any]:
    """What the last `run --until-decided` of these grids wrote to seeding.json ({} if none)."""
    seeding = report_dir(grids, results) / SEEDING_FILE
    return json.loads(seeding.read_text(encoding="utf-8")) if seeding.exists() else {}


def design_of(grids: Sequence[Grid], state: dict[str, Any]) -> Design | None:
    """The sequential design of the grids' records when `run --until-decided` made them (its
    seeding.json `state`), else None: a fixed seed list is analysed as a fixed sample."""
    if not state:
        return None
    stored = state.get("design")
    if stored is None:  # written before designs were stored: the one that run followed
        return new_design(grids)
    return Design(stored["first_look"], stored["max_seeds"], tuple(stored["seed_order"]))


def design_record(design: Design) -> dict[str, Any]:
    """A design as seeding.json keeps it, for `design_of` to read back."""
    return {"method": design.METHOD, "first_look": design.first_look, "max_seeds": design.max_seeds,
            "seed_order": list(design.order)}


def new_design(grids: Sequence[Grid]) -> Design:
    """A look at every seed count from the grids' own seeds to their max_seeds, seeds in the order
    `run --until-decided` adds them."""
    order = tuple(dict.fromkeys(s for g in grids for s in (*g.seeds, *g.extra_seeds)))
    return Design(min(len(g.seeds) for g in grids), max(len(g.seeds) + len(g.extra_seeds) for g in grids), order)


def _statistics_line(settings: ReportSettings, design: Design | None) -> str:
    level = f"{settings.confidence:.0%}"
    if design is None:
        analysis = (f"fixed sample (the grid's seeds): p-values are paired t-tests; an adjusted CI is the t-interval "
                    f"at the level whose bounds exclude 0 exactly when the adjusted p is below {1 - settings.confidence:g}")
    else:
        looks = len(design.counts)
        analysis = (f"sequential, {looks} look{'s' if looks != 1 else ''} (seed counts {design.counts[0]}–"
                    f"{design.max_seeds}), method: {design.METHOD}; p-values are repeated p-values, and an adjusted "
                    f"CI is the intersection of the repeated t-intervals of every look so far, at the level "
                    f"whose bounds exclude 0 exactly when the adjusted p is below {1 - settings.confidence:g}, so "
                    "its verdict holds whenever seeding stops")
    return (f"- statistics: mean ± sample std over seeds; {level} CI is the Student-t interval of the mean; "
            "paired differences match dataset, seed and every other factor, and are averaged within each seed "
            "(the unit of replication) before any test. Spread floor: an sd over seeds is taken as at least what "
            "the test set's resolution allows (one image of N moves accuracy by 100/N pp; tied values carry "
            "Sheppard's rounding sd, step/√12) and, for effects averaged over pairs, what the pairs' own spread "
            "allows (the seed x pair residual, pooled when the seed means vary less than it: a negative variance "
            "component set to zero), so seeds that tie by chance never give a zero-width interval; accuracy "
            "intervals are clipped to [0, 100]. A seed outside the others' prediction interval (Bonferroni over "
            f"the seeds, 4 seeds or more) is named beside its effect. Analysis: {analysis}. p-values are "
            f"adjusted per dataset: main effects and interactions together by Holm–Bonferroni, per-class "
            f"effects by Benjamini–Hochberg. Verdicts: equivalent "
            f"when the adjusted CI lies inside ±{settings.margin:g} pp, else better / worse when it excludes 0, "
            "else undecided, with the seeds that would decide it if the observed mean and spread held "
            f"(capped at {design.max_seeds if design else SEEDS_CAP}). P(improvement): share of paired runs the "
            f"change wins, ties half; its {level} interval spans a percentile bootstrap over seeds "
            f"({RESAMPLES:,} resamples) and the Wilson interval of one observation per seed. Figure bands and "
            "bars are ± 1 std over seeds, except the interaction figures' (t-intervals).")


def write_report(grids: Sequence[Grid], results: Path, formats: Sequence[str] = ("md",),
                 data_dir: Path | None = None) -> Path:
    """Rewrite the tables, figures and REPORT.md (and REPORT.html) of `grids` from their stored records alone."""
    settings = report_settings(grids)
    res = collect(grids, results)
    out = report_dir(grids, results)
    paths = " ".join(g.path.as_posix() for g in grids)
    if res.done.empty:
        missing = unavailable_data(grids, data_root(data_dir))
        raise AblatrixError(f"no finished run of {paths} in {results} yet: run `ablatrix run {paths}"
                            + (f" --results {results}" if Path(results) != Path("results") else "") + "` first"
                            + (f" (data not here yet: {', '.join(missing)}; `ablatrix list --data-dir DIR` "
                               "says where each goes)" if missing else ""))
    formats = [*formats, *(f for f in formats_written(out) if f not in formats)]
    root = data_root(data_dir)
    # A committed report must not carry this machine's folders: name the data folder by its rule.
    missing = {name: message.replace(str(root), "<data>")
               for name, message in unavailable_data(grids, root, set(res.done["dataset"])).items()}
    counts = res.runs["status"].value_counts()
    datasets = list(dict.fromkeys(res.runs["dataset"]))
    state = seeding_state(grids, results)
    design = design_of(grids, state)
    cap = design.max_seeds if design else SEEDS_CAP
    tables: dict[str, pd.DataFrame] = {}
    if not res.done.empty:
        tables = {"accuracy": accuracy_table(res, settings), "per_class_accuracy": per_class_table(res),
                  "cost": cost_table(res), **effect_tables(res, settings, design),
                  "per_class_deltas": class_effect_table(res, settings, design)}
    lines = [f"# {out.name}: ablation report", ""]
    lines += [f"{g.name}: {g.description}" if len(grids) > 1 else g.description
              for g in grids if g.description] + [""]
    lines += [f"Grid file(s) `{paths}`: {len(res.runs)} cells ({counts.get('done', 0)} done, "
              f"{counts.get('failed', 0)} failed, {counts.get('pending', 0)} pending). "
              f"Regenerate with `ablatrix report {paths}` (trains nothing).", ""]
    if tables:
        lines += ["## Findings", "",
                  "Decided effects first (largest first), then interactions, then what is still open. "
                  "Each effect changes one factor from its first value, everything else equal; the "
                  "numbers are test accuracy differences in percentage points (pp). "
                  + ("Verdicts come from the sequential analysis of seeds on demand (looks at every seed count "
                     f"from {design.counts[0]} to {design.max_seeds}): each holds at its error rate however many "
                     "looks stopped it." if design else
                     "Verdicts come from the fixed-sample analysis of the grid's seeds."), ""]
        for dataset in datasets:
            if dataset in set(res.done["dataset"]) and len(tables["deltas"]):
                lines += findings(tables, dataset, settings.margin, cap)
        if not len(tables["deltas"]):
            lines += ["Nothing varies yet, or no complete pairs.", ""]
    if "stopped" in state:
        lines += [f"Seeds on demand: the last `ablatrix run --until-decided` ({state['at']}) stopped: "
                  f"{state['stopped']}. Runs stored: {state['runs_stored']:,} of {state['runs_possible']:,} "
                  "possible (max_seeds); the accuracy table's `seeds` column shows each configuration's.", ""]
    lines += [f"- generated: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"]
    finished = [r for r in res.records.values() if r["status"] == "done"]  # the numbers' sources
    lines += _provenance(finished) if finished else []
    lines += ["- datasets: " + "; ".join(f"{d}: {DATASETS[d].description}" for d in datasets)]
    lines += [_statistics_line(settings, design), ""]
    if missing:
        lines += ["## Data not available here", "",
                  "No run of these datasets was made, because their files are not on this machine. "
                  f"To run them: put the files where the message says (or `ablatrix fetch NAME`), "
                  f"then `ablatrix run {paths}` and `ablatrix report {paths}`. `<data>` is `--data-dir`, "
                  "else `$ABLATRIX_DATA`, else `~/.cache/ablatrix`.", ""]
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
    if "csv" in formats:
        for name, table in tables.items():
            atomic_write_text(out / f"{name}.csv", render(table, "csv", res.factors))
    if "tex" in formats:
        name = "+".join(g.name for g in grids)
        atomic_write_text(out / "ablation.tex", latex.ablation_table(
            tables["accuracy"], against_base(res, settings, design), varied(res) or res.factors, name,
            settings.confidence, settings.margin))
        atomic_write_text(out / "effects.tex", latex.effects_table(
            tables["deltas"], tables["interactions"][tables["interactions"]["verdict"] != "negligible"], name,
            settings.confidence, settings.margin))
    detected = tables["interactions"][tables["interactions"]["verdict"] == "detected"]
    figs = figures.draw_all(res.done, res.per_class, res.records, varied(res), tables, settings.confidence,
                            settings.margin, out / "figures")
    level = f"{settings.confidence:.0%}"
    lines += ["## Test accuracy per configuration", "",
              f"**Bold**: best mean per dataset; `tie`: mean inside the best's {level} CI.", "",
              render(_accuracy_md(tables["accuracy"], res.factors, level), "md", res.factors), ""]
    lines += ["## Ablation effects (paired differences, percentage points)", "",
              "Each row changes one factor from its first value in the grid, everything else equal, "
              "paired on dataset and seed. `depends on`: a detected interaction (below), so the row's "
              "average over the other factors is not the whole story.", ""]
    lines += [render(_deltas_md(tables["deltas"], settings.confidence, cap), "md") if len(tables["deltas"])
              else "Nothing varies yet, or no complete pairs.", ""]
    if len(tables["interactions"]):
        lines += ["## Interactions", "",
                  "Does one factor's effect depend on another's level? Each row is A's effect at B's "
                  "other level minus its effect at B's first level, paired on seed and every other "
                  "factor; `detected` when the adjusted CI excludes 0.", ""]
        lines += [_interaction_sentence(r) for r in detected.itertuples()] or ["No interaction detected."]
        lines += ["", render(_interactions_md(tables["interactions"], settings.confidence, cap), "md"), ""]
    for dataset in datasets:
        if dataset not in set(res.done["dataset"]):
            continue
        configs = (tables["accuracy"]["dataset"] == dataset).sum()
        lines += [f"## Per-class accuracy (%) on {dataset}", ""]
        lines += [render(_per_class_md(tables["per_class_accuracy"], res, dataset), "md") if configs <= MAX_HEATMAP_ROWS
                  else f"{configs} configurations: one column each would not read; `--format csv` writes them "
                       "all to `per_class_accuracy.csv`, and the effects below say what each factor does "
                       "per class.", ""]
        if len(tables["per_class_deltas"]):
            lines += [f"### Per-class effects (mean Δ pp) on {dataset}", "",
                      "`*`: the Benjamini–Hochberg adjusted interval excludes 0.", "",
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
    if "html" in formats:
        write_html(out / "REPORT.md")
    written = {out / "REPORT.md", out / "runs.csv", out / "per_class.csv"}
    written |= {out / "REPORT.html"} if "html" in formats else set()
    written |= {out / f"{name}.csv" for name in tables} if "csv" in formats else set()
    written |= {out / "ablation.tex", out / "effects.tex"} if "tex" in formats else set()
    written |= {p for _, png in figs for p in (png, png.with_suffix(".pdf"))}
    remove_stale(out, written)
    return out / "REPORT.md"


OUTPUTS = ("REPORT.md", "REPORT.html", "*.csv", "*.tex", "figures/*.png", "figures/*.pdf")


def formats_written(out: Path) -> list[str]:
    """The formats a report in `out` was written in before (html, tex, csv tables), so a new report
    rewrites them all and no file there is older than the records it describes."""
    found = {"html": (out / "REPORT.html").exists(), "tex": any(out.glob("*.tex")),
             "csv": (out / "accuracy.csv").exists()}
    return [fmt for fmt, there in found.items() if there]


def outputs(out: Path) -> list[Path]:
    """The report's files in `out` (not its records, weights or seeding file)."""
    return sorted(p for pattern in OUTPUTS for p in out.glob(pattern))


def remove_stale(out: Path, written: Collection[Path]) -> None:
    """Remove report files that this report did not write (a figure of a level, a table no longer
    made): what is left in `out` describes the records as they are now."""
    for path in set(outputs(out)) - set(written):
        path.unlink()


def against_base(res: Results, settings: ReportSettings, design: Design | None = None) -> pd.DataFrame:
    """Each configuration's paired difference in test accuracy from the base (the grid's first
    configuration) on the same dataset and seed, decided per dataset with Holm: config (a tuple
    of the varied factors' values), dataset, mean, adjusted interval, verdict."""
    shown = varied(res) or res.factors
    done = res.done.assign(accuracy=100 * res.done["test_accuracy"],
                           config=[tuple(r) for r in res.done[shown].itertuples(index=False)])
    configs = list(dict.fromkeys(done["config"]))
    base = done[done["config"] == configs[0]].set_index(["dataset", "seed"])["accuracy"]
    step = steps(res)
    frames = []
    for config in configs[1:]:
        other = done[done["config"] == config].set_index(["dataset", "seed"])["accuracy"]
        joined = pd.concat({"base": base, "other": other}, axis=1, join="inner").dropna()
        frames.append((joined["other"] - joined["base"]).rename("delta").reset_index().assign(
            config=[config] * len(joined)))
    columns = ["config", "dataset", "mean", "ci_low_adjusted", "ci_high_adjusted", "verdict"]
    if not frames:
        return pd.DataFrame(columns=columns)
    pairs = pd.concat(frames, ignore_index=True)
    pairs["step"] = pairs["dataset"].map(step)
    summary = summarize_deltas(pairs, ["config", "dataset"], settings.confidence, design.order if design else ())
    return decide(summary, ["dataset"], MAIN_METHOD, settings.confidence, settings.margin, design)[columns]
