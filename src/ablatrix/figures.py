"""Report figures, each saved as PNG and PDF, that stay readable from 4 runs to thousands.

Figures are organised by factor, not by configuration: learning curves and accuracy-vs-axis plots
draw one line per level of a factor (averaged over the other factors, bands over seeds), and every
level keeps one colour in every figure of a report. Per-configuration views (curves, the per-class
heatmap) are drawn only while there are few configurations; beyond that the curves show the best
few and the baseline, and the per-class view shows each factor level's per-class effect.

Each function takes the frames it draws (runs, per-class rows, records, effect tables), never the
report.
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .data import DATASETS  # noqa: E402
from .record import RunRecord  # noqa: E402
from .stats import t_interval  # noqa: E402

Figure = tuple[str, Path]  # (caption, PNG path)
Records = dict[str, RunRecord]
Colours = dict[str, dict[Any, Any]]  # factor -> level -> colour
MAX_CURVES = 8  # configurations drawn one by one in the learning curves; beyond: best few + baseline
BEST_SHOWN = 3
MAX_HEATMAP_ROWS = 24  # configurations in the per-class heatmap; beyond: per-class effects
LABEL_WIDTH = 32  # characters before a label wraps


def _save(fig: plt.Figure, folder: Path, stem: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / f"{stem}.png", dpi=110, bbox_inches="tight")
    # No creation date: a regenerated report leaves an unchanged figure byte-identical. Fonts as
    # TrueType (Type 42), not matplotlib's default Type 3, which submission checks such as IEEE's
    # PDF eXpress reject: the PDF goes into a paper as it is.
    with matplotlib.rc_context({"pdf.fonttype": 42}):
        fig.savefig(folder / f"{stem}.pdf", dpi=110, bbox_inches="tight", metadata={"CreationDate": None})
    plt.close(fig)
    return folder / f"{stem}.png"


def short(factor: str) -> str:
    """'model.dropout' -> 'dropout': the short form used in every label."""
    return factor.split(".")[-1]


def config_label(row: pd.Series | dict, factors: Sequence[str]) -> str:
    """'base bn=true dropout=0.3' style label of one configuration, for figures and column heads;
    pass only the factors that vary."""
    parts = [str(row[f]) for f in factors if f in ("grid", "variant")]
    parts += [f"{short(f)}={row[f]}" for f in factors if f not in ("grid", "variant")]
    return " ".join(parts) or "all runs"


def labelled(frame: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    return frame.assign(config=[config_label(row, factors) for row in frame[list(factors)].to_dict("records")])


def _wrap(label: str) -> str:
    return textwrap.fill(label, LABEL_WIDTH)


def colours(done: pd.DataFrame, factors: Sequence[str]) -> Colours:
    """One colour per level of each factor, in the grid's order, shared by every figure."""
    table = {}
    for factor in factors:
        levels = list(dict.fromkeys(done[factor]))
        palette = sns.color_palette("tab10" if len(levels) <= 10 else "husl", len(levels))
        table[factor] = dict(zip(levels, palette))
    return table


