"""The ETA's work: evaluations counted beside training (`sweep.pace`), and a pace that follows a
changing machine without one trial swinging it."""
from __future__ import annotations

import pytest

from sweep.pace import KAPPA_PRIOR, MAX_STEP, Evaluations, Span, WorkModel, evaluated_epochs, pace
from sweep.plan import load_plan
from sweep.planned_work import PlannedWork
from sweep.progress import Progress
from sweep.records import FINAL, SEARCH


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# Seconds per image x pixel trained, and per image x pixel evaluated: an evaluation here costs
# 0.8 of a trained image, not the prior's 1/3, so only a fitted weight prices a final trial right.
R_TRAIN, R_EVAL = 1.0, 0.8
TRAIN = {SEARCH: 10.0, FINAL: 10.0}  # Omniglot's case: the same iterations every epoch, both phases
EVAL = {SEARCH: 4.0, FINAL: 20.0}  # a holdout of the training classes against the whole test split
START_UP = 5.0
CLASSES = {"a": 1.0, "b": 3.0}  # cell b trains on 3x the classes (a class-count ablation): 3x the images an epoch


def seconds(phase: str, start: int, end: int, cell: str = "a", every: int = 2) -> float:
    evals = sum(start < e <= end for e in range(every, end + 1, every))
    return R_TRAIN * CLASSES[cell] * TRAIN[phase] * (end - start) + R_EVAL * EVAL[phase] * evals


def progress(clock: Clock, cells: tuple[str, ...], epochs: int = 6) -> Progress:
    slots = [(phase, c) for phase in (SEARCH, FINAL) for c in cells]
    return Progress({s: epochs for s in slots}, clock=clock, work={s: CLASSES[s[1]] * TRAIN[s[0]] for s in slots},
                    evaluations={s: Evaluations(evaluated_epochs(epochs, 2, 1), EVAL[s[0]]) for s in slots})


def run(p: Progress, clock: Clock, key: str, slot: tuple[str, str], epochs: int = 6, until: int | None = None) -> None:
    """Start `key` now and report its evaluations (every 2 epochs) up to `until` (its end: it ends)."""
    start = clock.now
    p.started(key, key, slot)
    for epoch in range(2, (until or epochs) + 1, 2):
        clock.now = start + START_UP + seconds(slot[0], 0, epoch, slot[1])
        p.evaluated(key, epoch, clock.now - start)
    if until is None:
        p.ended(key, clock.now - start, epochs)


def test_evaluated_epochs_follow_the_trainers_cadence() -> None:
    assert evaluated_epochs(8, 2, 1) == (2, 4, 6, 8)
    assert evaluated_epochs(7, 2, 1) == (2, 4, 6, 7)  # always its last
    assert evaluated_epochs(6, 1, 4) == (4, 5, 6)  # train.eval_from_epoch
    assert evaluated_epochs(2, 1, 1, fits=3) == (1, 2, 3, 4, 5, 6)  # a fold search: k fits in a row
    assert Evaluations((2, 4, 6), 1.0).between(2, 6) == 2


def test_the_weight_of_an_evaluation_is_fitted_from_a_cell_timed_in_both_phases() -> None:
    cells = ("a", "b")
    model = WorkModel({(p, c): TRAIN[p] for p in TRAIN for c in cells},
                      {(p, c): Evaluations((2, 4, 6), EVAL[p]) for p in TRAIN for c in cells})
    search_only = [Span((SEARCH, "a"), seconds(SEARCH, 2, 6), 2, 6, 0.0)]
    assert model.fitted(search_only).kappa == KAPPA_PRIOR  # one proportion: nothing tells the rates apart
    both = search_only + [Span((FINAL, "a"), seconds(FINAL, 2, 4), 2, 4, 1.0)]
    assert model.fitted(both).kappa == pytest.approx(R_EVAL / R_TRAIN)


def test_the_final_phase_is_priced_with_its_evaluations_right_after_the_switch() -> None:
    """Two cells (b trains on 3x a's classes), searched (2 samples each, evaluated on a small
    holdout), then 3 seeds each, evaluated on a test split 5x the holdout. At the switch, once
    the first final trial of cell a has evaluated twice, the weight of an evaluation is fitted
    from a's two phases, and the cell b trials still to come, paced by a's final trial, are priced
    with it: the ETA is what is really left (training work alone, as before, said 30 % too much;
    the prior weight, 13 % too much)."""
    clock = Clock()
    p = progress(clock, ("a", "b"))
    p.phase_started({(SEARCH, "a"): 2, (SEARCH, "b"): 2, (FINAL, "a"): 3, (FINAL, "b"): 3})
    for i in range(2):
        for cell in ("a", "b"):
            run(p, clock, f"s{cell}{i}", (SEARCH, cell))
    p.phase_started({(FINAL, "a"): 3, (FINAL, "b"): 3})
    switch = clock.now
    run(p, clock, "fa0", (FINAL, "a"), until=4)  # one at a time: 3 more of a, then 3 of b
    e = p.eta()
    final_a, final_b = (START_UP + seconds(FINAL, 0, 6, cell) for cell in "ab")
    left = (final_a - (clock.now - switch)) + 2 * final_a + 3 * final_b
    assert not e.extrapolated
    assert e.seconds == pytest.approx(left, rel=1e-6)


