"""The resolved configuration of one run. Its hash is the run's identity.

Each field's allowed values sit beside it (metadata "check"/"allowed"); `spec.build_dataclass`
is the one place that reads them, for grid files and `--set` overrides alike.

Identity (record schema 2): the hash covers the dataset, the seed, the model's name and only those
training fields and model parameters whose value differs from its default. So a field added in a
later version, left at its default, keeps every stored run id, and a record written before the
field existed describes the same run. Changing a *default* would change what unset fields mean:
tests pin the defaults, and such a change needs a new schema and a migration. The content hash
of a dataset named by its files (`data`) is hashed only when there is one, for the same reason.

A run's *training* id (`RunConfig.training_id`) is its run id with the fields that only change how
the trained model is measured left at their defaults: cells that share it are trained once.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Callable

from .models import param_defaults

# The report's defaults for deciding effects (a grid's [report] sets its own): the confidence of
# its intervals, and the practical-equivalence margin in percentage points.
CONFIDENCE = 0.95
MARGIN = 0.5
SCHEMA = 2  # record format; 1 hashed the full resolved config (store.ResultStore migrates it)


def allowed(check: Callable[[Any], bool], text: str, unlike: str = "") -> dict[str, Any]:
    """A field's check and its allowed values in words; `unlike`: how its default differs from
    PyTorch's or from a plain training script's (the grid reference prints it)."""
    return {"check": check, "allowed": text, "unlike": unlike}


def unlike(text: str) -> dict[str, Any]:
    """The `unlike` note of a field that needs no check."""
    return {"unlike": text}


@dataclass(frozen=True)
class TrainConfig:
    # A name in train.OPTIMIZERS (adam, adamw, sgd, or one a plugin registered), or any torch.optim
    # optimiser by its class name (RMSprop, NAdam, Adadelta, ...; case does not matter).
    optimizer: str = "adam"
    lr: float = field(default=1e-3, metadata=allowed(lambda v: v > 0, "a number > 0"))
    momentum: float = field(default=0.9, metadata=allowed(lambda v: 0 <= v < 1, "a number in [0, 1)",
                                                          "torch.optim.SGD's default is 0; sgd only"))
    weight_decay: float = field(default=0.0, metadata=allowed(lambda v: v >= 0, "a number >= 0"))
    optimizer_args: dict = field(default_factory=dict)  # its other keyword arguments (lr is train.lr)
    batch_size: int = field(default=64, metadata=allowed(lambda v: v >= 2, "an integer >= 2"))
    epochs: int = field(default=30, metadata=allowed(lambda v: v >= 1, "an integer >= 1"))
    # Epochs without a new best validation loss before stopping; 0 trains all epochs.
    patience: int = field(default=5, metadata=allowed(lambda v: v >= 0, "an integer >= 0",
                                                      "a plain loop trains every epoch: set 0 for that"))
    # End with the weights of the best validation loss.
    restore_best: bool = field(default=True, metadata=unlike("a plain loop tests its last epoch's weights: set false"))
    val_fraction: float = field(default=0.1, metadata=allowed(
        lambda v: 0 < v <= 0.5, "a number in (0, 0.5]",
        "a plain script trains on the whole train split; this much of it is held out, stratified"))
    # Inputs standardised per channel with train statistics (false: as the dataset loads them, e.g.
    # MNIST in [0, 1] as torchvision's ToTensor() gives them, which the studies fed their models).
    standardize: bool = field(default=True, metadata=unlike(
        "torchvision's ToTensor() gives [0, 1] inputs: set false to feed them as loaded"))
    augment: str = "none"  # a name in data.AUGMENTATIONS, applied per training batch on the device
    sampler: str = "uniform"  # a name in train.SAMPLERS: "balanced" draws classes equally often
    class_weighted: bool = False  # weight the training loss by inverse class frequency
    # Mode of the model when validation and test metrics are computed. "train" (batch statistics in
    # BatchNorm, dropout active) is wrong for measuring a model; it exists to reproduce studies
    # that evaluated without model.eval(). "bn-recomputed" is eval mode after BatchNorm's statistics
    # are recomputed on the training inputs with dropout off: a diagnosis of dropout's variance shift.
    # A torch.optim.lr_scheduler class by name ("none": a constant rate), its keyword arguments,
    # and epochs of linear warm-up before it. Per-batch schedulers (OneCycleLR, CyclicLR) step every
    # batch and get their step counts from the grid.
    schedule: str = "none"
    schedule_args: dict = field(default_factory=dict)
    warmup_epochs: int = field(default=0, metadata=allowed(lambda v: v >= 0, "an integer >= 0"))
    eval_mode: str = field(default="eval", metadata=allowed(
        lambda v: v in ("eval", "train", "bn-recomputed"),
        '"eval", "train" (a reproduction aid) or "bn-recomputed" (a diagnosis)'))


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
    data: str = ""  # content hash of a dataset named by its files ("npz:...", "folder:..."); "" otherwise

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples -> lists, as stored

    @cached_property  # a report over thousands of runs asks for each id many times
    def run_id(self) -> str:
        return run_id_of(self.to_dict())

    @cached_property
    def training_id(self) -> str:
        """The id of the training this run measures: cells that differ only in how the trained
        model is measured (`MEASUREMENT_FIELDS`) share it, and are trained once."""
        return training_id_of(self.to_dict())


def _non_default(values: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The entries of `values` that are not equal (as stored in JSON) to their default."""
    stored = json.loads(json.dumps(defaults))
    return {k: v for k, v in values.items() if k not in stored or stored[k] != v}


# Fields that change how a trained model is measured, not how it trains: which weights are tested
# (restore_best) and the evaluation mode, unless training reads its validation loss.
MEASUREMENT_FIELDS = ("restore_best", "eval_mode")


def training_reads_validation(train: dict[str, Any]) -> bool:
    """Whether training itself depends on the validation loss (early stopping, ReduceLROnPlateau),
    and so on the mode it is measured in."""
    return bool(train.get("patience", TrainConfig.patience)) or train.get("schedule", "none").lower() == "reducelronplateau"


def training_id_of(config: dict[str, Any]) -> str:
    """The run id of `config` with its measurement fields at their defaults: the cells of one
    training share it."""
    train = config["train"]
    measured = [f for f in MEASUREMENT_FIELDS if f != "eval_mode" or not training_reads_validation(train)]
    defaults = asdict(TrainConfig())
    return run_id_of({**config, "train": {**train, **{f: defaults[f] for f in measured}}})


def run_id_of(config: dict[str, Any]) -> str:
    """The run id of a config as `RunConfig.to_dict` gives it (or a stored record holds it).

    Raises AblatrixError if the model is not registered (its defaults are unknown).
    """
    model = config["model"]
    identity = {"dataset": config["dataset"], "seed": config["seed"],
                **({"data": config["data"]} if config.get("data") else {}),
                "model": {"name": model["name"], "params": _non_default(model["params"],
                                                                        param_defaults(model["name"]))},
                "train": _non_default(config["train"], asdict(TrainConfig()))}
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]

