"""README's "From your script to a grid" runs as written: its model file, grid and commands."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pandas as pd

from ablatrix.cli import main
from ablatrix.data import DATASETS
from ablatrix.models import MODELS

README = Path(__file__).resolve().parents[1] / "README.md"


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    return text.split(f"### {title}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]


def test_from_your_script_to_a_grid_runs_as_written(tmp_path, monkeypatch):
    """The README's model file and grid are written as they are; its command trains (2 epochs, one
    seed, by --set) and reports on generated arrays in the npz layout its loader reads."""
    blocks = re.findall(r"```(\w*)\n(.*?)```", section("From your script to a grid"), re.S)
    (python, toml, shell) = ([body for kind, body in blocks if kind == k] for k in ("python", "toml", ""))
    assert len(python) == len(toml) == len(shell) == 1
    (tmp_path / "my_notebook.py").write_text(python[0])
    (tmp_path / "notebook.toml").write_text(toml[0])
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 10
    images = rng.integers(0, 60, (200, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):  # a bright bar whose column says the class
        images[i, :, 2 * label + 4:2 * label + 7] = 255
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "arrays.npz", images=images, labels=labels)
    monkeypatch.chdir(tmp_path)
    quick = ["--set", "train.epochs=2", "--set", "seeds=[0]", "--set", "train.warmup_epochs=0"]
    try:
        for command in shell[0].strip().split("&&"):
            words = shlex.split(command)
            assert words[0] == "ablatrix"
            assert main(words[1:] + quick) == 0
    finally:  # other tests list the registered names
        MODELS.pop("notebook-cnn", None)
        DATASETS.pop("my-arrays", None)
    runs = pd.read_csv(tmp_path / "results" / "notebook" / "runs.csv")
    assert len(runs) == 2 and (runs["status"] == "done").all() and (runs["test_accuracy"] > 0.3).all()
