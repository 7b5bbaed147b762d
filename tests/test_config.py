"""Run identity: pinned ids of the committed quickstart, pinned defaults, new fields keep old ids."""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from torch import nn

from ablatrix.config import TrainConfig, run_id_of
from ablatrix.models import MODELS, param_defaults, register_model
from ablatrix.spec import load_grid

# Changing any of these ids orphans every stored run of every user: it must be deliberate (a new
# record schema with a migration in store.ResultStore), never a side effect.
QUICKSTART_IDS = ["792757958ce5", "1d0b89e3f5cb", "03b38bd22ce6", "2d4c30622c7e", "16d9c2a86f82",
                  "d61686b51b9b", "62acd35d62e9", "e287d0cddf4f", "175ae5bc6722", "da939bd96505",
                  "9f327f1f184f", "321fe530d476", "65a9f03e1662", "ba579b4599ce", "61959502c567",
                  "3827cb0033e7"]


def test_quickstart_run_ids_are_pinned_and_match_the_committed_records():
    """The quickstart's cells have exactly the ids of the committed results/quickstart records."""
    grid = load_grid("ablations/quickstart.toml")
    assert [c.run_id for c in grid.cells] == QUICKSTART_IDS
    stored = {p.stem for p in Path("results/quickstart/runs").glob("*.json")}
    assert stored == set(QUICKSTART_IDS)


def test_defaults_are_pinned():
    """An unset field means its default; changing a default silently changes what stored runs mean."""
    assert asdict(TrainConfig()) == {
        "optimizer": "adam", "lr": 0.001, "momentum": 0.9, "weight_decay": 0.0, "optimizer_args": {},
        "batch_size": 64, "epochs": 30, "patience": 5, "restore_best": True, "val_fraction": 0.1,
        "standardize": True, "augment": "none", "sampler": "uniform", "class_weighted": False, "schedule": "none",
        "schedule_args": {}, "warmup_epochs": 0, "eval_mode": "eval"}
    assert param_defaults("convnet") == {
        "conv": (16, 32), "kernel": 3, "stride": 1, "padding": 1, "batchnorm": True,
        "activation": "relu", "dropout": 0.0, "dropout_kind": "dropout", "pool": "max",
        "pool_kernel": 2, "pool_stride": None, "pool_padding": 0, "head": "flatten", "fc": (),
        "fc_batchnorm": None, "fc_dropout": 0.0, "head_dropout": 0.0, "init": "default"}


def test_a_train_field_missing_from_an_old_record_means_its_default():
    """A record written before a train field existed hashes to the id of the field at its default."""
    config = load_grid("ablations/quickstart.toml").cells[0].config.to_dict()
    older = json.loads(json.dumps(config))
    del older["train"]["class_weighted"]
    assert run_id_of(older) == run_id_of(config)
    older["train"]["class_weighted"] = True
    assert run_id_of(older) != run_id_of(config)


def test_a_new_model_parameter_at_its_default_keeps_run_ids(write_grid):
    """Upgrading a model with a new keyword parameter (default = old behaviour) keeps every id."""
    text = 'datasets = ["digits"]\nseeds = [0]\n[model]\nname = "grown"\n[axes]\nmodel.hidden = [8, 16]\n'

    def register(extra: bool) -> list[str]:
        MODELS.pop("grown", None)

        def old(input_shape, num_classes, *, hidden: int = 4):
            return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.Linear(hidden, num_classes))

        def new(input_shape, num_classes, *, hidden: int = 4, depth: int = 1):
            return old(input_shape, num_classes, hidden=hidden)
        register_model("grown")(new if extra else old)
        return [c.run_id for c in load_grid(write_grid(text)).cells]
    try:
        before, after = register(False), register(True)
        assert before == after and len(set(before)) == 2
        assert register(True) != [c.run_id for c in load_grid(write_grid(text), ["model.depth=2"]).cells]
    finally:
        MODELS.pop("grown", None)


@pytest.mark.parametrize("train, shared", [
    ({"patience": 0}, True),  # nothing reads validation: eval mode and restore_best only measure
    ({"patience": 3}, False),  # early stopping reads the eval mode's validation loss
    ({"patience": 0, "schedule": "ReduceLROnPlateau"}, False),  # so does this schedule
])
def test_cells_that_differ_only_in_measurement_share_a_training_id(train, shared):
    """training_id ignores restore_best always and eval_mode where training never reads validation;
    any training field, the seed or the model still separates trainings, and run ids stay apart."""
    config = load_grid("ablations/quickstart.toml").cells[0].config
    base = replace(config, train=replace(config.train, **train))
    other_weights = replace(base, train=replace(base.train, restore_best=False))
    other_mode = replace(base, train=replace(base.train, eval_mode="train"))
    assert other_weights.training_id == base.training_id != replace(base, seed=1).training_id
    assert (other_mode.training_id == base.training_id) is shared
    assert base.training_id != replace(base, train=replace(base.train, lr=0.5)).training_id
    assert len({base.run_id, other_weights.run_id, other_mode.run_id}) == 3


def test_small_cnn_needs_four_trainings_per_seed_and_dataset():
    """The small-CNN grid's 11 cells per seed and dataset (4 models x 3 eval modes, one excluded)
    are 4 trainings."""
    grid = load_grid("ablations/small-cnn.toml", ["datasets=['mnist']"])
    per_seed = [c for c in grid.cells if c.config.seed == 0]
    assert (len(per_seed), len({c.config.training_id for c in per_seed})) == (11, 4)
