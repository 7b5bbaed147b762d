"""The CLI end to end: list, run, report on a tiny grid; bad input is one line and exit 2."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
import random
import re
import os
import signal
import socket
import subprocess
import time

import pandas as pd
import pytest
import torch

import ablatrix

from ablatrix.cli import main
from ablatrix.executors import run_grids
from ablatrix.spec import load_grid
from ablatrix.store import ResultStore

from conftest import OPTIONS, TINY_GRID, fabricate, finished_runs, resume, start_run, stop_a_run


def test_list_run_report_end_to_end(write_grid, tmp_path, capsys):
    """list shows pending cells, run trains them, report writes tables, a second run trains nothing."""
    grid, results = write_grid(), tmp_path / "out"
    assert main(["list", str(grid), "--results", str(results)]) == 0
    listing = capsys.readouterr().out
    assert "tiny" in listing and listing.count("pending") == 4 and "params" in listing
    assert not results.exists()

    assert main(["run", str(grid), "--results", str(results), "--device", "cpu"]) == 0
    assert "trained 4, failed 0, already done 0, by another runner 0" in capsys.readouterr().out
    assert len(list((results / "tiny" / "runs").glob("*.json"))) == 4

    assert main(["run", str(grid), "--results", str(results)]) == 0
    assert "trained 0, failed 0, already done 4, by another runner 0" in capsys.readouterr().out

    assert main(["report", str(grid), "--results", str(results)]) == 0
    runs = pd.read_csv(results / "tiny" / "runs.csv")
    assert set(runs["status"]) == {"done"} and runs["test_accuracy"].between(0, 1).all()
    assert (results / "tiny" / "REPORT.md").exists()

    assert main(["list", str(grid), "--results", str(results)]) == 0
    assert capsys.readouterr().out.count(" done") == 4


def test_set_override_trains_new_cells(write_grid, tmp_path, capsys):
    """--set train.epochs=1 makes new run ids, so they train next to the old ones."""
    grid, results = write_grid(), tmp_path
    assert main(["run", str(grid), "--results", str(results), "--set", "seeds=[0]"]) == 0
    assert main(["run", str(grid), "--results", str(results), "--set", "seeds=[0]",
                 "--set", "train.epochs=1"]) == 0
    assert "trained 2, failed 0, already done 0, by another runner 0" in capsys.readouterr().out.splitlines()[-1]
    epochs = sorted(json.loads(p.read_text())["epochs_trained"] for p in (results / "tiny" / "runs").glob("*.json"))
    assert epochs == [1, 1, 2, 2]


@pytest.mark.parametrize("args, old, new, message", [
    (["run"], '["digits"]', '["cifar100"]', "unknown dataset 'cifar100'; choose from:"),
    (["run"], "[true, false]", "[true]\nmodel.dropout = [1.0]", "is not allowed; expected a number in [0, 1)"),
    (["run"], "conv = [4]", "conv = [4, 4, 4, 4, 4]", "conv block 4: max pool"),
    (["run"], 'name = "tiny"', "name = [", "malformed TOML"),
    (["run", "--set", "train.batch_size=0"], "", "", "train.batch_size = 0 is not allowed"),
    (["run", "--device", "tpu"], "", "", "--device 'tpu'"),
    (["run", "--executor", "ray", "--workers", "2"], "", "", "--workers does not apply to --executor ray"),
    (["run", "--gpus-per-run", "0.5"], "", "", "--gpus-per-run does not apply to --executor local"),
    (["run", "--executor", "ray", "--gpus-per-run", "1.5"], "", "", "--gpus-per-run takes a share in (0, 1]"),
    (["run", "--executor", "ray", "--cpus-per-run", "0"], "", "", "--cpus-per-run an integer >= 1"),
    (["run", "--executor", "ray", "--address", "127.0.0.1:1"], "", "", "--address 127.0.0.1:1: no Ray cluster answers"),
    (["run", "--pack", "0"], "", "", "--pack 0: expected an integer >= 1 or auto"),
    (["run", "--pack", "many"], "", "", "--pack many: expected an integer >= 1 or auto"),
    (["list"], "epochs = 2", "epochz = 2", "unknown field train.epochz"),
    (["report"], "seeds = [0, 1]", "seeds = []", "seeds = [] is not allowed"),
])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(write_grid, tmp_path, capsys, args, old, new, message):
    """Bad input prints one `ablatrix: error:` line, exits 2, and creates nothing under --results."""
    assert old in TINY_GRID
    grid = write_grid(TINY_GRID.replace(old, new))
    results = tmp_path / "results"
    results.mkdir()
    (results / "keep.txt").write_text("untouched")
    code = main([args[0], str(grid), "--results", str(results), *args[1:]])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("ablatrix: error: ") and err.count("\n") == 1, err
    assert message in err
    assert sorted(p.name for p in results.iterdir()) == ["keep.txt"]


def test_workers_on_a_gpu_are_refused(write_grid, tmp_path, capsys, monkeypatch):
    """--workers where the run would train on CUDA is one error naming --runs-per-gpu, not a grid trained
    one cell at a time."""
    monkeypatch.setattr("ablatrix.runner.resolve_device", lambda name: torch.device("cuda"))
    assert main(["run", str(write_grid()), "--results", str(tmp_path / "res"), "--workers", "2"]) == 2
    assert "--workers is for CPU processes and this run trains on cuda: give --runs-per-gpu 2, or --device cpu" \
        in capsys.readouterr().err
    assert not (tmp_path / "res").exists()


@pytest.mark.slow
# SIGTERM is handled once, in the runner's main process (a sequential runner's is the same code as
# a 2-worker one's parent), so the 2-worker case covers it; SIGINT reaches workers too, so both. The
# ray executor's case is in tests/test_executors.py.
@pytest.mark.parametrize("workers, stop", [("1", "int"), ("2", "int"), ("2", "term")],
                         ids=["sequential", "2-workers", "2-workers-sigterm"])
def test_ctrl_c_keeps_finished_runs_and_the_next_run_resumes(write_grid, tmp_path, workers, stop):
    """SIGINT to a real `ablatrix run` (its process group, as a terminal sends it) exits 130 with a
    message, SIGTERM to the runner alone (as `docker stop` sends it) 143; either way every saved
    record is complete, no claim is left, and the next run trains only the rest."""
    grid = write_grid(TINY_GRID.replace("epochs = 2", "epochs = 20"))
    code, err = stop_a_run(grid, tmp_path / "res", ["--workers", workers, "--device", "cpu"], stop)
    assert code == (130 if stop == "int" else 143), err
    assert ("interrupted" if stop == "int" else "terminated (SIGTERM)") + "; every finished run is saved" in err
    saved = finished_runs(tmp_path / "res" / "tiny" / "runs")
    assert resume(grid, tmp_path / "res") == (4 - saved, saved)


@pytest.mark.slow
def test_two_concurrent_runners_train_every_cell_once(write_grid, tmp_path):
    """Two `ablatrix run` processes on one grid split the cells: each trained exactly once."""
    grid = write_grid(TINY_GRID.replace("seeds = [0, 1]", "seeds = [0, 1, 2]").replace("epochs = 2", "epochs = 6"))
    procs = [start_run(grid, tmp_path / "res") for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    trained = [int(re.search(r"trained (\d+)", out).group(1)) for out in outs]
    assert sum(trained) == 6, outs
    records = [json.loads(p.read_text()) for p in (tmp_path / "res" / "tiny" / "runs").glob("*.json")]
    assert len(records) == 6 and all(r["status"] == "done" for r in records)
    assert not list((tmp_path / "res" / "tiny" / "runs").glob("*.lock"))


@pytest.mark.slow
def test_sigkill_leaves_no_partial_record_and_the_next_run_resumes(write_grid, tmp_path):
    """SIGKILL mid-grid: every stored record parses; its dead claim is taken over; all cells finish once."""
    grid = write_grid(TINY_GRID.replace("epochs = 2", "epochs = 20"))
    runs = tmp_path / "res" / "tiny" / "runs"
    proc = start_run(grid, tmp_path / "res")
    deadline = time.monotonic() + 120
    # After the first record, and while the next cell's claim is held (between a record and the
    # next claim no claim exists for a moment, and a kill then would leave none to take over).
    while not (list(runs.glob("*.json")) and list(runs.glob("*.lock"))) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    saved = {p.stem: json.loads(p.read_text()) for p in runs.glob("*.json")}  # no partial file
    assert 1 <= len(saved) < 4 and list(runs.glob("*.lock"))  # killed while holding a claim
    assert resume(grid, tmp_path / "res") == (4 - len(saved), len(saved))
    assert not list(runs.glob("*.lock")) and len(list(runs.glob("*.json"))) == 4


def test_status_counts_cells_and_finds_runs_the_grid_no_longer_has(write_grid, tmp_path, capsys):
    """status: done/failed/running/pending counts; after a grid edit, the old runs are listed as stale."""
    grid = write_grid()
    assert main(["run", str(grid), "--results", str(tmp_path), "--set", "seeds=[0]"]) == 0
    capsys.readouterr()
    assert main(["status", str(grid), "--results", str(tmp_path)]) == 0
    assert "tiny: 4 cells: 2 done, 0 failed, 0 running, 2 pending" in capsys.readouterr().out
    grid.write_text(grid.read_text().replace("epochs = 2", "epochs = 3"))
    assert main(["status", str(grid), "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0 done, 0 failed, 0 running, 4 pending" in out and "2 stored run(s) match no cell" in out


def test_a_damaged_record_is_set_aside_listed_and_retrained(write_grid, tmp_path, capsys):
    """A truncated record: status and report name it, nothing crashes, and run trains its cell again."""
    grid = write_grid()
    assert main(["run", str(grid), "--results", str(tmp_path), "--set", "seeds=[0]"]) == 0
    record = next((tmp_path / "tiny" / "runs").glob("*.json"))
    record.write_text(record.read_text()[:100])  # a sync tool caught mid-write
    capsys.readouterr()
    assert main(["status", str(grid), "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 done, 0 failed, 0 running, 3 pending" in out and f"{record.name}.damaged" in out
    assert main(["report", str(grid), "--results", str(tmp_path)]) == 0
    assert f"`tiny/runs/{record.name}.damaged`" in (tmp_path / "tiny" / "REPORT.md").read_text()
    assert main(["run", str(grid), "--results", str(tmp_path), "--set", "seeds=[0]"]) == 0
    assert "trained 1, failed 0, already done 1" in capsys.readouterr().out
    assert record.exists() and (record.parent / f"{record.name}.damaged").exists()  # kept, never overwritten


def test_an_unwritable_results_folder_stops_run_before_training(write_grid, tmp_path, capsys):
    """--results under a plain file: one line, exit 2, nothing trained."""
    (tmp_path / "file").write_text("")
    assert main(["run", str(write_grid()), "--results", str(tmp_path / "file" / "results")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ablatrix: error: results folder") and "cannot be written" in err and err.count("\n") == 1


def test_list_and_run_count_the_distinct_trainings(write_grid, tmp_path, capsys):
    """Eval modes on the same weights: list says 8 cells are 4 trainings, run says it trained 4."""
    grid = write_grid(TINY_GRID + 'train.eval_mode = ["eval", "train"]\n')
    assert main(["list", str(grid), "--results", str(tmp_path)]) == 0
    assert "tiny (" in (out := capsys.readouterr().out) and ": 8 cells; 4 trainings" in out
    assert main(["run", str(grid), "--results", str(tmp_path)]) == 0
    assert "trained 8, failed 0, already done 0, by another runner 0; 4 distinct trainings" in capsys.readouterr().out


def test_list_prints_a_fractions_resolution_and_alias_chains_before_training(write_grid, tmp_path, capsys):
    """The factor letters, 8 of 32 configurations at resolution III, the defining relation, the chains."""
    from test_spec import FRACTION_GRID
    assert main(["list", str(write_grid(FRACTION_GRID)), "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert ": 16 cells, design fractional;" in out and "A = model.batchnorm (True / False)" in out
    assert "8 configurations of the 32 of the full factorial, resolution III; defining relation I = ABE = CDE = ABCD" in out
    assert "alias chains (terms of up to three factors):\n  A = BE = BCD\n" in out and not (tmp_path / "frac").exists()


@pytest.mark.slow
def test_sigkill_within_a_cell_several_times_resumes_to_its_uninterrupted_twin(write_grid, tmp_path):
    """kill -9 of the runner at random moments inside one training, twice: the next run resumes each
    time from the last epoch checkpoint, and the records end equal to an uninterrupted run's."""
    grid = write_grid(TINY_GRID.replace("epochs = 2", "epochs = 12")  # the kills end within 6
                      + 'train.eval_mode = ["eval", "train"]\n', name="long.toml")
    sets = ["seeds=[0]", "axes.model.batchnorm=[true]"]
    checkpoints, rng = tmp_path / "res" / "tiny" / "checkpoints", random.Random(0)
    def written() -> int:  # when the checkpoint was last written, 0 if there is none
        return max((p.stat().st_mtime_ns for p in checkpoints.glob("*.pt")), default=0)
    def next_write(after: int, proc: subprocess.Popen) -> int:
        deadline = time.monotonic() + 120
        while (when := written()) == after:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.002)
        return when
    for kill in range(2):
        proc = start_run(grid, tmp_path / "res", *[arg for s in sets for arg in ("--set", s)], "--checkpoint-seconds", "0")
        # A moment drawn within this run's third epoch, whose length its first two tell (an epoch
        # measured in another run, or seconds, let a machine whose load had just dropped, or a fast
        # one, train every epoch before the last kill): sometimes mid-epoch, sometimes mid-write.
        first = next_write(written(), proc)
        second = next_write(first, proc)
        time.sleep(rng.uniform(0.0, 1.0) * (second - first) / 1e9)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    runs = tmp_path / "res" / "tiny" / "runs"
    assert not list(runs.glob("*.json"))  # killed inside the training every time
    # The last, uninterrupted run and the twin that never stopped train in this process (the same
    # code and threads as a runner's, without its start-up).
    for results in (tmp_path / "res", tmp_path / "twin"):
        summary = run_grids([load_grid(grid, sets)], results, replace(OPTIONS, checkpoint_seconds=0))
        assert (summary.trained, summary.failed, summary.skipped) == (2, 0, 0)
    stored = {p.stem: json.loads(p.read_text()) for p in runs.glob("*.json")}
    twins = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "twin" / "tiny" / "runs").glob("*.json")}
    assert sorted(stored) == sorted(twins)
    for run_id, record in stored.items():
        resumed = record["resumed_after_epochs"]
        assert len(resumed) == 2 and resumed == sorted(resumed)
        for key in ("test", "best_epoch", "epochs_trained"):
            assert record[key] == twins[run_id][key]
        assert [{k: v for k, v in row.items() if k != "seconds"} for row in record["history"]] == \
            [{k: v for k, v in row.items() if k != "seconds"} for row in twins[run_id]["history"]]
    assert not list(checkpoints.glob("*")) and not list(runs.glob("*.lock"))


