"""The trainer: determinism, early stopping with best-weights restore, metrics, divergence."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

import ablatrix

from ablatrix.config import ModelConfig, RunConfig, TrainConfig
from ablatrix.data import Splits, load_splits
from ablatrix.models import resolve_params
from ablatrix.evaluation import PLAIN, Execution, classification_metrics, evaluate, recompute_batchnorm
from ablatrix.loop import Checkpoint, TrainingDiverged
from ablatrix.optim import OPTIMIZERS, build_optimizer
from ablatrix.train import fit, train_unit
from conftest import on

CPU = torch.device("cpu")


def config(seed: int = 0, **train) -> RunConfig:
    params = resolve_params("convnet", {"conv": [4], "fc": [16], "dropout": 0.1})
    return RunConfig("digits", seed, ModelConfig("convnet", params), TrainConfig(**{"epochs": 3, **train}))


def train_run(config: RunConfig, data: Splits, device: torch.device, execution: Execution = PLAIN) -> dict:
    """One cell's result, trained alone."""
    return train_unit([config], data, device, execution)[0][0]


def fit_one(config: RunConfig, data: Splits, device: torch.device):
    """One config's model (holding the weights it tests), history and best epoch; raises its divergence."""
    fitted = fit([config], data, device)[0]
    if isinstance(fitted, Exception):
        raise fitted
    return fitted


def train_cells(configs, data, device, on_epoch=lambda row: None, checkpoint=None):
    """Every config's result, and the weights they tested by name."""
    results = train_unit(configs, data, device, on_epoch=lambda b, row: on_epoch(row), checkpoint=checkpoint)
    return [r for r, _ in results], {name: w for _, weights in results for name, w in weights.items()}


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_splits("digits", 0.1, CPU, Path("."))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_same_config_and_seed_give_the_same_numbers(digits, optimizer, device):
    """Two trainings of one config on one device agree exactly; another seed does not."""
    data = on(digits, device)
    first = train_run(config(optimizer=optimizer), data, device)
    again = train_run(config(optimizer=optimizer), data, device)
    other = train_run(config(seed=1, optimizer=optimizer), data, device)
    strip = lambda h: [{k: v for k, v in row.items() if k != "seconds"} for row in h]  # noqa: E731
    assert strip(first["history"]) == strip(again["history"])
    assert first["test"] == again["test"]
    assert strip(first["history"]) != strip(other["history"])


def test_training_learns(digits, device):
    """A few epochs on digits, as the device runs by default (bf16 and channels_last on CUDA), get far
    above the 10% chance level."""
    result = train_run(config(epochs=8), on(digits, device), device, Execution.default_for(device))
    assert result["test"]["accuracy"] > 0.8
    assert result["history"][-1]["train_loss"] < result["history"][0]["train_loss"]


def test_early_stopping_stops_after_patience_and_restores_the_best_weights(digits, device):
    """With patience 2 training stops 2 epochs after the best val loss and ends with those weights."""
    cfg, digits = config(epochs=60, patience=2, lr=0.05), on(digits, device)
    model, history, best = fit_one(cfg, digits, device)
    assert len(history) < 60 and len(history) - best == 2
    assert min(history, key=lambda row: row["val_loss"])["epoch"] == best
    val_loss, _, _ = evaluate(model, digits.val_x, digits.val_y)
    assert val_loss == pytest.approx(history[best - 1]["val_loss"], rel=1e-6)
    no_restore = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, restore_best=False))
    model_last, last_history, _ = fit_one(no_restore, digits, device)
    assert evaluate(model_last, digits.val_x, digits.val_y)[0] == pytest.approx(last_history[-1]["val_loss"])
    assert last_history[-1]["val_loss"] > val_loss


def test_patience_zero_trains_every_epoch(digits):
    """patience = 0 disables early stopping."""
    _, history, _ = fit_one(config(epochs=4, patience=0), digits, CPU)
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]


