"""Grid files: expansion into cells, run identity, overrides, plugins, and every kind of bad input."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ablatrix.errors import AblatrixError
from ablatrix.models import MODELS
from ablatrix.data import DATASETS
from ablatrix.environment import Environment
from ablatrix.spec import expand, load_grid, parse_grid, parse_override

from conftest import TINY_GRID

GRID = """
name = "g"
datasets = ["digits"]
seeds = [0, 1, 2]

[train]
epochs = 3

[model]
conv = [4]

[axes]
model.batchnorm = [true, false]
model.dropout = [0.0, 0.2]

[variants.small]

[variants.wide]
model.conv = [8]
train.lr = 0.01

[[exclude]]
variant = "wide"
model.dropout = 0.2
"""


def test_cells_are_variants_times_axes_times_seeds_minus_exclusions(write_grid):
    """2 variants x 2 x 2 axis values x 3 seeds = 24 cells; the exclusion removes wide+dropout 0.2."""
    grid = load_grid(write_grid(GRID))
    assert len(grid.cells) == 24 - 2 * 3
    assert not any(c.variant == "wide" and c.axes["model.dropout"] == 0.2 for c in grid.cells)
    wide = [c for c in grid.cells if c.variant == "wide"]
    assert {tuple(c.config.model.params["conv"]) for c in wide} == {(8,)}
    assert {c.config.train.lr for c in wide} == {0.01}
    assert [c.config.seed for c in grid.cells[:6]] == [0] * 6  # seed outermost: seed 0 completes first


def test_run_ids_are_stable_and_ignore_spelled_out_defaults(write_grid):
    """A run id is a hash of the resolved config: writing a default out changes nothing."""
    implicit = load_grid(write_grid(TINY_GRID, "a.toml"))
    explicit = load_grid(write_grid(TINY_GRID.replace("conv = [4]", "conv = [4]\nkernel = 3\npadding = 1"),
                                    "b.toml"))
    assert [c.run_id for c in implicit.cells] == [c.run_id for c in explicit.cells]
    assert len({c.run_id for c in implicit.cells}) == len(implicit.cells)


@pytest.mark.parametrize("override, changes", [
    ("train.epochs=1", True),
    ("train.epochs=2", False),  # the grid's own value
    ("model.fc=[16]", True),
    ("seeds=[0]", False),  # fewer cells, the remaining ids unchanged
])
def test_override_changes_exactly_the_ids_it_touches(write_grid, override, changes):
    """--set edits the grid document; ids change only when the resolved config does."""
    path = write_grid()
    base = {c.label(): c.run_id for c in load_grid(path).cells}
    new = {c.label(): c.run_id for c in load_grid(path, [override]).cells}
    assert (any(base[label] != run_id for label, run_id in new.items())) is changes


@pytest.mark.parametrize("item, expected", [
    ("train.epochs=1", ("train.epochs", 1)),
    ("train.lr=1e-2", ("train.lr", 0.01)),
    ("train.optimizer=sgd", ("train.optimizer", "sgd")),
    ("model.conv=[8, 16]", ("model.conv", [8, 16])),
    ("model.batchnorm=false", ("model.batchnorm", False)),
])
def test_parse_override(item, expected):
    """KEY=VALUE values parse as TOML, falling back to a bare string."""
    assert parse_override(item) == expected


def edit(old: str, new: str) -> str:
    assert old in TINY_GRID
    return TINY_GRID.replace(old, new)


@pytest.mark.parametrize("text, message", [
    ("name = [", "malformed TOML"),
    (edit('name = "tiny"', 'name = "tiny"\ncolour = "red"'), "unknown field colour; allowed: name, description"),
    (edit("epochs = 2", "epoch = 2"), "unknown field train.epoch; allowed: optimizer, lr"),
    (edit('["digits"]', '["imagenet"]'), "datasets: unknown dataset 'imagenet'; choose from: cifar10, digits, fashion-mnist, mnist, mnist-sample, wm811k, wm811k-synthetic"),
    (edit('["digits"]', "[]"), "datasets = [] is not allowed"),
    (edit("[0, 1]", "[0, 0]"), "seeds = [0, 0] repeats a value"),
    (edit("[0, 1]", "[-1]"), "seeds = [-1] is not allowed"),
    (edit("seeds = [0, 1]", "seeds = [0, 1]\nmax_seeds = 1"), "max_seeds = 1 is not allowed; expected an integer >= the 2 seeds"),
    (TINY_GRID + "\n[report]\nmargin = -1\n", "report.margin = -1 is not allowed; expected a number >= 0"),
    (TINY_GRID + "\n[report]\nconfidence = 1.0\n", "report.confidence = 1.0 is not allowed"),
    (edit("epochs = 2", 'epochs = "2"'), "train.epochs = '2' is not allowed; expected int"),
    (edit("epochs = 2", "epochs = 2\nlr = -0.1"), "train.lr = -0.1 is not allowed; expected a number > 0"),
    (edit("epochs = 2", 'epochs = 2\noptimizer = "adagrat"'), "choose from: adam, adamw, sgd, or a torch.optim optimiser: "),
    (edit("epochs = 2", 'epochs = 2\noptimizer = "RMSprop"\noptimizer_args = {alpah = 0.9}'),
     "train.optimizer_args of RMSprop: RMSprop takes no argument 'alpah'; it takes: "),
    (edit("epochs = 2", 'epochs = 2\noptimizer = "sgd"\noptimizer_args = {momentum = 0.5}'),
     "train.optimizer_args of sgd: momentum comes from the grid"),
    (edit("epochs = 2", 'epochs = 2\nschedule = "StepLRR"'), "train.schedule = 'StepLRR'; choose from: none, "),
    (edit("epochs = 2", 'epochs = 2\nschedule = "steplr"'), "train.schedule_args of steplr: StepLR needs step_size"),
    (edit("epochs = 2", 'epochs = 2\nschedule = "StepLR"\nschedule_args = {step_size = 1, gama = 0.5}'),
     "StepLR takes no argument 'gama'; it takes: step_size, gamma"),
    (edit("epochs = 2", 'epochs = 2\nschedule = "OneCycleLR"\nschedule_args = {total_steps = 9}'),
     "train.schedule_args of OneCycleLR: total_steps comes from the grid"),
    (edit("epochs = 2", 'epochs = 2\nschedule_args = {gamma = 0.5}'), "train.schedule_args needs a train.schedule"),
    (edit("epochs = 2", 'epochs = 2\nschedule = "StepLR"\nschedule_args = {step_size = 1}\nwarmup_epochs = 2'),
     "train.warmup_epochs = 2 leaves no epoch of the 2 to train at train.lr"),
    (edit("epochs = 2", 'epochs = 2\naugment = "mixup"'), "train.augment = 'mixup'; choose from: crop-flip, flip-rot90, none"),
    (edit("epochs = 2", 'epochs = 2\nsampler = "weighted"'), "train.sampler = 'weighted'; choose from: balanced, uniform"),
    (edit("model.batchnorm = [true, false]", "model.dropout = [0.0, 1.0]"),
     "model.dropout=1.0, dataset 'digits': model: dropout (block 1) = 1.0 is not allowed"),
    (edit("conv = [4]", "conv = [4, 4, 4, 4]"), "conv block 4: max pool (kernel 2, stride 2) shrinks"),
    (edit("conv = [4]", "conv = [4]\nwidth = 3"), "model: model 'convnet' has no parameter 'width'"),
    (edit("conv = [4]", 'name = "resnet"'), "unknown model 'resnet'; choose from: convnet"),
    (edit("model.batchnorm = [true, false]", "dataset = [1]"), "axes.dataset: an axis varies a model.* or train.*"),
    (edit("model.batchnorm = [true, false]", "model.batchnorm = []"), "axes.model.batchnorm = [] is not allowed"),
    (TINY_GRID + "\n[variants.a]\nmodel.kernel = 3\n[variants.b]\n", "are the same run"),
    (TINY_GRID + "\n[variants.a]\nloss = 1\n", "variants.a: unknown field loss"),
    (TINY_GRID + '\n[[exclude]]\nvariant = "nope"\n', "exclude[0] = {'variant': 'nope'} matches no cell"),
    (TINY_GRID + "\n[[exclude]]\nmodel.width = 3\n", "exclude[0]: model.width is neither"),
    (TINY_GRID + '\n[[exclude]]\ndataset = "digits"\n', "every cell is excluded"),
    (edit('name = "tiny"', 'name = "a/b"'), "name = 'a/b' is not allowed"),
    (edit('name = "tiny"', 'plugins = ["no_such_module_xyz"]'), "plugins: cannot import 'no_such_module_xyz'"),
])
def test_bad_grid_is_one_clear_error_naming_the_file(write_grid, text, message):
    """Each malformed grid fails with one line that names the file and the problem."""
    path = write_grid(text)
    with pytest.raises(AblatrixError) as err:
        load_grid(path)
    assert str(err.value).startswith(str(path))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override, message", [
    ("train.epochs", "expected KEY=VALUE"),
    ("=3", "expected KEY=VALUE"),
    ("train.epochs=0", "train.epochs = 0 is not allowed; expected an integer >= 1"),
    ("model.batchnorm=true", "--set model.batchnorm would be overridden by axes.model.batchnorm"),
    ("train.epochs.x=1", "train.epochs.x: epochs is not a table"),
])
def test_bad_override_is_rejected(write_grid, override, message):
    """A malformed or ineffective --set is an error, never silently ignored."""
    with pytest.raises(AblatrixError, match=message.replace(".", r"\.").replace("[", r"\[")):
        load_grid(write_grid(), [override])


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "cannot read grid file: No such file or directory"),
    (lambda p: p.mkdir(), "cannot read grid file: Is a directory"),
    (lambda p: p.write_bytes(TINY_GRID.replace("tiny", "t\xe9").encode("latin-1")), "not a text file in UTF-8"),
    (lambda p: p.write_text(""), "the grid file is empty"),
    (lambda p: p.write_text("\n  \n"), "the grid file is empty"),
])
def test_unreadable_grid_file_is_one_clear_error(tmp_path, make, message):
    """A missing, directory, non-UTF-8 or empty grid file is one line naming it, not a traceback."""
    path = tmp_path / "grid.toml"
    make(path)
    with pytest.raises(AblatrixError) as err:
        load_grid(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)
    assert "\n" not in str(err.value)


BASE_CELLS = {("base", True), ("base", False)}


@pytest.mark.parametrize("extra, overrides, variants", [
    ("", ["variants.wide.model.fc=[16]"], BASE_CELLS | {("wide", True), ("wide", False)}),
    ("[variants.wide]\nmodel.fc = [16]\n", [], BASE_CELLS | {("wide", True), ("wide", False)}),
    ("[variants.plain]\n[variants.wide]\nmodel.fc = [16]\n", [],  # an empty variant is the base
     {("plain", True), ("plain", False), ("wide", True), ("wide", False)}),
    ('[variants.wide]\nmodel.fc = [16]\n[[exclude]]\nvariant = "base"\n', [], {("wide", True), ("wide", False)}),
])
def test_adding_a_variant_keeps_the_base_cells(write_grid, extra, overrides, variants):
    """A variant added in the file or by --set adds cells; the base ones stay unless excluded."""
    plain = {c.run_id for c in load_grid(write_grid()).cells}
    grid = load_grid(write_grid(TINY_GRID + extra), overrides)
    assert {(c.variant, c.axes["model.batchnorm"]) for c in grid.cells} == variants
    if ("base", True) in variants:
        assert plain <= {c.run_id for c in grid.cells}  # base cells keep their run ids


PLUGIN = """
import torch
from torch import nn
from ablatrix import register_model


