"""Issue 29, families 1 and 3: a trial store removed or replaced under a running sweep, and
foreign, future, empty or tampered stores.

Before: `rm trials.sqlite*` under a running driver let it train on into the unlinked file and
`--resume` refused ("store is missing"), losing every result; a store with `user_version 99`
was used; `DML_TRIAL_STORE=mlflow.db` created the store's tables in MLflow's database (and an
Optuna database was refused only after a table had been made in it and its journal mode changed);
a hand-edited final metric was reused although its own history disagreed and its checkpoint
was gone."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest

from sweep.records import FINISHED, TrialRecord
from faults_testlib import REPO, one_error_line
from sweep.store import POINTER_FILE, SCHEMA_VERSION, StoreError, SweepLog, TrialStore, check_store_file


REPO_RUN = REPO / "sweep" / "run.py"


def record(key: str = "arm=a/seed=0", recall: float = 0.5, checkpoint: str | None = None) -> TrialRecord:
    metrics = {"epoch": 1.0, "recall_at_1": recall}
    return TrialRecord(trial_id="t1", key=key, phase="final", cell="arm=a", seed=0, status=FINISHED,
                       metrics=metrics, history=[metrics], last_step=1, content_key="ck-" + key, checkpoint=checkpoint)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def store_files(path: Path) -> list[Path]:
    return [p for p in path.parent.iterdir() if p.name.startswith(path.name)]


# ------------------------------------------------------------------- family 1: identity


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_store_removed_or_replaced_under_a_sweep_stops_its_next_write(tmp_path: Path, how: str) -> None:
    store = tmp_path / ".store" / "trials.sqlite"
    log = SweepLog.create(tmp_path / "mine", "mine", store)
    log.add(record("arm=a/seed=0"))
    for f in store_files(store):  # rm trials.sqlite*
        f.unlink()
    if how == "replaced":  # another sweep's store now lives at that path
        other = SweepLog.create(tmp_path / "other", "other", store)
        other.add(record("arm=z/seed=0"))
        other.store.close()
    with pytest.raises(OSError) as caught:
        log.add(record("arm=a/seed=1"))
    assert caught.value.errno == errno.ESTALE and caught.value.filename == str(store)
    assert "removed or replaced while this sweep ran" in caught.value.strerror
    if how == "replaced":  # nothing of this sweep landed in the other sweep's store
        conn = sqlite3.connect(store)
        assert [r[0] for r in conn.execute("SELECT key FROM trials")] == ["arm=z/seed=0"]
        conn.close()


def test_resume_after_the_store_was_removed_starts_it_anew_and_says_what_was_lost(tmp_path: Path) -> None:
    store, sweep = tmp_path / ".store" / "trials.sqlite", tmp_path / "mine"
    log = SweepLog.create(sweep, "mine", store)
    log.add(record())
    (sweep / "checkpoints").mkdir()
    (sweep / "checkpoints" / "a.pt").write_bytes(b"x")
    (sweep / "optuna.journal").write_text("{}\n")
    sweep_id = log.sweep_id
    log.store.close()
    for f in store_files(store):
        f.unlink()

    with pytest.raises(StoreError.__mro__[1]) as caught:  # a report (no --resume) refuses, naming the store
        SweepLog.open(sweep, "mine")
    assert f"its trial store {store} is missing" in str(caught.value)

    resumed = SweepLog.open(sweep, "mine", recover=True)
    assert resumed.sweep_id == sweep_id  # the MLflow parent run is found again by it
    assert resumed.trials() == []
    assert f"trial store {store} was missing" in resumed.recovered
    assert "1 checkpoints" in resumed.recovered and "optuna.journal.lost" in resumed.recovered
    assert (sweep / "optuna.journal.lost").is_file() and not (sweep / "optuna.journal").exists()
    pointer = json.loads((sweep / POINTER_FILE).read_text())
    assert pointer["store_id"] == resumed.store.store_id and pointer["sweep_id"] == sweep_id
    resumed.add(record())  # the new store takes writes


def test_a_pointer_to_a_replaced_store_is_refused(tmp_path: Path) -> None:
    store, sweep = tmp_path / ".store" / "trials.sqlite", tmp_path / "mine"
    SweepLog.create(sweep, "mine", store).store.close()
    for f in store_files(store):
        f.unlink()
    SweepLog.create(tmp_path / "other", "other", store).store.close()
    with pytest.raises(StoreError, match="is not this sweep's trial store"):
        SweepLog.open(sweep, "mine", recover=True)


def test_resume_with_a_store_other_than_the_sweeps_is_refused(tmp_path: Path) -> None:
    store, sweep = tmp_path / ".store" / "trials.sqlite", tmp_path / "mine"
    SweepLog.create(sweep, "mine", store).store.close()
    with pytest.raises(ValueError, match=f"--store {tmp_path / 'x.sqlite'}: this sweep's records are in {store}"):
        SweepLog.open(sweep, "mine", store_path=tmp_path / "x.sqlite", recover=True)


# ------------------------------------------------------------------- family 3: what the file is


def sqlite_with(path: Path, *tables: str) -> Path:
    """Another program's SQLite database: a file holding these tables and nothing of a store."""
    conn = sqlite3.connect(path)
    for table in tables:
        conn.execute(f"CREATE TABLE {table}")
    conn.commit()
    conn.close()
    return path


