"""Shared helpers: tiny grid files written into a temporary folder, fabricated records, the pid of a
dead process, and a real `ablatrix run` stopped as a terminal or `docker stop` stops it."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest


def _cores() -> tuple[list[int], list[int]]:
    """All the cores this run may use, and this pytest-xdist worker's share of them (all, outside xdist)."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker and len(cores) >= count > 1:
        return cores, cores[int(worker.removeprefix("gw")) :: count]
    return cores, cores


def _keep_to(cores: list[int]) -> None:
    """This process, and what it starts from now on, on `cores`, with as many OpenMP threads."""
    os.sched_setaffinity(0, cores)
    os.environ["OMP_NUM_THREADS"] = str(len(cores))


# Under pytest-xdist (`-n 2`, pyproject's addopts) each worker keeps to its own share of the cores, and so
# does every process a test starts (`ablatrix run`, worker pools inherit the affinity). `ablatrix.cores`
# and torch size their threads by it: two workers' trainings never share a core (on 2 cores, two workers
# of 2 threads each ran the suite slower than one worker), and a training in this process and its twin in
# a subprocess use as many threads, so they still agree bit for bit. Pinned before torch is imported,
# which sizes its thread pool then; `pytest_runtest_setup` below widens it for tests that start Ray or Slurm.
ALL_CORES, OWN_CORES = _cores()
if OWN_CORES != ALL_CORES:
    _keep_to(OWN_CORES)

import torch  # noqa: E402

from ablatrix import record
from ablatrix.executors import run_grids
from ablatrix.loop import TrainingDiverged
from ablatrix.runner import RunOptions
from ablatrix.spec import load_grid
from ablatrix.store import ResultStore
from fakes import instant

OPTIONS = RunOptions(torch.device("cpu"), Path("no-data-needed-for-digits"))

TINY_GRID = """
name = "tiny"
datasets = ["digits"]
seeds = [0, 1]

[train]
epochs = 2
patience = 0
batch_size = 128

[model]
conv = [4]
fc = []

[axes]
model.batchnorm = [true, false]
"""


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a GPU: the CUDA path is checked where one is present"))])
def device(request) -> torch.device:
    """Each device a test of training runs on: the CPU always, CUDA where a GPU is present."""
    return torch.device(request.param)


def on(data, device: torch.device):
    """`data` (a Splits) with its tensors on `device`."""
    return dataclasses.replace(data, **{k: v.to(device) for k, v in vars(data).items() if isinstance(v, torch.Tensor)})


@pytest.fixture(autouse=True)
def figures_drawn_not_written(request, monkeypatch):
    """A report's figures are built and rendered (an error in drawing still fails the test) but not
    written as PNG and PDF, which is most of a report's time, unless the test is marked `figures`:
    those that read the files (tests/test_figures.py and the report, HTML and tuning tests that
    look at figures) write them as `ablatrix report` does."""
    if request.node.get_closest_marker("figures"):
        return
    from ablatrix import figures

    def render(fig, folder: Path, stem: str) -> Path:
        fig.canvas.draw()
        figures.plt.close(fig)
        return folder / f"{stem}.png"
    monkeypatch.setattr(figures, "_save", render)


def grid_file(folder: Path, text: str = TINY_GRID, name: str = "grid.toml") -> Path:
    """Path of a grid file in `folder` holding `text`."""
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def write_grid(tmp_path: Path):
    """write_grid(text, name="grid.toml") -> path of a grid file holding `text`."""
    return functools.partial(grid_file, tmp_path)


SUPPORT = 36  # test examples per class in fabricated records


def fabricate(cell, accuracy: float, status: str = "done") -> dict:
    """A stored record built as the runner builds it (`record`), with hand-chosen metrics (every
    class alike): trained 3 epochs, tested with the best weights (epoch 2), or the last epoch's
    without restore_best."""
    started = record.started(cell, (), record.environment(torch.device("cpu")), {"executor": "local", "workers": 1},
                             datetime(2026, 1, 1, tzinfo=timezone.utc))
    if status == "failed":
        result = TrainingDiverged("training loss became nan in epoch 3")
    else:
        correct = round(accuracy * SUPPORT)
        confusion = [[correct if j == i else SUPPORT - correct if j == (i + 1) % 10 else 0 for j in range(10)]
                     for i in range(10)]
        history = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.3 * e, "val_loss": 1.2 / e,
                    "val_accuracy": 0.25 * e, "seconds": 0.1} for e in (1, 2, 3)]
        train = cell.config.train
        tested = ({"weights": f"best-{train.eval_mode}", "epoch": 2} if train.restore_best else {"weights": "final", "epoch": 3})
        result = {"params": cell.params, "history": history, "best_epoch": 2, "epochs_trained": 3,
                  "tested": {**tested, "eval_mode": train.eval_mode},
                  "test": {"loss": 1 - accuracy, "accuracy": correct / SUPPORT,
                           "per_class": [{"class": c, "correct": correct, "support": SUPPORT,
                                          "accuracy": correct / SUPPORT} for c in range(10)],
                           "confusion": confusion}}
    return {**started, **record.outcome(result), "training": record.training([cell], 1.5), "wall_seconds": 1.5}


