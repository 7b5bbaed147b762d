"""Packed training (`run --pack N`) against one cell at a time and against N worker processes.

    python benchmarks/packed.py [--device cpu|cuda] [--cells 8] [--samples 4096] [--epochs 1]
                                [--packs 2,4,8] [--processes 2]

The small-cnn study's model (conv 6/12/24 with BatchNorm, conv dropout 0.75, FC 128/48), on
generated data of Fashion-MNIST's shape (1x28x28, 10 classes; speed does not depend on what the
pixels show), Adam, batch 64: `--cells` seeds trained one after another (`train_unit([cell])`, as the local
executor does), in `--processes` spawned processes at once (`--workers` on CPU, `--runs-per-gpu`
on CUDA: each process its own copy of the data), and as packs of each size in `--packs`
(`train_unit(pack)`: one process, one copy of the data). Prints cells per hour for each and the time of
one fused training step against one plain step; last line a JSON object with
`packed_over_sequential` and `packed_over_processes` at the best pack size.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import time

import torch
from torch import nn

from ablatrix.config import ModelConfig, RunConfig, TrainConfig
from ablatrix.data import Splits
from ablatrix.cores import available_cores
from ablatrix.models import create_model, resolve_params
from ablatrix.evaluation import Execution
from ablatrix.packed import PackedConvNet, PackedOptimizer, _member_losses
from ablatrix.train import train_unit

MODEL = {"conv": [6, 12, 24], "padding": [1, 0, 0], "pool": ["max", "max", "none"], "dropout": 0.75,
         "fc": [128, 48]}


def splits(samples: int, device: torch.device) -> Splits:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(samples + 2048, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (samples + 2048,), generator=g)
    parts = {"train": slice(0, samples), "val": slice(samples, samples + 1024), "test": slice(samples + 1024, None)}
    return Splits(**{f"{k}_x": x[s].to(device) for k, s in parts.items()},
                  **{f"{k}_y": y[s].to(device) for k, s in parts.items()}, num_classes=10)


def configs(cells: int, epochs: int) -> list[RunConfig]:
    model = ModelConfig("convnet", resolve_params("convnet", MODEL))
    return [RunConfig("fashion-mnist", seed, model, TrainConfig(epochs=epochs, patience=0)) for seed in range(cells)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def sequential(cfgs: list[RunConfig], data: Splits, device: torch.device, execution: Execution) -> float:
    start = time.perf_counter()
    for cfg in cfgs:
        train_unit([cfg], data, device, execution)
    sync(device)
    return time.perf_counter() - start


def _process(args: tuple) -> None:
    cfgs, samples, device, threads = args
    torch.set_num_threads(threads)
    device = torch.device(device)
    data = splits(samples, device)  # each process its own copy, as with --workers / --runs-per-gpu
    execution = Execution.default_for(device)
    for cfg in cfgs:
        train_unit([cfg], data, device, execution)
    sync(device)


def processes(cfgs: list[RunConfig], samples: int, device: torch.device, count: int) -> float:
    threads = max(1, available_cores() // count) if device.type == "cpu" else 1
    shares = [(cfgs[i::count], samples, str(device), threads) for i in range(count)]
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(count) as pool:
        pool.map(_process, shares)
    return time.perf_counter() - start


def packed(cfgs: list[RunConfig], data: Splits, device: torch.device, execution: Execution, size: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(cfgs), size):
        results = train_unit(cfgs[i:i + size], data, device, execution)
        assert not any(isinstance(r, Exception) for r in results), results
    sync(device)
    return time.perf_counter() - start


def step_seconds(members: int, data: Splits, device: torch.device, execution: Execution, steps: int = 20) -> float:
    """One training step of a plain model (members = 0) or of a fused pack of `members`."""
    params = resolve_params("convnet", MODEL)
    plain = [create_model("convnet", (1, 28, 28), 10, **params).to(device) for _ in range(max(members, 1))]
    model = plain[0] if members == 0 else PackedConvNet(plain, [params] * members).to(device)
    if execution.channels_last:
        model = model.to(memory_format=torch.channels_last)
    n = max(members, 1)
    lr = torch.full((n,), 1e-3, device=device)
    optimizer = (torch.optim.Adam(model.parameters(), lr=1e-3) if members == 0 else
                 PackedOptimizer(list(model.parameters()), "adam", lr, torch.zeros_like(lr), torch.zeros_like(lr)))
    x = execution.layout(data.train_x[:64].repeat(1, n, 1, 1))
    y = data.train_y[:64].repeat(n, 1)
    model.train()
    for i in range(steps + 5):  # 5 warm-up steps
        if i == 5:
            sync(device)
            start = time.perf_counter()
        with execution.autocast(device):
            logits = model(x).float()
            loss = (nn.functional.cross_entropy(logits, y[0]) if members == 0
                    else _member_losses(logits, y, None).sum())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cells", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4096, help="training images per cell per epoch")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--packs", default="2,4,8", help="pack sizes to try (16,32 on a GPU)")
    parser.add_argument("--processes", type=int, default=2, help="--workers (CPU) or --runs-per-gpu (CUDA)")
    args = parser.parse_args()
    device = torch.device(args.device)
    execution = Execution.default_for(device)
    data, cfgs = splits(args.samples, device), configs(args.cells, args.epochs)
    per_hour = lambda seconds: 3600 * args.cells / seconds  # noqa: E731
    rows = {"one at a time": per_hour(sequential(cfgs, data, device, execution)),
            f"{args.processes} processes": per_hour(processes(cfgs, args.samples, device, args.processes))}
    for size in (int(s) for s in args.packs.split(",")):
        try:
            rows[f"packed {size}"] = per_hour(packed(cfgs, data, device, execution, size))
        except torch.cuda.OutOfMemoryError:
            print(f"packed {size}: out of memory")
            break
    plain_step = step_seconds(0, data, device, execution)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{available_cores()} CPU cores"
    print(f"small-cnn model (3conv-bn, dropout 0.75), {args.cells} cells x {args.epochs} epoch(s) of "
          f"{args.samples} images, {device} ({where}), torch {torch.__version__}")
    for name, rate in rows.items():
        extra = ""
        if name.startswith("packed"):
            size = int(name.split()[1])
            extra = f"; one fused step {step_seconds(size, data, device, execution) / plain_step:.2f}x a plain step"
        print(f"{name}: {rate:,.0f} cells/hour{extra}")
    best = max((k for k in rows if k.startswith("packed")), key=rows.get)
    print(json.dumps({"best_pack": int(best.split()[1]),
                      "packed_over_sequential": round(rows[best] / rows["one at a time"], 3),
                      "packed_over_processes": round(rows[best] / rows[f"{args.processes} processes"], 3),
                      "cells_per_hour": {k: round(v) for k, v in rows.items()}}))


if __name__ == "__main__":
    main()
