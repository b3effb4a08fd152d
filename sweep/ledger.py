"""The sweep state of earlier versions (`ledger.json`): read, and retired once migrated.

Before the trial store, a sweep directory kept its records in one `ledger.json`. Such a sweep
is still readable (`sweep.store.load_records` reads the file as it is) and resumable: its first
`--resume` moves the records into the trial store (`SweepLog.open`, through the store's own
verbs) and renames the file `ledger.json.migrated`. Nothing else in `sweep/` reads the file.
"""
from __future__ import annotations

import os
from pathlib import Path

from dml_core.io import PathError, read_json
from sweep.records import SweepMeta, TrialRecord

LEGACY_LEDGER = "ledger.json"


def read_legacy(sweep_dir: Path, pointer_file: str) -> tuple[SweepMeta, list[TrialRecord]]:
    """The meta and records of `sweep_dir`'s ledger; a directory without one is not a sweep's
    (`pointer_file`: what a current sweep directory has instead, for the message)."""
    path = sweep_dir / LEGACY_LEDGER
    if not path.is_file():
        raise PathError(f"{sweep_dir}: no {pointer_file} (nor an older {LEGACY_LEDGER}): not a sweep's directory")
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("trials"), dict) or not isinstance(data.get("meta"), dict):
        raise PathError(f"{path}: damaged, not a sweep ledger (no meta/trials); restore it or start anew")
    return SweepMeta.model_validate(data["meta"]), [TrialRecord.model_validate(r) for r in data["trials"].values()]


def retire_legacy(sweep_dir: Path) -> None:
    """The ledger, once migrated, kept aside (never read again)."""
    os.replace(sweep_dir / LEGACY_LEDGER, sweep_dir / (LEGACY_LEDGER + ".migrated"))