def _legend(ax: plt.Axes, title: str) -> None:
    """Beside the plot, in columns once it would grow taller than the plot."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(handles, labels, title=title, fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5),
                  ncol=-(-len(labels) // 6), frameon=False)  # at most 6 rows: never taller than a panel


def history_frame(done: pd.DataFrame, records: Records, factors: Sequence[str]) -> pd.DataFrame:
    """Long per-epoch history of finished runs: factors, seed, epoch, split, metric, value."""
    keys = ["run_id", "seed", *factors]
    rows = [(*(run[k] for k in keys), h["epoch"], split, metric, h[f"{split}_{metric}"])
            for run in done[keys].to_dict("records") for h in records[run["run_id"]].history
            for split in ("train", "val") for metric in ("loss", "accuracy")]
    return pd.DataFrame(rows, columns=[*keys, "epoch", "split", "metric", "value"])


def over_seeds(frame: pd.DataFrame, keys: Sequence[str], value: str) -> pd.DataFrame:
    """`value` averaged over everything but `keys` within each seed, then mean and std over seeds:
    one row per combination of `keys`, the std telling seed-to-seed spread only; `runs`, the rows
    behind it (fewer at late epochs once early stopping ended some runs)."""
    per_seed = frame.groupby([*keys, "seed"], sort=False)[value].mean()
    out = per_seed.groupby(list(keys), sort=False).agg(["mean", "std"])
    return out.join(frame.groupby(list(keys), sort=False)[value].size().rename("runs")).reset_index()


def _band(ax: plt.Axes, rows: pd.DataFrame, colour: Any, split: str, label: str | None) -> None:
    """Mean line, validation solid with a ± 1 std band (where there is a std), train dashed; past the
    first epoch some run of the line no longer reached (early stopping), a thin dotted line with a
    tick at that epoch: the mean of the runs still training is not the same average."""
    rows = rows.sort_values("epoch")
    full = rows["runs"] >= rows["runs"].max() if "runs" in rows else pd.Series(True, index=rows.index)
    last = rows.loc[full, "epoch"].max()
    whole, tail = rows[rows["epoch"] <= last], rows[rows["epoch"] >= last]
    ax.plot(whole["epoch"], whole["mean"], "-" if split == "val" else "--", color=colour, label=label, lw=1.2)
    if len(tail) > 1:
        ax.plot(tail["epoch"], tail["mean"], ":", color=colour, lw=0.8)
        if split == "val":
            ax.plot([last], whole["mean"].iloc[-1:], "|", color=colour, ms=9, mew=1.5)
    rows = whole
    if split == "val":  # one band per line pair keeps the figure legible and its PDF small
        ax.fill_between(rows["epoch"], rows["mean"] - rows["std"], rows["mean"] + rows["std"], color=colour,
                        alpha=0.15, lw=0)


def curves_by_factor(history: pd.DataFrame, factors: Sequence[str], palette: Colours, dataset: str,
                     folder: Path) -> Figure:
    """One row per varied factor: loss and accuracy per epoch, one line per level of the factor,
    averaged over the other factors (per seed), band ± 1 std over seeds."""
    fig, axes = plt.subplots(len(factors), 2, figsize=(9, 2.4 * len(factors)), squeeze=False)
    for row, factor in zip(axes, factors):
        summary = over_seeds(history, [factor, "epoch", "split", "metric"], "value")
        for ax, metric in zip(row, ("loss", "accuracy")):
            for level, colour in palette[factor].items():
                for split in ("train", "val"):
                    rows = summary[(summary[factor] == level) & (summary["split"] == split) &
                                   (summary["metric"] == metric)]
                    _band(ax, rows, colour, split, str(level) if split == "val" else None)
            ax.set(title=f"{short(factor)}: {metric}", xlabel="epoch", ylabel="")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _legend(row[1], short(factor))
    fig.suptitle(f"{dataset}: learning curves by factor (solid: validation with a band of ± 1 std over "
                 "seeds; dashed: train;\ndotted after a tick: some runs had stopped early, the mean is of those "
                 "still training)", y=1.02)
    fig.tight_layout()
    return f"{dataset}: learning curves by factor", _save(fig, folder, f"curves_by_factor_{dataset}")


def curves(history: pd.DataFrame, accuracy: pd.DataFrame, factors: Sequence[str], dataset: str,
           folder: Path) -> Figure:
    """Loss and accuracy per epoch of each configuration while there are few; beyond MAX_CURVES,
    of the best few by mean test accuracy and the baseline (the grid's first configuration)."""
    history = labelled(history, factors)
    table = labelled(accuracy[accuracy["dataset"] == dataset].dropna(subset=["mean"]), factors)
    if len(table) <= MAX_CURVES:
        shown = {config: _wrap(config) for config in table["config"]}
        title = "learning curves"
    else:
        best = table.nlargest(BEST_SHOWN, "mean")["config"]
        shown = {table["config"].iloc[0]: _wrap(f"baseline: {table['config'].iloc[0]}")}
        shown.update({config: _wrap(f"best {i}: {config}") for i, config in enumerate(best, 1)})
        title = f"learning curves of the best {BEST_SHOWN} of {len(table)} configurations and the baseline"
    summary = (history[history["config"].isin(shown)]
               .groupby(["config", "epoch", "split", "metric"], sort=False)["value"]
               .agg(["mean", "std"]).join(history.groupby(["config", "epoch", "split", "metric"], sort=False)
                                         ["value"].size().rename("runs")).reset_index())
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        for (config, label), colour in zip(shown.items(), sns.color_palette("tab10", len(shown))):
            for split in ("train", "val"):
                rows = summary[(summary["config"] == config) & (summary["split"] == split)
                               & (summary["metric"] == metric)]
                _band(ax, rows, colour, split, label if split == "val" else None)
        ax.set(title=metric, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _legend(axes[1], "configuration\n(solid: validation, band ± 1 std\nover seeds; dashed: train;\ndotted: "
                     "runs stopped early)")
    fig.suptitle(f"{dataset}: {title}", y=1.02)
    return f"{dataset}: {title}", _save(fig, folder, f"curves_{dataset}")


def per_class_heatmap(per_class: pd.DataFrame, factors: Sequence[str], dataset: str, folder: Path) -> Figure:
    """Mean per-class test accuracy, configurations x classes (few configurations only)."""
    rows = labelled(per_class[per_class["dataset"] == dataset], factors)
    matrix = rows.pivot_table(index="config", columns="class", values="accuracy", sort=False)
    matrix = matrix[[c for c in DATASETS[dataset].classes if c in matrix]]
    matrix.index = [_wrap(label) for label in matrix.index]
    fig, ax = plt.subplots(figsize=(1 + 0.6 * matrix.shape[1], 1 + 0.4 * matrix.shape[0]))
    sns.heatmap(100 * matrix, annot=matrix.shape[1] <= 12, fmt=".0f", cmap="viridis", ax=ax,
                cbar_kws={"label": "accuracy %"})
    ax.set(title=f"{dataset}: per-class test accuracy", xlabel="class", ylabel="")
    return f"{dataset}: per-class accuracy", _save(fig, folder, f"per_class_{dataset}")


def per_class_effects(class_deltas: pd.DataFrame, dataset: str, folder: Path) -> Figure:
    """Per-class effect (mean Δ pp against the factor's first value) of every factor level:
    levels x classes, for grids with too many configurations for one row each."""
    rows = class_deltas[class_deltas["dataset"] == dataset]
    rows = rows.assign(effect=rows["factor"].map(short) + ": " + rows["comparison"].astype(str))
    matrix = rows.pivot_table(index="effect", columns="class", values="mean", sort=False)
    matrix = matrix[[c for c in DATASETS[dataset].classes if c in matrix]]
    limit = float(np.nanmax(np.abs(matrix.to_numpy()))) or 1.0
    fig, ax = plt.subplots(figsize=(1.5 + 0.6 * matrix.shape[1], 1 + 0.35 * matrix.shape[0]))
    sns.heatmap(matrix, annot=matrix.shape[1] <= 12 and matrix.shape[0] <= 30, fmt=".1f", cmap="RdBu",
                vmin=-limit, vmax=limit, ax=ax, cbar_kws={"label": "Δ accuracy, pp"})
    ax.set(title=f"{dataset}: per-class effect of each factor level", xlabel="class", ylabel="")
    return f"{dataset}: per-class effects (pp against each factor's first value)", \
        _save(fig, folder, f"per_class_effects_{dataset}")


def confusion(done: pd.DataFrame, records: Records, factors: Sequence[str], dataset: str, best_config: str,
              folder: Path) -> Figure:
    """Row-normalised confusion matrix of the best configuration, summed over its seeds."""
    runs = labelled(done[done["dataset"] == dataset], factors)
    matrices = [np.array(records[r].test.confusion) for r in
                runs.loc[runs["config"] == best_config, "run_id"]]
    total = np.sum(matrices, axis=0)
    normalised = total / np.maximum(total.sum(axis=1, keepdims=True), 1)
    classes = DATASETS[dataset].classes
    fig, ax = plt.subplots(figsize=(1.5 + 0.5 * len(classes), 1 + 0.5 * len(classes)))
    sns.heatmap(normalised, annot=len(classes) <= 12, fmt=".2f", cmap="Blues", vmin=0, vmax=1,
                xticklabels=classes, yticklabels=classes, ax=ax)
    ax.set(title=_wrap(f"{dataset}: confusion of {best_config}"), xlabel="predicted", ylabel="true")
    return f"{dataset}: confusion matrix of the best configuration", _save(fig, folder, f"confusion_{dataset}")


def accuracy_vs_axis(done: pd.DataFrame, factors: Sequence[str], palette: Colours, dataset: str, axis: str,
                     folder: Path) -> Figure:
    """Test accuracy against a numeric axis: one panel per other varied factor, one line per level
    of it (averaged over the rest, per seed), bars ± 1 std over seeds; one line if nothing else varies."""
    done = done[done["dataset"] == dataset].assign(accuracy=100 * done["test_accuracy"])
    others = [f for f in factors if f != axis] or [None]
    fig, axes = plt.subplots(1, len(others), figsize=(4.2 * len(others), 3.3), squeeze=False, sharey=True)
    for ax, other in zip(axes[0], others):
        summary = over_seeds(done, [axis] + ([other] if other else []), "accuracy")
        levels = palette[other].items() if other else [(None, "tab:blue")]
        for level, colour in levels:
            rows = summary if other is None else summary[summary[other] == level]
            rows = rows.assign(x=rows[axis].astype(float)).sort_values("x")
            ax.errorbar(rows["x"], rows["mean"], yerr=rows["std"].fillna(0), marker="o", ms=3, capsize=2,
                        color=colour, label=None if other is None else str(level))
        ax.set(title=f"by {short(other)}" if other else "", xlabel=axis + (" (log scale)" if log_scale(
            done[axis]) else ""), ylabel="test accuracy %")
        if log_scale(done[axis]):
            ax.set_xscale("log")
        if other:  # below its own panel, so it never covers the next one
            ax.legend(title=short(other), fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.3),
                      ncol=min(5, len(palette[other])), frameon=False)
    fig.suptitle(f"{dataset}: accuracy vs {axis} (bars ± 1 std over seeds)", y=1.02)
    fig.tight_layout()
    stem = f"axis_{axis.replace('.', '_')}_{dataset}"
    return f"{dataset}: accuracy against {axis}", _save(fig, folder, stem)


def log_scale(values: pd.Series) -> bool:
    """Positive values spanning a factor of 10 or more (learning rates, weight decays) read on a log axis."""
    x = values.astype(float)
    return bool((x > 0).all() and x.max() / x.min() >= 10)


def forest(deltas: pd.DataFrame, interactions: pd.DataFrame, dataset: str, margin: float, confidence: float,
           folder: Path) -> Figure:
    """The effects of one dataset as a forest plot: each main effect (and interaction) its mean
    paired difference with its adjusted interval, the ±margin band of practical equivalence shaded,
    coloured by verdict."""
    rows = [(f"{short(r.factor)}: {r.comparison}", r.mean, r.ci_low_adjusted, r.ci_high_adjusted, r.verdict)
            for r in deltas[deltas["dataset"] == dataset].itertuples()]
    rows += [(f"{short(r.factor_a)} {r.comparison_a} × {short(r.factor_b)} {r.base_b}→{r.level_b}", r.mean,
              r.ci_low_adjusted, r.ci_high_adjusted, r.verdict)
             for r in interactions[interactions["dataset"] == dataset].itertuples()]
    colour = {"better": "tab:green", "worse": "tab:red", "equivalent": "tab:blue", "detected": "tab:purple",
              "undecided": "0.45"}
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.38 * len(rows)))
    ax.axvspan(-margin, margin, color="0.88", lw=0)
    ax.axvline(0, color="0.3", lw=0.8)
    for y, (label, mean, low, high, verdict) in enumerate(rows):
        c = colour.get(verdict, "0.45")
        if not np.isnan(low):
            ax.plot([low, high], [y, y], color=c, lw=2)
        ax.plot([mean], [y], "o", color=c, ms=5)
    for verdict, c in colour.items():  # one legend entry per verdict that occurs
        if any(r[4] == verdict for r in rows):
            ax.plot([], [], "o-", color=c, label=verdict)
    ax.set_yticks(range(len(rows)), [_wrap(r[0]) for r in rows])
    ax.invert_yaxis()
    ax.set(xlabel=f"Δ test accuracy, pp (mean over seeds, {confidence:.0%} CI adjusted; shaded: the "
                  f"equivalence margin ±{margin:g} pp)",
           title=f"{dataset}: effects against each factor's first value")
    _legend(ax, "verdict")
    return f"{dataset}: effects with adjusted intervals (forest plot)", _save(fig, folder, f"forest_{dataset}")


