"""One units module, one baseline rule, and the typed plan used as it is (no JSON round trip)."""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from sweep.baseline import references
from sweep.console import describe_plan
from sweep.labels import cell_labels, plan_labels
from sweep.plan import SweepPlan, load_plan
from sweep.records import FINISHED, SweepMeta, SweepRecords, TrialRecord
from sweep.results import SweepResults
from sweep.sequential import PolicyView, Quantity
from sweep.units import from_points, heading, in_unit, metric_range, unit_of
from sweep_testlib import REPO_ROOT, write_yaml


def _percent_conversions(path: Path) -> list[int]:
    """Lines of `path` that multiply or divide by 100: a conversion between fractions and %."""
    hundred = lambda node: isinstance(node, ast.Constant) and node.value in (100, 100.0)  # noqa: E731
    return [node.lineno for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div))
            and (hundred(node.left) or hundred(node.right))]


def test_percent_conversion_is_written_in_the_units_module_only() -> None:
    found = {p.name: lines for p in sorted((REPO_ROOT / "sweep").glob("*.py")) if (lines := _percent_conversions(p))}
    found.pop("forecast.py", None)  # a cost ratio as a percentage (`+79 % of the median`), not a metric
    assert set(found) == {"units.py"}, found


def test_units_of_a_fraction_and_of_the_rest() -> None:
    assert heading("recall_at_1") == "R@1 (%)" and heading("map_at_r", difference=True) == "MAP@R difference (points)"
    assert heading("loss") == "loss" and unit_of("loss", difference=True) == ""
    assert in_unit("recall_at_1", from_points("recall_at_1", 1.5)) == pytest.approx(1.5)
    assert from_points("loss", 0.2) == 0.2
    assert metric_range("nmi", difference=True) == (-1.0, 1.0) and metric_range("loss") == (-np.inf, np.inf)


def _policy_plan(tmp_path: Path) -> SweepPlan:
    sweep = {"grid": {"expansion.n_inner_pts": [0, 2, 4], "model.embedding_dim": [16, 32]},
             "baseline": {"expansion.n_inner_pts": 0}, "seeds": {"start": 2, "max": 4, "until": "decided"}}
    return load_plan(write_yaml(tmp_path / "policy.yaml", sweep))


def test_the_policy_watches_the_comparisons_the_report_makes(tmp_path: Path) -> None:
    plan = _policy_plan(tmp_path)
    view = PolicyView.from_plan(plan)
    refs = references(plan.cells, plan.spec.baseline)
    assert len(refs) == 4
    assert [q for q in view.quantities if q.ref is not None] == [Quantity(c, r.id) for c, r in refs.items()]


def test_results_labels_and_console_take_the_typed_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = _policy_plan(tmp_path)
    json_labels = cell_labels(plan.to_json()["cells"], plan.spec.arms, plan.base)  # the form read from disk
    rng = np.random.default_rng(0)
    trials = [TrialRecord(trial_id=t.key, key=t.key, phase="final", cell=t.cell, coords=t.coords, seed=t.seed,
                          status=FINISHED, metrics={"epoch": 2.0, "recall_at_1": float(rng.uniform(0.5, 0.99))})
              for t in plan.final_trials()]

    def no_json(self: SweepPlan) -> None:
        raise AssertionError("the plan went through JSON inside one process")

    monkeypatch.setattr(SweepPlan, "to_json", no_json)
    assert plan_labels(plan) == json_labels
    results = SweepResults.build(plan, SweepRecords(meta=SweepMeta(), trials=trials))
    assert results.policy is not None and len(results.primary) == 4
    text = describe_plan(plan)
    assert all(f"  {label}  " in text for label in json_labels.values()), text


def test_dotted_keys_are_walked_by_the_config_module_only() -> None:
    """`get_dotted`, `set_dotted` and `flatten_config` (dml_core.config) read and write a config
    tree by dotted key; a module of `sweep` that splits a key on dots walks the tree its own way."""
    splits = {p.name for p in (REPO_ROOT / "sweep").glob("*.py")
              for node in ast.walk(ast.parse(p.read_text()))
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("split", "rsplit")
              and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value == "."}
    # config_keys.py walks the pydantic models (which field a key names), labels.py shortens a key for a label
    assert splits <= {"config_keys.py", "labels.py"}, splits