@register_model("plugin-mlp")
class PluginMLP(nn.Module):
    def __init__(self, input_shape, num_classes, *, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(torch.Size(input_shape).numel(), hidden),
                                 nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)
"""


def test_plugin_module_registers_a_model_whose_params_are_axes(write_grid, tmp_path):
    """A grid can load a .py plugin that registers its own nn.Module and vary its parameters."""
    (tmp_path / "my_models.py").write_text(PLUGIN)
    grid = load_grid(write_grid("""
        name = "plugged"
        plugins = ["my_models.py"]
        datasets = ["digits"]
        seeds = [0]
        [model]
        name = "plugin-mlp"
        [axes]
        model.hidden = [8, 32]
    """))
    try:
        assert [c.params for c in grid.cells] == [64 * 8 + 8 + 8 * 10 + 10, 64 * 32 + 32 + 32 * 10 + 10]
        assert {c.config.model.name for c in grid.cells} == {"plugin-mlp"}
    finally:
        del MODELS["plugin-mlp"]


REFERENCED = TINY_GRID + """
[[references]]
dataset = "digits"
model.batchnorm = true
value = 98.5
source = "a paper"
"""


@pytest.mark.parametrize("text, message", [
    (REFERENCED.replace("value = 98.5", 'value = "high"'), "references[0].value = 'high' is not allowed"),
    (REFERENCED.replace('source = "a paper"', 'metric = "f1"'), "references[0].metric = 'f1'; choose from: test_accuracy, val_accuracy"),
    (REFERENCED.replace("model.batchnorm = true\nvalue", "model.width = 3\nvalue"), "references[0]: model.width is neither"),
    (REFERENCED.replace('dataset = "digits"', 'variant = "nope"'), "references[0] matches no cell"),
])
def test_bad_reference_is_rejected(write_grid, text, message):
    """Published reference numbers are checked like every other field."""
    with pytest.raises(AblatrixError, match=re.escape(message)):
        load_grid(write_grid(text))


def test_reference_for_a_dataset_left_out_by_set_is_allowed(write_grid):
    """--set datasets=[...] may drop the dataset a reference names; the reference then has no runs."""
    text = REFERENCED.replace('dataset = "digits"', 'dataset = "mnist"').replace('["digits"]', '["digits", "mnist"]')
    grid = load_grid(write_grid(text), ['datasets=["digits"]'])
    assert grid.references[0].match == {"dataset": "mnist", "model.batchnorm": True}
    assert grid.references[0].value == 98.5 and grid.references[0].metric == "test_accuracy"


def test_max_seeds_adds_optional_cells_with_unused_seeds(write_grid):
    """max_seeds = 4 over seeds [0, 2] makes seeds 1 and 3 available to --until-decided, not run by default."""
    grid = load_grid(write_grid(TINY_GRID.replace("seeds = [0, 1]", "seeds = [0, 2]\nmax_seeds = 4")))
    assert grid.extra_seeds == (1, 3)
    assert {c.config.seed for c in grid.cells} == {0, 2} and {c.config.seed for c in grid.extra_cells} == {1, 3}
    assert len(grid.extra_cells) == len(grid.cells)
    assert grid.stored_cells([grid.extra_cells[0].run_id]) == (*grid.cells, grid.extra_cells[0])


@pytest.mark.parametrize("path", [p for p in sorted(Path("ablations").glob("*.toml"))
                                  if "[[references]]" in p.read_text()], ids=lambda p: p.stem)
def test_every_published_number_sits_beside_the_studys_model(path):
    """Each [[references]] entry of a study grid names the study's parameter count for that number,
    and every cell it is compared with has exactly that count (load_grid refuses otherwise)."""
    grid = load_grid(path)
    for ref in grid.references:
        dataset = ref.match.get("dataset", grid.datasets[0])
        # The wafer study's number belongs beside the real WM-811K, which the grid runs only on request.
        on = grid if dataset in grid.datasets else load_grid(path, [f'datasets=["{dataset}"]'])
        cells = [c for c in on.cells if ref.matches(c.facts)]
        assert ref.params and cells and {c.params for c in cells} == {ref.params}, ref.source


def test_a_reference_on_another_model_is_refused(write_grid):
    """A reference whose params differ from a matching cell's is one clear error."""
    with pytest.raises(AblatrixError, match="references\\[0\\] is for a model of 1,000 parameters, but"):
        load_grid(write_grid(REFERENCED.replace("value = 98.5", "value = 98.5\nparams = 1000")))


