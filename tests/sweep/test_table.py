"""`dml-report table`: the paper's table across sweeps, every number checked against the records.

The sweep directories are built from trial records directly (no training): a quickstart-like
sweep at embedding dimension 16, a variant at 32, and a third that re-ran two seeds of the first
(one shared with it: the same content key, counted once)."""
from __future__ import annotations

import csv
import io
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats

from sweep.plan import load_plan
from sweep.report import main as report_main
from sweep.table import build_table, to_csv, to_latex, to_markdown
from sweep_testlib import sweep_from_records, write_yaml

GRID = {"grid": {"expansion.n_inner_pts": [0, 2]}, "baseline": {"expansion.n_inner_pts": 0}}
EE = {"name": "ee", "n_inner_pts": 2}
CELL0, CELL2 = "expansion.n_inner_pts=0", "expansion.n_inner_pts=2"


def make_sweep(tmp: Path, name: str, dim: int, values: dict[str, dict[int, float]], lr: float = 0.003,
               content: str | None = None, grid: dict[str, Any] = GRID) -> Path:
    """A finished sweep directory from records: `values[cell][seed]` = R@1 (MAP@R = R@1 / 2)."""
    seeds = sorted({s for v in values.values() for s in v})
    path = write_yaml(tmp / f"{name}.yaml", {**grid, "name": name, "seeds": seeds}, expansion=EE,
                      model={"backbone": "small_conv", "conv_blocks": 2, "conv_width": 16, "embedding_dim": dim},
                      optimizer={"name": "adam", "lr": lr})
    return sweep_from_records(tmp / name, load_plan(path), values, content or name)


@pytest.fixture()
def sweeps(tmp_path: Path) -> dict[str, Path]:
    return {
        # dim 16: EE clearly better (+5 points on every seed, a little noise)
        "a": make_sweep(tmp_path, "quick16", 16, {CELL0: {0: 0.80, 1: 0.82, 2: 0.79}, CELL2: {0: 0.85, 1: 0.871, 2: 0.84}}),
        # dim 32: no difference to speak of
        "b": make_sweep(tmp_path, "quick32", 32, {CELL0: {0: 0.90, 1: 0.88, 2: 0.91}, CELL2: {0: 0.901, 1: 0.879, 2: 0.9105}}),
        # the dim-16 experiment again, seeds 2 (the same result as quick16's: same content key) and 3
        "c": make_sweep(tmp_path, "quick16_more", 16, {CELL0: {2: 0.79, 3: 0.81}, CELL2: {2: 0.84, 3: 0.862}},
                        content="quick16"),
    }


EXPECTED = {  # (n_inner_pts, dim) -> seeds' R@1, from the records above, pooled by hand
    (0, 16): [0.80, 0.82, 0.79, 0.81], (2, 16): [0.85, 0.871, 0.84, 0.862],
    (0, 32): [0.90, 0.88, 0.91], (2, 32): [0.901, 0.879, 0.9105],
}


def ci_text(values: list[float], scale: float = 100.0) -> tuple[str, str, int]:
    x = np.array(values) * scale
    half = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return f"{x.mean():.1f}", f"{half:.1f}", len(x)


def parse_md(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in row.strip("|").split(" | ")] for row in rows]


