"""The driver-side MLflow callback, driven by hand (no Ray): one run per trial, whatever happens."""
from __future__ import annotations

import json
import threading
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, Optional

import pytest
from mlflow import MlflowClient

from sweep.console import Console
from sweep.mlflow_writer import MlflowWriter
from sweep.pending import identity
from sweep.plan import load_plan
from sweep.planned_work import PlannedWork
from sweep.records import FAILED, FINISHED, KILLED, RUNNING
from sweep.spec import SweepError
from sweep.store import SweepLog
from sweep.mlflow_check import resolve_tracking_uri
from sweep.tracker import Tracker
from sweep.trial_runs import TrialRuns, parent_fields, sync_runs
from sweep.tune_callback import TrackingCallback, mark_killed
from sweep.trainable import TRIAL_ERROR
from sweep_testlib import write_yaml


def test_tracking_uri_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"  # made absolute
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:////data/m.db") == "sqlite:////data/m.db"
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(SweepError, match="mlflow 3 refuses the file store unless MLFLOW_ALLOW_FILE_STORE=true"):
        resolve_tracking_uri("./mlruns")


class FakeTrial(SimpleNamespace):
    """The attributes of a Ray Tune `Trial` that the callback reads."""

    def get_error(self) -> None:
        return None


def make_trial(trial_id: str, index: int, **extra: Any) -> FakeTrial:
    """A Tune trial running the phase's spec number `index` (the config holds the index)."""
    fields = {"last_result": {}, "error_file": None, **extra}
    return FakeTrial(trial_id=trial_id, config={"trial": index}, experiment_dir_name="final", **fields)


LABELS = {"model.embedding_dim=8": "dim=8", "model.embedding_dim=16": "dim=16"}


def callback(plan: Any, log: SweepLog, tracking_uri: str, experiment: str,
             writer: Optional[MlflowWriter] = None) -> TrackingCallback:
    runs = TrialRuns(log, Tracker(tracking_uri, experiment), "x", LABELS, "holdout_", writer)
    return TrackingCallback(log, runs, Console(8, "recall_at_1", "recall_at_1", "holdout_"), PlannedWork.of(plan),
                            partial(identity, plan))


@pytest.fixture(params=["at once", "writer thread"])
def tracked(request: pytest.FixtureRequest, tmp_path: Path,
            tracking_uri: str) -> Iterator[tuple[TrackingCallback, list[dict[str, Any]]]]:
    """A callback for a 2-cell x 2-seed sweep whose parent run exists, and the indices of its
    trial specs (4 final, then 2 search); its MLflow writes made at once, or queued to a writer
    thread as a sweep does (each check flushes first)."""
    plan = load_plan(write_yaml(tmp_path / "x.yaml", {"grid": {"model.embedding_dim": [8, 16]}, "seeds": [0, 1]}))
    log = SweepLog.create(tmp_path / "sweep", "x")
    experiment = f"cb-{tmp_path.name}"
    parent = Tracker(tracking_uri, experiment).start_run("parent", {"sweep.role": "parent"}, {})
    log.update_meta(mlflow_parent_run_id=parent, tracking_uri=tracking_uri, experiment=experiment)
    writer = MlflowWriter() if request.param == "writer thread" else None
    cb = callback(plan, log, tracking_uri, experiment, writer)
    cb.specs = plan.final_trials() + [plan.search_trial(c) for c in plan.cells]
    yield cb, list(range(len(cb.specs)))
    if writer is not None:
        writer.close()


def result(epoch: int, recall: float) -> dict[str, Any]:
    # What Tune hands the callback: the trainer's metrics plus Tune's own keys.
    return {"epoch": epoch, "loss": 0.5, "recall_at_1": recall, "training_iteration": epoch, "time_total_s": 1.0,
            "trial_id": "x", "date": "today", "done": False, "config": {}}


def history(cb: TrackingCallback, run_id: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in MlflowClient(cb.tracker.tracking_uri).get_metric_history(run_id, "recall_at_1")]


