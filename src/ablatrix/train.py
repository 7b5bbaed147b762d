"""Training a unit of cells and measuring each: the entry point executors call (`train_unit`).

A unit is the cells of one training (they differ only in how the trained model is measured:
`RunConfig.training_id`), trained once as one member of the loop and measured once per cell; or
a pack of cells fused into one model (`packed.py`), a member each. Both go through `loop.run_loop`.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any, Sequence

import torch
from torch import nn

from .config import RunConfig, training_reads_validation
from .data import Splits
from .evaluation import PLAIN, Execution, classification_metrics, evaluate, usable_samples
from .loop import Checkpoint, Fitted, Member, Members, OnEpoch, Row, TrainingDiverged, copy_state, run_loop
from .models import create_model
from .optim import build_optimizer, build_schedule
from .packed import Packed, pack_id

Measured = tuple[dict[str, Any], dict[str, torch.Tensor]]  # a cell's result, and the weights it tested by name


class Single(Members):
    """One model, built, seeded and optimised as a plain run of its config."""

    def __init__(self, member: Member, data: Splits, device: torch.device, execution: Execution) -> None:
        super().__init__([member], data, device, execution)
        config, cfg = member.config, member.config.train
        torch.manual_seed(config.seed)  # initialisation, dropout masks, augmentation
        self.model = create_model(config.model.name, tuple(data.train_x.shape[1:]), data.num_classes,
                                  **config.model.params).to(device)
        if execution.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model.parameters(), cfg)
        self.step_model = torch.compile(self.model) if execution.compile else self.model
        steps = math.ceil(usable_samples(len(data.train_x), cfg.batch_size) / cfg.batch_size)
        self.schedule, self.per_batch = build_schedule(self.optimizer, cfg, steps)

    def forward(self, idx: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, y = self.execution.layout(self.augment(self.data.train_x[idx[0]])), self.data.train_y[idx[0]]
        with self.execution.autocast(self.device):
            logits = self.step_model(x).float()
            loss = nn.functional.cross_entropy(logits, y, weight=self.weight)
        return loss, loss.detach().view(1), (logits.argmax(1) == y).sum().view(1)

    def validate(self) -> list[dict[str, tuple[float, float]]]:
        data = self.data
        return [{mode: evaluate(self.step_model, data.val_x, data.val_y, self.execution, mode, data.train_x)[:2]
                 for mode in self.members[0].modes}]

    def snapshot(self, b: int) -> dict[str, torch.Tensor]:
        return copy_state(self.model)

    def load(self, b: int, state: dict[str, torch.Tensor]) -> tuple[nn.Module, nn.Module]:
        self.model.load_state_dict(state)
        return self.model, self.step_model


def members_for(configs: Sequence[RunConfig], data: Splits, device: torch.device,
                execution: Execution) -> tuple[Members, str, list[int]]:
    """The loop's members for a unit, the training's identity (for its checkpoint), and which
    member each config measures.

    The cells of one training are one member validated in every cell's mode; other modes than the
    first cell's are allowed only where training does not read validation (no early stopping or
    ReduceLROnPlateau), so they see the very training the first alone would. Cells of different
    trainings are a pack (they must share a pack key), a member each.
    """
    first = configs[0]
    if len({c.training_id for c in configs}) == 1:
        modes = tuple(dict.fromkeys(c.train.eval_mode for c in configs))
        if len(modes) > 1 and training_reads_validation(asdict(first.train)):
            raise ValueError("several evaluation modes share a training only if training does not read validation")
        restore = frozenset(c.train.eval_mode for c in configs if c.train.restore_best)
        return Single(Member(first, modes, restore), data, device, execution), first.training_id, [0] * len(configs)
    members = [Member(c, ("eval",), frozenset({"eval"} if c.train.restore_best else ())) for c in configs]
    return Packed(members, data, device, execution), pack_id(configs), list(range(len(configs)))


def measure(fitted: Fitted, b: int, config: RunConfig) -> Measured | TrainingDiverged:
    """Test member b as `config` says (its weights, its evaluation mode): the cell's result
    (history, best epoch, test metrics, and `tested`: which weights of which epoch, in which mode)."""
    failure = fitted.failures[b]
    if failure is not None:
        return TrainingDiverged(failure)
    mode, data = config.train.eval_mode, fitted.members.data
    tested, state = fitted.weights(b, config.train)
    model, evaluator = fitted.members.load(b, state)
    test_loss, test_acc, pred = evaluate(evaluator, data.test_x, data.test_y, fitted.members.execution, mode,
                                         data.train_x)
    history = fitted.histories[b][mode]
    return ({"params": sum(p.numel() for p in model.parameters()), "history": history,
             "best_epoch": fitted.best_epoch[b][mode], "epochs_trained": len(history), "tested": tested,
             **({"resumed_after_epochs": fitted.resumed} if fitted.resumed else {}),
             "test": classification_metrics(test_loss, test_acc, pred, data.test_y, data.num_classes)},
            {tested["weights"]: state})


def train_unit(configs: Sequence[RunConfig], data: Splits, device: torch.device, execution: Execution = PLAIN,
               on_epoch: OnEpoch = lambda b, row: None, checkpoint: Checkpoint | None = None
               ) -> list[Measured | TrainingDiverged]:
    """Train a unit once (resumed from `checkpoint` where it holds one) and measure each config:
    per config, its result and the weights it tested, or why its training diverged."""
    members, identity, which = members_for(configs, data, device, execution)
    fitted = run_loop(members, identity, on_epoch, checkpoint)
    return [measure(fitted, b, config) for b, config in zip(which, configs)]


def fit(configs: Sequence[RunConfig], data: Splits, device: torch.device, execution: Execution = PLAIN
        ) -> list[tuple[nn.Module, list[Row], int] | TrainingDiverged]:
    """Train configs of one pack, or one config, and return per config its model holding the weights
    it tests, its history and best epoch (for inspecting models: tests and benchmarks)."""
    members, identity, which = members_for(configs, data, device, execution)
    fitted = run_loop(members, identity)
    models: list[tuple[nn.Module, list[Row], int] | TrainingDiverged] = []
    for b, config in zip(which, configs):
        if fitted.failures[b] is not None:
            models.append(TrainingDiverged(fitted.failures[b]))
            continue
        mode = config.train.eval_mode
        evaluator = members.load(b, fitted.weights(b, config.train)[1])[1]
        models.append((evaluator, fitted.histories[b][mode], fitted.best_epoch[b][mode]))
    return models
