"""One training epoch three ways, same model, data and batches: (a) the ablatrix trainer,
(b) the bare compute loop (forward, backward, step, nothing else), (c) a notebook-style
DataLoader loop that reads the loss with .item() every step.

    python benchmarks/train_loop.py [--device cpu|cuda] [--samples N]

Prints a table, then as its last line one JSON object with, per model,
trainer_over_floor = a / b and dataloader_over_trainer = c / a (one run each: ratios, not seconds,
are what compares across noisy machines).
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from tabulate import tabulate
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ablatrix.config import ModelConfig, RunConfig, TrainConfig
from ablatrix.data import DATASETS, Splits
from ablatrix.errors import AblatrixError
from ablatrix.models import create_model, resolve_params
from ablatrix.train import Execution, fit

MODELS = {  # the small-cnn study's model and the 1.1M-parameter MNIST/Fashion CNN
    "small-cnn": (dict(conv=[6, 12, 24], padding=[1, 0, 0], pool=["max", "max", "none"], dropout=0.75,
                       fc=[128, 48]), 64),
    "cnn-1.1M": (dict(conv=[32, 64, 128], dropout=0.3, dropout_kind="dropout2d", pool_padding=[0, 0, 1],
                      fc=[512], fc_batchnorm=False, fc_dropout=0.5), 256),
}


def load_data(samples: int, device: torch.device) -> tuple[Splits, str]:
    """Fashion-MNIST where it is installed, else random 28x28 images (timing only needs the shape)."""
    try:
        data = DATASETS["fashion-mnist"].load(Path.home() / ".cache" / "ablatrix")
        x, y, source = data.x[:samples + 1000], data.y[:samples + 1000], "Fashion-MNIST"
    except AblatrixError:
        g = torch.Generator().manual_seed(0)
        x, y = torch.rand(samples + 1000, 1, 28, 28, generator=g), torch.randint(0, 10, (samples + 1000,), generator=g)
        source = "random 28x28 tensors"
    x = ((x - x.mean()) / x.std()).to(device)
    y = y.to(device)
    return Splits(x[:samples], y[:samples], x[samples:], y[samples:], x[samples:], y[samples:], 10), source


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def trainer_epoch(cfg: RunConfig, data: Splits, device: torch.device, execution: Execution) -> float:
    sync(device)
    start = time.perf_counter()
    fit(cfg, data, device, execution)  # one epoch, including its validation pass
    sync(device)
    return time.perf_counter() - start


def floor_epoch(cfg: RunConfig, data: Splits, device: torch.device, execution: Execution) -> float:
    """The bare compute loop over the trainer's batches: nothing but forward, backward, step."""
    torch.manual_seed(cfg.seed)
    model = create_model("convnet", (1, 28, 28), 10, **cfg.model.params).to(device)
    if execution.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    order = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    bs = cfg.train.batch_size
    sync(device)
    start = time.perf_counter()
    model.train()
    for i in range(0, len(order), bs):
        idx = order[i:i + bs]
        with execution.autocast(device):
            loss = nn.functional.cross_entropy(model(execution.layout(data.train_x[idx])).float(), data.train_y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    return time.perf_counter() - start


def dataloader_epoch(cfg: RunConfig, data: Splits, device: torch.device, execution: Execution) -> float:
    """What notebooks do: a DataLoader over a CPU dataset, a host sync (.item()) every step."""
    torch.manual_seed(cfg.seed)
    model = create_model("convnet", (1, 28, 28), 10, **cfg.model.params).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    loader = DataLoader(TensorDataset(data.train_x.cpu(), data.train_y.cpu()), batch_size=cfg.train.batch_size,
                        shuffle=True)
    sync(device)
    start = time.perf_counter()
    model.train()
    total, correct = 0.0, 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with execution.autocast(device):
            out = model(x).float()
            loss = nn.functional.cross_entropy(out, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(y)
        correct += (out.argmax(1) == y).sum().item()
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=12_000)
    args = parser.parse_args()
    device = torch.device(args.device)
    execution = Execution.default_for(device)
    data, source = load_data(args.samples, device)
    rows, result = [], {}
    for name, (params, batch) in MODELS.items():
        cfg = RunConfig("fashion-mnist", 0, ModelConfig("convnet", resolve_params("convnet", params)),
                        TrainConfig(epochs=1, patience=0, batch_size=batch))
        floor_epoch(cfg, data, device, execution)  # warm-up: allocator, kernels, caches
        a = trainer_epoch(cfg, data, device, execution)
        b = floor_epoch(cfg, data, device, execution)
        c = dataloader_epoch(cfg, data, device, execution)
        n_params = sum(p.numel() for p in create_model("convnet", (1, 28, 28), 10, **params).parameters())
        rows.append([name, f"{n_params:,}", batch, f"{a:.2f}", f"{b:.2f}", f"{c:.2f}", f"{a / b:.3f}", f"{c / a:.3f}"])
        result[name] = {"trainer_over_floor": round(a / b, 3), "dataloader_over_trainer": round(c / a, 3)}
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"one epoch of {args.samples:,} samples ({source}) on {device} ({device_name}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, execution {execution}")
    print(tabulate(rows, headers=["model", "params", "batch", "(a) trainer s", "(b) floor s",
                                  "(c) DataLoader s", "a/b", "c/a"]))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
