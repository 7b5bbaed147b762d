"""The slurm executor: the pending units go to Slurm as one job array.

Each array task loads the units (a pickle the driver writes beside the records, on the file system
every node sees), prepares the grids' environment and trains them in turn through
`runner.run_claimed`, starting at its own index so that tasks spread out; the claims settle which
task trains what. Records, weights, epoch checkpoints and claims are the local executor's, so local,
Ray and Slurm runners can share one results folder.

The driver submits with `sbatch` (directly, not through submitit: a task is a command line over
files, so nothing of the driver's process is pickled but the units, and a user can read the script
in `<results>/.slurm/`), follows the stored records with a progress bar and ends when every unit
has a record or the array has ended. Units left without a record by an array that ended (a task
preempted or out of time) are submitted again, up to `max_retries` arrays that stored nothing new:
the next task resumes them from their epoch checkpoints. Ctrl-C cancels the array (`scancel`); the
tasks stop on the SIGTERM that scancel, preemption and time limits send (`--signal=TERM@60` asks
for one a minute before the limit), releasing their claims and keeping their last checkpoint.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import AblatrixError
from ..progress import Progress
from ..runner import RunOptions, run_claimed
from ..scheduling import Summary, Todo, Unit, units
from ..store import atomic_write_text

POLL_SECONDS = 2.0
TIME_LIMIT = re.compile(r"(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2}"
                        r"|infinite|unlimited)", re.I)  # the forms sbatch --time takes


@dataclass(frozen=True)
class SlurmOptions:
    """What a Slurm user sets for the array (none of it is part of a run's identity)."""

    partition: str | None = None
    time_limit: str | None = None
    tasks: int = 2  # array size: at most one task per unit
    parallelism: int | None = None  # tasks running at once (sbatch --array=...%N)
    sbatch_args: tuple[str, ...] = ()
    python: str = sys.executable  # the tasks' Python environment: the driver's by default
    detach: bool = False


def check(slurm: SlurmOptions) -> None:
    """Slurm is there, and the partition and time limit are ones it takes; one line otherwise."""
    if shutil.which("sbatch") is None:
        raise AblatrixError("--executor slurm: no sbatch on PATH; install Slurm's client tools (Debian: "
                            "slurm-client) on this machine, or use --executor local")
    if slurm.time_limit is not None and not TIME_LIMIT.fullmatch(slurm.time_limit):
        raise AblatrixError(f"--time-limit {slurm.time_limit!r}: Slurm takes minutes, MM:SS, HH:MM:SS, D-HH, "
                            "D-HH:MM or D-HH:MM:SS")
    if slurm.partition is not None:
        listed = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, timeout=30)
        partitions = [p.rstrip("*") for p in listed.stdout.split()]
        if listed.returncode == 0 and slurm.partition not in partitions:
            raise AblatrixError(f"--partition {slurm.partition!r}: not a partition of this cluster; sinfo lists "
                                f"{', '.join(partitions) or 'none'}")
    if slurm.tasks < 1 or (slurm.parallelism is not None and slurm.parallelism < 1):
        raise AblatrixError("--tasks and --array-parallelism take an integer >= 1")


def _squeue(job: str) -> int:
    """Tasks of the array still pending or running (0 once it has ended)."""
    out = subprocess.run(["squeue", "-h", "-r", "-j", job, "-o", "%i"], capture_output=True, text=True, timeout=30)
    return len(out.stdout.split()) if out.returncode == 0 else 0


def arrays(results: Path) -> list[tuple[str, int]]:
    """The job arrays submitted for `results` (their `job.json`) that Slurm still lists, with their
    tasks pending or running: what a detached run is doing."""
    found = []
    if shutil.which("squeue") is None:
        return found
    for path in sorted(Path(results).glob(".slurm/*/job.json")):
        job = json.loads(path.read_text())["job"]
        if queued := _squeue(job):
            found.append((job, queued))
    return found


def _cancel(job: str, *flags: str) -> None:
    """scancel the array (with `flags`, e.g. only its pending tasks) and wait until Slurm lists none of
    it: cancelled tasks release their claims on the SIGTERM they get."""
    subprocess.run(["scancel", *flags, job], capture_output=True, timeout=60)
    while _squeue(job):
        time.sleep(0.5)


