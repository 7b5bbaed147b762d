"""Train once: the small-CNN grid on one dataset, every cell its own training against one training
per distinct model.

    python benchmarks/train_once.py [--dataset mnist] [--data-dir ../shared/datasets] [--epochs 1] [--seeds 1]

The grid's cells (4 models x 3 evaluation modes, one excluded: 11 per seed) are trained twice in
temporary results folders, one after another in this process: (a) as before train-once, each
cell a training of its own (`run_unit([cell])`), (b) as `ablatrix run` does now (`run_grids`:
cells that differ only in the evaluation mode share a training). It reports trainings,
cell-seconds (the sum of the cells' wall time) and that both give the same test numbers. Epochs
are cut (`--epochs`) to keep it near ten minutes on 2 cores; the ratio is what counts. The last
line is JSON.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ablatrix.data import data_root
from ablatrix.executors import run_grids
from ablatrix.runner import RunOptions, run_unit
from ablatrix.spec import load_grid
from ablatrix.store import ResultStore

GRID = Path(__file__).resolve().parent.parent / "ablations" / "small-cnn.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args()
    grid = load_grid(GRID, [f"datasets=['{args.dataset}']", f"train.epochs={args.epochs}",
                            f"seeds={list(range(args.seeds))}", f"max_seeds={args.seeds}"])
    options = RunOptions(torch.device("cpu"), data_root(args.data_dir))
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        separate = [record for cell in grid.cells for record, _ in run_unit([cell], options)]
        seconds_before = time.perf_counter() - start
        start = time.perf_counter()
        summary = run_grids([grid], Path(tmp), options)
        seconds_after = time.perf_counter() - start
        shared = ResultStore(Path(tmp), grid.name).records()
    assert all(r["status"] == "done" for r in separate) and len(shared) == len(separate)
    same = all(shared[r["run_id"]]["test"] == r["test"] for r in separate)
    cell_before = sum(r["wall_seconds"] for r in separate)
    cell_after = sum(r["wall_seconds"] for r in shared.values())
    print(f"small-cnn on {args.dataset}, {args.seeds} seed(s), {args.epochs} epoch(s), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"before: {len(separate)} trainings, {cell_before:.0f} cell-seconds ({seconds_before:.0f} s wall)")
    print(f"after:  {summary.trainings} trainings, {cell_after:.0f} cell-seconds ({seconds_after:.0f} s wall); "
          f"same test numbers: {same}")
    print(json.dumps({"cells": len(separate), "trainings_before": len(separate), "trainings_after": summary.trainings,
                      "cell_seconds_before": round(cell_before, 1), "cell_seconds_after": round(cell_after, 1),
                      "after_over_before": round(cell_after / cell_before, 3), "same_test_numbers": same}))


if __name__ == "__main__":
    main()
