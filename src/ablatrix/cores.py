"""CPU threads per training: the cores this process may use, shared among the runners on this machine.

torch starts as many threads as there are cores in every process. Two `ablatrix run`s on one
machine (the docs suggest it, to split a grid) then run twice as many threads as cores, and each
training took 4x as long instead of 2x (quickstart: 3.0-3.8 s a cell alone, 12.6-16.0 s beside a
second runner). Each runner therefore registers itself in a per-user folder of this machine, and
before each training takes its share: the cores it may use divided by the live runners (and by
its own workers). A runner that finishes leaves, and the next training of the others takes the
cores back.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

RUNNERS = Path(tempfile.gettempdir()) / f"ablatrix-runners-{os.getuid()}"  # one empty file per live runner's pid


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Runner:
    """This process as a runner of this machine while the context lasts (`run`'s executor)."""

    def __init__(self, folder: Path = RUNNERS) -> None:
        self.path = folder / str(os.getpid())

    def __enter__(self) -> "Runner":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def live_runners(folder: Path = RUNNERS) -> int:
    """Runners registered on this machine whose process is alive (a killed one's file is removed); at least 1."""
    alive = 0
    for path in folder.glob("*") if folder.is_dir() else ():
        if path.name.isdigit() and _alive(int(path.name)):
            alive += 1
        else:
            path.unlink(missing_ok=True)
    return max(alive, 1)


def threads_for(workers: int, folder: Path = RUNNERS) -> int:
    """Torch threads for one training of a runner with `workers` parallel trainings: its share of
    the cores among the live runners, at least 1."""
    return max(1, available_cores() // (workers * live_runners(folder)))
