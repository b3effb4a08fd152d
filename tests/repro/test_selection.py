"""`sweep.report.evaluation: best_on_test`: the papers' model selection (best test Recall@1),
whatever the sweep's metric, and labelled as test-set selection in the report."""
from sweep.plan import FINAL, load_plan
from sweep.records import FINISHED
from sweep.records import SweepMeta, SweepRecords, TrialRecord
from sweep.results import SweepResults, with_evaluation
from sweep.document import to_markdown
from sweep.report_sections import report_blocks
from sweep.report_view import report_view
from stepcheck import REPO

import sys
sys.path.insert(0, str(REPO / "tests" / "sweep"))
from sweep_testlib import write_yaml  # noqa: E402

HISTORY = [
    {"epoch": 5, "recall_at_1": 0.50, "map_at_r": 0.30},
    {"epoch": 10, "recall_at_1": 0.60, "map_at_r": 0.20},  # best R@1
    {"epoch": 15, "recall_at_1": 0.55, "map_at_r": 0.35},  # best MAP@R, and the last
]
RECORD = TrialRecord(trial_id="t", key="base/seed=0", phase=FINAL, cell="base", seed=0, status=FINISHED,
                     metrics=HISTORY[-1], history=HISTORY)


def test_best_on_test_picks_best_recall_at_1_not_the_sweep_metric():
    assert with_evaluation(RECORD, "last", "map_at_r", "max").metrics["epoch"] == 15
    assert with_evaluation(RECORD, "best", "map_at_r", "max").metrics["epoch"] == 15
    assert with_evaluation(RECORD, "best_on_test", "map_at_r", "max").metrics["epoch"] == 10


def test_report_labels_best_on_test_as_test_set_selection(tmp_path):
    plan = load_plan(write_yaml(tmp_path / "s.yaml", {"metric": "map_at_r"}))
    results = SweepResults.build(plan, SweepRecords(meta=SweepMeta(), trials=[]), "best_on_test")
    text = to_markdown(report_blocks(report_view(results), [], tmp_path))
    assert "test-set selection" in text and "papers' choice" in text