def mlflow_like(path: Path) -> Path:
    return sqlite_with(path, "alembic_version (version_num VARCHAR(32))",
                       "experiments (experiment_id INTEGER PRIMARY KEY, name TEXT)")


def optuna_like(path: Path) -> Path:
    return sqlite_with(path, "studies (study_id INTEGER PRIMARY KEY, study_name TEXT)",
                       "version_info (version_info_id INTEGER PRIMARY KEY, schema_version INTEGER)")


def newer(path: Path) -> Path:
    store = TrialStore(path)
    store.conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 98}")
    store.close()
    return path


@pytest.mark.parametrize("make, says", [
    (mlflow_like, "an SQLite database of something else (tables: alembic_version, experiments)"),
    (optuna_like, "an SQLite database of something else (tables: studies, version_info)"),
    (newer, f"a trial store of a newer version (schema {SCHEMA_VERSION + 98}; this code reads up to {SCHEMA_VERSION})"),
    (lambda p: (p.write_bytes(b""), p)[1], "an empty file, not a trial store"),
    (lambda p: (p.write_text("runs,metric\n1,2\n"), p)[1], "not an SQLite database"),
])
def test_a_file_that_is_not_a_usable_store_is_refused_before_anything_is_written(tmp_path: Path, make, says) -> None:
    path = make(tmp_path / "db.sqlite")
    before, names, mode = digest(path), sorted(p.name for p in tmp_path.iterdir()), journal_mode(path)
    for check in (lambda: check_store_file(path), lambda: TrialStore(path).conn,
                  lambda: SweepLog.create(tmp_path / "s", "s", path)):
        with pytest.raises(StoreError) as caught:
            check()
        assert str(caught.value).startswith(f"{path}: {says}"), str(caught.value)
        assert "\n" not in str(caught.value)
    assert digest(path) == before  # no table made, journal mode untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # no -wal, -shm, no sweep folder
    assert journal_mode(path) == mode


def journal_mode(path: Path) -> str:
    """From the header (bytes 18-19: 2 in WAL mode), without opening the file."""
    head = path.read_bytes()[:20]
    return "" if not head.startswith(b"SQLite format 3") else "wal" if head[18:20] == b"\x02\x02" else "rollback"


