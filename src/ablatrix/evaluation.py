"""Evaluation: how a run uses its device (`Execution`), loss and accuracy in large batches
without autograd, the evaluation modes, and a test set's metrics."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

# Evaluation batch per device type. A GPU wants large batches (fewer launches); on CPU a batch of
# 2048 has activations of 100+ MB per layer that miss the caches, and evaluating the 1.1M CNN on
# 1,000 samples took twice as long as in batches of 256.
EVAL_BATCH = {"cuda": 2048, "cpu": 256}


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


def usable_samples(n: int, batch_size: int) -> int:
    """BatchNorm cannot normalise a batch of one sample: drop such a trailing batch."""
    return n - 1 if n % batch_size == 1 else n
