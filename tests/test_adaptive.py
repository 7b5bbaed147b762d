"""Seeds on demand: rounds add seeds only where effects are open, stop by themselves, and resume."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from ablatrix.adaptive import plan, run_until_decided
from ablatrix.cli import main
from ablatrix.executors import run_grids
from ablatrix.errors import AblatrixError
from ablatrix.report import write_report
from ablatrix.sequential import new_design
from ablatrix.spec import load_grid
from ablatrix.store import ResultStore
from ablatrix.evaluation import classification_metrics

from conftest import OPTIONS, TINY_GRID

GRID = """
name = "adaptive"
datasets = ["digits"]
seeds = [0, 1, 2]
max_seeds = 7
[model]
conv = [4]
[axes]
model.batchnorm = [true, false]
model.dropout = [0.0, 0.2, 0.5]
"""
TEST_SIZE = 1000


def accuracy_of(config, effect_05: float, noise: float) -> float:
    """Known accuracies: dropout 0.2 costs 20 pp and no BatchNorm 10 pp (both decided at the first look:
    three seeds, as the sequential design spends almost nothing on two);
    dropout 0.5 changes accuracy by `effect_05` pp with seed noise of sd `noise` pp, the same draw
    with and without BatchNorm (so BatchNorm's pairs stay exact)."""
    dropout, batchnorm = config.model.params["dropout"], config.model.params["batchnorm"]
    code = int(100 * dropout)
    acc = 80.0 - 20.0 * (dropout == 0.2) - 10.0 * (not batchnorm) + effect_05 * (dropout == 0.5)
    return acc + (np.random.default_rng(1000 * config.seed + code).normal(0, noise) if dropout == 0.5 else 0)


@pytest.fixture
def stub_trainer():
    """Options whose trainer gives known accuracies (a test double); `calls` lists the run ids trained."""
    calls, settings = [], {"effect_05": 0.0, "noise": 1.0, "interrupt_at": None}

    def train(configs, data, device, execution, on_epoch, checkpoint):
        (config,) = configs  # no grid here shares a training between cells
        if len(calls) == settings["interrupt_at"]:
            raise KeyboardInterrupt
        calls.append(config.run_id)
        correct = round(TEST_SIZE * accuracy_of(config, settings["effect_05"], settings["noise"]) / 100)
        y = torch.arange(TEST_SIZE) % 10
        pred = torch.where(torch.arange(TEST_SIZE) < correct, y, (y + 1) % 10)
        return [({"params": 1, "history": [{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0,
                                           "val_accuracy": 0.5, "seconds": 0.0}],
                 "best_epoch": 1, "epochs_trained": 1, "tested": {"weights": "final", "epoch": 1, "eval_mode": "eval"},
                  "test": classification_metrics(1.0, correct / TEST_SIZE, pred, y, 10)}, {"final": {}})]
    return calls, settings, replace(OPTIONS, trainer=train)


def test_seeds_are_added_only_to_the_cells_of_undecided_effects(write_grid, tmp_path, stub_trainer):
    """After the grid's seeds, dropout 0.2 is decided and 0.5 is not: the next round adds seed 3
    to the dropout 0.0 and 0.5 cells only (both sides of the open comparison), for that reason."""
    calls, settings, options = stub_trainer
    settings.update(effect_05=-4.0, noise=1.5)
    grid = load_grid(write_grid(GRID))
    run_grids([grid], tmp_path, options)
    step = plan([grid], tmp_path, new_design([grid]))
    assert "model.dropout 0.5 − 0.0 on digits" in step.undecided
    assert "model.dropout 0.2 − 0.0 on digits" not in step.undecided
    assert {(c.axes["model.dropout"], c.axes["model.batchnorm"], c.config.seed) for c in step.cells} == {
        (d, bn, 3) for d in (0.0, 0.5) for bn in (True, False)}
    assert all("model.dropout 0.5 − 0.0 on digits" in c.reason for c in step.cells)


def test_stops_at_the_seed_cap_with_the_open_effects_named(write_grid, tmp_path, stub_trainer, capsys):
    """A null effect with 1 pp noise is not decided within 7 seeds: seeding stops at the cap,
    having added seeds only to that comparison's cells; `list` counts them and their trainings."""
    calls, settings, options = stub_trainer
    grid = load_grid(write_grid(GRID))
    outcome = run_until_decided([grid], tmp_path, options)
    assert outcome.reason == "cap" and outcome.plan.capped == ("model.dropout 0.5 − 0.0 on digits",)
    records = ResultStore(tmp_path, grid.name).records()
    seeds_of = {}
    for r in records.values():
        seeds_of.setdefault(r["axes"]["model.dropout"], set()).add(r["seed"])
    assert seeds_of[0.5] == seeds_of[0.0] == set(range(7)) and seeds_of[0.2] == {0, 1, 2}
    assert len(calls) == len(set(calls)) == len(records) == 34
    state = json.loads((tmp_path / "adaptive" / "seeding.json").read_text())
    assert state["at_seed_cap"] == list(outcome.plan.capped) and state["runs_possible"] == 42
    assert state["stopped"] == "seed cap (max_seeds) reached for: model.dropout 0.5 − 0.0 on digits"
    assert main(["list", str(grid.path), "--results", str(tmp_path)]) == 0
    assert ": 18 cells + 16 of 24 added-seed cells (max_seeds); 34 trainings" in capsys.readouterr().out


@pytest.mark.parametrize("extra, reason", [("", "cap"), ("max_seeds = 3", "cap")])
def test_without_room_for_more_seeds_nothing_is_added(write_grid, tmp_path, stub_trainer, extra, reason):
    """A grid whose max_seeds is its seed count (or unset) never adds a seed; open effects are named."""
    calls, settings, options = stub_trainer
    settings.update(effect_05=-4.0, noise=1.5)
    grid = load_grid(write_grid(GRID.replace("max_seeds = 7", extra)))
    outcome = run_until_decided([grid], tmp_path, options)
    assert outcome.reason == reason and outcome.plan.capped and len(calls) == 18


def test_stops_when_every_effect_is_decided(write_grid, tmp_path, stub_trainer):
    """A real −4 pp effect with 1.5 pp noise is undecided at 3 seeds and decided before the cap."""
    calls, settings, options = stub_trainer
    settings.update(effect_05=-4.0, noise=1.5)
    grid = load_grid(write_grid(GRID))
    outcome = run_until_decided([grid], tmp_path, options)
    assert outcome.reason == "decided" and outcome.rounds >= 1 and not outcome.plan.undecided
    assert 18 < len(calls) < 42
    report = write_report([grid], tmp_path).read_text()
    assert f"stopped: all effects decided after {len(calls)} of 42 possible runs" in report
    assert run_grids([grid], tmp_path, options).trained == 0  # a plain run adds and removes nothing
    assert len(ResultStore(tmp_path, grid.name).records()) == len(calls)


def test_the_budget_stops_seeding(write_grid, tmp_path, stub_trainer):
    """--max-cells caps the cells trained in all; the rest stays undecided and is said so."""
    calls, settings, options = stub_trainer
    settings.update(effect_05=-4.0, noise=1.5)
    grid = load_grid(write_grid(GRID))
    outcome = run_until_decided([grid], tmp_path, options, max_cells=20)
    assert outcome.reason == "budget" and len(calls) == 18 and outcome.plan.undecided


def test_an_interrupted_round_resumes_without_training_anything_twice(write_grid, tmp_path, stub_trainer):
    """Ctrl-C in the middle of a round; the next call completes that round and goes on to the cells
    an uninterrupted run trains, each once."""
    calls, settings, options = stub_trainer
    settings.update(effect_05=-4.0, noise=1.5)
    grid = load_grid(write_grid(GRID))
    run_until_decided([grid], tmp_path / "twin", options)
    twin = sorted(calls)
    calls.clear()
    settings["interrupt_at"] = 19  # the grid's 18, then 1 of the first round's 4
    with pytest.raises(KeyboardInterrupt):
        run_until_decided([grid], tmp_path, options)
    assert len(ResultStore(tmp_path, grid.name).records()) == 19
    settings["interrupt_at"] = None
    outcome = run_until_decided([grid], tmp_path, options)
    assert outcome.reason == "decided" and len(twin) > 22 and sorted(calls) == twin
    assert len(ResultStore(tmp_path, grid.name).records()) == len(twin)


def test_the_design_is_stored_before_any_seed_is_added_and_a_later_call_keeps_it(write_grid, tmp_path, stub_trainer):
    """seeding.json names the design (first look 3, max_seeds 7, seed order) once the grid's seeds are
    trained; the report says `sequential`; a second call with a smaller cap keeps the stored design,
    and one with a larger cap is refused before anything trains."""
    calls, settings, options = stub_trainer
    settings.update(effect_05=-4.0, noise=1.5, interrupt_at=18)  # stop before the first added seed
    grid = load_grid(write_grid(GRID))
    with pytest.raises(KeyboardInterrupt):
        run_until_decided([grid], tmp_path, options)
    state = json.loads((tmp_path / "adaptive" / "seeding.json").read_text())
    assert state["design"] == {"method": state["design"]["method"], "first_look": 3, "max_seeds": 7,
                               "seed_order": [0, 1, 2, 3, 4, 5, 6]} and "Kim–DeMets" in state["design"]["method"]
    assert "sequential, 5 looks (seed counts 3–7)" in write_report([grid], tmp_path).read_text()
    settings["interrupt_at"] = None
    run_until_decided([load_grid(write_grid(GRID.replace("max_seeds = 7", "max_seeds = 5")))], tmp_path, options)
    state = json.loads((tmp_path / "adaptive" / "seeding.json").read_text())
    assert state["design"]["max_seeds"] == 7 and state["looks"]["model.dropout 0.5 − 0.0 on digits"][0] == 3
    before = len(calls)
    with pytest.raises(AblatrixError, match="max_seeds = 7"):
        run_until_decided([load_grid(write_grid(GRID.replace("max_seeds = 7", "max_seeds = 9")))], tmp_path, options)
    assert len(calls) == before


def test_a_report_over_a_fixed_seed_list_says_fixed_sample(write_grid, tmp_path, stub_trainer):
    """Without seeding.json the report's analysis is the fixed-sample one, and says so."""
    calls, settings, options = stub_trainer
    grid = load_grid(write_grid(GRID))
    run_grids([grid], tmp_path, options)
    report = write_report([grid], tmp_path).read_text()
    assert "Analysis: fixed sample" in report and "sequential" not in report


@pytest.mark.slow
def test_until_decided_end_to_end_with_the_real_trainer(write_grid, tmp_path, capsys):
    """On a tiny real grid the CLI trains, adds seeds where needed, stops by itself and reports why."""
    path = write_grid(TINY_GRID.replace("seeds = [0, 1]", "seeds = [0, 1]\nmax_seeds = 3"))
    assert main(["run", str(path), "--results", str(tmp_path), "--until-decided"]) == 0
    out = capsys.readouterr().out
    assert "stopped: " in out
    assert main(["status", str(path), "--results", str(tmp_path)]) == 0
    status = capsys.readouterr().out
    records = ResultStore(tmp_path, "tiny").records()
    assert len(records) >= 4 and f"{len(records)} done" in status
    assert main(["report", str(path), "--results", str(tmp_path)]) == 0
    assert "Seeds on demand: the last `ablatrix run --until-decided`" in (tmp_path / "tiny" / "REPORT.md").read_text()


def test_seeds_on_demand_adds_whole_replicates_of_a_fraction(write_grid, tmp_path, stub_trainer):
    """A 2^(4-1) fraction with a noisy -4 pp dropout effect: each added seed trains all 8 configurations
    (a contrast needs the whole replicate), and seeding stops once every contrast is decided."""
    calls, settings, options = stub_trainer
    settings.update(effect_05=-4.0, noise=1.5)
    fraction = GRID.replace("model.dropout = [0.0, 0.2, 0.5]", "model.dropout = [0.0, 0.5]\n"
                            "train.lr = [0.001, 0.002]\ntrain.weight_decay = [0.0, 0.001]\n") + "[design]\nkind = \"fractional\"\n"
    grid = load_grid(write_grid(fraction))
    outcome = run_until_decided([grid], tmp_path, options)
    assert outcome.reason == "decided" and outcome.rounds >= 1
    assert len(calls) % 8 == 0 and 24 < len(calls) <= 56
    seeds = {}
    for record in ResultStore(tmp_path, grid.name).records().values():
        seeds[record["config"]["seed"]] = seeds.get(record["config"]["seed"], 0) + 1
    assert set(seeds.values()) == {8}


def test_seeds_on_demand_trains_every_candidate_of_a_tuned_grid_and_resumes(write_grid, tmp_path, stub_trainer):
    """With lr tuned over two candidates, each added seed trains both candidates of each configuration it
    adds; interrupted in a round, the next call trains no candidate twice and ends decided."""
    calls, settings, options = stub_trainer
    settings.update(effect_05=-4.0, noise=1.5, interrupt_at=16)
    tuned = GRID.replace("model.dropout = [0.0, 0.2, 0.5]", "model.dropout = [0.0, 0.5]") + (
        "[train]\nrestore_best = false\n[tune]\ntrain.lr = [0.001, 0.002]\n")
    grid = load_grid(write_grid(tuned))
    with pytest.raises(KeyboardInterrupt):
        run_until_decided([grid], tmp_path, options)
    settings["interrupt_at"] = None
    outcome = run_until_decided([grid], tmp_path, options)
    assert outcome.reason == "decided" and len(calls) == len(set(calls)) > 12
    per_config = {}
    for record in ResultStore(tmp_path, grid.name).records().values():
        key = (record["config"]["model"]["params"]["batchnorm"], record["config"]["model"]["params"]["dropout"],
               record["config"]["seed"])
        per_config.setdefault(key, set()).add(record["config"]["train"]["lr"])
    assert all(lrs == {0.001, 0.002} for lrs in per_config.values())
