"""Tuned ablations: every configuration tuned with the same candidates, selected on validation.

A grid's `[tune]` table names hyperparameters (`train.*` or `model.*` fields) and their candidate
values, as lists or as ranges drawn once (`trials` draws from a fixed sampling seed, so every
configuration gets the same candidates: the equal budget of Sivaprasad et al., ICML 2020). Each
candidate is an ordinary cell of the grid (run ids, claims, resume, packing, Ray). For each
configuration, dataset and seed, the candidate with the best validation metric stands for the
configuration (`select`); test numbers never select anything. The report then analyses the
selected runs as it would an untuned grid (the tuned effects), and beside them the runs at the
grid's own value of each tuned field (the fixed effects), where that value is a candidate.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .config import TrainConfig
from .errors import AblatrixError

TUNE_METRICS = {"val_accuracy": "max", "val_loss": "min"}  # what selects, and which way
SAMPLING_SEED = 0  # ranges are drawn once from it: the same candidates for every configuration
RANGE_KEYS = ("low", "high", "log")


@dataclass(frozen=True)
class TuneSpec:
    """A grid's `[tune]`: the candidates (one dict of field values each) and the selection metric."""

    fields: tuple[str, ...]
    candidates: tuple[tuple[Any, ...], ...]  # one value per field, per candidate
    metric: str = "val_accuracy"

    def combos(self) -> list[dict[str, Any]]:
        return [dict(zip(self.fields, values)) for values in self.candidates]


def _draw(spec: dict[str, Any], n: int, rng: np.random.Generator) -> list[float]:
    low, high = float(spec["low"]), float(spec["high"])
    if spec.get("log", False):
        values = np.exp(rng.uniform(math.log(low), math.log(high), n))
    else:
        values = rng.uniform(low, high, n)
    return [float(f"{v:.4g}") for v in values]  # four significant digits: readable configs and ids


def parse_tune(table: dict[str, Any], axes: dict[str, list[Any]], restore_best: bool) -> TuneSpec:
    """A grid's `[tune]` table, checked: each problem is one AblatrixError line."""
    flat: dict[str, Any] = {}
    for key, value in table.items():  # `train.lr = ...` is {"train": {"lr": ...}}; a range stays a table
        flat.update({f"{key}.{k}": v for k, v in value.items()} if key in ("train", "model") and isinstance(
            value, dict) else {key: value})
    table = flat
    given = "metric" in table
    metric, trials = table.pop("metric", "val_accuracy"), table.pop("trials", None)
    if metric not in TUNE_METRICS:
        raise AblatrixError(f"tune.metric = {metric!r}; choose from: {', '.join(TUNE_METRICS)} (what each run records "
                            "at its tested epoch)")
    if restore_best and metric != "val_loss" and not given:
        raise AblatrixError("tune: train.restore_best picks each run's epoch by val_loss; say which metric picks "
                            'the candidates: metric = "val_loss" (the same) or metric = "val_accuracy" (at that epoch)')
    if not table:
        raise AblatrixError("tune: name at least one train.* or model.* field and its candidates")
    train_fields = {f for f in TrainConfig.__dataclass_fields__}
    for key, values in table.items():
        if key in axes:
            raise AblatrixError(f"tune.{key} is also an axis: an axis compares its values, tuning picks one of them")
        group, _, name = key.partition(".")
        if group not in ("train", "model") or not name or (group == "train" and name not in train_fields):
            raise AblatrixError(f"tune.{key}: unknown field; tune train.* fields ({', '.join(sorted(train_fields))}) "
                                "or model.* fields")
        if isinstance(values, dict):
            if set(values) - set(RANGE_KEYS) or not {"low", "high"} <= set(values):
                raise AblatrixError(f"tune.{key} = {values!r}; a range is {{low = ..., high = ..., log = true|false}}")
            if trials is None:
                raise AblatrixError(f"tune.{key} is a range: say how many candidates to draw (tune.trials = N)")
        elif not (isinstance(values, list) and values):
            raise AblatrixError(f"tune.{key} = {values!r}; expected a non-empty list of candidates or a range")
    fields = tuple(table)
    if trials is None:
        candidates = tuple(itertools.product(*table.values()))
    else:
        if not (isinstance(trials, int) and not isinstance(trials, bool) and trials >= 1):
            raise AblatrixError(f"tune.trials = {trials!r}; expected an integer >= 1")
        rng = np.random.default_rng(SAMPLING_SEED)
        columns = [_draw(v, trials, rng) if isinstance(v, dict) else [v[i] for i in rng.integers(len(v), size=trials)]
                   for v in table.values()]
        candidates = tuple(dict.fromkeys(zip(*columns)))
    return TuneSpec(fields, candidates, metric)


