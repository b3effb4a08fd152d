"""The sweep driver: concurrent starts on one sweep directory, failed final trials, damaged
ledger, unwritable --out (refused before Ray starts)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from faults_testlib import REPO, one_error_line, run_together, tiny, write_yaml

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


def test_two_sweeps_started_together_and_a_failed_final_trial(tmp_path: Path) -> None:
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

    records = json.loads((out / "ledger.json").read_text())["trials"].values()
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


def test_a_sweep_whose_trials_all_failed_does_not_exit_0(tmp_path: Path) -> None:
    cfg = sweep_yaml(tmp_path, {"nan": ARMS["nan"]})
    [result] = run_together("sweep.run:main", [[str(cfg), "--out", str(tmp_path / "sweep")]], tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("sweep finished with failures: 1 of 1 final trials failed")


@pytest.fixture()
def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """These mistakes must be caught before Ray starts (seconds, and no cluster resources)."""
    import ray

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)


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


def test_the_ledger_never_holds_a_stub_record(tmp_path: Path) -> None:
    """Stub records (status only) came from updates of trials the file did not hold -- two drivers
    overwriting each other's ledger; an update of an unknown trial is now refused, not invented."""
    from sweep.ledger import Ledger

    ledger = Ledger(tmp_path)
    ledger.add_trial("t1", key="cell/seed=0", phase="final", cell="cell", seed=0, status="RUNNING")
    with pytest.raises(KeyError, match="no trial t2"):
        ledger.update_trial("t2", status="FINISHED")
    with pytest.raises(ValueError, match="missing key, phase, cell, seed"):
        ledger.add_trial("t3", status="FAILED")
    assert [r["trial_id"] for r in ledger.trials()] == ["t1"]
