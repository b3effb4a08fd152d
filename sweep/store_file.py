"""The trial store's SQLite file: its schema, identity checks, and row reads and writes.

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

Tables: `sweeps` (one row per sweep: id, name, directory, `SweepMeta` as JSON) and `trials` (one
row per trial of a sweep: the sweep, the trial's key in it, its content key, status, whether it was
reused, the `TrialRecord` as JSON).
"""
from __future__ import annotations

import errno
import hashlib
import math
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

from dml_core.io import PathError, make_dir
from sweep.records import FINISHED, SweepMeta, TrialRecord

STORE_ENV = "DML_TRIAL_STORE"
STORE_DIR, STORE_FILE = ".store", "trials.sqlite"
SCHEMA_VERSION = 2  # 2: the store_info marker, record digests

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


# What marks a file as a trial store (the `store_info` table) and the schema it is at (SQLite's
# user_version): an existing file is used only with both, so a foreign SQLite database (MLflow's,
# Optuna's), an empty file or a store of a newer version is refused before anything is written to it.
STORE_KIND = "dml-trial-store"
_SCHEMA = f"""
CREATE TABLE store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE sweeps (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, dir TEXT NOT NULL, meta TEXT NOT NULL);
CREATE TABLE trials (
    sweep TEXT NOT NULL REFERENCES sweeps(id), key TEXT NOT NULL, content_key TEXT NOT NULL,
    status TEXT NOT NULL, reused INTEGER NOT NULL, record TEXT NOT NULL, digest TEXT, PRIMARY KEY (sweep, key));
CREATE INDEX trials_by_content ON trials (content_key, status, reused);
PRAGMA user_version={SCHEMA_VERSION};
"""
# Schema 1 (no marker, no record digests) -> 2; its rows keep a NULL digest (see `_trusted`).
_MIGRATE_1 = f"""
ALTER TABLE trials ADD COLUMN digest TEXT;
CREATE TABLE store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
PRAGMA user_version={SCHEMA_VERSION};
"""
_SQLITE_HEADER = b"SQLite format 3\x00"


class StoreError(PathError):
    """A file that is not a trial store this code may use (foreign, newer, empty, damaged); exit 2."""


def record_digest(record_json: str) -> str:
    """The checksum kept beside a record: a hand-edited record no longer matches it."""
    return hashlib.sha256(record_json.encode("utf-8")).hexdigest()


def check_store_file(path: str | Path) -> None:
    """Refuse, reading only, a `path` that is not a trial store this code can use; a missing file
    passes if its folder can be made and written. Called before Ray starts; raises `StoreError`
    (bad input, exit 2) or `OSError` (read-only, exit 3)."""
    path = Path(path)
    if not path.exists():
        folder = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
        if folder is not None and not folder.is_dir():
            raise StoreError(f"{path}: cannot create the trial store ({folder} is a file)")
        if folder is not None and not os.access(folder, os.W_OK | os.X_OK):
            raise OSError(errno.EACCES, "trial store folder is not writable", str(folder))
        return
    _inspect(path, writable=True)


def _inspect(path: Path, writable: bool) -> tuple[int, Optional[str]]:
    """(schema version, store id) of the trial store at `path`, found by reading only; refuses
    anything else in one line naming the file."""
    if path.is_dir():
        raise StoreError(f"{path}: a folder, not a trial store (name its file, e.g. {path / STORE_FILE})")
    try:
        with path.open("rb") as f:
            header = f.read(len(_SQLITE_HEADER))
    except OSError as e:
        raise OSError(e.errno, f"trial store cannot be read ({e.strerror})", str(path)) from None
    if not header:
        raise StoreError(f"{path}: an empty file, not a trial store (the driver makes its store itself: "
                         "remove the file or name another --store)")
    if header != _SQLITE_HEADER:
        raise StoreError(f"{path}: not an SQLite database, so not a trial store; move it away or name another --store")
    if writable and not (os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)):
        raise OSError(errno.EACCES, "trial store is read-only (the file or its folder)", str(path))
    try:
        # Reads only. Not `mode=ro` for a store about to be written: on a WAL database a read-only
        # connection leaves the -wal and -shm files behind, which a normal one removes on closing.
        conn = sqlite3.connect(f"file:{path}?mode={'rw' if writable else 'ro'}", uri=True, timeout=60)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            info = dict(conn.execute("SELECT key, value FROM store_info")) if "store_info" in tables else {}
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        raise StoreError(f"{path}: not a readable trial store ({e}); move it away or name another --store") from None
    if info.get("kind") == STORE_KIND or (version == 1 and tables == {"sweeps", "trials"}):  # 1: before the marker
        if version > SCHEMA_VERSION:
            raise StoreError(f"{path}: a trial store of a newer version (schema {version}; this code reads up to "
                             f"{SCHEMA_VERSION}): use that version, or name another --store")
        return version, info.get("store_id")
    what = f"tables: {', '.join(sorted(tables)[:5])}" if tables else f"no tables, user_version {version}"
    raise StoreError(f"{path}: an SQLite database of something else ({what}), not a trial store; "
                     "name another --store (or DML_TRIAL_STORE)")