def test_parsing_a_grid_imports_nothing_and_reads_no_data(write_grid, tmp_path):
    """parse_grid checks the file alone: a plugin that fails on import and a dataset folder that is
    not there are the environment's, named in it; preparing it (load_grid) stops on each in one line."""
    (tmp_path / "broken.py").write_text("raise RuntimeError('imported')\n")
    path = write_grid('name = "pure"\nplugins = ["broken.py"]\ndatasets = ["folder:missing", "digits"]\n'
                      'seeds = [0]\n[model]\nconv = [4]\n')
    spec = parse_grid(path)
    assert spec.environment == Environment((str(tmp_path / "broken.py"),),
                                           (("folder:missing", str(tmp_path / "missing")),))
    assert "folder:missing" not in DATASETS  # and the plugin was not imported: it raises
    with pytest.raises(AblatrixError, match=r"grid.toml: plugins: cannot import .*broken.py.*RuntimeError: imported"):
        load_grid(path)
    with pytest.raises(AblatrixError, match=r"grid.toml: datasets: dataset 'folder:missing': .*missing does not exist"):
        Environment((), spec.environment.sources).prepare(f"{path}: ")


def test_expanding_a_parsed_grid_gives_the_cells_load_grid_gives(write_grid):
    """load_grid is parse_grid, the environment prepared, and expand: the same cells and run ids."""
    path = write_grid()
    spec = parse_grid(path, ["train.epochs=3"])
    grid = expand(spec, spec.environment.prepare())
    assert [c.run_id for c in grid.cells] == [c.run_id for c in load_grid(path, ["train.epochs=3"]).cells]
    assert len(grid.cells) == 4 and grid.environment == Environment()


