"""The result store: one JSON file per run, written atomically, under <results>/<grid>/runs/."""
from __future__ import annotations

import functools
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


STALE_SECONDS = 600  # a claim from another host with no heartbeat for this long is abandoned


class ResultStore:
    """Run records of one grid, keyed by run id."""

    def __init__(self, results: Path, grid: str) -> None:
        self.dir = Path(results) / grid
        self.runs_dir = self.dir / "runs"

    def path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.json"

    def get(self, run_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(run_id).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def put(self, record: dict[str, Any]) -> None:
        atomic_write_text(self.path(record["run_id"]), json.dumps(record, indent=1) + "\n")

    def records(self) -> dict[str, dict[str, Any]]:
        return {p.stem: json.loads(p.read_text(encoding="utf-8"))
                for p in sorted(self.runs_dir.glob("*.json"))}

    # Claims: a cell being trained has <run id>.lock, created atomically (O_EXCL), holding the
    # owner's host and pid. A claim whose owner died (same host, pid gone; or no heartbeat for
    # STALE_SECONDS, for owners on other hosts) is taken over, so SIGKILL never blocks a cell.
    def lock_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.lock"

    def claim(self, run_id: str) -> bool:
        """Take the cell for this process; False if a live process holds it.

        The owner is written to a temporary file first and hard-linked to <run id>.lock, which is
        atomic and fails if the lock exists: a process killed at any moment never leaves a lock
        without its owner (one that would look alive forever).
        """
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        owner = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})
        fd, tmp = tempfile.mkstemp(dir=self.runs_dir, prefix=f".{run_id}.", suffix=".claim")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(owner)
            for _ in range(2):  # second try after clearing a stale claim
                try:
                    os.link(tmp, self.lock_path(run_id))
                    return True
                except FileExistsError:
                    if self.claim_alive(run_id):
                        return False
                    self.lock_path(run_id).unlink(missing_ok=True)
            return False
        finally:
            os.unlink(tmp)

    def claim_alive(self, run_id: str) -> bool:
        """Whether the claim on `run_id` exists and its owner is still alive."""
        path = self.lock_path(run_id)
        try:
            owner = json.loads(path.read_text(encoding="utf-8"))
            age = time.time() - path.stat().st_mtime
        except (FileNotFoundError, json.JSONDecodeError):  # gone, or not a claim ablatrix wrote
            return False
        if owner["host"] != socket.gethostname():
            return age < STALE_SECONDS
        try:
            os.kill(owner["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by another user
            pass
        return True

    def heartbeat(self, run_id: str) -> None:
        self.lock_path(run_id).touch()

    def release(self, run_id: str) -> None:
        self.lock_path(run_id).unlink(missing_ok=True)


@functools.cache
def _code_revision() -> str:
    """The git commit ablatrix runs from (with -dirty if edited), else its installed version."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        rev = None
    if rev is not None and rev.returncode == 0:
        return f"git:{rev.stdout.strip()}"
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