def store_runs(grid, results, accuracies: dict, statuses: dict | None = None) -> dict:
    """Write fabricated records for cells keyed (batchnorm, seed); return those cells."""
    cells = {(c.axes["model.batchnorm"], c.config.seed): c for c in grid.cells}
    store = ResultStore(results, grid.name)
    for key, acc in accuracies.items():
        store.put(fabricate(cells[key], acc, (statuses or {}).get(key, "done")))
    return cells


FULL = {(True, 0): 0.9, (True, 1): 0.8, (False, 0): 0.5, (False, 1): 0.5}  # all multiples of 1/36


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def start_run(grid: Path, results: Path, *extra: str) -> subprocess.Popen:
    """`ablatrix run GRID --results RESULTS ...` as a terminal starts it, its output piped."""
    return subprocess.Popen([sys.executable, "-m", "ablatrix.cli", "run", str(grid), "--results", str(results), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            start_new_session=True,  # its own process group, as a terminal gives it
                            # and Ctrl-C's default action, as a terminal gives it: pytest started in the
                            # background of a script (`... &`) passes SIGINT on ignored, and the run would finish
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def stop_a_run(grid: Path, results: Path, extra: list[str], stop: str) -> tuple[int, str]:
    """Starts `ablatrix run`, and once its first record is saved stops it with Ctrl-C (SIGINT to its
    process group, workers included) or, for `stop="term"`, with SIGTERM to the runner alone (as
    `docker stop` does): its exit status and stderr."""
    runs = results / load_grid(grid).name / "runs"
    proc = start_run(grid, results, *extra)
    deadline = time.monotonic() + 120
    while not list(runs.glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    if stop == "int":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def finished_runs(runs: Path) -> int:
    """How many records a stopped run left in `runs`: at least one, not all four of TINY_GRID's, each
    complete and done, and no temporary file or claim beside them."""
    saved = [json.loads(p.read_text()) for p in runs.glob("*.json")]
    assert 1 <= len(saved) < 4 and all(r["status"] == "done" for r in saved)
    assert not list(runs.glob(".*")) and not list(runs.glob("*.lock"))
    return len(saved)


def resume(grid: Path, results: Path) -> tuple[int, int]:
    """The next run, in this process with the instant trainer (what it finds is the store's, whichever
    executor left it; the resumed trainings themselves are tested elsewhere): (trained, already done)."""
    summary = run_grids([load_grid(grid)], results, dataclasses.replace(OPTIONS, trainer=instant))
    assert (summary.failed, summary.elsewhere) == (0, 0)
    return summary.trained, summary.skipped


def ray_group(item: pytest.Item) -> int:
    """2 for a test that starts a Ray of its own (or a cluster), 1 for one that uses the shared local Ray, else 0."""
    if item.get_closest_marker("starts_ray") or "ray_cluster" in getattr(item, "fixturenames", ()):
        return 2
    callspec = getattr(item, "callspec", None)
    options = callspec.params.get("options") if callspec else None
    return int(item.get_closest_marker("shared_ray") is not None or getattr(options, "executor", "") == "ray")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Within each module, the tests that use the shared local Ray run one after another, and those that
    start a Ray or a cluster of their own after them: every Ray start costs seconds (test_executors.py's
    `ray_as_the_test_needs` starts the shared one when a test needs it and none is up)."""
    modules = {item.path: i for i, item in reversed(list(enumerate(items)))}
    items.sort(key=lambda item: (modules[item.path], ray_group(item)))


@pytest.hookimpl(tryfirst=True)  # before the test's fixtures: a module's Slurm daemons start in its first test
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Under pytest-xdist, a test that starts or uses Ray or Slurm gets every core: a Ray of a dozen
    processes on one core took three times as long to start. Daemons it starts keep that affinity."""
    if OWN_CORES != ALL_CORES:
        cores = ALL_CORES if ray_group(item) or item.get_closest_marker("slurm") else OWN_CORES
        if set(cores) != os.sched_getaffinity(0):
            _keep_to(cores)
            torch.set_num_threads(len(cores))
