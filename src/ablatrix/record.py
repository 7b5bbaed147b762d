"""Run records: the one place that builds them and says what a usable one holds.

A record is one JSON object per cell: which cell (grid, variant, axes, config, seed), how it ran
(environment, execution, attempts), and its outcome: `done` with history, best epoch, test
metrics and which weights it tested, or `failed` with the error. The weights themselves travel
beside a record, never in it, and go to the training's weights file (`store.put_weights`).
"""
from __future__ import annotations

import functools
import platform
import subprocess
import sys
import traceback
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from .config import SCHEMA, run_id_of
from .errors import AblatrixError

if TYPE_CHECKING:
    from .spec import Cell

Record = dict[str, Any]
REQUIRED = {"done": ("run_id", "config", "history", "best_epoch", "epochs_trained", "test", "wall_seconds"),
            "failed": ("run_id", "config", "error")}
OOM_HINT = ("the cell needs more GPU memory than was free: train fewer cells per GPU "
            "(--runs-per-gpu, --gpus-per-run) or use a smaller train.batch_size")


@dataclass(frozen=True)
class WeightsTested:
    """Which weights a run tested ("final" or "best-<eval mode>"), of which epoch, in which mode."""

    weights: str
    epoch: int
    eval_mode: str


@dataclass(frozen=True)
class ClassResult:
    index: int
    correct: int
    support: int
    accuracy: float | None  # None where the test set has no example of the class


@dataclass(frozen=True)
class Metrics:
    loss: float
    accuracy: float
    per_class: tuple[ClassResult, ...]
    confusion: tuple[tuple[int, ...], ...]  # rows: true class, columns: predicted


@dataclass(frozen=True)
class RunRecord:
    """A stored record as every reader sees it (`RunRecord.of`); `stored` is its JSON as written.

    Fields a record of its kind lacks are None (a failed run has no history or test; a run whose
    worker died on every attempt no environment); `tested` of a record written before records said
    so is what its config implies (`tested_of`)."""

    run_id: str
    status: str  # "done" | "failed"
    config: dict[str, Any]
    params: int | None
    wall_seconds: float | None
    stored: Record
    added_for: str = ""
    error: str = ""
    traceback: str = ""
    started_at: str | None = None
    history: tuple[dict[str, float], ...] = ()
    best_epoch: int | None = None
    epochs_trained: int | None = None
    tested: WeightsTested | None = None
    test: Metrics | None = None
    training_id: str | None = None
    device: str | None = None  # with device_name, torch and code_revision: where and with what it ran
    device_name: str | None = None
    torch: str | None = None
    code_revision: str | None = None

    @property
    def done(self) -> bool:
        return self.status == "done"

    @staticmethod
    def of(rec: Record) -> "RunRecord":
        """The typed record of a usable stored one (`record_problem` says which are)."""
        done = rec["status"] == "done"
        test = rec.get("test") if done else None
        return RunRecord(
            rec["run_id"], rec["status"], rec["config"], rec.get("params"), rec.get("wall_seconds"), rec,
            rec.get("added_for", ""), rec.get("error", ""), rec.get("traceback", ""), rec.get("started_at"),
            tuple(rec.get("history", ())), rec.get("best_epoch"), rec.get("epochs_trained"),
            WeightsTested(**tested_of(rec)) if done else None,
            Metrics(test["loss"], test["accuracy"],
                        tuple(ClassResult(e["class"], e["correct"], e["support"], e["accuracy"])
                              for e in test.get("per_class", ())),
                        tuple(map(tuple, test.get("confusion", ())))) if test else None,
            rec["training"]["id"] if "training" in rec else None, rec.get("device"), rec.get("device_name"),
            rec.get("versions", {}).get("torch"), rec.get("code_revision"))


def record_problem(record: Any, run_id: str) -> str | None:
    """Why `record`, stored as `<run_id>.json`, cannot be used; None if it can."""
    if not isinstance(record, dict):
        return "not a JSON object"
    status = record.get("status")
    if status not in REQUIRED:
        return f"status {status!r} is neither done nor failed"
    missing = [key for key in REQUIRED[status] if key not in record]
    if missing:
        return f"lacks {', '.join(missing)}"
    if record["run_id"] != run_id:
        return f"says run_id {record['run_id']!r}"
    return None


