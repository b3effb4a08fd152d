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

import json
import os
import tempfile
from pathlib import Path
from typing import Any

LEDGER_FILE = "ledger.json"
PLAN_FILE = "plan.json"

# Trial statuses (MLflow's run statuses, so the two always agree).
RUNNING, FINISHED, FAILED, KILLED = "RUNNING", "FINISHED", "FAILED", "KILLED"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write-then-rename: a killed driver leaves the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)


class Ledger:
    """Read-modify-write on every call: the file is the only state, so the copy of this object that
    Ray Tune pickles with its callbacks (and restores on resume) never goes stale."""

    def __init__(self, sweep_dir: str | Path) -> None:
        self.path = Path(sweep_dir) / LEDGER_FILE

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {"meta": {}, "trials": {}}
        return json.loads(self.path.read_text())

    def _save(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path, data)

    # ---------------------------------------------------------------- trials

    def trial(self, trial_id: str) -> dict[str, Any] | None:
        return self._load()["trials"].get(trial_id)

    def trials(self) -> list[dict[str, Any]]:
        return list(self._load()["trials"].values())

    def update_trial(self, trial_id: str, **fields: Any) -> dict[str, Any]:
        data = self._load()
        record = data["trials"].setdefault(trial_id, {"trial_id": trial_id})
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
