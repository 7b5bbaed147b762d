"""The result store: one JSON file per run, written atomically, under <results>/<grid>/runs/,
and the weights each training's runs tested, under <results>/<grid>/weights/<training id>.pt
(a `torch.save` of {"final" | "best-<eval mode>": state dict}, read back with weights_only=True).

Files get the permissions a plain file written by the user would (the umask decides), so a
group-writable results folder can be shared by a team. A record that cannot be read back (a
truncated copy, a sync caught mid-write, a bad hand edit) is moved aside to
`<run id>.json.damaged`, never overwritten, and its cell counts as not trained.
"""
from __future__ import annotations

import errno
import fcntl
import io
import json
import math
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from .config import SCHEMA
from .data import DATASETS
from .errors import AblatrixError
from .models import create_model
from .record import RunRecord, migrated, record_problem


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (no race with threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends, then reach their handlers as usual. Python runs
    handlers in the main thread only, so a block in another thread has nothing to hold."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    previous = {sig: handler for sig, handler in previous.items() if handler is not None}  # None: not Python's
    for sig in previous:
        signal.signal(sig, lambda signum, _: held.append(signum))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in held:
            signal.raise_signal(sig)


@contextmanager
def _temporary(folder: Path, prefix: str, suffix: str) -> Iterator[tuple[int, str]]:
    """A temporary file in `folder` that never outlives the block: removed at its end unless the
    block renamed it, with Ctrl-C and SIGTERM held until then (a worker stopped between creating
    one and removing it left a stray `.claim`). Its mode is the one open() would give (mkstemp's
    is 0600, unreadable to a team)."""
    with _signals_held():
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            yield fd, tmp
        finally:
            Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a part.
    `durable` also waits until the bytes are on disk (fsync), so a power cut keeps them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _temporary(path.parent, f".{path.name}.", ".tmp") as (fd, tmp):
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_torch_save(path: Path, obj: Any, durable: bool = True) -> None:
    """`torch.save(obj, path)`, atomically (`atomic_write_bytes`)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue(), durable)


GRID_FILE = "grid-file"  # which grid file's runs a results folder holds (`ResultStore.bind`)
STALE_SECONDS = 600  # a claim from another host with no heartbeat for this long is abandoned
class ResultStore:
    """Run records of one grid, keyed by run id.

    `records()` is the way in: it moves damaged records aside and re-keys records of an older
    schema (see `config`), so call it before asking for single records with `get`.
    """

    def __init__(self, results: Path, grid: str, grid_path: Path | None = None) -> None:
        self.dir = Path(results) / grid
        self.runs_dir = self.dir / "runs"
        self.grid_path = grid_path  # with it, the first record stored also records the grid file (`bind`)

    def path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.json"

    def get(self, run_id: str) -> dict[str, Any] | None:
        """The record of `run_id`; None if there is none or it was damaged (then moved aside)."""
        return self._read(self.path(run_id))

    def put(self, record: dict[str, Any]) -> None:
        atomic_write_text(self.path(record["run_id"]), json.dumps(record, indent=1) + "\n")
        if self.grid_path is not None:
            self.bind(self.grid_path, write=True)
            self.grid_path = None

    def weights_path(self, training_id: str) -> Path:
        return self.dir / "weights" / f"{training_id}.pt"

    def put_weights(self, training_id: str, weights: dict[str, dict[str, torch.Tensor]]) -> None:
        """Add a training's tested weights to its file (a later cell of the same training adds its own)."""
        path = self.weights_path(training_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Read, merge and write under a lock: two runners that split one training's cells both
        # store into its file, and without it the later write could drop the other's weights.
        # flock, not a claim file: the kernel lets go of it when its process dies.
        with open(path.parent / ".flock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            atomic_torch_save(path, {**self.get_weights(training_id),
                                     **{name: {k: v.cpu() for k, v in state.items()} for name, state in weights.items()}})

    def get_weights(self, training_id: str) -> dict[str, dict[str, torch.Tensor]]:
        """The stored weights of a training by name; {} if none were stored (or the file is unreadable)."""
        try:
            return torch.load(self.weights_path(training_id), map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return {}
        except Exception as exc:  # a truncated copy: its runs' records still stand
            tqdm.write(f"ablatrix: {self.weights_path(training_id)} cannot be read ({exc}); ignored")
            return {}

    def bind(self, grid_path: Path, write: bool) -> None:
        """Check that this results folder holds the runs of the grid file at `grid_path` and no
        other (a copied grid file that kept its `name` would mix its runs into the original's and
        overwrite its report), and with `write` record it in `grid-file` (the path relative to
        this folder). A recorded file that no longer exists (moved, renamed, or this folder copied
        elsewhere) is no conflict: the new path takes its place."""
        marker = self.dir / GRID_FILE
        if marker.exists():
            owner = (self.dir / marker.read_text(encoding="utf-8").strip()).resolve()
            if owner.is_file() and not owner.samefile(grid_path):
                raise AblatrixError(f"{self.dir} holds the runs of {os.path.relpath(owner)}, and {grid_path} has "
                                    f"the same name {self.dir.name!r}: give it a name of its own (name = \"...\") "
                                    "or a --results folder of its own")
        if write:
            atomic_write_text(marker, os.path.relpath(Path(grid_path).resolve(), self.dir.resolve()) + "\n")

    def records(self) -> dict[str, dict[str, Any]]:
        """Every usable record by run id, after moving damaged ones aside and migrating old ones."""
        records = {}
        for path in sorted(self.runs_dir.glob("*.json")):
            record = self._read(path)
            if record is None:
                continue
            if record.get("schema", 1) < SCHEMA:
                record = self._migrate(path, record)
            records[record["run_id"]] = record
        return records

    def damaged(self) -> list[Path]:
        """Records that were moved aside because they could not be used (kept for the user)."""
        return sorted(self.runs_dir.glob("*.json.damaged*"))

    def writable(self) -> None:
        """Raise AblatrixError unless records can be written here (checked before training)."""
        folder = self.runs_dir
        while not folder.exists() and folder != folder.parent:  # probe where the first write lands
            folder = folder.parent
        try:
            if not folder.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, f"{folder} is not a folder")
            with _temporary(folder, ".probe.", ".tmp") as (fd, _):
                os.close(fd)
        except OSError as exc:
            raise AblatrixError(f"results folder {self.dir} cannot be written: "
                                f"{exc.strerror or exc} ({folder})") from None

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(text.decode("utf-8"))
            problem = record_problem(record, path.stem)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            problem = f"not valid JSON ({exc})"
        if problem is None:
            return record
        self._set_aside(path, problem)
        return None

    def _set_aside(self, path: Path, problem: str) -> None:
        """Rename a damaged record to <name>.damaged (numbered if taken); never delete it."""
        target = path.with_name(path.name + ".damaged")
        n = 0
        while target.exists():
            n += 1
            target = path.with_name(f"{path.name}.damaged.{n}")
        try:
            os.rename(path, target)
        except FileNotFoundError:  # another process moved it first
            return
        tqdm.write(f"ablatrix: {path} {problem}; moved aside to {target.name}, its cell counts as "
                   "not trained")

    def _migrate(self, path: Path, record: dict[str, Any]) -> dict[str, Any]:
        """Re-key a record of an older schema under its current run id (same run, new name)."""
        current = migrated(record)
        if current is None:
            return record
        if current["run_id"] == path.stem:  # the id did not change: only the schema is new
            self.put(current)
            return current
        current["migrated_from"] = path.stem
        if self._read(self.path(current["run_id"])) is None:  # else another process migrated it meanwhile
            self.put(current)
        path.unlink(missing_ok=True)
        return current

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
        with _temporary(self.runs_dir, f".{run_id}.", ".claim") as (fd, tmp):
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

    def release_dead_claims(self, records: dict[str, dict[str, Any]]) -> None:
        """Remove the dead claims of done cells. A runner killed between storing a record and
        releasing its claim leaves one that no runner takes over (no one claims a done cell), so it
        would stay for good. Only done cells: a failed one may be claimed again (--retry-failed)."""
        for lock in self.runs_dir.glob("*.lock"):
            record = records.get(lock.stem)
            if record is not None and record["status"] == "done" and not self.claim_alive(lock.stem):
                self.release(lock.stem)

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

    def heartbeat(self, run_id: str, epoch: str | None = None) -> None:
        """Renew the claim; with `epoch` ('3/40'), also say how far the training is, for `status`."""
        self.lock_path(run_id).touch()
        if epoch is not None:
            # A plain write, no temporary file: a worker stopped mid-write must leave nothing but the
            # note itself (released with the claim); a reader that meets it half-written shows no epoch.
            self.epoch_path(run_id).write_text(epoch, encoding="utf-8")

    def epoch_path(self, run_id: str) -> Path:
        return self.runs_dir / f"{run_id}.epoch"

    def claim_info(self, run_id: str) -> tuple[str, float, str]:
        """Who holds the claim on `run_id` ('host:pid'), for how many seconds, and the epoch its
        last heartbeat said ('' before the first epoch ends, or from a Ray driver)."""
        path = self.lock_path(run_id)
        try:
            owner = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return "", math.nan, ""
        try:
            epoch = self.epoch_path(run_id).read_text(encoding="utf-8")
        except FileNotFoundError:
            epoch = ""
        return f"{owner['host']}:{owner['pid']}", time.time() - owner.get("since", path.stat().st_mtime), epoch

    def release(self, run_id: str) -> None:
        self.lock_path(run_id).unlink(missing_ok=True)
        self.epoch_path(run_id).unlink(missing_ok=True)

    def release_own(self, run_id: str) -> None:
        """Release the claim on `run_id` if this process holds it; another runner's stays."""
        try:
            owner = json.loads(self.lock_path(run_id).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return
        if (owner.get("host"), owner.get("pid")) == (socket.gethostname(), os.getpid()):
            self.release(run_id)


def load_model(results: str | Path, grid: str, run_id: str) -> torch.nn.Module:
    """The model a stored run tested, with its weights, in eval mode, on the CPU: for a notebook.

    `results` is the results folder, `grid` the grid's name. A plugin model's module must be
    imported first (it registers the model).
    """
    store = ResultStore(Path(results), grid)
    stored = store.get(run_id)
    record = RunRecord.of(stored) if stored is not None else None
    if record is None or not record.done:
        raise AblatrixError(f"{store.path(run_id)}: no finished run {run_id} in {store.dir}")
    weights = store.get_weights(record.training_id) if record.training_id else {}
    if record.tested.weights not in weights:
        raise AblatrixError(f"run {run_id}: its weights are not stored in {store.dir / 'weights'} "
                            "(runs trained before ablatrix kept weights, or the folder was not copied)")
    config = record.config
    info = DATASETS.lookup(config["dataset"])
    model = create_model(config["model"]["name"], info.input_shape, len(info.classes), **config["model"]["params"])
    model.load_state_dict(weights[record.tested.weights])
    return model.eval()


