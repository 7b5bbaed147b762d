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


def started(cell: Cell, earlier: Sequence[str], device: torch.device, execution: dict[str, Any],
            at: datetime) -> Record:
    """A cell's record as its training starts: the cell, the environment, how it is executed."""
    return {**cell_record(cell, earlier), **environment(device), "execution": execution, "started_at": at.isoformat()}


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