def test_markdown_table_numbers_bold_and_marks(sweeps: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    argv = ["table", *map(str, sweeps.values()), "--rows", "expansion.n_inner_pts", "--cols", "model.embedding_dim",
            "--metrics", "recall_at_1,map_at_r", "--baseline", "expansion.n_inner_pts=0", "--format", "md"]
    assert report_main(argv) == 0
    md = capsys.readouterr().out
    header, rule, *body = parse_md(md)
    # rows and columns as the sweeps label their cells, not raw keys and values
    assert header == ["method", "dim=16 · R@1 (%)", "dim=16 · MAP@R (%)", "dim=32 · R@1 (%)", "dim=32 · MAP@R (%)"]
    assert rule[0] == "---" and all(r == ":---:" for r in rule[1:])  # GitHub: a separator cell per column
    assert [r[0] for r in body] == ["MS", "MS+EE n=2"]
    cell = re.compile(r"^(\*\*)?([\d.]+)(\*\*)? ± ([\d.]+) \((\d+)\)(.?)$")
    for row in body:
        n_inner = {"MS": 0, "MS+EE n=2": 2}[row[0]]
        for j, (dim, scale) in enumerate([(16, 100), (16, 50), (32, 100), (32, 50)]):
            m = cell.match(row[1 + j])
            assert m, row[1 + j]
            mean, half, n = ci_text(EXPECTED[(n_inner, dim)], scale)
            assert (m.group(2), m.group(4), int(m.group(5))) == (mean, half, n)  # seed 2 of quick16 counted once
            mine, other = EXPECTED[(n_inner, dim)], EXPECTED[(2 - n_inner, dim)]
            # bold = best in its column and separated from the runner-up by a paired t-test
            separated = stats.ttest_rel(mine[:len(other)], other[:len(mine)]).pvalue < 0.05
            assert bool(m.group(1)) == (np.mean(mine) > np.mean(other) and separated), (row, j)
            a, b = EXPECTED[(n_inner, dim)], EXPECTED[(0, dim)]
            significant = n_inner == 2 and stats.ttest_rel(a[: len(b)], b).pvalue < 0.05
            assert m.group(6) == ("†" if significant else ""), (row, j)
    assert "| MS+EE n=2 | **85.6" in md and "† differs from the baseline (MS)" in md
    assert [r[3] for r in body] == ["89.7 ± 3.8 (3)", "89.7 ± 4.0 (3)"]  # dim 32: a 0.02-point gap is not bold
    assert "paired t-test" in md and "Sweeps: quick16, quick32, quick16_more." in md
    # every trial accounted for: 14 distinct results, quick16_more's seed 2 met twice
    assert "Trials: 14 final trials used; left out: 2 duplicates of a result another sweep holds (counted once)." in md

    # --labels keys: the raw form
    assert report_main([*argv, "--labels", "keys"]) == 0
    header, _, *body = parse_md(capsys.readouterr().out)
    assert header[:2] == ["expansion.n_inner_pts", "16 · R@1 (%)"] and [r[0] for r in body] == ["0", "2"]


def test_equivalence_mark_latex_and_csv(sweeps: dict[str, Path]) -> None:
    table = build_table(list(sweeps.values()), ["expansion.n_inner_pts"], ["model.embedding_dim"], ["recall_at_1"],
                        {"expansion.n_inner_pts": 0}, margin=1.0)
    marks = {(r, c): e.mark for (r, c, _), e in table.entries.items()}
    assert marks[((2,), (16,))] == "†" and marks[((2,), (32,))] == "≈"  # dim 32: within ±1 point
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert len(rows) == 4
    for r in rows:  # in %, as md and LaTeX show them
        values = 100 * np.array(EXPECTED[(int(r["expansion.n_inner_pts"]), int(r["model.embedding_dim"]))])
        assert r["unit"] == "%" and int(r["n"]) == len(values) and float(r["mean"]) == pytest.approx(np.mean(values))
        low = np.mean(values) - stats.t.ppf(0.975, len(values) - 1) * stats.sem(values)
        assert float(r["ci_low"]) == pytest.approx(low)
    two32 = next(r for r in rows if r["row"] == "MS+EE n=2" and r["col"] == "dim=32")
    assert two32["test"] == "paired t" and two32["verdict"] == "equivalent within ±1 points"
    assert float(two32["diff"]) == pytest.approx(100 * np.mean(np.subtract(EXPECTED[(2, 32)], EXPECTED[(0, 32)])))

    latex = to_latex(table)
    check_latex(latex, columns=3)
    assert r"\textbf{85.6} $\pm$" in latex and "$^\\dagger$" in latex and r"$^{\approx}$" in latex and "p $<$ 0.05" in latex
    assert r"\label{tab:quick16-quick32-quick16-more}" in latex and latex.index(r"\caption{") < latex.index(r"\label{")
    if shutil.which("pdflatex"):  # compile where a TeX engine is installed (not required in CI)
        tmp = sweeps["a"].parent
        (tmp / "t.tex").write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n" + latex
                                   + "\\end{document}\n")
        subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "t.tex"], cwd=tmp, check=True,
                       capture_output=True, timeout=120)


