"""The console's status lines and ETA (`sweep.progress`), driven with a clock the test moves."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from sweep.console import Console
from sweep.plan import load_plan
from sweep.planned_work import epochs_per_trial, expected_final_trials, planned_trials, trials_left
from sweep.progress import Progress
from sweep.records import FINAL, FINISHED, SEARCH, TrialRecord
from sweep.sequential import PolicyView
from sweep_testlib import write_yaml


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(key: str, phase: str = FINAL, cell: str = "c", last_step: int = 0) -> TrialRecord:
    return TrialRecord(trial_id=key, key=key, label=key, phase=phase, cell=cell, seed=0, status=FINISHED,
                       metrics={"recall_at_1": 0.9, "map_at_r": 0.5}, last_step=last_step)


def console_with(clock: Clock, pending: dict, epochs: dict, total: int) -> Console:
    console = Console(total, "recall_at_1", "map_at_r", "holdout_")
    console.progress = Progress(epochs, clock=clock)
    console.phase_started(0, pending, epochs)
    return console


def run_trial(console: Console, clock: Clock, key: str, slot: tuple[str, str], epochs: int, per_epoch: float,
              start: float) -> None:
    """Start `key` at `start` and report each epoch (the clock is not moved)."""
    clock.now = start
    console.trial_started(record(key, *slot), slot)


def etas(text: str) -> list[float]:
    """The durations after `ETA` on each line, in seconds (`1:05`, `8 s`, `~`, `at most`, `expected`)."""
    out = []
    for tail in re.findall(r"ETA (.*)$", text, re.M):
        for m in re.finditer(r"(\d+):(\d\d)|(\d+) s", tail):
            out.append(int(m[1]) * 60 + int(m[2]) if m[1] else int(m[3]))
    return out


def test_two_trials_ending_in_the_same_second_do_not_swing_the_eta(capsys: pytest.CaptureFixture) -> None:
    """Eight 10-epoch trials, two at a time, 3 s an epoch: the pair ends at 30 s, 60 s, ... The
    ETA printed by the first and the second trial of a pair (the same second) agree, and match
    what is left (the former pace `elapsed / ended x left` said 3:30, then 1:30)."""
    clock, slot = Clock(), (FINAL, "c")
    console = console_with(clock, {slot: 8}, {slot: 10}, total=8)
    done = 0
    for pair in range(4):
        start = pair * 30.0
        keys = [f"t{pair}a", f"t{pair}b"]
        for k in keys:
            run_trial(console, clock, k, slot, 10, 3.0, start)
        for epoch in range(1, 11):
            clock.now = start + 3.0 * epoch
            for k in keys:
                console.evaluated(record(k), epoch, 3.0 * epoch)
        printed = []
        for k in keys:
            done += 1
            capsys.readouterr()
            console.ended(record(k, last_step=10), done, 30.0)
            printed.append(capsys.readouterr().out)
        if pair < 3:
            first, second = etas(printed[0])[0], etas(printed[1])[0]
            left = 30.0 * (3 - pair)
            assert max(first, second) / min(first, second) <= 1.5, printed
            assert second == pytest.approx(left, rel=0.05), printed
        else:
            assert "ETA" not in printed[1]  # nothing left


def test_a_status_line_names_the_slowest_running_trial(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:
    clock = Clock()
    slot = (FINAL, "c")
    console = console_with(clock, {slot: 4}, {slot: 8}, total=4)
    run_trial(console, clock, "fast", slot, 8, 1.0, 0.0)
    run_trial(console, clock, "slow", slot, 8, 1.0, 0.0)
    clock.now = 2.0
    console.evaluated(record("fast"), 2, 2.0)
    clock.now = 3.0
    console.evaluated(record("slow"), 1, 3.0)
    clock.now = 6.0
    console.evaluated(record("fast"), 6, 6.0)  # 1 s an epoch: 2 s left
    console.evaluated(record("slow"), 2, 6.0)  # 3 s an epoch: 6 more epochs, 18 s left
    line = console.status_line()
    assert line.startswith("[0/4] ...")
    assert "running 2, pending 2" in line and "slowest slow epoch 2/8 (6 s)" in line
    # work left: 2 + 18 s running, 2 pending x 8 epochs x 1.4 s (the pooled pace between
    # evaluations: 7 s over 5 epochs) = 42.4 s, over 2 at a time
    assert etas(line) == [21]
    # tick() prints it only after STATUS_EVERY_S seconds without a line
    monkeypatch.setattr("sweep.console.STATUS_EVERY_S", 0.0)
    console.tick()
    assert capsys.readouterr().out.strip() == line.strip()
    monkeypatch.setattr("sweep.console.STATUS_EVERY_S", 3600.0)
    console.tick()
    assert capsys.readouterr().out == ""


def test_final_trials_are_paced_by_their_own_phase_once_timed() -> None:
    """Search trials timed at 1 s an epoch; final trials take 2 s: until a final trial has
    a pace (two evaluations), the ETA is the search's pace marked `~`; from then on, its own."""
    clock = Clock()
    epochs = {(SEARCH, "c"): 4, (FINAL, "c"): 4}
    p = Progress(epochs, clock=clock)
    p.phase_started({(SEARCH, "c"): 1, (FINAL, "c"): 2})
    p.started("s", "s", (SEARCH, "c"))
    clock.now = 4.0
    p.evaluated("s", 4, 4.0)
    p.ended("s", 4.0, 4)
    e = p.eta()
    assert e.extrapolated and e.seconds == pytest.approx(2 * 4 * 1.0)  # 2 finals x 4 epochs, one at a time
    p.started("f", "f", (FINAL, "c"))
    clock.now = 6.0
    p.evaluated("f", 1, 2.0)
    assert p.eta().extrapolated  # one evaluation: mostly start-up, no pace yet
    clock.now = 8.0
    p.evaluated("f", 2, 4.0)
    e = p.eta()
    assert not e.extrapolated
    assert e.seconds == pytest.approx((4 * 2.0 - 4.0) + 4 * 2.0)  # the running one's 4 s + one more of 8 s