def _stored(work: list[Unit], statuses: dict[str, str], bar: Progress) -> None:
    """Add the cells of `work` whose record appeared since the last look to `statuses` and the bar."""
    for job in (job for unit in work for job in unit if job.cell.run_id not in statuses):
        rec = job.store.get(job.cell.run_id)
        if rec and rec["status"] in ("done", "failed"):
            statuses[job.cell.run_id] = rec["status"]
            bar.done([job.cell])


class SlurmExecutor:
    """Units as the tasks of Slurm job arrays (module doc)."""

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.slurm: SlurmOptions = options.slurm or SlurmOptions()

    def __enter__(self) -> "SlurmExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def submit(self, work: list[Unit]) -> str:
        """Write the units and the batch script under <results>/.slurm/ and submit the array."""
        folder = work[0][0].store.dir.parent / ".slurm" / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        folder.mkdir(parents=True)
        (folder / "units.pkl").write_bytes(pickle.dumps((work, self.options)))
        slurm = self.slurm
        tasks = min(slurm.tasks, len(work))
        lines = ["#!/bin/bash", f"#SBATCH --array=0-{tasks - 1}" + (f"%{slurm.parallelism}" if slurm.parallelism else ""),
                 "#SBATCH --job-name=ablatrix", f"#SBATCH --output={folder}/task-%a.out", "#SBATCH --signal=TERM@60",
                 f"#SBATCH --cpus-per-task={self.options.cpus_per_run}"]
        lines += [f"#SBATCH --partition={slurm.partition}"] if slurm.partition else []
        lines += [f"#SBATCH --time={slurm.time_limit}"] if slurm.time_limit else []
        lines += [f"#SBATCH --gpus-per-task={int(self.options.gpus_per_run)}"] if self.options.gpus_per_run else []
        lines += [f"#SBATCH {arg}" for arg in slurm.sbatch_args]
        call = f"from ablatrix.executors.slurm import task; task({str(folder / 'units.pkl')!r})"
        lines += [f"exec {shlex.quote(slurm.python)} -c {shlex.quote(call)}"]
        script = folder / "task.sh"
        script.write_text("\n".join(lines) + "\n")
        done = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise AblatrixError(f"sbatch refused the array: {done.stderr.strip() or done.stdout.strip()}")
        job = done.stdout.strip().split(";")[0]
        # `ablatrix status` may read it at any moment (`arrays`)
        atomic_write_text(folder / "job.json", json.dumps({"job": job, "tasks": tasks, "units": len(work)}) + "\n")
        return job

    def run(self, todo: Todo) -> Summary:
        work = list(units(todo, self.options.pack, self.options.device))
        if not work:
            return Summary.of([])
        if self.slurm.detach:
            job = self.submit(work)
            print(f"submitted Slurm job array {job} ({min(self.slurm.tasks, len(work))} tasks, {len(work)} units); "
                  "`ablatrix status` shows its progress, `scancel` stops it")
            return Summary.of(["elsewhere"] * len(todo))
        statuses: dict[str, str] = {}
        idle_arrays = 0
        with Progress([cell for cell, _ in todo]) as bar:
            while work and idle_arrays <= self.options.max_retries:
                job = self.submit(work)
                before = len(statuses)
                try:
                    while True:
                        running = _squeue(job)
                        _stored(work, statuses, bar)
                        bar.running(running)
                        if not running or all(j.cell.run_id in statuses for u in work for j in u):
                            break
                        time.sleep(POLL_SECONDS)
                except BaseException:  # Ctrl-C: no task goes on without the driver
                    _cancel(job)
                    raise
                if running:  # every unit has its record: tasks not started yet go, running ones end by themselves
                    _cancel(job, "--state=PENDING")
                work = [u for u in work if any(j.cell.run_id not in statuses for j in u)]
                idle_arrays = idle_arrays + 1 if len(statuses) == before else 0
        return Summary.of(list(statuses.values()) + ["elsewhere"] * (len(todo) - len(statuses)))


def task(path: Path | str) -> None:
    """One array task: train the units of `path` in turn, from this task's index on (module doc)."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # scancel, preemption, a time limit: stop cleanly
    import torch
    work, options = pickle.loads(Path(path).read_bytes())
    options.environment.prepare()
    if options.device.type == "cpu":
        torch.set_num_threads(options.cpus_per_run)
    index = int(os.environ.get("SLURM_ARRAY_TASK_ID", "0")) % len(work)
    for unit in work[index:] + work[:index]:
        run_claimed(unit, options)

