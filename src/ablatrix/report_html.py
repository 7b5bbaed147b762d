"""REPORT.html: REPORT.md as one self-contained page, figures inline, tables sortable and filterable.

The page is made from the Markdown report itself, so the two always have the same sections and
numbers. Python-Markdown turns it into HTML, a Jinja2 template adds the page around it, and a
small inline script adds sorting and filtering; with JavaScript off, the tables read as they are.
"""
from __future__ import annotations

import base64
import re
from importlib.resources import files
from pathlib import Path

import jinja2
import markdown

from .store import atomic_write_text

TEMPLATE = "report.html.j2"
MEDIA_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg"}


def _inline_images(html: str, folder: Path) -> str:
    """Replace each local image path with a data URI, so the page needs nothing beside it."""
    def embed(match: re.Match[str]) -> str:
        path = folder / match.group(1)
        if path.suffix not in MEDIA_TYPES or not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'src="data:{MEDIA_TYPES[path.suffix]};base64,{data}"'

    return re.sub(r'src="(?!data:|[a-z]+://)([^"]+)"', embed, html)


def render_html(report_md: str, folder: Path) -> str:
    """The page for a REPORT.md whose image paths are relative to `folder`."""
    # The title goes above the contents; the contents list the sections below it.
    first, _, rest = report_md.partition("\n")
    title = first.lstrip("# ").strip()
    converter = markdown.Markdown(extensions=["tables", "toc"], extension_configs={"toc": {"toc_depth": "2-3"}})
    # The report holds no HTML of its own; text such as `<data>/MNIST/raw` or a grid description
    # with angle brackets must read as written, not be taken for tags.
    converter.preprocessors.deregister("html_block")
    converter.inlinePatterns.deregister("html")
    body = _inline_images(converter.convert(rest), folder)
    template = jinja2.Environment(autoescape=True).from_string(
        files("ablatrix").joinpath("templates", TEMPLATE).read_text(encoding="utf-8"))
    return template.render(title=title, body=body, toc=converter.toc)


def write_html(report_md: Path) -> Path:
    """Write REPORT.html beside `report_md`, from it and the figures it links to."""
    out = report_md.with_suffix(".html")
    atomic_write_text(out, render_html(report_md.read_text(encoding="utf-8"), report_md.parent))
    return out