def test_lifecycle_retry_and_duplicate_results(tracked: tuple[TrackingCallback, list]) -> None:
    cb, specs = tracked
    trial = make_trial("t1", specs[0])
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, result(1, 0.5))
    # A crash and retry from the epoch-1 checkpoint: same run, epoch 1 is not logged twice.
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, result(1, 0.5))
    cb.on_trial_result(0, [], trial, result(2, 0.7))
    trial.last_result = result(2, 0.7)
    cb.on_trial_complete(0, [], trial)
    cb.runs.flush()

    record = cb.log.by_trial_id("t1")
    assert (record.status, record.attempts, record.key) == (FINISHED, 2, "model.embedding_dim=8/seed=0")
    assert record.metrics == {"epoch": 2.0, "loss": 0.5, "recall_at_1": 0.7}  # Tune's keys dropped
    assert len(record.content_key) == 32 and record.config["model"]["embedding_dim"] == 8 and record.scored_on == "test"
    client = MlflowClient(cb.tracker.tracking_uri)
    run = client.get_run(record.mlflow_run_id)
    assert run.info.status == FINISHED and run.info.run_name == run.data.tags["label"] == "dim=8 · s0"
    assert run.data.tags["sweep.key"] == record.key
    assert set(run.data.metrics) == {"loss", "recall_at_1"}  # the epoch is the step, not a metric
    assert run.data.tags["mlflow.parentRunId"] == cb.log.meta.mlflow_parent_run_id
    assert run.data.params["model.embedding_dim"] == "8" and run.data.params["seed"] == "0"
    assert history(cb, run.info.run_id) == [(1, 0.5), (2, 0.7)]
    summary = json.loads(Path(client.download_artifacts(run.info.run_id, "metrics.json", str(cb.log.sweep_dir))).read_text())
    assert summary["final"]["recall_at_1"] == 0.7 and len(summary["history"]) == 2


def test_non_finite_loss_and_crash_are_failures(tracked: tuple[TrackingCallback, list], tmp_path: Path) -> None:
    cb, specs = tracked
    nan = make_trial("t2", specs[1])
    cb.on_trial_start(0, [], nan)
    nan.last_result = {"recall_at_1": float("nan"), "epoch": 1, TRIAL_ERROR: "non-finite loss (nan) at epoch 1, iteration 2"}
    cb.on_trial_result(0, [], nan, nan.last_result)  # the marker is not an evaluation
    cb.on_trial_complete(0, [], nan)

    error_file = tmp_path / "error.txt"
    error_file.write_text("Failure # 1\nTraceback ...\n  File x\nValueError: first\nFailure # 2\nTraceback\nDatasetError: data.root: missing\n")
    crash = make_trial("t3", specs[2], error_file=str(error_file))
    cb.on_trial_error(0, [], crash)  # failed before its start was reported
    cb.runs.flush()

    client = MlflowClient(cb.tracker.tracking_uri)
    for trial_id, error, failure in (("t2", "non-finite loss (nan) at epoch 1, iteration 2", "non_finite"),
                                     ("t3", "DatasetError: data.root: missing", "crash")):
        record = cb.log.by_trial_id(trial_id)
        assert (record.status, record.error, record.failure) == (FAILED, error, failure)
        run = client.get_run(record.mlflow_run_id)
        assert run.info.status == FAILED and run.data.tags["error"] == error
        assert history(cb, run.info.run_id) == []


def test_recreated_trial_continues_its_key_and_interrupted_ones_are_killed(tracked: tuple[TrackingCallback, list]) -> None:
    cb, specs = tracked
    first = make_trial("old", specs[3])
    cb.on_trial_start(0, [], first)
    cb.on_trial_result(0, [], first, result(1, 0.4))
    assert mark_killed(cb.runs) == 1
    run_id = cb.log.by_trial_id("old").mlflow_run_id
    assert MlflowClient(cb.tracker.tracking_uri).get_run(run_id).info.status == KILLED

    # After a killed driver Tune re-created the trial with a new id: same record, same run.
    again = make_trial("new", specs[3])
    cb.on_trial_start(0, [], again)
    assert cb.log.by_trial_id("old") is None
    record = cb.log.by_trial_id("new")
    assert (record.mlflow_run_id, record.status, record.attempts) == (run_id, RUNNING, 2)
    cb.on_trial_result(0, [], again, result(1, 0.4))
    cb.on_trial_result(0, [], again, result(2, 0.6))
    again.last_result = result(2, 0.6)
    cb.on_trial_complete(0, [], again)
    cb.runs.flush()
    run = MlflowClient(cb.tracker.tracking_uri).get_run(run_id)
    assert run.info.status == FINISHED and run.data.tags["sweep.trial_id"] == "new"
    assert history(cb, run_id) == [(1, 0.4), (2, 0.6)]
    assert [r.key for r in SweepLog.open(cb.log.sweep_dir).trials()].count("model.embedding_dim=16/seed=1") == 1


