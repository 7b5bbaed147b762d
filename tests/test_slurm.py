"""The slurm executor against a real one-node Slurm (slurmctld, slurmd and munged started here, as root):
a grid completes, scancel mid-cell and a requeue resume from the checkpoint, Ctrl-C leaves no claim or job."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ablatrix.cli import main

from conftest import TINY_GRID

pytestmark = pytest.mark.slurm

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node Slurm of this machine for the module: munged (if not running), slurmctld and slurmd
    on free ports with a slurm.conf under a temporary folder; SLURM_CONF points the client tools at it.
    Skips, saying why, where Slurm is not installed (`.ci/run` installs it) or we are not root."""
    missing = [d for d in DAEMONS if shutil.which(d, path=SBIN) is None]
    if missing:
        pytest.skip(f"Slurm is not installed here (no {', '.join(missing)}): .ci/run installs Debian's slurmctld, "
                    "slurmd and munge")
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld and slurmd for the tests needs root")
    folder = tmp_path_factory.mktemp("slurm")
    started = []
    if not Path("/run/munge/munge.socket.2").exists():
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        for path in ("/run/munge", "/var/log/munge", "/var/lib/munge", "/var/log/munge/munged.log"):
            if Path(path).exists():
                shutil.chown(path, "munge", "munge")
        subprocess.run(["su", "-s", "/bin/sh", "munge", "-c", shutil.which("munged", path=SBIN)], check=True)
        started.append(Path("/run/munge/munged.pid"))
    node = subprocess.run([shutil.which("slurmd", path=SBIN), "-C"], capture_output=True, text=True).stdout.splitlines()[0]
    host = node.split()[0].split("=")[1]
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    conf = folder / "slurm.conf"
    # Every address is 127.0.0.1: a machine's own name need not resolve (where it did not, slurmd never
    # registered: 4d90c4a's CI; here, with the name out of /etc/hosts), and loopback is all one node needs.
    conf.write_text("\n".join([
        "ClusterName=ablatrix-tests", f"SlurmctldHost={host}(127.0.0.1)", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core", "ReturnToService=2", "KillWait=5",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'slurmd.log'}",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", "JobRequeue=1", "MpiDefault=none",
        # Slurm holds a requeued job until its launch credentials expire (120 s by default; slurmctld's
        # job_mgr.c, 22.05), then starts it at the next scheduling pass (backfill's, every 30 s): 10 s and
        # 2 s keep the requeue test short, and a credential still outlasts a launch here.
        "AuthInfo=cred_expire=10", "SchedulerParameters=bf_interval=2,sched_interval=2",
        f"{node} NodeAddr=127.0.0.1 State=UNKNOWN", "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", ""]))
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(conf)
    subprocess.run([shutil.which("slurmctld", path=SBIN), "-f", str(conf)], check=True)
    subprocess.run([shutil.which("slurmd", path=SBIN), "-f", str(conf)], check=True)
    started += [folder / "slurmctld.pid", folder / "slurmd.pid"]
    try:
        try:
            _wait(lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True).stdout,
                  60, "the node to be idle")
        except AssertionError:  # the cluster, not the executor, failed: say why from the daemons' own logs
            pytest.skip("the one-node Slurm did not come up in 60 s; " + "; ".join(
                f"{log}: {_last_error(folder / log)}" for log in ("slurmctld.log", "slurmd.log")))
        yield folder
    finally:
        subprocess.run(["scancel", "-u", "root"], capture_output=True)
        try:  # let slurmd stop the tasks before the daemons go (their slurmstepd would outlive them)
            _wait(lambda: not _jobs(), 30, "the cancelled jobs to end")
        except AssertionError:
            pass
        for pid_file in reversed(started):
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass
        # a slurmd still retrying its registration may not read SIGTERM: no daemon of ours outlives the module
        subprocess.run(["pkill", "-KILL", "-f", str(conf)], capture_output=True)
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before


def _last_error(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["(empty)"])[-1]


def _jobs() -> list[str]:
    return subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()


def _locks(results: Path) -> list[Path]:
    return list(results.rglob("*.lock"))


@pytest.mark.slow
def test_a_grid_completes_through_slurm_with_a_local_runs_records(slurm, write_grid, tmp_path, capsys, monkeypatch):
    """4 cells as a 2-task array: every cell trained once, the same run ids and test numbers, bit for bit, as a
    local run with as many torch threads (`--cpus-per-run` gives a task's; the local run's share of the cores
    is pinned to the same, whatever else runs on the machine)."""
    grid = write_grid(TINY_GRID)
    monkeypatch.setattr("ablatrix.executors.local.threads_for", lambda workers: 1)
    assert main(["run", str(grid), "--results", str(tmp_path / "slurm"), "--executor", "slurm", "--tasks", "2",
                 "--cpus-per-run", "1"]) == 0
    assert "trained 4, failed 0" in capsys.readouterr().out
    assert main(["run", str(grid), "--results", str(tmp_path / "local")]) == 0
    runs = {p.name: json.loads(p.read_text()) for p in (tmp_path / "slurm" / "tiny" / "runs").glob("*.json")}
    local = {p.name: json.loads(p.read_text()) for p in (tmp_path / "local" / "tiny" / "runs").glob("*.json")}
    assert runs.keys() == local.keys() and len(runs) == 4
    assert all(runs[k]["test"] == local[k]["test"] for k in runs)
    assert not _jobs() and not _locks(tmp_path / "slurm")


LONG = TINY_GRID.replace("epochs = 2", "epochs = 50")  # a stop lands mid-cell: about 10 epochs pass before it
ONE_CELL = ["--set", "seeds=[0]", "--set", "axes.model.batchnorm=[true]", "--checkpoint-seconds", "0"]


