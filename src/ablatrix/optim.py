"""Optimisers and learning-rate schedules by name: the registry's own, or any torch.optim class,
checked against the grid's arguments before anything trains."""
from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from .config import TrainConfig
from .errors import AblatrixError
from .registry import Registry

# Optimisers by name: the registry's own (a plugin adds one with `register_optimizer`), else any
# torch.optim class. The three built-in names keep their train fields (and so their run ids).
OPTIMIZERS: Registry[Callable[[Iterable[nn.Parameter], TrainConfig], torch.optim.Optimizer]] = \
    Registry("optimizer")
BUILT_IN = {"adam": (torch.optim.Adam, ("lr", "weight_decay")), "adamw": (torch.optim.AdamW, ("lr", "weight_decay")),
            "sgd": (torch.optim.SGD, ("lr", "momentum", "weight_decay"))}  # class, arguments from train fields
for _name, (_cls, _fields) in BUILT_IN.items():
    OPTIMIZERS.register(_name)(lambda p, c, cls=_cls, fields=_fields: cls(
        p, **{k: getattr(c, k) for k in fields}, **c.optimizer_args))


def _classes(module: Any, base: type | tuple[type, ...]) -> dict[str, type]:
    """The public subclasses of `base` in `module`, by lower-case name."""
    return {name.lower(): cls for name, cls in vars(module).items()
            if isinstance(cls, type) and issubclass(cls, base) and not name.startswith("_") and cls not in
            (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)}


TORCH_OPTIMIZERS = _classes(torch.optim, torch.optim.Optimizer)
TORCH_SCHEDULES = _classes(torch.optim.lr_scheduler, (torch.optim.lr_scheduler.LRScheduler,
                                                      torch.optim.lr_scheduler.ReduceLROnPlateau))
# Schedules that step every batch, and the arguments the grid sets for them (from epochs and batches).
PER_BATCH = ("onecyclelr", "cycliclr")
FROM_GRID = {"onecyclelr": ("total_steps", "epochs", "steps_per_epoch", "max_lr"), "cosineannealinglr": ("T_max",)}
NOT_SCHEDULES = ("sequentiallr", "chainedscheduler", "lambdalr", "multiplicativelr")  # need functions or schedulers


def register_optimizer(name: str) -> Callable:
    """Register `make(params, train_config) -> torch.optim.Optimizer` under `name` (for the grid's
    `train.optimizer`); it gets the grid's `train.optimizer_args` in `train_config`."""
    return OPTIMIZERS.register(name)


def _check_args(what: str, cls: type, args: dict[str, Any], taken: Sequence[str]) -> None:
    """An unknown or grid-set keyword argument of `cls`, or a missing required one, is one line
    listing the valid ones."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, params/optimizer
    named = [p for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    missing = [p.name for p in named if p.default is p.empty and p.name not in (*args, *taken)]
    if missing:
        raise AblatrixError(f"{what}: {cls.__name__} needs {', '.join(missing)}")
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    valid = [p.name for p in named if p.name not in taken]
    for key in args:
        if key in taken:
            raise AblatrixError(f"{what}: {key} comes from the grid (train.lr, train.momentum, "
                                "train.weight_decay, or the epochs and batches)")
        if key not in valid:
            raise AblatrixError(f"{what}: {cls.__name__} takes no argument {key!r}; it takes: {', '.join(valid)}")


def check_training(cfg: TrainConfig) -> None:
    """The optimiser and schedule exist and take the arguments given, before anything trains."""
    name = cfg.optimizer.lower()
    if cfg.optimizer in BUILT_IN:
        cls, taken = BUILT_IN[cfg.optimizer]
    elif cfg.optimizer in OPTIMIZERS:
        cls, taken = None, ()  # a plugin's own optimiser reads optimizer_args itself
    elif name in TORCH_OPTIMIZERS:
        cls, taken = TORCH_OPTIMIZERS[name], ("lr", "weight_decay")
    else:
        raise AblatrixError(f"train.optimizer = {cfg.optimizer!r}; choose from: {', '.join(sorted(OPTIMIZERS))}, "
                            f"or a torch.optim optimiser: {', '.join(sorted(c.__name__ for c in TORCH_OPTIMIZERS.values()))}")
    if cls is not None:
        _check_args(f"train.optimizer_args of {cfg.optimizer}", cls, cfg.optimizer_args, taken)
    schedule = cfg.schedule.lower()
    if cfg.warmup_epochs >= cfg.epochs:
        raise AblatrixError(f"train.warmup_epochs = {cfg.warmup_epochs} leaves no epoch of the {cfg.epochs} to train at train.lr")
    if schedule == "none":
        if cfg.schedule_args:
            raise AblatrixError("train.schedule_args needs a train.schedule")
        return
    if schedule not in TORCH_SCHEDULES or schedule in NOT_SCHEDULES:
        raise AblatrixError(f"train.schedule = {cfg.schedule!r}; choose from: none, " + ", ".join(sorted(
            c.__name__ for n, c in TORCH_SCHEDULES.items() if n not in NOT_SCHEDULES)))
    _check_args(f"train.schedule_args of {cfg.schedule}", TORCH_SCHEDULES[schedule], cfg.schedule_args,
                FROM_GRID.get(schedule, ()))
    if schedule == "reducelronplateau" and cfg.warmup_epochs:
        raise AblatrixError("train.warmup_epochs cannot precede ReduceLROnPlateau (torch chains it with no other)")


def build_optimizer(parameters: Iterable[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer in OPTIMIZERS:
        return OPTIMIZERS.lookup(cfg.optimizer)(parameters, cfg)
    cls = TORCH_OPTIMIZERS[cfg.optimizer.lower()]
    accepts = inspect.signature(cls.__init__).parameters
    decay = {"weight_decay": cfg.weight_decay} if "weight_decay" in accepts else {}
    return cls(parameters, lr=cfg.lr, **decay, **cfg.optimizer_args)


def build_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> tuple[Any, bool]:
    """The run's schedule (None for a constant rate) and whether it steps per batch. Warm-up is
    linear from lr / (warmup + 1) to lr over `warmup_epochs`, then the schedule from its start
    (with schedule "none", the constant rate)."""
    schedule = cfg.schedule.lower()
    if schedule == "none" and not cfg.warmup_epochs:
        return None, False
    per_batch = schedule in PER_BATCH
    steps = steps_per_epoch if per_batch else 1
    warmup, after = cfg.warmup_epochs * steps, (cfg.epochs - cfg.warmup_epochs) * steps
    ramp = torch.optim.lr_scheduler.LinearLR(optimizer, 1 / (cfg.warmup_epochs + 1), 1.0, total_iters=warmup)
    if schedule == "none":
        return ramp, False
    grid = {"onecyclelr": {"max_lr": cfg.lr, "total_steps": after},  # its peak is train.lr
            "cosineannealinglr": {"T_max": after}}.get(schedule, {})
    main = TORCH_SCHEDULES[schedule](optimizer, **cfg.schedule_args, **grid)
    if not warmup:
        return main, per_batch
    return torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup]), per_batch
