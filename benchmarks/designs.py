"""Designs on real data: the full factorial, a resolution-IV fraction and a one-at-a-time table of six
two-level factors on digits, with the same seeds and then with the same number of trainings.

    python benchmarks/designs.py [--results DIR] [--full-seeds 3] [--more-seeds 12] [--epochs 8] [--workers 2]

One grid (`GRID` below: a small CNN on scikit-learn's digits; BatchNorm, dropout, learning rate,
weight decay, input standardisation and the FC width) trained as
- `full`: the 2^6 = 64 configurations x `--full-seeds` seeds;
- `fraction`: the 2^(6-2) = 16 of resolution IV (pyDOE3 via `designs.py`), first with the same
  seeds (1/4 of the trainings), then with `--more-seeds` seeds (as many trainings as the full);
- `one-at-a-time`: the base and each factor changed alone (7 configurations) x `--more-seeds`.
All share one results folder (a design is not part of a run id, so a cell trained for one design
is reused by the others). For each main effect it prints each design's estimate, adjusted
interval and verdict, and whether the fraction's verdict agrees with the full factorial's where
the full factorial decides. The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ablatrix.data import data_root
from ablatrix.effects import effect_tables, report_settings
from ablatrix.executors import run_grids
from ablatrix.frames import collect
from ablatrix.runner import RunOptions
from ablatrix.spec import load_grid

GRID = """
name = "designs"
description = "Six two-level factors of a small CNN on digits, for benchmarks/designs.py."
datasets = ["digits"]
seeds = [0]

[train]
optimizer = "adam"
lr = 1e-3
batch_size = 64
epochs = 8
patience = 3
val_fraction = 0.15

[model]
conv = [8]
kernel = 3
padding = 1
pool = "max"

[axes]
model.batchnorm = [false, true]
model.dropout = [0.0, 0.3]
train.lr = [0.001, 0.003]
train.weight_decay = [0.0, 0.001]
train.standardize = [true, false]
model.fc = [[32], [64]]
"""

DESIGNS = {"full": "full", "fraction": '{kind = "fractional", resolution = 4}', "one-at-a-time": "one-at-a-time"}


def effects(path: Path, results: Path, overrides: list[str]) -> dict[str, dict]:
    """Each main effect's estimate, adjusted interval, verdict, seeds and aliases as the report computes them."""
    grid = load_grid(path, overrides)
    deltas = effect_tables(collect([grid], results, write=False), report_settings([grid]))["deltas"]
    return {r.factor: {"mean": round(r.mean, 2), "ci": [round(r.ci_low_adjusted, 2), round(r.ci_high_adjusted, 2)],
                       "verdict": r.verdict, "seeds": int(r.n), "aliases": getattr(r, "aliases", "")}
            for r in deltas.itertuples()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, help="results folder to keep (default: a temporary one)")
    parser.add_argument("--full-seeds", type=int, default=3)
    parser.add_argument("--more-seeds", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    options = RunOptions(torch.device("cpu"), data_root(), workers=args.workers)
    with tempfile.TemporaryDirectory() as scratch:
        results = args.results or Path(scratch)
        results.mkdir(parents=True, exist_ok=True)
        path = results / "designs.toml"
        path.write_text(GRID)
        plans = {"full": ("full", args.full_seeds), "fraction, same seeds": ("fraction", args.full_seeds),
                 "fraction, same trainings": ("fraction", args.more_seeds),
                 "one-at-a-time": ("one-at-a-time", args.more_seeds)}
        rows, trainings = {}, {}
        for name, (design, seeds) in plans.items():
            overrides = [f"design={DESIGNS[design]}", f"seeds={list(range(seeds))}", f"train.epochs={args.epochs}"]
            grid = load_grid(path, overrides)
            trainings[name] = len(grid.cells)
            start = time.perf_counter()
            trained = run_grids([grid], results, options).trained
            print(f"{name}: {len(grid.cells)} trainings ({trained} new, {time.perf_counter() - start:.0f} s)",
                  flush=True)
            rows[name] = effects(path, results, overrides)
    full = rows["full"]
    decided = [f for f, r in full.items() if r["verdict"] != "undecided"]
    agree = {name: all(rows[name][f]["verdict"] == full[f]["verdict"] for f in decided)
             for name in plans if name != "full"}
    print(f"\ndigits, {args.epochs} epochs, torch {torch.__version__}; trainings: "
          + ", ".join(f"{k} {v}" for k, v in trainings.items()))
    print("| factor | " + " | ".join(plans) + " |\n|" + " --- |" * (len(plans) + 1))
    for factor in full:
        print(f"| {factor} | " + " | ".join(
            f"{rows[n][factor]['mean']:+.2f} [{rows[n][factor]['ci'][0]:+.2f}, {rows[n][factor]['ci'][1]:+.2f}] "
            f"{rows[n][factor]['verdict']} ({rows[n][factor]['seeds']} seeds)" for n in plans) + " |")
    print(f"decided by the full factorial: {decided or 'none'}; same verdicts: {agree}")
    print(json.dumps({"trainings": trainings, "fraction_share_same_seeds": round(
        trainings["fraction, same seeds"] / trainings["full"], 3), "decided_by_full": decided,
        "verdicts_agree": agree, "effects": rows}))


if __name__ == "__main__":
    main()
