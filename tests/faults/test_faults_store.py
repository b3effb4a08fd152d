"""Issue 19, defect 1: sweeps started together on one fresh sqlite MLflow store both start (one
died, every time, with `table ... already exists` and a half-made sweep folder)."""
from __future__ import annotations

from pathlib import Path

from faults_testlib import run_together


def test_drivers_creating_one_sqlite_store_together_all_succeed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    results = run_together("faults_testlib:open_tracker", [[uri, "shared"]] * 4, tmp_path, timeout=240)
    assert [r.returncode for r in results] == [0] * 4, [r.stderr[-1500:] for r in results]
    ids = {r.stdout.strip() for r in results}
    assert len(ids) == 1 and ids != {""}, ids  # one experiment, found or made by each


def test_a_store_that_refuses_a_write_is_named_with_exit_3(tmp_path: Path) -> None:
    """A read-only MLflow store (sqlite: `attempt to write a readonly database`) failed with a
    traceback and exit 1 ("done, some trials failed"): now one line naming the store, exit 3."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import OperationalError

    from sweep.plan import SweepPlan
    from sweep.run import _driver_io_fault

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    plan = SweepPlan.from_dict({"data": {"name": "digits"}, "sweep": {"mlflow": {"tracking_uri": uri}}}, "x.yaml")
    readonly = OperationalError("INSERT INTO runs ...", {}, Exception("attempt to write a readonly database"))
    try:
        try:
            raise readonly
        except OperationalError as e:
            raise MlflowException(f"(sqlite3.OperationalError) attempt to write a readonly database\n{e}") from e
    except MlflowException as wrapped:
        assert _driver_io_fault(wrapped, plan) == (f"{uri}: MLflow store: (sqlite3.OperationalError) attempt to write "
                                                   "a readonly database")
    assert _driver_io_fault(RuntimeError("a bug"), plan) is None  # keeps its traceback


def test_a_store_of_an_unknown_mlflow_schema_is_one_line_with_exit_3(tmp_path: Path) -> None:
    """A sqlite store whose schema revision this MLflow does not know (made by another MLflow
    version) passes the checks (it is a writable SQLite database) and fails when MLflow opens it,
    in the writer thread: alembic's `Can't locate revision` was a 60-line traceback, exit 1."""
    import sqlite3

    from sweep.plan import SweepPlan
    from sweep.run import _driver_io_fault
    from sweep.tracker import Tracker

    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32))")
        conn.execute("INSERT INTO alembic_version VALUES ('zzzz')")
    uri = f"sqlite:///{db}"
    plan = SweepPlan.from_dict({"data": {"name": "digits"}, "sweep": {"mlflow": {"tracking_uri": uri}}}, "x.yaml")
    try:
        Tracker(uri, "x").experiment_id  # noqa: B018 -- what the writer's first job does
    except Exception as e:  # noqa: BLE001
        assert _driver_io_fault(e, plan) == f"{uri}: MLflow store: Can't locate revision identified by 'zzzz'"
    else:
        raise AssertionError("MLflow opened a store of an unknown schema")
