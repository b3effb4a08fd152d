"""Named grid axes (`sweep.axes`) and the ablation figures (`sweep.figures`), from trial records
without training (the end-to-end run is tests/sweep/test_ablation_e2e.py)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest

from sweep.figures import CSV_COLUMNS, ablation_figure, axis_points, axis_view, draw_axis, planned, x_scale
from sweep.plan import load_plan
from sweep.report_view import report_view
from sweep.results import SweepResults
from sweep.spec import SweepError
from sweep_testlib import sweep_from_records, write_yaml

ARMS = {"ms": {"loss.name": "multi_similarity", "expansion.name": "none"},
        "ee": {"loss.name": "multi_similarity", "expansion.name": "ee"},
        "pa": {"loss.name": "proxy_anchor", "expansion.name": "none"},
        "see": {"loss.name": "proxy_anchor", "expansion.name": "see"}}
N_AXIS = {"label": "synthetic points per sample n", "keys": {"ee": "expansion.n_inner_pts", "see": "expansion.n_expan"},
          "others_at": 0}
INTERP: dict[str, Any] = {"grid": {"n": [1, 2, 4]}, "axes": {"n": N_AXIS}, "arms": ARMS, "seeds": [0, 1, 2],
                          "baseline": {"arm": {"ee": "ms", "see": "pa"}}}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    with path.open() as f:
        assert tuple(next(csv.reader(f))) == CSV_COLUMNS
    return rows


def fake_results(tmp_path: Path, sweep: dict[str, Any], value: Any) -> tuple[SweepResults, Path]:
    """A finished sweep whose R@1 per cell and seed is `value(cell, seed)`."""
    plan = load_plan(write_yaml(tmp_path / "s.yaml", sweep))
    sweep_dir = sweep_from_records(tmp_path / "sweep", plan, {c.id: {s: value(c, s) for s in plan.seeds} for c in plan.cells})
    return SweepResults.of_dir(sweep_dir), sweep_dir


# --------------------------------------------------------------------------- the sweep block


def test_a_named_axis_sets_its_own_key_per_arm(tmp_path: Path) -> None:
    plan = load_plan(write_yaml(tmp_path / "s.yaml", INTERP))
    cells = {c.id: c for c in plan.cells}
    assert list(cells) == ["arm=ms", "arm=ee,n=1", "arm=ee,n=2", "arm=ee,n=4", "arm=pa", "arm=see,n=1", "arm=see,n=2",
                           "arm=see,n=4"]
    assert cells["arm=ee,n=2"].overrides == {"expansion.n_inner_pts": 2, **ARMS["ee"]}
    assert cells["arm=see,n=4"].overrides == {"expansion.n_expan": 4, **ARMS["see"]}
    assert cells["arm=ms"].overrides == ARMS["ms"] and cells["arm=ms"].coords == {}  # no part in n: one cell
    configs = {t.cell: t for t in plan.final_trials() if t.seed == 0}
    from sweep.plan import trial_config

    assert trial_config(plan.base, configs["arm=see,n=4"], None, "s").expansion.n_expan == 4
    assert trial_config(plan.base, configs["arm=ee,n=1"], None, "s").expansion.n_inner_pts == 1
    results, _ = fake_results(tmp_path, INTERP, lambda c, s: 0.5)
    assert {(c.cell, c.baseline) for c in results.primary} == {
        *((f"arm=ee,n={n}", "arm=ms") for n in (1, 2, 4)), *((f"arm=see,n={n}", "arm=pa") for n in (1, 2, 4))}
    assert results.labels["arm=see,n=2"] == "see n=2" and results.labels["arm=pa"] == "pa"


def test_the_spelled_out_arms_of_before_still_work(tmp_path: Path) -> None:
    """The old `ablation_interp.yaml`: SEE's count as arms, EE's as a grid key pinned to null elsewhere."""
    old = {"grid": {"expansion.n_inner_pts": [1, 2]},
           "arms": {"ms": {**ARMS["ms"], "expansion.n_inner_pts": None}, "ee": ARMS["ee"],
                    "see1": {**ARMS["see"], "expansion.n_inner_pts": None, "expansion.n_expan": 1}},
           "seeds": [0, 1], "baseline": {"arm": {"ee": "ms"}}}
    plan = load_plan(write_yaml(tmp_path / "s.yaml", old))
    assert [c.id for c in plan.cells] == ["arm=ms,expansion.n_inner_pts=null", "arm=ee,expansion.n_inner_pts=1",
                                          "arm=ee,expansion.n_inner_pts=2", "arm=see1,expansion.n_inner_pts=null"]


@pytest.mark.parametrize("change, expected", [
    ({"axes": {}}, "sweep.grid.n: unknown config key; a named axis needs sweep.axes.n.keys: {arm: dotted.key}"),
    ({"axes": {"n": {**N_AXIS, "keys": {"zz": "expansion.n_inner_pts"}}}},
     "sweep.axes.n.keys.zz: not one of the arms ['ms', 'ee', 'pa', 'see']"),
    ({"axes": {"n": {**N_AXIS, "keys": {"ee": "expansion.n_inner"}}}},
     "sweep.axes.n.keys.ee: expansion.n_inner: unknown config key (did you mean 'expansion.n_inner_pts'?)"),
    ({"axes": {"n": N_AXIS, "m": {"label": "m"}}}, "sweep.axes.m: not a grid axis (grid: ['n'])"),
    ({"arms": {**ARMS, "ee": {**ARMS["ee"], "expansion.n_inner_pts": 2}}},
     "sweep.arms.ee.expansion.n_inner_pts: set by grid axis n (sweep.axes.n.keys); drop it from the arm"),
    ({"axes": {"n": {**N_AXIS, "unit": "points"}}}, "sweep.axes.n.unit: unknown key"),
    ({"search": {"params": {"expansion.n_expan": {"type": "int", "low": 1, "high": 4}}}},
     "sweep.search.params.expansion.n_expan: also set by grid/arms"),
])
def test_a_bad_axis_is_one_line_naming_the_field(tmp_path: Path, change: dict[str, Any], expected: str) -> None:
    path = write_yaml(tmp_path / "s.yaml", {**INTERP, **change})
    with pytest.raises(SweepError) as e:
        load_plan(path)
    assert str(e.value).startswith(f"{path}: {expected}") and "\n" not in str(e.value)


# --------------------------------------------------------------------------- the figure


def test_x_spacing() -> None:
    pos, spacing = x_scale([0, 1, 2, 4, 8])
    assert spacing == "log2" and [pos(v) for v in (0, 1, 2, 8)] == [-1, 0, 1, 3]
    assert x_scale([16, 32, 64, 128])[1] == "log2"
    assert x_scale([10, 20, 40, 70])[1] == "linear"
    assert x_scale([8])[1] == "linear"  # one value: nothing to space
    pos, spacing = x_scale(["ms", "ee"])
    assert spacing == "categorical" and (pos("ms"), pos("ee")) == (0, 1)


def test_interp_figure_puts_each_baseline_at_n_0_and_each_count_on_one_curve(tmp_path: Path) -> None:
    sweep = {**INTERP, "equivalence_margin": 1.0}
    results, sweep_dir = fake_results(tmp_path, sweep, lambda c, s: 0.6 + 0.01 * (c.coords.get("n", 0) + s)
                                      + 0.1 * (c.arm in ("pa", "see")))
    files = draw_axis(report_view(results), axis_view(results.plan, "n"), sweep_dir)
    assert [f.name for f in files] == ["ablation_n.png", "ablation_n.pdf", "ablation_n.csv", "ablation_n_diff.csv"]
    assert files[0].read_bytes()[:4] == b"\x89PNG" and files[1].read_bytes()[:4] == b"%PDF"
    rows = read_csv(sweep_dir / "ablation_n.csv")
    by = {(r["series"], r["x"]): r for r in rows}
    assert set(by) == {("MS", "0"), ("PA", "0"), *(("MS+EE", x) for x in "124"), *(("PA+SEE", x) for x in "124")}
    ms = by[("MS", "0")]  # 60 %, 61 %, 62 % over the seeds, in %
    assert float(ms["mean"]) == pytest.approx(61.0) and ms["seeds"] == "3"
    assert float(ms["ci_low"]) < 61.0 < float(ms["ci_high"])
    diffs = {(r["series"], r["x"]): float(r["mean"]) for r in read_csv(sweep_dir / "ablation_n_diff.csv")}
    assert diffs == pytest.approx({**{("MS+EE - MS", str(n)): float(n) for n in (1, 2, 4)},
                                   **{("PA+SEE - PA", str(n)): float(n) for n in (1, 2, 4)}})
    view = axis_view(results.plan, "n")
    fig = ablation_figure(report_view(results), view, *axis_points(report_view(results), view))
    top, bottom = fig.axes
    assert top.get_xlabel() == "" and bottom.get_xlabel() == "synthetic points per sample n (log2 spacing)"
    assert [t.get_text() for t in bottom.get_xticklabels()] == ["0", "1", "2", "4"]
    assert {t.get_text() for t in top.get_legend().get_texts()} == {"MS (n = 0)", "PA (n = 0)", "MS+EE", "PA+SEE"}
    assert "equivalence margin ±1" in {t.get_text() for t in bottom.get_legend().get_texts()}


def test_a_baseline_off_the_axis_without_a_place_is_a_line(tmp_path: Path) -> None:
    axis = {k: v for k, v in N_AXIS.items() if k != "others_at"}
    results, sweep_dir = fake_results(tmp_path, {**INTERP, "axes": {"n": axis}}, lambda c, s: 0.5 + 0.01 * s)
    draw_axis(report_view(results), axis_view(results.plan, "n"), sweep_dir)
    flat = [r for r in read_csv(sweep_dir / "ablation_n.csv") if r["series"] in ("MS", "PA")]
    assert [r["x"] for r in flat] == ["", ""]  # not on the axis: an empty x, drawn as a horizontal line
    view = axis_view(results.plan, "n")
    top = ablation_figure(report_view(results), view, *axis_points(report_view(results), view)).axes[0]
    assert {t.get_text() for t in top.get_legend().get_texts()} >= {"MS (not varied)", "PA (not varied)"}


def test_every_method_is_a_line_along_a_key_all_arms_vary(tmp_path: Path) -> None:
    sweep = {"grid": {"model.embedding_dim": [8, 16, 32]},
             "arms": {"ms": ARMS["ms"], "ee": {**ARMS["ee"], "expansion.n_inner_pts": 2}}, "seeds": [0, 1],
             "baseline": {"arm": {"ee": "ms"}}}
    results, sweep_dir = fake_results(tmp_path, sweep, lambda c, s: 0.5 + 0.05 * s + 0.02 * (c.arm == "ee"))
    draw_axis(report_view(results), axis_view(results.plan, "model.embedding_dim"), sweep_dir)
    rows = read_csv(sweep_dir / "ablation_model.embedding_dim.csv")
    assert [(r["series"], r["x"]) for r in rows] == [("MS", "8"), ("MS", "16"), ("MS", "32"),
                                                     ("MS+EE", "8"), ("MS+EE", "16"), ("MS+EE", "32")]
    assert all(float(r["ci_low"]) <= float(r["mean"]) <= float(r["ci_high"]) for r in rows)
    diffs = read_csv(sweep_dir / "ablation_model.embedding_dim_diff.csv")
    assert {r["series"] for r in diffs} == {"MS+EE - MS"} and all(float(r["mean"]) == pytest.approx(2.0) for r in diffs)
    assert planned(results.plan) == [
        "ablation_model.embedding_dim.png/.pdf (+ .csv, _diff.csv): R@1 against embedding dimension (8, 16, 32): "
        "MS, MS+EE; difference panel MS+EE - MS"]


def test_methods_without_a_grid_are_points_not_a_line(tmp_path: Path) -> None:
    """Arms alone share no axis: each is a mean with its interval, no line or band joins them."""
    from matplotlib.collections import PolyCollection

    sweep = {"arms": {"ms": ARMS["ms"], "pa": ARMS["pa"]}, "seeds": [0, 1], "baseline": {"arm": "ms"}}
    results, sweep_dir = fake_results(tmp_path, sweep, lambda c, s: 0.5 + 0.1 * s)
    draw_axis(report_view(results), axis_view(results.plan, "arm"), sweep_dir)
    assert [(r["series"], r["x"]) for r in read_csv(sweep_dir / "ablation_arm.csv")] == [("R@1", "ms"), ("R@1", "pa")]
    assert [(r["series"], r["x"]) for r in read_csv(sweep_dir / "ablation_arm_diff.csv")] == [("pa - ms", "pa")]
    view = axis_view(results.plan, "arm")
    top, bottom = ablation_figure(report_view(results), view, *axis_points(report_view(results), view)).axes
    assert not [c for c in top.collections if isinstance(c, PolyCollection)] and not top.get_lines()[0].get_linestyle() == "-"
    assert "mean ± 95% CI" in top.get_title() and bottom.get_xlabel() == "method"


def test_the_report_shows_the_figure_and_names_its_files(tmp_path: Path) -> None:
    from sweep.report import write_report

    _, sweep_dir = fake_results(tmp_path, INTERP, lambda c, s: 0.5 + 0.01 * s)
    names = {f.name for f in write_report(sweep_dir)}  # what the runner logs on the MLflow parent run
    assert {"ablation_n.png", "ablation_n.pdf", "ablation_n.csv", "ablation_n_diff.csv"} <= names
    md = (sweep_dir / "report.md").read_text()
    assert "## R@1 against synthetic points per sample n" in md and "](ablation_n.png)" in md
    assert "Beside it: `ablation_n.pdf`, `ablation_n.csv`, `ablation_n_diff.csv` (the CSVs hold the points drawn" in md
    assert not list(sweep_dir.glob("plot_n*.png"))  # the old per-axis plot is gone


def test_dry_run_lists_the_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sweep.run import main

    assert main([str(write_yaml(tmp_path / "s.yaml", INTERP)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert ("figures the report will draw:\n  ablation_n.png/.pdf (+ .csv, _diff.csv): R@1 against synthetic points per "
            "sample n (1, 2, 4): MS+EE, PA+SEE; MS, PA at n = 0; difference panel MS+EE - MS, PA+SEE - PA\n") in out
    assert "  plot_paired_differences.png" in out and "  plot_learning_curves.png" in out


def test_each_series_dots_are_one_collection_however_many_values_its_axis_has(tmp_path: Path) -> None:
    """A 512-value axis drew one scatter per value (seconds at the sweep's end, growing with the
    sweep): the seeds' dots of a series are one collection, every dot still drawn."""
    from matplotlib.collections import PathCollection

    rates = [round(1e-3 * (1 + i / 40), 6) for i in range(40)]
    sweep = {"grid": {"optimizer.lr": rates}, "seeds": [0, 1], "baseline": {"optimizer.lr": rates[0]}}
    results, _ = fake_results(tmp_path, sweep, lambda c, s: 0.5 + 0.01 * s)
    view = axis_view(results.plan, "optimizer.lr")
    top, _bottom = ablation_figure(report_view(results), view, *axis_points(report_view(results), view)).axes
    dots = [c for c in top.collections if isinstance(c, PathCollection)]
    assert len(dots) == 1 and len(dots[0].get_offsets()) == 40 * 2