@pytest.mark.parametrize("verb, page", [("list", "running"), ("run", "running"), ("report", "reports"),
                                        ("export", "exporters"), ("fetch", "datasets")])
def test_each_verb_says_what_it_does_and_where_its_docs_are(verb, page, capsys):
    """`ablatrix VERB --help` names its docs page, and that page exists."""
    with pytest.raises(SystemExit):
        main([verb, "--help"])
    assert f"Docs: docs/{page}.md" in " ".join(capsys.readouterr().out.split())
    assert (Path(__file__).resolve().parents[1] / "docs" / f"{page}.md").exists()


def test_version(capsys):
    """`ablatrix --version` prints the installed version."""
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"ablatrix {ablatrix.__version__}"


def test_status_lists_running_cells_with_epoch_and_age(write_grid, tmp_path, capsys):
    """A live claim shows in `status` as running, with the epoch its last heartbeat said and its owner."""
    grid = load_grid(write_grid())
    store = ResultStore(tmp_path, grid.name)
    cell = grid.cells[0]
    assert store.claim(cell.run_id)
    store.heartbeat(cell.run_id, "3/40")
    assert main(["status", str(grid.path), "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0 done, 0 failed, 1 running, 3 pending" in out
    assert f"running: {cell.run_id} {cell.label()}, epoch 3/40, for 0 s ({socket.gethostname()}:{os.getpid()})" in out
    store.release(cell.run_id)
    assert not list(store.runs_dir.iterdir())  # the claim and its epoch note both go


@pytest.mark.parametrize("verb", ["run", "report", "list"])
def test_a_copied_grid_that_kept_the_name_is_refused(write_grid, tmp_path, capsys, verb):
    """A second grid file with the first one's name and results folder is a one-line error naming
    both, before anything is trained or written; the original's report is left as it was."""
    original = load_grid(write_grid())
    store = ResultStore(tmp_path / "res", "tiny", original.path)
    for cell in original.cells:
        store.put(fabricate(cell, 0.75))
    assert main(["report", str(original.path), "--results", str(tmp_path / "res")]) == 0
    before = (tmp_path / "res" / "tiny" / "REPORT.md").read_text()
    copy = write_grid(TINY_GRID.replace("epochs = 2", "epochs = 3"), name="copy.toml")
    capsys.readouterr()
    assert main([verb, str(copy), "--results", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds the runs of" in err and "grid.toml" in err and str(copy) in err
    assert (tmp_path / "res" / "tiny" / "REPORT.md").read_text() == before
    moved = original.path.rename(tmp_path / "moved.toml")  # the original moved away: no conflict any more
    assert main(["list", str(copy), "--results", str(tmp_path / "res")]) == 0 and moved.exists()


def test_the_parsers_lists_name_what_the_registries_hold():
    """--executor and --format list their choices without importing torch; the lists match the
    executor registry and the report's formats, so neither can drift."""
    from ablatrix.cli import EXECUTOR_NAMES, FORMAT_NAMES
    from ablatrix.executors import EXECUTORS
    from ablatrix.report import FORMATS
    assert sorted(EXECUTOR_NAMES) == sorted(EXECUTORS) and tuple(FORMAT_NAMES) == tuple(FORMATS)
