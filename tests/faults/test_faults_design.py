"""A design is fixed once results exist: `--resume` with another spending, margin, policy bound,
search folds or search metric is refused in one line naming the field (exit 2, before Ray),
unless `--restart-changed`, which reruns what the change affects. Sweep folders are written from
trial records: nothing trains."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from faults_testlib import one_error_line, tiny, write_yaml

POLICY = {"start": 2, "max": 4, "until": "decided", "spending": "pocock"}
FOLDS = {"params": {"optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2}}, "num_samples": 2,
         "folds": 3}


def sweep_yaml(tmp_path: Path, **sweep: Any) -> Path:
    # 8 training digits and P = 2: 2 or 3 folds each leave enough classes on both sides.
    raw = tiny(data={"train_classes": 0.8, "batch": {"classes_per_batch": 2, "samples_per_class": 4}})
    raw["sweep"] = {"name": "design", "grid": {"model.embedding_dim": [8, 16]}, "baseline": {"model.embedding_dim": 8},
                    "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}, **sweep}
    return write_yaml(tmp_path / "sweep.yaml", raw)


def ran(path: Path, out: Path, search: bool = False) -> None:
    """A sweep folder whose final trials finished (and, with `search`, one sample per cell)."""
    from sweep.pending import identity, identity_fields
    from sweep.plan import load_plan
    from sweep.records import FINISHED, TrialRecord
    from sweep.sweep_folder import create_sweep_dir

    plan = load_plan(path)
    log = create_sweep_dir(plan, out)
    metrics = {"recall_at_1": 0.9, "map_at_r": 0.4, "epoch": 1.0}
    if search:
        for cell in plan.cells:
            spec = plan.search_trial(cell)
            log.add(TrialRecord(trial_id="t1", key=f"{spec.key}/t1", phase="search", cell=cell.id, seed=spec.seed,
                                status=FINISHED, metrics=metrics, params={"optimizer.lr": 0.003}))
    for spec in plan.final_trials()[:4]:
        log.add(TrialRecord(trial_id="", key=spec.key, phase="final", cell=spec.cell, seed=spec.seed, status=FINISHED,
                            metrics=metrics, **identity_fields(identity(plan, spec))))


CHANGES = [
    ({"seeds": POLICY}, "sweep.seeds.spending=obrien_fleming", "sweep.seeds.spending ('pocock' -> 'obrien_fleming')"),
    ({"seeds": POLICY}, "sweep.seeds.max=8", "sweep.seeds.max (4 -> 8)"),
    ({"seeds": POLICY}, "sweep.seeds.until={ci_half_width: 1.0}", "sweep.seeds.until ("),
    ({"seeds": [0, 1], "equivalence_margin": 2.0}, "sweep.equivalence_margin=20", "sweep.equivalence_margin (2.0 -> 20.0)"),
    ({"seeds": [0, 1]}, "sweep.equivalence_margin=1", "sweep.equivalence_margin (unset -> 1.0)"),
    ({"seeds": [0, 1]}, "sweep.seeds={start: 2, max: 4, until: decided}", "sweep.seeds ('a seed list' -> 'a seed policy')"),
    ({"seeds": [0], "search": FOLDS}, "sweep.search.folds=2", "sweep.search.folds (3 -> 2)"),
    ({"seeds": [0], "search": FOLDS}, "sweep.search.metric=recall_at_1", "sweep.search.metric ('map_at_r' -> 'recall_at_1')"),
]


@pytest.mark.parametrize("sweep,change,named", CHANGES, ids=[c[1].split("=")[0] for c in CHANGES])
def test_resume_refuses_a_change_of_what_results_mean(tmp_path: Path, capsys, no_ray: None, sweep: dict[str, Any],
                                                      change: str, named: str) -> None:
    from sweep.run import main

    path, out = sweep_yaml(tmp_path, **sweep), tmp_path / "sweep"
    ran(path, out, search="search" in sweep)
    assert main([str(path), "--out", str(out), "--resume", "--set", change]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {path}: {named}"), line
    assert "add --restart-changed" in line and "start a new sweep" in line


def test_growing_a_sweep_is_still_allowed(tmp_path: Path) -> None:
    """More seeds in a list, more search samples, another report setting: the design stands."""
    from sweep.plan import load_plan
    from sweep.pending import check_resumed
    from sweep.sweep_folder import started_plan
    from sweep.store import SweepLog

    path, out = sweep_yaml(tmp_path, seeds=[0], search=FOLDS), tmp_path / "sweep"
    ran(path, out, search=True)
    log = SweepLog.open(out)
    for change in ("sweep.seeds=[0,1,2]", "sweep.search.num_samples=5", "sweep.report.evaluation=best",
                   "sweep.max_failures=0"):
        restart = check_resumed(load_plan(path, [change]), *started_plan(out), log, restart_changed=False)
        assert restart.keys == [] and not restart.search, change


def test_restart_changed_reruns_what_the_change_affects(tmp_path: Path) -> None:
    from sweep.plan import load_plan
    from sweep.pending import check_resumed
    from sweep.sweep_folder import started_plan
    from sweep.store import SweepLog

    path, out = sweep_yaml(tmp_path, seeds=POLICY), tmp_path / "policy"
    ran(path, out)
    log = SweepLog.open(out)
    restart = check_resumed(load_plan(path, ["sweep.seeds.spending=obrien_fleming"]), *started_plan(out), log, restart_changed=True)
    # A policy's stops follow its design from the first look: its final phase runs afresh.
    assert sorted(restart.keys) == sorted(r.key for r in log.trials() if r.phase == "final") and not restart.search

    path, out = sweep_yaml(tmp_path, seeds=[0, 1]), tmp_path / "fixed"
    ran(path, out)
    restart = check_resumed(load_plan(path, ["sweep.equivalence_margin=1"]), *started_plan(out), SweepLog.open(out), restart_changed=True)
    assert restart.keys == [] and not restart.search  # fixed seeds do not depend on the margin

    path, out = sweep_yaml(tmp_path, seeds=[0], search=FOLDS), tmp_path / "search"
    ran(path, out, search=True)
    log = SweepLog.open(out)
    restart = check_resumed(load_plan(path, ["sweep.search.folds=2"]), *started_plan(out), log, restart_changed=True)
    assert restart.search and sorted(restart.keys) == sorted(r.key for r in log.trials() if r.phase == "search")


def test_results_keyed_by_an_older_dml_core_are_not_resumed_silently(tmp_path: Path, capsys, no_ray: None) -> None:
    from dml_core.identity import RESULTS_VERSION
    from sweep.run import main
    from sweep.store import SweepLog

    path, out = sweep_yaml(tmp_path, seeds=[0, 1]), tmp_path / "sweep"
    ran(path, out)
    log = SweepLog.open(out)
    for r in log.trials():
        log.update(r.key, results_version=RESULTS_VERSION - 1, content_key="old" + r.content_key[3:])
    assert main([str(path), "--out", str(out), "--resume"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"keyed under dml_core results version {RESULTS_VERSION - 1} (now {RESULTS_VERSION}" in line