def test_classification_metrics_by_hand():
    """Per-class accuracy, support and the confusion matrix of a hand-made prediction."""
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 1, 2, 2])
    m = classification_metrics(0.5, 4 / 6, pred, y, 4)
    assert m["confusion"] == [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert [(c["correct"], c["support"]) for c in m["per_class"]] == [(2, 3), (1, 2), (1, 1), (0, 0)]
    assert [c["accuracy"] for c in m["per_class"]] == [pytest.approx(2 / 3), 0.5, 1.0, None]


def test_trailing_batch_of_one_does_not_break_batchnorm(digits):
    """65 training samples with batch 64 leave a batch of one, which is dropped, not crashed on."""
    small = dataclasses.replace(digits, train_x=digits.train_x[:65], train_y=digits.train_y[:65])
    _, history, _ = fit_one(config(epochs=1, batch_size=64), small, CPU)
    assert len(history) == 1


def test_non_finite_loss_raises_training_diverged(digits):
    """A NaN in the data makes the loss NaN, which stops the run with TrainingDiverged."""
    broken = dataclasses.replace(digits, train_x=digits.train_x.clone())
    broken.train_x[0, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match="training loss became nan in epoch 1"):
        fit_one(config(epochs=2, batch_size=2000), broken, CPU)


@pytest.mark.parametrize("options", [
    {"augment": "flip-rot90"}, {"augment": "crop-flip"}, {"sampler": "balanced"}, {"class_weighted": True},
])
def test_training_options_change_the_run_and_still_learn(digits, options):
    """Augmentation, the balanced sampler and class weights each alter training, which still learns."""
    plain = train_run(config(epochs=6, lr=0.01), digits, CPU)
    varied = train_run(config(epochs=6, lr=0.01, **options), digits, CPU)
    assert varied["history"][0]["train_loss"] != plain["history"][0]["train_loss"]
    assert varied["history"][-1]["train_loss"] < 0.9 * varied["history"][0]["train_loss"]
    assert varied["test"]["accuracy"] > 0.3  # above chance, though flips and crops garble 8x8 digits


def test_channels_last_gives_the_plain_numbers(digits):
    """The channels_last fast path (used on CUDA) trains to the same numbers on CPU."""
    # Without dropout: its masks are drawn in memory order, so another layout drops other units.
    cfg = dataclasses.replace(config(), model=ModelConfig("convnet", resolve_params("convnet", {"conv": [4], "fc": [16]})))
    plain = train_run(cfg, digits, CPU)
    fast = train_run(cfg, digits, CPU, Execution(channels_last=True))
    # Other conv kernels round differently; the drift stays at rounding level over the epochs.
    assert [r["val_loss"] for r in fast["history"]] == pytest.approx([r["val_loss"] for r in plain["history"]], rel=2e-3)
    assert fast["test"]["accuracy"] == pytest.approx(plain["test"]["accuracy"], abs=0.01)


def test_evaluate_in_batches_equals_one_full_forward_pass(digits):
    """evaluate's loss, accuracy and predictions over several CPU batches equal one pass over all samples."""
    model, _, _ = fit_one(config(epochs=1), digits, CPU)
    x, y = digits.train_x, digits.train_y  # over 1,000 samples: several evaluation batches
    loss, acc, pred = evaluate(model, x, y)
    with torch.no_grad():
        logits = model.eval()(x)
    assert len(x) > 1000
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)
    assert torch.equal(pred, logits.argmax(1)) and acc == (pred == y).float().mean().item()


