"""The cost forecast (`sweep.forecast`): stored trials of the same recipe priced and scaled to a new
sweep's epochs, seeds and image size; calibration where none is stored; the report's comparison."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from dml_core.config import config_from_dict
from sweep import forecast as fc
from sweep import forecast_text, trial_slots
from sweep.plan import load_plan, trial_config
from sweep.records import TrialRecord
from sweep.spec import Resources
from sweep.store import SweepLog
from sweep_testlib import TINY_DIGITS, write_yaml

NO_SEARCH = {"seeds": [0, 1]}


def _store_trials(tmp_path: Path, plan, history: list[tuple[int, float]], wall: float | list[float], name: str = "old",
                  cuda: bool = False) -> Path:
    """Finished records of every final trial of `plan`, each with the evaluations `history` (epoch, time_s)
    and its `wall` time (one for all, or one per trial)."""
    store = tmp_path / "store.sqlite"
    log = SweepLog.create(tmp_path / name, name, store)
    walls = wall if isinstance(wall, list) else [wall] * len(plan.final_trials())
    for trial, wall in zip(plan.final_trials(), walls):
        cfg = trial_config(plan.base, trial, None, plan.source)
        gpu = {"gpu_mem_peak_mib": 10.0} if cuda else {}
        log.add(TrialRecord(trial_id=trial.key, key=trial.key, phase="final", cell=trial.cell, seed=trial.seed,
                            status="FINISHED", config=cfg.to_dict(), wall_s=wall, metrics={"epoch": 4.0, **gpu},
                            history=[{"epoch": float(e), "time_s": t, **gpu} for e, t in history]))
    log.store.close()
    return store


def _plan(tmp_path: Path, name: str, sweep: dict, **train):
    return load_plan(write_yaml(tmp_path / f"{name}.yaml", sweep, train={**TINY_DIGITS["train"], **train}))


POOL = trial_slots.Pool(2, "two slots")


def test_stored_trials_are_scaled_to_the_new_epochs_and_seeds(tmp_path: Path) -> None:
    old = _plan(tmp_path, "old", NO_SEARCH, epochs=4, eval_every=2)
    # 4 s per epoch (evaluations included), 9 s of start-up: 25 s in all at 4 epochs.
    store = _store_trials(tmp_path, old, [(2, 10.0), (4, 18.0)], wall=25.0)
    new = _plan(tmp_path, "new", {"seeds": [0, 1, 2]}, epochs=10, eval_every=2)
    forecast = fc.make_forecast(new, store, POOL)
    final = forecast.phases["final"]
    assert final.trials == 3 and final.unknown == 0
    assert final.trial_s == pytest.approx(3 * (9 + 4 * 10))
    assert final.wall_s == pytest.approx(2 * (9 + 4 * 10))  # 3 equal trials on 2 slots
    text = forecast_text.describe(forecast)
    assert "from 2 stored trials of this recipe on cpu (sweep old)" in text
    assert "0.0408 trial-hours (2:27)" in text


def test_only_a_phases_first_trials_pay_for_new_worker_processes(tmp_path: Path) -> None:
    """Four stored trials on two slots: the first two started new worker processes (12 s more:
    imports), the other two reused them. Six new trials on two slots: two pay for new workers, four
    do not (one median start-up for all put the new workers' half on every trial)."""
    old = _plan(tmp_path, "old", {"seeds": [0, 1, 2, 3]}, epochs=4, eval_every=2)
    store = _store_trials(tmp_path, old, [(2, 10.0), (4, 18.0)], wall=[37.0, 37.0, 25.0, 25.0])
    new = _plan(tmp_path, "new", {"seeds": [0, 1, 2, 3, 4, 5]}, epochs=10, eval_every=2)
    final = fc.make_forecast(new, store, POOL).phases["final"]
    assert final.trial_s == pytest.approx(6 * (9 + 4 * 10) + 2 * 12)
    assert final.wall_s == pytest.approx((12 + 49) + 49 + 49)


def test_image_size_and_iterations_scale_the_per_image_cost(tmp_path: Path) -> None:
    old = _plan(tmp_path, "old", NO_SEARCH, epochs=4, eval_every=2)
    store = _store_trials(tmp_path, old, [(2, 10.0), (4, 18.0)], wall=25.0)
    raw = {**TINY_DIGITS, "data": {**TINY_DIGITS["data"], "image_size": 32},
           "train": {**TINY_DIGITS["train"], "epochs": 4, "iterations_per_epoch": 10}}
    new = load_plan(write_yaml(tmp_path / "big.yaml", NO_SEARCH, data=raw["data"], train=raw["train"]))
    final = fc.make_forecast(new, store, POOL).phases["final"]
    # 4 x the pixels, 2 x the iterations: 8 x the 4 s per epoch.
    assert final.trial_s == pytest.approx(2 * (9 + 8 * 4 * 4))


def test_other_recipes_and_other_devices_are_not_inputs(tmp_path: Path) -> None:
    old = _plan(tmp_path, "old", NO_SEARCH, epochs=4)
    store = _store_trials(tmp_path, old, [(2, 10.0), (4, 18.0)], wall=25.0, cuda=True)
    assert not fc.make_forecast(old, store, POOL).sources  # stored on cuda, planned on cpu
    wider = load_plan(write_yaml(tmp_path / "w.yaml", NO_SEARCH, model={**TINY_DIGITS["model"], "conv_width": 32}))
    store2 = _store_trials(tmp_path / "b", old, [(2, 10.0), (4, 18.0)], wall=25.0)
    forecast = fc.make_forecast(wider, store2, POOL)
    assert forecast.phases["final"].unknown == 2 and forecast.phases["final"].trial_s == 0
    assert "no stored trial of this sweep's recipe" in forecast_text.describe(forecast)


def test_no_store_file_means_no_inputs_and_none_is_created(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "p", NO_SEARCH)
    forecast = fc.make_forecast(plan, tmp_path / "absent.sqlite", POOL)
    assert not forecast.sources and not (tmp_path / "absent.sqlite").exists()


def test_search_trials_are_priced_on_their_holdout_split(tmp_path: Path) -> None:
    old = _plan(tmp_path, "old", NO_SEARCH, epochs=4, iterations_per_epoch=None)
    store = _store_trials(tmp_path, old, [(2, 10.0), (4, 18.0)], wall=25.0)
    search = {"seeds": [0], "search": {"params": {"optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
                                       "num_samples": 3, "holdout": 0.4}}
    new = _plan(tmp_path, "new", search, epochs=4, iterations_per_epoch=None)
    forecast = fc.make_forecast(new, store, POOL)
    per_final = forecast.phases["final"].trial_s
    per_search = forecast.phases["search"].trial_s / 3
    assert forecast.phases["search"].trials == 3
    assert 9 < per_search < per_final  # fewer training classes: fewer iterations per epoch


def test_iterations_per_epoch_is_the_trainers_count() -> None:
    from dml_core.data.index import data_index
    from dml_core.training.trainer import epoch_iterations

    for length in ("images", "classes"):
        cfg = config_from_dict({**TINY_DIGITS, "train": {**TINY_DIGITS["train"], "iterations_per_epoch": None,
                                                         "epoch_length": length}})
        counts = data_index(cfg.data).images_per_class
        labels = np.repeat(np.arange(len(counts)), counts)
        assert fc.iterations_per_epoch(cfg) == epoch_iterations(cfg, labels)


def test_slots_and_wall_time() -> None:
    assert trial_slots.makespan([2, 3, 2, 3, 2], 2) == 7  # longest first to the first free slot: 3+2+2 | 3+2
    assert trial_slots.makespan([5, 1, 1, 1], 4) == 5
    assert trial_slots.makespan([], 3) == 0 and math.isinf(trial_slots.makespan([1.0], 0))
    assert trial_slots.local_pool(8, 1, Resources(cpu=2, gpu=0.5), None, False).slots == 2  # the GPU binds
    assert trial_slots.local_pool(8, 0, Resources(cpu=3), None, False).slots == 2
    assert trial_slots.local_pool(8, 0, Resources(cpu=1), 3, False).slots == 3  # max_concurrent_trials caps


def test_cluster_config_counts_each_node_type_at_max_workers(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("head_node_type: head\navailable_node_types:\n"
                    "  head: {resources: {CPU: 4, GPU: 0}, max_workers: 0}\n"
                    "  gpu: {resources: {CPU: 8, GPU: 4}, max_workers: 2}\n")
    assert trial_slots.cluster_pool(path, Resources(cpu=2, gpu=1), None).slots == 8  # 2 nodes x 4 GPUs; the head has none
    assert trial_slots.cluster_pool(path, Resources(cpu=2), None).slots == 2 + 2 * 4


def test_calibrate_without_stored_trials_prints_a_forecast_calibrated_on_cpu(tmp_path: Path, capsys) -> None:
    from sweep.run import main

    path = write_yaml(tmp_path / "c.yaml", {"seeds": [0, 1]}, train={**TINY_DIGITS["train"], "epochs": 3})
    rc = main([str(path), "--dry-run", "--calibrate", "--out", str(tmp_path / "sw"), "--store", str(tmp_path / "s.sqlite")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "every trial: calibrated on cpu" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("final") and "trial-hours" in ln)
    assert "2 trials:" in line and "trial-hours" in line and "not estimated" not in line
    assert not (tmp_path / "s.sqlite").exists()


def test_calibrate_needs_dry_run(tmp_path: Path, capsys) -> None:
    from sweep.run import main

    assert main([str(write_yaml(tmp_path / "c.yaml", NO_SEARCH)), "--calibrate"]) == 2
    assert "--calibrate needs --dry-run" in capsys.readouterr().err


def test_the_report_puts_the_forecast_beside_the_measured_cost(tmp_path: Path) -> None:
    forecast = fc.Forecast({"final": fc.PhaseCost(2, 100.0, 60.0, 0)}, POOL, ["every trial: ..."], [])
    fc.save(forecast, tmp_path)
    again = fc.load(tmp_path)
    assert again == forecast
    ran = [TrialRecord(trial_id=str(i), key=f"c/seed={i}", phase="final", cell="c", seed=i, status="FINISHED",
                       wall_s=w) for i, w in enumerate([55.0, 65.0])]
    reused = TrialRecord(trial_id="r", key="c/seed=9", phase="final", cell="c", seed=9, status="FINISHED",
                         wall_s=500.0, reused_from="/elsewhere")
    text = forecast_text.beside_measured(again, [*ran, reused])
    assert "final forecast 1:40 for 2 trials, measured 2:00 over the 2 that trained here, measured / forecast 1.20" in text


def test_store_flag_does_not_outlive_the_command(tmp_path: Path, monkeypatch) -> None:
    """`main(["--store", X])` in one process (a test, a notebook) leaves $DML_TRIAL_STORE as it
    found it: a later sweep in that process found its store at X, and the seed forecast of
    tests/sweep/test_sequential.py read nothing when it ran after this file's calibrate test."""
    from sweep.run import main

    monkeypatch.delenv("DML_TRIAL_STORE", raising=False)
    path = write_yaml(tmp_path / "c.yaml", {"seeds": [0]})
    assert main([str(path), "--dry-run", "--out", str(tmp_path / "sw"), "--store", str(tmp_path / "s.sqlite")]) == 0
    assert "DML_TRIAL_STORE" not in os.environ
    monkeypatch.setenv("DML_TRIAL_STORE", str(tmp_path / "mine.sqlite"))
    assert main([str(path), "--dry-run", "--out", str(tmp_path / "sw"), "--store", str(tmp_path / "s.sqlite")]) == 0
    assert os.environ["DML_TRIAL_STORE"] == str(tmp_path / "mine.sqlite")


def test_a_calibrated_rate_prices_the_evaluations_it_timed(tmp_path: Path, monkeypatch) -> None:
    """`--calibrate` times training and one evaluation apart: the evaluation's seconds are priced per
    evaluation, not taken for the new-worker start-up (which `import_seconds` sets) and lost."""
    from sweep import calibration

    monkeypatch.setattr(calibration, "calibrate", lambda cfg, device: (0.0, 1.0, 100.0))  # evaluations only
    monkeypatch.setattr(calibration, "import_seconds", lambda: 0.0)
    plan = load_plan(write_yaml(tmp_path / "c.yaml", {"seeds": [0]}, train={**TINY_DIGITS["train"], "epochs": 3}))
    forecast = fc.make_forecast(plan, tmp_path / "none.sqlite", trial_slots.Pool(1, "test"), calibrate_missing=True)
    evaluations = fc.planned_work(plan)[0][0].evaluations
    assert evaluations >= 1
    # one trial: its start-up (1 s) + 100 s per evaluation
    assert forecast.total.trial_s == pytest.approx(1.0 + 100.0 * evaluations)
