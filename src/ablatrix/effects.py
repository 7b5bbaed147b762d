"""The report's tables: accuracy per configuration, paired effects and interactions with their
decisions, per-class effects, each configuration against the base, cost, published numbers.
Frames in, frames out; `stats` does the statistics, `report` and `latex` the rendering.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import pandas as pd

from .errors import AblatrixError
from .frames import Results, class_steps, steps, varied
from .spec import Grid, ReportSettings
from .boundaries import Design
from .stats import (DECISION_COLUMNS, SUMMARY_COLUMNS, decide, interaction_deltas, mark_best, paired_deltas, summarize,
                    summarize_deltas)


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


def against_base(res: Results, settings: ReportSettings, design: Design | None = None) -> pd.DataFrame:
    """Each configuration's paired difference in test accuracy from the base (the grid's first
    configuration) on the same dataset and seed, decided per dataset with Holm: config (a tuple
    of the varied factors' values), dataset, mean, adjusted interval, verdict."""
    shown = varied(res) or res.factors
    codes, configs = pd.factorize(pd.Series([tuple(r) for r in res.done[shown].itertuples(index=False)]))
    done = res.done.assign(accuracy=100 * res.done["test_accuracy"], config=codes)  # code 0: the base
    columns = ["config", "dataset", "mean", "ci_low_adjusted", "ci_high_adjusted", "verdict"]
    pairs = paired_deltas(done, "config", ["config"], "accuracy")
    if pairs.empty:
        return pd.DataFrame(columns=columns)
    pairs = pairs.drop(columns=["baseline", "comparison"]).rename(columns={"level": "config"})
    pairs["config"] = [configs[c] for c in pairs["config"]]
    pairs["step"] = pairs["dataset"].map(steps(res))
    summary = summarize_deltas(pairs, ["config", "dataset"], settings.confidence, design.order if design else ())
    return decide(summary, ["dataset"], MAIN_METHOD, settings.confidence, settings.margin, design)[columns]


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


def report_settings(grids: Sequence[Grid]) -> ReportSettings:
    """The grids' shared `[report]` settings; grids reported together must agree on them."""
    settings = {g.report for g in grids}
    if len(settings) > 1:
        raise AblatrixError("grids reported together must share their [report] settings; they have "
                            + "; ".join(f"{g.name}: margin {g.report.margin:g}, confidence {g.report.confidence:g}"
                                        for g in grids))
    return settings.pop()
