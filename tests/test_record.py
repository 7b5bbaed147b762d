"""Run records: what a record says of its outcome and the weights it tested, and the provenance
every record carries."""
from __future__ import annotations

import subprocess

import pytest
import torch

from ablatrix import record
from ablatrix.loop import TrainingDiverged
from ablatrix.record import code_revision, environment


@pytest.mark.parametrize("result, status, error", [
    ({"test": {"accuracy": 0.5}}, "done", None),
    (TrainingDiverged("training loss became nan in epoch 3"), "failed",
     "TrainingDiverged: training loss became nan in epoch 3"),
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.\nmore"), "failed",
     "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. (" + record.OOM_HINT + ")"),
])
def test_an_outcome_is_the_result_or_the_failure_in_one_line(result, status, error):
    """A result becomes a done record's fields; an exception a failed one's error line (out of memory
    with what to change) and traceback."""
    out = record.outcome(result)
    assert out["status"] == status and out.get("error") == error
    assert ("traceback" in out) == (status == "failed")


@pytest.mark.parametrize("train, tested", [
    ({}, {"weights": "best-eval", "epoch": 2, "eval_mode": "eval"}),
    ({"restore_best": False, "eval_mode": "train"}, {"weights": "final", "epoch": 3, "eval_mode": "train"}),
])
def test_a_record_written_before_records_said_what_they_tested_gets_it_from_its_config(train, tested):
    """Older records lack `tested`: the best epoch with restore_best (the default), else the last;
    a record that has it is taken at its word."""
    old = {"config": {"train": train}, "best_epoch": 2, "epochs_trained": 3}
    assert record.tested_of(old) == tested
    assert record.tested_of({**old, "tested": {"weights": "x", "epoch": 1, "eval_mode": "eval"}})["epoch"] == 1


def test_environment_describes_versions_device_and_code():
    """Records name the python/torch versions, the device and the code revision."""
    env = environment(torch.device("cpu"))
    assert env["versions"]["torch"] == torch.__version__.split("+")[0]
    assert env["device"] == "cpu" and env["device_name"]
    assert env["code_revision"].startswith(("git:", "ablatrix=="))


def test_code_revision_is_dirty_only_when_the_package_itself_changed(tmp_path):
    """-dirty means the package's own files differ from the commit; a changed result or grid elsewhere
    in the repository, or an untracked file, leaves the revision clean."""
    git = lambda *args: subprocess.run(["git", "-C", str(tmp_path), *args], check=True,  # noqa: E731
                                       capture_output=True, text=True).stdout.strip()
    package = tmp_path / "src" / "pkg"
    package.mkdir(parents=True)
    (package / "code.py").write_text("x = 1\n")
    (tmp_path / "results.json").write_text("{}")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    head = git("rev-parse", "--short=12", "HEAD")
    assert code_revision(package) == f"git:{head}"
    (tmp_path / "results.json").write_text('{"new": 1}')
    (package / "scratch.py").write_text("")
    assert code_revision(package) == f"git:{head}"
    (package / "code.py").write_text("x = 2\n")
    assert code_revision(package) == f"git:{head}-dirty"