def test_a_phase_timed_nowhere_in_both_phases_uses_the_prior_weight() -> None:
    """Before any cell is timed in both phases, an evaluated image x pixel is priced at
    `KAPPA_PRIOR` of a trained one (the estimate is marked extrapolated)."""
    clock = Clock()
    p = progress(clock, ("a",))
    p.phase_started({(SEARCH, "a"): 1, (FINAL, "a"): 1})
    run(p, clock, "s", (SEARCH, "a"))
    e = p.eta()
    rate = seconds(SEARCH, 2, 6) / (TRAIN[SEARCH] * 4 + KAPPA_PRIOR * EVAL[SEARCH] * 2)
    start_up = START_UP + seconds(SEARCH, 0, 2) - rate * (TRAIN[SEARCH] * 2 + KAPPA_PRIOR * EVAL[SEARCH])
    assert e.extrapolated
    assert e.seconds == pytest.approx(start_up + rate * (TRAIN[FINAL] * 6 + KAPPA_PRIOR * EVAL[FINAL] * 3), rel=1e-6)


def test_one_slow_trial_moves_the_pace_by_at_most_its_bound() -> None:
    """Trials at 1 s an epoch, then one at 4 s (a neighbour's burst): the ETA for the trials
    left grows by at most `MAX_STEP` (the pooled pace of the latest two said 2.5x)."""
    clock, slot = Clock(), (FINAL, "c")
    p = Progress({slot: 4}, clock=clock)
    p.phase_started({slot: 10})

    def trial(key: str, per_epoch: float) -> None:
        p.started(key, key, slot)
        start = clock.now
        for epoch in (1, 2, 3, 4):
            clock.now = start + per_epoch * epoch
            p.evaluated(key, epoch, per_epoch * epoch)
        p.ended(key, 4 * per_epoch, 4)

    for i in range(4):
        trial(f"t{i}", 1.0)
    before = p.eta().seconds
    assert before == pytest.approx(6 * 4 * 1.0)
    trial("slow", 4.0)
    after = p.eta().seconds
    assert before * 5 / 6 < after <= before * 5 / 6 * MAX_STEP + 1e-9  # 5 left, not 6


def test_the_pace_weighs_recent_trials_more_when_the_machine_speeds_up_gradually() -> None:
    """Two trials at once, each round 20 % faster than the one before: the pace sits nearer the
    latest round's than an even pool of the latest two rounds."""
    model = WorkModel({}, {})
    spans, now = [], 0.0
    for r, per_epoch in enumerate([2.0, 1.6, 1.28, 1.024]):
        now += 4 * per_epoch
        spans += [Span(("final", "c"), 4 * per_epoch, 0, 4, now) for _ in range(2)]
    latest = spans[-4:]
    even = sum(s.seconds for s in latest) / 16
    weighted = pace(latest, model, now)
    assert 1.024 <= weighted < even


def test_planned_work_counts_each_phases_eval_split(tmp_path) -> None:
    """The quickstart: a search trial evaluates the 3 held-out training digits (544 images), a
    final one the 3 test digits (533), after epochs 2, 4, 6 and 8."""
    planned = PlannedWork.of(load_plan("experiments/quickstart.yaml"))
    for (phase, _), ev in planned.evaluations.items():
        assert ev.epochs == (2, 4, 6, 8)
        assert ev.work == {SEARCH: 544, FINAL: 533}[phase] * 16 ** 2


def test_the_driver_imports_scipy_optimize_only_to_fit_two_kinds_of_trials() -> None:
    """`nnls` fits the evaluation weight from a cell's search and final trials; a grid has none to
    fit, and importing scipy.optimize cost its driver about a second of CPU. A fresh interpreter:
    this process has long imported it."""
    import subprocess
    import sys

    from sweep_testlib import REPO_ROOT

    probe = """
import sys
import sweep.runner, sweep.console
from sweep.pace import Span, WorkModel
from sweep.records import FINAL
model = WorkModel({}, {})
assert model.fitted([Span((FINAL, c), 2.0, 1, 3, 0.0) for c in ("a", "b")]) == model
heavy = [m for m in ("scipy.optimize",) if m in sys.modules]
print(heavy or "ok")
"""
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok", done.stdout


def test_the_plans_figures_make_each_slots_config_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A trial config costs the driver ~2 ms (a deep copy, the overrides, validation): the work of
    an epoch and of an evaluation are read from one config per (phase, cell), made once."""
    import sweep.plan

    plan = load_plan("experiments/quickstart.yaml")
    made = []
    config = sweep.plan.trial_config
    monkeypatch.setattr(sweep.plan, "trial_config", lambda *a, **k: made.append(a[1]) or config(*a, **k))
    planned = PlannedWork.of(plan)
    assert len(made) == len(planned.epochs) == len(planned.work)