def test_seed_policy_eta_says_at_most_and_expected(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    sweep = {"grid": {"model.embedding_dim": [8, 16]}, "baseline": {"model.embedding_dim": 8},
             "seeds": {"start": 3, "max": 9, "step": 3, "until": {"decided": True}}}
    plan = load_plan(write_yaml(tmp_path / "p.yaml", sweep))
    spec = plan.spec
    view = PolicyView.of(spec.policy, plan.cells, spec.baseline, spec.metric, spec.equivalence_margin)
    base, other = (c.id for c in plan.cells)

    def finals(diff: float, spread: float) -> list[TrialRecord]:
        out = []
        for s in range(3):
            for cell, v in ((base, 0.80), (other, 0.80 + diff + spread * (s - 1))):
                out.append(TrialRecord(trial_id=f"{cell}{s}", key=f"{cell}/seed={s}", phase=FINAL, cell=cell, seed=s,
                                       status=FINISHED, metrics={"recall_at_1": v}))
        return out

    assert expected_final_trials(view, []) is None  # nothing to draw from before the first look
    # Three seeds, a clear difference with little spread: decided at the first look, nothing more.
    assert expected_final_trials(view, finals(0.05, 0.001)) == {base: 0.0, other: 0.0}
    # No difference at all (large spread): the policy is expected to run (nearly) to its max.
    none = expected_final_trials(view, finals(0.0, 0.05))
    assert 5.0 <= none[base] <= 6.0 and none[base] == none[other]

    left = trials_left(planned_trials(plan), finals(0.0, 0.05))
    assert left == {(FINAL, base): 6, (FINAL, other): 6}
    clock = Clock()
    console = console_with(clock, left, epochs_per_trial(plan), total=18)
    console.progress.at_most, console.progress.expected_final = True, {base: 3.0, other: 3.0}
    slot = (FINAL, base)
    run_trial(console, clock, "r", slot, 2, 1.0, 0.0)
    for epoch in (1, 2):
        clock.now = float(epoch)
        console.evaluated(record("r", cell=base), epoch, float(epoch))
    line = console.status_line()
    assert re.search(r"ETA at most \d+ s, expected \d+ s", line), line
    most, expected = etas(line)
    assert expected < most


def test_a_trials_start_up_is_not_counted_per_epoch() -> None:
    """A trial that spends 60 s starting (a new worker imports torch, builds the data) and then 1 s
    an epoch: the next trial (in the same worker) is estimated at 8 s, not at 8 x 31 s (its first
    evaluation's seconds per epoch)."""
    clock, slot = Clock(), (FINAL, "c")
    p = Progress({slot: 8}, clock=clock)
    p.phase_started({slot: 2})
    p.started("a", "a", slot)
    clock.now = 62.0
    p.evaluated("a", 2, 62.0)
    clock.now = 64.0
    p.evaluated("a", 4, 64.0)
    assert p.eta().seconds == pytest.approx((68 - 64) + 8)


def test_only_a_phases_first_trials_pay_for_new_workers() -> None:
    """Each phase is a new Tune experiment: its first trials start new worker processes (40 s
    here), later ones reuse them (1 s). Trials still to come in a phase already at its
    concurrency are estimated with the reused start-up, measured in the search phase if this
    phase has none yet (the quickstart's ETA at half-way was 55 % too long without this)."""
    clock = Clock()
    search, final = (SEARCH, "c"), (FINAL, "c")
    p = Progress({search: 4, final: 4}, clock=clock)

    def trial(key: str, slot: tuple[str, str], start: float, start_up: float) -> None:
        clock.now = start
        p.started(key, key, slot)
        for epoch in (2, 4):
            clock.now = start + start_up + epoch
            p.evaluated(key, epoch, start_up + epoch)

    p.phase_started({search: 2, final: 3})
    trial("s1", search, 0.0, 40.0)
    p.ended("s1", 44.0, 4)
    trial("s2", search, 44.0, 1.0)  # reused the worker s1 ran in
    p.ended("s2", 5.0, 4)
    p.phase_started({final: 3})
    trial("f1", final, 100.0, 40.0)  # a new worker again
    # f1: 0 s left; two more finals, one at a time, each 1 s start-up + 4 epochs at 1 s
    assert p.eta().seconds == pytest.approx(2 * (1.0 + 4.0))


def test_a_phase_not_timed_yet_is_paced_by_what_its_epochs_train() -> None:
    """Search trials train on a holdout's share of the classes (720 images an epoch on the
    quickstart), final trials on all of them (1,248): at the same seconds per image a final epoch
    takes 1.73x a search epoch, and the extrapolated ETA says so (seconds per epoch said 41 % too
    little at a quarter of the quickstart)."""
    clock = Clock()
    search, final = (SEARCH, "c"), (FINAL, "c")
    p = Progress({search: 4, final: 4}, clock=clock, work={search: 720.0, final: 1248.0})
    p.phase_started({search: 1, final: 2})
    p.started("s", "s", search)
    for epoch in (1, 2, 3, 4):
        clock.now = float(epoch)
        p.evaluated("s", epoch, float(epoch))
    p.ended("s", 4.0, 4)
    e = p.eta()
    assert e.extrapolated
    assert e.seconds == pytest.approx(2 * 4 * 1248 / 720, rel=1e-6)  # 2 finals, one at a time


def test_the_pace_follows_the_latest_trials_when_the_machine_speeds_up() -> None:
    """Six trials at 3 s an epoch while the machine is busy, then six at 1 s once it is not: the
    pace is the latest rounds' (trials running at once x 2), not every trial's since the phase
    began (which said 2 s an epoch: twice what is left)."""
    clock, slot = Clock(), (FINAL, "c")
    p = Progress({slot: 4}, clock=clock)
    p.phase_started({slot: 16})
    for i, per_epoch in enumerate([3.0] * 6 + [1.0] * 6):
        p.started(f"t{i}", f"t{i}", slot)
        start = clock.now
        for epoch in (1, 2, 3, 4):
            clock.now = start + per_epoch * epoch
            p.evaluated(f"t{i}", epoch, per_epoch * epoch)
        p.ended(f"t{i}", 4 * per_epoch, 4)
    assert p.eta().seconds == pytest.approx(4 * 4 * 1.0)  # 4 trials left, one at a time, 4 epochs at 1 s


def test_trials_to_come_in_a_reused_worker_do_not_pay_a_new_workers_start_up() -> None:
    """The phase's first trial spent 40 s starting a new worker, then 1 s an epoch: the two trials
    still to come run in that worker (the phase is at its concurrency) and are estimated at their
    epochs, not at 40 s more each (the quickstart's ETA at its first trial said 8:02 for 3:24)."""
    clock, slot = Clock(), (SEARCH, "c")
    p = Progress({slot: 4}, clock=clock)
    p.phase_started({slot: 3})
    p.started("a", "a", slot)
    for epoch in (2, 4):
        clock.now = 40.0 + epoch
        p.evaluated("a", epoch, 40.0 + epoch)
    p.ended("a", 44.0, 4)
    assert p.eta().seconds == pytest.approx(2 * 4.0)
