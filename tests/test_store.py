"""The result store: atomic JSON records, and the provenance every record carries."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from ablatrix.store import STALE_SECONDS, ResultStore, atomic_write_text, environment


def test_put_get_records_round_trip(tmp_path):
    """A record written under its run id reads back equal; missing ids read as None."""
    store = ResultStore(tmp_path, "g")
    store.put({"run_id": "abc", "status": "done", "x": [1.5, None]})
    assert store.get("abc") == {"run_id": "abc", "status": "done", "x": [1.5, None]}
    assert store.get("nope") is None
    assert list(store.records()) == ["abc"]
    assert store.path("abc") == tmp_path / "g" / "runs" / "abc.json"


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


def test_environment_describes_versions_device_and_code():
    """Records name the python/torch versions, the device and the code revision."""
    env = environment(torch.device("cpu"))
    assert env["versions"]["torch"] == torch.__version__.split("+")[0]
    assert env["device"] == "cpu" and env["device_name"]
    assert env["code_revision"].startswith(("git:", "ablatrix=="))


def dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_claims_are_exclusive_and_released(tmp_path):
    """A claim held by a live process (this one) blocks a second claim until it is released."""
    store = ResultStore(tmp_path, "g")
    assert store.claim("abc") and store.claim_alive("abc")
    assert not store.claim("abc")
    assert [p.name for p in store.runs_dir.iterdir()] == ["abc.lock"]  # no temporary file left
    assert json.loads(store.lock_path("abc").read_text())["pid"] == os.getpid()
    store.release("abc")
    assert not store.claim_alive("abc") and store.claim("abc")


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
