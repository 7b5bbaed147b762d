"""Progress: the ETA weighted by expected cost, plain lines without a terminal, durations in words."""
from __future__ import annotations

import io

import pytest

from ablatrix import progress
from ablatrix.progress import Progress, duration, expected_costs
from ablatrix.spec import load_grid

from conftest import TINY_GRID


@pytest.mark.parametrize("seconds, text", [(42.4, "42 s"), (185, "3 min 05 s"), (3725, "1 h 02 min"), (0, "0 s")])
def test_duration(seconds, text):
    """Seconds in the words a person reads at a glance."""
    assert duration(seconds) == text


@pytest.fixture
def cells(write_grid):
    """Two cells of 2 epochs and one of 20: the last costs ten times as much."""
    grid = load_grid(write_grid(TINY_GRID.replace("model.batchnorm = [true, false]", "train.epochs = [2, 20]")))
    return sorted([c for c in grid.cells if c.config.seed == 0] + [grid.cells[-1]], key=lambda c: c.config.train.epochs)


def test_the_eta_weighs_each_training_by_its_expected_cost(cells, monkeypatch):
    """A 2-epoch cell that took 10 s leaves a 20-epoch cell (10x its cost) and another of 20: ETA 200 s, not 20 s."""
    costs = expected_costs(cells)
    assert costs[cells[-1].run_id] == pytest.approx(10 * costs[cells[0].run_id])
    clock = iter([0.0, 0.0, 10.0, 10.0, 10.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    bar = Progress(cells, io.StringIO(), every=1e9)
    bar.done(cells[:1])
    assert bar.eta() == pytest.approx(10.0 / costs[cells[0].run_id] * (costs[cells[1].run_id] + costs[cells[2].run_id]))


def test_without_a_terminal_a_line_comes_every_interval(cells):
    """Output to a file gets plain lines: cells done, trainings running, elapsed, ETA; no bar."""
    stream = io.StringIO()
    with Progress(cells, stream, every=0.0) as bar:
        bar.running(2)
        bar.set_postfix(epoch=1)
        bar.done(cells[:1])
    lines = stream.getvalue().splitlines()
    assert lines[1].startswith("progress: 0/3 cells done, 2 training(s) running, elapsed 0 s, ETA after the first")
    assert lines[-1].startswith("progress: 1/3 cells done, 2 training(s) running") and "ETA " in lines[-1]
    assert "|" not in stream.getvalue()  # no tqdm bar in a log file
