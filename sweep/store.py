"""The trial store: every trial record of every sweep under one storage root, in one SQLite file.

Why SQLite (the standard library's `sqlite3`): a trial event changes one record, and SQLite
updates one row in place, in a transaction, durable across `kill -9` of the writer; several drivers
(sweeps side by side under one root) write the same file safely, each write waiting for the
others (`busy_timeout`) rather than failing, readers never blocking writers (WAL journal); the
content-key index answers "has this experiment finished anywhere?" without reading other sweeps'
records. A columnar file (parquet) would be rewritten whole per event; DuckDB allows one writing
process per file. The price: WAL needs the writers on one host (SQLite's shared-memory index), so
on a cluster the store is written by the drivers only (on the head node); trials never touch it.
On a network filesystem (NFS, CIFS, FUSE: `/mnt/dml/sweeps` on the cluster) the store uses
SQLite's rollback journal instead of WAL, which network file locks support; drivers on several
hosts should still each point `DML_TRIAL_STORE` at a local path.

Where: `<storage root>/.store/trials.sqlite`, the storage root being the folder that holds the sweep
directory (`sweeps/` for `sweeps/<name>`, the parent of `--out DIR`); `$DML_TRIAL_STORE` (or
`--store`) names another file. A sweep directory keeps its plan, report and checkpoints, plus
`store.json`, which says which store and which sweep in it hold its records. A sweep directory of
an earlier version (a `ledger.json`, no `store.json`) is migrated into the store on its first
`--resume` (the ledger is kept as `ledger.json.migrated`); `load_records` reads it as it is.

Tables: `sweeps` (one row per sweep: id, name, directory, `SweepMeta` as JSON) and `trials` (one
row per trial of a sweep: the sweep, the trial's key in it, its content key, status, whether it was
reused, the `TrialRecord` as JSON).

Layout of a sweep directory::

    plan.json      the expanded plan (cells, seeds, baseline, metric)
    store.json     {"store": <sqlite file>, "sweep_id": <id>}: where this sweep's records live
    search/        Ray Tune experiment of the search phase (if any; all cells)
    final/         Ray Tune experiment of the final phase (cells x seeds)
    final-2/, ...  the Tune experiment of each later session of a phase (the trials left only)
    checkpoints/   each trial's latest checkpoint, named by its key (`trial_checkpoint`)
    trials.parquet, cells.parquet, report.md, plot_*.png   written by sweep/report.py

Tune's own files in `search*/` and `final*/` (tuner.pkl, experiment_state-*.json and the trials'
params.pkl hold pickles; each trial's result.json and progress.csv, no TensorBoard events:
`sweep.compat.tune_loggers`) are written by Tune and never read back: resuming starts a new Tune
experiment from the store, the Optuna journal and `checkpoints/` (read with weights_only=True),
so whoever can write the sweep folder cannot make the driver run code.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import sqlite3
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

from dml_core.io import PathError, atomic_write_json, make_dir, read_json
from sweep.records import FINISHED, SweepMeta, SweepRecords, TrialRecord

STORE_ENV = "DML_TRIAL_STORE"
STORE_DIR, STORE_FILE = ".store", "trials.sqlite"
POINTER_FILE = "store.json"
PLAN_FILE = "plan.json"
LEGACY_LEDGER = "ledger.json"  # the sweep state of earlier versions, migrated on --resume
CHECKPOINT_DIR = "checkpoints"
SCHEMA_VERSION = 1

_NETWORK_FS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre", "gpfs", "afs")


def on_network_fs(path: Path, mounts_file: Path = Path("/proc/mounts")) -> bool:
    """The filesystem holding `path` is a network one (from /proc/mounts; False where unknown)."""
    try:
        mounts = [line.split()[1:3] for line in mounts_file.read_text().splitlines()]
    except OSError:
        return False
    path = path.resolve()
    best, kind = "", ""
    for point, fstype in mounts:
        if (str(path) == point or str(path).startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best, kind = point, fstype
    return kind in _NETWORK_FS or kind.startswith("fuse.")


_SCHEMA = """
CREATE TABLE IF NOT EXISTS sweeps (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, dir TEXT NOT NULL, meta TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    sweep TEXT NOT NULL REFERENCES sweeps(id), key TEXT NOT NULL, content_key TEXT NOT NULL,
    status TEXT NOT NULL, reused INTEGER NOT NULL, record TEXT NOT NULL, PRIMARY KEY (sweep, key));
