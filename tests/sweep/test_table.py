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
from sweep.table import build_table
from sweep.table_render import to_csv, to_latex, to_markdown
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


# --------------------------------------------------------------------------- a table that pastes (issue 24)

NEW_GRID = {"grid": {"expansion.n_inner_pts": [2, 0]}, "baseline": {"expansion.n_inner_pts": 0}}  # YAML order: EE first
POLICY = {"start": 2, "max": 3, "until": "decided"}


def sweep_of(tmp: Path, name: str, dim: int, values: dict[str, dict[int, float]], content: str | None = None,
             **block: Any) -> Path:
    """`make_sweep` with more of the sweep block (`seeds` as a policy, `report`, ...)."""
    seeds = block.pop("seeds", sorted({s for v in values.values() for s in v}))
    tmp.mkdir(parents=True, exist_ok=True)
    path = write_yaml(tmp / f"{name}.yaml", {**NEW_GRID, "name": name, "seeds": seeds, **block}, expansion=EE,
                      model={"backbone": "small_conv", "conv_blocks": 2, "conv_width": 16, "embedding_dim": dim},
                      optimizer={"name": "adam", "lr": 0.003})
    return sweep_from_records(tmp / name, load_plan(path), values, content or name)


def tweak(sweep_dir: Path, key: str, **fields: Any) -> None:
    from sweep.store import SweepLog

    SweepLog.open(sweep_dir).update(key, **fields)


