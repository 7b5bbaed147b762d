"""Figures at any grid size: bounded pixels and legends, one panel per varied factor, one colour per level."""
from __future__ import annotations

import copy
from pathlib import Path

import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest
import torch

from ablatrix import figures
from ablatrix.record import cell_record
from ablatrix.runner import RunOptions, run_unit
from ablatrix.report import write_report
from ablatrix.spec import load_grid
from ablatrix.store import ResultStore

WIDE = """
name = "wide"
datasets = ["digits"]
seeds = [0, 1]
[train]
epochs = 2
patience = 0
[model]
conv = [4]
fc = []
[axes]
model.batchnorm = [true, false]
model.dropout = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45]
model.conv = [[4], [8], [12], [16], [20]]
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> dict:
    """One real training run on digits, the record every fabricated run is copied from."""
    path = tmp_path_factory.mktemp("template") / "one.toml"
    path.write_text(WIDE.replace("seeds = [0, 1]", "seeds = [0]"))
    ((record, _),) = run_unit(load_grid(path).cells[:1], RunOptions(torch.device("cpu"), path.parent))
    assert record["status"] == "done"
    return record


def fabricate(grid, results: Path, template: dict) -> None:
    """A record per cell through the store, as `run` writes them: the template with the cell's
    identity and a test accuracy shifted by planted effects and noise (per-class counts to match)."""
    rng = np.random.default_rng(0)
    store = ResultStore(results, grid.name)
    for cell in grid.cells:
        record = copy.deepcopy(template)
        record.update(cell_record(cell))
        shift = -0.05 * (not cell.axes["model.batchnorm"]) - 0.2 * cell.axes["model.dropout"] + rng.normal(0, 0.01)
        for entry in record["test"]["per_class"]:
            entry["correct"] = int(np.clip(round(entry["correct"] + shift * entry["support"]), 0, entry["support"]))
            entry["accuracy"] = entry["correct"] / entry["support"]
        record["test"]["accuracy"] = sum(e["correct"] for e in record["test"]["per_class"]) / sum(
            e["support"] for e in record["test"]["per_class"])
        store.put(record)


@pytest.fixture
def drawn(monkeypatch):
    """Every figure the report saves, with its legends' entry counts and whether each fits its plot."""
    seen, save = {}, figures._save

    def spy(fig, folder, stem):
        fig.canvas.draw()
        legends = [(ax, ax.get_legend()) for ax in fig.axes if ax.get_legend()]
        seen[stem] = {"titles": [ax.get_title() for ax in fig.axes],
                      "colours": {ax.get_title(): {label: matplotlib.colors.to_hex(
                          (handle[0] if isinstance(handle, tuple) else handle).get_color())
                          for handle, label in zip(*ax.get_legend_handles_labels())} for ax in fig.axes},
                      "entries": [len(legend.get_texts()) for _, legend in legends],
                      "fits": all(legend.get_window_extent().height <= ax.get_window_extent().height
                                  for ax, legend in legends)}
        return save(fig, folder, stem)
    monkeypatch.setattr(figures, "_save", spy)
    return seen


@pytest.mark.slow
@pytest.mark.figures
def test_a_100_configuration_grid_gets_bounded_readable_figures(write_grid, tmp_path, template, drawn):
    """200 runs: every figure under 2,500 px a side, no legend over 12 entries or taller than its plot,
    one curves panel per varied factor, per-class effects instead of 100 heatmap rows."""
    grid = load_grid(write_grid(WIDE))
    assert len(grid.cells) == 200
    fabricate(grid, tmp_path, template)
    report = write_report([grid], tmp_path).read_text()
    folder = tmp_path / "wide" / "figures"
    for png in folder.glob("*.png"):
        height, width = matplotlib.image.imread(png).shape[:2]
        assert height <= 2500 and width <= 2500, (png.name, height, width)
    for stem, figure in drawn.items():
        assert all(n <= 12 for n in figure["entries"]) and figure["fits"], (stem, figure)
    titles = drawn["curves_by_factor_digits"]["titles"]
    for factor in ("batchnorm", "dropout", "conv"):
        assert f"{factor}: loss" in titles and f"{factor}: accuracy" in titles
    assert "per_class_digits" not in drawn and "per_class_effects_digits" in drawn
    assert "best 3 of 100 configurations and the baseline" in report
    assert "100 configurations: one column each would not read" in report


def test_a_level_has_one_colour_in_every_figure(write_grid, tmp_path, template, drawn):
    """batchnorm=True is drawn in the same colour in the curves and in the accuracy-vs-dropout panel."""
    grid = load_grid(write_grid(WIDE.replace("model.conv = [[4], [8], [12], [16], [20]]", "")))
    fabricate(grid, tmp_path, template)
    write_report([grid], tmp_path)
    curves = drawn["curves_by_factor_digits"]["colours"]["batchnorm: accuracy"]
    axis = drawn["axis_model_dropout_digits"]["colours"]["by batchnorm"]
    assert set(curves) == set(axis) == {"True", "False"}
    assert all(curves[level] == axis[level] for level in curves) and curves["True"] != curves["False"]


@pytest.mark.parametrize("factors, expected", [
    (["variant", "model.dropout"], "wide dropout=0.3"),
    (["model.batchnorm"], "batchnorm=True"),
    ([], "all runs"),
])
def test_labels_name_only_the_varied_factors_in_short_form(factors, expected):
    """A configuration's label lists the factors passed (those that vary), by their last name."""
    row = {"variant": "wide", "model.dropout": 0.3, "model.batchnorm": True}
    assert figures.config_label(row, factors) == expected


@pytest.mark.figures
def test_saving_a_figure_twice_writes_the_same_bytes(tmp_path, monkeypatch):
    """A figure saved again, a day later, is byte-identical (no creation date in the PDF), so
    regenerating a report leaves unchanged figures unchanged in git."""
    import matplotlib.pyplot as plt
    paths = []
    for attempt, epoch in (("first", "1700000000"), ("second", "1700086400")):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)  # the clock matplotlib reads, when set
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], [3, 1, 2])
        paths.append(figures._save(fig, tmp_path / attempt, "curve"))
    for suffix in ("png", "pdf"):
        first, second = (p.with_suffix(f".{suffix}").read_bytes() for p in paths)
        assert first == second and len(first) > 1000


@pytest.mark.figures
def test_a_pdf_figure_embeds_its_fonts_as_truetype_not_type_3(tmp_path):
    """A saved PDF embeds its fonts' TrueType outlines (Type 42: FontFile2) and has no Type 3 font:
    submission checks such as IEEE's PDF eXpress reject Type 3 fonts, matplotlib's default."""
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3], [3, 1, 2])
    ax.set(title="Validation accuracy", xlabel="epoch")
    pdf = figures._save(fig, tmp_path, "curve").with_suffix(".pdf").read_bytes()
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf
