"""The training loop, the one every training runs through: B members trained in step.

A plain training is one member (validated in one or several evaluation modes, when cells that
differ only in how they are measured share it); a pack is B members fused into one model
(`packed.py`). What differs between them is the `Members` object: how a batch goes forward, how
the members are validated, how one member's weights are read. Everything else lives here once:
batch order, the optimiser step, the history row, early stopping and best weights, divergence,
checkpoints and resume.

Losses and correct counts accumulate on the device and are read once per epoch, so the loop
never waits on the host between steps.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .config import RunConfig, TrainConfig
from .data import AUGMENTATIONS, SAMPLERS, Splits, class_frequencies
from .errors import AblatrixError
from .evaluation import Execution, usable_samples
from .store import atomic_torch_save

Row = dict[str, float]
OnEpoch = Callable[[int, Row], None]  # (member, its history row in its own mode), after each epoch


class TrainingDiverged(AblatrixError):
    """The training loss stopped being a finite number."""


def loss_weight(cfg: TrainConfig, data: Splits, device: torch.device) -> torch.Tensor | None:
    """With `class_weighted`, inverse class frequency, scaled so a balanced set gets weight 1 everywhere."""
    if not cfg.class_weighted:
        return None
    counts = class_frequencies(data.train_y, data.num_classes)
    return (counts.sum() / (data.num_classes * counts)).to(device)


def _to(state: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in state.items()}


def copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights and buffers that training will not change."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def history_row(epoch: int, train: tuple[float, float], val: tuple[float, float], seconds: float,
                lr: float | None) -> Row:
    """One epoch of a history; `lr` (the rate the epoch started with) only where a schedule changes it."""
    return {"epoch": epoch, "train_loss": train[0], "train_accuracy": train[1], "val_loss": val[0],
            "val_accuracy": val[1], "seconds": seconds, **({"lr": lr} if lr is not None else {})}


@dataclass(frozen=True)
class Member:
    """One model the loop trains: its config, the evaluation modes it is validated in (the first is
    its own: early stopping and ReduceLROnPlateau read it) and the modes whose best weights are kept."""

    config: RunConfig
    modes: tuple[str, ...]
    restore: frozenset[str]


class Members:
    """The models of one loop. A subclass builds them (seeded as their plain runs are), and sets
    `model` (what the optimiser trains), `step_model` (it, or its compiled form) and `optimizer`;
    `schedule` and `per_batch` where the members have a learning-rate schedule."""

    model: nn.Module
    step_model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Any = None
    per_batch: bool = False

    def __init__(self, members: Sequence[Member], data: Splits, device: torch.device, execution: Execution) -> None:
        cfg = members[0].config.train
        self.members, self.data, self.device, self.execution = list(members), data, device, execution
        self.augment = AUGMENTATIONS.lookup(cfg.augment)
        self.weight = loss_weight(cfg, data, device)

    def forward(self, idx: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A step's objective for the batches `idx` (B, n: member b's samples in row b), each
        member's mean loss (B,) and correct count (B,); `active` (B,) says which members still train."""
        raise NotImplementedError

    def validate(self) -> list[dict[str, tuple[float, float]]]:
        """Per member, validation loss and accuracy in each of its modes."""
        raise NotImplementedError

    def snapshot(self, b: int) -> dict[str, torch.Tensor]:
        """A copy of member b's weights, as its plain model's state dict."""
        raise NotImplementedError

    def freeze(self, b: int) -> None:
        """Member b stopped: its weights must not change from here on."""

    def load(self, b: int, state: dict[str, torch.Tensor]) -> tuple[nn.Module, nn.Module]:
        """Member b's plain model holding `state`, and the module that evaluates it."""
        raise NotImplementedError


@dataclass
class Fitted:
    """What a loop leaves per member: histories and best epochs by mode, the best weights of the
    modes that restore them, the weights it ended with, or why it diverged."""

    members: Members
    histories: list[dict[str, list[Row]]]
    best_epoch: list[dict[str, int]]
    best_state: list[dict[str, dict[str, torch.Tensor]]]
    final: list[dict[str, torch.Tensor] | None]
    failures: list[str | None]
    resumed: list[int]  # epochs after which a stopped training was resumed from its checkpoint

    def weights(self, b: int, cfg: TrainConfig) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """What member b measured as `cfg` says tests (a record's `tested`), and those weights."""
        mode = cfg.eval_mode
        restored = cfg.restore_best and mode in self.best_state[b]
        epoch = self.best_epoch[b][mode] if restored else len(self.histories[b][mode])
        final = self.final[b]
        assert final is not None
        return ({"weights": f"best-{mode}" if restored else "final", "epoch": epoch, "eval_mode": mode},
                self.best_state[b][mode] if restored else final)


@dataclass(frozen=True)
class Checkpoint:
    """Where a training keeps its state between epochs, and how often it writes it.

    The state is everything the next epoch depends on (weights, optimiser, schedule, gradient
    scaler, the global and batch-order random generators, early stopping, best weights, history),
    so a training resumed from it continues exactly as if it had not stopped. It is written at
    the end of an epoch once `every_seconds` have passed since the last write (0: every epoch).
    """

    path: Path
    every_seconds: float = 0.0

    def load(self, identity: str) -> dict[str, Any] | None:
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # none yet; or unreadable (a power cut mid-write, a foreign file): start afresh
            return None
        return state if state.get("training_id") == identity else None

    def save(self, state: dict[str, Any]) -> None:
        # Not fsynced: a checkpoint only saves time, and waiting for the disk (about 0.3 s for the
        # 14 MB of the 1.1M CNN) cost 4.6% of its training when written every epoch. A kill
        # leaves the old checkpoint or the new one; a power cut at worst an unreadable one, which
        # `load` ignores (the training starts again).
        try:
            atomic_torch_save(self.path, state, durable=False)
        except FileNotFoundError:  # `remove` by a runner that finished the same training meanwhile
            pass

    def remove(self) -> None:
        """Delete the checkpoint once the records hold it all, with the temporary file of a write
        that a kill interrupted (a checkpoint is written every few seconds, so kills do land there)."""
        self.path.unlink(missing_ok=True)
        for partial in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            partial.unlink(missing_ok=True)


# Bumped when the checkpoint's contents change: an older checkpoint then starts its training afresh.
CHECKPOINT_FORMAT = 2


def run_loop(members: Members, identity: str, on_epoch: OnEpoch = lambda b, row: None,
             checkpoint: Checkpoint | None = None) -> Fitted:
    """Train `members` to their last epoch, or until each stops (patience) or diverges.

    Evaluating never touches the training's random state or weights, so each member trains as its
    plain run would. With a `checkpoint` (of the training `identity`), a training that stopped
    part-way continues from its last saved epoch, exactly as if it had not stopped.
    """
    specs, data, device = members.members, members.data, members.device
    size, cfg = len(specs), specs[0].config.train  # fields that shape batches are common to all members
    if device.type == "cuda":
        # Deterministic convolution kernels, not those cuDNN's autotuner times fastest: a training
        # then repeats, and resumes, bit for bit on one GPU as it does on CPU. With autotuning two
        # trainings of one config parted at 1e-7 in the first epoch on an H200 (benchmarks/README.md).
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    orders = [torch.Generator().manual_seed(m.config.seed) for m in specs]
    scaler = torch.amp.GradScaler(device.type, enabled=members.execution.amp == "fp16")
    sample, n_used = SAMPLERS.lookup(cfg.sampler), usable_samples(len(data.train_x), cfg.batch_size)
    optimizer, schedule = members.optimizer, members.schedule
    layout = [[list(m.modes), sorted(m.restore)] for m in specs]  # what a checkpoint must match
    histories: list[dict[str, list[Row]]] = [{mode: [] for mode in m.modes} for m in specs]
    best_loss = [dict.fromkeys(m.modes, math.inf) for m in specs]
    best_epoch = [dict.fromkeys(m.modes, 0) for m in specs]
    best_state: list[dict[str, dict[str, torch.Tensor]]] = [{} for _ in specs]
    final: list[dict[str, torch.Tensor] | None] = [None] * size  # the weights a member stopped with
    failures: list[str | None] = [None] * size
    running, resumed, epoch = list(range(size)), [], 0
    state = checkpoint.load(identity) if checkpoint else None
    if state is not None and state.get("format") == CHECKPOINT_FORMAT and state["members"] == layout:
        members.model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if schedule:
            schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        for generator, order_state in zip(orders, state["orders"]):
            generator.set_state(order_state)
        histories, best_loss, best_epoch, failures, running = (state[k] for k in (
            "histories", "best_loss", "best_epoch", "failures", "running"))
        # Saved weights come back on the CPU; on the device they are what an unstopped training holds.
        best_state = [{mode: _to(s, device) for mode, s in member.items()} for member in state["best_state"]]
        final = [None if s is None else _to(s, device) for s in state["final"]]
        resumed, epoch = [*state["resumed"], state["epoch"]], state["epoch"]
        for b in set(range(size)) - set(running):
            members.freeze(b)

    def stop(b: int) -> None:
        running.remove(b)
        members.freeze(b)

    last_save = time.monotonic()
    for epoch in range(epoch + 1, cfg.epochs + 1):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"] if schedule else None  # the rate this epoch starts with
        members.model.train()
        order = torch.stack([sample(data.train_y, data.num_classes, g) for g in orders]).to(device)
        active = torch.tensor([b in running for b in range(size)], device=device)
        loss_sum = torch.zeros(size, device=device)
        correct = torch.zeros(size, device=device, dtype=torch.long)
        for start in range(0, n_used, cfg.batch_size):
            idx = order[:, start:min(start + cfg.batch_size, n_used)]
            objective, losses, hits = members.forward(idx, active)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(objective).backward()
            scaler.step(optimizer)
            scaler.update()
            if members.per_batch:
                schedule.step()
            loss_sum += losses * idx.shape[1]
            correct += hits
        # Host syncs happen here, per epoch, never per step.
        train = [(loss / n_used, hit / n_used) for loss, hit in zip(loss_sum.tolist(), correct.tolist())]
        ended = list(running)  # the members whose epoch this was
        for b in ended:
            if not math.isfinite(train[b][0]):
                failures[b] = f"training loss became {train[b][0]} in epoch {epoch}"
                stop(b)
        val = members.validate() if running else []
        seconds = time.perf_counter() - started
        for b in running[:]:
            for mode in specs[b].modes:
                row = history_row(epoch, train[b], val[b][mode], seconds, lr)
                histories[b][mode].append(row)
                if row["val_loss"] < best_loss[b][mode]:
                    best_loss[b][mode], best_epoch[b][mode] = row["val_loss"], epoch
                    if mode in specs[b].restore:
                        best_state[b][mode] = members.snapshot(b)
            patience = specs[b].config.train.patience
            if patience and epoch - best_epoch[b][specs[b].modes[0]] >= patience:
                final[b] = members.snapshot(b)
                stop(b)
        if schedule and not members.per_batch and val:
            own = val[0][specs[0].modes[0]][0]
            schedule.step(own) if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau) else schedule.step()
        if checkpoint and running and epoch < cfg.epochs and time.monotonic() - last_save >= checkpoint.every_seconds:
            checkpoint.save({"training_id": identity, "format": CHECKPOINT_FORMAT, "epoch": epoch,
                             "members": layout,
                             "model": members.model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scaler": scaler.state_dict(), "schedule": schedule.state_dict() if schedule else {},
                             "rng": torch.get_rng_state(), "orders": [g.get_state() for g in orders],
                             **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
                             "histories": histories, "best_loss": best_loss, "best_epoch": best_epoch,
                             "best_state": best_state, "final": final, "failures": failures,
                             "running": running, "resumed": resumed})
            last_save = time.monotonic()
        for b in ended:
            if failures[b] is None:
                on_epoch(b, histories[b][specs[b].modes[0]][-1])
        if not running:
            break
    for b in running:  # trained to the last epoch
        final[b] = members.snapshot(b)
    return Fitted(members, histories, best_epoch, best_state, final, failures, resumed)
