"""Grid files: TOML -> validated cells, before anything trains.

A grid names datasets, seeds, base `train` and `model` tables, `axes` whose cartesian product is
taken, named `variants` merged over the base and crossed with the axes, and `exclude` rules.
Every error names the file, the field, the bad value and what is allowed.
"""
from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

from .config import CONFIDENCE, MARGIN, ModelConfig, RunConfig, TrainConfig, allowed
from .data import AUGMENTATIONS, DATASETS, SAMPLERS
from .designs import DesignSpec, design_combos, parse_design
from .environment import Environment
from .sources import SOURCES, parse_source
from .errors import AblatrixError
from .gridfile import (NAME_PATTERN, build_dataclass, fail, flatten, list_of, merge, parse_override, read_toml,
                       set_path, table_of, type_ok)
from .models import check_model, create_model, resolve_params
from .optim import check_training
from .tuning import TuneSpec, parse_tune


def axis_value(value: Any) -> Any:
    """Scalars as they are; lists (e.g. conv widths) as compact JSON so they can be grouped on."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else value

GRID_KEYS = ("name", "description", "datasets", "seeds", "max_seeds", "plugins", "train", "model",
             "axes", "design", "tune", "variants", "exclude", "references", "report")
METRICS = ("test_accuracy", "val_accuracy")  # what a published reference number is compared with
VARIANT_KEYS = ("description", "model", "train")
DEFAULT_MODEL = "convnet"


@dataclass(frozen=True)
class Cell:
    """One run of a grid: a variant, one value per axis, a dataset and a seed."""

    grid: str
    variant: str
    axes: dict[str, Any]
    config: RunConfig
    params: int
    reason: str = ""  # why a seed beyond the grid's `seeds` was added (`run --until-decided`)

    @property
    def run_id(self) -> str:
        return self.config.run_id

    @property
    def facts(self) -> dict[str, Any]:
        return cell_facts(self.variant, self.config.dataset, self.config.seed, self.axes)

    def label(self) -> str:
        settings = " ".join(f"{k.split('.')[-1]}={json.dumps(v)}" for k, v in self.axes.items())
        return f"{self.variant} {settings} {self.config.dataset} seed={self.config.seed}".replace("  ", " ")


@dataclass(frozen=True)
class Reference:
    """A published number (in %) for the cells matching `match` (variant, dataset, axis values)."""

    match: dict[str, Any]
    metric: str
    value: float
    source: str
    params: int | None = None  # the study's parameter count for this number, checked against the cells

    def matches(self, facts: dict[str, Any]) -> bool:
        return rule_matches(self.match, facts)


@dataclass(frozen=True)
class ReportSettings:
    """How the report decides; not part of any run's identity, so changing it retrains nothing."""

    margin: float = field(default=MARGIN, metadata=allowed(lambda v: v >= 0, "a number >= 0 (percentage points)"))
    confidence: float = field(default=CONFIDENCE, metadata=allowed(lambda v: 0.5 <= v < 1, "a number in [0.5, 1)"))


@dataclass(frozen=True)
class GridSpec:
    """A grid file as parsed and checked on its own: nothing imported, registered or read."""

    name: str
    path: Path
    description: str
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    extra_seeds: tuple[int, ...]
    base: dict[str, Any]  # the train and model tables
    axes: dict[str, list[Any]]
    variants: dict[str, dict[str, Any]]  # the base among them
    exclude: tuple[dict[str, Any], ...]  # as written, and flattened in `rules`
    rules: tuple[dict[str, Any], ...]
    references: tuple[Reference, ...]
    report: ReportSettings
    environment: Environment  # the plugins it names (resolved paths) and its datasets named by path
    design: DesignSpec = DesignSpec()
    tune: TuneSpec | None = None  # its candidates train for every configuration; not an axis

    @property
    def where(self) -> str:
        return str(self.path)


_SPEC_FIELDS = frozenset(f.name for f in fields(GridSpec))


