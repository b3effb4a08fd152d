"""Seed statistics and the report, on known numbers (no Ray, no training)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import stats as sps

from sweep.records import FAILED, FINISHED, TrialRecord
from sweep.store import SweepLog
from sweep.plan import load_plan
from sweep.report import main as report_main
from sweep.report import write_report, write_results
from sweep.records import SweepMeta, SweepRecords
from sweep.results import Comparison, Estimate, SweepResults
from sweep.units import metric_range
from sweep.sweep_folder import create_sweep_dir
from sweep.stats import PairedComparison, mean_ci, paired_comparison, t_multiplier, verdict
from sweep.labels import cell_labels
from sweep_testlib import REPO_ROOT, TINY_DIGITS, write_yaml


def test_mean_ci_student_t_on_known_numbers() -> None:
    ci = mean_ci([1.0, 2.0, 3.0, 4.0])
    # By hand: mean 2.5, s = 1.2910, sem = 0.6455, t(0.975, 3) = 3.1824 -> 2.5 +- 2.0543.
    assert ci.n == 4 and ci.mean == 2.5
    assert ci.half_width == pytest.approx(2.0543, abs=1e-4)
    low, high = sps.t.interval(0.95, 3, loc=2.5, scale=sps.sem([1, 2, 3, 4]))
    assert (ci.low, ci.high) == pytest.approx((low, high), abs=1e-12)
    assert t_multiplier(3) == pytest.approx(4.3027, abs=1e-4)


def test_mean_ci_small_and_missing() -> None:
    one = mean_ci([0.7])
    assert (one.n, one.mean) == (1, 0.7) and math.isnan(one.low) and math.isnan(one.high)
    assert mean_ci([]).n == 0 and math.isnan(mean_ci([]).mean)
    assert mean_ci([0.5, float("nan"), 0.7]).n == 2  # a failed seed's NaN is not a value


def test_paired_comparison_matches_scipy_ttest_rel() -> None:
    cell = {0: 0.80, 1: 0.82, 2: 0.79, 3: 0.85, 9: 0.99}  # seed 9 has no partner: dropped
    base = {0: 0.78, 1: 0.80, 2: 0.80, 3: 0.81, 4: 0.50}
    c = paired_comparison(cell, base)
    assert c.seeds == [0, 1, 2, 3]
    # Differences 0.02, 0.02, -0.01, 0.04: mean 0.0175, sd 0.020616, t = 1.6977 on 3 df.
    assert c.mean_diff == pytest.approx(0.0175)
    t = 0.0175 / (np.std([0.02, 0.02, -0.01, 0.04], ddof=1) / 2)
    assert t == pytest.approx(1.6977, abs=1e-4)
    assert c.p_value == pytest.approx(2 * sps.t.sf(t, 3), rel=1e-9)
    assert c.p_value == pytest.approx(sps.ttest_rel([0.80, 0.82, 0.79, 0.85], [0.78, 0.80, 0.80, 0.81]).pvalue, rel=1e-12)
    assert c.p_value == pytest.approx(0.188, abs=1e-3)
    half = sps.t.ppf(0.975, 3) * np.std([0.02, 0.02, -0.01, 0.04], ddof=1) / 2
    assert (c.low, c.high) == pytest.approx((0.0175 - half, 0.0175 + half))


def test_fast_statistics_equal_scipy_stats_including_constant_differences() -> None:
    """`sweep.stats` computes with numpy and `scipy.special` (fast enough for thousands of
    comparisons at a sweep's end): the numbers are scipy.stats', edge cases included."""
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 10, 40):
        a, b = rng.normal(0.8, 0.02, n), rng.normal(0.8, 0.02, n)
        c = paired_comparison(dict(enumerate(a)), dict(enumerate(b)))
        assert c.p_value == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-12)
        low, high = sps.t.interval(0.95, n - 1, loc=np.mean(a - b), scale=sps.sem(a - b))
        assert (c.low, c.high) == pytest.approx((low, high), rel=1e-12)
        assert t_multiplier(n, 0.9) == pytest.approx(sps.t.ppf(0.95, n - 1), rel=1e-12)
    shifted = paired_comparison({0: 0.75, 1: 0.5, 2: 0.25}, {0: 0.5, 1: 0.25, 2: 0.0})  # every difference 0.25
    with np.errstate(divide="ignore", invalid="ignore"):
        assert shifted.p_value == sps.ttest_rel([0.75, 0.5, 0.25], [0.5, 0.25, 0.0]).pvalue == 0.0
    assert (shifted.low, shifted.high) == (0.25, 0.25)
    same = paired_comparison({0: 0.9, 1: 0.8}, {0: 0.9, 1: 0.8})
    assert math.isnan(same.p_value) and (same.low, same.high) == (0.0, 0.0)


def test_paired_comparison_needs_two_pairs() -> None:
    c = paired_comparison({0: 0.9, 1: float("nan")}, {0: 0.8, 1: 0.7})
    assert c.n == 1 and c.mean_diff == pytest.approx(0.1) and math.isnan(c.p_value) and math.isnan(c.low)


def _fake_sweep(tmp_path: Path) -> tuple[Path, dict[tuple[str, int], float]]:
    """A finished sweep's directory, written by hand: 3 cells x 3 seeds, one trial failed."""
    sweep = {"grid": {"expansion.n_inner_pts": [0, 2, 4]}, "arms": {"ee": {"expansion.name": "ee"}},
             "seeds": [0, 1, 2], "baseline": {"expansion.n_inner_pts": 0}}
    plan = load_plan(write_yaml(tmp_path / "x.yaml", sweep))
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    log = create_sweep_dir(plan, sweep_dir)
    recall = {("arm=ee,expansion.n_inner_pts=0", 0): 0.60, ("arm=ee,expansion.n_inner_pts=0", 1): 0.62,
              ("arm=ee,expansion.n_inner_pts=0", 2): 0.61,
              ("arm=ee,expansion.n_inner_pts=2", 0): 0.66, ("arm=ee,expansion.n_inner_pts=2", 1): 0.65,
              ("arm=ee,expansion.n_inner_pts=2", 2): 0.69,
              ("arm=ee,expansion.n_inner_pts=4", 0): 0.64, ("arm=ee,expansion.n_inner_pts=4", 2): 0.66}
    for t in plan.final_trials():
        metrics = {"epoch": 2.0, "recall_at_1": recall[(t.cell, t.seed)], "map_at_r": recall[(t.cell, t.seed)] / 2} \
            if (t.cell, t.seed) in recall else {}
        failed = not metrics
        log.add(TrialRecord(trial_id=f"id-{t.key}", key=t.key, phase=t.phase, cell=t.cell, arm=t.arm, coords=t.coords,
                            seed=t.seed, params={}, status=FAILED if failed else FINISHED, attempts=3 if failed else 1,
                            error="RuntimeError: CUDA out of memory" if failed else None, metrics=metrics,
                            history=[metrics] if metrics else []))
    return sweep_dir, recall


def test_report_tables_statistics_and_plot(tmp_path: Path) -> None:
    sweep_dir, recall = _fake_sweep(tmp_path)
    files = write_report(sweep_dir)
    names = {f.name for f in files}
    assert {"report.md", "trials.parquet", "cells.parquet", "comparisons.parquet", "ablation_expansion.n_inner_pts.png"} <= names

    trials = pq.read_table(sweep_dir / "trials.parquet").to_pylist()
    assert len(trials) == 9
    failed = [r for r in trials if r["status"] == FAILED]
    assert [(r["key"], r["error"], r["attempts"]) for r in failed] == [
        ("arm=ee,expansion.n_inner_pts=4/seed=1", "RuntimeError: CUDA out of memory", 3)]
    assert failed[0]["recall_at_1"] is None
    assert {r["expansion.n_inner_pts"] for r in trials} == {0, 2, 4}

    cells = {(r["cell"], r["metric"]): r for r in pq.read_table(sweep_dir / "cells.parquet").to_pylist()}
    four = cells[("arm=ee,expansion.n_inner_pts=4", "recall_at_1")]
    assert four["seeds"] == 2 and four["mean"] == pytest.approx(0.65)
    low, high = sps.t.interval(0.95, 1, loc=0.65, scale=sps.sem([0.64, 0.66]))
    assert (four["ci_low"], four["ci_high"]) == pytest.approx((low, high))  # within [0, 1]: not clipped
    assert not four["ci_clipped"]

    comps = {(r["cell"], r["metric"]): r for r in pq.read_table(sweep_dir / "comparisons.parquet").to_pylist()}
    assert {c for c, _ in comps} == {"arm=ee,expansion.n_inner_pts=2", "arm=ee,expansion.n_inner_pts=4"}
    two = comps[("arm=ee,expansion.n_inner_pts=2", "recall_at_1")]
    assert two["baseline"] == "arm=ee,expansion.n_inner_pts=0" and json.loads(two["seeds"]) == [0, 1, 2]
    assert two["p_value"] == pytest.approx(sps.ttest_rel([0.66, 0.65, 0.69], [0.60, 0.62, 0.61]).pvalue)
    assert comps[("arm=ee,expansion.n_inner_pts=4", "recall_at_1")]["pairs"] == 2  # the failed seed drops its pair
    assert two["label"] == "ee n=2 vs ee n=0" and two["verdict"] in ("better", "inconclusive")

    md = (sweep_dir / "report.md").read_text()
    assert "RuntimeError: CUDA out of memory" in md
    assert "| ee n=2 | 3 | 66.7 [" in md  # the arm name + short axis; recall in %, mean [CI]
    assert "| comparison | pairs |" in md
    assert "1.5 standard errors" not in md and "4.30 standard errors" in md  # n = 3 seeds
    assert "{" not in "".join(line for line in md.splitlines() if line.startswith("#"))  # no dicts in headings
    assert "## Paired comparison with the baseline (expansion.n_inner_pts = 0) on R@1" in md
    # Headline: +6.0 points, paired interval, p, seeds and a verdict in words.
    half = sps.t.ppf(0.975, 2) * sps.sem([0.06, 0.03, 0.08]) * 100
    assert (f"- ee n=2 vs ee n=0: R@1 +5.7 points (95% CI {5.667 - half:+.1f} to {5.667 + half:+.1f}, "
            f"p = {two['p_value']:.2g}, 3 seed pairs): ") in md
    assert "**last** evaluation" in md
    for name in ("ablation_expansion.n_inner_pts.png", "plot_paired_differences.png", "plot_learning_curves.png"):
        png = sweep_dir / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, name
        assert f"]({name})" in md
    assert (sweep_dir / "cells.csv").read_text().splitlines()[0].startswith('"cell","label","arm"')
    # report.html: the same report, self-contained: every plot inline, no file reference.
    page = (sweep_dir / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == md.count("](plot_") + md.count("](ablation_") >= 3
    assert 'src="plot_' not in page and "<td>ee n=2 vs ee n=0</td>" in page


def test_intervals_are_clipped_to_the_metric_range_with_a_note(tmp_path: Path) -> None:
    """Two seeds at 99 % and 100 %: the Student-t interval reaches past 100 %; report, tables and
    parquet clip it and mark the clipped bound."""
    sweep_dir, _ = _fake_sweep(tmp_path)
    log = SweepLog.open(sweep_dir)
    for r in log.trials():
        if r.cell == "arm=ee,expansion.n_inner_pts=2":
            value = {0: 0.99, 1: 1.0, 2: 0.985}[r.seed]
            log.update(r.key, metrics={**r.metrics, "recall_at_1": value})
    results = SweepResults.of_dir(sweep_dir)
    write_results(results, sweep_dir)
    cell = {(r["cell"], r["metric"]): r for r in pq.read_table(sweep_dir / "cells.parquet").to_pylist()}
    high = cell[("arm=ee,expansion.n_inner_pts=2", "recall_at_1")]
    raw = mean_ci([0.99, 1.0, 0.985])
    assert raw.high > 1.0 and high["ci_high"] == 1.0 and high["ci_clipped"] and high["ci_low"] == pytest.approx(raw.low)
    md = (sweep_dir / "report.md").read_text()
    assert "| ee n=2 | 3 | 99.2 [" in md and "100.0† ]" not in md and "100.0†]" in md
    assert "clipped to it" in md  # the note under the table
    assert all(0 <= r["ci_low"] <= r["ci_high"] <= 1 for r in cell.values() if r["metric"] != "loss" and r["seeds"] > 1)


def test_labels_name_the_method_when_the_cells_run_different_ones(tmp_path: Path) -> None:
    """No arms: the components that differ name the cell (EE with 0 interior points is the plain
    loss); with arms, the arm names; nothing differing in method: the axes alone."""
    quick = load_plan(REPO_ROOT / "experiments" / "quickstart.yaml")
    assert sorted(cell_labels(quick.to_json()["cells"], quick.spec.arms, quick.base).values()) == ["MS", "MS+EE n=2"]
    see = load_plan(write_yaml(tmp_path / "see.yaml", {"grid": {"expansion.n_expan": [0, 8]}, "baseline": {"expansion.n_expan": 0}},
                               loss={"name": "proxy_anchor"}, expansion={"name": "see", "n_expan": 2},
                               model={**TINY_DIGITS["model"], "embedding_dim": 16}))
    results = SweepResults.build(see, SweepRecords(meta=SweepMeta(), trials=[]))
    assert [c.label for c in results.comparisons] == []  # no finished trial: no metric to compare
    assert sorted(results.labels.values()) == ["PA", "PA+SEE n=8"]
    dims = load_plan(write_yaml(tmp_path / "d.yaml", {"grid": {"model.embedding_dim": [8, 16]}}))
    assert sorted(cell_labels(dims.to_json()["cells"], dims.spec.arms, dims.base).values()) == ["dim=16", "dim=8"]


def _comparison(metric: str = "recall_at_1", mean: float = 0.02, low: float = 0.01, high: float = 0.03,
                p: float = 0.01, mode: str = "max") -> Comparison:
    test = PairedComparison([0, 1, 2], mean, low, high, p)
    diff = Estimate.of(3, mean, low, high, metric_range(metric, difference=True))
    return Comparison("c", "b", "MS+EE n=2 vs MS", metric, test, diff, {}, verdict(test, mode))


def test_verdicts_and_headlines() -> None:
    assert _comparison().verdict == "better" and _comparison(mode="min").verdict == "worse"
    assert _comparison(p=0.2, low=-0.01).verdict == "inconclusive"
    assert _comparison().headline() == "MS+EE n=2 vs MS: R@1 +2.0 points (95% CI +1.0 to +3.0, p = 0.01, 3 seed pairs): better."
    loss = _comparison("loss", -0.1234, -0.2, -0.05, mode="min")
    assert loss.headline().startswith("MS+EE n=2 vs MS: loss -0.123 (95% CI -0.2 to -0.05, p = 0.01, 3 seed pairs)")
    # A difference interval past -100 points is clipped, and the headline says so; a loss never is.
    wide = _comparison(mean=-0.5, low=-1.4, high=0.4, p=0.3)
    assert (wide.diff.low, wide.diff.clipped_low, wide.diff.clipped_high) == (-1.0, True, False)
    assert "95% CI -100.0 to +40.0 (clipped to the metric's range)" in wide.headline()
    assert not _comparison("loss", -3.0, -9.0, 2.0).diff.clipped
    # The MLflow parent's `headline` tag: the numbers and the verdict, short enough for its chip.
    assert _comparison().tag() == "R@1 +2.0 [+1.0, +3.0] pts, better"
    assert loss.tag() == "loss -0.123 [-0.2, -0.05], better"
    assert _comparison(low=math.nan, high=math.nan).tag() == "R@1 +2.0 pts, no test (no interval)"


def test_best_evaluation_is_selectable(tmp_path: Path) -> None:
    """`--evaluation best` takes each final trial's best epoch by the primary metric (with that
    epoch's other metrics); `last` (the default) its final one."""
    sweep_dir, recall = _fake_sweep(tmp_path)
    log = SweepLog.open(sweep_dir)
    record = log.get("arm=ee,expansion.n_inner_pts=0/seed=0")
    early = {"epoch": 1.0, "recall_at_1": 0.70, "map_at_r": 0.1}
    log.update(record.key, history=[early, record.metrics])

    write_report(sweep_dir)
    cells = {(r["cell"], r["metric"]): r for r in pq.read_table(sweep_dir / "cells.parquet").to_pylist()}
    assert cells[("arm=ee,expansion.n_inner_pts=0", "recall_at_1")]["mean"] == pytest.approx(0.61)
    write_report(sweep_dir, evaluation="best")
    cells = {(r["cell"], r["metric"]): r for r in pq.read_table(sweep_dir / "cells.parquet").to_pylist()}
    assert cells[("arm=ee,expansion.n_inner_pts=0", "recall_at_1")]["mean"] == pytest.approx((0.70 + 0.62 + 0.61) / 3)
    assert cells[("arm=ee,expansion.n_inner_pts=0", "map_at_r")]["mean"] == pytest.approx((0.1 + 0.31 + 0.305) / 3)
    assert "**best** evaluation" in (sweep_dir / "report.md").read_text()


def test_report_command_on_a_sweep_dir(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep_dir, _ = _fake_sweep(tmp_path)
    proc = subprocess.run([sys.executable, "sweep/report.py", str(sweep_dir)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "## Paired comparison with the baseline" in proc.stdout
    assert (sweep_dir / "trials.parquet").is_file()
    assert report_main([str(tmp_path)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err


def test_evaluation_field_in_the_sweep_block(tmp_path: Path) -> None:
    plan = load_plan(write_yaml(tmp_path / "x.yaml", {"report": {"evaluation": "best"}}))
    records = SweepRecords(meta=SweepMeta(), trials=[])
    assert SweepResults.build(plan, records).evaluation == "best"
    assert SweepResults.build(plan, records, "last").evaluation == "last"
    with pytest.raises(ValueError, match=r"sweep.report.evaluation: Input should be 'last', 'best' or 'best_on_test'"):
        load_plan(write_yaml(tmp_path / "y.yaml", {"report": {"evaluation": "mean"}}))


def test_a_thousand_cells_build_once_and_stay_readable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """1,000 cells x 2 seeds (the store's benchmark size): the results are built from the records
    in linear time, and the plots, headlines and MLflow description summarise instead of listing."""
    import time

    from sweep.parent_run import parent_description, parent_metrics
    from sweep.figures import MAX_TICKS, ablation_figure, axis_points, axis_view
    from sweep.plots import MAX_ROWS, plot_paired_differences
    from sweep.report_view import report_view
    from sweep.records import TrialRecord

    sweep = {"grid": {"model.embedding_dim": list(range(8, 508)), "optimizer.lr": [0.001, 0.002]}, "seeds": [0, 1],
             "baseline": {"optimizer.lr": 0.001}}
    plan = load_plan(write_yaml(tmp_path / "big.yaml", sweep))
    rng = np.random.default_rng(0)
    trials = [TrialRecord(trial_id=t.key, key=t.key, phase="final", cell=t.cell, coords=t.coords, seed=t.seed, status=FINISHED,
                          metrics={"epoch": 2.0, "recall_at_1": float(rng.uniform(0.5, 0.99))}, mlflow_run_id=f"r{i}")
              for i, t in enumerate(plan.final_trials())]
    records = SweepRecords(meta=SweepMeta(), trials=trials)

    def scan(*args: object) -> None:
        raise AssertionError("a regular grid finds each baseline by one lookup, not a scan of every cell")

    monkeypatch.setattr("sweep.baseline.reference_cell", scan)
    started = time.perf_counter()
    results = SweepResults.build(plan, records)
    # Linear: ~3 s on a shared 2-core machine, nearly all of it scipy's per-call overhead.
    assert time.perf_counter() - started < 30
    assert len(results.cells) == 1000 and len(results.primary) == 500
    lines = results.summary.headlines
    assert len(lines) == 22 and lines[0].startswith("500 comparisons: ") and "the other 480" in lines[-1]
    description = parent_description(results)
    assert len(description) <= 5000 and "report.html" in description
    metrics = parent_metrics(results)
    assert all(0 <= v <= 100 for k, v in metrics.items() if k.endswith((".mean", ".ci_low", ".ci_high")) and "_vs_" not in k)
    assert len(results.compare_run_ids()) == 40
    report = report_view(results)
    (figure,) = plot_paired_differences(report, tmp_path)
    assert figure.path.stat().st_size < 400_000  # one page of MAX_ROWS rows, not 500
    assert MAX_ROWS < 500
    import matplotlib.pyplot as plt

    # along dim: 500 x values, 2 lines; along lr: 2 x values, 500 lines
    dim, lr = (ablation_figure(report, view, *axis_points(report, view)).axes
               for view in (axis_view(plan, "model.embedding_dim"), axis_view(plan, "optimizer.lr")))
    assert len(dim[-1].get_xticks()) <= MAX_TICKS and len(dim[0].get_lines()) >= 2
    assert "8 of 500 methods shown (best by mean)" in lr[0].get_title() and len(lr[0].get_legend().get_texts()) == 8
    plt.close("all")
