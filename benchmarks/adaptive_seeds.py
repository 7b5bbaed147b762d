"""Seeds on demand against a fixed seed count, on the quickstart grid (digits).

    python benchmarks/adaptive_seeds.py [--max-seeds 10] [--epochs 8] [--workers 2]

Trains the quickstart with all `--max-seeds` seeds, and separately with its own 2 seeds plus
`--until-decided` up to the same maximum; compares the cells each trained and the main-effect
verdicts. Then trains exactly the cells the adaptive run trained once more, in one batch, so that
the wall time of its rounds is set against one batch of the same work. Epochs are cut (`--epochs`)
to keep the runs near ten minutes on 2 cores. All use temporary results folders; nothing under
results/ is touched. The last line is JSON.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ablatrix.adaptive import run_until_decided
from ablatrix.data import data_root
from ablatrix.executors import executor_for, run_grids
from ablatrix.runner import RunOptions
from ablatrix.effects import effect_tables, report_settings
from ablatrix.frames import collect
from ablatrix.sequential import design_of, seeding_state
from ablatrix.spec import load_grid
from ablatrix.store import ResultStore

GRID = Path(__file__).resolve().parent.parent / "ablations" / "quickstart.toml"


def verdicts(grid, results: Path) -> dict[str, str]:
    """The report's main-effect verdicts: sequential where seeds were added on demand, else fixed-sample."""
    deltas = effect_tables(collect([grid], results, write=False), report_settings([grid]),
                           design_of([grid], seeding_state([grid], results)))["deltas"]
    return {f"{r.factor} {r.comparison}": r.verdict for r in deltas.itertuples()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    options = RunOptions(torch.device("cpu"), data_root(), workers=args.workers)
    epochs = f"train.epochs={args.epochs}"
    fixed = load_grid(GRID, [epochs, f"seeds={list(range(args.max_seeds))}"])
    adaptive = load_grid(GRID, [epochs, f"max_seeds={args.max_seeds}"])
    with (tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b,
          tempfile.TemporaryDirectory() as c):
        start = time.perf_counter()
        cells_fixed = run_grids([fixed], Path(a), options).trained
        seconds_fixed = time.perf_counter() - start
        start = time.perf_counter()
        outcome = run_until_decided([adaptive], Path(b), options)
        seconds_adaptive = time.perf_counter() - start
        v_fixed, v_adaptive = verdicts(fixed, Path(a)), verdicts(adaptive, Path(b))
        same_cells = adaptive.stored_cells(ResultStore(Path(b), adaptive.name).records())
        start = time.perf_counter()
        with executor_for([adaptive], options) as executor:
            cells_batch = executor.run([(cell, ResultStore(Path(c), adaptive.name)) for cell in same_cells]).trained
        seconds_batch = time.perf_counter() - start
    agree = [effect for effect, verdict in v_fixed.items() if v_adaptive.get(effect) == verdict]
    print(f"quickstart, {args.epochs} epochs, up to {args.max_seeds} seeds, {args.workers} workers, "
          f"torch {torch.__version__}")
    print(f"fixed:    {cells_fixed} cells in {seconds_fixed:.0f} s; verdicts {v_fixed}")
    print(f"adaptive: {outcome.trained} cells in {seconds_adaptive:.0f} s, {outcome.rounds} rounds, stopped "
          f"({outcome.reason}); verdicts {v_adaptive}")
    print(f"the adaptive run's {cells_batch} cells in one batch: {seconds_batch:.0f} s")
    print(json.dumps({"cells_adaptive": outcome.trained, "cells_fixed": cells_fixed,
                      "saved_fraction": round(1 - outcome.trained / cells_fixed, 3),
                      "verdict_agreement": round(len(agree) / len(v_fixed), 3),
                      "rounds_over_batch": round(seconds_adaptive / seconds_batch, 3)}))


if __name__ == "__main__":
    main()
