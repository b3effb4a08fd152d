"""Settings that mean something: a margin or interval width that is not a finite positive number,
a seed policy's `max` that the plan cannot list, and search folds that hold out one class (every
learning rate then scores MAP@R 100) or leave too few classes for a batch are refused at
`--dry-run` (and a sweep's start) in one line naming the field, exit 2, nothing written."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from faults_testlib import one_error_line, tiny, write_yaml

FOLD_SEARCH = {"params": {"optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2}}, "num_samples": 2}


def _refused(tmp_path: Path, capsys, monkeypatch, **sweep: Any) -> str:
    from sweep.run import main

    monkeypatch.chdir(tmp_path)
    raw = tiny()  # digits: 5 training classes, P = 3
    raw["sweep"] = {"name": "settings", "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}, **sweep}
    path = write_yaml(tmp_path / "s.yaml", raw)
    rc = main([str(path), "--out", str(tmp_path / "sweep"), "--dry-run"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert sorted(os.listdir(tmp_path)) == ["s.yaml"]
    line = one_error_line(err)
    assert line.startswith(f"error: {path}"), line
    return line


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_an_infinite_equivalence_margin_is_refused(tmp_path: Path, capsys, monkeypatch, no_ray: None, value: float) -> None:
    """`.inf` printed "CI -31.2 to +28.4: equivalent within ±inf points"."""
    line = _refused(tmp_path, capsys, monkeypatch, seeds=[0, 1], baseline={"arm": "a"}, arms={"a": {}, "b": {}},
                    equivalence_margin=value)
    assert "sweep.equivalence_margin: Input should be a finite number" in line


def test_an_infinite_interval_width_is_refused(tmp_path: Path, capsys, monkeypatch, no_ray: None) -> None:
    line = _refused(tmp_path, capsys, monkeypatch, seeds={"start": 2, "max": 4, "until": {"ci_half_width": float("inf")}})
    assert "sweep.seeds.until.ci_half_width: Input should be a finite number" in line


def test_a_policy_max_the_plan_cannot_list_is_refused(tmp_path: Path, capsys, monkeypatch, no_ray: None) -> None:
    """2**33 reached `list(range(max))`: a MemoryError, not a message."""
    line = _refused(tmp_path, capsys, monkeypatch, seeds={"start": 2, "max": 8589934592, "until": {"ci_half_width": 1.0}})
    assert "sweep.seeds.max: Input should be less than or equal to 10000" in line


def test_folds_of_one_class_are_refused(tmp_path: Path, capsys, monkeypatch, no_ray: None) -> None:
    """One class per fold: every embedding retrieves its own class, MAP@R 100 for any lr."""
    line = _refused(tmp_path, capsys, monkeypatch, seeds=[0], search={**FOLD_SEARCH, "folds": 5})
    assert ("sweep.search.folds: 5 folds of the 5 training classes of digits hold out 1 class in fold 0; "
            "a fold needs at least 2 (one class scores every model 100 %); at most 2 folds") in line


def test_folds_that_leave_too_few_classes_for_a_batch_are_refused(tmp_path: Path, capsys, monkeypatch,
                                                                  no_ray: None) -> None:
    line = _refused(tmp_path, capsys, monkeypatch, seeds=[0], search={**FOLD_SEARCH, "folds": 2})
    assert "sweep.search.folds: 2 folds leave fold 1 2 training classes: data.batch.classes_per_batch: 3" in line


def test_folds_that_fit_pass(tmp_path: Path) -> None:
    from sweep.checks import check_plan
    from sweep.plan import load_plan

    raw = tiny(data={"train_classes": 0.8, "batch": {"classes_per_batch": 2, "samples_per_class": 4}})
    raw["sweep"] = {"seeds": [0], "search": {**FOLD_SEARCH, "folds": 4},
                    "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}}
    check_plan(load_plan(write_yaml(tmp_path / "s.yaml", raw)))  # 8 classes: 4 folds of 2, 6 to train on
