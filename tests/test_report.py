"""Reports: tidy CSV columns, per-class rows, mean ± std by hand, partial and failed grids."""
from __future__ import annotations

import pandas as pd
import pytest

from ablatrix.report import write_report
from ablatrix.spec import load_grid
from ablatrix.store import ResultStore


def fabricate(cell, accuracy: float, status: str = "done") -> dict:
    """A stored record as the runner writes it, with hand-chosen metrics."""
    support = [36] * 10
    correct = [round(accuracy * s) for s in support]
    record = {"run_id": cell.run_id, "status": status, "config": cell.config.to_dict(),
              "params": cell.params, "wall_seconds": 1.5, "device": "cpu", "device_name": "test cpu",
              "versions": {"torch": "2.x"}, "code_revision": "git:test"}
    if status == "failed":
        return {**record, "error": "TrainingDiverged: training loss became nan in epoch 3"}
    return {**record, "epochs_trained": 4, "best_epoch": 3, "history": [],
            "test": {"accuracy": accuracy, "loss": 1 - accuracy, "confusion": [],
                     "per_class": [{"class": c, "correct": k, "support": s, "accuracy": k / s}
                                   for c, (k, s) in enumerate(zip(correct, support))]}}


@pytest.fixture
def grid(write_grid):
    return load_grid(write_grid())  # batchnorm true/false x seeds 0, 1


def by_key(grid):
    return {(c.axes["model.batchnorm"], c.config.seed): c for c in grid.cells}


def test_tables_from_a_complete_grid(grid, tmp_path):
    """runs.csv has the contract's columns; REPORT.md shows mean ± std computed by hand."""
    cells = by_key(grid)
    store = ResultStore(tmp_path, grid.name)
    for key, acc in {(True, 0): 0.9, (True, 1): 0.8, (False, 0): 0.5, (False, 1): 0.5}.items():
        store.put(fabricate(cells[key], acc))
    write_report(grid, tmp_path)

    runs = pd.read_csv(tmp_path / "tiny" / "runs.csv")
    assert list(runs.columns) == ["run_id", "variant", "dataset", "seed", "model.batchnorm", "params",
                                  "epochs_trained", "best_epoch", "test_accuracy", "test_loss",
                                  "wall_seconds", "status"]
    assert len(runs) == 4 and set(runs["status"]) == {"done"}
    assert runs.set_index("run_id").loc[cells[True, 1].run_id, "test_accuracy"] == 0.8

    per_class = pd.read_csv(tmp_path / "tiny" / "per_class.csv")
    assert list(per_class.columns[:4]) == ["run_id", "class_index", "class", "accuracy"]
    assert "support" in per_class.columns and len(per_class) == 4 * 10
    row = per_class[(per_class.run_id == cells[True, 0].run_id) & (per_class.class_index == 3)].iloc[0]
    assert (row["correct"], row["support"]) == (32, 36)  # round(0.9 * 36)

    report = (tmp_path / "tiny" / "REPORT.md").read_text()
    assert "85.00 ± 7.07 (n=2)" in report  # mean(0.9, 0.8), sample std = 0.0707
    assert "50.00 ± 0.00 (n=2)" in report
    assert "4 cells (4 done, 0 failed, 0 pending)" in report
    assert "ablatrix report" in report and "git:test" in report


def test_partial_grid_with_a_failed_cell(grid, tmp_path):
    """Missing cells are `pending`, failed ones `failed` with the reason; neither enters the mean."""
    cells = by_key(grid)
    store = ResultStore(tmp_path, grid.name)
    store.put(fabricate(cells[True, 0], 0.9))
    store.put(fabricate(cells[True, 1], 0.0, status="failed"))
    store.put(fabricate(cells[False, 0], 0.6))
    write_report(grid, tmp_path)

    runs = pd.read_csv(tmp_path / "tiny" / "runs.csv").set_index("run_id")
    assert runs.loc[cells[True, 1].run_id, "status"] == "failed"
    assert runs.loc[cells[False, 1].run_id, "status"] == "pending"
    assert pd.isna(runs.loc[cells[False, 1].run_id, "test_accuracy"])
    report = (tmp_path / "tiny" / "REPORT.md").read_text()
    assert "90.00 (n=1)" in report and "60.00 (n=1)" in report
    assert "(2 done, 1 failed, 1 pending)" in report
    assert "training loss became nan in epoch 3" in report


def test_records_of_cells_no_longer_in_the_grid_are_ignored(grid, tmp_path):
    """A stored run whose config left the grid does not enter the tables."""
    store = ResultStore(tmp_path, grid.name)
    stray = fabricate(grid.cells[0], 0.1)
    store.put({**stray, "run_id": "000000000000"})
    write_report(grid, tmp_path)
    runs = pd.read_csv(tmp_path / "tiny" / "runs.csv")
    assert "000000000000" not in set(runs["run_id"]) and set(runs["status"]) == {"pending"}
    assert "No finished runs yet." in (tmp_path / "tiny" / "REPORT.md").read_text()
