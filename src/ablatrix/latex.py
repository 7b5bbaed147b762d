"""Two LaTeX tables that go into a paper as they are: the ablation table and the effects table.

Both are booktabs tables (`\\usepackage{booktabs}`, nothing else) with a caption and a label,
numbers in math mode with a true minus, and headers a reader understands. The ablation table has
one row per configuration and one column per dataset, mean ± std over seeds, the best mean of
each dataset in bold, and a mark where a configuration's paired difference from the base (the
grid's first configuration, same seeds) is decided; the effects table has one row per effect
with its mean difference, adjusted interval and verdict. The full-precision numbers stay in the
CSV tables.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

import pandas as pd

MARKS = {"better": r"$^{\uparrow}$", "worse": r"$^{\downarrow}$", "equivalent": r"$^{\approx}$"}


SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
           "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "−": "$-$", "→": r"$\rightarrow$",
           "±": r"$\pm$", "×": r"$\times$", "Δ": r"$\Delta$"}


def escape(text: object) -> str:
    """Text for LaTeX: its special characters escaped (in one pass), a Unicode minus or arrow as math."""
    return re.sub("|".join(map(re.escape, SPECIAL)), lambda m: SPECIAL[m.group(0)], str(text))


def _digits(x: float, signed: bool) -> str:
    return f"{round(float(x), 2) + 0.0:+.2f}" if signed else f"{round(float(x), 2) + 0.0:.2f}"


def number(x: float, signed: bool = False) -> str:
    """A number in math mode, 2 decimals, with a true minus sign; '--' for a missing one."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "--"
    return f"${_digits(x, signed)}$"


def interval(low: float, high: float) -> str:
    """[low, high] in math mode, signed; '--' without an interval."""
    return "--" if math.isnan(low) else f"$[{_digits(low, True)}, {_digits(high, True)}]$"


def _table(columns: str, header: Sequence[str], rows: list[list[str]], caption: str, label: str,
           note: str) -> str:
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{caption}}}", rf"\label{{{label}}}",
             rf"\begin{{tabular}}{{{columns}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    lines += [" & ".join(row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if note:
        lines += [r"\par\smallskip", rf"\parbox{{\linewidth}}{{\footnotesize {note}}}"]
    return "\n".join(lines + [r"\end{table}"]) + "\n"


def ablation_table(accuracy: pd.DataFrame, against_base: pd.DataFrame, factors: Sequence[str], name: str,
                   confidence: float, margin: float) -> str:
    """Configurations x datasets, test accuracy mean ± std over seeds (%); the best mean per dataset
    in bold; ↑ / ↓ / ≈ where the paired difference from the base configuration is decided
    (`against_base`: config, dataset, verdict)."""
    shown = [f for f in factors if accuracy[f].nunique() > 1] or list(factors[:1])
    datasets = list(dict.fromkeys(accuracy["dataset"]))
    frame = accuracy.assign(config=[tuple(row) for row in accuracy[shown].itertuples(index=False)])
    configs = list(dict.fromkeys(frame["config"]))
    best = {d: frame.loc[frame["dataset"] == d, "mean"].max() for d in datasets}
    verdicts = {(c, d): v for c, d, v in zip(against_base["config"], against_base["dataset"], against_base["verdict"])}
    rows = []
    for config in configs:
        row = [escape(v) for v in config]
        for dataset in datasets:
            cell = frame[(frame["config"] == config) & (frame["dataset"] == dataset)]
            if cell.empty or math.isnan(cell["mean"].iat[0]):
                row.append("--")
                continue
            mean, std, n = cell["mean"].iat[0], cell["std"].iat[0], int(cell["n"].iat[0])
            text = f"{mean:.2f}" + (rf" \pm {std:.2f}" if n > 1 else "")
            text = rf"\mathbf{{{text}}}" if mean == best[dataset] else text
            row.append(f"${text}$" + MARKS.get(verdicts.get((config, dataset), ""), ""))
        rows.append(row)
    header = [escape(f.split(".")[-1]) for f in shown] + [escape(d) for d in datasets]
    base = ", ".join(f"{escape(f.split('.')[-1])} {escape(v)}" for f, v in zip(shown, configs[0]))
    note = (rf"Test accuracy (%), mean $\pm$ sample std over seeds. Bold: the best mean per dataset. "
            rf"$^{{\uparrow}}$/$^{{\downarrow}}$: higher/lower than the base configuration ({base}) on the same "
            rf"seeds, the Holm-adjusted {confidence:.0%} interval of the paired difference excluding 0; "
            rf"$^{{\approx}}$: that interval inside $\pm{margin:g}$ pp.").replace("%", r"\%")
    return _table("l" * len(shown) + "c" * len(datasets), header, rows,
                  f"Ablation of {escape(name)}: test accuracy (\\%) per configuration", f"tab:{name}-ablation", note)


def effects_table(deltas: pd.DataFrame, interactions: pd.DataFrame, name: str, confidence: float,
                  margin: float) -> str:
    """One row per main effect (and detected or undecided interaction): the change, dataset, mean
    paired difference (pp), adjusted interval, seeds and verdict."""
    changes = [escape(f"{r.factor.split('.')[-1]}: {r.comparison}") for r in deltas.itertuples()]
    changes += [escape(f"{r.factor_a.split('.')[-1]}: {r.comparison_a}") + r" $\times$ "
                + escape(f"{r.factor_b.split('.')[-1]}: {r.base_b} → {r.level_b}") for r in interactions.itertuples()]
    effects = [*deltas.itertuples(), *interactions.itertuples()]
    rows = [[change, escape(r.dataset), number(r.mean, True), interval(r.ci_low_adjusted, r.ci_high_adjusted),
             str(r.n), escape(r.verdict)] for change, r in zip(changes, effects)]
    note = (rf"Paired differences in test accuracy (percentage points), matched on seed and every other "
            rf"factor, averaged within each seed. Intervals: {confidence:.0%}, Holm-adjusted per dataset. "
            rf"Verdicts: equivalent when the interval lies inside $\pm{margin:g}$ pp, else better/worse when it "
            rf"excludes 0; an interaction is detected when its interval excludes 0.").replace("%", r"\%")
    return _table("llrccl", ["Change", "Dataset", r"$\Delta$ (pp)", "Adjusted CI", "Seeds", "Verdict"], rows,
                  f"Effects in {escape(name)}: paired differences in test accuracy", f"tab:{name}-effects", note)