CREATE INDEX IF NOT EXISTS trials_by_content ON trials (content_key, status, reused);
"""


def trial_checkpoint(sweep_dir: str | Path, key: str) -> Path:
    """Where the trial with key `key` keeps its latest `checkpoint.pt`: named after the key, not a
    Tune trial id, so that the new Tune experiment of a `--resume` finds it. Readable and unique:
    the key with unsafe characters replaced, plus a digest of the exact key."""
    readable = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", key)[:100]
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]
    return Path(sweep_dir) / CHECKPOINT_DIR / f"{readable}-{digest}.pt"


def default_store_path(sweep_dir: str | Path, configured: Optional[str] = None) -> Path:
    """`--store` > $DML_TRIAL_STORE > <the folder holding the sweep directory>/.store/trials.sqlite."""
    chosen = configured or os.environ.get(STORE_ENV)
    if chosen:
        return Path(chosen).expanduser().resolve()
    return Path(sweep_dir).resolve().parent / STORE_DIR / STORE_FILE


class TrialStore:
    """One SQLite file of trial records (see the module doc). Every write is one statement in its
    own transaction; nothing reads or rewrites more than the rows it names."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn: Optional[sqlite3.Connection] = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_conn": None}  # a connection does not cross processes

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            make_dir(self.path.parent)
            try:
                conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
                # WAL: readers never block the writer; NORMAL sync is durable across a killed process.
                # Network filesystems lack the shared memory WAL needs: the rollback journal there.
                conn.execute(f"PRAGMA journal_mode={'DELETE' if on_network_fs(self.path.parent) else 'WAL'}")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=60000")
                if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                    conn.executescript(_SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};")
            except sqlite3.DatabaseError as e:
                raise PathError(f"{self.path}: not a readable trial store ({e}); move it away to start a new one") from None
            self._conn = conn
        return self._conn

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        """One write, one transaction. A store that cannot be written (SQLite: "database or disk is
        full", a read-only file) is an OSError naming the file, like any other file of the driver's."""
        try:
            self.conn.execute(sql, args)
        except sqlite3.OperationalError as e:
            raise OSError(errno.EIO, f"trial store: {e}", str(self.path)) from e

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ---------------------------------------------------------------- sweeps

    def add_sweep(self, sweep_id: str, name: str, sweep_dir: Path, meta: SweepMeta) -> None:
        self._write("INSERT INTO sweeps (id, name, dir, meta) VALUES (?, ?, ?, ?)",
                    (sweep_id, name, str(sweep_dir), meta.model_dump_json()))

    def meta(self, sweep_id: str) -> SweepMeta:
        row = self.conn.execute("SELECT meta FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
        if row is None:
            raise PathError(f"{self.path}: holds no sweep {sweep_id} (a store.json pointing at another store?)")
        return SweepMeta.model_validate_json(row[0])

    def set_meta(self, sweep_id: str, meta: SweepMeta) -> None:
        self._write("UPDATE sweeps SET meta = ? WHERE id = ?", (meta.model_dump_json(), sweep_id))

    def sweep_dir(self, sweep_id: str) -> str:
        row = self.conn.execute("SELECT dir FROM sweeps WHERE id = ?", (sweep_id,)).fetchone()
        return row[0] if row else sweep_id

    # ---------------------------------------------------------------- trials

    def put(self, sweep_id: str, record: TrialRecord) -> None:
        """Insert or replace one trial's row."""
        self._write(
            "INSERT INTO trials (sweep, key, content_key, status, reused, record) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (sweep, key) DO UPDATE SET content_key = excluded.content_key, status = excluded.status, "
            "reused = excluded.reused, record = excluded.record",
            (sweep_id, record.key, record.content_key, record.status, int(record.reused_from is not None),
             record.model_dump_json()))

    def delete(self, sweep_id: str, key: str) -> None:
        self._write("DELETE FROM trials WHERE sweep = ? AND key = ?", (sweep_id, key))

    def trials(self, sweep_id: str) -> list[TrialRecord]:
        rows = self.conn.execute("SELECT record FROM trials WHERE sweep = ? ORDER BY rowid", (sweep_id,))
        return [TrialRecord.model_validate_json(r[0]) for r in rows]

    def finished(self, content_keys: Iterable[str]) -> dict[str, tuple[str, TrialRecord]]:
        """content key -> (the directory of the sweep that ran it, its record) for each key some sweep
        finished; a trial that ran is preferred to one that was itself reused."""
        keys = sorted({k for k in content_keys if k})
        found: dict[str, tuple[str, TrialRecord]] = {}
        for i in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = keys[i:i + 500]
            rows = self.conn.execute(
                f"SELECT t.content_key, s.dir, t.record FROM trials t JOIN sweeps s ON s.id = t.sweep "
                f"WHERE t.status = ? AND t.content_key IN ({','.join('?' * len(chunk))}) ORDER BY t.reused DESC",
                (FINISHED, *chunk))
            for ck, where, record in rows:  # reused rows first, so an original one overwrites them
                rec = TrialRecord.model_validate_json(record)
                found[ck] = (rec.reused_from or where, rec)
        return found


class SweepLog:
    """The records of one sweep, for the driver that holds the sweep directory's lock: read once
    when opened, then kept in memory; each change writes that one trial's row (or the meta row)."""

    def __init__(self, store: TrialStore, sweep_id: str, sweep_dir: Path) -> None:
        self.store, self.sweep_id, self.sweep_dir = store, sweep_id, Path(sweep_dir)
        self.meta = store.meta(sweep_id)
        self._records: dict[str, TrialRecord] = {r.key: r for r in store.trials(sweep_id)}
        self._by_trial_id = {r.trial_id: r.key for r in self._records.values() if r.trial_id}
        self.ended = sum(r.ended for r in self._records.values())  # kept up to date: no scan per event

    # ---------------------------------------------------------------- opening

    @classmethod
    def create(cls, sweep_dir: str | Path, name: str, store_path: Optional[str | Path] = None) -> "SweepLog":
        """A new sweep in the store (`default_store_path` unless given), and the sweep directory's
        pointer to it."""
        sweep_dir = Path(sweep_dir).resolve()
        store = TrialStore(store_path or default_store_path(sweep_dir))
        sweep_id = uuid.uuid4().hex[:16]
        store.add_sweep(sweep_id, name, sweep_dir, SweepMeta(name=name))
        make_dir(sweep_dir)
        atomic_write_json(sweep_dir / POINTER_FILE, {"store": str(store.path), "sweep_id": sweep_id})
        return cls(store, sweep_id, sweep_dir)

    @classmethod
    def open(cls, sweep_dir: str | Path, name: str = "") -> "SweepLog":
        """The sweep of an existing directory; a directory of an earlier version (`ledger.json`)
        is migrated into the default store first."""
        sweep_dir = Path(sweep_dir).resolve()
        store, sweep_id = _pointer(sweep_dir)
        if store is None:
            return migrate_ledger(sweep_dir, name or sweep_dir.name)
        return cls(store, sweep_id, sweep_dir)

    # ---------------------------------------------------------------- trials

    def trials(self) -> list[TrialRecord]:
        return list(self._records.values())

    def get(self, key: str) -> Optional[TrialRecord]:
        return self._records.get(key)

    def by_trial_id(self, trial_id: str) -> Optional[TrialRecord]:
        key = self._by_trial_id.get(trial_id)
        return self._records.get(key) if key else None

    def add(self, record: TrialRecord) -> TrialRecord:
        """A new record, or a whole replacement of the record with the same key."""
        old = self._records.get(record.key)
        if old is not None and old.trial_id:
            self._by_trial_id.pop(old.trial_id, None)
        self.store.put(self.sweep_id, record)
        self.ended += record.ended - (old is not None and old.ended)
        self._records[record.key] = record
        if record.trial_id:
            self._by_trial_id[record.trial_id] = record.key
        return record

    def update(self, key: str, **fields: Any) -> TrialRecord:
        """Change fields of the record `key` (validated); updating a key the sweep does not hold
        is a bug and raises, rather than inventing a stub record."""
        if key not in self._records:
            raise KeyError(f"{self.sweep_dir}: no trial {key} to update")
        record = self._records[key].model_copy(update=fields)
        return self.add(TrialRecord.model_validate(record.model_dump()))

    def remove(self, key: str) -> None:
        record = self._records.pop(key, None)
        if record is not None:
            self.ended -= record.ended
            self._by_trial_id.pop(record.trial_id, None)
            self.store.delete(self.sweep_id, key)

    # ---------------------------------------------------------------- sweep-level facts

    def update_meta(self, **fields: Any) -> SweepMeta:
        self.meta = SweepMeta.model_validate({**self.meta.model_dump(), **fields})
        self.store.set_meta(self.sweep_id, self.meta)
        return self.meta

    def records(self) -> SweepRecords:
        return SweepRecords(meta=self.meta, trials=self.trials())


def _pointer(sweep_dir: Path) -> tuple[Optional[TrialStore], str]:
    pointer = sweep_dir / POINTER_FILE
    if not pointer.is_file():
        return None, ""
    data = read_json(pointer)
    if not isinstance(data, dict) or not isinstance(data.get("store"), str) or not isinstance(data.get("sweep_id"), str):
        raise PathError(f"{pointer}: damaged, not a trial-store pointer (no store/sweep_id)")
    store_path = Path(data["store"])
    if not store_path.is_file():  # the storage root moved with its sweeps: the store beside them
        moved = default_store_path(sweep_dir)
        if moved.is_file():
            store_path = moved
        else:
            raise PathError(f"{pointer}: its trial store {store_path} is missing")
    return TrialStore(store_path), data["sweep_id"]


def _read_legacy(sweep_dir: Path) -> tuple[SweepMeta, list[TrialRecord]]:
    path = sweep_dir / LEGACY_LEDGER
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("trials"), dict) or not isinstance(data.get("meta"), dict):
        raise PathError(f"{path}: damaged, not a sweep ledger (no meta/trials); restore it or start anew")
    return SweepMeta.model_validate(data["meta"]), [TrialRecord.model_validate(r) for r in data["trials"].values()]


