"""The trial store: content keys, reuse lookups, several writers, growth checks, the old ledger.json.
No Ray, no training: records written by hand."""
from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from dml_core import identity
from dml_core.config import config_from_dict
from dml_core.data.fingerprint import data_fingerprint
from dml_core.io import atomic_write_json
from sweep.pending import check_growth, final_work
from sweep.pending import identity as trial_identity
from sweep.plan import load_plan
from sweep.records import FAILED, FINISHED, TrialRecord
from sweep.store import load_records
from sweep.pending import check_resumed
from sweep.sweep_folder import started_plan
from sweep.spec import SweepError
from sweep.plan import PLAN_FILE
from sweep.store import LEGACY_LEDGER, SweepLog, TrialStore, default_store_path
from sweep_testlib import write_yaml

GRID = {"grid": {"model.embedding_dim": [8, 16]}, "seeds": [0, 1]}


def finished(log: SweepLog, plan, spec, recall: float = 0.5) -> TrialRecord:
    ident = trial_identity(plan, spec)
    return log.add(TrialRecord(trial_id="", key=spec.key, phase=spec.phase, cell=spec.cell, seed=spec.seed,
                               status=FINISHED, metrics={"recall_at_1": recall, "epoch": 2.0},
                               history=[{"recall_at_1": recall, "epoch": 2.0}], config=ident.config,
                               content_key=ident.content_key))


def test_content_key_ignores_operational_fields_only(tmp_path: Path) -> None:
    plan = load_plan(write_yaml(tmp_path / "x.yaml", GRID))
    spec = plan.final_trials()[0]
    key = trial_identity(plan, spec).content_key
    cfg = trial_identity(plan, spec).config
    data = data_fingerprint(config_from_dict(cfg).data)
    for field, value in (("data.num_workers", 7), ("data.eval_batch_size", 3), ("name", "other")):
        section, _, leaf = field.rpartition(".")
        changed = json.loads(json.dumps(cfg))
        (changed[section] if section else changed)[leaf] = value
        assert identity.content_key(changed, data) == key, field
    for field, value in (("optimizer.lr", 0.01), ("train.num_threads", 5)):
        section, _, leaf = field.rpartition(".")
        changed = json.loads(json.dumps(cfg))
        changed[section][leaf] = value
        assert identity.content_key(changed, data) != key, field
    held = json.loads(json.dumps(cfg))
    held["data"]["holdout"] = 0.4  # scored on held-out classes: another experiment
    assert identity.content_key(held, data) != key
    assert trial_identity(plan, plan.final_trials()[1]).content_key != key  # another seed


def test_a_new_results_version_never_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = load_plan(write_yaml(tmp_path / "x.yaml", GRID))
    before = trial_identity(plan, plan.final_trials()[0]).content_key
    monkeypatch.setattr(identity, "RESULTS_VERSION", identity.RESULTS_VERSION + 1)
    assert trial_identity(plan, plan.final_trials()[0]).content_key != before


def test_reuse_across_sweeps_and_no_reuse(tmp_path: Path) -> None:
    plan = load_plan(write_yaml(tmp_path / "x.yaml", GRID))
    specs = plan.final_trials()
    first = SweepLog.create(tmp_path / "sweeps" / "a", "a")
    finished(first, plan, specs[0])
    failed = first.add(first.get(specs[0].key).model_copy(update={"key": specs[1].key, "status": FAILED,
                                                                   "content_key": trial_identity(plan, specs[1]).content_key}))
    assert failed.status == FAILED
    second = SweepLog.create(tmp_path / "sweeps" / "b", "b")
    assert second.store.path == first.store.path == tmp_path / "sweeps" / ".store" / "trials.sqlite"
    ids = {s.key: trial_identity(plan, s) for s in specs}
    work = final_work(plan, second, specs, ids, reuse=True, retry_failed=False)
    assert [r.spec.key for r in work.reuse] == [specs[0].key]  # a failed trial is not reused
    assert work.reuse[0].origin == str(tmp_path / "sweeps" / "a") and len(work.run) == 3
    assert len(final_work(plan, second, specs, ids, reuse=False, retry_failed=False).run) == 4


def _write_many(path: str, sweep_id: str, start: int) -> None:
    store = TrialStore(path)
    for i in range(start, start + 50):
        store.put(sweep_id, TrialRecord(trial_id=str(i), key=f"k{i}", phase="final", cell="c", seed=i, status=FINISHED))


def test_several_writers_share_one_store(tmp_path: Path) -> None:
    """Two processes (two drivers) writing one store at once: every record lands, none is lost."""
    log = SweepLog.create(tmp_path / "sweeps" / "a", "a")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(log.store.path), log.sweep_id, s)) for s in (0, 50)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(int(r.trial_id) for r in load_records(log.sweep_dir).trials) == list(range(100))


