"""A trial costs the driver few MLflow transactions (issue 28: they were most of its CPU per
trial): one create, one batch per evaluation (the first carrying the params), one end -- and the
run holds what it held before (tags, every param, every metric, its end status)."""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from sweep.plan import load_plan
from sweep.records import FINISHED
from sweep.store import SweepLog
from sweep.tracker import Tracker
from sweep_testlib import write_yaml
from test_tracking import callback, make_trial, result

WRITES = ("create_run", "log_batch", "set_terminated", "update_run", "set_tag", "delete_tag", "get_run", "search_runs")


class Counting:
    """An MlflowClient that counts its database calls."""

    def __init__(self, client: Any, calls: Counter) -> None:
        self._client, self._calls = client, calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in WRITES:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls[name] += 1
            return attr(*args, **kwargs)

        return call


def test_one_trial_is_three_transactions_and_its_run_is_whole(tmp_path: Path, tracking_uri: str) -> None:
    plan = load_plan(write_yaml(tmp_path / "x.yaml", {"grid": {"model.embedding_dim": [8, 16]}, "seeds": [0, 1]}))
    log = SweepLog.create(tmp_path / "sweep", "x")
    experiment = f"tx-{tmp_path.name}"
    parent = Tracker(tracking_uri, experiment).start_run("parent", {"sweep.role": "parent"}, {})
    log.update_meta(mlflow_parent_run_id=parent, tracking_uri=tracking_uri, experiment=experiment)
    cb = callback(plan, log, tracking_uri, experiment)
    cb.specs = plan.final_trials()
    cb.tracker.experiment_id  # noqa: B018 -- the store and experiment opened before counting
    calls: Counter = Counter()
    cb.tracker.__dict__["client"] = Counting(cb.tracker.client, calls)

    trial = make_trial("t1", 0)
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, result(1, 0.5))
    trial.last_result = result(1, 0.5)
    cb.on_trial_complete(0, [], trial)
    cb.runs.flush()

    assert calls == Counter(create_run=1, log_batch=1, set_terminated=1), calls
    record = cb.log.by_trial_id("t1")
    run = MlflowClient(tracking_uri).get_run(record.mlflow_run_id)
    assert run.info.status == FINISHED and run.data.tags["sweep.key"] == record.key
    assert run.data.params["model.embedding_dim"] == "8" and len(run.data.params) >= 20
    assert run.data.metrics == {"loss": 0.5, "recall_at_1": 0.5}


def test_the_end_of_a_sweep_writes_its_parent_in_few_transactions(tmp_path: Path, tracking_uri: str) -> None:
    """The parent's results: its metrics with the description and headline tags in one batch, and
    no look-up of an earlier `error` tag on a parent this session made; a parent reopened with
    one (an earlier session whose final trials all failed) still loses it."""
    from sweep.labels import plan_labels
    from sweep.results import SweepResults
    from sweep.store import load_records
    from sweep.trial_runs import TrialRuns, parent_fields, publish_sweep
    from sweep_testlib import sweep_from_records

    plan = load_plan(write_yaml(tmp_path / "x.yaml", {"arms": {"base": {}, "gap": {"optimizer.lr": 1e-7}},
                                                      "baseline": {"arm": "base"}, "seeds": [0, 1, 2]}))
    values = {"arm=base": {s: 0.80 + 0.01 * s for s in range(3)}, "arm=gap": {s: 0.70 + 0.02 * s for s in range(3)}}
    sweep_dir = sweep_from_records(tmp_path / "sweep", plan, values)
    results = SweepResults.build(plan, load_records(sweep_dir))
    tracker = Tracker(tracking_uri, f"end-{tmp_path.name}")

    def end(calls: Counter) -> tuple[str, Any]:
        runs = TrialRuns(SweepLog.open(sweep_dir), tracker, plan.name, plan_labels(plan), "search_")
        runs.open_parent(parent_fields(plan, sweep_dir, runs.log))
        tracker.__dict__["client"] = Counting(real, calls)
        parent = publish_sweep(runs, results, [], None)
        tracker.__dict__["client"] = real
        return parent, real.get_run(parent)

    real = tracker.client
    calls: Counter = Counter()
    parent, run = end(calls)
    assert calls == Counter(get_run=2, log_batch=1, set_terminated=1), calls  # get_run: its params, its metrics
    assert run.info.status == FINISHED and run.data.tags["headline"] == results.summary.tag[0]
    assert run.data.tags["mlflow.note.content"].startswith("- ") and "recall_at_1_pct.gap.mean" in run.data.metrics

    real.set_tag(parent, "error", "all 6 final trials failed")  # what an earlier session left
    calls = Counter()
    again, run = end(calls)
    assert again == parent and "error" not in run.data.tags and calls["delete_tag"] == 1