def test_search_trials_have_their_own_names_and_metrics(tracked: tuple[TrackingCallback, list]) -> None:
    """A search trial is scored on held-out training classes: its metrics must not sort with the
    final trials' test-split `recall_at_1`."""
    cb, specs = tracked
    search = [i for i in specs if cb.specs[i].phase == "search" and cb.specs[i].cell == "model.embedding_dim=16"][0]
    client = MlflowClient(cb.tracker.tracking_uri)
    for n, trial_id in enumerate(("s1", "s2"), start=1):
        trial = make_trial(trial_id, search)
        trial.config["params"] = {"optimizer.lr": 0.00354}
        cb.on_trial_start(0, [], trial)
        cb.on_trial_result(0, [], trial, result(1, 0.9))
        cb.runs.flush()
        run = client.get_run(cb.log.by_trial_id(trial_id).mlflow_run_id)
        assert run.info.run_name == run.data.tags["label"] == f"search · dim=16 · #{n}"
        assert set(run.data.metrics) == {"holdout_loss", "holdout_recall_at_1"}
        assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "holdout_recall_at_1")] == [(1, 0.9)]
    assert cb.log.by_trial_id("s1").metrics["recall_at_1"] == 0.9  # the store keeps the trainer's names
    assert cb.log.by_trial_id("s1").scored_on == "test"  # this search has no holdout


@pytest.mark.parametrize("tracked", ["at once"], indirect=True)  # the writer's variant: the next test
def test_a_driver_killed_between_record_and_run_leaves_no_duplicate(tracked: tuple[TrackingCallback, list]) -> None:
    """A trial is recorded before its MLflow run is created. A driver killed after the run was
    created but before its id was recorded, or before the run was created, leaves after --resume
    exactly one run per trial, none RUNNING (before: a second run, stuck at RUNNING)."""
    cb, specs = tracked
    real_start = cb.tracker.start_run

    def start_then_die(*args: Any, **kwargs: Any) -> str:
        real_start(*args, **kwargs)
        raise KeyboardInterrupt  # stands in for kill -9: the run exists, its id never reaches the store

    def die(*args: Any, **kwargs: Any) -> str:
        raise KeyboardInterrupt

    for trial_id, index, start in (("t1", specs[0], start_then_die), ("t2", specs[1], die)):
        cb.tracker.start_run = start
        with pytest.raises(KeyboardInterrupt):
            cb.on_trial_start(0, [], make_trial(trial_id, index))

    # --resume: a new driver reads the store, then rebuilds the MLflow view.
    log = SweepLog.open(cb.log.sweep_dir)
    assert sorted((r.key, r.status, r.mlflow_run_id) for r in log.trials()) == [
        ("model.embedding_dim=8/seed=0", RUNNING, None), ("model.embedding_dim=8/seed=1", RUNNING, None)]
    runs = TrialRuns(log, Tracker(cb.tracker.tracking_uri, cb.tracker.experiment), "x", LABELS, "holdout_")
    assert sync_runs(runs) == (1, 0)  # t1's run adopted, t2's created
    children = runs.tracker.children(log.meta.mlflow_parent_run_id)
    assert {k: len(v) for k, v in children.items()} == {r.key: 1 for r in log.trials()}
    for record in log.trials():
        run = children[record.key][0]
        assert (record.status, run.info.status, record.mlflow_run_id) == (KILLED, KILLED, run.info.run_id)
    assert sync_runs(runs) == (0, 0)  # a second sync changes nothing


