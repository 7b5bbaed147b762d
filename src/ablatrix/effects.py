"""The report's tables: accuracy per configuration, paired effects and interactions with their
decisions, per-class effects, each configuration against the base, cost, published numbers.
Frames in, frames out; `stats` does the statistics, `report` and `latex` the rendering.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from .contrasts import interaction_contrasts, main_contrasts, variance_shares
from .designs import TWO_LEVEL, Aliasing, aliasing, letters
from .errors import AblatrixError
from .frames import Results, class_steps, steps, varied
from .spec import Grid, ReportSettings, axis_value
from .boundaries import Design
from .stats import (DECISION_COLUMNS, SUMMARY_COLUMNS, decide, expected_max, interaction_deltas, mark_best,
                    paired_deltas, summarize, summarize_deltas, t_interval)


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


@dataclass(frozen=True)
class TwoLevel:
    """A fractional or Plackett-Burman grid's factors as the analysis needs them: each axis's two
    values (as the frames hold them), its letter, the design's aliasing, and the blocks (dataset,
    seed, variant): its contrasts use only blocks whose every run is done (`complete_blocks`)."""

    levels: dict[str, list]
    letters: dict[str, str]
    aliasing: Aliasing
    blocks: list[str]

    def term(self, *factors: str) -> str:
        """The letters of the term of `factors`, as the alias chains name it (e.g. "AB")."""
        return "".join(sorted(self.letters[f] for f in factors))

    def aliases(self, *factors: str, shown: int = 3) -> str:
        """What the estimate of the term of `factors` is aliased with (terms of up to `shown` factors)."""
        term = self.term(*factors)
        chain = [t for t in self.aliasing.chain(term) if t != term and len(t) <= shown]
        partial = ", partially with two-factor interactions" if len(factors) == 1 and self.aliasing.partial else ""
        return ", ".join(chain) + partial

    def pairs(self, factors: Sequence[str]) -> list[tuple[str, str]]:
        """The pairs of the design's `factors` whose interaction it estimates: one per alias chain, none
        whose chain holds a main effect, and none at all where main effects are only partially aliased."""
        if not self.aliasing.regular:
            return []
        chains, out = set(), []
        for a, b in itertools.combinations([f for f in factors if f in self.levels], 2):
            chain = self.aliasing.chain(self.term(a, b))
            if min(map(len, chain)) > 1 and chain not in chains:
                chains.add(chain)
                out.append((a, b))
        return out


def complete_blocks(res: Results, frame: pd.DataFrame, blocks: list[str]) -> pd.DataFrame:
    """The rows of `frame` in blocks (groups of `blocks`: a dataset, seed, ...) whose every run is done."""
    status = res.runs.groupby(blocks, sort=False)["status"].agg(lambda s: bool((s == "done").all()))
    return frame[frame.set_index(blocks).index.isin(status[status].index)]


def two_level(res: Results) -> TwoLevel | None:
    """The two-level design of the reported grid, or None for full and one-at-a-time grids."""
    grids = [g for g in res.grids if g.design.kind in TWO_LEVEL]
    if not grids:
        return None
    if len(res.grids) > 1:
        raise AblatrixError(f"{grids[0].name} has a {grids[0].design.kind} design: report it on its own")
    grid = grids[0]
    blocks = [f for f in res.factors if f not in grid.axes] + ["dataset", "seed"]
    return TwoLevel({a: [axis_value(v) for v in values] for a, values in grid.axes.items()}, letters(grid.axes),
                    aliasing(grid.design, len(grid.axes)), blocks)


def _scaled(rows: pd.DataFrame, step: pd.Series, per: int = 2) -> pd.DataFrame:
    """`rows` with `step`, the resolution of each row's delta. `stats.spread_floor` counts one step
    per paired difference (squared coefficients summing to 2) or interaction quadruple (to 4); a
    contrast's `weight` (its squared coefficients' sum) scales the step by sqrt(weight / per) to
    match, so that on a full factorial a contrast and the pairs it equals get the same floor."""
    weight = rows.pop("weight").astype(float) if "weight" in rows else per
    return rows.assign(step=step.to_numpy() * np.sqrt(weight / per))


def _main(done: pd.DataFrame, factor: str, res: Results, design: TwoLevel | None,
          extra: Sequence[str] = ()) -> pd.DataFrame:
    """One factor's paired differences, or its contrasts in a two-level design (with `weight`)."""
    if design is None or factor not in design.levels:
        return paired_deltas(done, factor, res.factors, "accuracy", extra)
    return main_contrasts(complete_blocks(res, done, design.blocks), factor, design.levels[factor], [*design.blocks, *extra],
                          "accuracy")


