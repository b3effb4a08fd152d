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

from dml_core.io import atomic_write_json
from sweep.records import FAILED, FINISHED, TrialRecord
from sweep.store import PLAN_FILE, SweepLog
from sweep.plan import load_plan
from sweep.report import main as report_main
from sweep.report import evaluation_of, headline, verdict, write_report
from sweep.stats import mean_ci, paired_comparison, t_multiplier
from sweep_testlib import REPO_ROOT, write_yaml


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
    atomic_write_json(sweep_dir / PLAN_FILE, plan.to_json())
    log = SweepLog.create(sweep_dir, "x")
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
    assert {"report.md", "trials.parquet", "cells.parquet", "comparisons.parquet", "plot_expansion.n_inner_pts.png"} <= names

    trials = pq.read_table(sweep_dir / "trials.parquet").to_pylist()
    assert len(trials) == 9
    failed = [r for r in trials if r["status"] == FAILED]
    assert [(r["key"], r["error"], r["attempts"]) for r in failed] == [
        ("arm=ee,expansion.n_inner_pts=4/seed=1", "RuntimeError: CUDA out of memory", 3)]
    assert failed[0]["recall_at_1"] is None
    assert {r["expansion.n_inner_pts"] for r in trials} == {0, 2, 4}

    cells = {(r["cell"], r["metric"]): r for r in pq.read_table(sweep_dir / "cells.parquet").to_pylist()}
    four = cells[("arm=ee,expansion.n_inner_pts=4", "recall_at_1")]
    assert four["n"] == 2 and four["mean"] == pytest.approx(0.65)
    low, high = sps.t.interval(0.95, 1, loc=0.65, scale=sps.sem([0.64, 0.66]))
    assert (four["ci_low"], four["ci_high"]) == pytest.approx((low, high))

    comps = {(r["cell"], r["metric"]): r for r in pq.read_table(sweep_dir / "comparisons.parquet").to_pylist()}
    assert {c for c, _ in comps} == {"arm=ee,expansion.n_inner_pts=2", "arm=ee,expansion.n_inner_pts=4"}
    two = comps[("arm=ee,expansion.n_inner_pts=2", "recall_at_1")]
    assert two["baseline"] == "arm=ee,expansion.n_inner_pts=0" and json.loads(two["seeds"]) == [0, 1, 2]
    assert two["p_value"] == pytest.approx(sps.ttest_rel([0.66, 0.65, 0.69], [0.60, 0.62, 0.61]).pvalue)
    assert comps[("arm=ee,expansion.n_inner_pts=4", "recall_at_1")]["n"] == 2  # the failed seed drops its pair

    md = (sweep_dir / "report.md").read_text()
    assert "RuntimeError: CUDA out of memory" in md
    assert "| ee n=2 | 3 | 66.7 ± " in md  # the arm name + short axis; recall in %
    assert "1.5 standard errors" not in md and "4.30 standard errors" in md  # n = 3 seeds
    assert "{" not in "".join(line for line in md.splitlines() if line.startswith("#"))  # no dicts in headings
    assert "## Paired comparison with the baseline (expansion.n_inner_pts = 0) on R@1" in md
    # Headline: +6.0 points, paired interval, p, seeds and a verdict in words.
    half = sps.t.ppf(0.975, 2) * sps.sem([0.06, 0.03, 0.08]) * 100
    assert (f"- ee n=2 vs ee n=0: R@1 +5.7 points (3 seeds, 95% CI {5.667 - half:+.1f} to {5.667 + half:+.1f}, "
            f"p = {two['p_value']:.2g}): ") in md
    assert "**last** evaluation" in md
    for name in ("plot_expansion.n_inner_pts.png", "plot_paired_differences.png", "plot_learning_curves.png"):
        png = sweep_dir / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000, name
        assert f"]({name})" in md
    assert (sweep_dir / "cells.csv").read_text().splitlines()[0].startswith('"cell","arm"')


def test_verdicts_and_headlines() -> None:
    base = {"cell": "c", "baseline": "b", "metric": "recall_at_1", "n": 3, "mean_diff": 0.02, "ci_low": 0.01,
            "ci_high": 0.03, "p_value": 0.01}
    assert verdict(base, "max") == "better" and verdict(base, "min") == "worse"
    assert verdict({**base, "p_value": 0.2, "ci_low": -0.01}, "max") == "inconclusive"
    assert verdict({**base, "n": 1, "p_value": float("nan")}, "max").startswith("no test")
    assert headline(base, {"c": "ee", "b": "ms"}, "max") == (
        "ee vs ms: R@1 +2.0 points (3 seeds, 95% CI +1.0 to +3.0, p = 0.01): better.")
    loss = {**base, "metric": "loss", "mean_diff": -0.1234, "ci_low": -0.2, "ci_high": -0.05}
    assert headline(loss, {}, "min").startswith("c vs b: loss -0.123 (3 seeds, 95% CI -0.2 to -0.05")


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
    assert evaluation_of(plan.to_json()) == "best" and evaluation_of(plan.to_json(), "last") == "last"
    with pytest.raises(ValueError, match=r"sweep.report.evaluation: Input should be 'last', 'best' or 'best_on_test'"):
        load_plan(write_yaml(tmp_path / "y.yaml", {"report": {"evaluation": "mean"}}))
