"""MkDocs hook: pages that say what the code says, generated at build time so they never drift.

`<!-- generated: cli -->` becomes every verb's `--help`; `<!-- generated: fields -->` the grid
file's keys, every `[train]` field and the `[report]` settings with their defaults and allowed
values, and the `convnet` model's parameters.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing

from ablatrix.cli import build_parser
from ablatrix.config import TrainConfig
from ablatrix.models import param_defaults
from ablatrix.spec import GRID_KEYS, ReportSettings


def cli_reference() -> str:
    parser = build_parser()
    parser.prog = "ablatrix"
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = ["```\n" + parser.format_help() + "```"]
    for name, sub in verbs.choices.items():
        parts.append(f"## `ablatrix {name}`\n\n```\n{sub.format_help()}```")
    return "\n\n".join(parts)


def _table(cls: type) -> str:
    hints = typing.get_type_hints(cls)
    rows = ["| field | type | default | allowed |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        allowed = f.metadata.get("allowed", "")
        rows.append(f"| `{f.name}` | {hints[f.name].__name__} | `{default!r}` | {allowed} |")
    return "\n".join(rows)


def field_reference() -> str:
    convnet = "\n".join(["| parameter | default |", "| --- | --- |"]
                        + [f"| `{k}` | `{v!r}` |" for k, v in param_defaults("convnet").items()])
    return (f"Top-level keys: {', '.join(f'`{k}`' for k in GRID_KEYS)}.\n\n"
            f"### `[train]`\n\n{_table(TrainConfig)}\n\n### `[report]`\n\n{_table(ReportSettings)}\n\n"
            f"### `[model]` of `convnet`\n\n{convnet}\n")


def on_page_markdown(markdown: str, **kwargs: typing.Any) -> str:
    return (markdown.replace("<!-- generated: cli -->", cli_reference())
            .replace("<!-- generated: fields -->", field_reference()))
