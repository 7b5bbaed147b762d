"""Reading a grid file's TOML: values checked by type and rule, tables flattened and merged,
dataclasses built from tables with unknown keys named, `--set` overrides. Every error is one
AblatrixError line that names the file (or context), the field, the bad value and what is allowed.
"""
from __future__ import annotations

import json
import re
import sys
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

from .errors import AblatrixError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def fail(where: str, message: str) -> typing.NoReturn:
    raise AblatrixError(f"{where}: {message}")


def type_ok(value: Any, expected: type) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def build_dataclass(cls: type, data: dict[str, Any], where: str, prefix: str) -> Any:
    """`cls(**data)` with unknown keys, wrong types and disallowed values reported by name."""
    known = {f.name: f for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in known:
            fail(where, f"unknown field {prefix}{key}; allowed: {', '.join(known)}")
    values = {}
    for key, value in data.items():
        expected, spec = hints[key], known[key].metadata
        if not type_ok(value, expected):
            fail(where, f"{prefix}{key} = {value!r} is not allowed; expected {expected.__name__}")
        if "check" in spec and not spec["check"](value):
            fail(where, f"{prefix}{key} = {value!r} is not allowed; expected {spec['allowed']}")
        values[key] = float(value) if expected is float else value
    return cls(**values)


def flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'model': {'dropout': [..]}} -> {'model.dropout': [..]}."""
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def set_path(doc: dict[str, Any], path: str, value: Any, where: str) -> None:
    *parents, leaf = path.split(".")
    node = doc
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            fail(where, f"{path}: {part} is not a table")
    node[leaf] = value


def parse_override(item: str) -> tuple[str, Any]:
    """'train.epochs=1' -> ('train.epochs', 1); a value that is not TOML is taken as a string."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or not all(NAME_PATTERN.fullmatch(p) for p in key.split(".")):
        raise AblatrixError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=1")
    try:
        return key, tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return key, raw.strip()


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AblatrixError(f"{path}: cannot read grid file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise AblatrixError(f"{path}: not a text file in UTF-8 (byte {exc.start} is "
                            f"{exc.object[exc.start:exc.start + 1]!r}); save it as UTF-8") from None
    if not text.strip():
        raise AblatrixError(f"{path}: the grid file is empty; it needs at least datasets and seeds")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AblatrixError(f"{path}: malformed TOML: {exc}") from None


def list_of(where: str, key: str, value: Any, kind: type, allowed: str) -> list:
    if not (isinstance(value, list) and value and all(type_ok(v, kind) for v in value)):
        fail(where, f"{key} = {value!r} is not allowed; expected {allowed}")
    if len({json.dumps(v) for v in value}) != len(value):
        fail(where, f"{key} = {value!r} repeats a value")
    return value


def table_of(where: str, key: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        fail(where, f"{key} = {value!r} is not allowed; expected a table")
    return value


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = merge(merged[key], value) if isinstance(value, dict) and isinstance(
            merged.get(key), dict) else value
    return merged
