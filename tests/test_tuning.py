"""Tuned ablations: the [tune] table, selection on validation only, the expected best curve, the report."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from ablatrix.errors import AblatrixError
from ablatrix.report import write_report
from ablatrix.spec import load_grid
from ablatrix.stats import expected_max
from ablatrix.store import ResultStore
from ablatrix.tuning import parse_tune, select

from conftest import SUPPORT, fabricate

TUNED_GRID = """
name = "tuned"
datasets = ["digits"]
seeds = [0, 1, 2]
[model]
conv = [4]
[train]
lr = 0.001
restore_best = false
[axes]
model.batchnorm = [true, false]
[tune]
train.lr = [0.001, 0.003]
"""


def test_every_configuration_trains_every_candidate_and_the_own_value_is_the_untuned_run(write_grid):
    """2 configurations x 2 candidates x 3 seeds; the candidate at the grid's own lr is the untuned grid's run."""
    tuned = load_grid(write_grid(TUNED_GRID))
    untuned = load_grid(write_grid(TUNED_GRID.replace("[tune]\ntrain.lr = [0.001, 0.003]\n", ""), "plain.toml"))
    assert len(tuned.cells) == 12 and {c.axes["train.lr"] for c in tuned.cells} == {0.001, 0.003}
    assert {c.run_id for c in untuned.cells} == {c.run_id for c in tuned.cells if c.axes["train.lr"] == 0.001}


@pytest.mark.parametrize("table, axes, restore_best, message", [
    ({"train.lr": [1e-3]}, {"train.lr": [1e-3, 1e-2]}, False, "tune.train.lr is also an axis"),
    ({"train.learning_rate": [1e-3]}, {}, False, "tune.train.learning_rate: unknown field"),
    ({"optim.lr": [1e-3]}, {}, False, "tune.optim.lr: unknown field"),
    ({"train.lr": []}, {}, False, "expected a non-empty list of candidates or a range"),
    ({"train.lr": [1e-3], "metric": "test_accuracy"}, {}, False, "tune.metric = 'test_accuracy'; choose from: val_acc"),
    ({"train.lr": [1e-3]}, {}, True, "restore_best picks each run's epoch by val_loss; say which metric"),
    ({"train.lr": {"low": 1e-4, "high": 1e-2}}, {}, False, "is a range: say how many candidates to draw"),
    ({"train.lr": {"low": 1e-4, "top": 1e-2}, "trials": 4}, {}, False, "a range is {low = ..., high = ..."),
    ({"metric": "val_loss"}, {}, False, "name at least one train.* or model.* field"),
])
def test_bad_tune_tables_are_one_error_line(table, axes, restore_best, message):
    """Axis clashes, unknown fields, empty candidates, test metrics, unstated metric under restore_best, ranges."""
    with pytest.raises(AblatrixError, match=message) as caught:
        parse_tune(table, axes, restore_best)
    assert "\n" not in str(caught.value)


def test_a_variant_that_sets_a_tuned_field_is_refused(write_grid):
    with pytest.raises(AblatrixError, match="variant 'fast' sets train.lr, which \\[tune\\] tunes"):
        load_grid(write_grid(TUNED_GRID + "[variants.fast]\ntrain.lr = 0.01\n"))


def test_a_range_is_drawn_once_the_same_for_every_configuration_and_every_load():
    """trials = 5 log-uniform draws inside the range, identical on a second parse (a fixed sampling seed)."""
    table = {"train.lr": {"low": 1e-4, "high": 1e-2, "log": True}, "trials": 5, "metric": "val_loss"}
    first, again = parse_tune(table, {}, True), parse_tune(table, {}, True)
    values = [c[0] for c in first.candidates]
    assert first == again and len(values) == 5 and all(1e-4 <= v <= 1e-2 for v in values)
    assert first.metric == "val_loss"


def runs(*rows: tuple) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["run_id", "config", "seed", "lr", "status", "val_accuracy", "test_accuracy"])


@pytest.mark.parametrize("metric, expected", [("val_accuracy", "a"), ("val_loss", "b")])
def test_selection_reads_validation_never_test(metric, expected):
    """Candidate a has the best validation accuracy and the worst test accuracy, b the lowest validation loss:
    the selected one is the validation metric's choice whatever test says."""
    frame = runs(("a", 0, 0, 1e-3, "done", 0.9, 0.70), ("b", 0, 0, 3e-3, "done", 0.8, 0.80),
                 ("c", 0, 0, 1e-2, "done", 0.7, 0.99))
    chosen = select(frame, ["config", "seed"], metric, {"a": 0.5, "b": 0.3, "c": 0.4})
    assert chosen["run_id"].tolist() == [expected] and chosen["candidates"].tolist() == [3]


