"""The closing block and the MLflow links it prints (no Ray, no training, no MLflow server)."""
from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from sweep.console import closing_block
from sweep.plan import load_plan
from sweep.records import SweepMeta, SweepRecords, TrialRecord
from sweep.results import SweepResults
from sweep.runner import SweepOutcome
from sweep.tracker import Tracker
from sweep_testlib import REPO_ROOT, write_yaml


def _tracker(uri: str) -> Tracker:
    tracker = Tracker(uri, "x")
    tracker.__dict__["experiment_id"] = "7"  # the cached property, without a store
    return tracker


def test_closing_block_names_methods_and_prints_urls_that_open_answers(tmp_path: Path) -> None:
    sweep = {"grid": {"expansion.n_inner_pts": [0, 2]}, "seeds": [0, 1], "baseline": {"expansion.n_inner_pts": 0}}
    plan = load_plan(write_yaml(tmp_path / "q.yaml", sweep, expansion={"name": "ee", "n_inner_pts": 2}))
    values = {(0, 0): 0.90, (0, 1): 0.92, (2, 0): 0.93, (2, 1): 0.96}
    trials = [TrialRecord(trial_id=t.key, key=t.key, phase="final", cell=t.cell, coords=t.coords, seed=t.seed, status="FINISHED",
                          metrics={"recall_at_1": values[(t.coords["expansion.n_inner_pts"], t.seed)]}, mlflow_run_id=f"run{i}")
              for i, t in enumerate(plan.final_trials())]
    results = SweepResults.build(plan, SweepRecords(meta=SweepMeta(wall_s=65.0), trials=trials))
    tracker = _tracker("sqlite:////tmp/x/mlflow.db")
    command, url = tracker.ui_hint()
    outcome = SweepOutcome(tmp_path, "FINISHED", [], command, url, tracker.run_url("P1"), tracker.compare_url(results.compare_run_ids()),
                           results, tracker.artifact_url("P1", "report.html"))
    text = closing_block(outcome, 65.0)
    assert text.splitlines()[0] == "-- done in 1:05: 4 trials finished, 0 failed; metrics in %, differences in points"
    assert "   MS+EE n=2 vs MS: R@1 +3.5 points (95% CI " in text and "2 seed pairs): " in text
    # the model-training view, not MLflow 3's GenAI one (checked in Chromium)
    assert "         sweep:   http://127.0.0.1:5000/#/experiments/7/runs/P1?workflowType=machine_learning  (" in text
    assert ("         report:  http://127.0.0.1:5000/#/experiments/7/runs/P1/artifacts/report.html?workflowType=machine_learning"
            in text)
    assert ('         compare: http://127.0.0.1:5000/#/compare-runs?runs=["run0","run1","run2","run3"]&experiments=["7"]&workflowType=machine_learning'
            in text)


def test_the_printed_mlflow_command_runs_as_printed() -> None:
    """`mlflow` is not on PATH without an activated venv: the command names this interpreter."""
    command, _ = _tracker("sqlite:////tmp/x/mlflow.db").ui_hint()
    argv = shlex.split(command)
    assert argv[1:4] == ["-m", "mlflow", "ui"] and argv[-2:] == ["--port", "5000"]
    proc = subprocess.run([*argv[:4], "--help"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--backend-store-uri" in proc.stdout
    assert _tracker("http://mlflow.example:5000").ui_hint() == (
        "", "http://mlflow.example:5000/#/experiments/7?workflowType=machine_learning")


def test_each_phase_opens_with_its_trials_and_what_scores_them(tmp_path: Path) -> None:
    from sweep.console import phase_header

    search = {"params": {"optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}, "num_samples": 3, "holdout": 0.25}
    sweep = {"grid": {"expansion.n_inner_pts": [0, 2]}, "seeds": [0, 1], "search": search}
    plan = load_plan(write_yaml(tmp_path / "q.yaml", sweep, expansion={"name": "ee", "n_inner_pts": 2}))
    assert phase_header(plan, "search", 6, 0) == ("-- search: 6 trials = 2 cells x 3 Optuna samples on seed 0, scored on "
                                                  "held-out training classes")
    assert phase_header(plan, "final", 4, 1) == ("-- final: 4 trials = 2 cells x 2 seeds, scored on the test split "
                                                 "(1 done before, resuming)")
    folds = load_plan(write_yaml(tmp_path / "f.yaml", {**sweep, "seeds": [3], "search": {**search, "holdout": None, "folds": 3}},
                                 expansion={"name": "ee", "n_inner_pts": 2}))
    assert phase_header(folds, "search", 6, 0).endswith("on seed 3, scored on 3 class-disjoint folds of the training classes (fold mean)")
    assert phase_header(folds, "final", 2, 0) == "-- final: 2 trials = 2 cells x 1 seed, scored on the test split"
