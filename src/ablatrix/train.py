"""One training run: tensors already on the device, batches by permutation and slicing.

Losses and correct counts accumulate on the device and are read once per epoch, so the loop
never waits on the host between steps.
"""
from __future__ import annotations

import copy
import inspect
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from .config import RunConfig, TrainConfig, training_reads_validation
from .data import AUGMENTATIONS, Splits
from .errors import AblatrixError
from .models import create_model
from .registry import Registry
from .store import atomic_torch_save

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


# Evaluation batch per device type. A GPU wants large batches (fewer launches); on CPU a batch of
# 2048 has activations of 100+ MB per layer that miss the caches, and evaluating the 1.1M CNN on
# 1,000 samples took twice as long as in batches of 256.
EVAL_BATCH = {"cuda": 2048, "cpu": 256}


def class_frequencies(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.bincount(y, minlength=num_classes).float().clamp_min(1)


# Samplers: (train labels, num classes, generator) -> the epoch's order of training indices.
SAMPLERS: Registry[Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]] = Registry("sampler")
SAMPLERS.register("uniform")(lambda y, c, g: torch.randperm(len(y), generator=g))
# Draws len(y) indices with replacement, each class equally likely: rare classes repeat.
SAMPLERS.register("balanced")(lambda y, c, g: torch.multinomial(
    (1 / class_frequencies(y, c))[y].cpu(), len(y), replacement=True, generator=g))


class TrainingDiverged(AblatrixError):
    """The training loss stopped being a finite number."""


@dataclass(frozen=True)
class Execution:
    """How a run uses its device. Not part of the run's identity; stored in its record.

    On CUDA the defaults are channels_last and autocast to bf16 (fp16 with a gradient scaler where
    bf16 is unsupported): small CNNs are bound by memory traffic and kernel launches there, not
    by arithmetic precision. On CPU everything stays fp32 and contiguous.
    """

    amp: str | None = None  # None, "bf16" or "fp16"
    channels_last: bool = False
    compile: bool = False

    @staticmethod
    def default_for(device: torch.device, compile: bool = False) -> "Execution":
        if device.type != "cuda":
            return Execution(compile=compile)
        return Execution("bf16" if torch.cuda.is_bf16_supported() else "fp16", True, compile)

    def autocast(self, device: torch.device) -> torch.autocast:
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device.type, dtype=dtype, enabled=self.amp is not None)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


PLAIN = Execution()


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, execution: Execution = PLAIN,
             mode: str = "eval", train_x: torch.Tensor | None = None) -> tuple[float, float, torch.Tensor]:
    """Mean loss, accuracy and predicted labels, in large batches without autograd.

    mode "train" evaluates a copy in train mode (batch statistics, dropout on), so the model's own
    BatchNorm running statistics are left as training made them, and draws its dropout masks from
    a forked random state, so training goes on with the masks it would have had.
    mode "bn-recomputed" evaluates a copy in eval mode whose BatchNorm statistics are recomputed
    over `train_x` with dropout off (`recompute_batchnorm`).
    """
    if mode == "train":
        cuda = [x.device.index or 0] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            return _evaluate(copy.deepcopy(model).train(), x, y, execution)
    if mode == "bn-recomputed":
        if train_x is None:
            raise ValueError('eval mode "bn-recomputed" needs the training inputs')
        return _evaluate(recompute_batchnorm(model, train_x, execution), x, y, execution)
    model.eval()
    return _evaluate(model, x, y, execution)


