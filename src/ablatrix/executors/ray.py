"""The Ray executor: each unit a Ray task on a cluster (or a local Ray) asking for a share of a GPU
or some CPUs. The driver claims the cells, renews the claims and writes the records the tasks
return: workers need the data folder and the grid's plugin files (same paths on every node),
but not the results folder.
"""
from __future__ import annotations

import math
import socket
import time
from collections import deque
from dataclasses import replace
from typing import Any, Sequence

import torch

from ..claims import Claims
from ..errors import AblatrixError
from ..loop import Checkpoint
from ..progress import PROGRESS_SECONDS, Progress
from ..record import Record, lost
from ..runner import RunOptions, Weights, after_death, run_unit, store_record, unit_checkpoint
from ..scheduling import Summary, Todo, Unit, units
from ..spec import Cell

HEARTBEAT_SECONDS = 60  # how often the driver renews its claims; well inside STALE_SECONDS


def _ray_unit(cells: Sequence[Cell], options: RunOptions, earlier: Sequence[tuple[str, ...]]
              ) -> list[tuple[Record, Weights | None]]:
    """A unit inside a Ray worker, on the GPU share Ray assigned (it sets CUDA_VISIBLE_DEVICES)."""
    import ray
    options.environment.prepare()
    torch.set_num_threads(options.cpus_per_run)
    options = replace(options, device=torch.device("cuda" if options.gpus_per_run else "cpu"))
    results = run_unit(cells, options, earlier=earlier, checkpoint=unit_checkpoint(cells, None, options))
    for rec, _ in results:
        rec["execution"].update(host=socket.gethostname(), node_id=ray.get_runtime_context().get_node_id())
    return results


def _check_reachable(address: str) -> None:
    """Ray retries an unreachable address for minutes; fail in seconds, with one clear line."""
    host, colon, port = address.removeprefix("ray://").rpartition(":")
    if not colon or not port.isdigit():  # "auto" and other forms Ray resolves itself
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise AblatrixError(f"--address {address}: no Ray cluster answers there ({exc})") from None


def _largest_node(ray: Any, resource: str) -> float:
    return max((node["Resources"].get(resource, 0) for node in ray.nodes() if node["Alive"]), default=0)


def _join_ray(options: RunOptions) -> bool:
    """Start a local Ray, or join the one at `options.address`; True if this call started Ray."""
    import ray
    if ray.is_initialized():
        return False
    if options.address:
        _check_reachable(options.address)
    try:
        # "local": a fresh Ray of our own; without it Ray joins any cluster it finds running
        # on this machine (or in RAY_ADDRESS), a dead one included.
        ray.init(address=options.address or "local", include_dashboard=False,
                 logging_level="ERROR", configure_logging=False)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise AblatrixError(f"--address {options.address}: cannot join the Ray cluster: {exc}") from None
    return True


class RayExecutor:
    """Each unit a Ray task asking for `cpus_per_run` CPUs and `gpus_per_run` of a GPU (`run_ray`).
    Ray is joined (or a local one started) at the first `run` and left (stopped) at `close`, so
    the rounds of `run --until-decided` share one Ray."""

    def __init__(self, options: RunOptions) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise AblatrixError("--executor ray needs Ray: pip install 'ablatrix[ray]'") from None
        self.options = replace(options, data_root=options.data_root.resolve())  # workers have another cwd
        self.joined = self.started = False

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def run(self, todo: Todo) -> Summary:
        if not self.joined:
            self.started, self.joined = _join_ray(self.options), True
        return run_ray(todo, self.options, self.started)

    def close(self) -> None:
        import ray
        if self.started:
            ray.shutdown()
        self.joined = self.started = False


def run_ray(todo: Todo, options: RunOptions, owned: bool) -> Summary:
    """Each unit a Ray task, on the Ray this process has joined (`owned`: one it started, and stops
    on the way out).

    The driver keeps twice as many tasks in flight as the cluster can run at once, claims each
    cell as it submits it (so other runners on the same results share the rest), renews the
    claims while the tasks run, and stores the records the tasks return. A task whose worker or
    node dies (killed for memory, node lost) is submitted again, keeping its claims
    (`runner.after_death`); an exception raised by training itself is recorded `failed` at once
    (Ray's own retries are off, so the driver decides which is which).
    """
    import ray
    running: dict[Any, Unit] = {}
    claims = Claims(options.retry_failed)
    try:
        for resource, need in (("CPU", options.cpus_per_run), ("GPU", options.gpus_per_run)):
            have = _largest_node(ray, resource)
            if need > have:
                raise AblatrixError(f"--{resource.lower()}s-per-run {need:g}: the largest node of the "
                                    f"Ray cluster has {have:g} {resource}(s)")
        task = ray.remote(_ray_unit).options(num_cpus=options.cpus_per_run,
                                             num_gpus=options.gpus_per_run, max_retries=0)

        def submit(unit: Unit) -> None:
            running[task.remote([job.cell for job in unit], options, [job.earlier for job in unit])] = unit

        resources = ray.cluster_resources()
        slots = min(resources.get("CPU", 0) // options.cpus_per_run,
                    resources.get("GPU", 0) // options.gpus_per_run if options.gpus_per_run else math.inf)
        in_flight = 2 * max(1, int(slots))  # enough to keep the cluster busy; the rest stay unclaimed
        queue, statuses = deque(units(todo, options.pack, options.device)), []
        with Progress([cell for cell, _ in todo]) as bar:
            renewed = time.monotonic()
            while queue or running:
                while queue and len(running) < in_flight:  # claim cells only when submitting them
                    unit = queue.popleft()
                    claimed = tuple(job for job in unit if claims.take(job))
                    statuses += ["elsewhere"] * (len(unit) - len(claimed))
                    bar.done([job.cell for job in unit if job not in claimed])
                    if claimed:
                        submit(claimed)
                if not running:
                    break
                bar.running(len(running))
                done, _ = ray.wait(list(running), num_returns=1, timeout=min(HEARTBEAT_SECONDS, PROGRESS_SECONDS))
                bar.set_postfix()
                for ref in done:
                    unit = running.pop(ref)
                    try:
                        results = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:  # raised outside training (e.g. unpickling)
                        error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                        results = [(lost(job.cell, options.placement(), job.earlier, error, str(exc)), None)
                                   for job in unit]
                    except ray.exceptions.RayError as exc:  # the worker or its node died
                        error = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                        retried, gone = after_death(unit, options, error, str(exc))
                        if retried:  # they keep their claims
                            submit(retried)
                        unit, results = tuple(job for job, _ in gone), [(rec, None) for _, rec in gone]
                    for job, result in zip(unit, results):
                        statuses.append(store_record(job.cell, job.store, *result))
                        claims.release([job])
                        bar.done([job.cell])
                    if unit and (path := unit_checkpoint([job.cell for job in unit], None, options)):
                        Checkpoint(path).remove()  # the records hold it all now
                if time.monotonic() - renewed > HEARTBEAT_SECONDS:
                    renewed = time.monotonic()
                    for unit in running.values():
                        claims.renew(unit)
    finally:  # on Ctrl-C or an error: stop the tasks still running and free their cells
        if not owned:  # a Ray we started goes down whole (at close); a force-cancel that races the
            for ref in running:  # task's completion can abort the driver (a Ray 2.60 CHECK failure)
                ray.cancel(ref)
        # Every claim of this call, not only those of `running`: Ctrl-C can land between a claim
        # and its submit, or between taking a finished task off `running` and storing its record.
        claims.release_all()
    return Summary.of(statuses)
