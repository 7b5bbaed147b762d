"""Packed training against plain runs on digits: exact in float64, statistically with dropout."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from scipy import stats

from ablatrix.config import ModelConfig, RunConfig, TrainConfig
from ablatrix.data import load_splits
from ablatrix.models import resolve_params
from ablatrix.evaluation import Execution, evaluate
from ablatrix.loop import Checkpoint, TrainingDiverged
from ablatrix.packed import pack_key, pack_size
from ablatrix.train import fit, train_unit
from conftest import on

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", 0.1, CPU, Path("unused"))


@pytest.fixture
def float64(digits):
    """Digits and models in float64. In float32, rounding differences between a grouped and a plain
    convolution (1e-7) can grow through BatchNorm and Adam (a gradient of 1e-8 meets eps 1e-8) to
    1e-3 within an epoch for some seeds; in float64 they cannot, so a mismatch there is a real bug."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield dataclasses.replace(digits, **{k: getattr(digits, k).double() for k in ("train_x", "val_x", "test_x")})
    torch.set_default_dtype(default)


def config(seed: int = 0, model: dict | None = None, **train) -> RunConfig:
    params = resolve_params("convnet", {"conv": [8, 16], "fc": [32], **(model or {})})
    return RunConfig("digits", seed, ModelConfig("convnet", params),
                     TrainConfig(**{"epochs": 1, "patience": 0, **train}))


def assert_same_run(packed, plain, data) -> None:
    """Weights within 1e-4 relative (per tensor), the same history, the same test predictions."""
    (model, history, best), (model0, history0, best0) = packed, plain
    for (name, w), w0 in zip(model.state_dict().items(), model0.state_dict().values()):
        if w.dtype.is_floating_point and w0.norm() > 0:
            assert (w - w0).norm() / w0.norm() < 1e-4, name
    assert (best, len(history)) == (best0, len(history0))
    assert [r["val_loss"] for r in history] == pytest.approx([r["val_loss"] for r in history0], rel=1e-6)
    assert torch.equal(evaluate(model, data.test_x, data.test_y)[2], evaluate(model0, data.test_x, data.test_y)[2])


@pytest.mark.parametrize("batchnorm", [True, False])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_members_equal_their_plain_runs(float64, batchnorm, optimizer, device):
    """Without dropout, each member of a pack of 3 ends one epoch where its plain run does."""
    configs = [config(seed, {"batchnorm": batchnorm}, optimizer=optimizer, lr=0.01) for seed in (0, 1, 2)]
    data = on(float64, device)
    for packed, cfg in zip(fit(configs, data, device), configs):
        assert_same_run(packed, fit([cfg], data, device)[0], data)


def test_members_keep_their_own_learning_rate_decay_and_stopping(float64):
    """Learning rate, weight decay, patience and restore_best per member; a member that stops is frozen."""
    configs = [config(0, epochs=6, optimizer="adam", lr=0.003, weight_decay=0.01, patience=1, restore_best=True),
               config(1, epochs=6, optimizer="adam", lr=0.02, patience=0, restore_best=False),
               config(2, epochs=6, optimizer="adam", lr=0.3, patience=1, restore_best=False)]
    fitted = fit(configs, float64, CPU)
    lengths = [len(history) for _, history, _ in fitted]
    assert len(set(lengths)) > 1  # someone stopped early, or this test checks nothing about freezing
    for packed, cfg in zip(fitted, configs):
        assert_same_run(packed, fit([cfg], float64, CPU)[0], float64)


def test_a_diverging_member_fails_alone(float64):
    """A member whose loss goes non-finite is reported failed; the others still equal their plain runs."""
    configs = [config(0, optimizer="sgd", lr=0.05), config(1, optimizer="sgd", lr=1e12, momentum=0.0)]
    good, bad = fit(configs, float64, CPU)
    assert isinstance(bad, TrainingDiverged) and "training loss became" in str(bad)
    assert_same_run(good, fit([configs[0]], float64, CPU)[0], float64)


@pytest.mark.slow
def test_with_dropout_members_match_plain_runs_in_distribution(digits):
    """With dropout, the packed members' mean test accuracy lies inside the plain runs' 95% interval."""
    model = {"dropout": 0.3, "fc_dropout": 0.3}
    configs = [config(seed, model, epochs=4) for seed in range(8)]
    plain = [100 * train_unit([c], digits, CPU)[0][0]["test"]["accuracy"] for c in configs]
    packed = [100 * r["test"]["accuracy"] for r, _ in train_unit(configs, digits, CPU)]
    mean, sem = sum(plain) / len(plain), stats.sem(plain)
    half = stats.t.ppf(0.975, len(plain) - 1) * sem
    assert abs(sum(packed) / len(packed) - mean) <= half, (plain, packed)


