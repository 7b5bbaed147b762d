"""Threads per training: the machine's cores shared among the live runners."""
from __future__ import annotations

import pytest

from ablatrix.cores import Runner, available_cores, live_runners, threads_for

from conftest import dead_pid


def test_runners_share_the_cores_and_a_dead_runner_leaves(tmp_path):
    """One runner gets every core; a second live one halves it; a dead runner's file is removed."""
    folder = tmp_path / "runners"
    assert live_runners(folder) == 1 and threads_for(1, folder) == available_cores()
    with Runner(folder):
        (folder / str(dead_pid())).touch()
        assert live_runners(folder) == 1 and len(list(folder.iterdir())) == 1
        (folder / "1").touch()  # pid 1 is alive on every Unix
        assert live_runners(folder) == 2
        assert threads_for(1, folder) == max(1, available_cores() // 2)
    assert sorted(p.name for p in folder.iterdir()) == ["1"]  # leaving removes our own file only


@pytest.mark.parametrize("workers", [1, 2, 64])
def test_threads_are_at_least_one(tmp_path, workers):
    """However many workers or runners, a training gets at least one thread."""
    assert threads_for(workers, tmp_path / "none") == max(1, available_cores() // workers)