def test_recompute_batchnorm_takes_statistics_with_dropout_off(digits):
    """bn-recomputed: each BatchNorm gets the average of its inputs' batch mean and unbiased variance
    over the training inputs with dropout off (by hand for the first); after a dropout of 0.5 that
    variance is below the one training gathered; the model itself is untouched."""
    params = resolve_params("convnet", {"conv": [4, 6], "fc": [16], "dropout": 0.5})
    model, _, _ = fit_one(dataclasses.replace(config(patience=0), model=ModelConfig("convnet", params)), digits, CPU)
    x = digits.train_x[:512]  # two evaluation batches of 256
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fresh = recompute_batchnorm(model, x)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    conv, bn = fresh.features[0], fresh.features[1]
    assert isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d) and not fresh.training
    with torch.no_grad():
        out = [conv(x[:256]), conv(x[256:])]
    mean = sum(o.mean((0, 2, 3)) for o in out) / 2
    var = sum(o.transpose(0, 1).flatten(1).var(1) for o in out) / 2
    assert torch.allclose(bn.running_mean, mean, atol=1e-6) and torch.allclose(bn.running_var, var, rtol=1e-5)
    after_dropout = (model.features[6], fresh.features[6])
    assert all(isinstance(m, torch.nn.BatchNorm2d) for m in after_dropout)
    assert (after_dropout[0].running_var / after_dropout[1].running_var).mean() > 1.3
    recompute_batchnorm(model, digits.train_x[:257])  # a trailing batch of one is left out, not an error
    _, _, pred = evaluate(model, digits.test_x, digits.test_y, mode="bn-recomputed", train_x=x)
    with torch.no_grad():
        assert torch.equal(pred, fresh(digits.test_x).argmax(1))


@pytest.mark.parametrize("mode", ["train", "bn-recomputed"])
def test_other_evaluation_modes_change_metrics_not_training(digits, mode):
    """eval_mode "train" (batch statistics, dropout on) and "bn-recomputed" give the same training
    (same train losses, same BatchNorm running statistics) and other validation and test numbers."""
    plain, aided = (config(patience=0, restore_best=False, eval_mode=m) for m in ("eval", mode))
    model, history, _ = fit_one(plain, digits, CPU)
    model_t, history_t, _ = fit_one(aided, digits, CPU)
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in history_t]
    assert [h["val_loss"] for h in history] != [h["val_loss"] for h in history_t]
    bn = next(m for m in model_t.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    evaluate(model_t, digits.test_x, digits.test_y, mode=mode, train_x=digits.train_x)
    assert torch.equal(bn.running_mean, before)  # evaluated on a copy
    assert train_run(plain, digits, CPU)["test"] != train_run(aided, digits, CPU)["test"]


@pytest.mark.parametrize("name, args, lr, cls, expected", [
    ("RMSprop", {"alpha": 0.9}, 0.01, torch.optim.RMSprop, {"alpha": 0.9, "lr": 0.01}),
    ("nadam", {}, 0.01, torch.optim.NAdam, {"lr": 0.01}),
    ("Adadelta", {"rho": 0.8}, 1.0, torch.optim.Adadelta, {"rho": 0.8, "lr": 1.0}),
    ("adam", {"betas": [0.8, 0.9]}, 0.01, torch.optim.Adam, {"betas": (0.8, 0.9), "lr": 0.01}),
])
def test_any_torch_optimizer_by_name_with_its_arguments(digits, name, args, lr, cls, expected):
    """A torch.optim class by name (any case) gets train.lr and the grid's optimizer_args, and trains."""
    cfg = config(optimizer=name, optimizer_args=args, lr=lr)
    optimizer = build_optimizer(torch.nn.Linear(2, 2).parameters(), cfg.train)
    assert type(optimizer) is cls
    assert {k: optimizer.defaults[k] for k in expected} == expected
    assert train_run(cfg, digits, CPU)["test"]["accuracy"] > 0.3


def test_a_registered_optimizer_gets_the_grids_arguments(digits):
    """A plugin's optimiser, registered by name, is built with the train config (and its optimizer_args)."""
    seen = []

    @ablatrix.register_optimizer("test-sgd-nesterov")
    def make(parameters, cfg):
        seen.append(cfg.optimizer_args)
        return torch.optim.SGD(parameters, lr=cfg.lr, momentum=0.9, nesterov=True, **cfg.optimizer_args)
    try:
        result = train_run(config(optimizer="test-sgd-nesterov", optimizer_args={"dampening": 0.0}, lr=0.05), digits, CPU)
    finally:
        OPTIMIZERS.pop("test-sgd-nesterov")
    assert seen == [{"dampening": 0.0}] and result["test"]["accuracy"] > 0.5


@pytest.mark.parametrize("schedule, args, warmup, lrs", [
    ("StepLR", {"step_size": 1, "gamma": 0.5}, 0, [0.01, 0.005, 0.0025, 0.00125]),
    ("StepLR", {"step_size": 1, "gamma": 0.5}, 2, [0.01 / 3, 0.02 / 3, 0.01, 0.005]),
    ("none", {}, 1, [0.005, 0.01, 0.01, 0.01]),
    ("CosineAnnealingLR", {}, 0, [0.01, 0.01 * (1 + 0.5 ** 0.5) / 2, 0.005, 0.01 * (1 - 0.5 ** 0.5) / 2]),
])
def test_per_epoch_schedules_and_warm_up_set_each_epochs_rate(digits, schedule, args, warmup, lrs):
    """The rate each epoch starts with, in the history: StepLR halving, a linear warm-up from lr / 3
    over 2 epochs then StepLR from lr, warm-up alone, cosine over the grid's epochs (T_max from it)."""
    result = train_run(config(epochs=4, lr=0.01, schedule=schedule, schedule_args=args, warmup_epochs=warmup),
                       digits, CPU)
    assert [row["lr"] for row in result["history"]] == pytest.approx(lrs)


def test_one_cycle_steps_per_batch_over_the_grids_steps(digits):
    """OneCycleLR steps every batch: its total steps come from epochs x batches and its peak is train.lr,
    so epoch 1 starts at lr / 25 (its div_factor) and the run ends near lr / 1e4."""
    cfg = config(epochs=3, lr=0.01, batch_size=64, schedule="OneCycleLR")
    model, history, _ = fit_one(cfg, digits, CPU)
    assert history[0]["lr"] == pytest.approx(0.01 / 25)
    assert max(row["lr"] for row in history) <= 0.01
    steps = -(-len(digits.train_x) // 64)
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.01, total_steps=3 * steps)
    for _ in range(steps):
        optimizer.step()
        schedule.step()
    assert history[1]["lr"] == pytest.approx(schedule.get_last_lr()[0])


def test_a_log_softmax_model_output_trains_as_logits_do(digits):
    """Cross-entropy of log-probabilities equals that of their logits (log_softmax is idempotent), so
    a model ending in log_softmax, as many published examples do, trains to the same numbers."""
    logits = torch.randn(8, 10)
    y = torch.arange(8) % 10
    assert torch.nn.functional.cross_entropy(logits.log_softmax(1), y) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, y)))