def check_latex(latex: str, columns: int) -> None:
    """The structure a booktabs tabular needs: one column spec, rules in order, every row with the
    right number of cells (multicolumn spans counted), braces balanced, special characters escaped."""
    spec = re.search(r"\\begin\{tabular\}\{([lcr]+)\}", latex)
    assert spec and len(spec.group(1)) == columns
    order = [latex.index(x) for x in (r"\begin{tabular}", r"\toprule", r"\midrule", r"\bottomrule", r"\end{tabular}")]
    assert order == sorted(order)
    body = latex[latex.index(r"\toprule"): latex.index(r"\bottomrule")]
    for line in body.splitlines():
        if line.endswith(r"\\"):
            spans = sum(int(n) - 1 for n in re.findall(r"\\multicolumn\{(\d+)\}", line))
            assert line.count("&") - line.count(r"\&") + 1 + spans == columns, line
    depth = 0
    for i, ch in enumerate(latex):
        if latex[i - 1: i] != "\\":
            depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    latex = re.sub(r"\\label\{[^}]*\}", "", latex)  # a label may hold `_`
    assert not re.search(r"(?<!\\)[_%#]", latex.replace(r"\_", "").replace(r"\%", "").replace(r"\#", ""))


def test_different_experiments_in_one_cell_are_not_pooled(sweeps: dict[str, Path], tmp_path: Path) -> None:
    other = make_sweep(tmp_path, "quick16_lr", 16, {CELL0: {5: 0.7}, CELL2: {5: 0.7}}, lr=0.01)
    with pytest.raises(ValueError, match=r"differ in optimizer\.lr.*add optimizer\.lr to --rows or --cols"):
        build_table([sweeps["a"], other], ["expansion.n_inner_pts"], ["model.embedding_dim"])
    table = build_table([sweeps["a"], other], ["expansion.n_inner_pts", "optimizer.lr"], ["model.embedding_dim"],
                        baseline={"expansion.n_inner_pts": 0})
    assert sorted(table.rows) == [(0, 0.003), (0, 0.01), (2, 0.003), (2, 0.01)]
    assert table.entries[((2, 0.01), (16,), "recall_at_1")].comparison.n == 1  # paired within its own lr


def test_bad_arguments_are_one_line_exit_2(sweeps: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert report_main(["table", str(sweeps["a"]), "--rows", "expansion.n_iner_pts"]) == 2
    assert "'expansion.n_iner_pts' is not a config key" in capsys.readouterr().err
    assert report_main(["table", str(sweeps["a"]), "--rows", "expansion.n_inner_pts", "--metrics", "recall_at_9"]) == 2
    assert "--metrics: 'recall_at_9'" in capsys.readouterr().err


def test_paired_comparison_across_sweeps(tmp_path: Path) -> None:
    """The baseline ran in one sweep, the method in another (same config up to the row key, same
    seeds): they pair by seed as within one sweep."""
    base = make_sweep(tmp_path, "base_only", 16, {CELL0: {0: 0.80, 1: 0.82, 2: 0.79}},
                      grid={"grid": {"expansion.n_inner_pts": [0]}})
    ee = make_sweep(tmp_path, "ee_only", 16, {CELL2: {0: 0.85, 1: 0.871, 2: 0.84, 3: 0.9}},
                    grid={"grid": {"expansion.n_inner_pts": [2]}})
    table = build_table([base, ee], ["expansion.n_inner_pts"], ["model.embedding_dim"], baseline={"expansion.n_inner_pts": 0})
    e = table.entries[((2,), (16,), "recall_at_1")]
    assert e.mark == "†" and e.comparison.seeds == [0, 1, 2] and e.ci.n == 4
    diffs = np.array([0.85, 0.871, 0.84]) - np.array([0.80, 0.82, 0.79])
    assert e.comparison.mean_diff == pytest.approx(diffs.mean())
    assert e.comparison.p_value == pytest.approx(stats.ttest_rel([0.85, 0.871, 0.84], [0.80, 0.82, 0.79]).pvalue)
