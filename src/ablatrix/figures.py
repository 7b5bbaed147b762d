"""Report figures (seaborn), each saved as PNG and PDF: curves, per-class heatmaps, confusion, axes,
interactions. Each takes the frames it draws (runs, per-class rows, records), never the report."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .data import DATASETS  # noqa: E402
from .stats import t_interval  # noqa: E402

Figure = tuple[str, Path]  # (caption, PNG path)
Records = dict[str, dict[str, Any]]


def _save(fig: plt.Figure, folder: Path, stem: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in ("png", "pdf"):
        fig.savefig(folder / f"{stem}.{suffix}", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return folder / f"{stem}.png"


def config_label(row: pd.Series | dict, factors: Sequence[str]) -> str:
    """'base bn=true dropout=0.3' style label of one configuration, for figures and column heads."""
    parts = [str(row[f]) for f in factors if f in ("grid", "variant")]
    parts += [f"{f.split('.')[-1]}={row[f]}" for f in factors if f not in ("grid", "variant")]
    return " ".join(parts)


def labelled(frame: pd.DataFrame, factors: Sequence[str]) -> pd.DataFrame:
    return frame.assign(config=frame.apply(lambda r: config_label(r, factors), axis=1))


def curves(done: pd.DataFrame, records: Records, factors: Sequence[str], dataset: str, folder: Path) -> Figure:
    """Train and validation loss and accuracy per epoch, one line per configuration, band ± 1 std."""
    rows = []
    for run in labelled(done[done["dataset"] == dataset], factors).itertuples():
        for h in records[run.run_id]["history"]:
            for split in ("train", "val"):
                rows += [{"config": run.config, "seed": run.seed, "epoch": h["epoch"], "split": split,
                          "metric": metric, "value": h[f"{split}_{metric}"]}
                         for metric in ("loss", "accuracy")]
    grid = sns.relplot(pd.DataFrame(rows), x="epoch", y="value", hue="config", style="split",
                       col="metric", kind="line", errorbar="sd", facet_kws={"sharey": False},
                       height=3.2, aspect=1.3)
    grid.figure.suptitle(f"{dataset}: learning curves", y=1.03)
    return f"{dataset}: learning curves", _save(grid.figure, folder, f"curves_{dataset}")


def per_class_heatmap(per_class: pd.DataFrame, factors: Sequence[str], dataset: str, folder: Path) -> Figure:
    """Mean per-class test accuracy, configurations x classes."""
    rows = labelled(per_class[per_class["dataset"] == dataset], factors)
    matrix = rows.pivot_table(index="config", columns="class", values="accuracy", sort=False)
    matrix = matrix[[c for c in DATASETS[dataset].classes if c in matrix]]
    fig, ax = plt.subplots(figsize=(1 + 0.6 * matrix.shape[1], 1 + 0.4 * matrix.shape[0]))
    sns.heatmap(100 * matrix, annot=matrix.shape[1] <= 12, fmt=".0f", cmap="viridis", ax=ax,
                cbar_kws={"label": "accuracy %"})
    ax.set(title=f"{dataset}: per-class test accuracy", xlabel="class", ylabel="")
    return f"{dataset}: per-class accuracy", _save(fig, folder, f"per_class_{dataset}")


def confusion(done: pd.DataFrame, records: Records, factors: Sequence[str], dataset: str, best_config: str,
              folder: Path) -> Figure:
    """Row-normalised confusion matrix of the best configuration, summed over its seeds."""
    runs = labelled(done[done["dataset"] == dataset], factors)
    matrices = [np.array(records[r]["test"]["confusion"]) for r in
                runs.loc[runs["config"] == best_config, "run_id"]]
    total = np.sum(matrices, axis=0)
    normalised = total / np.maximum(total.sum(axis=1, keepdims=True), 1)
    classes = DATASETS[dataset].classes
    fig, ax = plt.subplots(figsize=(1.5 + 0.5 * len(classes), 1 + 0.5 * len(classes)))
    sns.heatmap(normalised, annot=len(classes) <= 12, fmt=".2f", cmap="Blues", vmin=0, vmax=1,
                xticklabels=classes, yticklabels=classes, ax=ax)
    ax.set(title=f"{dataset}: confusion of {best_config}", xlabel="predicted", ylabel="true")
    return f"{dataset}: confusion matrix of the best configuration", _save(fig, folder, f"confusion_{dataset}")


def accuracy_vs_axis(done: pd.DataFrame, factors: Sequence[str], dataset: str, axis: str, folder: Path) -> Figure:
    """Test accuracy against a numeric axis, one line per value of the varied factor with fewest
    values, averaged over the remaining factors and seeds; bars ± 1 std."""
    done = done[done["dataset"] == dataset]
    others = [f for f in factors if f != axis and done[f].nunique() > 1]
    hue = min(others, key=lambda f: done[f].nunique()) if others else None
    data = done.assign(accuracy=100 * done["test_accuracy"], **{axis: done[axis].astype(float)})
    if hue:
        data[hue] = data[hue].astype(str)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    sns.lineplot(data, x=axis, y="accuracy", hue=hue, errorbar="sd", err_style="bars", marker="o", ax=ax)
    ax.set(title=f"{dataset}: accuracy vs {axis}", ylabel="test accuracy %")
    stem = f"axis_{axis.replace('.', '_')}_{dataset}"
    return f"{dataset}: accuracy against {axis}", _save(fig, folder, stem)


def _numeric(values: pd.Series) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def interaction(done: pd.DataFrame, a: str, b: str, dataset: str, confidence: float, folder: Path) -> Figure:
    """Mean test accuracy at each level of `b` (x), one line per level of `a`, with t-intervals over
    seeds (each seed's accuracy averaged over the other factors first; clipped to 0-100). Parallel lines: no
    interaction; lines that cross or diverge: a's effect depends on b."""
    done = done[done["dataset"] == dataset]
    per_seed = (100 * done.groupby([a, b, "seed"], sort=False)["test_accuracy"].mean()).reset_index()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    b_levels = list(dict.fromkeys(done[b]))
    for a_level, rows in per_seed.groupby(a, sort=False):
        mean, low, high = np.array([t_interval(rows.loc[rows[b] == level, "test_accuracy"].to_numpy(), confidence)
                                    for level in b_levels]).T
        low, high = np.clip(low, 0, 100), np.clip(high, 0, 100)  # accuracy bounds; 2 seeds give t(1) = 12.7
        error = np.nan_to_num([mean - low, high - mean])  # no bar where one seed gives no interval
        ax.errorbar([str(v) for v in b_levels], mean, yerr=error, marker="o", capsize=3,
                    label=f"{a.split('.')[-1]}={a_level}")
    ax.set(title=f"{dataset}: {a} x {b}", xlabel=b, ylabel="test accuracy %")
    ax.legend(fontsize="small")
    stem = f"interaction_{a.replace('.', '_')}_x_{b.replace('.', '_')}_{dataset}"
    return f"{dataset}: interaction of {a} and {b} (mean ± {confidence:.0%} CI over seeds)", _save(fig, folder, stem)


def draw_all(done: pd.DataFrame, per_class: pd.DataFrame, records: Records, factors: Sequence[str],
             accuracy: pd.DataFrame, interactions: pd.DataFrame, confidence: float, folder: Path) -> list[Figure]:
    """Every figure of the report. `accuracy` is the report's accuracy table (to find the best
    configuration); `interactions` its detected interactions (factor_a, factor_b, dataset)."""
    sns.set_theme(style="whitegrid", context="paper")
    table = labelled(accuracy.dropna(subset=["mean"]), factors)
    drawn = []
    for dataset in dict.fromkeys(done["dataset"]):
        rows = table[table["dataset"] == dataset]
        best = rows.loc[rows["mean"].idxmax(), "config"]
        drawn += [curves(done, records, factors, dataset, folder), per_class_heatmap(per_class, factors, dataset, folder),
                  confusion(done, records, factors, dataset, best, folder)]
        runs = done[done["dataset"] == dataset]
        drawn += [accuracy_vs_axis(done, factors, dataset, axis, folder) for axis in factors
                  if axis not in ("grid", "variant") and runs[axis].nunique() > 1 and _numeric(runs[axis])]
        pairs = interactions[interactions["dataset"] == dataset]
        drawn += [interaction(done, a, b, dataset, confidence, folder)
                  for a, b in dict.fromkeys(zip(pairs["factor_a"], pairs["factor_b"]))]
    return drawn