def importance(table: pd.DataFrame, dataset: str, confidence: float, folder: Path) -> Figure:
    """A Pareto chart of one dataset's variance shares: each term's share with its interval over
    seeds, largest first, and the cumulative share of the terms above it."""
    rows = table[table["dataset"] == dataset]
    labels = [" × ".join(short(f) for f in t.split(" × ")) + (f" (= {a})" if a else "")
              for t, a in zip(rows["term"], rows["aliases"])]
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.38 * len(rows)))
    y = np.arange(len(rows))
    ax.barh(y, rows["share"], color="tab:blue", alpha=0.8)
    errors = np.vstack([rows["share"] - rows["ci_low"], rows["ci_high"] - rows["share"]])
    ax.errorbar(rows["share"], y, xerr=np.nan_to_num(errors), fmt="none", ecolor="0.2", capsize=3)
    ax.plot(rows["share"].cumsum().clip(upper=100), y, "o-", color="tab:orange", ms=3, label="cumulative")
    ax.set_yticks(y, [_wrap(label) for label in labels])
    ax.invert_yaxis()
    ax.set(xlim=(0, 100), xlabel=f"share of the variance between configurations, % (mean over seeds, "
                                 f"{confidence:.0%} CI)", title=f"{dataset}: which factors matter most")
    _legend(ax, "")
    return f"{dataset}: variance shares (Pareto)", _save(fig, folder, f"importance_{dataset}")


