"""REPORT.md (and REPORT.html), the paper tables and the figures of one or more grids, from their
stored records alone: `frames` reads the records, `effects` computes the tables, this module
renders them and writes the report folder so that nothing in it is older than the records.
"""
from __future__ import annotations

import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Collection, Sequence

import pandas as pd

from . import figures, latex
from .data import DATASETS, data_root
from .designs import TWO_LEVEL, describe
from .effects import (accuracy_table, against_base, class_effect_table, cost_table, effect_tables, expected_max_table,
                      importance_table, per_class_table, reference_table, report_settings, tuned_against_fixed)
from .errors import AblatrixError
from .figures import MAX_HEATMAP_ROWS, config_label
from .findings import (class_deltas_md, deltas_md, findings, cell_text, importance_lines, interaction_sentence,
                       interactions_md, render, tuning_lines)
from .frames import Results, collect, tuned_views, varied
from .record import RunRecord
from .report_html import write_html
from .sequential import design_of, report_dir, seeding_state
from .spec import Grid, ReportSettings, axis_value
from .tuning import selection_table
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


def _accuracy_md(table: pd.DataFrame, factors: Sequence[str], level: str) -> pd.DataFrame:
    shown = table[[*factors, "dataset"]].copy()
    shown["accuracy %"] = [("**" if m == "best" else "") + (f"{a:.2f} ± {s:.2f}" if n > 1 else cell_text(a))
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
    res = every = collect(grids, results)
    tune = next((g.tune for g in grids if g.tune), None)
    if tune:  # analysed as the selected candidates; the fixed values beside them
        res, fixed = tuned_views(res)
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
    counts = every.runs["status"].value_counts()
    datasets = list(dict.fromkeys(res.runs["dataset"]))
    state = seeding_state(grids, results)
    design = design_of(grids, state)
    cap = design.max_seeds if design else SEEDS_CAP
    tables = {"accuracy": accuracy_table(res, settings), "per_class_accuracy": per_class_table(res),
              "cost": cost_table(every), **effect_tables(res, settings, design),
              "per_class_deltas": class_effect_table(res, settings, design),
              "importance": importance_table(res, settings.confidence)}
    if tune:
        tables["tuned_vs_fixed"] = tuned_against_fixed(
            tables["deltas"], effect_tables(fixed, settings)["deltas"] if fixed is not None else None)
        tables["selection"] = selection_table(res.runs, varied(res), list(tune.fields), {
            f: [axis_value(c[i]) for c in tune.candidates] for i, f in enumerate(tune.fields)})
        tables["expected_max"] = expected_max_table(every, settings.confidence)
    lines = [f"# {out.name}: ablation report", ""]
    lines += [f"{g.name}: {g.description}" if len(grids) > 1 else g.description
              for g in grids if g.description] + [""]
    lines += [f"Grid file(s) `{paths}`: {len(every.runs)} cells ({counts.get('done', 0)} done, "
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
    lines += [render(deltas_md(tables["deltas"], settings.confidence, cap), "md") if len(tables["deltas"])
              else "Nothing varies yet, or no complete pairs.", ""]
    if len(tables["interactions"]):
        lines += ["## Interactions", "",
                  "Does one factor's effect depend on another's level? Each row is A's effect at B's "
                  "other level minus its effect at B's first level, "
                  + ("from the design's four quarter means per seed, once per alias chain; " if two_level else
                     "paired on seed and every other factor; ") + "`detected` when the adjusted CI excludes 0.", ""]
        lines += [interaction_sentence(r) for r in detected.itertuples()] or ["No interaction detected."]
        lines += ["", render(interactions_md(tables["interactions"], settings.confidence, cap), "md"), ""]
    if "selection" in tables:
        lines += tuning_lines(tables, grids[0], settings.confidence)
    if len(tables["importance"]):
        lines += ["## Which factors matter most", "",
                  "Each factor's and two-factor interaction's share of the variance of test accuracy between "
                  "configurations (functional ANOVA, per seed; mean and interval over seeds); `rest`: "
                  "higher-order interactions. Seed noise between configurations lands in every share, so a "
                  "factor that does nothing still gets a little.", "",
                  *importance_lines(tables["importance"]), render(tables["importance"], "md"), ""]
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
                      render(class_deltas_md(tables["per_class_deltas"], dataset), "md"), ""]
    total = every.runs["wall_seconds"].sum()
    lines += ["## Cost", "", f"Total wall time of stored runs: {total:.1f} s.", "",
              render(tables["cost"], "md", res.factors), ""]
    damaged = [path for g in grids for path in ResultStore(results, g.name).damaged()]
    if damaged:
        lines += ["## Damaged records", "", "These files could not be read as records and were set "
                  "aside; their cells count as not trained. Delete them once you have looked.", ""]
        lines += [f"- `{path.relative_to(results).as_posix()}`" for path in damaged] + [""]
    failed = every.runs[every.runs["status"] == "failed"]
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
