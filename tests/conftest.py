"""Shared helpers: tiny grid files written into a temporary folder."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

TINY_GRID = """
name = "tiny"
datasets = ["digits"]
seeds = [0, 1]

[train]
epochs = 2
patience = 0
batch_size = 128

[model]
conv = [4]
fc = []

[axes]
model.batchnorm = [true, false]
"""


@pytest.fixture
def write_grid(tmp_path: Path):
    """write_grid(text, name="grid.toml") -> path of a grid file holding `text`."""
    def write(text: str = TINY_GRID, name: str = "grid.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path
    return write