def expected_best(table: pd.DataFrame, dataset: str, confidence: float, folder: Path) -> Figure:
    """Expected best validation accuracy against the number of candidates tried, one line per
    configuration with its interval over seeds (Dodge et al., EMNLP 2019)."""
    rows = table[table["dataset"] == dataset]
    fig, ax = plt.subplots(figsize=(7, 4))
    for config, line in rows.groupby("config", sort=False):
        ax.plot(line["candidates"], line["mean"], "o-", ms=3, label=_wrap(config))
        ax.fill_between(line["candidates"], line["ci_low"], line["ci_high"], alpha=0.2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlabel="candidates tried", ylabel=f"expected best validation accuracy, % ({confidence:.0%} CI over seeds)",
           title=f"{dataset}: expected best validation accuracy against the tuning budget")
    _legend(ax, "configuration")
    return f"{dataset}: expected best validation accuracy against candidates tried", _save(
        fig, folder, f"expected_best_{dataset}")


def _numeric(values: pd.Series) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def interaction(done: pd.DataFrame, a: str, b: str, palette: Colours, dataset: str, confidence: float,
                folder: Path) -> Figure:
    """Mean test accuracy at each level of `b` (x), one line per level of `a`, with t-intervals over
    seeds (each seed's accuracy averaged over the other factors first; clipped to 0-100). Parallel
    lines: no interaction; lines that cross or diverge: a's effect depends on b."""
    done = done[done["dataset"] == dataset]
    per_seed = (100 * done.groupby([a, b, "seed"], sort=False)["test_accuracy"].mean()).reset_index()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    b_levels = list(palette[b])
    for a_level, colour in palette[a].items():
        rows = per_seed[per_seed[a] == a_level]
        mean, low, high = np.array([t_interval(rows.loc[rows[b] == level, "test_accuracy"].to_numpy(), confidence)
                                    for level in b_levels]).T
        low, high = np.clip(low, 0, 100), np.clip(high, 0, 100)  # accuracy bounds; 2 seeds give t(1) = 12.7
        error = np.nan_to_num([mean - low, high - mean])  # no bar where one seed gives no interval
        ax.errorbar([str(v) for v in b_levels], mean, yerr=error, marker="o", capsize=3, color=colour,
                    label=str(a_level))
    ax.set(title=f"{dataset}: {a} x {b}", xlabel=b, ylabel="test accuracy %")
    _legend(ax, short(a))
    stem = f"interaction_{a.replace('.', '_')}_x_{b.replace('.', '_')}_{dataset}"
    return f"{dataset}: interaction of {a} and {b} (mean ± {confidence:.0%} CI over seeds)", _save(fig, folder, stem)


