"""Stored runs into the tools researchers already browse: TensorBoard's HParams view and MLflow.

Exports read records only (partial grids export what is stored) and never train. Both are safe
to repeat: a TensorBoard run folder is rewritten, and an MLflow run is found by its
`ablatrix.run_id` tag and left alone when the record is unchanged.
"""
from __future__ import annotations

import hashlib
import json
import socket
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from urllib.parse import urlparse

from .data import DATASETS
from .errors import AblatrixError
from .registry import Registry
from .record import RunRecord
from .spec import Cell, Grid
from .store import ResultStore

EPOCH_METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


@dataclass(frozen=True)
class Exported:
    """What one export did, for the CLI's one-line summary."""

    written: int  # runs created or rewritten
    unchanged: int  # already exported from the same record (MLflow)
    skipped: int  # stored records the target cannot show (failed runs, for TensorBoard)
    where: str


def stored_runs(grid: Grid, results: Path) -> Iterator[tuple[Cell, RunRecord]]:
    """Each cell of `grid` that has a record, with that record; pending cells are left out."""
    records = ResultStore(results, grid.name).records()
    for cell in grid.stored_cells(records):
        if cell.run_id in records:
            yield cell, RunRecord.of(records[cell.run_id])


def hparam_value(value: Any) -> float | str:
    """TensorBoard takes numbers and strings: numbers as floats, the rest as compact JSON."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def run_name(cell: Cell) -> str:
    """grid/dataset/variant/axis=value,.../seed=N: a path TensorBoard shows as the run's name."""
    settings = ",".join(f"{k}={hparam_value(v)}" for k, v in cell.axes.items()).replace("/", "|")
    return "/".join(p for p in (cell.grid, cell.config.dataset, cell.variant, settings,
                                f"seed={cell.config.seed}") if p)


def _hparams(cell: Cell) -> dict[str, float | str]:
    return {"variant": cell.variant, "dataset": cell.config.dataset, "seed": float(cell.config.seed),
            **{k: hparam_value(v) for k, v in cell.axes.items()}}


def _domains(cells: Sequence[Cell]) -> dict[str, list[float | str]]:
    """Each hyperparameter's values over the grid (HParams offers them as filters), one type each:
    an axis that mixes numbers and other values (e.g. null and 0.5) is shown as strings."""
    domains: dict[str, list[float | str]] = {}
    for cell in cells:
        for key, value in _hparams(cell).items():
            if value not in domains.setdefault(key, []):
                domains[key].append(value)
    return {k: v if len({type(x) for x in v}) == 1 else [str(x) for x in v] for k, v in domains.items()}


def to_tensorboard(grids: Sequence[Grid], results: Path, target: str) -> Exported:
    """One TensorBoard run per finished cell: per-epoch curves, and its HParams session."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise AblatrixError("TensorBoard export needs the tensorboard package: "
                            "pip install 'ablatrix[tensorboard]'") from None
    written = skipped = 0
    for grid in grids:
        runs = list(stored_runs(grid, results))
        domains = _domains(grid.stored_cells({c.run_id for c, _ in runs}))
        for cell, record in runs:
            if not record.done:
                skipped += 1
                continue
            folder = Path(target) / run_name(cell)
            folder.mkdir(parents=True, exist_ok=True)
            for old in folder.glob("events.out.tfevents.*"):  # a re-export replaces, never appends
                old.unlink()
            with SummaryWriter(log_dir=str(folder)) as writer:
                for epoch in record.history:
                    for key in EPOCH_METRICS:
                        split, metric = key.split("_")
                        writer.add_scalar(f"{metric}/{split}", epoch[key], epoch["epoch"])
                    if "lr" in epoch:  # runs with a learning-rate schedule
                        writer.add_scalar("lr", epoch["lr"], epoch["epoch"])
                # run_name="." puts the HParams session in this run's own folder, beside its curves.
                hparams = {k: v if isinstance(domains[k][0], type(v)) else str(v) for k, v in _hparams(cell).items()}
                writer.add_hparams(hparams, {"test/accuracy": record.test.accuracy,
                                                    "test/loss": record.test.loss,
                                                    "best_epoch": float(record.best_epoch or 0)},
                                   hparam_domain_discrete=domains, run_name=".")
            written += 1
    return Exported(written, 0, skipped, target)


def _flat_config(config: dict[str, Any]) -> dict[str, str]:
    """The resolved config as MLflow params: dataset, seed, model.name, model.<param>, train.<field>."""
    flat = {"dataset": config["dataset"], "seed": config["seed"], "model.name": config["model"]["name"],
            **{f"model.{k}": v for k, v in config["model"]["params"].items()},
            **{f"train.{k}": v for k, v in config["train"].items()}}
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in flat.items()}


def _millis(record: RunRecord) -> int | None:
    return int(datetime.fromisoformat(record.started_at).timestamp() * 1000) if record.started_at else None


def _check_server(uri: str) -> None:
    """MLflow retries an unreachable server for minutes; fail in seconds, with one clear line."""
    url = urlparse(uri)
    if url.scheme not in ("http", "https"):
        return
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=5).close()
    except OSError as exc:
        raise AblatrixError(f"MLflow tracking server {uri}: no answer ({exc})") from None


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _artifacts(cell: Cell, record: RunRecord) -> dict[str, str]:
    """Per-class accuracy and the confusion matrix as CSV, or the failure's traceback."""
    if not record.done:
        return {"error.txt": f"{record.error}\n\n{record.traceback}"}
    names = DATASETS[cell.config.dataset].classes
    per_class = "class,name,correct,support,accuracy\n" + "".join(
        f"{e.index},{json.dumps(names[e.index])},{e.correct},{e.support},{e.accuracy}\n"
        for e in record.test.per_class)
    confusion = "true \\ predicted," + ",".join(json.dumps(n) for n in names) + "\n" + "".join(
        json.dumps(names[i]) + "," + ",".join(map(str, row)) + "\n"
        for i, row in enumerate(record.test.confusion))
    return {"per_class.csv": per_class, "confusion.csv": confusion}