def _without_seconds(result: dict) -> dict:
    return {**result, "history": [{k: v for k, v in row.items() if k != "seconds"} for row in result["history"]]}


@pytest.mark.parametrize("patience, epochs, measurements", [
    (0, 4, [("eval", False), ("train", False), ("bn-recomputed", False), ("eval", True), ("train", True)]),
    (2, 60, [("eval", True), ("eval", False)]),  # early stopping reads eval mode: only which weights differ
])
def test_one_training_measured_several_ways_equals_separate_trainings(digits, patience, epochs, measurements):
    """train_cells trains once for cells that differ only in eval mode and restore_best, and each
    result (history, best epoch, test metrics) equals that cell's own training bit for bit on CPU."""
    params = resolve_params("convnet", {"conv": [4], "fc": [16], "dropout": 0.3})
    configs = [RunConfig("digits", 0, ModelConfig("convnet", params),
                         TrainConfig(epochs=epochs, lr=0.05, patience=patience, eval_mode=mode, restore_best=restore))
               for mode, restore in measurements]
    assert len({c.training_id for c in configs}) == 1
    shared, weights = train_cells(configs, digits, CPU)
    for config, result in zip(configs, shared):
        alone, _ = train_cells([config], digits, CPU)
        assert _without_seconds(result) == _without_seconds(alone[0])
        assert result["tested"]["weights"] in weights
        assert result["tested"]["weights"] == ("final" if not config.train.restore_best
                                               else f"best-{config.train.eval_mode}")
    assert len({json.dumps(r["test"]) for r in shared}) > 1  # the measurements do differ