def draw_all(done: pd.DataFrame, per_class: pd.DataFrame, records: Records, factors: Sequence[str],
             tables: dict[str, pd.DataFrame], confidence: float, margin: float, folder: Path) -> list[Figure]:
    """Every figure of the report. `factors` are those that vary; `tables` the report's tables:
    `accuracy` (to find the best configuration), `per_class_deltas`, and `interactions` (the
    detected ones are drawn). Figures that carry no information at a grid's size are not drawn."""
    sns.set_theme(style="whitegrid", context="paper")
    palette = colours(done, factors)
    shown = list(factors) or ["variant"]
    accuracy = labelled(tables["accuracy"].dropna(subset=["mean"]), shown)
    interactions = tables["interactions"]
    detected = interactions[interactions["verdict"] == "detected"]
    drawn = []
    for dataset in dict.fromkeys(done["dataset"]):
        runs = done[done["dataset"] == dataset]
        history = history_frame(runs, records, shown)
        rows = accuracy[accuracy["dataset"] == dataset]
        if (tables["deltas"]["dataset"] == dataset).any():
            drawn.append(forest(tables["deltas"], interactions, dataset, margin, confidence, folder))
        for name, draw in (("importance", importance), ("expected_max", expected_best)):
            if (tables.get(name, pd.DataFrame(columns=["dataset"]))["dataset"] == dataset).any():
                drawn.append(draw(tables[name], dataset, confidence, folder))
        if factors:
            drawn.append(curves_by_factor(history, factors, palette, dataset, folder))
        drawn.append(curves(history, tables["accuracy"], shown, dataset, folder))
        if len(rows) <= MAX_HEATMAP_ROWS:
            drawn.append(per_class_heatmap(per_class, shown, dataset, folder))
        else:
            drawn.append(per_class_effects(tables["per_class_deltas"], dataset, folder))
        drawn.append(confusion(done, records, shown, dataset, rows.loc[rows["mean"].idxmax(), "config"], folder))
        drawn += [accuracy_vs_axis(done, factors, palette, dataset, axis, folder) for axis in factors
                  if axis not in ("grid", "variant") and runs[axis].nunique() > 1 and _numeric(runs[axis])]
        pairs = detected[detected["dataset"] == dataset]
        drawn += [interaction(done, a, b, palette, dataset, confidence, folder)
                  for a, b in dict.fromkeys(zip(pairs["factor_a"], pairs["factor_b"]))]
    return drawn
