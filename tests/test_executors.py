"""Executors: every cell trained once, interrupted grids resume, failures recorded not fatal."""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch

import ablatrix
from ablatrix.errors import AblatrixError
from ablatrix.cores import available_cores
from ablatrix.executors import executor_for, local, run_grids
from ablatrix.runner import RunOptions, resolve_device, run_unit
from ablatrix.scheduling import pending
from ablatrix.report import write_report
from ablatrix.data import load_splits
from ablatrix.spec import load_grid
from ablatrix.packed import pack_id
from ablatrix.evaluation import evaluate
from ablatrix.train import train_unit
from ablatrix.store import ResultStore
from conftest import OPTIONS, TINY_GRID, dead_pid, fabricate, finished_runs, resume, stop_a_run
import fakes
from fakes import instant

RAY = replace(OPTIONS, executor="ray")


@pytest.fixture
def counting_train():
    """Options whose trainer (the instant fake) counts trainings by the run id of their first cell;
    `fail_on` maps a call number to the exception it raises."""
    calls, fail_on = [], {}

    def train(configs, *args):
        calls.append(configs[0].run_id)
        if len(calls) in fail_on:
            raise fail_on[len(calls)]
        return instant(configs, *args)
    return calls, fail_on, replace(OPTIONS, trainer=train)


def test_interrupted_grid_resumes_without_retraining(write_grid, tmp_path, counting_train):
    """Ctrl-C during the third cell keeps the two finished records; the next run trains the rest."""
    calls, fail_on, options = counting_train
    grid = load_grid(write_grid())
    results = tmp_path / "results"
    fail_on[3] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        run_grids([grid], results, options)
    store = ResultStore(results, grid.name)
    finished = store.records()
    assert sorted(finished) == sorted(calls[:2])
    assert all(r["status"] == "done" for r in finished.values())

    fail_on.clear()
    summary = run_grids([grid], results, options)
    assert (summary.trained, summary.skipped) == (2, 2)
    assert sorted(calls[3:]) == sorted(c.run_id for c in grid.cells if c.run_id not in finished)
    assert calls[2] in calls[3:]  # the interrupted cell is trained again
    assert all(store.get(k) == v for k, v in finished.items())  # untouched
    assert run_grids([grid], results, options).trained == 0


def test_ctrl_c_as_a_cell_is_claimed_leaves_no_claim(write_grid, tmp_path, monkeypatch):
    """Ctrl-C that lands as a sequential runner's claim returns (held while the lock is made, raised
    as it ends) releases that claim: the real Ctrl-C test left one behind in CI."""
    grid = load_grid(write_grid())
    claim = ResultStore.claim

    def claim_then_ctrl_c(self, run_id):
        assert claim(self, run_id)
        raise KeyboardInterrupt
    monkeypatch.setattr(ResultStore, "claim", claim_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        run_grids([grid], tmp_path, replace(OPTIONS, trainer=instant))
    assert not list(ResultStore(tmp_path, grid.name).runs_dir.iterdir())


@pytest.mark.parametrize("stored, owner, kept", [
    ("done", "dead", False),  # killed between storing the record and releasing the claim
    ("done", "live", True),  # a runner that listed the cell before it was done, about to let go
    ("failed", "dead", True),  # --retry-failed takes it over when it claims the cell
    (None, "dead", True),  # pending: the next claim takes it over
])
def test_the_next_run_removes_the_dead_claim_of_a_done_cell(write_grid, tmp_path, stored, owner, kept):
    """A claim left beside a stored record goes when the next run lists the grid, if its owner is dead
    and the cell is done; every other claim is left to the claiming rules."""
    grid = load_grid(write_grid(), ["seeds=[0]", "axes.model.batchnorm=[true]"])
    (cell,) = grid.cells
    store = ResultStore(tmp_path, grid.name)
    if stored:
        store.put(fabricate(cell, 0.5, stored))
    store.runs_dir.mkdir(parents=True, exist_ok=True)
    pid = os.getpid() if owner == "live" else dead_pid()
    store.lock_path(cell.run_id).write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "since": 0}))
    pending([grid], tmp_path)
    assert store.lock_path(cell.run_id).exists() is kept


def test_failed_cell_is_recorded_and_the_grid_goes_on(write_grid, tmp_path, counting_train):
    """An exception in one cell gives a `failed` record with the reason; the rest train; --retry-failed retries it."""
    calls, fail_on, options = counting_train
    grid = load_grid(write_grid())
    fail_on[1] = RuntimeError("CUDA out of memory (simulated)")
    summary = run_grids([grid], tmp_path, options)
    assert (summary.trained, summary.failed) == (3, 1)
    record = ResultStore(tmp_path, grid.name).get(calls[0])
    assert record["status"] == "failed"
    assert record["error"] == "RuntimeError: CUDA out of memory (simulated)"
    assert "Traceback" in record["traceback"]
    assert pending([grid], tmp_path) == []  # a failed cell is not retried by default...
    assert run_grids([grid], tmp_path, options).trained == 0
    assert [c.run_id for c, _ in pending([grid], tmp_path, retry_failed=True)] == [calls[0]]
    assert run_grids([grid], tmp_path, replace(options, retry_failed=True)).trained == 1  # ...only on request
    assert ResultStore(tmp_path, grid.name).get(calls[0])["status"] == "done"


