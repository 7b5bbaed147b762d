"""`ablatrix report` time against grid size, on fabricated records.

    python benchmarks/report_scale.py [--runs 100 1000 5000] [--keep DIR]

Trains one tiny real cell on digits as a template, then writes records for a grid of 2 BatchNorm
settings x 10 dropout rates x 5 conv widths (100 configurations) x runs/100 seeds through the
store, as `run` would: each a copy of the template with its own config, seed and a test accuracy
from planted effects plus noise (per-class counts and confusion matrix consistent with it). Times
`write_report` (tables, REPORT.md, figures) for each size; the last line is JSON with the seconds
per size and the growth exponent between the two largest sizes (1.0 = linear). `--keep DIR`
leaves the largest grid's results and report there, to look at.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch

from ablatrix.record import cell_record
from ablatrix.runner import RunOptions, run_unit
from ablatrix.report import write_report
from ablatrix.spec import load_grid
from ablatrix.store import ResultStore

GRID = """
name = "scale"
description = "Fabricated records: 2 BatchNorm x 10 dropout x 5 widths, from one real digits run."
datasets = ["digits"]
seeds = {seeds}
[train]
epochs = 4
patience = 0
[model]
conv = [4]
fc = []
[axes]
model.batchnorm = [true, false]
model.dropout = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45]
model.conv = [[4], [8], [12], [16], [20]]
"""


def fabricated(template: dict, cell, rng: np.random.Generator) -> dict:
    """The template record as `cell`'s, with an accuracy from planted effects and seed noise."""
    record = copy.deepcopy(template)
    record.update(cell_record(cell))
    bn, dropout, width = cell.axes["model.batchnorm"], cell.axes["model.dropout"], cell.axes["model.conv"][0]
    accuracy = 0.9 - 0.03 * (not bn) - 0.2 * dropout * (not bn) + 0.002 * width + rng.normal(0, 0.01)
    confusion = np.array(record["test"]["confusion"])
    support = confusion.sum(1)
    correct = np.minimum(support, np.round(support * np.clip(accuracy + rng.normal(0, 0.02, len(support)), 0, 1)))
    wrong = support - correct
    confusion = np.diag(correct) + np.roll(np.diag(wrong), 1, axis=1)  # errors go to the next class
    record["test"].update(accuracy=float(correct.sum() / support.sum()), confusion=confusion.astype(int).tolist(),
                          per_class=[{"class": c, "correct": int(correct[c]), "support": int(support[c]),
                                      "accuracy": float(correct[c] / support[c])} for c in range(len(support))])
    for row in record["history"]:
        row["val_accuracy"] = min(1.0, row["val_accuracy"] * accuracy / template["test"]["accuracy"])
    return record


def build(folder: Path, runs: int, template: dict) -> object:
    seeds = list(range(math.ceil(runs / 100)))
    path = folder / "scale.toml"
    folder.mkdir(parents=True)
    path.write_text(textwrap.dedent(GRID.format(seeds=seeds)))
    grid = load_grid(path)
    store, rng = ResultStore(folder / "results", grid.name), np.random.default_rng(0)
    for cell in grid.cells:
        store.put(fabricated(template, cell, rng))
    return grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--keep", type=Path, help="copy the largest grid's results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "one.toml"
        path.write_text(textwrap.dedent(GRID.format(seeds=[0])))
        ((template, _),) = run_unit(load_grid(path).cells[:1], RunOptions(torch.device("cpu"), Path(tmp)))
        seconds = {}
        for runs in args.runs:
            folder = Path(tmp) / str(runs)
            grid = build(folder, runs, template)
            start = time.perf_counter()
            write_report([grid], folder / "results")
            seconds[runs] = round(time.perf_counter() - start, 2)
            print(f"{runs} runs: report in {seconds[runs]:.2f} s")
        if args.keep:
            shutil.copytree(Path(tmp) / str(args.runs[-1]) / "results", args.keep, dirs_exist_ok=True)
    small, large = sorted(seconds)[-2:]
    growth = math.log(seconds[large] / seconds[small]) / math.log(large / small)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(json.dumps({"seconds": seconds, "growth_exponent": round(growth, 2)}))


if __name__ == "__main__":
    main()