def effect_tables(res: Results, settings: ReportSettings, design: Design | None = None) -> dict[str, pd.DataFrame]:
    """Paired effects of every varied factor on accuracy (percentage points), `deltas`, and the
    interaction of every pair of varied factors, `interactions`; each row with its adjusted p-value,
    adjusted interval, P(improvement), verdict and, if undecided, the seeds that would decide it.
    With a `design` (records made by seeds on demand) the analysis is the sequential one. In a
    fractional or Plackett-Burman grid the effects are contrasts per replicate (`contrasts`), an
    interaction is estimated once per alias chain and only where no main effect shares its chain,
    and each row names its aliases (`aliases`)."""
    level = settings.confidence
    order = design.order if design else ()
    done = res.done.assign(accuracy=100 * res.done["test_accuracy"])
    overall, interactions = [], []
    factors = varied(res)
    step = steps(res)
    two = two_level(res)
    for factor in factors:
        pairs = _main(done, factor, res, two)
        pairs = _scaled(pairs, pairs["dataset"].map(step))
        overall.append(summarize_deltas(pairs, ["level", "baseline", "comparison", "dataset"], level, order)
                       .assign(factor=factor, **({"aliases": two.aliases(factor) if factor in two.levels else ""}
                                                if two else {})))
    estimable = set(two.pairs(factors)) if two else set()
    for a, b in itertools.combinations(factors, 2):
        if two and {a, b} <= set(two.levels):
            if (a, b) not in estimable:
                continue  # partially aliased, aliased with a main effect, or estimated under another name
            pairs = interaction_contrasts(complete_blocks(res, done, two.blocks), a, b, two.levels[a], two.levels[b], two.blocks,
                                          "accuracy")
            pairs = _scaled(pairs, pairs["dataset"].map(step), 4).assign(aliases=two.aliases(a, b))
        else:
            pairs = interaction_deltas(done, a, b, res.factors, "accuracy")
        if pairs.empty:  # the two factors never vary together (e.g. an axis absent from a variant)
            continue
        by = ["comparison_a", "level_b", "base_b", "dataset"]
        conditional = pairs.groupby(by, sort=False)[["effect_at_base", "effect_at_level"]].mean()
        aliases = {"aliases": pairs.pop("aliases").iat[0]} if "aliases" in pairs else {}
        pairs = pairs.drop(columns=["effect_at_base", "effect_at_level"])
        pairs = pairs if "step" in pairs else pairs.assign(step=pairs["dataset"].map(step))
        interactions.append(summarize_deltas(pairs, by, level, order).join(conditional, on=by)
                            .assign(factor_a=a, factor_b=b, **aliases))
    named = ["aliases"] if two else []
    main = _frame(overall, EFFECT_KEYS, [*SUMMARY_COLUMNS, *named])
    inter = _frame(interactions, INTERACTION_KEYS, [*SUMMARY_COLUMNS, "effect_at_base", "effect_at_level", *named])
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
    two = two_level(res)
    for factor in varied(res):
        pairs = _main(classes, factor, res, two, ["class_index", "class"])
        pairs = pairs.merge(class_steps(res), on=["dataset", "class_index"], how="left")
        pairs = _scaled(pairs, pairs.pop("step"))
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


IMPORTANCE_COLUMNS = ["dataset", "term", "aliases", "share", "ci_low", "ci_high", "n"]