def migrated(record: Record) -> Record | None:
    """A record of an older schema under the current one (its run id recomputed: the same run
    may have a new name); None where its config cannot be resolved here (a plugin not imported)."""
    try:
        run_id = run_id_of(record["config"])
    except (AblatrixError, KeyError, TypeError):
        return None
    return {**record, "run_id": run_id, "schema": SCHEMA}


def tested_of(rec: Record) -> dict[str, Any]:
    """Which weights a done record tested, of which epoch, in which mode: its `tested`, or for a
    record written before records said so, what its config implies (the best epoch's weights with
    `restore_best`, else the last epoch's)."""
    if "tested" in rec:
        return rec["tested"]
    train = rec["config"]["train"]
    mode, restored = train.get("eval_mode", "eval"), train.get("restore_best", True)
    return {"weights": f"best-{mode}" if restored else "final",
            "epoch": rec["best_epoch"] if restored else rec["epochs_trained"], "eval_mode": mode}


def cell_record(cell: Cell, earlier: Sequence[str] = ()) -> Record:
    """The part of a record that says which cell it is, and how many attempts it took (`earlier`:
    the system failures, a dead worker or node, of the attempts before)."""
    return {"run_id": cell.run_id, "schema": SCHEMA, "grid": cell.grid, "variant": cell.variant,
            "axes": cell.axes, "dataset": cell.config.dataset, "seed": cell.config.seed,
            "config": cell.config.to_dict(), "params": cell.params, "attempts": len(earlier) + 1,
            **({"system_failures": list(earlier)} if earlier else {}),
            **({"added_for": cell.reason} if cell.reason else {})}


def started(cell: Cell, earlier: Sequence[str], env: dict[str, Any], execution: dict[str, Any],
            at: datetime) -> Record:
    """A cell's record as its training starts: the cell, the environment (`environment`, taken once
    for a unit's cells), how it is executed."""
    return {**cell_record(cell, earlier), **env, "execution": execution, "started_at": at.isoformat()}


def outcome(result: dict[str, Any] | BaseException) -> Record:
    """What a record says of its training's outcome: the result (`train.measure`), or the failure.
    Out of memory gets a hint, since retrying the same way fails again."""
    if not isinstance(result, BaseException):
        return {**result, "status": "done"}
    detail = "".join(traceback.format_exception(result))
    if isinstance(result, torch.cuda.OutOfMemoryError):
        return {"status": "failed", "error": f"OutOfMemoryError: {str(result).splitlines()[0]} ({OOM_HINT})",
                "traceback": detail}
    return {"status": "failed", "error": f"{type(result).__name__}: {result}", "traceback": detail}


def training(cells: Sequence[Cell], wall: float) -> dict[str, Any]:
    """What a record says of the training it measured: its id, every cell measured from it in this
    run (itself included), and the training's whole time (the record's `wall_seconds` is its share)."""
    return {"id": cells[0].config.training_id, "cells": [c.run_id for c in cells], "wall_seconds": wall}


def lost(cell: Cell, placement: dict[str, Any], earlier: Sequence[str], error: str, detail: str) -> Record:
    """The record of a cell whose worker died on every attempt: no environment or history to tell."""
    return {**cell_record(cell, earlier), "status": "failed", "execution": placement,
            "error": error, "traceback": detail, "wall_seconds": None}


@functools.cache
def _code_revision() -> str:
    return code_revision(Path(__file__).resolve().parent)


def code_revision(package: Path) -> str:
    """The git commit the package at `package` runs from, with -dirty if its own files differ from
    it (results, grids and notes elsewhere in the repository do not count: a run's record has
    its config), else the installed version."""
    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
    head = git("rev-parse", "--short=12", "HEAD")
    if head is not None and head.returncode == 0:
        changes = git("status", "--porcelain", "--untracked-files=no", "--", ".")
        dirty = changes is None or changes.returncode != 0 or bool(changes.stdout.strip())
        return f"git:{head.stdout.strip()}" + ("-dirty" if dirty else "")
    try:
        return f"ablatrix=={metadata.version('ablatrix')}"
    except metadata.PackageNotFoundError:  # run from a source tree that is neither installed nor git
        return "unknown"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, device and code revision, stored in every record."""
    versions = {"python": platform.python_version()}
    for package in ("ablatrix", "torch", "numpy", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {"versions": versions, "device": str(device), "device_name": name,
            "torch_threads": torch.get_num_threads(), "platform": sys.platform,
            "code_revision": _code_revision()}
