"""The sweep directory's own record of what ran: one JSON file, rewritten at every trial event.

Ray Tune snapshots its experiment state every few seconds; this ledger is written by the driver
synchronously at each trial start / result / end, so after Ctrl-C or a killed driver it is the
reference for which trials finished, which MLflow run belongs to which trial (no duplicate runs on
`--resume`), which phases are complete and what the search chose. The report is built from it.

Layout of a sweep directory::

    plan.json      the expanded plan (cells, seeds, baseline, metric) -- static
    ledger.json    this file: {"meta": {...}, "trials": {trial_id: record}}
    search/        Ray Tune experiment of the search phase (if any; all cells)
    final/         Ray Tune experiment of the final phase (cells x seeds)
    trials.parquet, cells.parquet, report.md, plot_*.png   written by sweep/report.py
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from dml_core.io import PathError, atomic_write_json, make_dir, read_json

LEDGER_FILE = "ledger.json"
PLAN_FILE = "plan.json"

# Trial statuses (MLflow's run statuses, so the two always agree).
RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"

# What every trial record holds from its creation on (the table and MLflow need them).
TRIAL_FIELDS = ("key", "phase", "cell", "seed", "status")


class Ledger:
    """Read-modify-write on every call: the file is the only state, so the copy of this object that
    Ray Tune pickles with its callbacks (and restores on resume) never goes stale.

    One writer: the driver holding the sweep directory's `DirectoryLock`; every write replaces the
    file atomically. A record is created whole (`add_trial`); updating an id the ledger does not
    hold is a bug and raises, rather than leaving a stub without key, phase or MLflow run.
    """

    def __init__(self, sweep_dir: str | Path) -> None:
        self.path = Path(sweep_dir) / LEDGER_FILE

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"meta": {}, "trials": {}}
        data = read_json(self.path)
        if not isinstance(data, dict) or not isinstance(data.get("trials"), dict) or not isinstance(data.get("meta"), dict):
            raise PathError(f"{self.path}: damaged, not a sweep ledger (no meta/trials); restore it or start anew")
        return data

    def _save(self, data: dict[str, Any]) -> None:
        make_dir(self.path.parent)  # the sweep dir exists under a driver; a Ledger used alone may not
        atomic_write_json(self.path, data)

    # ---------------------------------------------------------------- trials

    def trial(self, trial_id: str) -> dict[str, Any] | None:
        return self._load()["trials"].get(trial_id)

    def trials(self) -> list[dict[str, Any]]:
        return list(self._load()["trials"].values())

    def add_trial(self, trial_id: str, **fields: Any) -> dict[str, Any]:
        """A new record (or a full rewrite of one): the identifying fields must all be there."""
        missing = [f for f in TRIAL_FIELDS if f not in fields]
        if missing:
            raise ValueError(f"ledger record {trial_id}: missing {', '.join(missing)}")
        data = self._load()
        record = data["trials"][trial_id] = {"trial_id": trial_id, **fields}
        self._save(data)
        return record

    def update_trial(self, trial_id: str, **fields: Any) -> dict[str, Any]:
        data = self._load()
        if trial_id not in data["trials"]:
            raise KeyError(f"{self.path}: no trial {trial_id} to update")
        record = data["trials"][trial_id]
        record.update(fields)
        self._save(data)
        return record

    def move_trial(self, old_id: str, new_id: str) -> dict[str, Any]:
        """Re-key a record (Tune re-created the trial under a new id)."""
        data = self._load()
        record = data["trials"].pop(old_id)
        record["trial_id"] = new_id
        data["trials"][new_id] = record
        self._save(data)
        return record

    # ---------------------------------------------------------------- sweep-level facts

    def get(self, key: str, default: Any = None) -> Any:
        return self._load()["meta"].get(key, default)

    def set(self, key: str, value: Any) -> None:
        data = self._load()
        data["meta"][key] = value
        self._save(data)

    def phase_done(self, phase: str) -> bool:
        return phase in self.get("phases_done", [])

    def mark_phase_done(self, phase: str) -> None:
        self.set("phases_done", sorted({*self.get("phases_done", []), phase}))
