"""Datasets: a registry of loaders, fixed stratified splits, and tensors kept on the training device.

A loader returns the whole labelled set as CPU tensors plus a fixed test mask. The test split
never depends on a run's seed, and neither does the validation split carved from train: seeds
vary initialisation, dropout and batch order, so every variant of a grid sees identical data.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

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
    """What the model builder and the report need to know before anything is loaded."""

    name: str
    input_shape: tuple[int, int, int]
    classes: tuple[str, ...]
    load: Callable[[], Labelled]
    description: str


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
                     description: str) -> Callable[[Callable[[], Labelled]], Callable[[], Labelled]]:
    """Register a loader `() -> Labelled` for a dataset of the given shape and class names."""
    def add(load: Callable[[], Labelled]) -> Callable[[], Labelled]:
        cached = functools.cache(load)  # one read per process, however many cells use it
        DATASETS.register(name)(DatasetInfo(name, input_shape, tuple(classes), cached, description))
        return load
    return add


def stratified_mask(labels: np.ndarray, fraction: float, seed: int = SPLIT_SEED) -> np.ndarray:
    """Boolean mask selecting round(fraction * count) samples of every class, chosen by `seed`."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        mask[rng.permutation(members)[: int(round(fraction * len(members)))]] = True
    return mask


@functools.lru_cache(maxsize=4)  # consecutive cells of a grid share the tensors on the device
def load_splits(name: str, val_fraction: float, device: torch.device) -> Splits:
    """Train/val/test for `name`, normalised per channel with statistics of the train part only."""
    info = DATASETS.lookup(name)
    data = info.load()
    x, y, is_test = data.x, data.y, data.is_test.numpy()
    train_idx = np.flatnonzero(~is_test)
    is_val = stratified_mask(y.numpy()[train_idx], val_fraction)
    parts = {"train": train_idx[~is_val], "val": train_idx[is_val], "test": np.flatnonzero(is_test)}
    train_x = x[parts["train"]]
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    tensors = {}
    for part, idx in parts.items():
        index = torch.from_numpy(idx)
        tensors[f"{part}_x"] = ((x[index] - mean) / std).to(device)
        tensors[f"{part}_y"] = y[index].to(device)
    return Splits(**tensors, num_classes=len(info.classes))


@register_dataset("digits", (1, 8, 8), tuple(str(d) for d in range(10)),
                  "scikit-learn's 1,797 real 8x8 handwritten digits (UCI), embedded, no download; "
                  "fixed stratified 20% test split")
def _digits() -> Labelled:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1)
    labels = bunch.target.astype(np.int64)
    return Labelled(x, torch.from_numpy(labels), torch.from_numpy(stratified_mask(labels, 0.2)))