def test_record_describes_itself(write_grid, tmp_path):
    """A finished record holds config, history, test metrics, params, device, versions, timing."""
    grid = load_grid(write_grid(), ["seeds=[0]", "axes.model.batchnorm=[true]"])
    run_grids([grid], tmp_path, OPTIONS)
    (record,) = ResultStore(tmp_path, grid.name).records().values()
    cell = grid.cells[0]
    assert record["config"] == cell.config.to_dict() and record["run_id"] == cell.run_id
    assert record["params"] == cell.params and record["status"] == "done"
    assert len(record["history"]) == record["epochs_trained"] == 2
    assert len(record["test"]["per_class"]) == 10 and len(record["test"]["confusion"]) == 10
    assert {"versions", "device", "code_revision", "wall_seconds", "started_at"} <= set(record)


@pytest.mark.parametrize("name, message", [
    ("tpu", "expected cpu, cuda or cuda:N"),
    ("banana", "expected cpu, cuda or cuda:N"),
])
def test_bad_device_is_rejected(name, message):
    """Devices other than cpu/cuda are refused with the valid choices."""
    with pytest.raises(AblatrixError, match=message):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_a_clear_error():
    """--device cuda on a CPU-only machine says so instead of failing inside torch."""
    with pytest.raises(AblatrixError, match="CUDA is not available"):
        resolve_device("cuda")


def strip_timing(record: dict) -> dict:
    return {"history": [{k: v for k, v in row.items() if k != "seconds"} for row in record["history"]],
            "test": record["test"], "best_epoch": record["best_epoch"]}


