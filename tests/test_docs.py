"""Every code block in README.md and docs/ is checked: grid files load, commands parse against the
current CLI (and the grids they name load with their overrides), Python runs, and the page "From
your script to a grid" trains and reports as written. A block that cannot run as written is
preceded by `<!-- docs-test: illustrative: why -->`."""
from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ablatrix.cli import build_parser, main
from ablatrix.data import DATASETS
from ablatrix.models import MODELS
from ablatrix.spec import load_grid

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?:<!-- docs-test: illustrative: (?P<why>[^>]*?) -->\n)?^```(?P<lang>\w*)\n(?P<body>.*?)^```",
                   re.S | re.M)
PYTHONS = ("python", "python3", ".venv/bin/python")
MINIMAL = {"datasets": '["digits"]', "seeds": "[0]"}  # what a fragment is loaded inside


def blocks(lang: str) -> list:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            if match["lang"] == lang and not match["why"]:
                line = text[:match.start("body")].count("\n") + 1
                found.append(pytest.param(match["body"], id=f"{page.relative_to(ROOT)}:{line}"))
    return found


@pytest.fixture
def registries():
    """Models and datasets a block registers are removed after it (other tests list the registries)."""
    before = set(MODELS), set(DATASETS)
    yield
    for registry, names in zip((MODELS, DATASETS), before):
        for name in set(registry) - names:
            registry.pop(name)


@pytest.fixture
def plugin_files(tmp_path):
    """The Python blocks that are files (first line `# name.py ...`), written into tmp_path."""
    for page in PAGES:
        for match in BLOCK.finditer(page.read_text(encoding="utf-8")):
            first = match["body"].splitlines()[0] if match["body"].strip() else ""
            if match["lang"] == "python" and (name := re.match(r"# (\w+\.py)\b", first)):
                (tmp_path / name[1]).write_text(match["body"])
    return tmp_path


def test_every_block_is_checked_or_says_why_not():
    """Blocks are toml, python or shell (no language); an unmarked block of another kind would go unchecked."""
    for page in PAGES:
        for match in BLOCK.finditer(page.read_text(encoding="utf-8")):
            assert match["lang"] in ("toml", "python", ""), f"{page.name}: a ```{match['lang']} block"


@pytest.mark.parametrize("body", blocks("toml"))
def test_grid_blocks_load(body, plugin_files, registries):
    """A grid file loads as written (with the docs' plugin files beside it); a fragment loads inside
    a minimal grid on the digits, so every key it shows is one the code still knows."""
    doc = tomllib.loads(body)
    text = "".join(f"{key} = {value}\n" for key, value in MINIMAL.items() if key not in doc) + body
    grid = plugin_files / "grid.toml"
    grid.write_text(text)
    assert load_grid(grid).cells


def _commands(body: str) -> list[list[str]]:
    """The `ablatrix ...` and `python benchmarks/...` commands of a shell block (other lines are
    output, or other tools' commands)."""
    commands = []
    for line in body.splitlines():
        line = line.split(" #", 1)[0].strip()
        for command in filter(None, (c.strip() for c in line.split("&&"))):
            first = command.split()[0]
            if first.endswith("ablatrix") or (first in PYTHONS and "benchmarks/" in command):
                commands.append(shlex.split(command))
    return commands


@pytest.mark.parametrize("body", blocks(""))
def test_commands_parse_and_their_grids_load(body, registries):
    """`ablatrix ...` lines parse with today's parser and the repository's grids they name load with
    their --set overrides; `python benchmarks/...` scripts exist. Other lines are output or tools."""
    for words in _commands(body):
        if words[0].endswith("ablatrix"):
            args = build_parser().parse_args(words[1:])
            for grid in getattr(args, "grids", []):
                if (ROOT / grid).exists():
                    load_grid(ROOT / grid, args.set or ())
        else:
            assert (ROOT / words[1]).exists(), words


@pytest.mark.parametrize("body", blocks("python"))
def test_python_blocks_run(body, monkeypatch, registries):
    """Python runs from the repository root (module files run too: they register what they define)."""
    monkeypatch.chdir(ROOT)
    exec(compile(body, "<docs>", "exec"), {"__name__": "docs_example"})


def section(page: Path, title: str) -> str:
    return page.read_text(encoding="utf-8").split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_from_your_script_to_a_grid_runs_as_written(tmp_path, monkeypatch, registries):
    """The page's model file and grid are written as they are; its command trains (2 epochs, one
    seed, by --set) and reports on generated arrays in the npz layout its loader reads."""
    blocks_ = re.findall(r"```(\w*)\n(.*?)```", section(ROOT / "docs" / "models.md", "From your script to a grid"), re.S)
    (python, toml, shell) = ([body for kind, body in blocks_ if kind == k] for k in ("python", "toml", ""))
    assert len(python) == len(toml) == len(shell) == 1
    (tmp_path / "my_notebook.py").write_text(python[0])
    (tmp_path / "notebook.toml").write_text(toml[0])
    rng = np.random.default_rng(0)
    labels = np.arange(200) % 10
    images = rng.integers(0, 60, (200, 28, 28)).astype(np.uint8)
    for i, label in enumerate(labels):  # a bright bar whose column says the class
        images[i, :, 2 * label + 4:2 * label + 7] = 255
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "arrays.npz", images=images, labels=labels)
    monkeypatch.chdir(tmp_path)
    quick = ["--set", "train.epochs=2", "--set", "seeds=[0]", "--set", "train.warmup_epochs=0"]
    for command in shell[0].strip().split("&&"):
        words = shlex.split(command)
        assert words[0] == "ablatrix"
        assert main(words[1:] + quick) == 0
    runs = pd.read_csv(tmp_path / "results" / "notebook" / "runs.csv")
    assert len(runs) == 2 and (runs["status"] == "done").all() and (runs["test_accuracy"] > 0.3).all()


def test_the_site_builds_strict(tmp_path):
    """`mkdocs build --strict`: a broken link, a page missing from the nav or a failing generator
    fails it (this is how the README's test command, and so CI, builds the docs)."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr
    cli = (tmp_path / "site" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "--checkpoint-seconds" in cli and "--until-decided" in cli  # generated from the parser


def test_the_generated_reference_in_the_pages_is_current():
    """docs/cli.md and docs/grid-files.md hold what docs/hooks/generate.py makes from the code now:
    a new flag or field without regenerating them fails here."""
    spec = importlib.util.spec_from_file_location("generate", ROOT / "docs" / "hooks" / "generate.py")
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    for path, text in generate.pages().items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name} is out of date: python docs/hooks/generate.py"


def test_the_readme_tour_shows_the_quickstart_grid_as_it_is():
    """The tour's grid is ablations/quickstart.toml (its comments aside), so the two cannot drift apart."""
    (tour,) = [b.values[0] for b in blocks("toml") if b.id.startswith("README.md") and "quickstart" in b.values[0]]
    assert tomllib.loads(tour) == tomllib.loads((ROOT / "ablations" / "quickstart.toml").read_text(encoding="utf-8"))