def test_growth_refuses_changed_or_dropped_trials(tmp_path: Path) -> None:
    plan = load_plan(write_yaml(tmp_path / "x.yaml", GRID))
    log = SweepLog.create(tmp_path / "sweeps" / "a", "a")
    for spec in plan.final_trials():
        finished(log, plan, spec)
    atomic_write_json(log.sweep_dir / PLAN_FILE, plan.to_json())

    grown = load_plan(tmp_path / "x.yaml", ["sweep.seeds=[0,1,2]"])  # a third seed: only the 2 new trials
    specs = grown.final_trials()
    ids = {s.key: trial_identity(grown, s) for s in specs}
    assert check_growth(grown, log, specs, ids, restart_changed=False) == []
    check_resumed(grown, *started_plan(log.sweep_dir), log, restart_changed=False)
    work = final_work(grown, log, specs, ids, reuse=True, retry_failed=False)
    assert (work.ended, sorted(s.key for s in work.run)) == (
        4, ["model.embedding_dim=16/seed=2", "model.embedding_dim=8/seed=2"])

    lr = load_plan(tmp_path / "x.yaml", ["optimizer.lr=0.01"])
    with pytest.raises(SweepError, match=r"optimizer\.lr \(0\.003 -> 0\.01\): changes the experiment"):
        check_resumed(lr, *started_plan(log.sweep_dir), log, restart_changed=False)
    specs = lr.final_trials()
    ids = {s.key: trial_identity(lr, s) for s in specs}
    with pytest.raises(SweepError, match=r"optimizer\.lr \(0\.003 -> 0\.01\) changes 4 trials"):
        check_growth(lr, log, specs, ids, restart_changed=False)
    assert len(check_growth(lr, log, specs, ids, restart_changed=True)) == 4
    assert len(final_work(lr, log, specs, ids, reuse=True, retry_failed=False).run) == 4  # run afresh

    fewer = load_plan(tmp_path / "x.yaml", ["sweep.seeds=[0]"])
    specs = fewer.final_trials()
    with pytest.raises(SweepError, match="sweep.seeds: drops seed 1"):
        check_growth(fewer, log, specs, {s.key: trial_identity(fewer, s) for s in specs}, restart_changed=False)


def test_an_old_ledger_is_read_then_migrated_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DML_TRIAL_STORE", raising=False)
    sweep_dir = tmp_path / "sweeps" / "old"
    sweep_dir.mkdir(parents=True)
    record = {"trial_id": "t1", "key": "base/seed=0", "phase": "final", "cell": "base", "seed": 0, "status": FINISHED,
              "metrics": {"recall_at_1": 0.5}, "history": [], "mlflow_run_id": "r1"}
    atomic_write_json(sweep_dir / LEGACY_LEDGER, {"meta": {"mlflow_parent_run_id": "p", "phases_done": ["final"]},
                                                  "trials": {"t1": record}})
    assert load_records(sweep_dir).trials[0].mlflow_run_id == "r1"  # read as it is, not migrated
    assert (sweep_dir / LEGACY_LEDGER).is_file()
    log = SweepLog.open(sweep_dir, "old")  # what --resume does
    assert not (sweep_dir / LEGACY_LEDGER).exists() and (sweep_dir / f"{LEGACY_LEDGER}.migrated").is_file()
    assert log.store.path == default_store_path(sweep_dir)
    assert [r.key for r in load_records(sweep_dir).trials] == ["base/seed=0"]
    assert load_records(sweep_dir).meta.mlflow_parent_run_id == "p"


def test_an_update_of_an_unknown_trial_is_refused(tmp_path: Path) -> None:
    log = SweepLog.create(tmp_path / "s", "s")
    with pytest.raises(KeyError, match="no trial nope"):
        log.update("nope", status=FINISHED)


def test_the_ended_count_follows_every_change(tmp_path: Path) -> None:
    log = SweepLog.create(tmp_path / "s", "s")
    log.add(TrialRecord(trial_id="t", key="k", phase="final", cell="c", seed=0, status="RUNNING"))
    assert log.ended == 0
    log.update("k", status=FINISHED)
    log.update("k", status=FAILED)
    assert log.ended == 1 and SweepLog.open(tmp_path / "s").ended == 1
    log.update("k", status="RUNNING")  # --retry-failed
    assert log.ended == 0
    log.update("k", status=FINISHED)
    log.remove("k")
    assert log.ended == 0


def test_a_store_on_a_network_filesystem_is_told_apart(tmp_path: Path) -> None:
    """WAL needs shared memory, which NFS & co lack: the store takes the rollback journal there."""
    from sweep.store import on_network_fs

    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\nhead:/export /mnt/dml nfs4 rw 0 0\nsshfs#x /mnt/fuse fuse.sshfs rw 0 0\n")
    assert on_network_fs(Path("/mnt/dml/sweeps/.store"), mounts)
    assert on_network_fs(Path("/mnt/fuse/a"), mounts)
    assert not on_network_fs(Path("/mnt/dmlx/sweeps"), mounts) and not on_network_fs(Path("/home/me"), mounts)
    log = SweepLog.create(tmp_path / "s", "s")  # a local disk: WAL
    assert log.store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_grown_search_may_add_samples_but_not_change_its_ranges(tmp_path: Path) -> None:
    from sweep.pending import check_search_unchanged

    search = {"params": {"optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2}}, "num_samples": 2,
              "holdout": 0.4}
    plan = load_plan(write_yaml(tmp_path / "x.yaml", {**GRID, "search": search}))
    log = SweepLog.create(tmp_path / "sweeps" / "a", "a")
    spec = plan.search_trial(plan.cells[0])
    log.add(TrialRecord(trial_id="s1", key=f"{spec.key}/s1", phase="search", cell=spec.cell, seed=0, status=FINISHED))
    started = plan.to_json()["search"]
    check_search_unchanged(load_plan(tmp_path / "x.yaml", ["sweep.search.num_samples=3"]), started, log)
    for change, field in (("sweep.search.holdout=0.5", "holdout"), ("sweep.search.params={optimizer.lr: {type: loguniform, low: 0.001, high: 0.1}}", "params")):
        with pytest.raises(SweepError, match=f"sweep.search.{field}: differs from the search this sweep already ran"):
            check_search_unchanged(load_plan(tmp_path / "x.yaml", [change]), started, log)
    with pytest.raises(SweepError, match="sweep.search.num_samples: fewer"):
        check_search_unchanged(load_plan(tmp_path / "x.yaml", ["sweep.search.num_samples=1"]), started, log)