def test_writes_queued_when_the_driver_died_are_rebuilt_on_resume(tmp_path: Path, tracking_uri: str) -> None:
    """The writer thread still held MLflow writes when the driver died (kill -9): a run that lost
    its last evaluation and end, and a trial whose run was never made. `--resume` (`sync_runs`)
    leaves one run per trial showing every evaluation the store holds, none RUNNING, and leaves the
    run that was complete alone."""
    plan = load_plan(write_yaml(tmp_path / "x.yaml", {"grid": {"model.embedding_dim": [8, 16]}, "seeds": [0, 1]}))
    log = SweepLog.create(tmp_path / "sweep", "x")
    experiment = f"cb-{tmp_path.name}"
    parent = Tracker(tracking_uri, experiment).start_run("parent", {"sweep.role": "parent"}, {})
    log.update_meta(mlflow_parent_run_id=parent, tracking_uri=tracking_uri, experiment=experiment)
    writer = MlflowWriter()
    cb = callback(plan, log, tracking_uri, experiment, writer)
    cb.specs = plan.final_trials()
    t1, t2, t3 = (make_trial(f"t{i}", i - 1) for i in (1, 2, 3))
    cb.on_trial_start(0, [], t1)
    cb.on_trial_result(0, [], t1, result(1, 0.5))
    t1.last_result = result(1, 0.5)
    cb.on_trial_complete(0, [], t1)
    cb.on_trial_start(0, [], t2)
    cb.on_trial_result(0, [], t2, result(1, 0.4))
    cb.runs.flush()
    complete = cb.log.by_trial_id("t1").mlflow_run_id

    gate = threading.Event()

    def stall() -> None:  # the driver dies here: no later write reaches MLflow
        gate.wait()
        raise RuntimeError("driver gone")

    writer.submit(stall)
    cb.on_trial_result(0, [], t2, result(2, 0.6))
    t2.last_result = result(2, 0.6)
    cb.on_trial_complete(0, [], t2)
    cb.on_trial_start(0, [], t3)
    cb.on_trial_result(0, [], t3, result(1, 0.3))

    log = SweepLog.open(cb.log.sweep_dir)  # --resume: a new driver
    runs = TrialRuns(log, Tracker(tracking_uri, experiment), "x", LABELS, "holdout_")
    assert sync_runs(runs) == (2, 0)  # t2's incomplete run made anew, t3's made
    children = runs.tracker.children(parent)
    assert {k: len(v) for k, v in children.items()} == {r.key: 1 for r in log.trials()}
    client = MlflowClient(tracking_uri)
    for record in log.trials():
        run = client.get_run(record.mlflow_run_id)
        assert run.info.status == record.status != RUNNING
        logged = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "recall_at_1")]
        assert logged == [(int(h["epoch"]), h["recall_at_1"]) for h in record.history]
    assert log.get("model.embedding_dim=8/seed=0").mlflow_run_id == complete
    assert sync_runs(runs) == (0, 0)
    gate.set()
    writer.close()


def test_a_parent_made_just_before_the_driver_died_is_found_again(tmp_path: Path, tracking_uri: str) -> None:
    """The writer thread makes the sweep's parent run; a driver killed before the run's id reached
    the store leaves a parent that the next driver finds by the sweep's id (tag `sweep.id`) and
    records, instead of making a second one."""
    plan = load_plan(write_yaml(tmp_path / "x.yaml", {"seeds": [0]}))
    sweep_dir, experiment = tmp_path / "sweep", f"parent-{tmp_path.name}"
    writer = MlflowWriter()
    runs = TrialRuns(SweepLog.create(sweep_dir, "x"), Tracker(tracking_uri, experiment), "x", LABELS, "holdout_", writer)
    gate = threading.Event()
    writer.submit(gate.wait)  # the parent is made after open_parent returned, as in a sweep
    made = runs.open_parent(parent_fields(plan, sweep_dir, runs.log))
    gate.set()
    writer.flush()  # made; the driver dies before its next Tune event records the id
    writer.close()
    assert made.run_id and SweepLog.open(sweep_dir).meta.mlflow_parent_run_id is None

    again = TrialRuns(SweepLog.open(sweep_dir), Tracker(tracking_uri, experiment), "x", LABELS, "holdout_")
    assert again.open_parent(parent_fields(plan, sweep_dir, again.log)).run_id == made.run_id
    assert SweepLog.open(sweep_dir).meta.mlflow_parent_run_id == made.run_id
    client = MlflowClient(tracking_uri)
    parents = client.search_runs([again.tracker.experiment_id], "tags.`sweep.role` = 'parent'")
    assert [p.info.run_id for p in parents] == [made.run_id]