def recompute_batchnorm(model: nn.Module, x: torch.Tensor, execution: Execution = PLAIN) -> nn.Module:
    """A copy of `model` in eval mode whose BatchNorm running statistics are recomputed over `x`
    with dropout off: the average of the batch means and variances of evaluation batches.

    Training gathers them with dropout on; dropout keeps a unit's mean but not its variance, so at
    evaluation (dropout off) a BatchNorm placed after dropout normalises with statistics its inputs
    no longer have ("variance shift", Li et al., CVPR 2019). Comparing this mode with "eval" on
    the same weights measures how much of a model's test error that mismatch causes.
    """
    model = copy.deepcopy(model).eval()
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches, not an exponential one
        norm.train()
    batch = EVAL_BATCH.get(x.device.type, EVAL_BATCH["cpu"])
    n = usable_samples(len(x), batch)
    with torch.no_grad(), execution.autocast(x.device):
        for start in range(0, n, batch):
            model(execution.layout(x[start:min(start + batch, n)]))
    return model.eval()


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, execution: Execution
              ) -> tuple[float, float, torch.Tensor]:
    loss = torch.zeros((), device=x.device)
    preds = []
    with torch.inference_mode(), execution.autocast(x.device):
        batch = EVAL_BATCH.get(x.device.type, EVAL_BATCH["cpu"])
        for start in range(0, len(x), batch):
            logits = model(execution.layout(x[start:start + batch])).float()
            loss += nn.functional.cross_entropy(logits, y[start:start + batch], reduction="sum")
            preds.append(logits.argmax(1))
    pred = torch.cat(preds)
    return loss.item() / len(y), (pred == y).float().mean().item(), pred


def classification_metrics(loss: float, accuracy: float, pred: torch.Tensor, y: torch.Tensor,
                 num_classes: int) -> dict[str, Any]:
    confusion = torch.bincount(y * num_classes + pred, minlength=num_classes ** 2)
    confusion = confusion.view(num_classes, num_classes).cpu()
    support = confusion.sum(1)
    correct = confusion.diag()
    return {"loss": loss, "accuracy": accuracy,
            "per_class": [{"class": c, "correct": int(correct[c]), "support": int(support[c]),
                           "accuracy": float(correct[c] / support[c]) if support[c] else None}
                          for c in range(num_classes)],
            "confusion": confusion.tolist()}


def loss_weight(cfg: TrainConfig, data: Splits, device: torch.device) -> torch.Tensor | None:
    """With `class_weighted`, inverse class frequency, scaled so a balanced set gets weight 1 everywhere."""
    if not cfg.class_weighted:
        return None
    counts = class_frequencies(data.train_y, data.num_classes)
    return (counts.sum() / (data.num_classes * counts)).to(device)


def usable_samples(n: int, batch_size: int) -> int:
    """BatchNorm cannot normalise a batch of one sample: drop such a trailing batch."""
    return n - 1 if n % batch_size == 1 else n


@dataclass
class Fitted:
    """One training and what it kept for measuring: per evaluation mode, the validation history
    and the best epoch (with its weights where a measurement restores them)."""

    model: nn.Module  # holding the final weights
    step_model: nn.Module  # what trained and evaluates: `model`, or its compiled form (`Execution.compile`)
    final: dict[str, torch.Tensor]
    history: dict[str, list[dict[str, float]]]  # by mode: shared training columns, that mode's val
    best_epoch: dict[str, int]
    best_state: dict[str, dict[str, torch.Tensor]]
    resumed: list[int]  # epochs after which a stopped training was resumed from its checkpoint

    def weights(self, cfg: TrainConfig) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """What a measurement with `cfg` tests (`tested`) and those weights."""
        mode = cfg.eval_mode
        restored = cfg.restore_best and mode in self.best_state
        return (tested(cfg, self.best_epoch[mode], len(self.history[mode]), restored),
                self.best_state[mode] if restored else self.final)


def tested(cfg: TrainConfig, best_epoch: int, epochs_trained: int, restored: bool) -> dict[str, Any]:
    """A record's `tested`: the weights measured ("best-<eval mode>", restored from the best epoch,
    or "final"), their epoch and the evaluation mode (the name the store files them under)."""
    return {"weights": f"best-{cfg.eval_mode}" if restored else "final",
            "epoch": best_epoch if restored else epochs_trained, "eval_mode": cfg.eval_mode}


def copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the model's weights and buffers that training will not change."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


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

    def load(self, training_id: str) -> dict[str, Any] | None:
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # none yet; or unreadable (a power cut mid-write, a foreign file): start afresh
            return None
        return state if state.get("training_id") == training_id else None

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