def _detached(grid: Path, results: Path) -> None:
    assert main(["run", str(grid), "--results", str(results), "--executor", "slurm", "--tasks", "1", "--detach",
                 *ONE_CELL]) == 0


def _checkpoint(results: Path) -> list[Path]:
    return list(results.rglob("checkpoints/*"))


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["scancel", "requeue"])
def test_a_task_stopped_mid_cell_is_resumed_from_its_checkpoint(slurm, write_grid, tmp_path, capsys, stop):
    """A detached array (status lists it and its running cell); scancel of the running task, then a second
    run: the cell continues from its epoch checkpoint and is trained once, its record saying after which
    epoch it resumed; or scontrol requeue of it: the requeued task resumes it."""
    grid = write_grid(LONG)
    _detached(grid, tmp_path)
    _wait(lambda: _checkpoint(tmp_path), 120, "an epoch checkpoint")
    job = _jobs()[0].split("_")[0]  # the array (its one task shows as JOB_0)
    capsys.readouterr()
    assert main(["status", str(grid), "--results", str(tmp_path), *ONE_CELL[:4]]) == 0
    out = capsys.readouterr().out
    assert "1 running" in out and f"slurm job array {job}: 1 task(s) pending or running" in out
    if stop == "scancel":
        subprocess.run(["scancel", job], check=True)
        _wait(lambda: not _jobs(), 60, "the task to end")
        assert not _locks(tmp_path) and _checkpoint(tmp_path)  # claim released, checkpoint kept
        assert main(["run", str(grid), "--results", str(tmp_path), "--executor", "slurm", "--tasks", "1",
                     *ONE_CELL]) == 0
    else:
        subprocess.run(["scontrol", "requeue", job], check=True)  # held for cred_expire + 1 s (the fixture's)
        _wait(lambda: list((tmp_path / "tiny" / "runs").glob("*.json")), 300, "the requeued task's record")
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "tiny" / "runs").glob("*.json")]
    assert record["status"] == "done" and len(record["history"]) == 50
    assert record.get("resumed_after_epochs")
    _wait(lambda: not _jobs(), 60, "the array to end")


@pytest.mark.slow
def test_ctrl_c_of_the_driver_cancels_its_array_and_leaves_no_claim(slurm, write_grid, tmp_path):
    """The driver (a real `ablatrix run --executor slurm`) gets SIGINT while its task trains: exit 130, no job
    left in the queue, no claim left in the results folder."""
    grid = write_grid(LONG)
    driver = subprocess.Popen([sys.executable, "-m", "ablatrix.cli", "run", str(grid), "--results", str(tmp_path),
                               "--executor", "slurm", "--tasks", "1", *ONE_CELL],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              # a runner started in the background of a script (`... &`) inherits SIGINT
                              # ignored, and Python then installs no KeyboardInterrupt: restore it
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait(lambda: _locks(tmp_path), 120, "the task's claim")
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=120) == 130
    assert not _jobs() and not _locks(tmp_path)


@pytest.mark.slow
def test_seeds_on_demand_submits_the_grid_and_each_round_as_one_array(slurm, write_grid, tmp_path, capsys):
    """`--until-decided` through Slurm: the grid's seeds, then each round's added seeds, as one job array
    each; it stops by itself with every cell done once and no job or claim left."""
    grid = write_grid(TINY_GRID.replace("seeds = [0, 1]", "seeds = [0, 1]\nmax_seeds = 3"))
    assert main(["run", str(grid), "--results", str(tmp_path), "--executor", "slurm", "--tasks", "1",
                 "--until-decided"]) == 0
    out = capsys.readouterr().out
    trained, rounds = map(int, re.search(r"trained (\d+) cells, the grid's seeds and (\d+) round\(s\)", out).groups())
    arrays = [json.loads(p.read_text()) for p in (tmp_path / ".slurm").glob("*/job.json")]
    records = [json.loads(p.read_text()) for p in (tmp_path / "tiny" / "runs").glob("*.json")]
    assert rounds >= 1 and len(arrays) == 1 + rounds and "stopped: " in out
    assert len(records) == trained > 4 and all(r["status"] == "done" for r in records)
    assert not _jobs() and not _locks(tmp_path)


@pytest.mark.parametrize("flags, message", [
    (["--time-limit", "two hours"], "--time-limit 'two hours': Slurm takes minutes, MM:SS"),
    (["--partition", "gpu-huge"], "--partition 'gpu-huge': not a partition of this cluster; sinfo lists debug"),
    (["--workers", "2"], "--workers does not apply to --executor slurm"),
    (["--cpus-per-run", "0"], "slurm: --gpus-per-run takes a whole number of GPUs per task; --cpus-per-run an integer >= 1"),
])
def test_bad_slurm_flags_are_one_line_errors_before_anything_is_submitted(slurm, write_grid, tmp_path, capsys, flags,
                                                                          message):
    assert main(["run", str(write_grid()), "--results", str(tmp_path), "--executor", "slurm", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not _jobs() and not (tmp_path / ".slurm").exists()


def test_without_sbatch_the_slurm_executor_says_what_to_install(write_grid, tmp_path, capsys, monkeypatch):
    """No Slurm client on PATH: one line naming slurm-client and --executor local, exit 2 (no daemons needed)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["run", str(write_grid()), "--results", str(tmp_path), "--executor", "slurm"]) == 2
    assert "no sbatch on PATH; install Slurm's client tools" in capsys.readouterr().err


def test_detach_cannot_follow_the_rounds_of_seeds_on_demand(write_grid, tmp_path, capsys):
    assert main(["run", str(write_grid()), "--results", str(tmp_path), "--executor", "slurm", "--detach",
                 "--until-decided"]) == 2
    assert "--detach returns before anything trains" in capsys.readouterr().err
