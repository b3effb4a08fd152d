"""Issue 19, defects 5 and 10: what fails once Ray has started is caught by `--dry-run` -- and by a
sweep's start, before Ray starts or anything is written -- with one line naming the field; and a
huge plan is summarised on the console, written whole to plan.txt."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from faults_testlib import one_error_line, tiny, write_yaml


def _sweep(tmp_path: Path, **sweep: Any) -> Path:
    raw = tiny()
    raw["sweep"] = {"name": "dry", "seeds": [0], "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
                    **sweep}
    return write_yaml(tmp_path / "s.yaml", raw)


def _refused(tmp_path: Path, capsys, monkeypatch, dry_run: bool, **sweep: Any) -> str:
    """Run the driver on a sweep with `sweep` set; it must exit 2 with one line and write nothing."""
    from sweep.run import main

    monkeypatch.chdir(tmp_path)
    cfg = _sweep(tmp_path, **sweep)
    rc = main([str(cfg), "--out", str(tmp_path / "sweep"), *(["--dry-run"] if dry_run else [])])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert sorted(os.listdir(tmp_path)) == ["s.yaml"]  # no sweep folder, no MLflow store
    return one_error_line(err)


@pytest.mark.parametrize("seeds", [[-1], [0, 2**32]])
def test_seeds_out_of_range_are_refused_at_load(tmp_path: Path, capsys, monkeypatch, no_ray: None, seeds: list) -> None:
    """Every trial crashed and was retried (210 lines of tracebacks)."""
    line = _refused(tmp_path, capsys, monkeypatch, True, seeds=seeds)
    assert line.startswith(f"error: {tmp_path / 's.yaml'}: sweep.seeds.{len(seeds) - 1}: Input should be"), line


@pytest.mark.parametrize("bound", [{"low": 1e-4, "high": float("inf")}, {"low": float("-inf"), "high": 1.0},
                                   {"low": 0.0, "high": float("nan")}])
def test_a_search_bound_that_is_not_finite_is_refused(tmp_path: Path, capsys, monkeypatch, no_ray: None,
                                                      bound: dict) -> None:
    search = {"params": {"optimizer.weight_decay": {"type": "uniform", **bound}}, "num_samples": 2}
    line = _refused(tmp_path, capsys, monkeypatch, True, search=search)
    assert line.startswith(f"error: {tmp_path / 's.yaml'}: sweep.search.params.optimizer.weight_decay."), line
    assert ": must be a finite number, got " in line


@pytest.mark.parametrize("resources", [{"cpu": 0.00001}, {"cpu": 1, "gpu": 0.00001}, {"cpu": 1, "gpu": 1.5}])
def test_resources_ray_would_reject_are_refused(tmp_path: Path, capsys, monkeypatch, no_ray: None,
                                                resources: dict) -> None:
    line = _refused(tmp_path, capsys, monkeypatch, True, resources_per_trial=resources)
    field = "cpu" if "gpu" not in resources else "gpu"
    assert line.startswith(f"error: {tmp_path / 's.yaml'}: sweep.resources_per_trial.{field}: "), line


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry_run", "start"])
@pytest.mark.parametrize("uri", ["bogus://x", "sqlite//no-colon.db"])
def test_a_malformed_tracking_uri_is_one_line(tmp_path: Path, capsys, monkeypatch, no_ray: None, dry_run: bool,
                                              uri: str) -> None:
    """`bogus://x` was a 48-line traceback once Ray had started."""
    line = _refused(tmp_path, capsys, monkeypatch, dry_run, mlflow={"tracking_uri": uri})
    assert line.startswith(f"error: sweep.mlflow.tracking_uri: {uri}: "), line


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry_run", "start"])
def test_an_unreachable_mlflow_server_is_one_line_in_seconds(tmp_path: Path, capsys, monkeypatch, no_ray: None,
                                                             dry_run: bool) -> None:
    """MLflow retried for 260 s in silence, then printed 117 lines."""
    uri = f"http://127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    line = _refused(tmp_path, capsys, monkeypatch, dry_run, mlflow={"tracking_uri": uri})
    assert time.monotonic() - started < 30
    assert line.startswith(f"error: sweep.mlflow.tracking_uri: {uri}: no MLflow server answers ("), line


def test_an_unreachable_server_from_the_environment_names_the_variable(tmp_path: Path, capsys, monkeypatch,
                                                                       no_ray: None) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    line = _refused(tmp_path, capsys, monkeypatch, True, mlflow={})
    assert line.startswith(f"error: MLFLOW_TRACKING_URI: {uri}: no MLflow server answers ("), line


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry_run", "start"])
@pytest.mark.parametrize("case", ["missing folder", "not a database"])
def test_an_unusable_sqlite_store_is_one_line_before_anything_is_written(tmp_path: Path, capsys, monkeypatch,
                                                                         no_ray: None, dry_run: bool, case: str) -> None:
    """A sweep opens MLflow in its writer thread while Tune starts: what commonly makes a sqlite
    store unusable is still refused first, in one line, leaving no sweep folder."""
    from sweep.run import main

    store = tmp_path / "stores"
    if case == "not a database":
        store.mkdir()
        (store / "mlflow.db").write_text("not sqlite " * 100)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    cfg = _sweep(tmp_path, mlflow={"tracking_uri": uri})
    rc = main([str(cfg), "--out", str(tmp_path / "sweep"), *(["--dry-run"] if dry_run else [])])
    err = capsys.readouterr().err
    assert rc == 2, err
    line = one_error_line(err)
    why = f"the folder {store} does not exist" if case == "missing folder" else "not a writable SQLite database ("
    assert line.startswith(f"error: sweep.mlflow.tracking_uri: {uri}: {why}"), line
    assert not (tmp_path / "sweep").exists()


def test_a_huge_plan_is_summarised_on_the_console_and_listed_whole_in_plan_txt(tmp_path: Path, capsys, monkeypatch,
                                                                                 no_ray: None) -> None:
    """A 10,000-cell --dry-run printed 10,008 lines (300 cells here: --dry-run validates each)."""
    from sweep.console import describe_plan
    from sweep.plan import load_plan
    from sweep.run import main

    lrs = [round(1e-4 * (1 + i), 6) for i in range(30)]
    cfg = _sweep(tmp_path, grid={"optimizer.lr": lrs, "optimizer.weight_decay": [i / 1000 for i in range(10)]})
    monkeypatch.chdir(tmp_path)
    assert main([str(cfg), "--out", str(tmp_path / "sweep"), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) < 40, "\n".join(out[:50])
    assert any(f"... 280 more cells (every cell: {tmp_path / 'sweep' / 'plan.txt'} once the sweep starts" in line
               for line in out)
    assert sorted(os.listdir(tmp_path)) == ["s.yaml"]  # a dry run writes nothing
    # What the runner writes to plan.txt: every cell, the last one included.
    whole = describe_plan(load_plan(cfg), tmp_path / "sweep").splitlines()
    assert len(whole) > 300 and "optimizer.lr=0.003, optimizer.weight_decay=0.009" in whole[-1]