def test_cells_of_different_trainings_that_cannot_pack_are_refused(digits):
    """A seed apart, cells are one pack; a batch size apart (another batch schedule), neither one
    training nor one pack: a programming error, not a silent mix."""
    assert len(train_unit([config(0, epochs=1), config(1, epochs=1)], digits, CPU)) == 2
    with pytest.raises(ValueError, match="one pack key"):
        train_unit([config(0, patience=0), config(0, patience=0, batch_size=32)], digits, CPU)


class Stop(Exception):
    """Stands for a kill at the end of an epoch."""


def test_removing_a_checkpoint_takes_a_killed_write_with_it(tmp_path):
    """A kill during a write leaves its temporary file: `remove` deletes it with the checkpoint, and
    leaves other trainings' files alone."""
    checkpoint = Checkpoint(tmp_path / "abc.pt")
    checkpoint.save({"epoch": 1})
    (tmp_path / ".abc.pt.x1y2z3.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "other.pt").write_bytes(b"")
    checkpoint.remove()
    assert [p.name for p in tmp_path.iterdir()] == ["other.pt"]


def test_a_checkpoint_removed_during_its_write_is_not_an_error(tmp_path, monkeypatch):
    """A runner that finished the same training removes the checkpoint (and the temporary file being
    written) under a writer: the writer's training goes on."""
    checkpoint = Checkpoint(tmp_path / "abc.pt")
    real = os.replace

    def removed_first(source, target):
        checkpoint.remove()
        real(source, target)
    monkeypatch.setattr(os, "replace", removed_first)
    checkpoint.save({"epoch": 1})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("train, model, kills", [
    ({"patience": 0, "restore_best": False}, {"dropout": 0.3, "batchnorm": True}, [2, 5]),  # dropout and BatchNorm
    ({"patience": 2, "restore_best": True, "epochs": 60}, {}, [3]),  # early stopping, best weights
    ({"patience": 0, "schedule": "StepLR", "schedule_args": {"step_size": 2}, "warmup_epochs": 1,
      "optimizer": "sgd"}, {"dropout": 0.2}, [1, 4]),
])
def test_a_training_stopped_after_an_epoch_resumes_bit_for_bit(digits, tmp_path, train, model, kills, device):
    """Stopped after epochs `kills` and resumed from its checkpoint each time, a training ends with the
    history, best epoch, test metrics and weights of its uninterrupted twin, and says where it resumed."""
    params = resolve_params("convnet", {"conv": [4], "fc": [16], **model})
    cfg = RunConfig("digits", 0, ModelConfig("convnet", params), TrainConfig(**{"epochs": 7, "lr": 0.05, **train}))
    configs = [cfg, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, eval_mode="train"))] \
        if not cfg.train.patience else [cfg]
    digits = on(digits, device)
    (twin, *_), twin_weights = train_cells(configs, digits, device)
    checkpoint = Checkpoint(tmp_path / "ckpt.pt")
    for kill in kills:
        def stop(row, kill=kill):
            if row["epoch"] == kill:
                raise Stop
        with pytest.raises(Stop):
            train_cells(configs, digits, device, on_epoch=stop, checkpoint=checkpoint)
        assert torch.load(checkpoint.path, weights_only=True)["epoch"] == kill
    (resumed, *_), weights = train_cells(configs, digits, device, checkpoint=checkpoint)
    assert resumed.pop("resumed_after_epochs") == kills
    assert _without_seconds(resumed) == _without_seconds(twin)
    assert all(torch.equal(weights[n][k], twin_weights[n][k]) for n in twin_weights for k in twin_weights[n])