OAT_GRID = """
name = "oat"
datasets = ["digits"]
seeds = [0, 1]
design = "one-at-a-time"
[model]
conv = [4]
[axes]
model.batchnorm = [true, false]
model.dropout = [0.0, 0.2, 0.4]
"""


def test_a_one_at_a_time_grid_trains_the_base_and_each_change_alone_with_the_full_grids_ids(write_grid):
    """4 configurations x 2 seeds instead of 6 x 2, each cell the same run (id) as in the full grid."""
    oat = load_grid(write_grid(OAT_GRID))
    full = load_grid(write_grid(OAT_GRID.replace('design = "one-at-a-time"\n', ""), name="full.toml"))
    assert (oat.design.kind, full.design.kind, len(oat.cells), len(full.cells)) == ("one-at-a-time", "full", 8, 12)
    assert {c.run_id for c in oat.cells} < {c.run_id for c in full.cells}
    assert sorted({(c.axes["model.batchnorm"], c.axes["model.dropout"]) for c in oat.cells}) == \
        [(False, 0.0), (True, 0.0), (True, 0.2), (True, 0.4)]


@pytest.mark.parametrize("edit, message", [
    (('design = "one-at-a-time"', 'design = "factorial"'),
     "design = 'factorial'; choose from: full, one-at-a-time, fractional, plackett-burman"),
    (('design = "one-at-a-time"', 'design = "fractional"'), "needs two or more axes of exactly two values each; "
                                                             "model.dropout has 3"),
    (("[model]", "[[exclude]]\nmodel.dropout = 0.0\nmodel.batchnorm = true\n[model]"),
     r"exclude\[0\] removes the base of the one-at-a-time design"),
])
def test_bad_designs_are_one_line_errors(write_grid, edit, message):
    """An unknown design names the valid ones; a fraction needs two-level axes; excluding the base leaves
    every change without its baseline."""
    with pytest.raises(AblatrixError, match=message) as caught:
        load_grid(write_grid(OAT_GRID.replace(*edit)))
    assert "\n" not in str(caught.value)