def test_table_over_sweeps_pastes_into_a_paper(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Method labels, the given column order, the YAML's row order, `\\label`, a protocol footnote
    per column (a seed policy; test-set selection), and bold only where a test separates the best
    from the runner-up: not for a lone cell, not for a gap no test separates."""
    policy = sweep_of(tmp_path, "zeta_policy", 16, {CELL0: {0: 0.80, 1: 0.82, 2: 0.79}, CELL2: {0: 0.85, 1: 0.871, 2: 0.84}},
                      seeds=POLICY)
    close = sweep_of(tmp_path, "alpha_fixed", 32, {CELL0: {0: 0.90, 1: 0.88, 2: 0.91}, CELL2: {0: 0.901, 1: 0.879, 2: 0.9105}})
    clear = sweep_of(tmp_path, "mid_clear", 64, {CELL0: {0: 0.70, 1: 0.72, 2: 0.69}, CELL2: {0: 0.75, 1: 0.771, 2: 0.74}},
                     report={"evaluation": "best_on_test"})
    lone = sweep_of(tmp_path, "beta_lone", 8, {CELL2: {0: 0.6, 1: 0.62}}, grid={"expansion.n_inner_pts": [2]}, baseline=None)
    argv = ["table", str(policy), str(close), str(clear), str(lone), "--rows", "expansion.n_inner_pts", "--cols", "sweep",
            "--baseline", "expansion.n_inner_pts=0"]
    assert report_main(argv) == 0
    md = capsys.readouterr().out
    header, _, *body = parse_md(md)
    assert "expansion.n_inner_pts" not in "".join(header + [r[0] for r in body])
    assert [r[0] for r in body] == ["MS+EE n=2", "MS"]  # the YAML's order, labelled by method
    # columns in command-line order, each with its protocol's footnote
    assert header == ["method", "zeta_policy<sup>a</sup>", "alpha_fixed<sup>b</sup>", "mid_clear<sup>c</sup>",
                      "beta_lone<sup>b</sup>"]
    legend = md[md.index("The columns differ in protocol"):]
    assert "(a) fixed hyperparameters; seeds added adaptively by a seed policy (2 to 3 per cell); last evaluation" in legend
    assert "(b) fixed hyperparameters; fixed seeds; last evaluation" in legend
    assert "(c) fixed hyperparameters; fixed seeds; best test R@1 evaluation (test-set selection)" in legend
    ee, ms = body
    assert ee[3].startswith("**75.4**")  # a gap of 5 points on every seed: separated, bold
    assert not ee[2].startswith("**") and not ms[2].startswith("**")  # 0.02 points apart: no bold
    assert ee[4] == "61.0 ± 12.7 (2)" and ms[4] == "–"  # alone in its column: no bold
    assert "†" not in ee[1]  # the policy's seeds: its repeated CI (‡) or nothing, never a plain t-test
    assert "Bold: the best mean in its column when a paired test over the seeds it shares with the runner-up" in md

    assert report_main([*argv, "--format", "latex", "--label", "tab:ablation", "--caption", "R@1 on digits"]) == 0
    latex = capsys.readouterr().out
    check_latex(latex, columns=5)
    assert r"\label{tab:ablation}" in latex and r"\caption{R@1 on digits. R@1 (\%). Mean" in latex
    assert r"zeta\_policy\textsuperscript{a}" in latex and r"\textbf{75.4}" in latex
    assert report_main([*argv, "--format", "latex"]) == 0
    assert r"\label{tab:zeta-policy-alpha-fixed-mid-clear-beta-lone}" in capsys.readouterr().out


def test_sweeps_with_one_name_are_told_apart(tmp_path: Path) -> None:
    a = sweep_of(tmp_path / "machine_a", "quick", 16, {CELL0: {0: 0.80, 1: 0.82}, CELL2: {0: 0.85, 1: 0.87}})
    b = sweep_of(tmp_path / "machine_b", "quick", 32, {CELL0: {0: 0.90, 1: 0.88}, CELL2: {0: 0.91, 1: 0.89}})
    table = build_table([a, b], ["expansion.n_inner_pts"], ["sweep"])
    assert table.sweeps == [f"quick ({a})", f"quick ({b})"] and len(table.cols) == 2
    assert f"Sweeps: quick ({a}), quick ({b})." in to_markdown(table)


# --------------------------------------------------------------------------- tables that account for every trial (issue 25)


def test_two_results_for_one_key_and_seed_fail_naming_both_sweeps(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Two sweeps hold the same content key for seed 1 with other numbers (a stale store, a
    changed dataset): never a silent choice."""
    first = sweep_of(tmp_path, "first", 16, {CELL0: {0: 0.80, 1: 0.82}, CELL2: {0: 0.85, 1: 0.87}}, content="shared")
    second = sweep_of(tmp_path, "second", 16, {CELL0: {1: 0.82}, CELL2: {1: 0.91}}, content="shared")
    assert report_main(["table", str(first), str(second), "--rows", "expansion.n_inner_pts"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "first/expansion.n_inner_pts=2 and second/expansion.n_inner_pts=2" in err
    assert "seed 1" in err and "R@1 87.00 vs 91.00" in err
    # the same numbers under the same key: one result, counted once
    same = sweep_of(tmp_path, "same", 16, {CELL0: {1: 0.82}, CELL2: {1: 0.87}}, content="shared")
    table = build_table([first, same], ["expansion.n_inner_pts"], [])
    assert [e.ci.n for e in table.entries.values()] == [2, 2]


def test_results_of_another_results_version_are_not_pooled_or_dropped(tmp_path: Path) -> None:
    """An old sweep (RESULTS_VERSION 1) and a new one of the same config: two experiments, never
    one cell whose seeds silently keep one sweep's numbers."""
    old = sweep_of(tmp_path, "old", 16, {CELL0: {0: 0.70, 1: 0.71, 2: 0.69}, CELL2: {0: 0.80, 1: 0.81, 2: 0.79}})
    new = sweep_of(tmp_path, "new", 16, {CELL0: {0: 0.80, 1: 0.82, 2: 0.79}, CELL2: {0: 0.81, 1: 0.81, 2: 0.80}})
    for cell in (CELL0, CELL2):
        for seed in range(3):
            tweak(old, f"{cell}/seed={seed}", results_version=1)
            tweak(new, f"{cell}/seed={seed}", results_version=2)
    with pytest.raises(ValueError, match=r"differ in results_version\); add sweep to --rows or --cols"):
        build_table([old, new], ["expansion.n_inner_pts"], [], baseline={"expansion.n_inner_pts": 0})
    table = build_table([old, new], ["expansion.n_inner_pts"], ["sweep"], baseline={"expansion.n_inner_pts": 0})
    ee_old, ee_new = (table.entries[((2,), (s,), "recall_at_1")] for s in ("old", "new"))
    assert ee_old.ci.mean == pytest.approx(0.80) and ee_new.ci.mean == pytest.approx(np.mean([0.81, 0.81, 0.80]))
    assert ee_old.mark == "†" and ee_new.mark == ""  # each sweep's own comparison


def test_policy_seeds_pooled_with_fixed_seeds_get_no_plain_t_test(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A policy sweep inconclusive at its maximum, two more seeds of the same experiment from a
    fixed-seed sweep: a plain t-test over the five would say p = 0.014 (the "add seeds until
    significant" error); the table refuses it, prints no mark and says why."""
    policy = sweep_of(tmp_path, "policy", 16, {CELL0: {0: 0.80, 1: 0.80, 2: 0.80}, CELL2: {0: 0.81, 1: 0.802, 2: 0.82}},
                      seeds=POLICY)
    fixed = sweep_of(tmp_path, "fixed", 16, {CELL0: {3: 0.80, 4: 0.80}, CELL2: {3: 0.82, 4: 0.815}})
    diffs = [0.01, 0.002, 0.02, 0.02, 0.015]
    assert stats.ttest_1samp(diffs, 0).pvalue < 0.05  # what a plain t-test would claim
    pooled = build_table([policy, fixed], ["expansion.n_inner_pts"], [], baseline={"expansion.n_inner_pts": 0})
    e = pooled.entries[((2,), (), "recall_at_1")]
    assert (e.mark, e.comparison, e.ci.n) == ("", None, 5) and e.note.startswith("not tested")
    argv = ["table", str(policy), str(fixed), "--rows", "expansion.n_inner_pts", "--baseline", "expansion.n_inner_pts=0"]
    assert report_main(argv) == 0
    md = capsys.readouterr().out
    _, _, ee, ms = parse_md(md)
    # the cell pools both sweeps' protocols (footnotes a and b), has no mark and no bold
    assert ee == ["MS+EE n=2", "81.3 ± 0.9 (5)<sup>ab</sup>"] and ms[1] == "80.0 ± 0.0 (5)<sup>ab</sup>"
    assert ("Some cells not tested: seeds added adaptively by the seed policy of policy outside one of its own "
            "comparisons (a plain t-test on them would not hold).") in md
    assert report_main([*argv, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["mark"] == "" and rows[0]["verdict"].startswith("not tested: seeds added adaptively")
    # the policy sweep alone: its own repeated CI, never a plain paired t
    alone = build_table([policy], ["expansion.n_inner_pts"], [], baseline={"expansion.n_inner_pts": 0})
    assert alone.entries[((2,), (), "recall_at_1")].comparison.procedure == "repeated CI"


def test_the_legend_counts_trials_used_and_left_out(tmp_path: Path) -> None:
    sweep = sweep_of(tmp_path, "s", 16, {CELL0: {0: 0.80, 1: 0.82, 2: 0.81}, CELL2: {0: 0.85, 1: 0.87, 2: 0.86}})
    tweak(sweep, f"{CELL2}/seed=2", status="FAILED", error="crash")
    tweak(sweep, f"{CELL0}/seed=2", status="RUNNING")
    md = to_markdown(build_table([sweep], ["expansion.n_inner_pts"], []))
    assert "Trials: 4 final trials used; left out: 1 unfinished (running or stopped), 1 failed." in md


@pytest.mark.parametrize("margin", ["inf", "nan", "-1", "0", "abc", ".inf"])
def test_margin_must_be_finite_and_positive(sweeps: dict[str, Path], capsys: pytest.CaptureFixture, margin: str) -> None:
    argv = ["table", str(sweeps["a"]), "--rows", "expansion.n_inner_pts", "--baseline", "expansion.n_inner_pts=0",
            f"--margin={margin}"]
    assert report_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --margin: ") and err.count("\n") == 1, err


def test_margin_needs_a_baseline(sweeps: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    assert report_main(["table", str(sweeps["a"]), "--rows", "expansion.n_inner_pts", "--margin", "0.5"]) == 2
    assert capsys.readouterr().err == "error: --margin: needs --baseline (the margin is for the comparison with the baseline row)\n"
    assert report_main(["table", str(sweeps["a"]), "--rows", "expansion.n_inner_pts", "--baseline",
                        "expansion.n_inner_pts=0", "--margin", "0.5"]) == 0


def test_a_small_clear_gain_reads_better_and_within_the_margin(tmp_path: Path) -> None:
    """Issue 25's [+0.1, +0.3] with margin 0.5: both true, both said, both marks."""
    s = sweep_of(tmp_path, "small", 16, {CELL0: {0: 0.800, 1: 0.810, 2: 0.820}, CELL2: {0: 0.802, 1: 0.812, 2: 0.822}})
    table = build_table([s], ["expansion.n_inner_pts"], [], baseline={"expansion.n_inner_pts": 0}, margin=0.5)
    e = table.entries[((2,), (), "recall_at_1")]
    assert e.word == "better, within ±0.5 points" and e.mark == "†≈"
    assert "with † or ‡ it also excludes 0. The margin is this table's, not in the design of small (post hoc)." in to_markdown(table)
    # the sweep's own margin: no post hoc note
    planned = sweep_of(tmp_path / "planned", "small", 16, {CELL0: {0: 0.8, 1: 0.81, 2: 0.82}, CELL2: {0: 0.802, 1: 0.812, 2: 0.822}},
                       equivalence_margin=0.5)
    md = to_markdown(build_table([planned], ["expansion.n_inner_pts"], [], baseline={"expansion.n_inner_pts": 0}, margin=0.5))
    assert "within ±0.5 points of the baseline" in md and "post hoc" not in md


def test_labels_for_rows_no_sweep_names(tmp_path: Path) -> None:
    """Rows over sweeps of one cell each (a sweep names its only cell `base`): the method and the
    row's values; columns by dataset read `data=...`."""
    a = sweep_of(tmp_path, "run_a", 16, {CELL2: {0: 0.8, 1: 0.81}}, grid={"expansion.n_inner_pts": [2]}, baseline=None)
    b = sweep_of(tmp_path, "run_b", 32, {CELL2: {0: 0.9, 1: 0.91}}, grid={"expansion.n_inner_pts": [2]}, baseline=None)
    table = build_table([a, b], ["model.embedding_dim"], ["data.name"])
    assert [table.row_labels[r] for r in table.rows] == ["MS+EE dim=16", "MS+EE dim=32"]
    assert table.row_header == "method" and list(table.col_labels.values()) == ["data=digits"]
    alone = build_table([a], ["model.embedding_dim"], [])
    assert [alone.row_labels[r] for r in alone.rows] == ["MS+EE dim=16"]  # not `base`


def test_rows_by_arm_read_the_arm_names_in_yaml_order(tmp_path: Path) -> None:
    """Arms in the YAML's order (not alphabetical), each row named by its arm, also when the
    arm's cells carry other labels along a column axis."""
    grid = {"grid": {"expansion.n_inner_pts": [1, 2]},
            "arms": {"ms": {"expansion.name": "none", "expansion.n_inner_pts": None}, "ee": {"expansion.name": "ee"}}}
    values = {"arm=ms,expansion.n_inner_pts=null": {0: 0.80, 1: 0.81}, "arm=ee,expansion.n_inner_pts=1": {0: 0.82, 1: 0.83},
              "arm=ee,expansion.n_inner_pts=2": {0: 0.84, 1: 0.85}}
    s = sweep_of(tmp_path, "arms", 16, values, **grid, baseline=None)
    table = build_table([s], ["arm"], ["expansion.n_inner_pts"])
    assert [table.row_labels[r] for r in table.rows] == ["ms", "ee"]
    assert [table.col_labels[c] for c in table.cols] == ["–", "n=1", "n=2"]