def _create(path: Path) -> None:
    """A new, empty trial store at `path`, made whole beside it and then linked into place: no
    reader ever sees a half-made store, and of two drivers creating it at once one store wins."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.new")
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            conn.execute("BEGIN")
            for statement in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(statement)
            conn.executemany("INSERT INTO store_info VALUES (?, ?)",
                             [("kind", STORE_KIND), ("store_id", uuid.uuid4().hex)])
            conn.execute("COMMIT")
        finally:
            conn.close()
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another driver made it first: that one is the store
    except sqlite3.Error as e:
        raise OSError(errno.EIO, f"cannot create the trial store ({e})", str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


def default_store_path(sweep_dir: str | Path, configured: Optional[str] = None) -> Path:
    """`--store` > $DML_TRIAL_STORE > <the folder holding the sweep directory>/.store/trials.sqlite."""
    chosen = configured or os.environ.get(STORE_ENV)
    if chosen:
        return Path(chosen).expanduser().resolve()
    return Path(sweep_dir).resolve().parent / STORE_DIR / STORE_FILE


class TrialStore:
    """One SQLite file of trial records (see the module doc). Every write is one statement in its
    own transaction; nothing reads or rewrites more than the rows it names."""

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path, self.readonly = Path(path), readonly  # readonly: reports read a store they may not write
        self._conn: Optional[sqlite3.Connection] = None
        self.identity: tuple[int, int] = (-1, -1)  # (device, inode) of the file opened
        self.store_id: Optional[str] = None  # the id kept in the store, and in each sweep's store.json
        self.notes: list[str] = []  # what `finished` did not reuse, or reused in part, and why (console lines)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_conn": None}  # a connection does not cross processes

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = self._open()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        """Create the store if it is missing (whole, then moved into place), check what an existing
        file is before writing anything, migrate an older schema, and remember which file was
        opened (`identity`) so that one removed or replaced later is noticed (`_check_identity`)."""
        if self.readonly:
            return self._open_readonly()
        make_dir(self.path.parent)
        if not self.path.exists():
            _create(self.path)
        version, store_id = _inspect(self.path, writable=True)
        try:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            stat = os.stat(self.path)
            conn.execute("PRAGMA busy_timeout=60000")
            if version < SCHEMA_VERSION:
                conn.execute("BEGIN IMMEDIATE")  # one driver migrates; the others find it done
                if conn.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                    for statement in filter(str.strip, _MIGRATE_1.split(";")):
                        conn.execute(statement)
                    store_id = uuid.uuid4().hex
                    conn.executemany("INSERT INTO store_info VALUES (?, ?)", [("kind", STORE_KIND), ("store_id", store_id)])
                conn.execute("COMMIT")
                store_id = conn.execute("SELECT value FROM store_info WHERE key = 'store_id'").fetchone()[0]
            # WAL: readers never block the writer; NORMAL sync is durable across a killed process.
            # Network filesystems lack the shared memory WAL needs: the rollback journal there.
            conn.execute(f"PRAGMA journal_mode={'DELETE' if on_network_fs(self.path.parent) else 'WAL'}")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.OperationalError as e:
            raise OSError(errno.EIO, f"trial store: {e}", str(self.path)) from None
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{self.path}: not a readable trial store ({e}); move it away to start a new one") from None
        self.identity, self.store_id = (stat.st_dev, stat.st_ino), store_id
        return conn

    def _open_readonly(self) -> sqlite3.Connection:
        _version, self.store_id = _inspect(self.path, writable=False)
        try:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=60, isolation_level=None)
        except sqlite3.Error as e:
            raise OSError(errno.EIO, f"trial store cannot be read ({e})", str(self.path)) from None
        stat = os.stat(self.path)
        self.identity = (stat.st_dev, stat.st_ino)
        return conn

    def _check_identity(self) -> None:
        """The file at `path` is still the one opened: a store removed (`rm trials.sqlite*`) or
        replaced under a running driver would take its writes into an unlinked file nobody can
        read, or into another store's rows. Stops the driver (exit 3) before such a write."""
        try:
            stat = os.stat(self.path)
            same = (stat.st_dev, stat.st_ino) == self.identity
        except FileNotFoundError:
            same = False
        if not same:
            raise OSError(errno.ESTALE, "the trial store was removed or replaced while this sweep ran; nothing more "
                          "was written (--resume recovers the sweep from its folder and checkpoints)", str(self.path))

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        """One write, one transaction. A store that cannot be written (SQLite: "database or disk is
        full", a read-only file) is an OSError naming the file, like any other file of the driver's."""
        conn = self.conn
        self._check_identity()
        try:
            conn.execute(sql, args)
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
        """Insert or replace one trial's row, with its record's checksum."""
        text = record.model_dump_json()
        self._write(
            "INSERT INTO trials (sweep, key, content_key, status, reused, record, digest) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (sweep, key) DO UPDATE SET content_key = excluded.content_key, status = excluded.status, "
            "reused = excluded.reused, record = excluded.record, digest = excluded.digest",
            (sweep_id, record.key, record.content_key, record.status, int(record.reused_from is not None),
             text, record_digest(text)))

    def delete(self, sweep_id: str, key: str) -> None:
        self._write("DELETE FROM trials WHERE sweep = ? AND key = ?", (sweep_id, key))

    def trials(self, sweep_id: str) -> list[TrialRecord]:
        rows = self.conn.execute("SELECT record FROM trials WHERE sweep = ? ORDER BY rowid", (sweep_id,))
        return [TrialRecord.model_validate_json(r[0]) for r in rows]

    def finished(self, content_keys: Iterable[str]) -> dict[str, tuple[str, TrialRecord]]:
        """content key -> (the directory of the sweep that ran it, its record) for each key some sweep
        finished; a trial that ran is preferred to one that was itself reused. A record that fails
        its checks (`_distrust`) is not offered; one whose checkpoint is gone is offered for its
        metrics only (checkpoint None). Both are said in `notes`, for the console."""
        keys = sorted({k for k in content_keys if k})
        found: dict[str, tuple[str, TrialRecord]] = {}
        for i in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = keys[i:i + 500]
            rows = self.conn.execute(
                f"SELECT t.content_key, s.dir, t.key, t.record, t.digest FROM trials t JOIN sweeps s ON s.id = t.sweep "
                f"WHERE t.status = ? AND t.content_key IN ({','.join('?' * len(chunk))}) ORDER BY t.reused DESC",
                (FINISHED, *chunk))
            for ck, where, key, text, digest in rows:  # reused rows first, so an original one overwrites them
                rec = TrialRecord.model_validate_json(text)
                why = _distrust(rec, text, digest)
                if why:
                    self.notes.append(f"not reused: {key} of {where}: {why}; it trains afresh")
                    continue
                if rec.checkpoint and not Path(rec.checkpoint).is_file():
                    self.notes.append(f"reused for its metrics only: {key} of {where} (its checkpoint {rec.checkpoint} is gone)")
                    rec = rec.model_copy(update={"checkpoint": None})
                found[ck] = (rec.reused_from or where, rec)
        return found


def _distrust(record: TrialRecord, text: str, digest: Optional[str]) -> str:
    """Why a stored record is not to be reused ("" if it is): it was changed outside the driver
    (its checksum; schema-1 rows have none), or its last metrics are not its own last evaluation."""
    if record.history and any(record.history[-1].get(k) != v for k, v in record.metrics.items()
                              if not math.isnan(v)):
        return "its final metrics disagree with its own history"
    if digest is not None and digest != record_digest(text):
        return "its record was changed outside the sweep driver (checksum mismatch)"
    return ""