def own_values(tune: TuneSpec, base: dict[str, Any], default_model: str) -> dict[str, Any]:
    """The grid's own value of each tuned field (its train/model tables, else the default): the value
    an untuned grid trains, against which the report sets the tuned effects."""
    from .models import resolve_params
    model = dict(base["model"])
    params = resolve_params(model.pop("name", default_model), model)
    return {f: base["train"].get(f[6:], getattr(TrainConfig(), f[6:])) if f.startswith("train.") else params.get(f[6:])
            for f in tune.fields}


def select(runs: pd.DataFrame, keys: list[str], metric: str, val_loss: dict[str, float]) -> pd.DataFrame:
    """One row per group of `keys` (a configuration, dataset and seed): the done candidate with the
    best validation `metric` (`val_loss` by run id, for that metric), status `done`; `pending`
    while any candidate is pending; `failed` when every candidate failed. Test numbers are not read.
    Each row keeps its candidate's run id and tuned values; `candidates` counts those compared."""
    frame = runs.assign(val_loss=runs["run_id"].map(val_loss)) if metric == "val_loss" else runs
    rows = []
    for _, group in frame.groupby(keys, sort=False, dropna=False):
        done = group[group["status"] == "done"]
        if (group["status"] == "pending").any() or done.empty:
            row = group.iloc[0].copy()
            row["status"] = "pending" if (group["status"] == "pending").any() else "failed"
        else:
            best = done[metric].idxmax() if TUNE_METRICS[metric] == "max" else done[metric].idxmin()
            row = done.loc[best].copy()
        row["candidates"] = len(group)
        rows.append(row)
    return pd.DataFrame(rows, columns=[*runs.columns, "candidates"]).reset_index(drop=True)


def at_own_values(runs: pd.DataFrame, own: dict[str, Any]) -> pd.DataFrame:
    """The runs whose tuned fields hold the grid's own values (the untuned grid's runs)."""
    mask = np.ones(len(runs), dtype=bool)
    for field, value in own.items():
        mask &= (runs[field] == value).to_numpy()
    return runs[mask]


def selection_table(selected: pd.DataFrame, factors: list[str], tuned: list[str],
                    candidates: dict[str, list[Any]]) -> pd.DataFrame:
    """Per configuration and dataset: how often each candidate value of each tuned field was
    selected over seeds, and the share of selections at the edge of a numeric field's candidates
    (its smallest or largest value: a sign the range is too narrow)."""
    done = selected[selected["status"] == "done"]
    rows = []
    for keys, group in done.groupby([*factors, "dataset"], sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        for field in tuned:
            values = candidates[field]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            counts = group[field].value_counts()
            edge = group[field].isin([min(values), max(values)]).mean() if numeric and len(values) > 2 else math.nan
            rows.append({**dict(zip([*factors, "dataset"], keys)), "field": field,
                         "selected": ", ".join(f"{v}: {counts.get(v, 0)}" for v in values),
                         "seeds": len(group), "at_edge": edge})
    return pd.DataFrame(rows, columns=[*factors, "dataset", "field", "selected", "seeds", "at_edge"])
