"""The sweep driver: concurrent starts on one sweep directory, failed final trials, damaged
sweep state, unwritable --out (refused before Ray starts), `kill -9` of the driver with hostile pickles
planted in the sweep folder before `--resume`."""
from __future__ import annotations

import json
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from faults_testlib import REPO, CreatesAFile, env, one_error_line, run_cli, run_together, tiny, truncated_pngs, write_yaml

pytestmark = pytest.mark.slow

# One healthy arm and one that diverges: SGD at lr 1e30 gives NaN embeddings after one step.
ARMS = {"ok": {}, "nan": {"optimizer.name": "sgd", "optimizer.lr": 1.0e30, "train.iterations_per_epoch": 1}}


def sweep_yaml(tmp_path: Path, arms: dict[str, Any]) -> Path:
    raw = tiny()
    raw["sweep"] = {"name": "faults", "arms": arms, "seeds": [0], "baseline": {"arm": next(iter(arms))},
                    "max_failures": 1, "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    return write_yaml(tmp_path / "sweep.yaml", raw)


def mlflow_children(tmp_path: Path) -> list[Any]:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.get_experiment_by_name("faults")
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweep.role") != "parent"]


def test_two_sweeps_started_together_and_a_failed_final_trial(tmp_path: Path, mlflow_db: Path) -> None:
    """Before: one driver exited 130 unsignalled, the ledger held stub records and finished trials
    never reached MLflow; a sweep whose final trials failed exited 0 with "sweep finished"."""
    cfg, out = sweep_yaml(tmp_path, ARMS), tmp_path / "sweep"
    argv = [str(REPO / "sweep" / "run.py"), str(cfg), "--out", str(out)]
    results = run_together("sweep.run:main", [argv[1:], argv[1:]], tmp_path)
    assert sorted(r.returncode for r in results) == [1, 2], [r.stderr[-2000:] for r in results]
    winner, loser = sorted(results, key=lambda r: r.returncode)
    assert one_error_line(loser.stderr).startswith(f"error: {out}: in use by pid ")
    closing = winner.stderr.strip().splitlines()[-1]
    assert closing.startswith("sweep finished with failures: 1 of 2 final trials failed (arm=nan")
    assert (out / "report.md").is_file()  # the table of the rest is still written

    records = _records(out).values()
    assert all({"key", "phase", "cell", "seed", "mlflow_run_id"} <= set(r) for r in records), records
    by_arm = {r["arm"]: r for r in records}
    assert by_arm.keys() == {"ok", "nan"}
    assert by_arm["ok"]["status"] == "FINISHED"
    # The diverged trial took the non-finite path: failed once, not retried as a crash.
    assert (by_arm["nan"]["status"], by_arm["nan"]["failure"], by_arm["nan"]["attempts"]) == ("FAILED", "non_finite", 1)
    assert "non-finite embeddings" in by_arm["nan"]["error"]

    runs = {r.data.tags["sweep.arm"]: r for r in mlflow_children(tmp_path)}
    assert len(mlflow_children(tmp_path)) == 2
    assert (runs["ok"].info.status, runs["nan"].info.status) == ("FINISHED", "FAILED")


def test_a_sweep_whose_trials_all_failed_does_not_exit_0(tmp_path: Path, mlflow_db: Path) -> None:
    """Also (issue 19, defect 10): a crashing trial is one line per attempt at verbose 0, naming the
    log file that holds its traceback (Ray's traceback was printed: 210 lines for 2 bad seeds)."""
    crash = {"data.name": "image_folder", "data.root": str(truncated_pngs(tmp_path / "truncated")), "data.image_size": 8}
    cfg = sweep_yaml(tmp_path, {"nan": ARMS["nan"], "crash": crash})
    out = tmp_path / "sweep"
    [result] = run_together("sweep.run:main", [[str(cfg), "--out", str(out)]], tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("sweep finished with failures: 2 of 2 final trials failed")
    console = result.stdout + result.stderr
    assert "Traceback" not in console and "DataLoader worker" not in console, console[-3000:]
    from sweep.trainable import trial_log

    log = trial_log(out, "arm=crash/seed=0")
    # A status line ("slowest crash · s0 ...") shows up too when 30 s pass without a trial ending (a busy machine).
    crash_lines = [line for line in console.splitlines() if "crash · s0" in line and "slowest" not in line]
    assert len(crash_lines) == 2, console  # the retry (max_failures 1) and the failure
    assert all(line.endswith(f"  traceback: {log}") and "cannot decode image" in line for line in crash_lines), crash_lines
    assert log.read_text().count("Traceback (most recent call last)") == 2


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_a_sweep_out_that_cannot_be_created_is_one_line_before_ray(tmp_path: Path, capsys, no_ray: None,
                                                                    where: str) -> None:
    from sweep.run import main

    (tmp_path / "file").write_text("x")
    bad = tmp_path / "file" / "sweep" if where == "under_a_file" else Path("/proc/dml-faults/sweep")
    assert main([str(sweep_yaml(tmp_path, ARMS)), "--out", str(bad)]) == 2
    assert one_error_line(capsys.readouterr().err).startswith(f"error: {bad}: cannot create this directory")


def test_a_truncated_ledger_names_the_file(tmp_path: Path, capsys, no_ray: None) -> None:
    from dml_core.io import atomic_write_json
    from sweep.plan import load_plan
    from sweep.run import main

    cfg, out = sweep_yaml(tmp_path, ARMS), tmp_path / "sweep"
    out.mkdir()
    atomic_write_json(out / "plan.json", load_plan(cfg).to_json())
    (out / "ledger.json").write_text('{"meta": {"mlflow_parent_run_id": "abc"}, "trials": {"x": {"key"')
    assert main([str(cfg), "--out", str(out), "--resume"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {out / 'ledger.json'}: damaged, not valid JSON")


def test_the_store_never_holds_a_stub_record(tmp_path: Path) -> None:
    """Stub records (status only) came from updates of trials the file did not hold -- two drivers
    overwriting each other's ledger; an update of an unknown trial is now refused, not invented,
    and a record without its identifying fields cannot be built."""
    from pydantic import ValidationError

    from sweep.records import TrialRecord
    from sweep.store import load_records
    from sweep.store import SweepLog

    log = SweepLog.create(tmp_path / "sweep", "s")
    log.add(TrialRecord(trial_id="t1", key="cell/seed=0", phase="final", cell="cell", seed=0, status="RUNNING"))
    with pytest.raises(KeyError, match="no trial t2"):
        log.update("t2", status="FINISHED")
    with pytest.raises(ValidationError, match="key"):
        TrialRecord(trial_id="t3", status="FAILED")
    assert [r.trial_id for r in load_records(tmp_path / "sweep").trials] == ["t1"]


# ------------------------------------------------------------------ kill -9, hostile pickles, resume

KILL_EPOCHS = 30


def _records(out: Path) -> dict[str, dict[str, Any]]:
    from sweep.store import load_records

    return {r.key: r.model_dump() for r in load_records(out).trials}


def _plant_pickles(tune_dir: Path, marker: Path, trial_ids: list[str]) -> list[Path]:
    """Every file of a Tune experiment folder that a restore unpickles (tuner.pkl, the variant
    generator's and searcher's state, the trials' params.pkl, and the cloudpickled parts of
    experiment_state-*.json) becomes one that creates `marker` when it is loaded.

    Tune uploads the experiment state and the trials' params.pkl into the sweep folder at most every
    TUNE_GLOBAL_CHECKPOINT_S (~10 s): an early kill finds some of them missing. So each is created
    where Tune would have written it -- whatever Tune managed to write before the kill is
    overwritten the same way -- and the test holds for any timing."""
    payload = pickle.dumps(CreatesAFile(marker))
    pickled = ("basic-variant-state-", "searcher-state-", "search_gen_state-")
    for name in ("tuner.pkl", "searcher-state-2000-01-01_00-00-00.pkl", "search_gen_state-2000-01-01_00-00-00.json"):
        (tune_dir / name).touch()  # also those this Tune version did not write
    if not any(tune_dir.glob("experiment_state-*.json")):
        (tune_dir / "experiment_state-2000-01-01_00-00-00.json").touch()
    for trial_id in trial_ids:
        (tune_dir / trial_id).mkdir(exist_ok=True)
        (tune_dir / trial_id / "params.pkl").touch()
    planted = []
    for path in sorted(tune_dir.rglob("*")):
        if path.suffix == ".pkl" or path.name.startswith(pickled):
            path.write_bytes(payload)
        elif path.name.startswith("experiment_state-"):
            hostile = {"_type": "CLOUDPICKLE_FALLBACK", "value": payload.hex()}  # Tune's JSON escape to cloudpickle
            path.write_text(json.dumps({"trial_data": [], "runner_data": hostile}))
        else:
            continue
        planted.append(path)
    return planted


@pytest.mark.timeout(600)
def test_resume_after_kill_9_unpickles_nothing_from_the_sweep_folder(tmp_path: Path, mlflow_db: Path) -> None:
    """Before: `--resume` continued the final phase with `Tuner.restore`, which unpickles tuner.pkl
    and the experiment state in <sweep>/final/: whoever could write the (shared) sweep folder ran
    code on the driver. Now a resume starts a new Tune experiment from the trial store, and each
    unfinished trial continues from its checkpoint in <sweep>/checkpoints/ (weights_only)."""
    from ray import tune

    from dml_core.training import fit
    from sweep.store import trial_checkpoint
    from sweep.plan import load_plan, trial_config

    raw = tiny(train={"epochs": KILL_EPOCHS})
    arms = {"a": {}, "b": {"model.embedding_dim": 8},
            "crash": {"data.name": "image_folder", "data.root": str(truncated_pngs(tmp_path / "truncated"))}}
    raw["sweep"] = {"name": "faults", "arms": arms, "seeds": [0], "baseline": {"arm": "a"}, "max_failures": 1,
                    "max_concurrent_trials": 1, "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    cfg, out, log = write_yaml(tmp_path / "sweep.yaml", raw), tmp_path / "sweep", tmp_path / "first.log"
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, str(REPO / "sweep" / "run.py"), str(cfg), "--out", str(out)], cwd=tmp_path,
                                env=env(), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        # Kill once a trial has finished and another one is under way with a checkpoint.
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            records = _records(out) if (out / "store.json").is_file() else {}
            running = [k for k, r in records.items() if r["status"] == "RUNNING" and r.get("last_step", 0) >= 2]
            if any(r["status"] == "FINISHED" for r in records.values()) and running:
                break
            time.sleep(0.1)
        proc.kill()  # SIGKILL of the driver: no handler, no cleanup
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    before = _records(out)
    [cut] = running
    finished = {k: r for k, r in before.items() if r["status"] == "FINISHED"}
    assert trial_checkpoint(out, cut).is_file()

    marker = tmp_path / "pwned"
    assert tune.Tuner.can_restore(str(out / "final"))  # tuner.pkl, written at the start: what the old resume restored
    planted = _plant_pickles(out / "final", marker, [r["trial_id"] for r in before.values()])
    assert {p.name for p in planted} >= {"tuner.pkl", "params.pkl"}
    assert any(p.name.startswith("experiment_state-") for p in planted)
    contents = {p: p.read_bytes() for p in planted}

    resumed = run_cli([str(REPO / "sweep" / "run.py"), str(cfg), "--out", str(out), "--resume"], tmp_path, timeout=400)
    assert not marker.exists(), "a pickle in the sweep folder was loaded"
    assert resumed.returncode == 1, resumed.stderr[-3000:]  # the crash arm fails; everything else finished
    assert resumed.stderr.strip().splitlines()[-1].startswith("sweep finished with failures: 1 of 3 final trials failed")
    after = _records(out)
    assert {k: r["status"] for k, r in after.items()} == {"arm=a/seed=0": "FINISHED", "arm=b/seed=0": "FINISHED",
                                                          "arm=crash/seed=0": "FAILED"}
    assert after["arm=crash/seed=0"]["failure"] == "crash"
    for key, record in finished.items():  # not run again
        assert after[key] == record
    assert {p: p.read_bytes() for p in planted} == contents  # not even rewritten

    # The cut-off trial ran in a new Tune experiment and continued from its own checkpoint: it
    # replayed the evaluations the checkpoint holds, then trained only the remaining epochs ...
    record = after[cut]
    assert record["tune_experiment"] == "final-2"
    results = [json.loads(line) for line in (out / "final-2" / record["trial_id"] / "result.json").read_text().splitlines()]
    replayed = [r["epoch"] for r in results if r.get("replayed")]
    trained = [r["epoch"] for r in results if not r.get("replayed")]
    assert len(replayed) >= 2 and replayed == list(range(1, len(replayed) + 1))
    assert trained == list(range(len(replayed) + 1, KILL_EPOCHS + 1))
    assert [h["epoch"] for h in record["history"]] == list(range(1, KILL_EPOCHS + 1))
    # ... to the numbers of an uninterrupted run of the same trial.
    plan = load_plan(cfg)
    [spec] = [t for t in plan.final_trials() if t.key == cut]
    reference = fit(trial_config(plan.base, spec, None, plan.source)).metrics
    for metric in ("recall_at_1", "map_at_r", "loss"):
        assert record["metrics"][metric] == pytest.approx(reference[metric], abs=1e-6), metric

    # MLflow: one run per trial, every epoch logged once.
    runs = {r.data.tags["sweep.key"]: r for r in mlflow_children(tmp_path)}
    assert len(mlflow_children(tmp_path)) == 3 and set(runs) == set(after)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for key in ("arm=a/seed=0", "arm=b/seed=0"):
        assert runs[key].info.status == "FINISHED" and runs[key].info.run_id == after[key]["mlflow_run_id"]
        steps = [m.step for m in client.get_metric_history(runs[key].info.run_id, "recall_at_1")]
        assert steps == list(range(1, KILL_EPOCHS + 1)), key

    # --retry-failed restarts the crashed trial from scratch: a checkpoint left under its key (here
    # a copy of another trial's) is dropped, not resumed; the finished trials stay as they are.
    crash = trial_checkpoint(out, "arm=crash/seed=0")
    shutil.copy(trial_checkpoint(out, "arm=a/seed=0"), crash)
    retried = run_cli([str(REPO / "sweep" / "run.py"), str(cfg), "--out", str(out), "--resume", "--retry-failed"],
                      tmp_path, timeout=400)
    assert retried.returncode == 1, retried.stderr[-3000:]
    again = _records(out)
    assert not crash.exists() and not marker.exists()
    assert again["arm=crash/seed=0"]["attempts"] > after["arm=crash/seed=0"]["attempts"]
    assert (again["arm=crash/seed=0"]["status"], again["arm=crash/seed=0"]["history"]) == ("FAILED", [])
    assert client.get_metric_history(again["arm=crash/seed=0"]["mlflow_run_id"], "recall_at_1") == []
    for key in ("arm=a/seed=0", "arm=b/seed=0"):
        assert again[key] == after[key]
    assert len(mlflow_children(tmp_path)) == 3


# ------------------------------------------------------------------ SIGTERM, driver I/O faults (issue 19, defect 4)


def _wait_for_a_running_trial(proc: subprocess.Popen, out: Path, log: Path) -> None:
    deadline = time.monotonic() + 300
    while True:
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        records = _records(out) if (out / "store.json").is_file() else {}
        if any(r["status"] == "RUNNING" and r.get("last_step", 0) >= 1 for r in records.values()):
            return
        time.sleep(0.1)


@pytest.mark.timeout(600)
def test_sigterm_stops_the_sweep_like_ctrl_c(tmp_path: Path, mlflow_db: Path) -> None:
    """`kill -TERM` (what kill, Slurm and Kubernetes send) exited 134 with Ray's C++ stack dump, no
    resume hint, trials left RUNNING."""
    raw = tiny(train={"epochs": KILL_EPOCHS})
    raw["sweep"] = {"name": "faults", "arms": {"a": {}, "b": {"model.embedding_dim": 8}}, "seeds": [0],
                    "max_concurrent_trials": 1, "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    cfg, out, log = write_yaml(tmp_path / "sweep.yaml", raw), tmp_path / "sweep", tmp_path / "run.log"
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, str(REPO / "sweep" / "run.py"), str(cfg), "--out", str(out)], cwd=tmp_path,
                                env=env(), stdout=subprocess.DEVNULL, stderr=f, start_new_session=True)
    try:
        _wait_for_a_running_trial(proc, out, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=180) == 130, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    err = log.read_text()
    assert err.strip().splitlines()[-1] == (f"interrupted; continue with: python sweep/run.py {cfg} --out {out} --resume")
    assert "Traceback" not in err and "SIGTERM" not in err, err[-3000:]
    statuses = {r["status"] for r in _records(out).values()}
    assert "RUNNING" not in statuses and "KILLED" in statuses, statuses
    parent = [r for r in MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(
        [MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_experiment_by_name("faults").experiment_id])
        if r.data.tags.get("sweep.role") == "parent"]
    assert [r.info.status for r in parent] == ["KILLED"]


@pytest.mark.parametrize("failing_write", [1, 6], ids=["at_start", "mid_sweep"])
def test_a_full_disk_under_the_driver_is_one_line_and_exit_3(tmp_path: Path, failing_write: int, mlflow_db: Path) -> None:
    """A full disk on a write of the sweep's state exited 1 with tracebacks (1 is "done, some trials
    failed"). Now: one line naming the file (the trial store), exit 3; a sweep that had not started
    leaves no folder (a plain rerun works), one that had keeps its records to --resume."""
    cfg, out = sweep_yaml(tmp_path, {"a": {}, "b": {"model.embedding_dim": 8}}), tmp_path / "sweep"
    [result] = run_together("faults_testlib:sweep_with_full_disk", [[str(failing_write), str(cfg), "--out", str(out)]],
                            tmp_path)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    then = (f"run it again: python sweep/run.py {cfg} --out {out}" if failing_write == 1
            else f"continue with: python sweep/run.py {cfg} --out {out} --resume")
    store = tmp_path / ".store" / "trials.sqlite"
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {store}: trial store: database or disk is full; fix it, then {then}")
    if failing_write == 1:
        assert not out.exists()
    else:
        assert _records(out) and (out / "plan.json").is_file()  # every write before the full disk
