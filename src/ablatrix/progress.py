"""Progress of a run: a tqdm bar on a terminal, a plain line every PROGRESS_SECONDS elsewhere.

Both show cells done of the total and an ETA weighted by each training's expected cost (epochs
x parameters x input pixels, shared among the cells measured from one training): a grid whose
first cells are its smallest would otherwise promise an end long before it comes. The cost is
only a proxy; the ETA scales it by the seconds the finished trainings took per unit of it.
Without a terminal (output to a file, CI, a batch job) tqdm stays silent, so the line keeps a
log informed: cells done, trainings running, elapsed and ETA.
"""
from __future__ import annotations

import math
import os
import sys
import time
from collections import Counter
from typing import Any, Sequence, TextIO

from tqdm import tqdm

from .data import DATASETS
from .spec import Cell

# Seconds between progress lines without a terminal; ABLATRIX_PROGRESS_SECONDS sets it (a CI log
# may want fewer lines, a test more).
PROGRESS_SECONDS = float(os.environ.get("ABLATRIX_PROGRESS_SECONDS", 30))


def expected_costs(cells: Sequence[Cell]) -> dict[str, float]:
    """Each cell's share of its training's expected cost: epochs x parameters x input pixels."""
    shared = Counter(cell.config.training_id for cell in cells)
    costs = {}
    for cell in cells:
        _, height, width = DATASETS[cell.config.dataset].input_shape
        cost = cell.config.train.epochs * max(cell.params, 1) * height * width
        costs[cell.run_id] = cost / shared[cell.config.training_id]
    return costs


def duration(seconds: float) -> str:
    """'1 h 02 min', '3 min 05 s', '42 s'."""
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Progress:
    """Cells done of `cells`; `done(cells)` as they finish, `running(n)` as trainings start and end."""

    def __init__(self, cells: Sequence[Cell], stream: TextIO | None = None,
                 every: float = PROGRESS_SECONDS) -> None:
        self.costs = expected_costs(cells)
        self.total, self.cells = sum(self.costs.values()), len(cells)
        self.finished, self.cost_done, self.busy = 0, 0.0, 1
        self.stream = stream or sys.stderr
        self.terminal = self.stream.isatty()
        self.every, self.started = every, time.monotonic()
        self.last_line = self.started
        self.bar = tqdm(total=self.total or 1, disable=not self.terminal, file=self.stream, dynamic_ncols=True,
                        bar_format="{desc}{percentage:3.0f}%|{bar}| {postfix}")
        self._show()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()

    def eta(self) -> float:
        """Seconds left: the remaining cost at the seconds per unit of cost measured so far (NaN before)."""
        if not self.cost_done:
            return math.nan
        return (time.monotonic() - self.started) / self.cost_done * (self.total - self.cost_done)

    def done(self, cells: Sequence[Cell]) -> None:
        cost = sum(self.costs.get(cell.run_id, 0.0) for cell in cells)
        self.finished += len(cells)
        self.cost_done += cost
        self.bar.update(cost)
        self._show()

    def running(self, trainings: int) -> None:
        self.busy = trainings

    def set_description(self, text: str) -> None:
        self.bar.set_description(text, refresh=False)

    def set_postfix(self, **values: Any) -> None:
        self._show(values)

    def _show(self, extra: dict[str, Any] | None = None) -> None:
        eta = self.eta()
        status = f"{self.finished}/{self.cells} cells, ETA " + ("after the first training" if math.isnan(eta)
                                                                else duration(eta))
        self.bar.set_postfix_str(status + "".join(f", {k} {v}" for k, v in (extra or {}).items()))
        now = time.monotonic()
        if not self.terminal and now - self.last_line >= self.every:
            self.last_line = now
            print(f"progress: {self.finished}/{self.cells} cells done, {self.busy} training(s) running, "
                  f"elapsed {duration(now - self.started)}, ETA "
                  + ("after the first training" if math.isnan(eta) else duration(eta)),
                  file=self.stream, flush=True)
