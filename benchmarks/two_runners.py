"""Two `ablatrix run`s on one machine: together against one after the other, and threads per
cell against cells in parallel.

    python benchmarks/two_runners.py [--data-dir ../shared/datasets] [--epochs 2]

For each model, two grids of 4 cells each (BatchNorm x dropout, seed 0): the quickstart model on
the embedded digits, and where the full MNIST is in --data-dir, the small-CNN study's model on
6,000 of its training images and 1,000 test images (an npz made from them). Times, as separate
`ablatrix run` processes: grid A then grid B; A and B started together; and one runner training
both grids' 8 cells with --workers 1 (all cores for one cell) and --workers 2 (a core each). The
last line is JSON with `together_over_sequential` per model (<= 1: two runners lose nothing).
Results go to a temporary folder.
"""
from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GRID = """name = "{name}"
datasets = ["{dataset}"]
seeds = [0]
[train]
epochs = {epochs}
patience = 0
[model]
{model}
[axes]
model.batchnorm = [true, false]
model.dropout = [0.0, {dropout}]
"""
MODELS = {"quickstart": ("digits", 'conv = [16, 32]\nfc = [64]', 0.3),
          "small-cnn": (None, 'conv = [6, 12, 24]\npadding = [1, 0, 0]\npool = ["max", "max", "none"]\nfc = [128, 48]',
                        0.75)}


def mnist_npz(data_dir: Path, out: Path) -> Path | None:
    """6,000 training and 1,000 test images of the full MNIST as an npz, if its files are there."""
    folder = data_dir / "mnist"
    if not (folder / "train-images-idx3-ubyte.gz").exists():
        return None

    def read(name: str, offset: int, shape: tuple[int, ...]) -> np.ndarray:
        return np.frombuffer(gzip.open(folder / name).read(), np.uint8, offset=offset).reshape(shape)
    x, y = read("train-images-idx3-ubyte.gz", 16, (-1, 28, 28)), read("train-labels-idx1-ubyte.gz", 8, (-1,))
    xt, yt = read("t10k-images-idx3-ubyte.gz", 16, (-1, 28, 28)), read("t10k-labels-idx1-ubyte.gz", 8, (-1,))
    np.savez(out, x=x[:6000], y=y[:6000], x_test=xt[:1000], y_test=yt[:1000])
    return out


def run(grids: list[Path], results: Path, *flags: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ablatrix.cli", "run", *map(str, grids), "--results", str(results),
                             *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def seconds(*procs: subprocess.Popen) -> float:
    start = time.perf_counter()
    assert all(p.wait() == 0 for p in procs), "a run failed"
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model, (dataset, body, dropout) in MODELS.items():
            if dataset is None:
                npz = mnist_npz(args.data_dir, tmp / "mnist6k.npz")
                if npz is None:
                    print(f"{model}: no MNIST in {args.data_dir}; skipped")
                    continue
                dataset, epochs = f"npz:{npz}", args.epochs
            else:
                epochs = 30  # the quickstart's cells are short: a few seconds each at 30 epochs
            grids = []
            for name in ("a", "b"):
                grids.append(tmp / f"{model}-{name}.toml")
                grids[-1].write_text(GRID.format(name=f"{model}-{name}", dataset=dataset, epochs=epochs, model=body,
                                                 dropout=dropout))
            times = {"one after the other": seconds(run(grids[:1], tmp / "r1")) + seconds(run(grids[1:], tmp / "r1")),
                     "together": seconds(run(grids[:1], tmp / "r2"), run(grids[1:], tmp / "r2")),
                     "one runner, --workers 1": seconds(run(grids, tmp / "r3", "--workers", "1")),
                     "one runner, --workers 2": seconds(run(grids, tmp / "r4", "--workers", "2"))}
            print(f"{model} ({dataset.split('/')[-1]}, {epochs} epochs, 2 x 4 cells): "
                  + "; ".join(f"{k} {v:.1f} s" for k, v in times.items()))
            out[model] = {"together_over_sequential": round(times["together"] / times["one after the other"], 3),
                          "workers2_over_workers1": round(times["one runner, --workers 2"]
                                                          / times["one runner, --workers 1"], 3),
                          **{k: round(v, 1) for k, v in times.items()}}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