FRACTION_GRID = """
name = "frac"
datasets = ["digits"]
seeds = [0, 1]
[design]
kind = "fractional"
resolution = 3
[model]
conv = [4]
[axes]
model.batchnorm = [true, false]
model.dropout = [0.0, 0.2]
train.lr = [0.001, 0.003]
train.weight_decay = [0.0, 0.0001]
train.batch_size = [32, 64]
"""


def test_a_fraction_trains_a_subset_of_the_full_grids_runs_and_its_fold_over_keeps_them(write_grid):
    """2^(5-2) = 8 of 32 configurations per seed, each the full grid's run (id); folding adds 8 mirrors and
    keeps the 8, so growing the design trains only the new runs."""
    fraction = load_grid(write_grid(FRACTION_GRID))
    folded = load_grid(write_grid(FRACTION_GRID.replace("resolution = 3", "resolution = 3\nfold = true"), "f.toml"))
    full = load_grid(write_grid(FRACTION_GRID.replace('[design]\nkind = "fractional"\nresolution = 3\n', ""), "g.toml"))
    ids = {name: {c.run_id for c in grid.cells} for name, grid in
           (("fraction", fraction), ("folded", folded), ("full", full))}
    assert (len(ids["fraction"]), len(ids["folded"]), len(ids["full"])) == (16, 32, 64)
    assert ids["fraction"] < ids["folded"] < ids["full"]


@pytest.mark.parametrize("rule, message", [
    ("[[exclude]]\nmodel.batchnorm = true\n", r"exclude\[0\] removes a configuration of the fractional design"),
])
def test_a_fraction_refuses_to_lose_a_configuration(write_grid, rule, message):
    """A contrast needs every run of the design; whole seeds or datasets may go."""
    with pytest.raises(AblatrixError, match=message):
        load_grid(write_grid(FRACTION_GRID + rule))
    assert len(load_grid(write_grid(FRACTION_GRID + "[[exclude]]\nseed = 1\n")).cells) == 8
