"""Issue 29, families 2 and 4: MLflow is a view of the trial store, so a busy MLflow must not stop
training, and the side paths (a refused command, `--restart-changed`, `--sync`, a store that
fails) must leave it true.

Before: another process holding `mlflow.db` for 40 s aborted a training sweep after about 20 s
(exit 3, its running trials killed), with MLflow's 60-line traceback."""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

import pytest


def hold_lock(db: Path, seconds: float) -> threading.Event:
    """Another process's write transaction on `db` for `seconds` (set once it holds the lock)."""
    held = threading.Event()

    def holder() -> None:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        held.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
        conn.close()

    threading.Thread(target=holder, daemon=True).start()
    held.wait()
    return held


def test_a_locked_mlflow_store_delays_its_writes_and_stops_nothing(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    from sweep.mlflow_writer import MlflowWriter
    from sweep.tracker import Tracker

    db = tmp_path / "mlflow.db"
    tracker = Tracker(f"sqlite:///{db}", "busy")
    run = tracker.start_run("a", {}, {})
    writer = MlflowWriter()
    try:
        hold_lock(db, 30)  # longer than MLflow's own ~20 s before it gives up
        start = time.monotonic()
        writer.submit(lambda: tracker.log_metrics(run, {"recall_at_1": 0.5}, 1))
        time.sleep(25)
        writer.check()  # the driver's next Tune event: nothing raised while MLflow waits
        writer.flush()  # the end of a phase: does not wait for a writer that lags behind a busy store
        assert time.monotonic() - start < 29
        assert writer.catch_up(60)  # the end of the sweep: MLflow catches up once the lock is gone
        waited = time.monotonic() - start
    finally:
        writer.close()
    assert waited >= 25
    assert tracker.client.get_run(run).data.metrics == {"recall_at_1": 0.5}
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if "MLflow" in line] == [
        "MLflow is busy: 1 update waiting; the trial store has them, --sync replays"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text[:2000]


def test_a_store_locked_past_the_wait_is_the_error_it_was() -> None:
    """On the driver's own thread the wait is bounded: past it the lock error is raised (the end of
    a sweep then says to --sync)."""
    from sweep.mlflow_writer import PatientClient

    calls, said = [], []

    class Locked:
        def log_batch(self) -> None:
            calls.append(time.monotonic())
            raise RuntimeError("(sqlite3.OperationalError) database is locked")

        def get_run(self) -> None:
            raise ValueError("RESOURCE_DOES_NOT_EXIST")

    client = PatientClient(Locked(), "sqlite:///x.db", said.append, wait_s=1.2)
    with pytest.raises(RuntimeError, match="database is locked"):
        client.log_batch()
    assert len(calls) >= 2 and calls[-1] - calls[0] >= 1.0 and len(said) == 1
    with pytest.raises(ValueError):  # any other error at once
        client.get_run()


@pytest.mark.slow
def test_side_paths_leave_the_mlflow_view_true(tmp_path: Path, mlflow_db: Path) -> None:
    """A refused `--resume` (dropping a seed) marked a finished sweep's parent FAILED with an
    `error` tag that outlived a later successful resume; after `--restart-changed` the parent kept
    the old `optimizer.lr`; `--sync` rebuilt a parent without `report.html`, which its description
    points to."""
    from mlflow import MlflowClient

    from faults_testlib import REPO, one_error_line, run_cli, tiny, write_yaml

    raw = tiny()
    raw["sweep"] = {"name": "view", "seeds": [0, 1], "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    cfg, out = write_yaml(tmp_path / "sweep.yaml", raw), tmp_path / "sweep"
    sweep = [str(REPO / "sweep" / "run.py"), str(cfg), "--out", str(out)]

    def parents() -> list:
        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        exp = client.get_experiment_by_name("view")
        return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweep.role") == "parent"]

    first = run_cli(sweep, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    [parent] = parents()
    assert parent.info.status == "FINISHED"

    refused = run_cli([*sweep, "--resume", "--set", "sweep.seeds=[0]"], tmp_path)
    assert refused.returncode == 2 and "drops seed 1" in one_error_line(refused.stderr)
    [after] = parents()
    assert (after.info.run_id, after.info.status, "error" in after.data.tags) == (parent.info.run_id, "FINISHED", False)

    changed = run_cli([*sweep, "--resume", "--restart-changed", "--set", "optimizer.lr=0.001"], tmp_path)
    assert changed.returncode == 0, changed.stderr[-3000:]
    [after] = parents()
    assert after.data.params["optimizer.lr"] == "0.001" and after.info.status == "FINISHED"
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    children = client.search_runs([after.info.experiment_id], f"tags.`mlflow.parentRunId` = '{after.info.run_id}'")
    assert sorted(c.data.tags["sweep.seed"] for c in children) == ["0", "1"]

    for f in tmp_path.glob("mlflow.db*"):
        f.unlink()
    synced = run_cli([str(REPO / "sweep" / "run.py"), "--sync", str(out)], tmp_path)
    assert synced.returncode == 0, synced.stderr[-3000:]
    [rebuilt] = parents()
    artifacts = {a.path for a in MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").list_artifacts(rebuilt.info.run_id)}
    assert {"report.html", "report.md", "sweep.yaml"} <= artifacts, artifacts
    assert any(a.startswith("plot_") for a in artifacts), artifacts
    assert rebuilt.data.params["optimizer.lr"] == "0.001" and rebuilt.info.status == "FINISHED"


@pytest.mark.slow
def test_mlflow_locked_through_a_sweep_stops_nothing_and_sync_completes_it(tmp_path: Path) -> None:
    """Issue 29 family 4: `mlflow.db` locked by someone else from the first trial to past the
    sweep's end, longer than the (shortened) waits. Before: the sweep stopped with exit 3 once the
    wait ran out. Now: exit 0, every record in the trial store, one line when MLflow lags and one
    saying to --sync; `--sync` afterwards makes MLflow whole."""
    from mlflow import MlflowClient

    from faults_testlib import REPO, run_cli, tiny, write_yaml
    from sweep.store import load_records

    db = tmp_path / "mlflow.db"
    raw = tiny()
    raw["sweep"] = {"name": "locked", "seeds": [0, 1], "mlflow": {"tracking_uri": f"sqlite:///{db}"}}
    cfg, out = write_yaml(tmp_path / "sweep.yaml", raw), tmp_path / "sweep"
    locked = run_cli(["-c", "import sys; sys.path.insert(0, 'tests/faults'); import faults_testlib as t; "
                      "sys.exit(t.sweep_with_mlflow_locked(sys.argv[1:]))", str(db), str(cfg), "--out", str(out)],
                     REPO, timeout=600)
    assert locked.returncode == 0, locked.stderr[-3000:]
    lines = locked.stdout.splitlines()
    assert [line for line in lines if line.startswith("MLflow is busy:")] == [
        next(line for line in lines if line.startswith("MLflow is busy:"))], locked.stdout[-3000:]
    assert any(f"--sync {out}` replays them" in line for line in lines), locked.stdout[-3000:]
    records = load_records(out).trials
    assert sorted((r.key, r.status) for r in records) == [("base/seed=0", "FINISHED"), ("base/seed=1", "FINISHED")]

    synced = run_cli([str(REPO / "sweep" / "run.py"), "--sync", str(out)], tmp_path)
    assert synced.returncode == 0, synced.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("locked").experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    children = {r.data.tags["sweep.key"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert parent.info.status == "FINISHED" and "report.html" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert sorted(children) == ["base/seed=0", "base/seed=1"]
    for r in load_records(out).trials:
        assert children[r.key].info.status == "FINISHED"
        assert children[r.key].data.metrics["recall_at_1"] == r.metrics["recall_at_1"]
