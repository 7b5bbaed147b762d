"""The quickstart grid with 1 and with N worker processes (CPU), or 1 and N runs per GPU (CUDA).

    python benchmarks/grid_throughput.py [--device cpu|cuda] [--workers 2] [--repeats 2]

Prints cells per hour for each (the fastest of --repeats interleaved runs), last line a JSON
object with `speedup_<N>_workers`.
Results go to a temporary folder; nothing under results/ is touched.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ablatrix.data import data_root
from ablatrix.cores import available_cores
from ablatrix.executors import run_grids
from ablatrix.runner import RunOptions
from ablatrix.spec import load_grid

GRID = Path(__file__).resolve().parent.parent / "ablations" / "quickstart.toml"


def grid_seconds(workers: int, device: torch.device) -> float:
    grid = load_grid(GRID)
    with tempfile.TemporaryDirectory() as results:
        start = time.perf_counter()
        summary = run_grids([grid], Path(results), RunOptions(device, data_root(), workers=workers))
        seconds = time.perf_counter() - start
    assert summary.failed == 0, "a cell failed"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each; the fastest counts")
    args = parser.parse_args()
    device = torch.device(args.device)
    cells = len(load_grid(GRID).cells)
    times: dict[int, list[float]] = {1: [], args.workers: []}
    for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits both
        for workers in times:
            times[workers].append(grid_seconds(workers, device))
    one, many = (3600 * cells / min(t) for t in times.values())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{available_cores()} CPU cores"
    print(f"quickstart grid, {cells} cells, {device} ({where}), torch {torch.__version__}; seconds per run: "
          + "; ".join(f"{w} worker(s) " + ", ".join(f"{t:.1f}" for t in ts) for w, ts in times.items()))
    print(f"1 worker: {one:,.0f} cells/hour; {args.workers} workers: {many:,.0f} cells/hour (fastest runs)")
    print(json.dumps({f"speedup_{args.workers}_workers": round(many / one, 3),
                      "cells_per_hour_1": round(one), f"cells_per_hour_{args.workers}": round(many)}))


if __name__ == "__main__":
    main()