def test_two_worker_processes_give_the_same_records_as_one(write_grid, tmp_path, monkeypatch):
    """--workers 2 trains every cell once, in spawned processes, with the sequential numbers."""
    grid = load_grid(write_grid())
    threads = torch.get_num_threads()
    with monkeypatch.context() as patch:  # as each of the two workers: same arithmetic, same order
        patch.setattr(local, "threads_for", lambda workers: max(1, available_cores() // 2))
        try:
            run_grids([grid], tmp_path / "one", OPTIONS)
        finally:
            torch.set_num_threads(threads)
    summary = run_grids([grid], tmp_path / "two", replace(OPTIONS, workers=2))
    assert (summary.trained, summary.failed) == (4, 0)
    one, two = (ResultStore(tmp_path / d, grid.name).records() for d in ("one", "two"))
    assert sorted(one) == sorted(two)
    for run_id in one:
        assert two[run_id]["execution"]["workers"] == 2
        assert two[run_id]["torch_threads"] == max(1, available_cores() // 2)
        assert strip_timing(one[run_id]) == strip_timing(two[run_id])


@pytest.mark.parametrize("options", [replace(OPTIONS, workers=2), RAY], ids=["workers", "ray"])
def test_the_trainer_of_the_options_reaches_every_worker(write_grid, tmp_path, options):
    """The trainer named in the options is what spawned workers and Ray tasks call: every cell's record
    holds the fake's accuracy for its config (no real training gives those), each written once."""
    grid = load_grid(write_grid(), ["seeds=[0, 1, 2]"])
    summary = run_grids([grid], tmp_path, replace(options, trainer=instant))
    assert (summary.trained, summary.failed, summary.trainings) == (6, 0, 6)
    records = ResultStore(tmp_path, grid.name).records()
    assert sorted(records) == sorted(c.run_id for c in grid.cells)
    for cell in grid.cells:  # within one of the test set's 360 images
        assert records[cell.run_id]["test"]["accuracy"] == pytest.approx(fakes.accuracy_of(cell.config), abs=0.003)
        assert records[cell.run_id]["execution"]["executor"] == options.executor


def test_workers_import_the_grids_plugins(write_grid, tmp_path):
    """A model registered by a grid's plugin file also exists in the worker processes."""
    from test_spec import PLUGIN
    (tmp_path / "my_models.py").write_text(PLUGIN.replace("plugin-mlp", "worker-mlp"))
    grid = load_grid(write_grid('name = "p"\nplugins = ["my_models.py"]\ndatasets = ["digits"]\n'
                                'seeds = [0, 1]\n[train]\nepochs = 1\n[model]\nname = "worker-mlp"\n'))
    summary = run_grids([grid], tmp_path / "res", replace(OPTIONS, workers=2))
    assert (summary.trained, summary.failed) == (2, 0)


def test_a_cell_claimed_by_a_live_runner_is_left_to_it(write_grid, tmp_path):
    """A cell another live process has claimed is not trained; its claim stays; the rest train."""
    grid = load_grid(write_grid())
    store = ResultStore(tmp_path, grid.name)
    taken = grid.cells[1].run_id
    assert store.claim(taken)  # this test process plays the other runner
    summary = run_grids([grid], tmp_path, OPTIONS)
    assert (summary.trained, summary.elsewhere) == (3, 1)
    assert store.get(taken) is None and store.claim_alive(taken)
    assert [p.stem for p in store.runs_dir.glob("*.lock")] == [taken]


# --- packed training (--pack): packs of cells on every executor ---------------------------------

@pytest.mark.parametrize("options", [replace(OPTIONS, pack=2), replace(OPTIONS, pack=2, workers=2),
                                     replace(OPTIONS, pack=2, executor="ray")], ids=["one", "workers", "ray"])
def test_packs_train_each_cell_once_as_its_own_run(write_grid, tmp_path, options):
    """The tiny grid's seeds pack in twos (batchnorm changes shapes); each cell gets its own record that
    names its pack, the ids are the unpacked run's, and a second run trains nothing."""
    grid = load_grid(write_grid())
    options = replace(options, trainer=instant)  # what a pack trains is test_packed's
    summary = run_grids([grid], tmp_path, options)
    assert (summary.trained, summary.failed) == (4, 0)
    records = ResultStore(tmp_path, grid.name).records()
    assert sorted(records) == sorted(c.run_id for c in grid.cells)
    for cell in grid.cells:
        packed = records[cell.run_id]["execution"]["packed"]
        partner = next(c for c in grid.cells if c.axes == cell.axes and c is not cell)
        assert (packed["size"], packed["with"]) == (2, [partner.run_id])
        assert records[cell.run_id]["test"]["accuracy"] > 0.1
    assert run_grids([grid], tmp_path, options).trained == 0
    assert not list(ResultStore(tmp_path, grid.name).runs_dir.glob("*.lock"))


def test_a_pack_leaves_a_claimed_cell_to_its_runner(write_grid, tmp_path):
    """When another runner holds one cell of a pack, the rest of the pack trains without it, unpacked."""
    grid = load_grid(write_grid())
    store = ResultStore(tmp_path, grid.name)
    taken = grid.cells[0].run_id
    assert store.claim(taken)
    summary = run_grids([grid], tmp_path, replace(OPTIONS, pack=2))
    assert (summary.trained, summary.elsewhere) == (3, 1)
    records = store.records()
    assert taken not in records and store.claim_alive(taken)
    assert sum("packed" in r["execution"] for r in records.values()) == 2  # the untouched pair


def test_cells_that_cannot_fuse_train_unpacked_saying_so_once(write_grid, tmp_path, capsys):
    """A registered custom module is trained as plain runs under --pack, with one line saying why."""
    from test_spec import PLUGIN
    (tmp_path / "my_models.py").write_text(PLUGIN.replace("plugin-mlp", "pack-mlp"))
    grid = load_grid(write_grid('name = "p"\nplugins = ["my_models.py"]\ndatasets = ["digits"]\n'
                                'seeds = [0, 1, 2]\n[train]\nepochs = 1\n[model]\nname = "pack-mlp"\n'))
    summary = run_grids([grid], tmp_path / "res", replace(OPTIONS, pack=4))
    assert (summary.trained, summary.failed) == (3, 0)
    assert capsys.readouterr().out.count("train unpacked (model pack-mlp") == 1
    assert not any("packed" in r["execution"] for r in ResultStore(tmp_path / "res", "p").records().values())


# --- the ray executor (a real local Ray on the CPU) and workers that die -----------------------



@pytest.fixture(autouse=True)
def ray_as_the_test_needs(request):
    """Tests of the ray executor share one local Ray of 2 CPUs (marked `shared_ray`, or given ray
    options): each start costs seconds. Tests that watch the executor start and stop its own Ray
    (marked `starts_ray`) begin without one. The fake trainer reaches Ray's workers by value."""
    import ray
    callspec = getattr(request.node, "callspec", None)
    options = callspec.params.get("options") if callspec else None
    if request.node.get_closest_marker("starts_ray") is not None:
        ray.shutdown()
    elif request.node.get_closest_marker("shared_ray") is not None or getattr(options, "executor", "") == "ray":
        if not ray.is_initialized():
            ray.shutdown()  # a worker left connected (a test's stand-in for `ray` can hide it)
            ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", configure_logging=False)
            ray.cloudpickle.register_pickle_by_value(fakes)


@pytest.fixture(autouse=True, scope="module")
def no_ray_after_this_module():
    yield
    import ray
    ray.shutdown()

FAULTY = """
import os
from pathlib import Path
import torch
from torch import nn
from ablatrix import register_model


@register_model("faulty")
class Faulty(nn.Module):
    def __init__(self, input_shape, num_classes, *, fault: str = "none"):
        super().__init__()
        self.fault = fault
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(torch.Size(input_shape).numel(), num_classes))
        # training seeds torch with the cell's seed before building the model
        self.marker = Path(__file__).with_name(f"died-{fault}-{torch.initial_seed()}")

    def forward(self, x):
        if self.training and self.fault == "exit":  # the worker process dies mid-training
            os._exit(3)
        if self.training and self.fault == "exit-once" and not self.marker.exists():
            self.marker.touch()  # dies on the first attempt only, as on a lost node
            os._exit(3)
        out = self.net(x)
        return out * float("nan") if self.training and self.fault == "nan" else out
"""


@pytest.mark.starts_ray
def test_ray_gives_the_sequential_records_and_leaves_claimed_cells(write_grid, tmp_path, monkeypatch):
    """On a local Ray (1 CPU per cell) every unclaimed cell trains once, with the sequential numbers."""
    import ray
    grid = load_grid(write_grid())
    threads = torch.get_num_threads()
    monkeypatch.setattr(local, "threads_for", lambda workers: 1)  # as each Ray task: cpus_per_run = 1 thread
    try:
        run_grids([grid], tmp_path / "one", OPTIONS)
    finally:
        torch.set_num_threads(threads)
    store = ResultStore(tmp_path / "ray", grid.name)
    taken = grid.cells[0].run_id
    assert store.claim(taken)  # this test process plays another runner
    summary = run_grids([grid], tmp_path / "ray", RAY)
    assert (summary.trained, summary.failed, summary.elsewhere) == (3, 0, 1)
    assert not ray.is_initialized()  # the Ray it started is shut down again
    one, two = (ResultStore(tmp_path / d, grid.name).records() for d in ("one", "ray"))
    assert sorted(two) == sorted(set(one) - {taken})
    for run_id, record in two.items():
        assert record["execution"]["executor"] == "ray" and record["torch_threads"] == 1
        assert strip_timing(record) == strip_timing(one[run_id])
    assert [p.stem for p in store.runs_dir.glob("*.lock")] == [taken]  # its own claims released


@pytest.mark.shared_ray
def test_ray_claims_cells_only_as_it_submits_them(write_grid, tmp_path, monkeypatch):
    """On a 2-CPU Ray (the caller's) at most 2 x 2 cells are claimed at once, so other runners can share
    the rest; a Ray the caller started is left running."""
    import ray
    grid = load_grid(write_grid(), ["seeds=[0, 1, 2, 3]", "train.epochs=1"])
    held, claim = [], ResultStore.claim

    def counting_claim(store, run_id):
        held.append(len(list(store.runs_dir.glob("*.lock"))))
        return claim(store, run_id)
    monkeypatch.setattr(ResultStore, "claim", counting_claim)
    summary = run_grids([grid], tmp_path, replace(RAY, trainer=instant))
    assert ray.is_initialized()
    assert (summary.trained, len(held)) == (8, 8)
    assert max(held) <= 3  # the 4th claim in flight sees 3 others, never all 8
    assert len(ResultStore(tmp_path, grid.name).records()) == 8


@pytest.fixture
def faulty_grid(write_grid, tmp_path):
    from ablatrix.models import MODELS
    (tmp_path / "faulty.py").write_text(FAULTY)
    yield load_grid(write_grid('name = "faulty"\nplugins = ["faulty.py"]\ndatasets = ["digits"]\n'
                               'seeds = [0]\n[train]\nepochs = 1\n[model]\nname = "faulty"\n'
                               '[axes]\nmodel.fault = ["none", "nan", "exit", "exit-once"]\n'))
    del MODELS["faulty"]


SYSTEM_FAILURES = pytest.mark.parametrize("options, died", [
    (replace(OPTIONS, workers=2), "WorkerDied: the worker process training this cell ended with exit code 3"),
    (RAY, "WorkerCrashedError: "),
], ids=["local-2-workers", "ray"])


@SYSTEM_FAILURES
def test_a_nan_loss_and_a_dead_worker_are_failed_records(faulty_grid, tmp_path, options, died):
    """A NaN loss fails its cell at once; a cell whose worker dies on every attempt fails after the
    retries, with the reason; the grid goes on."""
    summary = run_grids([faulty_grid], tmp_path, replace(options, max_retries=1))
    assert (summary.trained, summary.failed) == (2, 2)
    records = ResultStore(tmp_path, "faulty").records().values()
    fine, nan, exit, exit_once = ([r for r in records if r["axes"]["model.fault"] == f]
                                  for f in ("none", "nan", "exit", "exit-once"))
    assert fine[0]["status"] == "done" and len(fine) == 1
    (nan,), (exit,), (exit_once,) = nan, exit, exit_once
    assert nan["status"] == "failed" and nan["error"].startswith("TrainingDiverged") and nan["attempts"] == 1
    assert exit["status"] == "failed" and exit["error"].startswith(died)
    assert exit["attempts"] == 2 and exit["system_failures"][0].startswith(died)
    assert exit_once["status"] == "done" and exit_once["attempts"] == 2 and len(exit_once["system_failures"]) == 1
    assert all(r["execution"]["executor"] == options.executor for r in records)
    assert not list(tmp_path.rglob("*.lock"))
    report = write_report([faulty_grid], tmp_path).read_text()  # a lost worker's record has no device
    assert f"`{exit['run_id']}` base digits seed 0: {died}" in report


@pytest.mark.shared_ray
def test_ray_refuses_a_gpu_share_the_cluster_lacks(write_grid, tmp_path):
    """--gpus-per-run on a CPU-only Ray stops before any cell is claimed or trained, and leaves the
    caller's Ray running."""
    import ray
    grid = load_grid(write_grid())
    with pytest.raises(AblatrixError, match=r"--gpus-per-run 0.5: the largest node of the Ray cluster has 0 GPU"):
        run_grids([grid], tmp_path, replace(RAY, device=torch.device("cuda"), gpus_per_run=0.5))
    assert ray.is_initialized()
    assert not list(tmp_path.rglob("*.lock")) and not list(tmp_path.rglob("*.json"))


@pytest.mark.slow
@pytest.mark.starts_ray
def test_ctrl_c_to_a_ray_run_keeps_finished_runs_and_the_next_run_resumes(write_grid, tmp_path):
    """Ctrl-C to a real `ablatrix run --executor ray` (its process group, Ray's workers included) exits
    130 with a message; every saved record is complete, no claim is left, and the next run trains
    only the rest (tests/test_cli.py stops the local executor's runs the same way)."""
    grid = write_grid(TINY_GRID.replace("epochs = 2", "epochs = 20"))
    code, err = stop_a_run(grid, tmp_path / "res", ["--executor", "ray"], "int")
    assert code == 130 and "interrupted; every finished run is saved" in err, err
    saved = finished_runs(tmp_path / "res" / "tiny" / "runs")
    assert resume(grid, tmp_path / "res") == (4 - saved, saved)


def test_ray_executor_without_ray_says_how_to_install_it(write_grid, tmp_path, monkeypatch):
    """Without the `ray` extra, --executor ray is a one-line error naming the install command."""
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(AblatrixError, match=r"pip install 'ablatrix\[ray\]'"):
        run_grids([load_grid(write_grid())], tmp_path, RAY)


# --- a real multi-node Ray: a head and a second node as separate processes on this machine -----

RAY_PORT = 6391
RAY_BIN = str(Path(sys.executable).with_name("ray"))
NODE_IDS = """
import json, time, ray
ray.init(address="127.0.0.1:%d", logging_level="ERROR")
deadline = time.monotonic() + 90
while True:  # until the second node has joined
    ids = {key: [n["NodeID"] for n in ray.nodes() if n["Alive"] and key in n["Resources"]] for key in ("head", "node2")}
    if all(ids.values()) or time.monotonic() > deadline:
        break
    time.sleep(0.25)
print(json.dumps(ids))
""" % RAY_PORT


def ray_start(env: dict[str, str], *args: str) -> subprocess.Popen:
    """`ray start ... --block` in its own process group, so the node can be killed whole."""
    return subprocess.Popen([RAY_BIN, "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1", *args],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc): Ray's workers leave the node's process group."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def busy_workers(process: subprocess.Popen) -> list[int]:
    """The node's workers running a task: Ray retitles a busy worker `ray::<function>` (an idle one
    `ray::IDLE`)."""
    busy = []
    for pid in descendants(process.pid):
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::_ray_unit"):
                busy.append(pid)
        except OSError:
            continue
    return busy


def kill_node(process: subprocess.Popen, first: Sequence[int] = ()) -> None:
    """SIGKILL a node's processes (`first`, then the raylet, its workers, all below): what a lost
    machine looks like."""
    for pid in [*first, process.pid, *descendants(process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()


@dataclass
class Cluster:
    address: str
    env: dict[str, str]  # what a process needs to join: the cluster's auth token
    nodes: list[subprocess.Popen]  # head, node2
    ids: dict[str, str]  # "head" / "node2" -> Ray node id


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray head (resource `head`) and a second node (resource `node2`), 1 CPU each, as separate
    processes, shared by the tests below in their order (the last one kills the second node; each
    start costs about 10 s); every process of both is killed afterwards, whatever the tests did."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    address = f"127.0.0.1:{RAY_PORT}"
    nodes = [ray_start(env, "--head", f"--port={RAY_PORT}", "--include-dashboard=false",
                       '--resources={"head": 1}')]
    try:
        deadline = time.monotonic() + 90
        while True:  # a socket, not `ray status`: each of those is a process that imports Ray
            try:
                socket.create_connection(("127.0.0.1", RAY_PORT), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the Ray head did not start"
                time.sleep(0.25)
        nodes.append(ray_start(env, f"--address={address}", '--resources={"node2": 1}'))
        ids = json.loads(subprocess.run([sys.executable, "-c", NODE_IDS], env=env, capture_output=True,
                                        text=True, check=True).stdout.splitlines()[-1])
        assert all(ids.values()), f"the second Ray node did not join: {ids}"
        yield Cluster(address, env, nodes, {key: found[0] for key, found in ids.items()})
    finally:
        for process in reversed(nodes):
            kill_node(process)
        # `ray start --head` names itself the machine's current cluster; a later plain ray.init()
        # would try to join the dead one.
        current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
        if current.exists() and current.read_text().strip().endswith(f":{RAY_PORT}"):
            current.unlink()


CLUSTER_GRID = """
name = "cluster"
datasets = ["digits"]
seeds = [0, 1, 2, 3, 4, 5]
[train]
epochs = 12
patience = 0
[model]
conv = [16, 32]
fc = [64]
"""


def run_on(cluster: Cluster, grid: Path, results: Path) -> subprocess.Popen:
    """`ablatrix run GRID --executor ray --address ...`, as a user starts it on a cluster."""
    return subprocess.Popen([sys.executable, "-m", "ablatrix.cli", "run", str(grid), "--results", str(results),
                             "--executor", "ray", "--address", cluster.address], env=cluster.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_a_grid_runs_on_a_two_node_ray_cluster(write_grid, tmp_path, ray_cluster):
    """With --address, every cell trains once, and both nodes of the cluster train cells."""
    path = write_grid(CLUSTER_GRID.replace("epochs = 12", "epochs = 4"))  # long cells only for losing a node
    driver = run_on(ray_cluster, path, tmp_path)
    output = driver.communicate(timeout=300)[0]
    assert driver.returncode == 0, output
    assert "trained 6, failed 0" in output
    records = ResultStore(tmp_path, "cluster").records()
    assert sorted(records) == sorted(c.run_id for c in load_grid(path).cells)
    assert {r["execution"]["node_id"] for r in records.values()} == set(ray_cluster.ids.values())
    assert all(r["attempts"] == 1 for r in records.values())


@pytest.mark.slow
def test_losing_a_ray_node_mid_grid_retrains_its_cells_on_the_survivor(write_grid, tmp_path, ray_cluster):
    """A node killed while it trains a cell: the cell is retried on the other node and the grid completes."""
    path = write_grid(CLUSTER_GRID.replace("seeds = [0, 1, 2, 3, 4, 5]", "seeds = [0, 1, 2, 3]"))
    store = ResultStore(tmp_path, "cluster")
    driver = run_on(ray_cluster, path, tmp_path)
    deadline = time.monotonic() + 120
    # Once a cell is done, kill the second node at a moment it is running one (waiting for a
    # record alone raced: the node could be between tasks, and then nothing needs a retry). The
    # busy worker dies first, at once: killing the raylet first, after another scan of /proc, gave
    # its task time to finish under load (a loaded loop saw no retry).
    while not list(store.runs_dir.glob("*.json")) or not (busy := busy_workers(ray_cluster.nodes[1])):
        assert driver.poll() is None and time.monotonic() < deadline, driver.communicate()[0]
        time.sleep(0.05)
    kill_node(ray_cluster.nodes[1], first=busy)
    output = driver.communicate(timeout=300)[0]
    assert driver.returncode == 0, output
    assert "trained 4, failed 0" in output and "retrying: " in output
    records = store.records()
    assert sorted(records) == sorted(c.run_id for c in load_grid(path).cells)
    retried = [r for r in records.values() if r["attempts"] > 1]
    assert retried and all(r["execution"]["node_id"] == ray_cluster.ids["head"] for r in retried)
    assert not list(tmp_path.rglob("*.lock"))


def test_gpu_out_of_memory_is_a_cell_failure_naming_the_memory(write_grid, tmp_path, counting_train):
    """CUDA out of memory fails its cell at once (no retry) with torch's request and what to change."""
    calls, fail_on, options = counting_train
    fail_on[1] = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has 1.2 GiB free.")
    grid = load_grid(write_grid(), ["seeds=[0]", "axes.model.batchnorm=[true]"])
    summary = run_grids([grid], tmp_path, options)
    assert (summary.trained, summary.failed, len(calls)) == (0, 1, 1)
    (record,) = ResultStore(tmp_path, grid.name).records().values()
    assert record["error"].startswith("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
    assert "--runs-per-gpu" in record["error"] and record["attempts"] == 1


class InterruptedRay:
    """A stand-in for the `ray` module whose task submission is interrupted by Ctrl-C: the moment
    after the driver claimed a cell and before the task is in flight."""

    def __init__(self) -> None:
        self.submitted = 0

    def is_initialized(self) -> bool:
        return True  # a cluster the caller runs: the driver neither starts nor stops it

    def nodes(self) -> list[dict]:
        return [{"Alive": True, "Resources": {"CPU": 2.0}}]

    def cluster_resources(self) -> dict:
        return {"CPU": 2.0}

    def remote(self, function):
        ray = self

        class Task:
            def options(self, **_):
                return self

            def remote(self, *_):
                ray.submitted += 1
                raise KeyboardInterrupt
        return Task()

    def cancel(self, ref) -> None:
        raise AssertionError("nothing was in flight")


@pytest.mark.parametrize("other_runner", [False, True])
def test_ctrl_c_between_a_ray_claim_and_its_submit_leaves_no_claim_of_ours(write_grid, tmp_path, monkeypatch,
                                                                       other_runner):
    """Ctrl-C after the driver claimed a cell but before its task was in flight: the claim is released
    (it was left behind before); a claim another live runner holds on another cell stays."""
    fake = InterruptedRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    grid = load_grid(write_grid())
    store = ResultStore(tmp_path, grid.name)
    if other_runner:
        theirs = grid.cells[-1].run_id
        store.runs_dir.mkdir(parents=True)
        store.lock_path(theirs).write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": time.time()}))
    with pytest.raises(KeyboardInterrupt):
        run_grids([grid], tmp_path, RAY)
    assert fake.submitted == 1
    assert [p.stem for p in store.runs_dir.glob("*.lock")] == ([theirs] if other_runner else [])


def test_an_axis_over_schedules_trains_each_and_a_packed_run_trains_them_unpacked(write_grid, tmp_path):
    """`axes.train.schedule = ["none", "CosineAnnealingLR"]`: the none cells keep the plain grid's ids,
    the cosine cells get their own and an lr per epoch; with --pack 2 the cosine cells are not fused
    (members would need their own schedules) and their records equal those of a plain run, while the
    two seeds of the none cells still share a pack."""
    text = ('name = "sched"\ndatasets = ["digits"]\nseeds = [0, 1]\n[train]\nepochs = 2\npatience = 0\n'
            '[model]\nconv = [4]\n')
    plain = load_grid(write_grid(text))
    grid = load_grid(write_grid(text + '[axes]\ntrain.schedule = ["none", "CosineAnnealingLR"]\n'))
    cosine = [c for c in grid.cells if c.axes["train.schedule"] != "none"]
    assert {c.run_id for c in grid.cells} - {c.run_id for c in cosine} == {c.run_id for c in plain.cells}
    assert run_grids([grid], tmp_path / "one", OPTIONS).trained == 4
    assert run_grids([grid], tmp_path / "packed", replace(OPTIONS, pack=2)).trained == 4
    one, packed = (ResultStore(tmp_path / d, grid.name).records() for d in ("one", "packed"))
    for cell in cosine:
        assert "packed" not in packed[cell.run_id]["execution"]
        assert strip_timing(one[cell.run_id]) == strip_timing(packed[cell.run_id])
    assert {packed[c.run_id]["execution"]["packed"]["size"] for c in plain.cells} == {2}
    assert [row["lr"] for row in one[cosine[0].run_id]["history"]] == pytest.approx([1e-3, 5e-4])


MEASURED = TINY_GRID + 'train.eval_mode = ["eval", "train"]\ntrain.restore_best = [true, false]\n'


@pytest.mark.parametrize("options", [OPTIONS, replace(OPTIONS, workers=2), replace(OPTIONS, pack=2), RAY],
                         ids=["sequential", "workers", "pack", "ray"])
def test_cells_measured_differently_train_once_and_match_their_own_trainings(write_grid, tmp_path, options):
    """Cells that differ only in eval mode and restore_best are one training (4 cells each), with any
    executor: each record equals that of the cell trained alone, names its training, the weights it
    tested are stored, and load_model gives a model that scores what the record says."""
    grid = load_grid(write_grid(MEASURED), ["seeds=[0]"])
    summary = run_grids([grid], tmp_path, options)
    assert (summary.trained, summary.trainings) == (8, 2)
    store = ResultStore(tmp_path, grid.name)
    records = store.records()
    digits = load_splits("digits", 0.1, torch.device("cpu"), OPTIONS.data_root)
    threads = torch.get_num_threads()
    for cell in grid.cells:
        record = records[cell.run_id]
        torch.set_num_threads(record["torch_threads"])  # the same arithmetic in the same order
        try:
            ((alone, _),) = run_unit([cell], OPTIONS)
        finally:
            torch.set_num_threads(threads)
        assert strip_timing(record) == strip_timing(alone)
        assert record["training"]["id"] == cell.config.training_id
        assert sorted(record["training"]["cells"]) == sorted(
            c.run_id for c in grid.cells if c.config.training_id == cell.config.training_id)
        assert record["tested"]["weights"] in store.get_weights(cell.config.training_id)
        if cell.config.train.eval_mode == "eval":
            model = ablatrix.load_model(tmp_path, grid.name, cell.run_id)
            assert evaluate(model, digits.test_x, digits.test_y)[1] == record["test"]["accuracy"]
    assert run_grids([grid], tmp_path, options).trained == 0


def test_ctrl_c_in_a_shared_training_keeps_the_finished_trainings(write_grid, tmp_path, counting_train):
    """Ctrl-C in the second of four trainings: the first one's four cells are stored, the next run trains
    the other three trainings (12 cells) and nothing else."""
    calls, fail_on, options = counting_train
    grid = load_grid(write_grid(MEASURED))
    fail_on[2] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        run_grids([grid], tmp_path, options)
    store = ResultStore(tmp_path, grid.name)
    first = store.records()
    assert len(first) == 4 and len({r["training"]["id"] for r in first.values()}) == 1
    assert not list(store.runs_dir.glob("*.lock"))
    fail_on.clear()
    summary = run_grids([grid], tmp_path, options)
    assert (summary.trained, summary.trainings, summary.skipped, len(calls)) == (12, 3, 4, 5)
    assert all(store.get(k) == v for k, v in first.items())


def test_an_evaluation_added_later_trains_only_its_cells(write_grid, tmp_path, counting_train):
    """Adding bn-recomputed to the eval modes leaves the stored cells as they are and trains the new
    cells, one training per configuration and seed."""
    calls, _, options = counting_train
    text = TINY_GRID + 'train.eval_mode = ["eval", "train"]\n'
    grid = load_grid(write_grid(text))
    run_grids([grid], tmp_path, options)
    before = ResultStore(tmp_path, grid.name).records()
    wider = load_grid(write_grid(text.replace('"train"]', '"train", "bn-recomputed"]')))
    summary = run_grids([wider], tmp_path, options)
    assert (summary.trained, summary.trainings, summary.skipped, len(calls)) == (4, 4, 8, 8)
    after = ResultStore(tmp_path, grid.name).records()
    assert all(after[k] == v for k, v in before.items())


def test_local_workers_live_across_runs_of_one_executor(write_grid, tmp_path):
    """Two runs through one executor (the rounds of --until-decided) use the same worker processes,
    which exit when it closes."""
    grid = load_grid(write_grid())
    todo = pending([grid], tmp_path)
    with executor_for([grid], replace(OPTIONS, workers=2, trainer=instant)) as executor:
        assert executor.run(todo[:2]).trained == 2
        pids = [slot.process.pid for slot in executor.slots]
        assert executor.run(todo[2:]).trained == 2
        assert [slot.process.pid for slot in executor.slots] == pids and len(pids) == 2
        processes = [slot.process for slot in executor.slots]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0


def test_ctrl_c_mid_training_resumes_from_its_checkpoint(write_grid, tmp_path, monkeypatch):
    """Ctrl-C at the end of epoch 3 of a shared training: the next run continues from that epoch (no
    claim or record left meanwhile), its records equal an uninterrupted run's, and the checkpoint goes."""
    grid = load_grid(write_grid(MEASURED.replace("epochs = 2", "epochs = 6")), ["seeds=[0]", "axes.model.batchnorm=[true]"])
    options = replace(OPTIONS, checkpoint_seconds=0)
    interrupted_at_epoch_3(grid, tmp_path, options, grid.cells[0].config.training_id)


def test_ctrl_c_mid_pack_resumes_from_its_checkpoint(write_grid, tmp_path, monkeypatch):
    """The same for a pack of two seeds (--pack 2): it checkpoints as one and resumes as one."""
    grid = load_grid(write_grid(TINY_GRID.replace("epochs = 2", "epochs = 6")), ["axes.model.batchnorm=[true]"])
    options = replace(OPTIONS, checkpoint_seconds=0, pack=2)
    interrupted_at_epoch_3(grid, tmp_path, options, pack_id([c.config for c in grid.cells]))


def test_a_pack_renews_the_claims_of_its_stopped_members(write_grid, tmp_path, monkeypatch):
    """A member that stopped early (patience) keeps its claim alive, once an epoch, until the pack's
    records are written: a runner on another host would otherwise take its cell and train it again."""
    grid = load_grid(write_grid(TINY_GRID.replace("epochs = 2", "epochs = 12").replace("patience = 0", "lr = 0.05")
                                + "train.patience = [1, 0]\n"), ["seeds=[0]", "axes.model.batchnorm=[true]"])
    beats = []
    monkeypatch.setattr(ResultStore, "heartbeat", lambda store, run_id, epoch=None: beats.append(run_id))
    assert run_grids([grid], tmp_path, replace(OPTIONS, pack=2)).trained == 2
    records = ResultStore(tmp_path, grid.name).records().values()
    assert sorted(r["epochs_trained"] for r in records)[0] < 12  # one member stopped early, or this tests nothing
    assert sorted(beats) == sorted(r["run_id"] for r in records for _ in range(12))


def interrupted_at_epoch_3(grid, tmp_path, options: RunOptions, checkpoint: str) -> None:
    run_grids([grid], tmp_path / "twin", options)

    def interrupted(configs, data, device, execution, on_epoch, checkpoint):
        def stop(b, row):
            if row["epoch"] == 3:
                raise KeyboardInterrupt
        return train_unit(configs, data, device, execution, stop, checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run_grids([grid], tmp_path / "res", replace(options, trainer=interrupted))
    store = ResultStore(tmp_path / "res", grid.name)
    assert store.records() == {} and not list(store.runs_dir.glob("*.lock"))
    assert [p.stem for p in (store.dir / "checkpoints").iterdir()] == [checkpoint]
    assert run_grids([grid], tmp_path / "res", options).trained == len(grid.cells)
    twin = ResultStore(tmp_path / "twin", grid.name).records()
    for run_id, record in store.records().items():
        assert record["resumed_after_epochs"] == [3] and "resumed_after_epochs" not in twin[run_id]
        assert strip_timing(record) == strip_timing(twin[run_id])
    assert not list((store.dir / "checkpoints").iterdir())


def test_a_failed_shared_training_fails_its_cells_and_retry_failed_trains_them_once(write_grid, tmp_path,
                                                                                  counting_train):
    """An exception in a shared training fails each of its 4 cells with the reason; --retry-failed
    trains them again as one training."""
    calls, fail_on, options = counting_train
    grid = load_grid(write_grid(MEASURED), ["seeds=[0]"])
    fail_on[1] = RuntimeError("simulated")
    assert run_grids([grid], tmp_path, options).failed == 4
    failed = [r for r in ResultStore(tmp_path, grid.name).records().values() if r["status"] == "failed"]
    assert len(failed) == 4 and {r["error"] for r in failed} == {"RuntimeError: simulated"}
    summary = run_grids([grid], tmp_path, replace(options, retry_failed=True))
    assert (summary.trained, summary.trainings, len(calls)) == (4, 1, 3)


def test_a_damaged_record_retrains_only_its_cell(write_grid, tmp_path, counting_train):
    """A damaged record of one cell of a shared training is set aside; the next run trains that cell
    alone and leaves the other three records as they are."""
    calls, _, options = counting_train
    grid = load_grid(write_grid(MEASURED), ["seeds=[0]", "axes.model.batchnorm=[true]"])
    run_grids([grid], tmp_path, options)
    store = ResultStore(tmp_path, grid.name)
    before = store.records()
    damaged = grid.cells[1].run_id
    store.path(damaged).write_text("{truncated")
    summary = run_grids([grid], tmp_path, options)
    assert (summary.trained, summary.trainings, len(calls)) == (1, 1, 2)
    after = store.records()
    assert all(after[k] == v for k, v in before.items() if k != damaged)
    assert strip_timing(after[damaged]) == strip_timing(before[damaged]) and store.damaged()