def test_a_parent_whose_params_mlflow_cut_is_kept_at_the_end(tmp_path: Path, tracking_uri: str) -> None:
    """MLflow cuts a param value at 6,000 characters (the `grid [...]` of 400 learning rates): the
    parent still holds this session's params, and the sweep's end keeps it rather than making a
    new one and moving every trial run under it (7 s and 100 MiB at N = 1,024)."""
    rates = [round(1e-3 + i * 1.234567e-9, 12) for i in range(400)]
    plan = load_plan(write_yaml(tmp_path / "x.yaml", {"grid": {"optimizer.lr": rates}, "seeds": [0]}))
    fields = parent_fields(plan, tmp_path / "sweep", SweepLog.create(tmp_path / "sweep", "x"))
    assert max(len(str(v)) for v in fields.params.values()) > 6000
    runs = TrialRuns(SweepLog.open(tmp_path / "sweep"), Tracker(tracking_uri, f"cut-{tmp_path.name}"), "x", LABELS, "holdout_")
    made = runs.open_parent(fields).run_id
    assert runs.refresh_parent() == made
    assert runs.tracker.client.get_run(made).info.lifecycle_stage == "active"


def test_sync_command_rebuilds_a_sweep_in_a_new_tracking_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture, tracking_uri: str) -> None:
    """MLflow is a view: `python sweep/run.py --sync DIR` makes the sweep's parent and one run per
    trial (params, every evaluation, end status) from the trial store, in whichever tracking store
    is in use now -- the one it used, then another MLFLOW_TRACKING_URI (what `--resume` also does)."""
    from sweep.records import TrialRecord
    from sweep.run import main
    from sweep.sweep_folder import create_sweep_dir

    name = f"synced-{tmp_path.name}"
    plan = load_plan(write_yaml(tmp_path / "x.yaml", {"name": name, "seeds": [0]}))
    sweep_dir = tmp_path / "sweeps" / name
    log = create_sweep_dir(plan, sweep_dir)
    history = [{"recall_at_1": 0.4, "epoch": 1.0}, {"recall_at_1": 0.5, "epoch": 2.0}]
    log.add(TrialRecord(trial_id="t", key="base/seed=0", label="base · s0", phase="final", cell="base", seed=0,
                        status=FINISHED, metrics=history[-1], history=history, config={"model": {"embedding_dim": 8}}))
    for uri in (tracking_uri, f"sqlite:///{tmp_path / 'other.db'}"):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        assert main(["--sync", str(sweep_dir)]) == 0
        assert f"synced to {uri}: 1 runs recreated" in capsys.readouterr().out
        tracker = Tracker(uri, name)
        (parent,) = tracker.client.search_runs([tracker.experiment_id], "tags.`sweep.role` = 'parent'")
        assert parent.info.status == FINISHED
        (child,) = tracker.children(parent.info.run_id)["base/seed=0"]
        assert child.info.status == FINISHED and child.data.params["model.embedding_dim"] == "8"
        steps = tracker.client.get_metric_history(child.info.run_id, "recall_at_1")
        assert [(m.step, m.value) for m in steps] == [(1, 0.4), (2, 0.5)]
    assert main(["--sync", str(sweep_dir)]) == 0  # in sync already: nothing created, nothing deleted
    assert "0 runs recreated, 0 duplicates deleted" in capsys.readouterr().out
