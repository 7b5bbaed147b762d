"""The resolved configuration of one run. Its hash is the run's identity.

Each field's allowed values sit beside it (metadata "check"/"allowed"); `spec.build_dataclass`
is the one place that reads them, for grid files and `--set` overrides alike.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Callable


def allowed(check: Callable[[Any], bool], text: str) -> dict[str, Any]:
    return {"check": check, "allowed": text}


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adam"  # a name in train.OPTIMIZERS
    lr: float = field(default=1e-3, metadata=allowed(lambda v: v > 0, "a number > 0"))
    momentum: float = field(default=0.9, metadata=allowed(lambda v: 0 <= v < 1, "a number in [0, 1)"))
    weight_decay: float = field(default=0.0, metadata=allowed(lambda v: v >= 0, "a number >= 0"))
    batch_size: int = field(default=64, metadata=allowed(lambda v: v >= 2, "an integer >= 2"))
    epochs: int = field(default=30, metadata=allowed(lambda v: v >= 1, "an integer >= 1"))
    # Epochs without a new best validation loss before stopping; 0 trains all epochs.
    patience: int = field(default=5, metadata=allowed(lambda v: v >= 0, "an integer >= 0"))
    restore_best: bool = True  # end with the weights of the best validation loss
    val_fraction: float = field(default=0.1,
                                metadata=allowed(lambda v: 0 < v <= 0.5, "a number in (0, 0.5]"))
    augment: str = "none"  # a name in data.AUGMENTATIONS, applied per training batch on the device
    sampler: str = "uniform"  # a name in train.SAMPLERS: "balanced" draws classes equally often
    class_weighted: bool = False  # weight the training loss by inverse class frequency


@dataclass(frozen=True)
class ModelConfig:
    name: str
    params: dict[str, Any]  # every keyword parameter of the constructor, defaults filled in


@dataclass(frozen=True)
class RunConfig:
    dataset: str
    seed: int
    model: ModelConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples -> lists, as stored

    @property
    def run_id(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]
