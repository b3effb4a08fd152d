"""The report's values are worked out once (`sweep.report_view`, `sweep.units.MetricUnit`): the
plots, figures and sections arrange them and ask the units module for nothing."""
from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np

from sweep.plan import load_plan
from sweep.report import write_report
from sweep.report_view import CLIPPED, report_view
from sweep.results import SweepResults
from sweep.units import heading, in_unit, metric_label, metric_range, metric_unit, unit_of
from sweep_testlib import REPO_ROOT, sweep_from_records, write_yaml

# What the report's writers arrange; every number and unit in them comes from the view.
WRITERS = ("plots.py", "figures.py", "report_sections.py", "writers.py", "document.py")


def test_a_metric_unit_is_the_unit_rules_applied_once() -> None:
    for metric in ("recall_at_1", "map_at_r", "nmi", "loss"):
        u = metric_unit(metric)
        assert (u.label, u.heading, u.diff_heading) == (metric_label(metric), heading(metric), heading(metric, True))
        assert (u.unit, u.diff_unit, u.range) == (unit_of(metric), unit_of(metric, True), metric_range(metric))
        assert u.shown_range == tuple(in_unit(metric, b) for b in metric_range(metric))
        assert u.shown_diff_range == tuple(in_unit(metric, b) for b in metric_range(metric, difference=True))
        # the plots multiply by `scale`: the same bits as `in_unit`, value by value
        xs = np.random.default_rng(0).uniform(-1, 1, 1000).tolist() + [0.0, -0.0, 1.0, math.inf, -math.inf]
        assert all(u.scale * x == in_unit(metric, x) or (math.isnan(x)) for x in xs)
    assert metric_unit("recall_at_1").scale == 100.0 and metric_unit("loss").scale == 1.0
    assert metric_unit("loss").shown_range == (-math.inf, math.inf)


def test_the_report_writers_ask_the_units_module_for_nothing() -> None:
    """Each plot and section asked units.py per value (heading, in_unit, metric_range, fmt_metric ...):
    now the view holds them, and no writer imports from it."""
    found = {}
    for name in WRITERS:
        tree = ast.parse((REPO_ROOT / "sweep" / name).read_text())
        names = {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "sweep.units"
                 for a in node.names}
        if names:
            found[name] = sorted(names)
    assert not found, found


def test_the_view_holds_the_rows_the_report_shows(tmp_path: Path) -> None:
    sweep = {"grid": {"model.embedding_dim": [8, 16]}, "seeds": [0, 1, 2], "baseline": {"model.embedding_dim": 8}}
    plan = load_plan(write_yaml(tmp_path / "s.yaml", sweep))
    values = {plan.cells[0].id: {0: 0.90, 1: 0.95, 2: 0.99}, plan.cells[1].id: {0: 0.97}}  # one seed: no interval
    sweep_dir = sweep_from_records(tmp_path / "sweep", plan, values)
    view = report_view(SweepResults.of_dir(sweep_dir))
    assert [u.metric for u in view.shown] == ["recall_at_1", "map_at_r"]
    (dim8, dim16) = view.cell_rows
    assert dim8[:3] == ["dim=8", 3, "94.7 [83.5, 100.0" + CLIPPED + "]"]  # 94.7 ± 4.30 x 2.60: the upper bound clipped at 100 %
    assert dim16[:3] == ["dim=16", 1, "97.0 (1 seed)"]
    ((label, pairs, mean, _interval, p, verdict),) = view.comparison_rows
    assert (label, pairs, mean, p, verdict) == ("dim=16 vs dim=8", 1, "+7.0", "-", "no test (fewer than 2 paired seeds)")
    assert [r["metric"] for r in view.tables["cells"]][:2] == ["recall_at_1", "map_at_r"]
    assert view.trial_rows[0][1:5] == ["final", "FINISHED", "-", "90.0"]  # a final trial: no search score
    write_report(sweep_dir)
    md = (sweep_dir / "report.md").read_text()
    assert "| " + " | ".join(str(x) for x in dim8) + " |" in md  # the markdown table is the view's row, as is
    assert "| " + " | ".join(str(x) for x in view.comparison_rows[0]) + " |" in md


def test_a_single_seed_has_no_interval_and_nothing_clipped(tmp_path: Path) -> None:
    """One seed (or one seed pair) has no interval: its NaN bounds were marked clipped (NaN != NaN),
    so the report showed `[-†, -†]`, said "the interval reaches past the metric's range" under the
    cells table, and cells.csv / comparisons.csv had ci_clipped true."""
    sweep = {"grid": {"model.embedding_dim": [8, 16]}, "seeds": [0, 1], "baseline": {"model.embedding_dim": 8}}
    plan = load_plan(write_yaml(tmp_path / "s.yaml", sweep))
    sweep_dir = sweep_from_records(tmp_path / "sweep", plan, {plan.cells[0].id: {0: 0.5}, plan.cells[1].id: {0: 0.6}})
    view = report_view(SweepResults.of_dir(sweep_dir))
    assert [row[2] for row in view.cell_rows] == ["50.0 (1 seed)", "60.0 (1 seed)"]
    assert view.comparison_rows[0][3] == "[-, -]"
    assert not any(r["ci_clipped"] for name in ("cells", "comparisons") for r in view.tables[name])
    write_report(sweep_dir)
    assert "reaches past the metric's range" not in (sweep_dir / "report.md").read_text()
