"""`sweep.report.evaluation: best_on_test`: the papers' model selection (best test Recall@1),
whatever the sweep's metric, and labelled as test-set selection in the report."""
from sweep.plan import FINAL
from sweep.records import FINISHED
from sweep.report import render_markdown, select_evaluation

HISTORY = [
    {"epoch": 5, "recall_at_1": 0.50, "map_at_r": 0.30},
    {"epoch": 10, "recall_at_1": 0.60, "map_at_r": 0.20},  # best R@1
    {"epoch": 15, "recall_at_1": 0.55, "map_at_r": 0.35},  # best MAP@R, and the last
]
RECORD = {"phase": FINAL, "status": FINISHED, "metrics": HISTORY[-1], "history": HISTORY}


def test_best_on_test_picks_best_recall_at_1_not_the_sweep_metric():
    assert select_evaluation([RECORD], "last", "map_at_r", "max")[0]["metrics"]["epoch"] == 15
    assert select_evaluation([RECORD], "best", "map_at_r", "max")[0]["metrics"]["epoch"] == 15
    assert select_evaluation([RECORD], "best_on_test", "map_at_r", "max")[0]["metrics"]["epoch"] == 10


def test_report_labels_best_on_test_as_test_set_selection():
    plan = {"name": "s", "source": "x.yaml", "cells": [], "seeds": [0], "metric": "map_at_r", "mode": "max"}
    text = render_markdown(plan, [], {}, {}, "best_on_test", [])
    assert "test-set selection" in text and "papers' choice" in text
