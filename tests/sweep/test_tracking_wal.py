"""The sweep's sqlite tracking store is switched to WAL (one fsync per MLflow commit, not several)."""
from __future__ import annotations

import sqlite3
from pathlib import Path

from sweep.tracker import Tracker, relax_sync, use_wal


def journal_mode(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()


def test_a_new_and_an_existing_sqlite_store_end_up_in_wal(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    Tracker(f"sqlite:///{fresh}", "exp").client.search_experiments()
    assert journal_mode(fresh) == "wal"

    old = tmp_path / "old.db"
    sqlite3.connect(old).execute("CREATE TABLE t (x)").connection.close()  # a store in rollback-journal mode
    assert journal_mode(old) == "delete"
    Tracker(f"sqlite:///{old}", "exp").client
    assert journal_mode(old) == "wal"


def test_other_stores_are_left_alone(tmp_path: Path) -> None:
    use_wal(f"sqlite:///{tmp_path / 'missing' / 'm.db'}")  # a folder that is not there: MLflow's to report
    use_wal("sqlite:///:memory:")
    use_wal((tmp_path / "runs").as_uri())
    use_wal("http://localhost:5000")
    assert list(tmp_path.iterdir()) == []


def synchronous(uri: str) -> int:
    """The `synchronous` level of a new SQLAlchemy connection to `uri` made in this process."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri)
    try:
        with engine.connect() as conn:
            return conn.exec_driver_sql("PRAGMA synchronous").scalar()
    finally:
        engine.dispose()


def test_the_store_in_wal_commits_without_an_fsync_and_only_it(tmp_path: Path) -> None:
    store = tmp_path / "store.db"
    tracker = Tracker(f"sqlite:///{store}", "exp")
    tracker.client.search_experiments()
    assert synchronous(f"sqlite:///{store}") == 1  # NORMAL: consistent after a crash, no fsync per commit

    other = tmp_path / "other.db"  # not a tracking store of this process
    sqlite3.connect(other).execute("PRAGMA journal_mode=WAL").connection.close()
    assert synchronous(f"sqlite:///{other}") == 2  # SQLite's default, FULL

    rollback = tmp_path / "rollback.db"  # a store that could not be switched to WAL keeps FULL (NORMAL is unsafe there)
    sqlite3.connect(rollback).execute("CREATE TABLE t (x)").connection.close()
    relax_sync(f"sqlite:///{rollback}")
    assert journal_mode(rollback) == "delete"
    assert synchronous(f"sqlite:///{rollback}") == 2
