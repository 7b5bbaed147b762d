"""REPORT.html: the Markdown report's sections as one self-contained page, checked in headless Chromium."""
from __future__ import annotations

import re
import shutil

import pytest

from ablatrix.cli import main
from ablatrix.report import write_report
from ablatrix.spec import load_grid
from ablatrix.store import ResultStore

from conftest import TINY_GRID, fabricate, grid_file

pytestmark = pytest.mark.figures  # the page embeds the PNGs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SIX_CONFIGS = TINY_GRID + "model.dropout = [0.0, 0.25, 0.5]\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A six-configuration grid (batchnorm x dropout, 2 seeds) with every run stored, reported as html
    (once for the module: its tests only read it)."""
    tmp_path = tmp_path_factory.mktemp("html")
    grid = load_grid(grid_file(tmp_path, SIX_CONFIGS))
    store = ResultStore(tmp_path / "results", grid.name)
    for i, cell in enumerate(grid.cells):
        store.put(fabricate(cell, (10 + (7 * i) % 24) / 36))  # accuracies in no particular order
    return write_report([grid], tmp_path / "results", ["md", "html"])


def headings(text: str, pattern: str) -> list[str]:
    return [h.strip() for h in re.findall(pattern, text, flags=re.MULTILINE)]


def test_html_has_the_markdown_sections_and_nothing_outside(report):
    """Every section of REPORT.md is in REPORT.html, figures inline, and the page fetches nothing."""
    page = report.with_suffix(".html").read_text(encoding="utf-8")
    sections = headings(report.read_text(encoding="utf-8"), r"^##+ (.+)$")
    assert len(sections) >= 6
    assert headings(page, r"<h[23][^>]*>(.+?)</h[23]>") == sections
    assert headings(page, r"<h1>(.+?)</h1>") == ["tiny: ablation report"]
    assert page.count("<img") == report.read_text().count("![") and 'src="data:image/png;base64,' in page
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # no file beside it, no network


def test_report_html_on_a_partial_grid(write_grid, tmp_path, capsys):
    """`report --format html` with one cell of four trained writes both pages, says so, and shows
    the pending cells."""
    path = write_grid()
    ResultStore(tmp_path, "tiny").put(fabricate(load_grid(path).cells[0], 0.75))
    assert main(["report", str(path), "--results", str(tmp_path), "--format", "html"]) == 0
    assert "REPORT.html" in capsys.readouterr().out
    assert "3 pending" in (tmp_path / "tiny" / "REPORT.html").read_text()


def test_angle_brackets_in_the_report_read_as_written(write_grid, tmp_path):
    """`<data>` in the missing-data section and angle brackets in a description are text, not tags."""
    grid = write_grid(SIX_CONFIGS.replace('name = "tiny"', 'name = "tiny"\ndescription = "a <b>bold</b> claim"')
                      .replace('datasets = ["digits"]', 'datasets = ["digits", "mnist"]'))
    grid = load_grid(grid)
    ResultStore(tmp_path, grid.name).put(fabricate(grid.cells[0], 0.75))
    write_report([grid], tmp_path, ["md", "html"], data_dir=tmp_path / "nodata")
    page = (tmp_path / "tiny" / "REPORT.html").read_text(encoding="utf-8")
    assert "&lt;data&gt;/MNIST/raw" in page and "a &lt;b&gt;bold&lt;/b&gt; claim" in page
    assert "<b>bold</b>" not in page


def column(page, table, name: str) -> list[str]:
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    index = next(i for i, h in enumerate(headers) if h.startswith(name))
    return [page.evaluate("c => c.textContent", cell) for cell in
            table.locator(f"tbody tr:not([hidden]) td:nth-child({index + 1})").element_handles()]


def number(text: str) -> float:
    return float(text.split("±")[0])


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_html_in_headless_chromium(report, tmp_path):
    """The page loads with no console error, clicking a header re-sorts, the filter hides rows, no-JS still reads."""
    sync_api = pytest.importorskip("playwright.sync_api")
    url = report.with_suffix(".html").as_uri()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        problems, requests = [], []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(url)
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        assert problems == [] and {r.split(":")[0] for r in requests} <= {"file", "data"}
        table = page.locator("table", has=page.locator("th", has_text="accuracy %")).first
        stored = [number(t) for t in column(page, table, "accuracy %")]
        assert stored != sorted(stored)  # the test below could not pass by doing nothing
        table.locator("th", has_text="accuracy %").click()
        assert [number(t) for t in column(page, table, "accuracy %")] == sorted(stored)
        table.locator("th", has_text="accuracy %").click()
        assert [number(t) for t in column(page, table, "accuracy %")] == sorted(stored, reverse=True)
        table.locator("xpath=preceding-sibling::input[1]").fill("0.25")
        assert column(page, table, "model.dropout") == ["0.25", "0.25"]
        plain = browser.new_page(java_script_enabled=False)
        plain.goto(url)
        assert plain.locator("table").count() == page.locator("table").count()
        assert plain.locator("input.filter").count() == 0 and "accuracy %" in plain.inner_text("body")
        browser.close()
    assert (tmp_path / "report.png").stat().st_size > 10_000
