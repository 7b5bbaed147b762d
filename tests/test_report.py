"""Reports from fabricated run records: tables against hand-computed values, partial grids, figures."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from ablatrix.cli import main
from ablatrix.findings import importance_lines
from ablatrix.report import write_report
from ablatrix.spec import load_grid
from ablatrix.store import ResultStore

from conftest import FULL, TINY_GRID, fabricate, store_runs

T_975_DF1 = 12.706205


@pytest.fixture
def grid(write_grid):
    return load_grid(write_grid())  # batchnorm true/false x seeds 0, 1


def test_tidy_csv_contract(grid, tmp_path):
    """runs.csv and per_class.csv have the contract's columns and the stored numbers."""
    cells = store_runs(grid, tmp_path, FULL)
    write_report([grid], tmp_path)
    runs = pd.read_csv(tmp_path / "tiny" / "runs.csv")
    assert list(runs.columns) == ["run_id", "variant", "dataset", "seed", "model.batchnorm", "params",
                                  "epochs_trained", "best_epoch", "train_accuracy", "val_accuracy", "test_accuracy",
                                  "test_loss", "wall_seconds", "status"]
    assert runs.set_index("run_id").loc[cells[True, 1].run_id, "test_accuracy"] == pytest.approx(29 / 36)
    per_class = pd.read_csv(tmp_path / "tiny" / "per_class.csv")
    assert {"run_id", "class", "accuracy", "support"} <= set(per_class.columns) and len(per_class) == 40
    row = per_class[(per_class.run_id == cells[True, 0].run_id) & (per_class.class_index == 3)].iloc[0]
    assert (str(row["class"]), row["correct"], row["support"]) == ("3", 32, 36)


@pytest.mark.parametrize("restore_best, epoch", [(True, 2), (False, 3)])
def test_runs_csv_reports_the_epoch_whose_weights_were_tested(write_grid, tmp_path, restore_best, epoch):
    """train/val accuracy in runs.csv: the best epoch's (2 of 3), or the last one's without restore_best."""
    grid = load_grid(write_grid(TINY_GRID.replace("patience = 0", f"patience = 0\nrestore_best = {str(restore_best).lower()}")))
    store_runs(grid, tmp_path, FULL)
    write_report([grid], tmp_path)
    runs = pd.read_csv(tmp_path / "tiny" / "runs.csv")
    assert runs.train_accuracy.tolist() == pytest.approx([0.3 * epoch] * 4)
    assert runs.val_accuracy.tolist() == pytest.approx([0.25 * epoch] * 4)


def test_accuracy_table_by_hand(grid, tmp_path):
    """Mean, sample std and t-interval over the two seeds; best and tie marks."""
    store_runs(grid, tmp_path, FULL)
    write_report([grid], tmp_path, ["md", "csv"])
    table = pd.read_csv(tmp_path / "tiny" / "accuracy.csv").set_index("model.batchnorm")
    a, b = 100 * 32 / 36, 100 * 29 / 36  # stored accuracies of bn=true, seeds 0 and 1
    mean, std = (a + b) / 2, abs(a - b) / math.sqrt(2)
    assert table.loc[True, "mean"] == pytest.approx(mean)
    assert table.loc[True, "std"] == pytest.approx(std)
    assert table.loc[True, "ci_low"] == pytest.approx(mean - T_975_DF1 * std / math.sqrt(2), abs=1e-4)
    assert table.loc[True, "n"] == 2 and table.loc[True, "mark"] == "best"
    assert table.loc[False, "mean"] == pytest.approx(50) and table.loc[False, "mark"] == "tie"  # wide CI


def test_deltas_by_hand(grid, tmp_path):
    """BN false − true paired per seed, overall and for every class."""
    store_runs(grid, tmp_path, FULL)
    write_report([grid], tmp_path, ["csv"])
    (row,) = pd.read_csv(tmp_path / "tiny" / "deltas.csv").to_dict("records")
    d0, d1 = 100 * (18 - 32) / 36, 100 * (18 - 29) / 36
    assert (row["factor"], row["comparison"]) == ("model.batchnorm", "False − True")
    assert row["mean"] == pytest.approx((d0 + d1) / 2)
    assert (row["n"], row["wins"], row["ties"], row["losses"]) == (2, 0, 0, 2)
    per_class = pd.read_csv(tmp_path / "tiny" / "per_class_deltas.csv")
    assert len(per_class) == 10 and per_class["mean"].tolist() == pytest.approx([(d0 + d1) / 2] * 10)


