"""Epoch checkpoints: training time with them against without, for the small-cnn study's model and
the 1.1M CNN.

    python benchmarks/checkpoints.py [--samples 12000] [--epochs 3] [--repeats 2]

Each model trains `--epochs` epochs on the same data (train_loop.py's: Fashion-MNIST where
installed, else random 28x28 images) (a) without checkpoints, (b) with one written after every
epoch (`--checkpoint-seconds 0`, the most often there is), (c) with `run`'s default (at most every
10 s), interleaved a, b, c, a, b, c; each one's fastest run counts. The checkpoint goes to a
temporary folder. Then one checkpoint of each is written 5 times, to time a write against an
epoch. The last line is JSON: b/a, c/a and the write's share of an epoch per model.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from ablatrix.config import ModelConfig, RunConfig, TrainConfig
from ablatrix.models import resolve_params
from ablatrix.loop import Checkpoint
from ablatrix.train import train_unit

from train_loop import MODELS, load_images, splits

DEFAULT_SECONDS = 10.0  # RunOptions.checkpoint_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=12000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    x, y, source = load_images(args.samples)
    data = splits(x, y, args.samples, torch.device("cpu"))
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, batch) in MODELS.items():
            config = RunConfig("fashion-mnist", 0, ModelConfig("convnet", resolve_params("convnet", model)),
                               TrainConfig(epochs=args.epochs, batch_size=batch, patience=0, restore_best=False))
            ways = {"none": None, "every epoch": Checkpoint(Path(tmp) / "every.pt", 0.0),
                    "default": Checkpoint(Path(tmp) / "default.pt", DEFAULT_SECONDS)}
            best = dict.fromkeys(ways, float("inf"))
            for _ in range(args.repeats):
                for way, checkpoint in ways.items():
                    if checkpoint is not None:
                        checkpoint.path.unlink(missing_ok=True)  # a fresh training, not a resumed one
                    start = time.perf_counter()
                    train_unit([config], data, torch.device("cpu"), checkpoint=checkpoint)
                    best[way] = min(best[way], time.perf_counter() - start)
            size = (Path(tmp) / "every.pt").stat().st_size
            state = torch.load(Path(tmp) / "every.pt", weights_only=True)
            start = time.perf_counter()
            for _ in range(5):
                ways["every epoch"].save(state)
            save = (time.perf_counter() - start) / 5
            epoch = best["none"] / args.epochs
            ratios[name] = {"every_epoch_over_none": round(best["every epoch"] / best["none"], 4),
                            "default_over_none": round(best["default"] / best["none"], 4),
                            "save_seconds": round(save, 4), "save_over_epoch": round(save / epoch, 4)}
            print(f"{name}: none {best['none']:.2f} s, every epoch {best['every epoch']:.2f} s, default "
                  f"{best['default']:.2f} s for {args.epochs} epochs; checkpoint {size / 1e6:.1f} MB, "
                  f"written in {save * 1000:.0f} ms ({100 * save / epoch:.2f}% of an epoch)")
    print(f"{source}, {args.samples} samples, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
