"""The forecast's cost model (`sweep.stored_rates`) on synthetic stored trials made from a known
fixed part, per-epoch cost, new-worker extra and contention: the forecast must come out exact."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Optional

import pytest

from sweep import forecast as fc
from sweep import forecast_text, trial_slots
from sweep.plan import PLAN_YAML, load_plan, trial_config
from sweep.records import TrialRecord
from sweep.store import SweepLog
from sweep_testlib import TINY_DIGITS, write_yaml

POOL = trial_slots.Pool(2, "two slots")


def _plan(tmp_path: Path, name: str, sweep: dict[str, Any], **train: Any):
    return load_plan(write_yaml(tmp_path / f"{name}.yaml", sweep, train={**TINY_DIGITS["train"], **train}))


def _trial(fixed: float, warm_up: float, per_epoch: float, epochs: int, evals_at: list[int],
           load: float = 1.0) -> tuple[float, list[tuple[int, float]]]:
    """(wall, [(epoch, time_s)]) of a trial with `fixed` seconds before its training loop,
    `warm_up` more in the loop's first steps, `per_epoch` after, all `load` times as slow."""
    return (load * (fixed + warm_up + per_epoch * epochs),
            [(e, load * (warm_up + per_epoch * e)) for e in evals_at])


def _store(tmp_path: Path, plan, trials: list[tuple[float, list[tuple[int, float]]]], name: str = "old",
           phase: str = "final", hardware: Optional[str] = None, plan_yaml: Optional[Path] = None) -> Path:
    """Finished records in `tmp_path`/store.sqlite, one per (wall, history) of `trials`, in the
    order given (its first ones the phase's first), configs from `plan`'s final trials or search trial."""
    store = tmp_path / "store.sqlite"
    log = SweepLog.create(tmp_path / name, name, store)
    if plan_yaml is not None:
        shutil.copy(plan_yaml, tmp_path / name / PLAN_YAML)
    specs = plan.final_trials() if phase == "final" else [plan.search_trial(plan.cells[0])] * len(trials)
    for i, ((wall, history), trial) in enumerate(zip(trials, specs * len(trials))):
        cfg = trial_config(plan.base, trial, None, plan.source)
        log.add(TrialRecord(trial_id=f"{phase}{i}", key=f"{phase}/{i}", phase=phase, cell=trial.cell, seed=i,
                            status="FINISHED", config=cfg.to_dict(), wall_s=wall, hardware=hardware,
                            history=[{"epoch": float(e), "time_s": t} for e, t in history]))
    log.store.close()
    return store


def test_a_new_workers_slow_first_epochs_are_its_extra_not_lost(tmp_path: Path) -> None:
    """Four trials of 2 epochs, each evaluated once, on two slots: the first two started new
    workers (12 s of imports before the loop, 6 s of warm-up in it), the other two reused them
    (2 s fixed, 5 s per epoch). Six trials of 4 epochs: every trial 2 + 20 s, the two in new
    workers 18 s more (the release before took only the 12 s before the loop as the extra)."""
    old = _plan(tmp_path, "old", {"seeds": [0, 1, 2, 3]}, epochs=2, eval_every=2)
    fresh, warm = _trial(14.0, 6.0, 5.0, 2, [2]), _trial(2.0, 0.0, 5.0, 2, [2])
    store = _store(tmp_path, old, [fresh, fresh, warm, warm])
    new = _plan(tmp_path, "new", {"seeds": [0, 1, 2, 3, 4, 5]}, epochs=4, eval_every=2)
    forecast = fc.make_forecast(new, store, POOL)
    assert forecast.phases["final"].trial_s == pytest.approx(6 * 22 + 2 * 18)
    assert forecast.phases["final"].wall_s == pytest.approx(40 + 22 + 22)
    text = forecast_text.describe(forecast)
    assert "fixed 2 s a trial, 18 s more in a new worker" in text
    assert "one evaluation per trial at one epoch count: the training loop's fixed part is priced per epoch" in text


def test_one_evaluation_per_trial_at_two_epoch_counts_fits_fixed_plus_per_epoch(tmp_path: Path) -> None:
    """Trials evaluated only at their end, 2 epochs in one sweep and 6 in another: 3 s before the
    loop, 2 s of warm-up in it, 4 s per epoch. A line through both gives 5 + 4 x 10 at 10 epochs
    (the time per epoch of either alone, 5 or 4.3 s, does not)."""
    two = _plan(tmp_path, "two", {"seeds": [0, 1, 2]}, epochs=2, eval_every=50)
    six = _plan(tmp_path, "six", {"seeds": [0, 1, 2]}, epochs=6, eval_every=50)
    _store(tmp_path, two, [_trial(3, 2, 4, 2, [2])] * 3, name="two")
    store = _store(tmp_path, six, [_trial(3, 2, 4, 6, [6])] * 3, name="six")
    new = _plan(tmp_path, "new", {"seeds": [0, 1]}, epochs=10, eval_every=50)
    forecast = fc.make_forecast(new, store, POOL)
    assert forecast.phases["final"].trial_s == pytest.approx(2 * (5 + 40))
    text = forecast_text.describe(forecast)
    assert "per-epoch cost fitted over 2 epoch counts" in text and "evaluated every" not in text
    every_epoch = fc.make_forecast(_plan(tmp_path, "e", {"seeds": [0, 1]}, epochs=10, eval_every=1), store, POOL)
    assert "they evaluated every 50 epochs, these every 1: priced at theirs" in forecast_text.describe(every_epoch)


