"""The trial store's one writer: a sweep's records, and the lifecycle verbs that change them.

Every row of the trial store (`sweep.store_file`: the SQLite file, why SQLite, its tables) is
written from this module only (a test walks `sweep/` to check it): the Tune callback, the runner,
the search and the MLflow view say what happened -- a trial started, reported a result, ended,
was answered from the store, was discarded for a rerun, a run or the parent got its MLflow id --
and `SweepLog`'s verbs turn that into the record. A `TrialRecord` is built from a trial's spec in
one place (`trial_record`).

Where: `<storage root>/.store/trials.sqlite`, the storage root being the folder that holds the sweep
directory (`sweeps/` for `sweeps/<name>`, the parent of `--out DIR`); `$DML_TRIAL_STORE` (or
`--store`) names another file. A sweep directory keeps its plan, report and checkpoints, plus
`store.json`, which says which store and which sweep in it hold its records. A sweep directory of
an earlier version (a `ledger.json`, no `store.json`) is migrated on its first `--resume`
(`sweep.ledger`).

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

import os
import re
import hashlib
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from dml_core.io import PathError, atomic_write_json, make_dir, read_json
from sweep.ledger import LEGACY_LEDGER, read_legacy, retire_legacy
from sweep.records import FAILED, FINISHED, KILLED, RUNNING, BestChoice, SweepMeta, SweepRecords, TrialRecord
from sweep.store_file import (SCHEMA_VERSION, STORE_DIR, STORE_ENV, STORE_FILE, StoreError, TrialStore,
                              check_store_file, default_store_path, on_network_fs)

if TYPE_CHECKING:
    from sweep.plan import TrialSpec

# The store file's names, imported from here by the driver and the tests.
__all__ = ["SCHEMA_VERSION", "STORE_DIR", "STORE_ENV", "STORE_FILE", "StoreError", "TrialStore", "check_store_file",
           "default_store_path", "on_network_fs", "LEGACY_LEDGER", "POINTER_FILE", "CHECKPOINT_DIR",
           "SweepLog", "StoreMissing", "trial_record", "trial_checkpoint", "load_records", "describe_origin"]

POINTER_FILE = "store.json"
CHECKPOINT_DIR = "checkpoints"


def trial_record(spec: "TrialSpec", *, label: str, status: str, key: Optional[str] = None, trial_id: str = "",
                 params: Optional[dict[str, Any]] = None, **fields: Any) -> TrialRecord:
    """The one way a `TrialRecord` is made from a trial's spec: its place in the sweep from the
    spec (`key`: a search sample's own), its searched values on top of the spec's, the rest from
    `fields`; `trial_id` "" for a trial that never started (reused, or never run)."""
    return TrialRecord(trial_id=trial_id, key=key or spec.key, label=label, phase=spec.phase,
                       cell=spec.cell, arm=spec.arm, coords=spec.coords, seed=spec.seed,
                       params={**spec.params, **(params or {})}, status=status, **fields)


def trial_checkpoint(sweep_dir: str | Path, key: str) -> Path:
    """Where the trial with key `key` keeps its latest `checkpoint.pt`: named after the key, not a
    Tune trial id, so that the new Tune experiment of a `--resume` finds it. Readable and unique:
    the key with unsafe characters replaced, plus a digest of the exact key."""
    readable = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", key)[:100]
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]
    return Path(sweep_dir) / CHECKPOINT_DIR / f"{readable}-{digest}.pt"


class SweepLog:
    """The records of one sweep, for the driver that holds the sweep directory's lock: read once
    when opened, then kept in memory; each change writes that one trial's row (or the meta row)."""

    def __init__(self, store: TrialStore, sweep_id: str, sweep_dir: Path) -> None:
        self.store, self.sweep_id, self.sweep_dir = store, sweep_id, Path(sweep_dir)
        self.meta = store.meta(sweep_id)
        self._records: dict[str, TrialRecord] = {r.key: r for r in store.trials(sweep_id)}
        self._by_trial_id = {r.trial_id: r.key for r in self._records.values() if r.trial_id}
        self.ended = sum(r.ended for r in self._records.values())  # kept up to date: no scan per event
        self.recovered = ""  # what a store found missing on --resume lost (`_recover`), for the console

    # ---------------------------------------------------------------- opening

    @classmethod
    def create(cls, sweep_dir: str | Path, name: str, store_path: Optional[str | Path] = None,
               sweep_id: Optional[str] = None) -> "SweepLog":
        """A new sweep in the store (`default_store_path` unless given), and the sweep directory's
        pointer to it (with the store's id: `_pointer` checks it is still that store)."""
        sweep_dir = Path(sweep_dir).resolve()
        store = TrialStore(store_path or default_store_path(sweep_dir))
        sweep_id = sweep_id or uuid.uuid4().hex[:16]
        store.add_sweep(sweep_id, name, sweep_dir, SweepMeta(name=name))
        make_dir(sweep_dir)
        atomic_write_json(sweep_dir / POINTER_FILE, {"store": str(store.path), "sweep_id": sweep_id, "store_id": store.store_id})
        return cls(store, sweep_id, sweep_dir)

    @classmethod
    def open(cls, sweep_dir: str | Path, name: str = "", store_path: Optional[str | Path] = None,
             recover: bool = False) -> "SweepLog":
        """The sweep of an existing directory; a directory of an earlier version (`ledger.json`)
        is migrated into the default store first. `store_path`: the store the user named (it must
        be the one the sweep's records are in). `recover` (a `--resume`): a store that is gone is
        started anew for this sweep, and `recovered` says what that lost."""
        sweep_dir = Path(sweep_dir).resolve()
        try:
            store, sweep_id = _pointer(sweep_dir)
        except StoreMissing as e:
            if not recover:
                raise
            return _recover(sweep_dir, name or sweep_dir.name, e.store_path, e.sweep_id)
        if store is None:  # an earlier version's sweep directory: its ledger.json moves into the store
            meta, trials = read_legacy(sweep_dir, POINTER_FILE)
            log = cls.create(sweep_dir, name or sweep_dir.name)
            log.legacy_adopted(meta, trials)
            retire_legacy(sweep_dir)
            return log
        if store_path is not None and Path(store_path).resolve() != store.path.resolve():
            raise PathError(f"--store {store_path}: this sweep's records are in {store.path} ({sweep_dir / POINTER_FILE}); "
                            "resume without --store")
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

    # ---------------------------------------------------------------- lifecycle verbs: the writes

    def trial_started(self, spec: "TrialSpec", key: str, *, trial_id: str, label: str, params: dict[str, Any],
                      identity: dict[str, Any], **fields: Any) -> TrialRecord:
        """A trial's first attempt: recorded RUNNING before its MLflow run is asked for."""
        return self.add(trial_record(spec, key=key, label=label, params=params, status=RUNNING, attempts=1,
                                     trial_id=trial_id, checkpoint=str(trial_checkpoint(self.sweep_dir, key)),
                                     code_version=self.meta.git_commit, **fields, **identity))

    def trial_restarted(self, key: str, *, trial_id: str, tune_experiment: str) -> TrialRecord:
        """A retry, a final trial continued by `--resume`, or a crashed one with `--retry-failed`."""
        record = self._records[key]
        return self.update(key, trial_id=trial_id, status=RUNNING, error=None, failure=None,
                           attempts=record.attempts + 1, tune_experiment=tune_experiment)

    def trial_result(self, key: str, step: int, metrics: dict[str, float], wall_s: float) -> TrialRecord:
        """An evaluation: the trial's latest metrics, appended to its history."""
        record = self._records[key]
        return self.update(key, last_step=step, metrics=metrics, history=[*record.history, metrics], wall_s=wall_s)

    def trial_ended(self, key: str, status: str, error: Optional[str] = None, failure: Optional[str] = None) -> TrialRecord:
        return self.update(key, status=status, error=error, failure=failure)

    def trial_killed(self, key: str, error: Optional[str] = None) -> TrialRecord:
        """Cut off (Ctrl-C, a driver that is gone): KILLED until `--resume`."""
        return self.update(key, status=KILLED, **({"error": error} if error else {}))

    def trial_reused(self, spec: "TrialSpec", key: str, *, label: str, params: dict[str, Any], origin: str,
                     found: TrialRecord, identity: dict[str, Any]) -> TrialRecord:
        """A trial answered from the store: `found`'s result, marked with the sweep that ran it."""
        return self.add(trial_record(
            spec, key=key, label=label, params=params, status=FINISHED, attempts=0, metrics=found.metrics,
            history=found.history, last_step=found.last_step, reused_from=origin, wall_s=found.wall_s,
            hardware=found.hardware, code_version=found.code_version, checkpoint=found.checkpoint, **identity))

    def trial_unsearched(self, spec: "TrialSpec", label: str) -> TrialRecord:
        """A final trial of a cell whose every search sample failed: recorded failed, never run."""
        return self.add(trial_record(spec, label=label, status=FAILED, failure="search",
                                     error="no search trial of this cell finished"))

    def trial_identified(self, key: str, identity: dict[str, Any]) -> TrialRecord:
        """A record migrated from a `ledger.json` gets the identity of the experiment it ran."""
        return self.update(key, **identity)

    def trial_discarded(self, key: str) -> Optional[TrialRecord]:
        """A trial that runs afresh (its config changed): its record and checkpoint go. Returns the
        record, whose MLflow run the view then deletes."""
        record = self._records.get(key)
        if record is None:
            return None
        trial_checkpoint(self.sweep_dir, key).unlink(missing_ok=True)
        self.remove(key)
        return record

    def run_recorded(self, key: str, run_id: str) -> None:
        """The trial's MLflow run (made by the view, or found there by its key)."""
        record = self._records.get(key)
        if record is not None and record.mlflow_run_id != run_id:
            self.update(key, mlflow_run_id=run_id)

    def parent_recorded(self, run_id: str, tracking_uri: str, experiment: str, experiment_id: Optional[str] = None) -> None:
        """The sweep's MLflow parent run, and the tracking store and experiment it lives in."""
        meta = self.meta
        ids = {"experiment_id": experiment_id} if experiment_id is not None else {}
        if (meta.mlflow_parent_run_id, meta.tracking_uri, meta.experiment) != (run_id, tracking_uri, experiment) or \
                (ids and meta.experiment_id != experiment_id):
            self.update_meta(mlflow_parent_run_id=run_id, tracking_uri=tracking_uri, experiment=experiment, **ids)

    def commit_recorded(self, commit: str) -> None:
        self.update_meta(git_commit=commit)

    def search_chosen(self, cell: str, choice: BestChoice) -> None:
        self.update_meta(best={**self.meta.best, cell: choice})

    def search_reset(self) -> None:
        """A restarted search: its choices go with its studies."""
        self.update_meta(best={})

    def session_ended(self, seconds: float) -> None:
        """The driver's wall time over every session of the sweep, for the report."""
        self.update_meta(wall_s=self.meta.wall_s + seconds, sessions=self.meta.sessions + 1)

    def legacy_adopted(self, meta: SweepMeta, trials: list[TrialRecord]) -> None:
        """The records of an earlier version's `ledger.json`, moved into the store (`sweep.ledger`)."""
        self.update_meta(**{**meta.model_dump(exclude_unset=True), "name": self.meta.name})
        for record in trials:
            self.add(record)

    # ---------------------------------------------------------------- sweep-level facts

    def update_meta(self, **fields: Any) -> SweepMeta:
        self.meta = SweepMeta.model_validate({**self.meta.model_dump(), **fields})
        self.store.set_meta(self.sweep_id, self.meta)
        return self.meta

    def records(self) -> SweepRecords:
        return SweepRecords(meta=self.meta, trials=self.trials())


class StoreMissing(PathError):
    """The trial store a sweep's `store.json` names is gone (and none was moved beside the sweep)."""

    def __init__(self, message: str, store_path: Path, sweep_id: str) -> None:
        super().__init__(message)
        self.store_path, self.sweep_id = store_path, sweep_id


def _pointer(sweep_dir: Path, readonly: bool = False) -> tuple[Optional[TrialStore], str]:
    """The store and sweep id a sweep directory's `store.json` names, checked to be that store
    (its id, where the pointer keeps one): a file put in the store's place is refused."""
    pointer = sweep_dir / POINTER_FILE
    if not pointer.is_file():
        return None, ""
    data = read_json(pointer)
    if not isinstance(data, dict) or not isinstance(data.get("store"), str) or not isinstance(data.get("sweep_id"), str):
        raise PathError(f"{pointer}: damaged, not a trial-store pointer (no store/sweep_id)")
    store_path, store_id = Path(data["store"]), data.get("store_id")
    if not store_path.exists():  # the storage root moved with its sweeps: the store beside them
        moved = sweep_dir.parent / STORE_DIR / STORE_FILE
        if not moved.is_file():
            raise StoreMissing(f"{pointer}: its trial store {store_path} is missing (--resume starts it anew "
                               "and says what was lost)", store_path, data["sweep_id"])
        store_path = moved
    store = TrialStore(store_path, readonly=readonly)
    store.conn  # noqa: B018 -- what the file is, checked before anything reads it
    if store_id is not None and store.store_id != store_id:
        store.close()
        raise StoreError(f"{pointer}: {store_path} is not this sweep's trial store (store id {store.store_id}, "
                         f"expected {store_id}): it was replaced; put the sweep's store back, or move this file away "
                         "and --resume starts a new one")
    return store, data["sweep_id"]


def _recover(sweep_dir: Path, name: str, store_path: Path, sweep_id: str) -> SweepLog:
    """`--resume` of a sweep whose store is gone: a new store (or the sweep re-added to it) under the
    same sweep id -- so its MLflow parent run is found again -- with no records. Final trials then
    continue from their checkpoints in the sweep folder (a finished one replays its results); search
    samples, whose records held the search's state, run again (the Optuna journal is kept aside)."""
    log = SweepLog.create(sweep_dir, name, store_path, sweep_id=sweep_id)
    checkpoints = sorted((sweep_dir / CHECKPOINT_DIR).glob("*.pt"))
    from sweep.search import STUDY_FILE  # late: Optuna and Ray, wanted only here

    journal = sweep_dir / STUDY_FILE
    lost_search = ""
    if journal.is_file():
        os.replace(journal, journal.with_name(journal.name + ".lost"))
        lost_search = f"; the search runs again (its journal kept as {journal.name}.lost)"
    log.recovered = (f"trial store {store_path} was missing: started anew for this sweep; its records there are lost, "
                     f"the trials with one of the {len(checkpoints)} checkpoints in {sweep_dir / CHECKPOINT_DIR} continue "
                     f"from it (a finished one replays its results), the others run again{lost_search}")
    return log


def load_records(sweep_dir: str | Path) -> SweepRecords:
    """Every record of the sweep in `sweep_dir` (one query); an unmigrated `ledger.json` is read as
    it is; a directory with neither holds no records yet."""
    sweep_dir = Path(sweep_dir).resolve()
    store, sweep_id = _pointer(sweep_dir, readonly=True)
    if store is not None:
        try:
            return SweepRecords(meta=store.meta(sweep_id), trials=store.trials(sweep_id))
        finally:
            store.close()
    if (sweep_dir / LEGACY_LEDGER).is_file():
        meta, trials = read_legacy(sweep_dir, POINTER_FILE)
        return SweepRecords(meta=meta, trials=trials)
    return SweepRecords(meta=SweepMeta(), trials=[])


def describe_origin(sweep_dir: str) -> str:
    """How a console line names the sweep a reused result came from."""
    return f"{Path(sweep_dir).name} ({sweep_dir})"
