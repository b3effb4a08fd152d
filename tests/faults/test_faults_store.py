"""Issue 19, defect 1: sweeps started together on one fresh sqlite MLflow store both start (one
died, every time, with `table ... already exists` and a half-made sweep folder)."""
from __future__ import annotations

from pathlib import Path

from faults_testlib import run_together


def test_drivers_creating_one_sqlite_store_together_all_succeed(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    results = run_together("faults_testlib:open_tracker", [[uri, "shared"]] * 4, tmp_path, timeout=240)
    assert [r.returncode for r in results] == [0] * 4, [r.stderr[-1500:] for r in results]
    ids = {r.stdout.strip() for r in results}
    assert len(ids) == 1 and ids != {""}, ids  # one experiment, found or made by each
