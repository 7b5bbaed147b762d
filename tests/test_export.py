"""Exports of fabricated records: TensorBoard event files and an MLflow SQLite store, read back."""
from __future__ import annotations

import sys

import pytest

from ablatrix.cli import main
from ablatrix.export import run_name, to_mlflow, to_tensorboard
from ablatrix.spec import load_grid
from ablatrix.store import ResultStore

from conftest import fabricate, store_runs

PARTIAL = {(True, 0): 0.9, (True, 1): 0.8, (False, 0): 0.5}  # (False, 1) is still pending
FAILED = {(False, 0): "failed"}


@pytest.fixture
def grid(write_grid):
    return load_grid(write_grid())  # batchnorm true/false x seeds 0, 1


def events(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return accumulator


def session_hparams(accumulator) -> dict:
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    return {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in hparams.items()}


def test_tensorboard_scalars_and_hparams(grid, tmp_path):
    """Each finished cell is a run with its per-epoch curves and its HParams session; failed ones are left out."""
    cells = store_runs(grid, tmp_path / "results", PARTIAL, FAILED)
    exported = to_tensorboard([grid], tmp_path / "results", str(tmp_path / "tb"))
    assert (exported.written, exported.skipped) == (2, 1)
    run = events(tmp_path / "tb" / run_name(cells[True, 1]))
    train_loss = run.Scalars("loss/train")
    assert [s.step for s in train_loss] == [1, 2, 3]
    assert [s.value for s in train_loss] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [s.value for s in run.Scalars("accuracy/val")] == pytest.approx([0.25, 0.5, 0.75])
    assert run.Scalars("test/accuracy")[0].value == pytest.approx(29 / 36)
    assert session_hparams(run) == {"variant": "base", "dataset": "digits", "seed": 1.0, "model.batchnorm": "true"}
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
    experiment = HParamsPluginData.FromString(run.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    domains = {h.name: [v.string_value or v.number_value for v in h.domain_discrete.values]
               for h in experiment.hparam_infos}
    assert domains["model.batchnorm"] == ["true", "false"] and domains["seed"] == [0.0, 1.0]
    assert {m.name.tag for m in experiment.metric_infos} == {"test/accuracy", "test/loss", "best_epoch"}
    assert not (tmp_path / "tb" / run_name(cells[False, 0])).exists()


def test_tensorboard_reexport_replaces(grid, tmp_path):
    """Exporting twice into one folder leaves each curve with one point per epoch, not two."""
    cells = store_runs(grid, tmp_path / "results", PARTIAL)
    for _ in range(2):
        to_tensorboard([grid], tmp_path / "results", str(tmp_path / "tb"))
    assert len(events(tmp_path / "tb" / run_name(cells[True, 0])).Scalars("loss/val")) == 3


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)  # MLflow puts a SQLite store's artifacts under ./mlruns
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def mlflow_runs(uri: str, experiment: str) -> dict:
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri=uri)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return {r.data.tags["ablatrix.run_id"]: r for r in found}


def test_mlflow_runs_params_metrics(grid, tmp_path, mlflow_uri):
    """One experiment per grid, one run per stored cell with params, tags, metric history by step and artifacts."""
    from mlflow.tracking import MlflowClient
    cells = store_runs(grid, tmp_path / "results", PARTIAL, FAILED)
    assert to_mlflow([grid], tmp_path / "results", mlflow_uri).written == 3
    runs = mlflow_runs(mlflow_uri, "tiny")
    assert set(runs) == {cells[k].run_id for k in PARTIAL}
    done, failed = runs[cells[True, 1].run_id], runs[cells[False, 0].run_id]
    assert (done.info.status, failed.info.status) == ("FINISHED", "FAILED")
    assert done.data.params["model.batchnorm"] == "true" and done.data.params["train.epochs"] == "2"
    assert done.data.tags["ablatrix.seed"] == "1" and done.data.tags["ablatrix.variant"] == "base"
    assert done.data.metrics["test_accuracy"] == pytest.approx(29 / 36)
    client = MlflowClient(tracking_uri=mlflow_uri)
    history = client.get_metric_history(done.info.run_id, "val_accuracy")
    history = sorted((m.step, m.value) for m in history)
    assert [step for step, _ in history] == [1, 2, 3]
    assert [value for _, value in history] == pytest.approx([0.25, 0.5, 0.75])
    assert {a.path for a in client.list_artifacts(done.info.run_id)} == {"per_class.csv", "confusion.csv"}
    assert {a.path for a in client.list_artifacts(failed.info.run_id)} == {"error.txt"}


def test_mlflow_reexport_finds_runs_again(grid, tmp_path, mlflow_uri):
    """A second export leaves the run count alone; a changed record (a failed cell retrained) replaces its run."""
    cells = store_runs(grid, tmp_path / "results", PARTIAL, FAILED)
    to_mlflow([grid], tmp_path / "results", mlflow_uri)
    again = to_mlflow([grid], tmp_path / "results", mlflow_uri)
    assert (again.written, again.unchanged, len(mlflow_runs(mlflow_uri, "tiny"))) == (0, 3, 3)
    ResultStore(tmp_path / "results", "tiny").put(fabricate(cells[False, 0], 0.5))
    retried = to_mlflow([grid], tmp_path / "results", mlflow_uri)
    runs = mlflow_runs(mlflow_uri, "tiny")
    assert (retried.written, retried.unchanged, len(runs)) == (1, 2, 3)
    assert runs[cells[False, 0].run_id].info.status == "FINISHED"


@pytest.mark.parametrize("target, hidden, message", [
    (["wandb", "x"], (), "unknown export target 'wandb'; choose from: mlflow, tensorboard"),
    (["mlflow", "http://127.0.0.1:9"], (), "MLflow tracking server http://127.0.0.1:9: no answer"),
    (["mlflow", "sqlite:///m.db"], ("mlflow", "mlflow.entities", "mlflow.tracking"), "pip install 'ablatrix[mlflow]'"),
    (["tensorboard", "tb"], ("torch.utils.tensorboard",), "pip install 'ablatrix[tensorboard]'"),
])
def test_export_errors(write_grid, tmp_path, monkeypatch, capsys, target, hidden, message):
    """A bad target, an unreachable server or a missing extra is one line and exit 2, with nothing written."""
    monkeypatch.chdir(tmp_path)
    for module in hidden:  # its import fails as if the package were absent
        monkeypatch.setitem(sys.modules, module, None)
    assert main(["export", str(write_grid()), "--to", *target]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not any((tmp_path / name).exists() for name in ("tb", "m.db", "mlruns"))
