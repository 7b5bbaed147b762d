"""The report's words: effect and interaction tables as Markdown rows, and findings as sentences
that say what the data show and no more (decided first, aliases and dependencies named).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import pandas as pd
from tabulate import tabulate

from .spec import DEFAULT_MODEL
from .stats import SEEDS_CAP
from .tuning import own_values


def cell_text(x: Any) -> str:
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
    cells = [[str(v) if c in verbatim else cell_text(v) for c, v in zip(table.columns, row)]
             for row in table.itertuples(index=False)]
    return tabulate(cells, headers=list(table.columns), tablefmt="github" if fmt == "md" else
                    "latex_booktabs", disable_numparse=True)


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


def deltas_md(deltas: pd.DataFrame, confidence: float, cap: int) -> pd.DataFrame:
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


def interactions_md(interactions: pd.DataFrame, confidence: float, cap: int) -> pd.DataFrame:
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


def class_deltas_md(class_deltas: pd.DataFrame, dataset: str) -> pd.DataFrame:
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


def interaction_sentence(row: Any) -> str:
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
    lines += [interaction_sentence(r) for r in interactions.itertuples()]
    lines += [_effect_sentence(r, margin, cap) for r in open_.itertuples()]
    return lines + [""]


def importance_lines(table: pd.DataFrame) -> list[str]:
    """Per dataset, what the variance shares' order shows: the largest share's term where its interval
    lies above every other term's, else that the order is not evidence (the table is sorted all the same)."""
    lines = []
    for dataset, rows in table[table["term"] != "rest"].groupby("dataset", sort=False):
        top, others = rows.iloc[0], rows.iloc[1:]
        if top["ci_low"] > others["ci_high"].max():
            lines.append(f"- {dataset}: `{top['term']}` has the largest share ({top['share']:.1f}%, interval "
                         f"{_interval(top['ci_low'], top['ci_high'], False)}), above every other term's interval.")
        else:
            why = ("one seed gives no interval" if top["n"] < 2 else
                   f"the largest share's interval overlaps another's ({int(top['n'])} seeds)")
            lines.append(f"- {dataset}: {why}, so the order of the table does not show which factor matters most; "
                         "more seeds narrow the intervals.")
    return lines + ([""] if lines else [])


def _effect_words(verdict: str, mean: float, low: float, high: float) -> str:
    words = {"better": "raises test accuracy", "worse": "lowers test accuracy",
             "equivalent": "makes no practical difference", "undecided": "is undecided"}
    return f"{words.get(verdict, verdict)} ({mean:+.2f} pp, adjusted CI {_interval(low, high)})"


def tuning_lines(tables: dict[str, pd.DataFrame], grid: Any, confidence: float) -> list[str]:
    """The report's Tuning section: what was tuned and how it selected, each main effect tuned beside
    it at the grid's own values (a sentence where the verdicts differ), which candidates were
    selected, and the expected best validation accuracy against the number of candidates."""
    tune, compared = grid.tune, tables["tuned_vs_fixed"]
    candidates = "; ".join(f"`{f}` in {[c[i] for c in tune.candidates]}" for i, f in enumerate(tune.fields))
    own = ", ".join(f"{f}={v}" for f, v in own_values(tune, grid.spec.base, DEFAULT_MODEL).items())
    lines = ["## Tuning", "",
             f"Every configuration trained the same {len(tune.candidates)} candidates ({candidates}); for each "
             f"configuration, dataset and seed the candidate with the best `{tune.metric}` at its tested epoch "
             "stands for it, so every table above is of the selected runs. Test accuracy selects nothing. "
             "Below, each main effect tuned beside the same effect at the grid's own value"
             + (f" ({own})" if own else "") + ".", ""]
    if compared["fixed_verdict"].isna().all():
        lines += ["The grid's own value of the tuned fields is not among the candidates: no fixed-value effect "
                  "to set beside the tuned ones (add it to the candidates to see both).", ""]
    for row in compared.dropna(subset=["fixed_verdict"]).itertuples():
        if row.fixed_verdict != row.tuned_verdict:
            fixed = _effect_words(row.fixed_verdict, row.fixed_mean, row.fixed_ci_low_adjusted, row.fixed_ci_high_adjusted)
            tuned = _effect_words(row.tuned_verdict, row.tuned_mean, row.tuned_ci_low_adjusted, row.tuned_ci_high_adjusted)
            lines.append(f"- `{row.factor}` {row.comparison} on {row.dataset}: at the grid's own value{'s' if len(tune.fields) > 1 else ''} it "
                         f"{fixed}; **tuned, it {tuned}**.")
    if len(lines) and lines[-1].startswith("- "):
        lines.append("")
    lines += [render(pd.DataFrame({
        "factor": compared["factor"], "comparison": compared["comparison"], "dataset": compared["dataset"],
        "fixed Δ (pp)": [f"{m:+.2f} {_interval(lo, hi)}" if m == m else "" for m, lo, hi in
                         zip(compared["fixed_mean"], compared["fixed_ci_low_adjusted"], compared["fixed_ci_high_adjusted"])],
        "fixed verdict": compared["fixed_verdict"].fillna(""),
        "tuned Δ (pp)": [f"{m:+.2f} {_interval(lo, hi)}" for m, lo, hi in
                         zip(compared["tuned_mean"], compared["tuned_ci_low_adjusted"], compared["tuned_ci_high_adjusted"])],
        "tuned verdict": compared["tuned_verdict"]}), "md"), ""]
    selection = tables["selection"]
    edge = selection["at_edge"].dropna()
    lines += ["Candidates selected (per configuration and dataset, over seeds); `at_edge`: the share of "
              "selections at the smallest or largest candidate of a numeric field, a sign the range is too "
              "narrow." + (f" **{(edge >= 0.5).sum()} configuration(s) selected an edge candidate in half or more "
                           "of their seeds: widen the range.**" if (edge >= 0.5).any() else ""), "",
              render(selection, "md", [c for c in selection if c not in ("seeds", "at_edge")]), ""]
    return lines
