"""The result store: atomic JSON records, weights, claims and the grid file a results folder belongs to."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from ablatrix.config import SCHEMA
from ablatrix.errors import AblatrixError
from ablatrix.spec import load_grid
from ablatrix.store import STALE_SECONDS, ResultStore, atomic_write_text

from conftest import dead_pid


def record(run_id: str = "abc", **fields) -> dict:
    """A minimal finished record (current schema) with every required field."""
    return {"run_id": run_id, "schema": SCHEMA, "status": "done", "config": {}, "history": [],
            "best_epoch": 1, "epochs_trained": 1, "test": {"accuracy": 0.5}, "wall_seconds": 1.0, **fields}


def test_put_get_records_round_trip(tmp_path):
    """A record written under its run id reads back equal; missing ids read as None."""
    store = ResultStore(tmp_path, "g")
    store.put(record(x=[1.5, None]))
    assert store.get("abc") == record(x=[1.5, None])
    assert store.get("nope") is None
    assert list(store.records()) == ["abc"]
    assert store.path("abc") == tmp_path / "g" / "runs" / "abc.json"


@pytest.mark.parametrize("content, problem", [
    (b'{"run_id": "abc", "status": "do', "not valid JSON"),  # truncated copy
    (b"\xff\xfe{}", "not valid JSON"),  # not UTF-8
    (b"[1, 2]", "not a JSON object"),
    (json.dumps(record(status="running")).encode(), "neither done nor failed"),
    (json.dumps({k: v for k, v in record().items() if k != "test"}).encode(), "lacks test"),
    (json.dumps(record(run_id="other")).encode(), "says run_id 'other'"),
])
def test_damaged_records_are_set_aside_not_overwritten(tmp_path, capsys, content, problem):
    """A record that cannot be used is renamed to .damaged (kept byte for byte) and reads as absent."""
    store = ResultStore(tmp_path, "g")
    store.put(record("good"))
    store.path("abc").write_bytes(content)
    assert list(store.records()) == ["good"]
    assert problem in capsys.readouterr().out
    assert store.damaged() == [store.runs_dir / "abc.json.damaged"]
    assert store.damaged()[0].read_bytes() == content
    store.path("abc").write_bytes(content)  # damaged again: the first copy is not overwritten
    assert store.get("abc") is None
    assert [p.name for p in store.damaged()] == ["abc.json.damaged", "abc.json.damaged.1"]


def test_old_schema_records_move_to_their_current_run_id(tmp_path):
    """A schema-1 record (id = hash of the full config) is re-keyed to the cell's current id, once."""
    cell = load_grid("ablations/quickstart.toml").cells[0]
    config = cell.config.to_dict()
    for later in ("eval_mode", "optimizer_args", "schedule", "schedule_args", "warmup_epochs", "standardize"):
        del config["train"][later]  # as a schema-1 record stored it: these fields came later
    del config["model"]["params"]["head_dropout"]
    del config["data"]  # came later too
    old_id = hashlib.sha256(json.dumps(config, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:12]
    assert old_id == "3b349eb368ff"  # the file name this cell's record had before schema 2
    store = ResultStore(tmp_path, "g")
    old = {k: v for k, v in record(old_id, config=config).items() if k != "schema"}
    store.put(old)
    assert list(store.records()) == [cell.run_id] != [old_id]
    assert [p.name for p in store.runs_dir.iterdir()] == [f"{cell.run_id}.json"]
    assert store.get(cell.run_id) == {**old, "run_id": cell.run_id, "schema": SCHEMA, "migrated_from": old_id}
    assert list(store.records()) == [cell.run_id]  # a second read changes nothing


def test_an_old_schema_record_whose_id_is_unchanged_is_kept(tmp_path):
    """A schema-1 record whose id is already current only gains the schema; it is never deleted."""
    cell = load_grid("ablations/quickstart.toml").cells[0]
    store = ResultStore(tmp_path, "g")
    store.put({k: v for k, v in record(cell.run_id, config=cell.config.to_dict()).items() if k != "schema"})
    assert list(store.records()) == [cell.run_id]
    assert store.get(cell.run_id)["schema"] == SCHEMA and "migrated_from" not in store.get(cell.run_id)


@pytest.mark.parametrize("umask, mode", [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_records_and_claims_follow_the_umask(tmp_path, umask, mode):
    """Records, claims and report files get the mode a plain file would, so a team can share them."""
    old = os.umask(umask)
    try:
        store = ResultStore(tmp_path, "g")
        store.put(record())
        assert store.claim("abc")
        atomic_write_text(tmp_path / "g" / "REPORT.md", "x")
    finally:
        os.umask(old)
    for path in (store.path("abc"), store.lock_path("abc"), tmp_path / "g" / "REPORT.md"):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path


def test_an_unwritable_results_folder_is_one_clear_error(tmp_path):
    """A results path that cannot hold records (here: under a plain file) fails before training."""
    (tmp_path / "file").write_text("")
    with pytest.raises(AblatrixError, match="results folder .* cannot be written"):
        ResultStore(tmp_path / "file" / "results", "g").writable()
    ResultStore(tmp_path / "results", "g").writable()
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]  # the check leaves nothing behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_results_folder_is_one_clear_error(tmp_path):
    """Without write permission on the results folder, writable() names it."""
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(AblatrixError, match="Permission denied"):
            ResultStore(tmp_path, "g").writable()
    finally:
        tmp_path.chmod(0o755)


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    """If the final rename fails, the previous content survives and no temp file is left."""
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.json"]


def test_claims_are_exclusive_and_released(tmp_path):
    """A claim held by a live process (this one) blocks a second claim until it is released."""
    store = ResultStore(tmp_path, "g")
    assert store.claim("abc") and store.claim_alive("abc")
    assert not store.claim("abc")
    assert [p.name for p in store.runs_dir.iterdir()] == ["abc.lock"]  # no temporary file left
    assert json.loads(store.lock_path("abc").read_text())["pid"] == os.getpid()
    store.release("abc")
    assert not store.claim_alive("abc") and store.claim("abc")


@pytest.mark.parametrize("write, left", [
    (lambda store: store.claim("abc"), ["abc.lock"]),
    (lambda store: atomic_write_text(store.runs_dir / "f.json", "new"), ["f.json"]),
], ids=["claim", "atomic write"])
def test_a_stop_just_after_a_temporary_file_is_made_waits_and_leaves_none(tmp_path, monkeypatch, write, left):
    """SIGTERM arriving the moment the temporary file exists (as a worker's stop did in CI) reaches the
    handler only once the write is whole, and no temporary file is left behind."""
    store = ResultStore(tmp_path, "g")
    store.runs_dir.mkdir(parents=True)
    fchmod = os.fchmod

    def stopped_here(fd, mode):
        os.kill(os.getpid(), signal.SIGTERM)
        fchmod(fd, mode)
    monkeypatch.setattr(os, "fchmod", stopped_here)
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a worker's handler
    try:
        with pytest.raises(SystemExit):
            write(store)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert sorted(p.name for p in store.runs_dir.iterdir()) == left


def test_a_lock_without_an_owner_is_not_a_live_claim(tmp_path):
    """An empty or unreadable lock file (not one ablatrix writes) does not block its cell forever."""
    store = ResultStore(tmp_path, "g")
    store.runs_dir.mkdir(parents=True)
    store.lock_path("abc").write_text("")
    assert not store.claim_alive("abc") and store.claim("abc") and store.claim_alive("abc")


@pytest.mark.parametrize("owner, age, taken_over", [
    (lambda: {"host": socket.gethostname(), "pid": dead_pid()}, 0, True),  # SIGKILLed runner
    (lambda: {"host": socket.gethostname(), "pid": os.getpid()}, 0, False),  # live runner
    (lambda: {"host": "other-host", "pid": 1}, STALE_SECONDS + 60, True),  # silent remote runner
    (lambda: {"host": "other-host", "pid": 1}, 5, False),  # remote runner with a recent heartbeat
])
def test_stale_claims_are_taken_over(tmp_path, owner, age, taken_over):
    """A claim whose owner died, or whose remote owner stopped beating, is reclaimed."""
    store = ResultStore(tmp_path, "g")
    store.runs_dir.mkdir(parents=True)
    lock = store.lock_path("abc")
    lock.write_text(json.dumps({**owner(), "since": 0}))
    os.utime(lock, (time.time() - age, time.time() - age))
    assert store.claim("abc") is taken_over


WRITER = """
import sys, time, torch
from pathlib import Path
from ablatrix.store import ResultStore
store, name, go = ResultStore(Path(sys.argv[1]), "g"), sys.argv[2], Path(sys.argv[3])
while not go.exists():
    time.sleep(0.001)
for i in range(40):
    store.put_weights("t", {f"{name}{i}": {"w": torch.full((64,), float(i))}})
"""


def test_two_runners_storing_weights_of_one_training_keep_both(tmp_path):
    """Two processes each add 40 weights to one training's file at the same moments: it ends with all
    80 (the read-merge-write is locked; unlocked, a write dropped what the other had just added)."""
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), name, str(go)]) for name in ("a", "b")]
    time.sleep(2)  # both have imported torch and wait
    go.touch()
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    store = ResultStore(tmp_path, "g")
    assert sorted(store.get_weights("t")) == sorted(f"{name}{i}" for name in "ab" for i in range(40))