def migrate_ledger(sweep_dir: Path, name: str) -> SweepLog:
    """Move the records of an earlier version's `ledger.json` into the default store (once)."""
    if not (sweep_dir / LEGACY_LEDGER).is_file():
        raise PathError(f"{sweep_dir}: no {POINTER_FILE} (nor an older {LEGACY_LEDGER}): not a sweep's directory")
    meta, trials = _read_legacy(sweep_dir)
    log = SweepLog.create(sweep_dir, name)
    log.update_meta(**{**meta.model_dump(exclude_unset=True), "name": name})
    for record in trials:
        log.add(record)
    os.replace(sweep_dir / LEGACY_LEDGER, sweep_dir / (LEGACY_LEDGER + ".migrated"))
    return log


def load_records(sweep_dir: str | Path) -> SweepRecords:
    """Every record of the sweep in `sweep_dir` (one query); an unmigrated `ledger.json` is read as
    it is; a directory with neither holds no records yet."""
    sweep_dir = Path(sweep_dir).resolve()
    store, sweep_id = _pointer(sweep_dir)
    if store is not None:
        try:
            return SweepRecords(meta=store.meta(sweep_id), trials=store.trials(sweep_id))
        finally:
            store.close()
    if (sweep_dir / LEGACY_LEDGER).is_file():
        meta, trials = _read_legacy(sweep_dir)
        return SweepRecords(meta=meta, trials=trials)
    return SweepRecords(meta=SweepMeta(), trials=[])


def describe_origin(sweep_dir: str) -> str:
    """How a console line names the sweep a reused result came from."""
    return f"{Path(sweep_dir).name} ({sweep_dir})"
