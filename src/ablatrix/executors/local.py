"""The local executor: units in this process, or in `workers` worker processes.

On CPU each process gets its share of the cores as torch threads (small models scale better over
processes than over threads); on CUDA several processes share each GPU (`--runs-per-gpu`), since
one small CNN leaves a GPU mostly idle.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from collections import deque
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Any

import torch

from ..cores import Runner, threads_for
from ..progress import PROGRESS_SECONDS, Progress
from ..runner import RunOptions, after_death, run_claimed, store_record
from ..scheduling import Summary, Todo, Unit, one_training, units


def run_sequential(todo: Todo, options: RunOptions, bar: Progress) -> list[str]:
    statuses, threads = [], torch.get_num_threads()
    try:
        for unit in units(todo, options.pack, options.device):
            if options.device.type == "cpu":  # this runner's share of the cores, as the training starts
                torch.set_num_threads(threads_for(1))
            kind = "one training" if one_training([job.cell for job in unit]) else "packed"
            bar.set_description(unit[0].cell.label() + (f" and {len(unit) - 1} more, {kind}" if len(unit) > 1 else ""))
            statuses += run_claimed(unit, options, lambda row: bar.set_postfix(
                epoch=row["epoch"], val_acc=f"{row['val_accuracy']:.3f}"))
            bar.done([job.cell for job in unit])
    finally:
        torch.set_num_threads(threads)  # a notebook's own setting, as it was
    return statuses


def _context() -> multiprocessing.context.BaseContext:
    """Forkserver where the system has it: one server process imports torch once and every worker
    forks from it in a fraction of a second, instead of importing torch again (seconds each: a
    replaced worker, or the next executor of a notebook, waits that long). Not plain fork: a fork of
    a process that has run torch's threads can deadlock, and the server runs none."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    # torch._dynamo: torch's optimisers import it at their first step (about 2 s in every worker).
    ctx.set_forkserver_preload(["torch", "torch._dynamo", __name__])  # no effect once the server runs
    return ctx


def _worker(conn: Connection, device: str, workers: int, options: RunOptions, cwd: str, path: list[str]) -> None:
    """A worker: trains the units (a cell or a pack) the parent sends, one at a time, until None,
    each with its share of the CPU threads (`cores.threads_for`) as the unit starts. It takes the
    parent's folder and import path as they are now, as a spawned one would (a forkserver's are
    those of when it started: a relative results folder would be another)."""
    os.chdir(cwd)
    sys.path[:] = path
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle...
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # ...it stops us so that claims are released
    options.environment.prepare()
    options = replace(options, device=torch.device(device))
    while (unit := conn.recv()) is not None:
        torch.set_num_threads(threads_for(workers) if options.device.type == "cpu" else 1)
        conn.send(run_claimed(unit, options))
    # Done: holding no claim, a SIGTERM (the parent's exit ends daemonic workers still tearing
    # down torch) may end us quietly, not as a SystemExit inside an atexit callback.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass
class _Slot:
    """One worker process and the unit it is training."""

    device: str
    process: BaseProcess
    conn: Connection
    unit: Unit | None = None


def _release_dead(unit: Unit) -> None:
    """Free the claims a dead (or stopped) worker held on `unit`'s cells."""
    for job in unit:
        if not job.store.claim_alive(job.cell.run_id):
            job.store.release(job.cell.run_id)


class LocalExecutor:
    """Units in this process, or in `options.workers` worker processes, each with its own device
    and thread share. The workers live until `close`, so the rounds of `run --until-decided` pay
    their start-up once.

    Each worker holds one unit at a time and the parent knows which, so a worker that dies (killed
    for memory, a crash in native code) costs only its own cells' attempt: a new worker takes its
    place, and the cells are queued again (`runner.after_death`).
    """

    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.slots: list[_Slot] = []
        self.ctx = _context()
        if options.device.type == "cuda" and options.device.index is None:
            self.devices = [f"cuda:{i % torch.cuda.device_count()}" for i in range(options.workers)]
        else:
            self.devices = [str(options.device)] * options.workers
        self.runner = Runner()

    def __enter__(self) -> "LocalExecutor":
        self.runner.__enter__()  # counted among this machine's runners while it lives (`cores`)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
        self.runner.__exit__()

    def close(self) -> None:
        """Tell the idle workers to exit. They are not joined: their torch teardown (about 1 s)
        need not hold up the caller."""
        for slot in self.slots:
            try:
                slot.conn.send(None)
            except OSError:  # already gone
                pass
        self.slots = []

    def run(self, todo: Todo) -> Summary:
        with Progress([cell for cell, _ in todo]) as bar:
            if self.options.workers > 1 and len(todo) > 1:
                statuses = self._parallel(todo, bar)
            else:
                statuses = run_sequential(todo, self.options, bar)
        return Summary.of(statuses)

    def _start(self, device: str) -> _Slot:
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=_worker, daemon=True, args=(
            child, device, len(self.devices), self.options, os.getcwd(), list(sys.path)))
        process.start()
        child.close()  # the worker's end: when the worker dies, reading ours gives EOFError
        return _Slot(device, process, parent)

    def _parallel(self, todo: Todo, bar: Progress) -> list[str]:
        options, slots = self.options, self.slots
        queue: deque[Unit] = deque(units(todo, options.pack, options.device))
        slots += [self._start(device) for device in self.devices[len(slots):len(queue)]]

        def hand_out(slot: _Slot) -> None:
            """Give an idle worker the next unit (a worker that died while idle is replaced first)."""
            slot.unit = queue.popleft() if queue else None
            if slot.unit is not None:
                try:
                    slot.conn.send(slot.unit)
                except OSError:
                    fresh = self._start(slot.device)
                    slots[slots.index(slot)], fresh.unit = fresh, slot.unit
                    fresh.conn.send(fresh.unit)

        statuses = []
        try:
            for slot in list(slots):
                hand_out(slot)
            while busy := {slot.conn: slot for slot in slots if slot.unit}:
                bar.running(len(busy))
                ready = wait(list(busy), timeout=PROGRESS_SECONDS)
                bar.set_postfix()  # a progress line while long trainings run
                for conn in ready:
                    slot = busy[conn]
                    assert slot.unit is not None
                    try:
                        statuses += conn.recv()
                        bar.done([job.cell for job in slot.unit])
                    except (EOFError, ConnectionResetError):  # the worker died with its unit
                        slot.process.join()
                        code = slot.process.exitcode
                        error = (f"WorkerDied: the worker process training this cell ended with exit code "
                                 f"{code}" + (" (killed by a signal, e.g. for memory)" if code < 0 else ""))
                        _release_dead(slot.unit)
                        retried, lost = after_death(slot.unit, options, error, "no traceback: the process died")
                        for job, rec in lost:
                            statuses.append(store_record(job.cell, job.store, rec))
                            bar.done([job.cell])
                        slots[slots.index(slot)] = slot = self._start(slot.device)
                        if retried:
                            queue.append(retried)
                    hand_out(slot)
        finally:
            # On Ctrl-C or an error, stop the busy workers (and drop them from the pool).
            stopped = [slot for slot in slots if slot.unit is not None]
            for slot in stopped:
                slot.process.terminate()
            for slot in stopped:
                slot.process.join()
                slots.remove(slot)
                _release_dead(slot.unit)  # stopped between claiming and its try block
        return statuses
