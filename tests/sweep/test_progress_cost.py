"""What the ETA costs the driver as a sweep grows (`sweep.progress`): the console asks for it at
every trial's end, once per pending cell, so reading every ended trial per cell made a sweep of
N trials over N/2 cells O(N^3) in the driver (14 of its 47 s of CPU at N = 256)."""
from __future__ import annotations

from sweep.progress import Progress
from sweep.records import FINAL


class Counted(list):
    """A list that counts the items read from it, forwards or backwards."""

    reads = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        for item in super().__iter__():
            Counted.reads += 1
            yield item

    def __reversed__(self):  # type: ignore[no-untyped-def]
        for item in super().__reversed__():
            Counted.reads += 1
            yield item


def test_an_eta_reads_the_latest_trials_not_every_trial_ended() -> None:
    now = [0.0]
    cells = [(FINAL, f"lr={i}") for i in range(400)]
    progress = Progress({slot: 2 for slot in cells}, clock=lambda: now[0])
    progress.phase_started({slot: 2 for slot in cells})
    for i, slot in enumerate(cells[:200]):  # half the cells ran both seeds: 400 trials ended
        for seed in (0, 1):
            key = f"{slot[1]}/s{seed}"
            progress.started(key, key, slot)
            now[0] += 1.0
            progress.evaluated(key, 1, 0.5 + 0.01 * i)
            progress.evaluated(key, 2, 1.0 + 0.01 * i)
            progress.ended(key, 1.0 + 0.01 * i, 2)
    expected = progress.eta()
    assert expected is not None and expected.seconds > 0
    progress._paced, progress._whole = Counted(progress._paced), Counted(progress._whole)
    Counted.reads = 0
    again = progress.eta()
    # 200 pending cells, none timed: each is paced by the phase's latest trials (a few reads each),
    # where reading every ended trial per cell is 200 x 800 reads.
    assert again == expected and Counted.reads <= 200 * 2 * 2 * progress._recent()


def test_an_eta_paces_the_cells_still_to_run_not_every_cell_already_run(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A cell whose trials all started adds no work: pacing it anyway at every trial's end made the
    ETA O(cells run) and a sweep of N trials O(N^2) in the driver (4.5 of 41 s at N = 256)."""
    now = [0.0]
    cells = [(FINAL, f"lr={i}") for i in range(400)]
    progress = Progress({slot: 1 for slot in cells}, clock=lambda: now[0])
    progress.phase_started({slot: 2 for slot in cells})
    for slot in cells[:300]:  # one evaluation per trial, as in bench_sweep_scale: 600 trials ended
        for seed in (0, 1):
            key = f"{slot[1]}/s{seed}"
            progress.started(key, key, slot)
            now[0] += 1.0
            progress.evaluated(key, 1, 0.9)
            progress.ended(key, 0.9, 1)
    expected = progress.eta()
    calls = []
    pace = Progress._pace
    monkeypatch.setattr(Progress, "_pace", lambda self, *a, **k: calls.append(a[0]) or pace(self, *a, **k))
    assert progress.eta() == expected and expected is not None
    assert len(calls) <= 2, f"{len(calls)} paces for one ETA"  # the 100 cells to run share their phase's


def test_an_eta_does_not_recompute_the_start_up_of_every_trial_ended(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The start-up of an ended trial (its first evaluation less its work at its own pace) is the
    same at every ETA while the work model stays: computed once, not per ETA per trial ended."""
    now = [0.0]
    cells = [(FINAL, f"lr={i}") for i in range(200)]
    progress = Progress({slot: 3 for slot in cells}, clock=lambda: now[0])
    progress.phase_started({slot: 2 for slot in cells})
    for i, slot in enumerate(cells[:150]):  # three evaluations per trial: 300 start-ups measured
        for seed in (0, 1):
            key = f"{slot[1]}/s{seed}"
            progress.started(key, key, slot)
            for epoch in (1, 2, 3):
                now[0] += 1.0
                progress.evaluated(key, epoch, epoch * (1.0 + 0.01 * i))
            progress.ended(key, 3.0 + 0.03 * i, 3)
    expected = progress.eta()
    calls = []
    start_up_of = Progress._start_up_of
    monkeypatch.setattr(Progress, "_start_up_of", staticmethod(lambda *a: calls.append(1) or start_up_of(*a)))
    assert progress.eta() == expected and expected is not None
    assert len(calls) <= 2, f"{len(calls)} start-ups computed for one ETA"