class Stop(Exception):
    """Stands for a kill at the end of an epoch."""


def test_a_pack_stopped_after_an_epoch_resumes_bit_for_bit(digits, tmp_path, device):
    """A pack with dropout and BatchNorm, one member stopping early (patience) and one diverging, stopped
    after epochs 2 and 5 and resumed from its checkpoint each time: every member ends with the history,
    test metrics and weights of the uninterrupted pack, and says where it resumed."""
    model = {"dropout": 0.2, "batchnorm": True}
    configs = [config(0, model, epochs=7, lr=0.03, patience=1, restore_best=True),
               config(1, model, epochs=7, lr=0.01),
               config(2, model, epochs=7, lr=1e12)]
    digits = on(digits, device)
    twin = train_unit(configs, digits, device)
    assert isinstance(twin[2], TrainingDiverged) and twin[0][0]["epochs_trained"] < 7  # or this tests less
    checkpoint = Checkpoint(tmp_path / "pack.pt")
    for kill in (2, 5):
        def stop(b, row, kill=kill):
            if row["epoch"] == kill:
                raise Stop
        with pytest.raises(Stop):
            train_unit(configs, digits, device, on_epoch=stop, checkpoint=checkpoint)
        assert torch.load(checkpoint.path, weights_only=True)["epoch"] == kill
    resumed = train_unit(configs, digits, device, checkpoint=checkpoint)
    assert str(resumed[2]) == str(twin[2])
    for (result, weights), (result0, weights0) in zip(resumed[:2], twin[:2]):
        assert result.pop("resumed_after_epochs") == [2, 5]
        for row, row0 in zip(result.pop("history"), result0.pop("history"), strict=True):
            assert {**row, "seconds": 0} == {**row0, "seconds": 0}
        assert result == result0
        assert all(torch.equal(weights[n][k], weights0[n][k]) for n in weights0 for k in weights0[n])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_trains_a_pack(digits, device, amp):
    """Autocast (fp16 with its gradient scaler) and channels_last, the CUDA defaults, train a pack with
    dropout to finite losses and a test accuracy far above chance, on each device."""
    configs = [config(seed, {"dropout": 0.2, "dropout_kind": "dropout2d"}, epochs=2) for seed in (0, 1)]
    results = train_unit(configs, on(digits, device), device, Execution(amp=amp, channels_last=True))
    for result, _ in results:
        assert all(math.isfinite(r["train_loss"]) for r in result["history"])
        assert result["test"]["accuracy"] > 0.3  # ten classes: far above chance after two epochs


@pytest.mark.parametrize("a, b, together", [
    (config(0), config(5), True),  # seeds
    (config(0, {"dropout": 0.1}), config(0, {"dropout": 0.4, "fc_dropout": 0.2, "head_dropout": 0.3}), True),
    (config(0, lr=0.1, weight_decay=0.01, patience=3), config(0, lr=0.2), True),
    (config(0), config(0, {"conv": [8, 8]}), False),  # shapes
    (config(0), config(0, {"batchnorm": False}), False),
    (config(0), config(0, batch_size=32), False),  # batch schedule
    (config(0), config(0, epochs=2), False),
    (config(0), config(0, optimizer="sgd"), False),
])
def test_pack_key(a, b, together):
    """Cells share a pack exactly when they differ only in seed, dropout rates or optimiser settings."""
    assert (pack_key(a) == pack_key(b)) is together


@pytest.mark.parametrize("cfg", [
    config(0, eval_mode="train"),  # a reproduction aid for single runs
    RunConfig("digits", 0, ModelConfig("my-module", {}), TrainConfig()),
    config(0, optimizer="RMSprop"),  # PackedOptimizer computes adam, adamw and sgd only
    config(0, optimizer_args={"amsgrad": True}),
    config(0, schedule="CosineAnnealingLR"),  # members would need their own schedules
    config(0, warmup_epochs=1),
])
def test_cells_that_never_pack(cfg):
    """Train-mode evaluation, registered custom modules, other optimisers or their arguments, and
    schedules are trained unpacked."""
    assert pack_key(cfg) is None


def test_a_pack_refuses_mixed_cells(digits):
    """Cells of different shapes cannot be fused; asking to is a programming error, not a silent mix."""
    with pytest.raises(ValueError):
        fit([config(0), config(0, {"conv": [4]})], digits, CPU)


def test_auto_pack_size_is_one_on_cpu():
    """`--pack auto` does not pack on CPU, where benchmarks/packed.py measured fused packs slower."""
    assert pack_size(config(0), CPU) == 1