def test_each_phase_is_priced_from_stored_trials_of_its_phase(tmp_path: Path) -> None:
    """A final trial evaluates the test split, a search trial its holdout: stored final trials at
    4 s per epoch (9 s fixed) price final trials, stored search trials at 2 s (5 s fixed) search
    trials; a phase with none stored borrows the other's, and says so."""
    search = {"seeds": [0, 1], "search": {"params": {"optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
                                          "num_samples": 3, "holdout": 0.4}}
    old = _plan(tmp_path, "old", search, epochs=4, eval_every=2)
    _store(tmp_path, old, [_trial(9, 0, 4, 4, [2, 4])] * 2, name="finals")
    store = _store(tmp_path, old, [_trial(5, 0, 2, 4, [2, 4])] * 3, name="searches", phase="search")
    new = _plan(tmp_path, "new", {**search, "seeds": [0, 1, 2]}, epochs=10, eval_every=2)
    forecast = fc.make_forecast(new, store, POOL)
    assert forecast.phases["final"].trial_s == pytest.approx(3 * (9 + 40))
    assert forecast.phases["search"].trial_s == pytest.approx(3 * (5 + 20))
    finals_only = _store(tmp_path / "f", old, [_trial(9, 0, 4, 4, [2, 4])] * 2, name="finals")
    alone = fc.make_forecast(new, finals_only, POOL)
    assert alone.phases["search"].trial_s == pytest.approx(3 * (9 + 40))
    assert "from final trials, which evaluate another split" in forecast_text.describe(alone)


def test_stored_trials_are_priced_at_the_contention_the_new_sweep_runs_at(tmp_path: Path) -> None:
    """Stored: 4 one-thread trials at once on 2 cores (its plan asks half a CPU per trial), each
    twice as slow as alone (9 s fixed, 4 s per epoch alone). Two at once on 2 cores run as fast as
    alone; four at once on 2 cores twice as slow again."""
    half = write_yaml(tmp_path / "half.yaml", {"seeds": [0, 1, 2, 3], "resources_per_trial": {"cpu": 0.5}},
                      train={**TINY_DIGITS["train"], "epochs": 4, "eval_every": 2})
    old = load_plan(half)
    store = _store(tmp_path, old, [_trial(9, 0, 4, 4, [2, 4], load=2.0)] * 4, hardware="2 CPU, 0 GPU", plan_yaml=half)
    new = _plan(tmp_path, "new", {"seeds": [0, 1, 2]}, epochs=10, eval_every=2)
    two = fc.make_forecast(new, store, trial_slots.Pool(2, "two cores", 2.0))
    assert two.phases["final"].trial_s == pytest.approx(3 * 49) and two.phases["final"].load == 1.0
    text = forecast_text.describe(two)
    assert "their times / 2, the contention they ran at" in text
    assert "priced at that contention on 2 CPU cores (each CPU trial as fast as alone" in text
    four = fc.make_forecast(new, store, trial_slots.Pool(4, "four slots on two cores", 2.0))
    assert four.phases["final"].trial_s == pytest.approx(3 * 49 * 1.5)  # 3 trials at once on 2 cores
    assert "1.5x its time alone" in forecast_text.describe(four)


def test_contention_counts_threads_against_cores() -> None:
    from sweep.stored_rates import contention

    assert contention(2, 1, 2.0) == 1.0 and contention(4, 1, 2.0) == 2.0 and contention(2, 4, 8.0) == 1.0
    assert contention(3, 2, 4.0) == 1.5 and contention(8, 1, 0.0) == 1.0  # 0 cores: not known


def test_a_stored_sweep_whose_plan_is_damaged_counts_at_the_forecasts_slots(tmp_path: Path) -> None:
    """Its folder's `sweep.yaml` unreadable: the stored sweep is taken to have run as many trials
    at once as the forecast has slots (here 2 on 2 cores: contention 1), not an error."""
    old = _plan(tmp_path, "old", {"seeds": [0, 1, 2, 3]}, epochs=4, eval_every=2)
    store = _store(tmp_path, old, [_trial(9, 0, 4, 4, [2, 4])] * 4, hardware="2 CPU, 0 GPU")
    (tmp_path / "old" / PLAN_YAML).write_text("sweep: [unclosed\n")
    new = _plan(tmp_path, "new", {"seeds": [0, 1]}, epochs=10, eval_every=2)
    forecast = fc.make_forecast(new, store, trial_slots.Pool(2, "two cores", 2.0))
    assert forecast.phases["final"].trial_s == pytest.approx(2 * 49)
    assert "contention they ran at" not in forecast_text.describe(forecast)