@dataclass(frozen=True)
class Grid:
    """A parsed grid expanded into its cells (`expand`); its other fields are its spec's."""

    spec: GridSpec
    cells: tuple[Cell, ...]
    extra_cells: tuple[Cell, ...] = ()  # the cells of the seeds `run --until-decided` may add, where needed

    def __getattr__(self, name: str) -> Any:
        # Only a spec field is delegated: anything else (pickle's and copy's probes among them,
        # on an instance whose `spec` is not set yet) must stay an AttributeError, not recurse.
        if name not in _SPEC_FIELDS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self.spec, name)

    @property
    def cell_keys(self) -> tuple[str, ...]:
        """What tells the cells of one variant, dataset and seed apart: the axes, then the tuned fields."""
        return (*self.axes, *(self.tune.fields if self.tune else ()))

    def stored_cells(self, run_ids: Iterable[str]) -> tuple[Cell, ...]:
        """The grid's cells, and the added-seed cells that have a record (listed, reported)."""
        ids = set(run_ids)
        return self.cells + tuple(c for c in self.extra_cells if c.run_id in ids)


def resolve_plugins(plugins: Any, path: Path) -> tuple[str, ...]:
    """The grid's `plugins`: dotted module names as given, .py files as absolute paths."""
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        fail(str(path), f"plugins = {plugins!r} is not allowed; expected a list of module names or .py paths")
    return tuple(str((path.parent / p).resolve()) if p.endswith(".py") else p for p in plugins)


def load_grid(path: str | Path, overrides: Iterable[str] = ()) -> Grid:
    """Read, override, validate and expand one grid file in this process's environment (its
    plugins imported, its datasets by path read); raise AblatrixError on any bad input."""
    spec = parse_grid(path, overrides)
    return expand(spec, spec.environment.prepare(f"{spec.where}: "))


def parse_grid(path: str | Path, overrides: Iterable[str] = ()) -> GridSpec:
    """Read, override and check one grid file on its own (TOML, fields, axes, variants, exclusions,
    references, report settings); raise AblatrixError on any bad input."""
    path = Path(path)
    where = str(path)
    doc = read_toml(path)
    parsed = [parse_override(item) for item in overrides]
    for key, value in parsed:
        set_path(doc, key, value, f"{where} (--set)")

    for key in doc:
        if key not in GRID_KEYS:
            fail(where, f"unknown field {key}; allowed: {', '.join(GRID_KEYS)}")
    name = doc.get("name", path.stem)
    if not (isinstance(name, str) and NAME_PATTERN.fullmatch(name)):
        fail(where, f"name = {name!r} is not allowed; expected letters, digits, '_', '-', '.'")
    description = doc.get("description", "")
    if not isinstance(description, str):
        fail(where, f"description = {description!r} is not allowed; expected a string")
    plugins = resolve_plugins(doc.get("plugins", []), path)
    datasets = list_of(where, "datasets", doc.get("datasets"), str, "a non-empty list of dataset names")
    sources = {}
    for dataset in datasets:
        source = parse_source(dataset)
        if source is not None or dataset.startswith("torchvision:"):
            sources[dataset] = str((path.parent / source[1]).resolve()) if source else ""
    seeds = list_of(where, "seeds", doc.get("seeds"), int, "a non-empty list of integers >= 0")
    if min(seeds) < 0:
        fail(where, f"seeds = {seeds!r} is not allowed; expected a non-empty list of integers >= 0")
    max_seeds = doc.get("max_seeds", len(seeds))
    if not (type_ok(max_seeds, int) and max_seeds >= len(seeds)):
        fail(where, f"max_seeds = {max_seeds!r} is not allowed; expected an integer >= the {len(seeds)} seeds")
    unused = (s for s in itertools.count() if s not in seeds)
    extra_seeds = [next(unused) for _ in range(max_seeds - len(seeds))]
    base = {"train": table_of(where, "train", doc.get("train", {})),
            "model": table_of(where, "model", doc.get("model", {}))}

    axes = flatten(table_of(where, "axes", doc.get("axes", {})), "")
    for axis, values in axes.items():
        if axis.split(".")[0] not in ("model", "train") or "." not in axis:
            fail(where, f"axes.{axis}: an axis varies a model.* or train.* field")
        list_of(where, f"axes.{axis}", values, object, "a non-empty list of values")
    try:
        design = parse_design(doc.get("design", "full"), axes)
    except AblatrixError as exc:
        fail(where, str(exc))

    variants = table_of(where, "variants", doc.get("variants", {}))
    for vname, table in variants.items():
        for key in table_of(where, f"variants.{vname}", table):
            if key not in VARIANT_KEYS:
                fail(where, f"variants.{vname}: unknown field {key}; allowed: {', '.join(VARIANT_KEYS)}")
    # The grid's own model and train tables are always a variant: adding a variant (in the file or
    # by --set) adds cells and never drops the base ones. A variant that changes nothing is the
    # base under its own name; `[[exclude]] variant = "base"` drops it on purpose.
    if not any(set(table) <= {"description"} for table in variants.values()):
        variants = {"base": {}, **variants}
    tune = None
    if "tune" in doc:
        try:
            tune = parse_tune(table_of(where, "tune", doc["tune"]), axes,
                              base["train"].get("restore_best", True))
        except AblatrixError as exc:
            fail(where, str(exc))
        for vname, table in variants.items():
            for key in set(flatten(table)) & set(tune.fields):
                fail(where, f"variant {vname!r} sets {key}, which [tune] tunes: tuning picks it for every variant")
    for key, _ in parsed:
        if key in axes:
            fail(where, f"--set {key} would be overridden by axes.{key}; set axes.{key} instead")
        for vname, table in variants.items():
            if key in flatten(table):
                fail(where, f"--set {key} would be overridden by variant {vname!r}; "
                             f"set variants.{vname}.{key} instead")

    exclude = doc.get("exclude", [])
    if not (isinstance(exclude, list) and all(isinstance(rule, dict) for rule in exclude)):
        fail(where, "exclude: expected [[exclude]] tables")
    rules = [flatten(rule) for rule in exclude]
    for i, rule in enumerate(rules):
        for key in rule:
            if key not in ("variant", "dataset", "seed", *axes):
                fail(where, f"exclude[{i}]: {key} is neither variant, dataset, seed nor an axis")

    references = _references(doc.get("references", []), axes, where)
    report = build_dataclass(ReportSettings, table_of(where, "report", doc.get("report", {})), where, "report.")
    return GridSpec(name, path, description, tuple(datasets), tuple(seeds), tuple(extra_seeds), base, axes, variants,
                    tuple(exclude), tuple(rules), references, report, Environment(plugins, tuple(sources.items())),
                    design, tune)


