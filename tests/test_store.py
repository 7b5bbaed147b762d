"""The result store: atomic JSON records, and the provenance every record carries."""
from __future__ import annotations

import os

import pytest
import torch

from ablatrix.store import ResultStore, atomic_write_text, environment


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
