"""REPORT.md (and REPORT.html), the paper tables and the figures of one or more grids, from their
stored records alone: `frames` reads the records, `effects` computes the tables, this module
renders them and writes the report folder so that nothing in it is older than the records.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Collection, Sequence

import pandas as pd
from tabulate import tabulate

from . import figures, latex
from .data import DATASETS, data_root
from .designs import TWO_LEVEL, describe
from .effects import (accuracy_table, against_base, class_effect_table, cost_table, effect_tables, importance_table,
                      per_class_table, reference_table, report_settings)
from .errors import AblatrixError
from .figures import MAX_HEATMAP_ROWS, config_label
from .frames import Results, collect, varied
from .record import RunRecord
from .report_html import write_html
from .sequential import design_of, report_dir, seeding_state
from .spec import Grid, ReportSettings
from .boundaries import Design
from .stats import RESAMPLES, SEEDS_CAP
from .store import ResultStore, atomic_write_text


FORMATS = ("md", "tex", "csv", "html")  # html: REPORT.html, the whole report as one page


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
        **({"aliased with": deltas["aliases"]} if "aliases" in deltas and deltas["aliases"].astype(bool).any() else {}),
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
        "seeds to decide": [_seeds(x, n, cap) for x, n in zip(interactions["seeds_needed"], interactions["n"])],
        **({"aliased with": interactions["aliases"]} if "aliases" in interactions else {})})


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
    depends += _aliased(row)
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


def _aliased(row: Any) -> str:
    """A fraction's estimate is the sum of its alias chain: the sentence says what it cannot tell apart."""
    aliases = getattr(row, "aliases", "")
    if not aliases:
        return ""
    if "partially" not in aliases and all(len(term) > 2 for term in aliases.split(", ")):
        return f"; aliased only with interactions of three or more factors ({aliases}), usually negligible"
    return f"; **aliased with {aliases}**: the design cannot tell this estimate from theirs, which it includes"


def _interaction_sentence(row: Any) -> str:
    return (f"- `{row.factor_a}`'s effect ({row.comparison_a}) **depends on** `{row.factor_b}`: "
            f"{row.effect_at_base:+.2f} pp at {row.base_b}, {row.effect_at_level:+.2f} pp at {row.level_b} "
            f"(difference {row.mean:+.2f} pp, adjusted CI {_interval(row.ci_low_adjusted, row.ci_high_adjusted)}, "
            f"{_replicates(row.n, row.pairs)}){_aliased(row)}.")


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


def _provenance(records: list[RunRecord]) -> list[str]:
    devices = sorted({f"{r.device} ({r.device_name})" for r in records})
    torch_versions = sorted({str(r.torch) for r in records})
    revisions = sorted({str(r.code_revision) for r in records})
    return [f"- device: {', '.join(devices)}", f"- torch: {', '.join(torch_versions)}",
            f"- ablatrix code: {', '.join(revisions)}"]


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
    root = data_root(data_dir)
    if res.done.empty:
        missing = unavailable_data(grids, root)
        raise AblatrixError(f"no finished run of {paths} in {results} yet: run `ablatrix run {paths}"
                            + (f" --results {results}" if Path(results) != Path("results") else "") + "` first"
                            + (f" (data not here yet: {', '.join(missing)}; `ablatrix list --data-dir DIR` "
                               "says where each goes)" if missing else ""))
    formats = [*formats, *(f for f in formats_written(out) if f not in formats)]
    # A committed report must not carry this machine's folders: name the data folder by its rule.
    missing = {name: message.replace(str(root), "<data>")
               for name, message in unavailable_data(grids, root, set(res.done["dataset"])).items()}
    counts = res.runs["status"].value_counts()
    datasets = list(dict.fromkeys(res.runs["dataset"]))
    state = seeding_state(grids, results)
    design = design_of(grids, state)
    cap = design.max_seeds if design else SEEDS_CAP
    tables = {"accuracy": accuracy_table(res, settings), "per_class_accuracy": per_class_table(res),
              "cost": cost_table(res), **effect_tables(res, settings, design),
              "per_class_deltas": class_effect_table(res, settings, design),
              "importance": importance_table(res, settings.confidence)}
    lines = [f"# {out.name}: ablation report", ""]
    lines += [f"{g.name}: {g.description}" if len(grids) > 1 else g.description
              for g in grids if g.description] + [""]
    lines += [f"Grid file(s) `{paths}`: {len(res.runs)} cells ({counts.get('done', 0)} done, "
              f"{counts.get('failed', 0)} failed, {counts.get('pending', 0)} pending). "
              f"Regenerate with `ablatrix report {paths}` (trains nothing).", ""]
    lines += [f"Design of {g.name}: one-at-a-time (the base, each axis at its first value, and each other "
              "value changed alone): every effect is that value against the base; interactions cannot be "
              "estimated.\n" for g in grids if g.design.kind == "one-at-a-time"]
    for g in (g for g in grids if g.design.kind in TWO_LEVEL):
        said = describe(g.axes, g.design)
        lines += [f"Design of {g.name}: {g.design}. {said[0]}. {said[1]}. Each effect is a contrast per replicate "
                  "(dataset, seed, variant): the mean over the design's runs at the factor's second value minus "
                  "the mean at its first, decided over seeds as paired differences are; only replicates whose "
                  "every run is done count. An estimate aliased with other terms is their sum; an interaction "
                  "aliased with a main effect is not estimated." + (" " + said[2] if len(said) > 2 else ""), ""]
        lines += [f"- {chain.strip()}" for chain in said[3:]] + ([""] if len(said) > 3 else [])
    two_level = any(g.design.kind in TWO_LEVEL for g in grids)
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
    finished = [r for r in res.records.values() if r.done]  # the numbers' sources
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
              "average over the other factors is not the whole story.", ""] if not two_level else [
              "## Ablation effects (contrasts, percentage points)", "",
              "Each row is a factor's second value against its first, the contrast over every run of the "
              "design, per seed (see Design above). `aliased with`: terms the estimate includes.", ""]
    lines += [render(_deltas_md(tables["deltas"], settings.confidence, cap), "md") if len(tables["deltas"])
              else "Nothing varies yet, or no complete pairs.", ""]
    if len(tables["interactions"]):
        lines += ["## Interactions", "",
                  "Does one factor's effect depend on another's level? Each row is A's effect at B's "
                  "other level minus its effect at B's first level, "
                  + ("from the design's four quarter means per seed, once per alias chain; " if two_level else
                     "paired on seed and every other factor; ") + "`detected` when the adjusted CI excludes 0.", ""]
        lines += [_interaction_sentence(r) for r in detected.itertuples()] or ["No interaction detected."]
        lines += ["", render(_interactions_md(tables["interactions"], settings.confidence, cap), "md"), ""]
    if len(tables["importance"]):
        lines += ["## Which factors matter most", "",
                  "Each factor's and two-factor interaction's share of the variance of test accuracy between "
                  "configurations (functional ANOVA, per seed; mean and interval over seeds); `rest`: "
                  "higher-order interactions. Seed noise between configurations lands in every share, so a "
                  "factor that does nothing still gets a little.", "",
                  render(tables["importance"], "md"), ""]
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
        lines += [f"- `{r.run_id}` {r.variant} {r.dataset} seed {r.seed}: {res.records[r.run_id].error}"
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
