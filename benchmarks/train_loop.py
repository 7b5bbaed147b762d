"""One training epoch three ways, same model, data and batches: (a) the ablatrix trainer,
(b) the bare compute loop (forward, backward, step, nothing else), (c) a notebook-style loop:
a DataLoader over torchvision's FashionMNIST (ToTensor + Normalize per sample), .item() every step;
on CUDA also (d), the bare loop with cuDNN's autotuned (not deterministic) kernels.

    python benchmarks/train_loop.py [--device cpu|cuda] [--samples N] [--repeats 3]

Prints a table, then as its last line one JSON object with, per model,
trainer_over_floor = a / b, dataloader_over_trainer = c / a and on CUDA deterministic_over_autotuned
= b / d (one run each: ratios, not seconds,
are what compares across noisy machines; each loop's fastest of --repeats epochs counts).
"""
from __future__ import annotations

import argparse
import json
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets, transforms

from ablatrix.config import ModelConfig, RunConfig, TrainConfig
from ablatrix.data import DATASETS, Splits
from ablatrix.errors import AblatrixError
from ablatrix.models import create_model, resolve_params
from ablatrix.record import environment
from ablatrix.evaluation import Execution
from ablatrix.train import fit

MODELS = {  # the small-cnn study's model and the 1.1M-parameter MNIST/Fashion CNN
    "small-cnn": (dict(conv=[6, 12, 24], padding=[1, 0, 0], pool=["max", "max", "none"], dropout=0.75,
                       fc=[128, 48]), 64),
    "cnn-1.1M": (dict(conv=[32, 64, 128], dropout=0.3, dropout_kind="dropout2d", pool_padding=[0, 0, 1],
                      fc=[512], fc_batchnorm=False, fc_dropout=0.5), 256),
}


def load_images(samples: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Fashion-MNIST (uint8) where it is installed, else random 28x28 images (timing only needs the shape)."""
    try:
        data = DATASETS["fashion-mnist"].load(Path.home() / ".cache" / "ablatrix")
        x, y, source = data.x[:samples + 1000].mul(255).round().to(torch.uint8), data.y[:samples + 1000], "Fashion-MNIST"
    except AblatrixError:
        g = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (samples + 1000, 1, 28, 28), generator=g, dtype=torch.uint8)
        y, source = torch.randint(0, 10, (samples + 1000,), generator=g), "random 28x28 images"
    return x, y, source


def splits(x: torch.Tensor, y: torch.Tensor, samples: int, device: torch.device) -> Splits:
    """Standardised tensors on the device, as ablatrix trains on: `samples` to train, the rest to validate."""
    x = x.float().div(255)
    x = ((x - x.mean()) / x.std()).to(device)
    y = y.to(device)
    return Splits(x[:samples], y[:samples], x[samples:], y[samples:], x[samples:], y[samples:], 10)


def write_idx(path: Path, array: np.ndarray) -> None:
    path.write_bytes(bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes())


def torchvision_dataset(x: torch.Tensor, y: torch.Tensor, samples: int, root: Path) -> Dataset:
    """The training images as a notebook reads them: torchvision's FashionMNIST from its raw idx files,
    PIL image -> ToTensor -> Normalize per sample (the same standardisation as `splits`)."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x[:samples, 0].numpy())
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y[:samples].numpy().astype(np.uint8))
    scaled = x.float().div(255)
    normalize = transforms.Normalize((scaled.mean().item(),), (scaled.std().item(),))
    return datasets.FashionMNIST(str(root), train=True, transform=transforms.Compose([transforms.ToTensor(), normalize]))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def trainer_epoch(cfg: RunConfig, data: Splits, device: torch.device, execution: Execution) -> float:
    sync(device)
    start = time.perf_counter()
    fit([cfg], data, device, execution)  # one epoch, including its validation pass
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


def autotuned_epoch(cfg: RunConfig, data: Splits, device: torch.device, execution: Execution) -> float:
    """(d) The floor with cuDNN's autotuner choosing the kernels (timed at their first use; not
    deterministic), which ablatrix leaves off on CUDA so that a training repeats bit for bit."""
    with torch.backends.cudnn.flags(enabled=True, benchmark=True, deterministic=False):
        return floor_epoch(cfg, data, device, execution)


def dataloader_epoch(cfg: RunConfig, dataset: Dataset, device: torch.device, execution: Execution) -> float:
    """What notebooks do: a DataLoader over a torchvision dataset, a host sync (.item()) every step."""
    torch.manual_seed(cfg.seed)
    model = create_model("convnet", (1, 28, 28), 10, **cfg.model.params).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    loader = DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=True)
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
    parser.add_argument("--repeats", type=int, default=3, help="epochs timed per loop; the fastest counts")
    args = parser.parse_args()
    device = torch.device(args.device)
    execution = Execution.default_for(device)
    x, y, source = load_images(args.samples)
    data = splits(x, y, args.samples, device)
    folder = tempfile.TemporaryDirectory()
    dataset = torchvision_dataset(x, y, args.samples, Path(folder.name))
    rows, result = [], {}
    for name, (params, batch) in MODELS.items():
        cfg = RunConfig("fashion-mnist", 0, ModelConfig("convnet", resolve_params("convnet", params)),
                        TrainConfig(epochs=1, patience=0, batch_size=batch))
        loops = {"a": (trainer_epoch, data), "b": (floor_epoch, data), "c": (dataloader_epoch, dataset)}
        if device.type == "cuda":
            loops["d"] = (autotuned_epoch, data)
        for loop, inputs in loops.values():  # warm-up: allocator, kernels, caches, the autotuner's choices
            loop(cfg, inputs, device, execution)
        times: dict[str, list[float]] = {k: [] for k in loops}
        for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits them all
            for k, (loop, inputs) in loops.items():
                times[k].append(loop(cfg, inputs, device, execution))
        best = {k: min(t) for k, t in times.items()}  # the least disturbed epoch of each
        a, b, c = best["a"], best["b"], best["c"]
        ratios = {"trainer_over_floor": a / b, "dataloader_over_trainer": c / a}
        if "d" in best:
            ratios["deterministic_over_autotuned"] = b / best["d"]
        n_params = sum(p.numel() for p in create_model("convnet", (1, 28, 28), 10, **params).parameters())
        rows.append([name, f"{n_params:,}", batch, f"{a:.2f}", f"{b:.2f}", f"{c:.2f}", *(f"{r:.3f}" for r in ratios.values())])
        result[name] = {k: round(r, 3) for k, r in ratios.items()}
    print(f"fastest of {args.repeats} epochs of {args.samples:,} samples ({source}) on {device} "
          f"({environment(device)['device_name']}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, execution {execution}")
    print(tabulate(rows, headers=["model", "params", "batch", "(a) trainer s", "(b) floor s",
                                  "(c) DataLoader s", "a/b", "c/a", *(["b/d (d: autotuned floor)"] if device.type == "cuda" else [])]))
    print(json.dumps(result))
    folder.cleanup()


if __name__ == "__main__":
    main()
