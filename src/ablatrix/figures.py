"""Report figures (seaborn), each saved as PNG and PDF: curves, per-class heatmaps, confusion, axes."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .data import DATASETS  # noqa: E402

if TYPE_CHECKING:
    from .report import Results

Figure = tuple[str, Path]  # (caption, PNG path)


def _save(fig: plt.Figure, folder: Path, stem: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in ("png", "pdf"):
        fig.savefig(folder / f"{stem}.{suffix}", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return folder / f"{stem}.png"


def _labelled(res: Results, frame: pd.DataFrame) -> pd.DataFrame:
    from .report import config_label
    return frame.assign(config=frame.apply(lambda r: config_label(r, res.factors), axis=1))


def curves(res: Results, dataset: str, folder: Path) -> Figure:
    """Train and validation loss and accuracy per epoch, one line per configuration, band ± 1 std."""
    rows = []
    for run in _labelled(res, res.done[res.done["dataset"] == dataset]).itertuples():
        for h in res.records[run.run_id]["history"]:
            for split in ("train", "val"):
                rows += [{"config": run.config, "seed": run.seed, "epoch": h["epoch"], "split": split,
                          "metric": metric, "value": h[f"{split}_{metric}"]}
                         for metric in ("loss", "accuracy")]
    grid = sns.relplot(pd.DataFrame(rows), x="epoch", y="value", hue="config", style="split",
                       col="metric", kind="line", errorbar="sd", facet_kws={"sharey": False},
                       height=3.2, aspect=1.3)
    grid.figure.suptitle(f"{dataset}: learning curves", y=1.03)
    return f"{dataset}: learning curves", _save(grid.figure, folder, f"curves_{dataset}")


def per_class_heatmap(res: Results, dataset: str, folder: Path) -> Figure:
    """Mean per-class test accuracy, configurations x classes."""
    rows = _labelled(res, res.per_class[res.per_class["dataset"] == dataset])
    matrix = rows.pivot_table(index="config", columns="class", values="accuracy", sort=False)
    matrix = matrix[[c for c in DATASETS[dataset].classes if c in matrix]]
    fig, ax = plt.subplots(figsize=(1 + 0.6 * matrix.shape[1], 1 + 0.4 * matrix.shape[0]))
    sns.heatmap(100 * matrix, annot=matrix.shape[1] <= 12, fmt=".0f", cmap="viridis", ax=ax,
                cbar_kws={"label": "accuracy %"})
    ax.set(title=f"{dataset}: per-class test accuracy", xlabel="class", ylabel="")
    return f"{dataset}: per-class accuracy", _save(fig, folder, f"per_class_{dataset}")


def confusion(res: Results, dataset: str, best_config: str, folder: Path) -> Figure:
    """Row-normalised confusion matrix of the best configuration, summed over its seeds."""
    runs = _labelled(res, res.done[res.done["dataset"] == dataset])
    matrices = [np.array(res.records[r]["test"]["confusion"]) for r in
                runs.loc[runs["config"] == best_config, "run_id"]]
    total = np.sum(matrices, axis=0)
    normalised = total / np.maximum(total.sum(axis=1, keepdims=True), 1)
    classes = DATASETS[dataset].classes
    fig, ax = plt.subplots(figsize=(1.5 + 0.5 * len(classes), 1 + 0.5 * len(classes)))
    sns.heatmap(normalised, annot=len(classes) <= 12, fmt=".2f", cmap="Blues", vmin=0, vmax=1,
                xticklabels=classes, yticklabels=classes, ax=ax)
    ax.set(title=f"{dataset}: confusion of {best_config}", xlabel="predicted", ylabel="true")
    return f"{dataset}: confusion matrix of the best configuration", _save(fig, folder, f"confusion_{dataset}")


def accuracy_vs_axis(res: Results, dataset: str, axis: str, folder: Path) -> Figure:
    """Test accuracy against a numeric axis, one line per value of the varied factor with fewest
    values, averaged over the remaining factors and seeds; bars ± 1 std."""
    done = res.done[res.done["dataset"] == dataset]
    others = [f for f in res.factors if f != axis and done[f].nunique() > 1]
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


def draw_all(res: Results, accuracy: pd.DataFrame, folder: Path) -> list[Figure]:
    """Every figure of the report; `accuracy` is the report's accuracy table (to find the best)."""
    sns.set_theme(style="whitegrid", context="paper")
    table = _labelled(res, accuracy.dropna(subset=["mean"]))
    drawn = []
    for dataset in dict.fromkeys(res.done["dataset"]):
        rows = table[table["dataset"] == dataset]
        best = rows.loc[rows["mean"].idxmax(), "config"]
        drawn += [curves(res, dataset, folder), per_class_heatmap(res, dataset, folder),
                  confusion(res, dataset, best, folder)]
        done = res.done[res.done["dataset"] == dataset]
        drawn += [accuracy_vs_axis(res, dataset, axis, folder) for axis in res.factors
                  if axis not in ("grid", "variant") and done[axis].nunique() > 1 and _numeric(done[axis])]
    return drawn
