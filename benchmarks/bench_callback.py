"""Driver CPU per trial of the sweep's Tune callback and its MLflow writer, without Ray (issue 28).

`bench_sweep_scale.py` measures the whole driver against bare Ray Tune, and on a busy machine
Tune's own loop and the trials' start-ups move its numbers by more than the callback costs. This
replays N one-evaluation trials' events (start, a step, one result, complete, a step) into the
sweep's `TrackingCallback` -- the trial store's verbs, the MLflow view, its writer thread, the
console -- with a sqlite MLflow store, and prints the process CPU per trial (main thread and
writer together). To compare two versions, run it in each checkout, alternating:

    python benchmarks/bench_callback.py --trials 64
"""
from __future__ import annotations

import argparse
import contextlib
import io
import inspect
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere in the checkout


def trial(trial_id: str, index: int) -> SimpleNamespace:
    """The attributes of a Ray Tune `Trial` the callback reads."""
    return SimpleNamespace(trial_id=trial_id, config={"trial": index}, experiment_dir_name="final", last_result={},
                           error_file=None, get_error=lambda: None)


def result(epoch: int) -> dict[str, Any]:
    return {"epoch": epoch, "loss": 0.5, "recall_at_1": 0.5, "recall_at_2": 0.6, "map_at_r": 0.2, "r_precision": 0.3,
            "time_s": 1.0, "training_iteration": epoch, "time_total_s": 1.0, "trial_id": "x", "done": False}


def replay(n: int, work: Path) -> tuple[float, float]:
    """Seconds of process CPU and of wall for `n` trials' events, every MLflow write made."""
    from sweep.console import Console
    from sweep.mlflow_writer import MlflowWriter
    from sweep.plan import load_plan
    from sweep.store import SweepLog

    if (REPO / "sweep" / "tracker.py").is_file():
        from sweep.tracker import Tracker
        from sweep.trial_runs import TrialRuns
        from sweep.tune_callback import TrackingCallback
    else:  # the release before the split of tracking.py, for a paired comparison
        from sweep.tracking import Tracker, TrackingCallback, TrialRuns

    raw = yaml.safe_load((REPO / "experiments" / "quickstart.yaml").read_text())
    raw["sweep"] = {"name": "replay", "grid": {"optimizer.lr": [10 ** (-3 - i / n) for i in range(n)]}, "seeds": [0]}
    (work / "x.yaml").write_text(yaml.safe_dump(raw))
    plan = load_plan(work / "x.yaml")
    log = SweepLog.create(work / "sweep", "replay")
    uri = f"sqlite:///{work}/mlflow.db"
    tracker = Tracker(uri, "replay")
    parent = tracker.start_run("parent", {"sweep.role": "parent"}, {})
    if hasattr(log, "parent_recorded"):
        log.parent_recorded(parent, uri, "replay")
    else:
        log.update_meta(mlflow_parent_run_id=parent, tracking_uri=uri, experiment="replay")
    writer = MlflowWriter()
    runs = TrialRuns(log, tracker, "replay", {}, "holdout_", writer)
    console = Console(n, "recall_at_1", "recall_at_1", "holdout_")
    if "identify" in inspect.signature(TrackingCallback).parameters:  # the callback given what it needs, not the plan
        from sweep.pending import identity
        from sweep.planned_work import PlannedWork
        from sweep.sequential import PolicyView

        callback = TrackingCallback(log, runs, console, PlannedWork.of(plan, PolicyView.from_plan(plan)),
                                    partial(identity, plan))
    else:  # the releases before
        callback = TrackingCallback(plan, log, runs, console)
    callback._hardware = "2 CPU, 0 GPU"  # what ray.cluster_resources() would say; Ray is not started
    callback.specs = plan.final_trials()
    start, wall = time.process_time(), time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):
        for i in range(n):
            t = trial(f"t{i}", i)
            callback.on_trial_start(0, [], t)
            callback.on_step_end(0, [])
            callback.on_trial_result(0, [], t, result(1))
            t.last_result = result(1)
            callback.on_trial_complete(0, [], t)
            callback.on_step_end(0, [])
        runs.flush()
    spent, wall = time.process_time() - start, time.monotonic() - wall
    writer.close()
    return spent, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=64, help="trials replayed (default 64)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        spent, wall = replay(args.trials, Path(tmp))
    print(f"{args.trials} trials: {1000 * spent / args.trials:.1f} ms of driver CPU per trial (callback + MLflow writer), "
          f"{wall:.1f} s of wall until MLflow had them all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