def importance_table(res: Results, confidence: float) -> pd.DataFrame:
    """Which factors matter most: each varied factor's and two-factor interaction's share (%) of the
    variance of test accuracy between configurations (`contrasts.variance_shares`), per seed, then
    its mean and t-interval over seeds (inside 0-100), largest first per dataset; `rest` holds the
    higher-order interactions. For a full or fractional grid reported alone (one-at-a-time and
    Plackett-Burman designs cannot separate interactions), over replicates whose every run is done.
    In a fraction a term stands for its alias chain (`aliases`); a pair aliased with a main effect
    is part of that main effect's share."""
    if len(res.grids) != 1 or res.grids[0].design.kind not in ("full", "fractional") or res.done.empty:
        return pd.DataFrame(columns=IMPORTANCE_COLUMNS)
    two = two_level(res)
    factors = [f for f in varied(res) if not two or f in two.levels]
    if len(factors) < 2:  # one factor holds all the variance there is: nothing to rank
        return pd.DataFrame(columns=IMPORTANCE_COLUMNS)
    blocks = two.blocks if two else ["dataset", "seed"]
    done = complete_blocks(res, res.done, blocks)
    pairs = two.pairs(factors) if two else list(itertools.combinations(factors, 2))
    terms = [(f,) for f in factors] + pairs
    aliases = {" × ".join(t): two.aliases(*t) for t in terms} if two else {}
    shares = variance_shares(done.assign(accuracy=100 * done["test_accuracy"]), terms, blocks, "accuracy")
    if shares.empty:
        return pd.DataFrame(columns=IMPORTANCE_COLUMNS)
    seeds = shares.groupby(["dataset", "term", "seed"], sort=False)["share"].mean().reset_index()
    rows = []
    for (dataset, term), group in seeds.groupby(["dataset", "term"], sort=False):
        mean, low, high = t_interval(group["share"].to_numpy(), confidence, bounds=(0.0, 100.0))
        rows.append({"dataset": dataset, "term": term, "aliases": aliases.get(term, ""), "share": mean,
                     "ci_low": low, "ci_high": high, "n": len(group)})
    table = pd.DataFrame(rows, columns=IMPORTANCE_COLUMNS).assign(_rest=lambda t: t["term"] == "rest")
    table = table.sort_values(["dataset", "_rest", "share"], ascending=[True, True, False], kind="stable")
    return table.drop(columns="_rest").reset_index(drop=True)


EXPECTED_COLUMNS = ["config", "dataset", "candidates", "mean", "ci_low", "ci_high", "n"]


def expected_max_table(res: Results, confidence: float) -> pd.DataFrame:
    """Expected best validation accuracy (%) against the number of candidates tried, per configuration
    (`stats.expected_max` over its done candidates, per dataset and seed; mean and t-interval over
    seeds with every candidate done). `res` holds every candidate's run (not a tuned view)."""
    shown = [f for f in res.factors if res.runs[f].nunique() > 1] or res.factors
    keys = [*shown, "dataset", "seed"]
    rows = []
    for key, group in res.runs.groupby(keys, sort=False):
        if not (group["status"] == "done").all():
            continue
        values = 100 * group["val_accuracy"].to_numpy(dtype=float)
        config = " ".join(f"{f.split('.')[-1]}={v}" for f, v in zip(shown, key[:len(shown)]))
        rows += [{"config": config, "dataset": key[-2], "seed": key[-1], "candidates": n,
                  "value": expected_max(values, n)} for n in range(1, len(values) + 1)]
    if not rows:
        return pd.DataFrame(columns=EXPECTED_COLUMNS)
    out = []
    for (config, dataset, n), group in pd.DataFrame(rows).groupby(["config", "dataset", "candidates"], sort=False):
        mean, low, high = t_interval(group["value"].to_numpy(), confidence, bounds=(0.0, 100.0))
        out.append({"config": config, "dataset": dataset, "candidates": n, "mean": mean, "ci_low": low,
                    "ci_high": high, "n": len(group)})
    return pd.DataFrame(out, columns=EXPECTED_COLUMNS)


def tuned_against_fixed(tuned: pd.DataFrame, fixed: pd.DataFrame | None) -> pd.DataFrame:
    """Each main effect tuned beside the same effect at the grid's own values of the tuned fields."""
    keys = ["factor", "comparison", "dataset"]
    columns = ["mean", "ci_low_adjusted", "ci_high_adjusted", "verdict", "n"]
    out = tuned[[*keys, *columns]].rename(columns={c: f"tuned_{c}" for c in columns})
    if fixed is None or fixed.empty:
        return out.assign(**{f"fixed_{c}": math.nan for c in columns})
    return out.merge(fixed[[*keys, *columns]].rename(columns={c: f"fixed_{c}" for c in columns}), on=keys, how="left")


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