def test_selection_waits_for_pending_candidates_and_skips_failed_ones():
    frame = runs(("a", 0, 0, 1e-3, "failed", math.nan, math.nan), ("b", 0, 0, 3e-3, "done", 0.8, 0.8),
                 ("c", 1, 0, 1e-3, "pending", math.nan, math.nan), ("d", 1, 0, 3e-3, "done", 0.9, 0.9),
                 ("e", 2, 0, 1e-3, "failed", math.nan, math.nan))
    chosen = select(frame, ["config", "seed"], "val_accuracy", {})
    assert list(zip(chosen["config"], chosen["status"], chosen["run_id"])) == [
        (0, "done", "b"), (1, "pending", "c"), (2, "failed", "e")]


@pytest.mark.parametrize("n, expected", [(1, 2.0), (2, 8 / 3), (3, 3.0)])
def test_expected_max_without_replacement_by_hand(n, expected):
    """Of {1, 2, 3}: one draw averages 2; two draws without replacement: max of (1,2), (1,3), (2,3) = 8/3."""
    assert expected_max([3.0, 1.0, 2.0], n) == pytest.approx(expected)


def test_expected_max_matches_the_unbiased_formula_on_ties_and_grows_with_the_budget():
    """Tang et al.'s estimator: for N values and n = N it is the maximum, for n = 1 the mean; ties change nothing."""
    values = [70.0, 70.0, 72.5, 71.0, 72.5]
    curve = [expected_max(values, n) for n in range(1, 6)]
    assert curve[0] == pytest.approx(sum(values) / 5) and curve[-1] == 72.5
    assert all(a <= b for a, b in zip(curve, curve[1:]))


def test_a_tuned_report_selects_on_validation_and_sets_the_fixed_effect_beside_the_tuned_one(write_grid, tmp_path):
    """lr 0.003 has the better validation accuracy in every run but costs test accuracy without BatchNorm:
    the report analyses the lr-0.003 runs (test never selects), states BatchNorm's effect at the grid's own
    lr beside the tuned one with a sentence where the verdicts differ, and counts the selections."""
    grid = load_grid(write_grid(TUNED_GRID))
    store = ResultStore(tmp_path, grid.name)
    for cell in grid.cells:  # test: BatchNorm +0 pp at lr 0.001, +10 pp at 0.003 (whole images, seed noise)
        bn, fast, seed = cell.axes["model.batchnorm"], cell.axes["train.lr"] == 0.003, cell.config.seed
        record = fabricate(cell, (30 - 4 * (fast and not bn) + seed % 2) / SUPPORT)
        record["history"][-1]["val_accuracy"] = 0.9 if fast else 0.6
        store.put(record)
    report = write_report([grid], tmp_path, formats=("md", "csv")).read_text()
    deltas = pd.read_csv(tmp_path / "tuned" / "deltas.csv")
    assert deltas["mean"].round(2).tolist() == [round(-400 / 36, 2)] and deltas["verdict"].tolist() == ["worse"]
    compared = pd.read_csv(tmp_path / "tuned" / "tuned_vs_fixed.csv")
    assert compared[["fixed_verdict", "tuned_verdict"]].values.tolist() == [["equivalent", "worse"]]
    assert "at the grid's own value it makes no practical difference" in report and "**tuned, it lowers" in report
    selection = pd.read_csv(tmp_path / "tuned" / "selection.csv")
    assert selection["selected"].tolist() == ["0.001: 0, 0.003: 3"] * 2
    assert "(figures/expected_best_digits.png)" in report
    assert pd.read_csv(tmp_path / "tuned" / "runs.csv").shape[0] == 12  # every candidate stays in runs.csv


def test_a_tuned_grid_is_reported_on_its_own(write_grid, tmp_path):
    """Selection is per grid: a tuned grid beside another is one error line, not a mixed analysis."""
    tuned, plain = load_grid(write_grid(TUNED_GRID)), load_grid(write_grid(TUNED_GRID.replace(
        'name = "tuned"', 'name = "plain"').replace("[tune]\ntrain.lr = [0.001, 0.003]\n", ""), "plain.toml"))
    for grid in (tuned, plain):
        store = ResultStore(tmp_path, grid.name)
        for cell in grid.cells:
            store.put(fabricate(cell, 30 / SUPPORT))
    with pytest.raises(AblatrixError, match="a grid with \\[tune\\] is analysed on its own"):
        write_report([tuned, plain], tmp_path)