def _all_runs(client: Any, experiment_id: str) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def to_mlflow(grids: Sequence[Grid], results: Path, target: str) -> Exported:
    """One MLflow experiment per grid, one run per stored cell, found again by its run-id tag."""
    try:
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise AblatrixError("MLflow export needs mlflow: pip install 'ablatrix[mlflow]'") from None
    _check_server(target)
    client = MlflowClient(tracking_uri=target)
    written = unchanged = 0
    for grid in grids:
        experiment = client.get_experiment_by_name(grid.name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(grid.name)
        existing = {r.data.tags["ablatrix.run_id"]: r for r in _all_runs(client, experiment_id)
                    if "ablatrix.run_id" in r.data.tags}
        for cell, record in stored_runs(grid, results):
            digest = hashlib.sha256(json.dumps(record.stored, sort_keys=True).encode()).hexdigest()
            old = existing.get(cell.run_id)
            if old is not None and old.data.tags.get("ablatrix.record_sha256") == digest:
                unchanged += 1
                continue
            if old is not None:  # MLflow cannot drop logged metrics: replace the run (soft delete)
                client.delete_run(old.info.run_id)
            done = record.done
            start = _millis(record)
            tags = {"ablatrix.run_id": cell.run_id, "ablatrix.grid": grid.name, "ablatrix.variant": cell.variant,
                    "ablatrix.dataset": cell.config.dataset, "ablatrix.seed": str(cell.config.seed),
                    "ablatrix.status": record.status, "ablatrix.code_revision": record.code_revision or "",
                    "ablatrix.record_sha256": digest}
            run = client.create_run(experiment_id, start_time=start, tags=tags, run_name=cell.label())
            run_id = run.info.run_id
            params = [Param(k, v) for k, v in _flat_config(record.config).items()]
            stamp, metrics = start or 0, []
            for epoch in record.history:
                stamp += int(1000 * epoch.get("seconds", 0))
                metrics += [Metric(k, epoch[k], stamp, epoch["epoch"]) for k in (*EPOCH_METRICS, "lr") if k in epoch]
            if done:
                final = {"test_accuracy": record.test.accuracy, "test_loss": record.test.loss,
                         "best_epoch": record.best_epoch or 0, "epochs_trained": record.epochs_trained,
                         "params": record.params, "wall_seconds": record.wall_seconds}
                metrics += [Metric(k, float(v), stamp, 0) for k, v in final.items()]
            # MLflow's batch limits: 100 params, 1,000 metrics per call.
            for chunk in _batches(params, 100):
                client.log_batch(run_id, params=chunk)
            for chunk in _batches(metrics, 1000):
                client.log_batch(run_id, metrics=chunk)
            for name, text in _artifacts(cell, record).items():
                client.log_text(run_id, text, name)
            end = start + int(1000 * record.wall_seconds) if start and record.wall_seconds else None
            client.set_terminated(run_id, "FINISHED" if done else "FAILED", end_time=end)
            written += 1
    return Exported(written, unchanged, 0, target)


EXPORTERS: Registry[Callable[[Sequence[Grid], Path, str], Exported]] = Registry("export target")
EXPORTERS.register("tensorboard")(to_tensorboard)
EXPORTERS.register("mlflow")(to_mlflow)
