"""The end of a finished sweep, as one pipeline: its records -> one `SweepResults` -> the report ->
the MLflow parent -> the session's `SweepOutcome`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from sweep.plan import FINAL, SweepPlan
from sweep.records import FINISHED
from sweep.store import SweepLog

if TYPE_CHECKING:  # MLflow's module loads lazily: the driver's checks run before it
    from sweep.sequential import PolicyView
    from sweep.trial_runs import TrialRuns


@dataclass
class SweepOutcome:
    sweep_dir: Path
    status: str  # FINISHED or KILLED
    report_files: list[Path]
    mlflow_command: str = ""  # serves the tracking store ("" for an MLflow server)
    mlflow_url: str = ""  # this experiment's runs table
    parent_url: str = ""  # the sweep's parent run: headlines, report.html
    compare_url: str = ""  # MLflow's compare view of the final runs
    results: Any = None  # sweep.results.SweepResults, for the closing block
    report_url: str = ""  # report.html in MLflow's artifact viewer
    final_trials: int = 0
    failed: list[str] = field(default_factory=list)  # keys of the final trials that failed
    reused: int = 0  # trials this session answered from the trial store instead of training
    tracking_uri: str = ""
    wall_s: float = 0.0  # this driver session's wall time (the sweep's total over sessions: its records' meta)


def conclude(plan: SweepPlan, view: Optional["PolicyView"], sweep_dir: Path, log: SweepLog, runs: "TrialRuns", *,
             reused: int, tracking_uri: str, wall_s: float) -> SweepOutcome:
    """After the phases: the records read once, one `SweepResults`, the report, the MLflow
    parent's metrics and files; the session's outcome with where to find them."""
    from sweep.report import write_results
    from sweep.results import SweepResults
    from sweep.trial_runs import publish_sweep

    records = log.records()  # once: the final trials' states and every writer's results
    final = [r for r in records.trials if r.phase == FINAL]
    failed = sorted(r.key for r in final if not r.finished)
    results = SweepResults.of_view(plan, view, records)
    files = write_results(results, sweep_dir)
    all_failed = f"all {len(final)} final trials failed" if final and len(failed) == len(final) else None
    parent = publish_sweep(runs, results, files, all_failed)
    outcome = SweepOutcome(sweep_dir, FINISHED, files, results=results, final_trials=len(final), failed=failed,
                           reused=reused, tracking_uri=tracking_uri, wall_s=wall_s)
    if parent is None:  # MLflow stayed busy: the sweep is done, its view is behind the store
        outcome.mlflow_url = f"(behind: python sweep/run.py --sync {sweep_dir})"
        return outcome
    tracker = runs.tracker
    outcome.mlflow_command, outcome.mlflow_url = tracker.ui_hint()
    outcome.parent_url = tracker.run_url(parent)
    outcome.compare_url = tracker.compare_url(results.compare_run_ids())
    outcome.report_url = tracker.artifact_url(parent, "report.html")
    return outcome
