"""Datasets: a registry of loaders, fixed stratified splits, tensors kept on the training device,
and batched on-device augmentation.

A loader returns the whole labelled set as CPU tensors plus a fixed test mask. The test split
never depends on a run's seed, and neither does the validation split carved from train: seeds
vary initialisation, dropout, augmentation and batch order, so every variant of a grid sees
identical data. The concrete datasets live in `datasets.py`.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import AblatrixError
from .registry import Registry

SPLIT_SEED = 0  # fixed: splits are part of the dataset's definition, not of the run


@dataclass(frozen=True)
class Labelled:
    """A dataset as loaded: inputs (N, C, H, W) float32, labels (N,) int64, and the test mask."""

    x: torch.Tensor
    y: torch.Tensor
    is_test: torch.Tensor


@dataclass(frozen=True)
class DatasetInfo:
    """What the model builder, trainer and report need to know before anything is loaded."""

    name: str
    input_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    load: Callable[[Path], Labelled]  # data root -> the labelled set; AblatrixError if files are missing
    description: str
    standardize: bool  # per-channel mean/std from the train part; False for one-hot wafer maps
    download: Callable[[Path], None] | None  # fetch the files into the data root, where possible


@dataclass(frozen=True)
class Splits:
    """Normalised train/val/test tensors on one device."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register_dataset(name: str, input_shape: tuple[int, int, int], classes: tuple[str, ...],
                     description: str, standardize: bool = True,
                     download: Callable[[Path], None] | None = None
                     ) -> Callable[[Callable[[Path], Labelled]], Callable[[Path], Labelled]]:
    """Register a loader `(data_root) -> Labelled` for a dataset of the given shape and classes."""
    def add(load: Callable[[Path], Labelled]) -> Callable[[Path], Labelled]:
        cached = functools.cache(load)  # one read per process and root, however many cells use it
        DATASETS.register(name)(DatasetInfo(name, input_shape, tuple(classes), cached, description,
                                            standardize, download))
        return load
    return add


def data_root(explicit: Path | None = None) -> Path:
    """--data-dir, else $ABLATRIX_DATA, else ~/.cache/ablatrix."""
    if explicit is not None:
        return Path(explicit)
    return Path(os.environ.get("ABLATRIX_DATA") or Path.home() / ".cache" / "ablatrix")


def stratified_mask(labels: np.ndarray, fraction: float, seed: int = SPLIT_SEED) -> np.ndarray:
    """Boolean mask selecting round(fraction * count) samples of every class, chosen by `seed`."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        mask[rng.permutation(members)[: int(round(fraction * len(members)))]] = True
    return mask


@functools.lru_cache(maxsize=4)  # consecutive cells of a grid share the tensors on the device
def load_splits(name: str, val_fraction: float, device: torch.device, root: Path,
                standardize: bool = True) -> Splits:
    """Train/val/test for `name`, standardised per channel with statistics of the train part only
    (unless the dataset or `standardize` says not to)."""
    info = DATASETS.lookup(name)
    data = info.load(root)
    x, y, is_test = data.x, data.y, data.is_test.numpy()
    train_idx = np.flatnonzero(~is_test)
    is_val = stratified_mask(y.numpy()[train_idx], val_fraction)
    parts = {"train": train_idx[~is_val], "val": train_idx[is_val], "test": np.flatnonzero(is_test)}
    for part, idx in parts.items():
        if len(idx) == 0:
            raise AblatrixError(f"dataset {name!r}: its {part} split is empty ({len(train_idx)} training samples, "
                                f"val_fraction {val_fraction}, {int(is_test.sum())} test samples)")
    mean, std = torch.zeros(1), torch.ones(1)
    if info.standardize and standardize:
        train_x = x[parts["train"]]
        mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
        std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    tensors = {}
    for part, idx in parts.items():
        index = torch.from_numpy(idx)
        tensors[f"{part}_x"] = ((x[index] - mean) / std).to(device)
        tensors[f"{part}_y"] = y[index].to(device)
    return Splits(**tensors, num_classes=len(info.classes))


# Augmentations: (batch on the device) -> batch of the same shape, random per sample, drawn from
# torch's global generator (seeded per run), without leaving the device.
AUGMENTATIONS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("augmentation")


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), a, b)


def _coin(x: torch.Tensor) -> torch.Tensor:
    return torch.rand(len(x), device=x.device) < 0.5


@AUGMENTATIONS.register("none")
def no_augmentation(x: torch.Tensor) -> torch.Tensor:
    return x


@AUGMENTATIONS.register("flip-rot90")
def flip_rot90(x: torch.Tensor) -> torch.Tensor:
    """Random horizontal and vertical flips (together: 180° turns), and 90° turns on square maps."""
    x = _where(_coin(x), x.flip(-1), x)
    x = _where(_coin(x), x.flip(-2), x)
    if x.shape[-1] == x.shape[-2]:
        x = _where(_coin(x), x.transpose(-1, -2).flip(-1), x)
    return x


@AUGMENTATIONS.register("crop-flip")
def crop_flip(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Random crop from the zero-padded image (CIFAR-style, 4 pixels) and random horizontal flip."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), device=x.device)
    rows = dy + torch.arange(h, device=x.device).view(1, h, 1)
    cols = dx + torch.arange(w, device=x.device).view(1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1)
    cropped = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    return _where(_coin(x), cropped.flip(-1), cropped)


def class_frequencies(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.bincount(y, minlength=num_classes).float().clamp_min(1)


# Samplers: (train labels, num classes, generator) -> the epoch's order of training indices.
SAMPLERS: Registry[Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]] = Registry("sampler")
SAMPLERS.register("uniform")(lambda y, c, g: torch.randperm(len(y), generator=g))
# Draws len(y) indices with replacement, each class equally likely: rare classes repeat.
SAMPLERS.register("balanced")(lambda y, c, g: torch.multinomial(
    (1 / class_frequencies(y, c))[y].cpu(), len(y), replacement=True, generator=g))

# The built-in datasets register themselves here, so whoever looks DATASETS up finds them
# (datasets.py imports this module's definitions above, which are complete by now).
from . import datasets as _built_in  # noqa: E402,F401