def fit_measured(config: RunConfig, data: Splits, device: torch.device, execution: Execution = PLAIN,
                 on_epoch: Callable[[dict[str, float]], None] = lambda row: None,
                 modes: Sequence[str] = (), restore: Sequence[str] = (),
                 checkpoint: Checkpoint | None = None) -> Fitted:
    """Train `config` once, validating after each epoch in its own eval mode and in `modes`.

    Early stopping and ReduceLROnPlateau read the config's own mode; other modes are allowed only
    without them, so they see the very training the config alone would. `restore` names the modes
    whose best weights are kept. Evaluating never touches the training's random state or weights
    (`evaluate` works on copies and forks the generator), so the training is that of a plain run.
    With a `checkpoint`, a training that stopped part-way continues from its last saved epoch.
    """
    cfg = config.train
    modes = list(dict.fromkeys((cfg.eval_mode, *modes)))
    if len(modes) > 1 and training_reads_validation(asdict(cfg)):
        raise ValueError("several evaluation modes share a training only if training does not read validation")
    restore = set(restore) | ({cfg.eval_mode} if cfg.restore_best else set())
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed batch shapes: pick the fastest conv kernels once
    torch.manual_seed(config.seed)  # initialisation, dropout masks, augmentation
    batch_order = torch.Generator().manual_seed(config.seed)
    model = create_model(config.model.name, tuple(data.train_x.shape[1:]), data.num_classes,
                         **config.model.params).to(device)
    if execution.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model.parameters(), cfg)
    step_model = torch.compile(model) if execution.compile else model
    scaler = torch.amp.GradScaler(device.type, enabled=execution.amp == "fp16")
    augment, sample = AUGMENTATIONS.lookup(cfg.augment), SAMPLERS.lookup(cfg.sampler)
    weight = loss_weight(cfg, data, device)
    n_used = usable_samples(len(data.train_x), cfg.batch_size)
    schedule, per_batch = build_schedule(optimizer, cfg, math.ceil(n_used / cfg.batch_size))

    history: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    best_loss, best_epoch = dict.fromkeys(modes, math.inf), dict.fromkeys(modes, 0)
    best_state: dict[str, dict[str, torch.Tensor]] = {}
    resumed: list[int] = []  # the epochs this training was resumed after
    state = checkpoint.load(config.training_id) if checkpoint else None
    if state is not None and (state["modes"], state["restore"]) == (modes, sorted(restore)):
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        if schedule:
            schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"])
        if device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        batch_order.set_state(state["batch_order"])
        history, best_loss, best_epoch, best_state = (state[k] for k in ("history", "best_loss", "best_epoch", "best_state"))
        resumed = [*state["resumed"], state["epoch"]]
    last_save = time.monotonic()
    for epoch in range(len(history[cfg.eval_mode]) + 1, cfg.epochs + 1):
        started = time.perf_counter()
        lr = optimizer.param_groups[0]["lr"]  # the rate this epoch starts with
        model.train()
        order = sample(data.train_y, data.num_classes, batch_order).to(device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for start in range(0, n_used, cfg.batch_size):
            idx = order[start:min(start + cfg.batch_size, n_used)]
            x, y = execution.layout(augment(data.train_x[idx])), data.train_y[idx]
            with execution.autocast(device):
                logits = step_model(x).float()
                loss = nn.functional.cross_entropy(logits, y, weight=weight)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if per_batch:
                schedule.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == y).sum()
        train_loss = loss_sum.item() / n_used  # host syncs happen here, per epoch, never per step
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"training loss became {train_loss} in epoch {epoch}")
        val = {mode: evaluate(step_model, data.val_x, data.val_y, execution, mode, data.train_x)[:2]
               for mode in modes}
        seconds = time.perf_counter() - started
        for mode, (val_loss, val_acc) in val.items():
            row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": correct.item() / n_used,
                   "val_loss": val_loss, "val_accuracy": val_acc, "seconds": seconds, **({"lr": lr} if schedule else {})}
            history[mode].append(row)
            if val_loss < best_loss[mode]:
                best_loss[mode], best_epoch[mode] = val_loss, epoch
                if mode in restore:
                    best_state[mode] = copy_state(model)
        own_loss = val[cfg.eval_mode][0]
        if schedule and not per_batch:
            schedule.step(own_loss) if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau) else schedule.step()
        if checkpoint and epoch < cfg.epochs and time.monotonic() - last_save >= checkpoint.every_seconds:
            checkpoint.save({"training_id": config.training_id, "epoch": epoch, "modes": modes,
                             "restore": sorted(restore), "model": model.state_dict(),
                             "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                             "schedule": schedule.state_dict() if schedule else {},
                             "rng": torch.get_rng_state(), "batch_order": batch_order.get_state(),
                             **({"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}),
                             "history": history, "best_loss": best_loss, "best_epoch": best_epoch,
                             "best_state": best_state, "resumed": resumed})
            last_save = time.monotonic()
        on_epoch(history[cfg.eval_mode][-1])
        if cfg.patience and epoch - best_epoch[cfg.eval_mode] >= cfg.patience:
            break
    return Fitted(model, step_model, copy_state(model), history, best_epoch, best_state, resumed)


def fit(config: RunConfig, data: Splits, device: torch.device, execution: Execution = PLAIN,
        on_epoch: Callable[[dict[str, float]], None] = lambda row: None
        ) -> tuple[nn.Module, list[dict[str, float]], int]:
    """Train with early stopping on validation loss; return the model (with the weights its config
    tests), its history and best epoch."""
    fitted = fit_measured(config, data, device, execution, on_epoch)
    fitted.model.load_state_dict(fitted.weights(config.train)[1])
    mode = config.train.eval_mode
    return fitted.step_model, fitted.history[mode], fitted.best_epoch[mode]


def train_cells(configs: Sequence[RunConfig], data: Splits, device: torch.device, execution: Execution = PLAIN,
                on_epoch: Callable[[dict[str, float]], None] = lambda row: None, checkpoint: Checkpoint | None = None
                ) -> tuple[list[dict[str, Any]], dict[str, dict[str, torch.Tensor]]]:
    """Train once for configs that share a training id (`RunConfig.training_id`: they differ only
    in how the trained model is measured) and measure each its own way.

    Returns one result per config (history, best epoch, test metrics, and `tested`: which weights
    of which epoch it measured, in which mode) and the weights measured, by name ("final",
    "best-<mode>"), for the store.
    """
    if len({c.training_id for c in configs}) != 1:
        raise ValueError("train_cells takes configs of one training")
    first = configs[0]
    fitted = fit_measured(first, data, device, execution, on_epoch, [c.train.eval_mode for c in configs],
                          [c.train.eval_mode for c in configs if c.train.restore_best], checkpoint)
    results, weights = [], {}
    for config in configs:
        mode = config.train.eval_mode
        measured, state = fitted.weights(config.train)
        weights[measured["weights"]] = state
        fitted.model.load_state_dict(state)
        test_loss, test_acc, pred = evaluate(fitted.step_model, data.test_x, data.test_y, execution, mode, data.train_x)
        history = fitted.history[mode]
        results.append({"params": sum(p.numel() for p in fitted.model.parameters()),
                        "history": history, "best_epoch": fitted.best_epoch[mode], "epochs_trained": len(history),
                        "tested": measured,
                        **({"resumed_after_epochs": fitted.resumed} if fitted.resumed else {}),
                        "test": classification_metrics(test_loss, test_acc, pred, data.test_y, data.num_classes)})
    return results, weights


def train_run(config: RunConfig, data: Splits, device: torch.device, execution: Execution = PLAIN,
              on_epoch: Callable[[dict[str, float]], None] = lambda row: None) -> dict[str, Any]:
    """Train one cell; return its history, best epoch and test metrics (JSON-ready)."""
    return train_cells([config], data, device, execution, on_epoch)[0][0]
