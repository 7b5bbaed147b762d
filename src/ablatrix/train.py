"""One training run: tensors already on the device, batches by permutation and slicing.

Losses and correct counts accumulate on the device and are read once per epoch, so the loop
never waits on the host between steps.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch
from torch import nn

from .config import RunConfig, TrainConfig
from .data import AUGMENTATIONS, Splits
from .errors import AblatrixError
from .models import create_model
from .registry import Registry

OPTIMIZERS: Registry[Callable[[Iterable[nn.Parameter], TrainConfig], torch.optim.Optimizer]] = \
    Registry("optimizer")
OPTIMIZERS.register("adam")(lambda p, c: torch.optim.Adam(p, lr=c.lr, weight_decay=c.weight_decay))
OPTIMIZERS.register("adamw")(lambda p, c: torch.optim.AdamW(p, lr=c.lr, weight_decay=c.weight_decay))
OPTIMIZERS.register("sgd")(lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum,
                                                         weight_decay=c.weight_decay))
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


def fit(config: RunConfig, data: Splits, device: torch.device, execution: Execution = PLAIN,
        on_epoch: Callable[[dict[str, float]], None] = lambda row: None
        ) -> tuple[nn.Module, list[dict[str, float]], int]:
    """Train with early stopping on validation loss; return the model, its history and best epoch."""
    cfg = config.train
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed batch shapes: pick the fastest conv kernels once
    torch.manual_seed(config.seed)  # initialisation, dropout masks, augmentation
    batch_order = torch.Generator().manual_seed(config.seed)
    model = create_model(config.model.name, tuple(data.train_x.shape[1:]), data.num_classes,
                         **config.model.params).to(device)
    if execution.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = OPTIMIZERS.lookup(cfg.optimizer)(model.parameters(), cfg)
    step_model = torch.compile(model) if execution.compile else model
    scaler = torch.amp.GradScaler(device.type, enabled=execution.amp == "fp16")
    augment, sample = AUGMENTATIONS.lookup(cfg.augment), SAMPLERS.lookup(cfg.sampler)
    weight = loss_weight(cfg, data, device)
    n_used = usable_samples(len(data.train_x), cfg.batch_size)

    history: list[dict[str, float]] = []
    best_loss, best_epoch, best_state = math.inf, 0, None
    for epoch in range(1, cfg.epochs + 1):
        started = time.perf_counter()
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
            loss_sum += loss.detach() * len(idx)
            correct += (logits.argmax(1) == y).sum()
        train_loss = loss_sum.item() / n_used  # host syncs happen here, per epoch, never per step
        if not math.isfinite(train_loss):
            raise TrainingDiverged(f"training loss became {train_loss} in epoch {epoch}")
        val_loss, val_acc, _ = evaluate(step_model, data.val_x, data.val_y, execution, cfg.eval_mode,
                                        data.train_x)
        row = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": correct.item() / n_used,
               "val_loss": val_loss, "val_accuracy": val_acc,
               "seconds": time.perf_counter() - started}
        history.append(row)
        on_epoch(row)
        if val_loss < best_loss:
            best_loss, best_epoch = val_loss, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif cfg.patience and epoch - best_epoch >= cfg.patience:
            break
    if cfg.restore_best and best_state is not None:
        model.load_state_dict(best_state)
    return step_model, history, best_epoch


def train_run(config: RunConfig, data: Splits, device: torch.device, execution: Execution = PLAIN,
              on_epoch: Callable[[dict[str, float]], None] = lambda row: None) -> dict[str, Any]:
    """Train one cell; return its history, best epoch and test metrics (JSON-ready)."""
    model, history, best_epoch = fit(config, data, device, execution, on_epoch)
    test_loss, test_acc, pred = evaluate(model, data.test_x, data.test_y, execution, config.train.eval_mode,
                                         data.train_x)
    return {"params": sum(p.numel() for p in model.parameters()),
            "history": history, "best_epoch": best_epoch, "epochs_trained": len(history),
            "test": classification_metrics(test_loss, test_acc, pred, data.test_y, data.num_classes)}
