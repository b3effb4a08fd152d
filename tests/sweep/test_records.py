"""The typed sweep record reads what the driver writes, and refuses a wrong type."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from sweep.records import FINAL, FINISHED, BestChoice, TrialRecord
from sweep.store import load_records
from sweep.store import SweepLog


def test_load_records_types_the_store(tmp_path) -> None:
    log = SweepLog.create(tmp_path / "sweep", "x")
    log.add(TrialRecord(trial_id="t1", key="base/seed=0", phase=FINAL, cell="base", seed=0, status=FINISHED,
                        metrics={"recall_at_1": 0.5, "epoch": 2}, history=[{"recall_at_1": 0.4, "epoch": 1}]))
    log.update_meta(best={"base": BestChoice(params={"optimizer.lr": 0.01}, trial_id="s1", value=0.9)})
    records = load_records(tmp_path / "sweep")
    (t,) = records.final()
    assert t.finished and t.value("recall_at_1") == 0.5 and t.history[0]["epoch"] == 1.0
    assert records.meta.best["base"].params == {"optimizer.lr": 0.01} and records.search() == []


def test_a_record_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(ValidationError):
        TrialRecord(trial_id="t", key="k", phase="final", cell="c", seed=0, status="DONE")
    record = TrialRecord(trial_id="t", key="k", phase="final", cell="c", seed=0, status="RUNNING")
    with pytest.raises(ValidationError):
        record.status = "SOMETIMES"
