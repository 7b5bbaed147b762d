"""The paper tables: escaping, their content against the CSV numbers, and a real LaTeX compiling them."""
from __future__ import annotations

import shutil
import subprocess

import pandas as pd
import pytest

from ablatrix.latex import escape, number
from ablatrix.report import write_report
from ablatrix.spec import load_grid

from conftest import FULL, TINY_GRID, store_runs


@pytest.mark.parametrize("text, expected", [
    ("model.batch_norm", r"model.batch\_norm"),
    ("False − True", "False $-$ True"),
    ("50% & {x}", r"50\% \& \{x\}"),
    ("a\\b", r"a\textbackslash{}b"),
    ("0.3 → 0.5", r"0.3 $\rightarrow$ 0.5"),
])
def test_escape(text, expected):
    """Special characters are escaped in one pass; a Unicode minus or arrow becomes math."""
    assert escape(text) == expected


@pytest.mark.parametrize("x, signed, expected", [(-1.234, True, "$-1.23$"), (0.004, True, "$+0.00$"),
                                                 (-0.001, False, "$0.00$"), (float("nan"), True, "--")])
def test_number(x, signed, expected):
    """Two decimals in math mode (a true minus), no '-0.00', '--' for a missing number."""
    assert number(x, signed) == expected


@pytest.fixture
def tables(write_grid, tmp_path):
    grid = load_grid(write_grid(TINY_GRID.replace('seeds = [0, 1]', 'seeds = [0, 1, 2]')))
    accuracies = {**FULL, (True, 2): 0.85, (False, 2): 0.5}
    store_runs(grid, tmp_path, accuracies)
    write_report([grid], tmp_path, ["md", "tex", "csv"])
    return tmp_path / "tiny"


def test_the_ablation_and_effects_tables_are_paper_ready(tables):
    """booktabs, a caption and a label each, the best mean in bold, the decided drop marked, the
    effect with a true minus and its verdict; no raw column names."""
    ablation, effects = ((tables / f"{name}.tex").read_text() for name in ("ablation", "effects"))
    accuracy = pd.read_csv(tables / "accuracy.csv").set_index("model.batchnorm")
    for tex in (ablation, effects):
        assert tex.count(r"\toprule") == tex.count(r"\bottomrule") == 1
        assert r"\caption{" in tex and r"\label{tab:tiny-" in tex
        assert "ci_low" not in tex and "_adjusted" not in tex and "−" not in tex
    best = accuracy.loc[True]
    assert rf"$\mathbf{{{best['mean']:.2f} \pm {best['std']:.2f}}}$" in ablation
    assert r"$50.00 \pm 0.00$$^{\downarrow}$" in ablation  # bn off: lower than the base on every seed
    deltas = pd.read_csv(tables / "deltas.csv").iloc[0]
    assert f"batchnorm: False $-$ True & digits & ${deltas['mean']:+.2f}$" in effects and "worse" in effects


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex is not installed (Debian: apt-get install texlive-latex-recommended)")
def test_the_tables_compile_with_latex(tables, tmp_path):
    """Both tables \\input into an article with booktabs compile with pdflatex, without errors."""
    document = tmp_path / "paper.tex"
    document.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                        f"\\input{{{tables / 'ablation.tex'}}}\n\\input{{{tables / 'effects.tex'}}}\n"
                        "\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", document.name],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert (tmp_path / "paper.pdf").stat().st_size > 1000
