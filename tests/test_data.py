"""Datasets: fixed stratified splits that never depend on the run, train-only normalisation."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ablatrix.data import DATASETS, load_splits, stratified_mask
from ablatrix.sources import register_named
from ablatrix.errors import AblatrixError


@pytest.mark.parametrize("counts, fraction", [([10, 20, 30], 0.2), ([5, 5], 0.5), ([7, 100, 3], 0.15)])
def test_stratified_mask_takes_the_fraction_of_every_class(counts, fraction):
    """Each class contributes round(fraction * its count) samples."""
    labels = np.repeat(np.arange(len(counts)), counts)
    mask = stratified_mask(labels, fraction)
    assert [int(mask[labels == c].sum()) for c in range(len(counts))] == [round(fraction * n) for n in counts]


def test_digits_splits_are_fixed_disjoint_and_normalised():
    """digits: 1,797 samples, a stratified 20% test set identical whatever the validation fraction."""
    a = load_splits("digits", 0.1, torch.device("cpu"), Path("."))
    b = load_splits("digits", 0.3, torch.device("cpu"), Path("."))
    assert len(a.train_x) + len(a.val_x) + len(a.test_x) == 1797
    assert len(a.test_x) == 359 and a.num_classes == 10
    assert torch.equal(a.test_y, b.test_y)
    assert len(b.val_x) > len(a.val_x)
    # Normalised with train statistics: the train part has mean 0 and std 1, the others only close.
    assert abs(a.train_x.mean().item()) < 1e-5 and abs(a.train_x.std().item() - 1) < 1e-3
    # No test image also appears in train (the raw digits set has few exact duplicates).
    train = {tuple(x.flatten().tolist()) for x in a.train_x}
    overlap = sum(tuple(x.flatten().tolist()) in train for x in a.test_x)
    assert overlap <= 2
    assert torch.bincount(a.test_y).min() >= 35  # stratified: ~36 per class


def test_unknown_dataset_lists_choices():
    """Asking for a dataset that is not registered names the registered ones."""
    with pytest.raises(AblatrixError, match="unknown dataset 'mnist-x'; choose from: .*digits"):
        DATASETS.lookup("mnist-x")


def test_standardize_false_keeps_the_inputs_as_loaded():
    """train.standardize = false: the tensors are the loader's own (digits' 0-16 pixel values), the same split."""
    raw = load_splits("digits", 0.1, torch.device("cpu"), Path("."), standardize=False)
    scaled = load_splits("digits", 0.1, torch.device("cpu"), Path("."))
    assert float(raw.train_x.min()) == 0.0 and float(raw.train_x.max()) == 16.0
    assert torch.equal(raw.test_y, scaled.test_y)
    mean, std = raw.train_x.mean(dim=(0, 2, 3), keepdim=True), raw.train_x.std(dim=(0, 2, 3), keepdim=True)
    assert torch.allclose((raw.test_x - mean) / std, scaled.test_x, atol=1e-5)


def test_a_split_left_empty_is_named(tmp_path):
    """Too few samples for the validation fraction: a clear error naming the split, not torch's."""
    x, y = np.zeros((20, 8, 8), np.uint8), np.arange(20) % 10
    np.savez(tmp_path / "tiny.npz", x=x, y=y)
    register_named("npz:tiny.npz", str(tmp_path / "tiny.npz"))
    try:
        with pytest.raises(AblatrixError, match="its val split is empty"):
            load_splits("npz:tiny.npz", 0.1, torch.device("cpu"), tmp_path)
    finally:
        DATASETS.pop("npz:tiny.npz")