def expand(spec: GridSpec, hashes: dict[str, str]) -> Grid:
    """A parsed grid's cells, in an environment where its plugins are imported and its datasets
    named by path registered (`hashes`: their content hashes, part of their runs' identity).
    What needs the registries is checked here: dataset and model names, optimisers, schedules,
    shapes (a stack of layers that shrinks the input to nothing)."""
    where, name, axes, variants, rules = spec.where, spec.name, spec.axes, spec.variants, spec.rules
    seeds, datasets, base = spec.seeds, spec.datasets, spec.base
    for dataset in datasets:
        if dataset not in hashes and dataset not in DATASETS:
            fail(where, f"datasets: unknown dataset {dataset!r}; choose from: {', '.join(sorted(DATASETS))}, "
                         f"data by path: {', '.join(f'{k}:PATH' for k in sorted(SOURCES))}, or torchvision:NAME")
    candidates = spec.tune.combos() if spec.tune else [{}]  # each configuration trains every candidate
    combos = [{**combo, **c} for combo in design_combos(axes, spec.design) for c in candidates]
    resolved = {}
    for vname, table in variants.items():
        for i, combo in enumerate(combos):
            context = f"{where}: variant {vname!r}" + "".join(
                f", {k}={json.dumps(v)}" for k, v in combo.items())
            doc_cell = copy.deepcopy(merge(base, {k: v for k, v in table.items() if k != "description"}))
            for axis, value in combo.items():
                set_path(doc_cell, axis, value, context)
            train = build_dataclass(TrainConfig, doc_cell["train"], context, "train.")
            try:
                check_training(train)
            except AblatrixError as exc:
                fail(context, str(exc))
            for key, registry in (("augment", AUGMENTATIONS), ("sampler", SAMPLERS)):
                if getattr(train, key) not in registry:
                    fail(context, f"train.{key} = {getattr(train, key)!r}; choose from: "
                                   f"{', '.join(sorted(registry))}")
            model_doc = dict(doc_cell["model"])
            model_name = model_doc.pop("name", DEFAULT_MODEL)
            try:
                model = ModelConfig(model_name, resolve_params(model_name, model_doc))
            except AblatrixError as exc:
                fail(context, f"model: {exc}")
            resolved[vname, i] = (context, train, model)

    n_params: dict[tuple[str, str], int] = {}
    cells: dict[str, Cell] = {}
    used_rules = set()
    for seed, dataset, (vname, i) in itertools.product([*seeds, *spec.extra_seeds], datasets, resolved):
        context, train, model = resolved[vname, i]
        facts = cell_facts(vname, dataset, seed, combos[i])
        matched = [r for r, rule in enumerate(rules) if rule_matches(rule, facts)]
        if matched and (problem := spec.design.excluding(i // len(candidates), [rules[r] for r in matched], axes)):
            fail(where, f"exclude[{matched[0]}] removes {problem} ({facts})")
        if matched:
            used_rules.update(matched if seed in seeds else ())
            continue
        key = (json.dumps(model.params, sort_keys=True) + model.name, dataset)
        if key not in n_params:
            info = DATASETS[dataset]
            try:
                built = create_model(model.name, info.input_shape, len(info.classes), **model.params)
                n_params[key] = check_model(built, info.input_shape, len(info.classes))
            except AblatrixError as exc:
                fail(f"{context}, dataset {dataset!r}", f"model: {exc}")
        cell = Cell(name, vname, combos[i], RunConfig(dataset, seed, model, train, hashes.get(dataset, "")),
                    n_params[key])
        if cell.run_id in cells:
            fail(where, f"{cells[cell.run_id].label()!r} and {cell.label()!r} are the same run "
                         "(identical resolved config); drop one or exclude it")
        cells[cell.run_id] = cell
    for r in range(len(rules)):
        if r not in used_rules:
            fail(where, f"exclude[{r}] = {spec.exclude[r]!r} matches no cell")
    extra = tuple(c for c in cells.values() if c.config.seed not in seeds)
    cells = {k: c for k, c in cells.items() if c.config.seed in seeds}
    if not cells:
        fail(where, "every cell is excluded")
    for i, ref in enumerate(spec.references):
        # A reference for a dataset left out (e.g. by --set datasets=...) simply has no runs.
        if ref.match.get("dataset", datasets[0]) in datasets and not any(
                ref.matches(c.facts) for c in cells.values()):
            fail(where, f"references[{i}] matches no cell: {ref.match!r}")
        wrong = [c for c in cells.values() if ref.params and ref.matches(c.facts) and c.params != ref.params]
        if wrong:
            fail(where, f"references[{i}] is for a model of {ref.params:,} parameters, but {wrong[0].label()!r} "
                         f"has {wrong[0].params:,}: the published number would sit beside another model")
    return Grid(spec, tuple(cells.values()), extra)


def cell_facts(variant: str, dataset: str, seed: int, axes: dict[str, Any]) -> dict[str, Any]:
    """What `[[exclude]]` and `[[references]]` rules match on."""
    return {"variant": variant, "dataset": dataset, "seed": seed, **axes}


def rule_matches(rule: dict[str, Any], facts: dict[str, Any]) -> bool:
    """A rule (flattened keys -> values) matches when every key it names has its value."""
    return all(facts.get(k) == v for k, v in rule.items())


def _references(tables: Any, axes: dict[str, Any], where: str) -> tuple[Reference, ...]:
    if not (isinstance(tables, list) and all(isinstance(t, dict) for t in tables)):
        fail(where, "references: expected [[references]] tables")
    references = []
    for i, table in enumerate(tables):
        flat = flatten(table)
        value, metric, source = flat.pop("value", None), flat.pop("metric", "test_accuracy"), flat.pop("source", "")
        params = flat.pop("params", None)
        if params is not None and not (type_ok(params, int) and params > 0):
            fail(where, f"references[{i}].params = {params!r} is not allowed; expected the model's parameter count")
        if not type_ok(value, float):
            fail(where, f"references[{i}].value = {value!r} is not allowed; expected a number (percent)")
        if metric not in METRICS:
            fail(where, f"references[{i}].metric = {metric!r}; choose from: {', '.join(METRICS)}")
        for key in flat:
            if key not in ("variant", "dataset", *axes):
                fail(where, f"references[{i}]: {key} is neither variant, dataset, an axis, value, metric, "
                             "source nor params")
        references.append(Reference(flat, metric, float(value), str(source), params))
    return tuple(references)