def test_a_store_of_schema_1_is_migrated_and_keeps_its_records(tmp_path: Path) -> None:
    """Stores made before the marker (schema 1) are still the driver's own."""
    path = tmp_path / "trials.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE sweeps (id TEXT PRIMARY KEY, name TEXT NOT NULL, dir TEXT NOT NULL, meta TEXT NOT NULL);
        CREATE TABLE trials (sweep TEXT NOT NULL REFERENCES sweeps(id), key TEXT NOT NULL, content_key TEXT NOT NULL,
            status TEXT NOT NULL, reused INTEGER NOT NULL, record TEXT NOT NULL, PRIMARY KEY (sweep, key));
        PRAGMA user_version=1;""")
    conn.execute("INSERT INTO sweeps VALUES ('s1', 'old', ?, '{}')", (str(tmp_path / "old"),))
    rec = record()
    conn.execute("INSERT INTO trials VALUES ('s1', ?, ?, ?, 0, ?)", (rec.key, rec.content_key, FINISHED, rec.model_dump_json()))
    conn.commit()
    conn.close()
    store = TrialStore(path)
    assert store.trials("s1") == [rec]
    assert store.store_id and store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert set(store.finished([rec.content_key])) == {rec.content_key}  # no checksum yet: checked by its history


def test_a_read_only_store_is_a_state_write_failure_not_a_damaged_store(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """README: exit 3 for a read-only trial store (it read "not a readable trial store ... move it away")."""
    path = tmp_path / "ro" / "trials.sqlite"
    store = TrialStore(path)
    store.conn  # noqa: B018
    store.close()
    path.parent.chmod(0o555)
    if os.access(path.parent, os.W_OK):  # root: permissions do not bind it; what a user sees, by access()
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p).parent == path.parent or Path(p) == path.parent
                            else real(p, mode))
    try:
        for check in (lambda: check_store_file(path), lambda: TrialStore(path).conn):
            with pytest.raises(OSError) as caught:
                check()
            assert not isinstance(caught.value, ValueError) and caught.value.filename == str(path)
            assert caught.value.strerror == "trial store is read-only (the file or its folder)"
    finally:
        path.parent.chmod(0o755)


# ------------------------------------------------------------------- family 3: tampered records


def test_a_tampered_record_is_not_reused_and_one_without_its_checkpoint_only_for_its_metrics(tmp_path: Path) -> None:
    path = tmp_path / "trials.sqlite"
    log = SweepLog.create(tmp_path / "ran", "ran", path)
    kept = tmp_path / "kept.pt"
    kept.write_bytes(b"x")
    log.add(record("arm=a/seed=0", checkpoint=str(kept)))
    log.add(record("arm=b/seed=0", checkpoint=str(tmp_path / "gone.pt")))
    log.add(record("arm=c/seed=0"))
    log.add(record("arm=d/seed=0"))
    conn = sqlite3.connect(path)
    # By hand: a final metric raised (the record's own history disagrees) ...
    text = conn.execute("SELECT record FROM trials WHERE key = 'arm=c/seed=0'").fetchone()[0]
    edited = json.loads(text)
    edited["metrics"]["recall_at_1"] = 0.99
    conn.execute("UPDATE trials SET record = ? WHERE key = 'arm=c/seed=0'", (json.dumps(edited),))
    # ... and metrics and history both raised (only the checksum tells).
    edited = json.loads(conn.execute("SELECT record FROM trials WHERE key = 'arm=d/seed=0'").fetchone()[0])
    edited["metrics"]["recall_at_1"] = edited["history"][0]["recall_at_1"] = 0.99
    conn.execute("UPDATE trials SET record = ? WHERE key = 'arm=d/seed=0'", (json.dumps(edited),))
    conn.commit()
    conn.close()

    store = TrialStore(path)
    found = store.finished(["ck-arm=a/seed=0", "ck-arm=b/seed=0", "ck-arm=c/seed=0", "ck-arm=d/seed=0"])
    assert set(found) == {"ck-arm=a/seed=0", "ck-arm=b/seed=0"}
    assert found["ck-arm=a/seed=0"][1].checkpoint == str(kept)
    assert found["ck-arm=b/seed=0"][1].checkpoint is None
    assert found["ck-arm=b/seed=0"][1].metrics["recall_at_1"] == 0.5
    ran = tmp_path / "ran"
    assert sorted(store.notes) == sorted([
        f"reused for its metrics only: arm=b/seed=0 of {ran} (its checkpoint {tmp_path / 'gone.pt'} is gone)",
        f"not reused: arm=c/seed=0 of {ran}: its final metrics disagree with its own history; it trains afresh",
        f"not reused: arm=d/seed=0 of {ran}: its record was changed outside the sweep driver (checksum mismatch); "
        "it trains afresh",
    ])


# ------------------------------------------------------------------- family 1, end to end


@pytest.mark.slow
def test_a_store_removed_under_a_running_sweep_stops_it_and_resume_recovers(tmp_path: Path, mlflow_db: Path) -> None:
    """The driver trained on into the unlinked store and `--resume` refused: every result lost.
    Now the next write stops it (exit 3, one line naming the store), and `--resume` starts the store
    anew: the finished trial replays from its checkpoint, the rest train; MLflow shows each trial
    once, the parent ended."""
    from mlflow import MlflowClient

    from faults_testlib import run_cli, run_together, tiny, write_yaml
    from sweep.store import load_records

    raw = tiny()
    raw["sweep"] = {"name": "gone", "seeds": [0, 1, 2], "max_concurrent_trials": 1,
                    "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    cfg, out, store = write_yaml(tmp_path / "sweep.yaml", raw), tmp_path / "sweep", tmp_path / ".store" / "trials.sqlite"
    [result] = run_together("faults_testlib:sweep_with_store_removed", [[str(cfg), "--out", str(out)]], tmp_path)
    assert result.returncode == 3, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {store}: the trial store was removed or replaced while this sweep ran; nothing more was written "
        f"(--resume recovers the sweep from its folder and checkpoints); fix it, then continue with: "
        f"python sweep/run.py {cfg} --out {out} --resume")
    assert "Traceback" not in result.stderr
    assert not store.exists()  # no write went into a file nobody can read: none was made anew either

    resumed = run_cli([str(REPO_RUN), str(cfg), "--out", str(out), "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"trial store {store} was missing: started anew for this sweep" in resumed.stdout
    records = load_records(out).trials
    assert sorted((r.seed, r.status) for r in records) == [(s, "FINISHED") for s in (0, 1, 2)], records
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("gone").experiment_id])
    children = [r for r in runs if r.data.tags.get("sweep.role") != "parent"]
    assert sorted(r.data.tags["sweep.key"] for r in children) == sorted(r.key for r in records)
    assert {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.parametrize("mode", ["new", "resume", "dry_run"])
def test_the_driver_refuses_a_foreign_store_before_ray_starts(tmp_path: Path, no_ray: None, capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    """`DML_TRIAL_STORE=mlflow.db` wrote the store's tables into MLflow's database; the store-file
    errors came after Ray had started (about 19 s)."""
    from faults_testlib import call_cli, tiny, write_yaml
    from sweep.run import main

    raw = tiny()
    raw["sweep"] = {"name": "x", "seeds": [0], "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'tracking.db'}"}}
    cfg, out, db = write_yaml(tmp_path / "sweep.yaml", raw), tmp_path / "sweep", mlflow_like(tmp_path / "mlflow.db")
    resume = mode == "resume"
    if resume:  # a sweep whose store.json was pointed at it
        SweepLog.create(out, "x", tmp_path / "t.sqlite").store.close()
        (out / "plan.json").write_text("{}")
        (out / POINTER_FILE).write_text(json.dumps({"store": str(db), "sweep_id": "abc"}))
    before = digest(db)
    monkeypatch.setenv("DML_TRIAL_STORE", str(db))
    flag = {"new": [], "resume": ["--resume"], "dry_run": ["--dry-run"]}[mode]
    rc, err = call_cli(main, [str(cfg), "--out", str(out), *flag], capsys)
    assert rc == 2
    assert one_error_line(err) == (f"error: {db}: an SQLite database of something else (tables: alembic_version, "
                                   "experiments), not a trial store; name another --store (or DML_TRIAL_STORE)")
    assert digest(db) == before
    assert resume or not out.exists()
    assert not (tmp_path / "tracking.db").exists()  # no MLflow parent run of a sweep that never started
