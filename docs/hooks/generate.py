"""The reference sections of the docs, generated from the code and committed into the pages, so
they read the same on GitHub, in an editor and on the site; tests/test_docs.py fails when a page
is out of date. Regenerate with:

    python docs/hooks/generate.py

Between `<!-- generated: cli -->` and `<!-- end generated -->` (docs/cli.md): every verb's
`--help`; between `<!-- generated: fields -->` and its end (docs/grid-files.md): the grid file's
keys, every `[train]` field and the `[report]` settings with their defaults, allowed values and how
a default differs from PyTorch's or a plain script's, and the `convnet` model's parameters.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import typing
from pathlib import Path

from ablatrix.cli import build_parser
from ablatrix.config import TrainConfig
from ablatrix.models import param_defaults
from ablatrix.spec import GRID_KEYS, ReportSettings


def cli_reference() -> str:
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal: the page must not depend on one
    try:
        parser = build_parser()
        parser.prog = "ablatrix"
        verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        illustrative = "<!-- docs-test: illustrative: generated --help output -->\n"
        parts = [illustrative + "```\n" + parser.format_help() + "```"]
        for name, sub in verbs.choices.items():
            parts.append(f"## `ablatrix {name}`\n\n{illustrative}```\n{sub.format_help()}```")
    finally:
        if columns is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = columns
    return "\n\n".join(parts)


def _table(cls: type) -> str:
    hints = typing.get_type_hints(cls)
    rows = ["| field | type | default | allowed | unlike PyTorch or a plain script |", "| --- | --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        allowed, unlike = f.metadata.get("allowed", ""), f.metadata.get("unlike", "")
        rows.append(f"| `{f.name}` | {hints[f.name].__name__} | `{default!r}` | {allowed} | {unlike} |")
    return "\n".join(rows)


def field_reference() -> str:
    convnet = "\n".join(["| parameter | default |", "| --- | --- |"]
                        + [f"| `{k}` | `{v!r}` |" for k, v in param_defaults("convnet").items()])
    return (f"Top-level keys: {', '.join(f'`{k}`' for k in GRID_KEYS)}.\n\n"
            f"### `[train]`\n\n{_table(TrainConfig)}\n\n### `[report]`\n\n{_table(ReportSettings)}\n\n"
            f"### `[model]` of `convnet`\n\n{convnet}\n")


DOCS = Path(__file__).resolve().parents[1]
SECTIONS = {"cli": ("cli.md", cli_reference), "fields": ("grid-files.md", field_reference)}


def regenerated(text: str, name: str, content: str) -> str:
    """`text` with the section `name` (between its markers) replaced by `content`."""
    pattern = re.compile(rf"(<!-- generated: {name} -->\n).*?(<!-- end generated -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"no '<!-- generated: {name} -->' ... '<!-- end generated -->' section")
    return pattern.sub(lambda m: m[1] + "\n" + content.strip() + "\n\n" + m[2], text)


def pages() -> dict[Path, str]:
    """Each page with a generated section, as it should read now."""
    out: dict[Path, str] = {}
    for name, (page, make) in SECTIONS.items():
        path = DOCS / page
        out[path] = regenerated(out.get(path, path.read_text(encoding="utf-8")), name, make())
    return out


if __name__ == "__main__":
    for path, text in pages().items():
        if path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"updated {path}")
