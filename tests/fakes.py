"""A trainer for executor and claim tests (`RunOptions(trainer=fakes.instant)`): it answers in
milliseconds with results shaped as `train.train_unit`'s, so scheduling, claims, retries and the
executors are tested without training. It is a module-level function, so worker processes import
it by name (pytest puts tests/ on their sys.path), and the tests of the ray executor send it to
Ray's workers by value (`ray.cloudpickle.register_pickle_by_value`).
"""
from __future__ import annotations

import hashlib
from typing import Any, Sequence

import torch

from ablatrix.config import RunConfig
from ablatrix.data import Splits
from ablatrix.evaluation import Execution, classification_metrics
from ablatrix.loop import Checkpoint, OnEpoch

def accuracy_of(config: RunConfig) -> float:
    """A test accuracy that depends only on the training and how it is measured (as a real one does)."""
    digest = hashlib.sha256(f"{config.training_id} {config.train.eval_mode} {config.train.restore_best}".encode())
    return 0.5 + int(digest.hexdigest()[:6], 16) % 400 / 1000


def instant(configs: Sequence[RunConfig], data: Splits, device: torch.device, execution: Execution,
            on_epoch: OnEpoch, checkpoint: Checkpoint | None) -> list[Any]:
    """Per config a result and its weights, after calling `on_epoch` for every epoch of every member."""
    shared = len({c.training_id for c in configs}) == 1
    for epoch in range(1, configs[0].train.epochs + 1):
        for b in range(1 if shared else len(configs)):
            on_epoch(b, {"epoch": epoch, "val_accuracy": 0.5})
    results = []
    for config in configs:
        accuracy, y = accuracy_of(config), data.test_y
        wrong = round((1 - accuracy) * len(y))
        pred = torch.where(torch.arange(len(y)) < wrong, (y + 1) % data.num_classes, y)
        epochs = config.train.epochs
        history = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": accuracy, "val_loss": 1 / e,
                    "val_accuracy": accuracy, "seconds": 0.0} for e in range(1, epochs + 1)]
        tested = {"weights": "final", "epoch": epochs, "eval_mode": config.train.eval_mode}
        results.append(({"params": 1, "history": history, "best_epoch": epochs, "epochs_trained": epochs,
                         "tested": tested, "test": classification_metrics(1.0, float((pred == y).float().mean()),
                                                                          pred, y, data.num_classes)},
                        {"final": {"accuracy": torch.tensor([accuracy])}}))
    return results