def test_markdown_tables_parse_back_to_the_csv_numbers(grid, tmp_path):
    """The accuracy column of REPORT.md equals accuracy.csv rounded to 2 decimals."""
    store_runs(grid, tmp_path, FULL)
    report = write_report([grid], tmp_path, ["md", "csv"]).read_text()
    section = report.split("## Test accuracy per configuration")[1].split("##")[0]
    header, _, *rows = [[c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines()
                        if line.startswith("|")]
    bn, acc = header.index("model.batchnorm"), header.index("accuracy %")
    shown = {r[bn]: r[acc].strip("*") for r in rows}
    table = pd.read_csv(tmp_path / "tiny" / "accuracy.csv").set_index("model.batchnorm")
    for bn in (True, False):
        mean, std = shown[str(bn)].split(" ± ")
        assert float(mean) == round(table.loc[bn, "mean"], 2)
        assert float(std) == round(table.loc[bn, "std"], 2)


def test_partial_grid_with_a_failed_cell(grid, tmp_path):
    """Missing cells are `pending`, failed ones `failed` with the reason; neither enters the mean."""
    cells = store_runs(grid, tmp_path, {(True, 0): 0.9, (True, 1): 0.0, (False, 0): 0.6},
                       {(True, 1): "failed"})
    report = write_report([grid], tmp_path, ["csv"]).read_text()
    runs = pd.read_csv(tmp_path / "tiny" / "runs.csv").set_index("run_id")
    assert runs.loc[cells[True, 1].run_id, "status"] == "failed"
    assert runs.loc[cells[False, 1].run_id, "status"] == "pending"
    assert pd.isna(runs.loc[cells[False, 1].run_id, "test_accuracy"])
    table = pd.read_csv(tmp_path / "tiny" / "accuracy.csv").set_index("model.batchnorm")
    assert (table.loc[True, "n"], table.loc[True, "failed"], table.loc[True, "pending"]) == (1, 1, 0)
    assert (table.loc[False, "n"], table.loc[False, "failed"], table.loc[False, "pending"]) == (1, 0, 1)
    assert table.loc[True, "mean"] == pytest.approx(100 * 32 / 36)
    assert "(2 done, 1 failed, 1 pending)" in report
    assert "training loss became nan in epoch 3" in report
    deltas = pd.read_csv(tmp_path / "tiny" / "deltas.csv")
    assert deltas["n"].tolist() == [1]  # only seed 0 has both partners


@pytest.mark.figures
def test_figures_are_written_and_linked(grid, tmp_path):
    """Curves, per-class heatmap and confusion matrix exist as non-empty PNG and PDF, linked in REPORT.md."""
    store_runs(grid, tmp_path, FULL)
    report = write_report([grid], tmp_path).read_text()
    figures = tmp_path / "tiny" / "figures"
    for stem in ("curves_digits", "per_class_digits", "confusion_digits"):
        for suffix in ("png", "pdf"):
            assert (figures / f"{stem}.{suffix}").stat().st_size > 1000
        assert f"(figures/{stem}.png)" in report


@pytest.mark.figures
def test_numeric_axis_gets_an_accuracy_plot(write_grid, tmp_path):
    """A numeric axis (dropout) gets accuracy-vs-axis with a line per other factor."""
    grid = load_grid(write_grid(TINY_GRID.replace("model.batchnorm = [true, false]",
                                                  "model.batchnorm = [true, false]\nmodel.dropout = [0.0, 0.5]")))
    store = ResultStore(tmp_path, grid.name)
    for i, cell in enumerate(grid.cells):
        store.put(fabricate(cell, (20 + i) / 36))
    report = write_report([grid], tmp_path).read_text()
    assert (tmp_path / "tiny" / "figures" / "axis_model_dropout_digits.png").stat().st_size > 1000
    assert "accuracy against model.dropout" in report


def test_several_grids_make_one_report(grid, write_grid, tmp_path):
    """`report A B` writes one report over both grids, with a grid column."""
    store_runs(grid, tmp_path, FULL)
    other = load_grid(write_grid(TINY_GRID.replace('"tiny"', '"other"').replace("conv = [4]", "conv = [6]"),
                                 "other.toml"))
    for cell in other.cells:
        ResultStore(tmp_path, "other").put(fabricate(cell, 0.75))
    report = write_report([grid, other], tmp_path, ["csv"])
    assert report == tmp_path / "tiny+other" / "REPORT.md"
    table = pd.read_csv(report.parent / "accuracy.csv")
    assert sorted(set(table["grid"])) == ["other", "tiny"] and len(table) == 4
    assert "8 cells (8 done" in report.read_text()


def test_a_grid_where_nothing_varies(write_grid, tmp_path):
    """One configuration: accuracy is reported, and the effects sections say nothing varies."""
    grid = load_grid(write_grid(TINY_GRID.split("[axes]")[0]))
    for cell in grid.cells:
        ResultStore(tmp_path, grid.name).put(fabricate(cell, 0.75))
    report = write_report([grid], tmp_path, ["csv"]).read_text()
    assert "Nothing varies yet, or no complete pairs." in report
    assert pd.read_csv(tmp_path / "tiny" / "deltas.csv").empty


def test_no_finished_runs(grid, tmp_path, capsys):
    """`report` before any run finished says what to run, exits 2 and writes nothing."""
    assert main(["report", str(grid.path), "--results", str(tmp_path)]) == 2
    assert f"no finished run of {grid.path.as_posix()} in {tmp_path} yet: run `ablatrix run" in capsys.readouterr().err
    assert not (tmp_path / "tiny" / "REPORT.md").exists()


def test_report_cli_rejects_unknown_format(grid, tmp_path, capsys):
    """--format lists the valid choices."""
    assert main(["report", str(grid.path), "--results", str(tmp_path), "--format", "md,xlsx"]) == 2
    assert "--format 'xlsx': choose from md, tex, csv" in capsys.readouterr().err


def test_published_numbers_beside_ours(write_grid, tmp_path):
    """A [[references]] entry shows the published value, our mean over matching runs, and the gap."""
    grid = load_grid(write_grid(TINY_GRID + '\n[[references]]\nmodel.batchnorm = true\nvalue = 80.0\nsource = "paper X"\n'))
    store_runs(grid, tmp_path, FULL)
    report = write_report([grid], tmp_path).read_text()
    section = report.split("## Published results beside ours")[1].split("##")[0]
    mean = 100 * (32 + 29) / 2 / 36
    assert "paper X" in section and "80.00" in section
    assert f"{mean:.2f} ± " in section and f"{mean - 80:+.2f}" in section


def test_missing_data_is_explained_in_the_report(write_grid, tmp_path):
    """A dataset with no runs and no files gets a 'Data not available' section with the loader's message."""
    grid = load_grid(write_grid(TINY_GRID.replace('["digits"]', '["digits", "cifar10"]')))
    for cell in grid.cells[:1]:
        ResultStore(tmp_path, grid.name).put(fabricate(cell, 0.75))
    report = write_report([grid], tmp_path, data_dir=tmp_path / "no-data").read_text()
    assert "## Data not available here" in report
    assert "dataset 'cifar10' not found: expected data_batch_1" in report
    assert str(tmp_path / "no-data") not in report and "<data>/cifar-10-batches-py" in report  # no machine paths


TWO_FACTORS = TINY_GRID.replace("seeds = [0, 1]", "seeds = [0, 1, 2, 3]").replace(
    "model.batchnorm = [true, false]", "model.batchnorm = [true, false]\nmodel.dropout = [0.0, 0.5]")


def planted_grid(write_grid, tmp_path, interaction: int, extra: str = ""):
    """BN off costs 2/36 at dropout 0 and (2 + interaction)/36 at dropout 0.5; dropout itself costs
    1/36; each seed shifts every cell by the same amount plus a 1/36 wobble on one corner."""
    grid = load_grid(write_grid(TWO_FACTORS + extra))
    store = ResultStore(tmp_path, grid.name)
    for cell in grid.cells:
        bn_off, drop = not cell.axes["model.batchnorm"], cell.axes["model.dropout"] > 0
        seed = cell.config.seed
        correct = 30 + seed - 2 * bn_off - drop - interaction * (bn_off and drop) - (seed % 2) * (bn_off and drop)
        store.put(fabricate(cell, correct / 36))
    return grid


@pytest.mark.parametrize("interaction, detected", [(12, True), (0, False)])
def test_a_planted_interaction_is_reported_first_and_marked(write_grid, tmp_path, interaction, detected):
    """BN x dropout: detected and stated in Findings when planted, the main rows marked; absent otherwise."""
    grid = planted_grid(write_grid, tmp_path, interaction)
    report = write_report([grid], tmp_path, ["csv"]).read_text()
    inter = pd.read_csv(tmp_path / "tiny" / "interactions.csv")
    (row,) = inter.to_dict("records")
    assert (row["factor_a"], row["factor_b"]) == ("model.batchnorm", "model.dropout")
    assert row["mean"] == pytest.approx(-100 * (interaction + 0.5) / 36)  # the seeds' wobble averages 0.5/36
    assert row["effect_at_base"] == pytest.approx(-200 / 36)
    assert (row["verdict"] == "detected") is detected
    findings = report.split("## Findings")[1].split("\n## ")[0]
    assert ("**depends on** `model.dropout`" in findings) is detected
    deltas = pd.read_csv(tmp_path / "tiny" / "deltas.csv", keep_default_na=False).set_index("factor")
    assert (deltas.loc["model.batchnorm", "interacts_with"] == "model.dropout") is detected
    assert report.index("## Findings") < report.index("## Test accuracy per configuration")
    assert ("(figures/interaction_model_batchnorm_x_model_dropout_digits.png)" in report) is detected


def test_effect_columns_verdicts_and_adjustment_in_the_csv(write_grid, tmp_path):
    """deltas.csv carries p, Holm-adjusted p over main effects and interactions, P(improvement), verdict."""
    grid = planted_grid(write_grid, tmp_path, 12)
    write_report([grid], tmp_path, ["csv"])
    deltas = pd.read_csv(tmp_path / "tiny" / "deltas.csv")
    inter = pd.read_csv(tmp_path / "tiny" / "interactions.csv")
    family = sorted([*deltas["p"], *inter["p"]])
    assert sorted([*deltas["p_adjusted"], *inter["p_adjusted"]]) == pytest.approx(
        sorted(holm_by_hand(family)))
    bn = deltas.set_index("factor").loc["model.batchnorm"]
    assert bn["p_improvement"] == 0.0 and bn["verdict"] == "worse" and (bn["n"], bn["pairs"]) == (4, 8)  # 4 seeds
    per_class = pd.read_csv(tmp_path / "tiny" / "per_class_deltas.csv")
    assert {"p", "p_adjusted", "p_improvement", "verdict", "seeds_needed"} <= set(per_class.columns)


def holm_by_hand(p: list[float]) -> list[float]:
    """Holm on already sorted p-values."""
    m, out = len(p), []
    for i, value in enumerate(p):
        out.append(min(1.0, max([*out, (m - i) * value])))
    return out


def test_report_settings_change_verdicts_not_run_ids(write_grid, tmp_path):
    """[report] margin decides `equivalent`; it is not part of any run id, so nothing retrains."""
    plain = load_grid(write_grid(TWO_FACTORS))
    wide = planted_grid(write_grid, tmp_path, 0, "\n[report]\nmargin = 10.0\nconfidence = 0.9\n")
    assert [c.run_id for c in plain.cells] == [c.run_id for c in wide.cells]
    report = write_report([wide], tmp_path, ["csv"]).read_text()
    deltas = pd.read_csv(tmp_path / "tiny" / "deltas.csv").set_index("factor")
    assert deltas.loc["model.dropout", "verdict"] == "equivalent"  # -1/36 = -2.8 pp, inside ±10
    assert "inside ±10 pp" in report and "90% CI" in report


def test_undecided_effects_say_how_many_seeds_would_decide_them(grid, tmp_path):
    """With 2 seeds and a noisy effect, the verdict is undecided with a seeds estimate, not NaN."""
    store_runs(grid, tmp_path, {(True, 0): 0.9, (True, 1): 0.8, (False, 0): 0.85, (False, 1): 0.9})
    report = write_report([grid], tmp_path, ["csv"]).read_text()
    (row,) = pd.read_csv(tmp_path / "tiny" / "deltas.csv").to_dict("records")
    assert row["verdict"] == "undecided" and row["seeds_needed"] > 2
    assert "would decide it if the spread holds" in report and "nan" not in report.lower()


@pytest.mark.figures  # the HTML embeds them
def test_a_plain_report_rewrites_every_format_written_before_and_removes_what_it_no_longer_writes(
        write_grid, tmp_path, capsys):
    """After `--format md,tex,csv,html`, a plain `report` on a grown grid rewrites all four (the
    HTML and the tables count the new cells), removes a figure of a level that is gone, and prints
    every file it wrote."""
    grid = load_grid(write_grid())
    store_runs(grid, tmp_path, FULL)
    assert main(["report", str(grid.path), "--results", str(tmp_path), "--format", "md,tex,csv,html"]) == 0
    out = tmp_path / "tiny"
    stale = out / "figures" / "axis_model_dropout_digits.png"
    stale.write_bytes(b"a figure of an axis the grid no longer has")
    grown = write_grid(TINY_GRID.replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    store = ResultStore(tmp_path, "tiny")
    for cell in load_grid(grown).cells:
        if cell.config.seed == 2:
            store.put(fabricate(cell, 0.75))
    capsys.readouterr()
    assert main(["report", str(grown), "--results", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "6 cells (6 done" in (out / "REPORT.html").read_text()
    assert pd.read_csv(out / "deltas.csv")["n"].tolist() == [3]
    assert "tab:tiny-ablation" in (out / "ablation.tex").read_text()
    assert not stale.exists()
    for name in ("REPORT.md", "REPORT.html", "ablation.tex", "effects.tex", "deltas.csv"):
        assert name in printed


def test_a_one_at_a_time_report_compares_each_change_with_the_base_and_no_interaction(write_grid, tmp_path):
    """Each effect is a value against the base on the same seed, the design is said, interactions are empty."""
    from test_spec import OAT_GRID
    grid = load_grid(write_grid(OAT_GRID.replace("seeds = [0, 1]", "seeds = [0, 1, 2]")))
    store = ResultStore(tmp_path, grid.name)
    for cell in grid.cells:  # dropout costs 30 pp per unit, no BatchNorm 10 pp
        accuracy = 0.9 - 0.1 * (not cell.axes["model.batchnorm"]) - 0.3 * cell.axes["model.dropout"]
        store.put(fabricate(cell, round(accuracy * 36) / 36))
    report = write_report([grid], tmp_path, formats=("md", "csv")).read_text()
    assert "Design of oat: one-at-a-time" in report
    deltas = pd.read_csv(tmp_path / "oat" / "deltas.csv")
    assert sorted(zip(deltas["factor"], deltas["level"].astype(str), deltas["baseline"].astype(str))) == [
        ("model.batchnorm", "False", "True"), ("model.dropout", "0.2", "0.0"), ("model.dropout", "0.4", "0.0")]
    assert deltas.set_index("level")["mean"].round(2).to_dict() == {"False": -8.33, "0.2": -5.56, "0.4": -11.11}
    assert pd.read_csv(tmp_path / "oat" / "interactions.csv").empty


FRACTION_GRID = """
name = "frac"
datasets = ["digits"]
seeds = [0, 1, 2, 3, 4]
[design]
kind = "fractional"
[model]
conv = [4]
[axes]
model.batchnorm = [false, true]
model.dropout = [0.0, 0.2]
train.lr = [0.001, 0.003]
train.weight_decay = [0.0, 0.0001]
"""


def test_a_fraction_is_analysed_by_contrasts_that_name_their_aliases(write_grid, tmp_path):
    """2^(4-1), D = ABC: a planted BatchNorm effect (+10 pp, seed noise of whole images) is decided from all 8
    runs per seed; the seed with a run missing is left out; rows, sentences and the variance table name
    their aliases, and BatchNorm holds most of the variance between configurations."""
    grid = load_grid(write_grid(FRACTION_GRID))
    assert len(grid.cells) == 8 * 5
    store = ResultStore(tmp_path, grid.name)
    for cell in grid.cells:
        if (cell.config.seed, cell.axes["model.batchnorm"], cell.axes["model.dropout"], cell.axes["train.lr"]) == (
                4, True, 0.2, 0.003):
            continue  # seed 4 lacks a run: its replicate is incomplete
        noise = (cell.config.seed * 7 + 3 * int(cell.axes["train.lr"] > 0.002)) % 5 - 2
        store.put(fabricate(cell, (25 + 4 * cell.axes["model.batchnorm"] + noise * 0.1) / 36))
    report = write_report([grid], tmp_path, formats=("md", "csv")).read_text()
    deltas = pd.read_csv(tmp_path / "frac" / "deltas.csv").set_index("factor")
    assert deltas.at["model.batchnorm", "n"] == 4 and deltas.at["model.batchnorm", "verdict"] == "better"
    assert deltas.at["model.batchnorm", "mean"] == pytest.approx(400 / 36)
    assert deltas["aliases"].to_dict() == {"model.batchnorm": "BCD", "model.dropout": "ACD", "train.lr": "ABD",
                                           "train.weight_decay": "ABC"}
    interactions = pd.read_csv(tmp_path / "frac" / "interactions.csv")
    assert sorted(zip(interactions["factor_a"], interactions["factor_b"], interactions["aliases"])) == [
        ("model.batchnorm", "model.dropout", "CD"), ("model.batchnorm", "train.lr", "BD"),
        ("model.batchnorm", "train.weight_decay", "BC")]
    assert "resolution IV; defining relation I = ABCD" in report and "- AB = CD" in report
    assert "aliased only with interactions of three or more factors (BCD)" in report
    importance = pd.read_csv(tmp_path / "frac" / "importance.csv")
    assert importance["term"].iat[0] == "model.batchnorm" and importance["share"].iat[0] > 80
    assert importance["term"].iat[-1] == "rest" and (importance["n"] == 4).all()
    assert "- digits: `model.batchnorm` has the largest share (" in report and "above every other term's interval" in report


@pytest.mark.parametrize("rows, says", [
    ([("a", 60.0, 50.0, 70.0, 3), ("b", 30.0, 20.0, 45.0, 3), ("rest", 10.0, 0.0, 80.0, 3)],
     "- d: `a` has the largest share (60.0%, interval [50.00, 70.00]), above every other term's interval."),
    ([("a", 40.0, 0.0, 100.0, 2), ("b", 35.0, 0.0, 100.0, 2), ("rest", 25.0, 0.0, 100.0, 2)],
     "- d: the largest share's interval overlaps another's (2 seeds), so the order of the table does not show"),
    ([("a", 40.0, 30.0, 50.0, 3), ("b", 35.0, 0.0, 31.0, 3), ("a × b", 25.0, 0.0, 52.0, 3)],
     "- d: the largest share's interval overlaps another's (3 seeds)"),  # the next share is not the widest
    ([("a", 40.0, math.nan, math.nan, 1), ("b", 35.0, math.nan, math.nan, 1)],
     "- d: one seed gives no interval, so the order of the table does not show which factor matters most"),
], ids=["clear", "overlap", "overlaps-a-later-term", "one-seed"])
def test_the_variance_shares_say_whether_their_order_shows_anything(rows, says):
    """The report says which term matters most only where its interval lies above every other term's
    (`rest` aside); otherwise it says the table's order shows nothing."""
    table = pd.DataFrame([("d", t, "", s, lo, hi, n) for t, s, lo, hi, n in rows],
                         columns=["dataset", "term", "aliases", "share", "ci_low", "ci_high", "n"])
    assert importance_lines(table)[0].startswith(says)
