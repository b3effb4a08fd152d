"""Issue 29, family 6: messages that misled. The results-version refusal read `(None -> None)`;
`--resume --no-reuse` closed with "4 reused ... (--no-reuse trains them afresh)" although it had
just been given; `--sync` on a sweep whose store is gone named another store (the one
`DML_TRIAL_STORE` pointed at) as holding no such sweep."""
from __future__ import annotations

from pathlib import Path

import pytest

from faults_testlib import tiny, write_yaml


def plan_of(tmp_path: Path, **sweep: object):
    from sweep.plan import load_plan

    raw = tiny()
    raw["sweep"] = {"name": "m", "seeds": [0, 1], **sweep}
    return load_plan(write_yaml(tmp_path / "m.yaml", raw))


def test_a_results_version_change_names_the_versions(tmp_path: Path) -> None:
    from dml_core.identity import RESULTS_VERSION
    from sweep.pending import check_growth, identity
    from sweep.records import TrialRecord
    from sweep.spec import SweepError
    from sweep.store import SweepLog

    plan = plan_of(tmp_path)
    specs = plan.final_trials()
    identities = {s.key: identity(plan, s) for s in specs}
    log = SweepLog.create(tmp_path / "m", "m", tmp_path / "t.sqlite")
    spec = specs[0]
    log.add(TrialRecord(trial_id="x", key=spec.key, phase="final", cell=spec.cell, seed=spec.seed, status="FINISHED",
                        config=identities[spec.key].config, content_key="made-by-an-older-dml_core",
                        results_version=RESULTS_VERSION - 1))
    with pytest.raises(SweepError) as caught:
        check_growth(plan, log, specs, identities, restart_changed=False)
    assert f"dml_core results version ({RESULTS_VERSION - 1} -> {RESULTS_VERSION}) changes 1 trials" in str(caught.value)


def test_no_reuse_is_not_advised_to_a_session_that_reused_nothing(tmp_path: Path) -> None:
    from sweep.console import closing_block
    from sweep.records import SweepMeta, SweepRecords, TrialRecord
    from sweep.results import SweepResults
    from sweep.runner import SweepOutcome

    plan = plan_of(tmp_path)
    trials = [TrialRecord(trial_id="", key=t.key, phase="final", cell=t.cell, seed=t.seed, status="FINISHED",
                          metrics={"recall_at_1": 0.5 + t.seed / 10}, reused_from="/elsewhere")
              for t in plan.final_trials()]
    results = SweepResults.build(plan, SweepRecords(meta=SweepMeta(), trials=trials))
    for reused_now, advice in ((0, False), (len(trials), True)):  # an earlier session reused them / this one
        outcome = SweepOutcome(tmp_path, "FINISHED", [], results=results, reused=reused_now)
        text = closing_block(outcome, 1.0)
        assert "2 of them reused from the trial store" in text
        assert ("--no-reuse trains them afresh" in text) == advice


def test_a_sweep_whose_store_is_gone_names_that_store_not_another(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sweep.store import SweepLog

    gone = tmp_path / ".store" / "trials.sqlite"
    SweepLog.create(tmp_path / "m", "m", gone).store.close()
    for f in gone.parent.iterdir():
        f.unlink()
    SweepLog.create(tmp_path / "n", "n", tmp_path / "other.sqlite").store.close()
    monkeypatch.setenv("DML_TRIAL_STORE", str(tmp_path / "other.sqlite"))
    with pytest.raises(ValueError) as caught:
        SweepLog.open(tmp_path / "m", "m")
    assert str(caught.value).startswith(f"{tmp_path / 'm' / 'store.json'}: its trial store {gone} is missing")
