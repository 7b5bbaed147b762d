"""`ablatrix list|run|report GRID...`: parse arguments, load grids, hand over to the modules.

Each verb imports what it uses when it runs: torch, scipy and matplotlib take seconds to import,
and `--help` or a mistyped flag should answer at once.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from . import __version__
from .errors import AblatrixError

if TYPE_CHECKING:
    from .runner import RunOptions
    from .spec import Grid

EXECUTOR_NAMES = ("local", "ray", "slurm")  # executors.EXECUTORS' names, listed here so --help needs no torch
FORMAT_NAMES = ("md", "tex", "csv", "html")  # report.FORMATS, likewise


def _grids(args: argparse.Namespace) -> list[Grid]:
    from .spec import load_grid
    from .store import ResultStore
    grids = [load_grid(path, args.set or ()) for path in args.grids]
    names = [g.name for g in grids]
    if len(set(names)) != len(names):
        raise AblatrixError(f"two grid files share the name {max(names, key=names.count)!r}; "
                            "their results would mix")
    for grid in grids:
        ResultStore(args.results, grid.name).bind(grid.path, write=False)  # `run` records it (run_grids)
    return grids


def cmd_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from .data import data_root
    from .designs import TWO_LEVEL, describe
    from .record import RunRecord
    from .spec import axis_value
    from .store import ResultStore
    for grid in _grids(args):
        records = {k: RunRecord.of(v) for k, v in ResultStore(args.results, grid.name).records().items()}
        cells = grid.stored_cells(records)
        rows = []
        for cell in cells:
            record = records.get(cell.run_id)
            rows.append([cell.run_id, cell.variant, cell.config.dataset, cell.config.seed,
                         *(axis_value(cell.axes.get(a, "—")) for a in grid.cell_keys), f"{cell.params:,}",
                         record.status if record else "pending"]
                        + ([record.added_for if record else ""] if grid.extra_seeds else []))
        added = len(cells) - len(grid.cells)
        print(f"{grid.name} ({grid.path}): {len(grid.cells)} cells"
              + (f", design {grid.design}" if grid.design.kind != "full" else "") + (
            f" + {added} of {len(grid.extra_cells)} added-seed cells (max_seeds)" if grid.extra_seeds else "")
            + f"; {len({c.config.training_id for c in cells})} trainings (cells that differ only in how "
              "the trained model is measured share one)")
        if grid.design.kind in TWO_LEVEL:
            print("\n".join(describe(grid.axes, grid.design)))
        print(tabulate(rows, headers=["run_id", "variant", "dataset", "seed", *grid.cell_keys, "params", "status"]
                       + (["added for"] if grid.extra_seeds else []), tablefmt="simple"))
        if args.data_dir is not None:  # what `run --data-dir` would find, before anyone waits for it
            from .report import unavailable_data
            missing = unavailable_data([grid], data_root(args.data_dir))
            ready = [d for d in grid.datasets if d not in missing]
            print("data ready: " + (", ".join(ready) or "none") + "".join(
                f"\ndata missing: {name} ({message})" for name, message in missing.items()))
    return 0


def _run_options(args: argparse.Namespace) -> RunOptions:
    """Check the flags of `run` against each other and the executor, before anything starts."""
    import torch

    from .data import data_root
    from .runner import RunOptions, resolve_device
    flags = {"--device": ("local", args.device), "--workers": ("local", args.workers),
             "--runs-per-gpu": ("local", args.runs_per_gpu), "--address": ("ray", args.address),
             "--gpus-per-run": ("ray slurm", args.gpus_per_run), "--cpus-per-run": ("ray slurm", args.cpus_per_run),
             "--partition": ("slurm", args.partition), "--time-limit": ("slurm", args.time_limit),
             "--tasks": ("slurm", args.tasks), "--array-parallelism": ("slurm", args.array_parallelism),
             "--sbatch-arg": ("slurm", args.sbatch_arg or None), "--python": ("slurm", args.python),
             "--detach": ("slurm", args.detach or None)}
    for flag, (executors, value) in flags.items():
        if args.executor not in executors.split() and value is not None:
            raise AblatrixError(f"{flag} does not apply to --executor {args.executor}; it takes "
                                + ", ".join(f for f, (e, _) in flags.items() if args.executor in e.split()))
    if args.max_retries < 0:
        raise AblatrixError("--max-retries takes an integer >= 0")
    if args.checkpoint_seconds < 0:
        raise AblatrixError("--checkpoint-seconds takes a number >= 0")
    pack = 1 if args.pack is None else 0 if args.pack == "auto" else int(args.pack) if args.pack.isdigit() else 0
    if pack < 1 and args.pack != "auto":
        raise AblatrixError(f"--pack {args.pack}: expected an integer >= 1 or auto")
    common = dict(data_root=data_root(args.data_dir), fp32=args.fp32, compile=args.compile, pack=pack,
                  executor=args.executor, retry_failed=args.retry_failed, max_retries=args.max_retries,
                  checkpoint_seconds=args.checkpoint_seconds,
                  checkpoint_dir=args.checkpoint_dir and args.checkpoint_dir.resolve())
    gpus = 0.0 if args.gpus_per_run is None else args.gpus_per_run  # ray and slurm
    cpus = 1 if args.cpus_per_run is None else args.cpus_per_run
    if args.executor == "slurm":
        from .executors.slurm import SlurmOptions, check
        slurm = SlurmOptions(args.partition, args.time_limit, 2 if args.tasks is None else args.tasks,
                             args.array_parallelism, tuple(args.sbatch_arg), args.python or sys.executable, args.detach)
        check(slurm)
        if gpus < 0 or not gpus.is_integer() or cpus < 1:
            raise AblatrixError("slurm: --gpus-per-run takes a whole number of GPUs per task; --cpus-per-run an "
                                "integer >= 1")
        return RunOptions(torch.device("cuda" if gpus else "cpu"), gpus_per_run=gpus, slurm=slurm,
                          cpus_per_run=cpus, **common)
    if args.executor == "ray":
        if gpus < 0 or (gpus > 1 and not gpus.is_integer()) or cpus < 1:
            raise AblatrixError("--gpus-per-run takes a share in (0, 1] or a whole number of GPUs; "
                                "--cpus-per-run an integer >= 1")
        return RunOptions(torch.device("cuda" if gpus else "cpu"), address=args.address,
                          gpus_per_run=gpus, cpus_per_run=cpus, **common)
    device = resolve_device(args.device)
    workers = 1 if args.workers is None else args.workers
    runs_per_gpu = 1 if args.runs_per_gpu is None else args.runs_per_gpu
    if workers < 1 or runs_per_gpu < 1:
        raise AblatrixError("--workers and --runs-per-gpu take an integer >= 1")
    if runs_per_gpu > 1 and device.type != "cuda":
        raise AblatrixError("--runs-per-gpu needs a CUDA device; on CPU use --workers N")
    if args.workers is not None and device.type == "cuda":  # else a GPU machine would train one cell at a time
        raise AblatrixError(f"--workers is for CPU processes and this run trains on {device}: give --runs-per-gpu "
                            f"{workers}, or --device cpu")
    gpus = 1 if device.index is not None or device.type == "cpu" else torch.cuda.device_count()
    return RunOptions(device, workers=workers if device.type == "cpu" else runs_per_gpu * gpus, **common)


def cmd_run(args: argparse.Namespace) -> int:
    from .executors import run_grids
    grids = _grids(args)
    if args.max_cells is not None and not args.until_decided:
        raise AblatrixError("--max-cells goes with --until-decided")
    if args.until_decided and args.detach:
        raise AblatrixError("--detach returns before anything trains, so --until-decided could not read a round's "
                            "results; run --until-decided attached")
    if args.until_decided:
        from .adaptive import run_until_decided  # the statistics: a second of imports a plain run skips
        if args.max_cells is not None and args.max_cells < 0:
            raise AblatrixError("--max-cells takes an integer >= 0")
        outcome = run_until_decided(grids, args.results, _run_options(args), args.max_cells)
        print(f"trained {outcome.trained} cells, the grid's seeds and {outcome.rounds} round(s) of added seeds; "
              f"stopped: {outcome.stopped}")
        return 0
    summary = run_grids(grids, args.results, _run_options(args))
    print(f"trained {summary.trained}, failed {summary.failed}, already done {summary.skipped}, "
          f"by another runner {summary.elsewhere}; {summary.trainings} distinct trainings; records in {args.results}")
    return 1 if summary.failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    from .scheduling import grid_status
    from .progress import duration
    for grid in _grids(args):
        status = grid_status(grid, args.results)
        added = f" + {status.added} added-seed cells" if status.added else ""
        print(f"{grid.name}: {len(grid.cells)} cells{added}: " +
              ", ".join(f"{status.counts[s]} {s}" for s in ("done", "failed", "running", "pending")))
        for cell, owner, seconds, epoch in status.running:
            print(f"  running: {cell.run_id} {cell.label()}" + (f", epoch {epoch}" if epoch else ", first epoch")
                  + f", for {duration(seconds)} ({owner})")
        if status.stale:
            print(f"  {len(status.stale)} stored run(s) match no cell of the grid (it changed): "
                  f"{', '.join(status.stale)}")
        if status.damaged:
            print(f"  {len(status.damaged)} damaged record(s) set aside, their cells count as not "
                  f"trained: {', '.join(str(p) for p in status.damaged)}")
    from .executors.slurm import arrays
    for job, queued in arrays(args.results):
        print(f"slurm job array {job}: {queued} task(s) pending or running")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import FORMATS, outputs, write_report
    formats = args.format.split(",")
    for fmt in formats:
        if fmt not in FORMATS:
            raise AblatrixError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    out = write_report(_grids(args), args.results, formats, args.data_dir).parent
    files = outputs(out)
    figures = [f for f in files if f.parent != out]
    print(f"wrote {out}: " + ", ".join(f.name for f in files if f.parent == out)
          + (f" and {len(figures)} figure files in figures/" if figures else ""))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import EXPORTERS
    kind, target = args.to
    exported = EXPORTERS.lookup(kind)(_grids(args), args.results, target)
    print(f"{kind}: {exported.written} run(s) written, {exported.unchanged} unchanged"
          + (f", {exported.skipped} failed run(s) left out" if exported.skipped else "") + f"; in {exported.where}")
    return 0


def cmd_fetch(args: argparse.Namespace) -> int:
    from .data import DATASETS, data_root
    from .sources import register_torchvision
    root = data_root(args.data_dir)
    for name in args.datasets:
        if name.startswith("torchvision:"):
            register_torchvision(name)
    infos = [DATASETS.lookup(name) for name in args.datasets]
    for info in infos:
        if info.download is None:
            try:
                info.load(root)
            except AblatrixError as exc:
                raise AblatrixError(f"{info.name} cannot be downloaded: {exc}") from None
            print(f"{info.name}: nothing to download")
            continue
        try:
            info.download(root)
        except Exception as exc:  # network errors come in many types; the message is what helps
            raise AblatrixError(f"downloading {info.name} into {root} failed: {exc}") from None
        info.load(root)
        print(f"{info.name}: ready in {root}")
    return 0


DATA_DIR_HELP = "dataset folder (default: $ABLATRIX_DATA, else ~/.cache/ablatrix)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ablatrix", description="Declarative ablation grids for small neural "
                                     "networks: train every cell, report with error bars. Docs: docs/index.md")
    parser.add_argument("--version", action="version", version=f"ablatrix {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True)
    for name, func, text, page in (
            ("list", cmd_list, "show every cell of the grids; trains nothing", "running"),
            ("status", cmd_status, "count done, failed, running and pending cells", "running"),
            ("run", cmd_run, "train every cell that has no finished record", "running"),
            ("report", cmd_report, "rewrite tables and REPORT.md from stored runs", "reports"),
            ("export", cmd_export, "copy stored runs to TensorBoard or MLflow; trains nothing", "exporters")):
        verb = verbs.add_parser(name, help=text, description=f"{text}. Docs: docs/{page}.md")
        verb.set_defaults(func=func)
        verb.add_argument("grids", nargs="+", type=Path, metavar="GRID", help="grid file (TOML)")
        verb.add_argument("--results", type=Path, default=Path("results"),
                          help="results folder (default: results)")
        verb.add_argument("--set", action="append", metavar="KEY=VALUE",
                          help="override a grid field, e.g. train.epochs=1 (repeatable)")
        if name == "list":
            verb.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP + "; list then says which "
                              "datasets' files are there")
        if name == "report":
            verb.add_argument("--format", default="md", metavar=",".join(FORMAT_NAMES),
                              help="table formats besides REPORT.md's Markdown, and html for one "
                                   "self-contained REPORT.html (default: md)")
            verb.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
        if name == "export":
            verb.add_argument("--to", nargs=2, required=True, metavar=("KIND", "TARGET"),
                              help="tensorboard LOGDIR, or mlflow TRACKING_URI (e.g. sqlite:///mlflow.db "
                                   "or http://host:5000)")
        if name == "run":
            verb.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
            verb.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
            verb.add_argument("--workers", type=int, metavar="N",
                              help="CPU: train N cells at once in N processes (default 1)")
            verb.add_argument("--runs-per-gpu", type=int, metavar="N",
                              help="CUDA: train N cells at once on each GPU (default 1)")
            verb.add_argument("--pack", metavar="N|auto",
                              help="train up to N cells that share their shapes as one fused model "
                                   "(auto: as GPU memory allows; 1 on CPU, where it is slower)")
            verb.add_argument("--retry-failed", action="store_true",
                              help="train cells whose stored record says failed again")
            verb.add_argument("--until-decided", action="store_true",
                              help="then add seeds (up to the grid's max_seeds) where effects are "
                                   "undecided, round by round, until every effect is decided")
            verb.add_argument("--max-cells", type=int, metavar="N",
                              help="with --until-decided: train at most N cells in all")
            verb.add_argument("--max-retries", type=int, default=2, metavar="N",
                              help="train a cell again up to N times when its worker process or "
                                   "Ray node dies (default 2)")
            verb.add_argument("--checkpoint-seconds", type=float, default=10.0, metavar="S",
                              help="write a training's epoch checkpoint at most every S seconds (0: every "
                                   "epoch; default 10); a stopped training resumes from it")
            verb.add_argument("--checkpoint-dir", type=Path, metavar="DIR",
                              help="where epoch checkpoints go (default: the results folder; with Ray, a "
                                   "folder every node sees, else a lost cell starts again)")
            verb.add_argument("--fp32", action="store_true",
                              help="CUDA: no mixed precision, no channels_last")
            verb.add_argument("--compile", action="store_true", help="torch.compile each model")
            verb.add_argument("--executor", default="local", choices=EXECUTOR_NAMES,
                              help="local processes, tasks on a Ray cluster, or a Slurm job array (default: local)")
            verb.add_argument("--address", metavar="HOST:PORT", help="ray: the cluster to join (default: start a local Ray)")
            verb.add_argument("--gpus-per-run", type=float, metavar="F",
                              help="ray: GPU share each cell asks for, e.g. 0.25; slurm: GPUs per task (default 0: CPU)")
            verb.add_argument("--cpus-per-run", type=int, metavar="N",
                              help="ray, slurm: CPUs each cell (task) asks for, also its torch threads (default 1)")
            verb.add_argument("--partition", help="slurm: the partition (default: the cluster's)")
            verb.add_argument("--time-limit", metavar="TIME", help="slurm: each task's time limit, as sbatch --time")
            verb.add_argument("--tasks", type=int, metavar="N", help="slurm: tasks in the job array (default 2)")
            verb.add_argument("--array-parallelism", type=int, metavar="N",
                              help="slurm: tasks of the array running at once (default: as Slurm allows)")
            verb.add_argument("--sbatch-arg", action="append", default=[], metavar="ARG",
                              help="slurm: an extra sbatch argument, e.g. --sbatch-arg=--qos=short (repeatable)")
            verb.add_argument("--python", metavar="PATH", help="slurm: the tasks' Python (default: this one)")
            verb.add_argument("--detach", action="store_true",
                              help="slurm: submit and return; `ablatrix status` shows the progress")
    fetch = verbs.add_parser("fetch", help="download datasets into the data folder, where possible",
                             description="download datasets into the data folder, where possible. Docs: docs/datasets.md")
    fetch.set_defaults(func=cmd_fetch)
    fetch.add_argument("datasets", nargs="+", metavar="DATASET")
    fetch.add_argument("--data-dir", type=Path, help=DATA_DIR_HELP)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (docker stop, Kubernetes, Slurm at the time limit), stopped the way Ctrl-C stops a run."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except AblatrixError as exc:
        print(f"ablatrix: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        stop = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
        print(f"ablatrix: {stop}; every finished run is saved, `ablatrix run` resumes", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
