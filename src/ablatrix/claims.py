"""The cells a runner holds: claimed atomically before training, renewed while it trains, released
once their records are stored (or when the runner stops).

The lock files themselves are the store's (`ResultStore.claim`); this object is what a runner
holds of them, so that no claim of its own outlives it, whichever way it stops.
"""
from __future__ import annotations

from typing import Iterable

from .scheduling import Job


class Claims:
    """Claims of one runner. `retry_failed`: a cell whose record says failed is still to train."""

    def __init__(self, retry_failed: bool) -> None:
        self.retry_failed = retry_failed
        self.held: dict[str, Job] = {}

    def take(self, job: Job) -> bool:
        """Claim a cell that still needs training; False if another runner has it or finished it.

        Two runners (or workers) that list the same pending cell never both train it: the claim is
        atomic, and a record that appeared since the cell was listed is respected.
        """
        run_id = job.cell.run_id
        self.held[run_id] = job  # before the claim: a Ctrl-C inside it still finds the cell here
        if job.store.claim(run_id):
            record = job.store.get(run_id)
            if record is None or (record["status"] != "done" and self.retry_failed):
                return True
            job.store.release(run_id)
        del self.held[run_id]
        return False

    def renew(self, jobs: Iterable[Job], epoch: int | None = None) -> None:
        """A heartbeat for each of `jobs`, saying the epoch their training reached where known."""
        for job in jobs:
            job.store.heartbeat(job.cell.run_id, None if epoch is None else f"{epoch}/{job.cell.config.train.epochs}")

    def release(self, jobs: Iterable[Job]) -> None:
        for job in jobs:
            job.store.release(job.cell.run_id)
            self.held.pop(job.cell.run_id, None)

    def release_all(self) -> None:
        """Release every claim still held that is this process's own (on the way out, however it ends)."""
        for run_id, job in list(self.held.items()):
            job.store.release_own(run_id)
            del self.held[run_id]
