"""How far a running sweep is, and when it will end: the state behind the console's status lines
and ETA (`sweep.console.Console`), fed by the sweep's Tune callback.

The ETA counts work in trial-seconds, never in "trials per wall second": every trial is timed by
its own clock (Tune's `time_total_s` at each evaluation, per epoch), per phase and per cell, so
two trials ending in the same second change the estimate by what they measured, not by a count
(the pace of "seconds since the phase began / trials ended" doubled on the first of two and
halved on the second). The estimate is

    (seconds per epoch x epochs left, summed over the trials not yet started and the unfinished
     part of the running ones) / the concurrency reached, and at least the longest running trial

with seconds per epoch from the trials of the same phase and cell, else of the phase, else of
the other phase (`extrapolated`: final trials often take longer than search trials, which train
on fewer classes and score fewer queries). Under a seed policy the final phase counts every seed
up to `max` ("at most"); `expected` then counts the seeds the policy is expected to run
(`expected_final_trials`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterable, Optional

import numpy as np

from sweep.records import FINAL, TrialRecord

if TYPE_CHECKING:
    from sweep.plan import SweepPlan
    from sweep.sequential import PolicyView

Slot = tuple[str, str]  # (phase, cell)


@dataclass
class Live:
    """A running trial as the driver sees it."""

    label: str
    slot: Slot
    epochs: int  # what it will train
    started: float  # driver clock at its start
    epoch: int = 0  # last evaluated epoch
    trial_s: float = 0.0  # its own clock at that evaluation


@dataclass
class Estimate:
    seconds: float
    extrapolated: bool  # a phase not timed yet, paced by the other phase
    at_most: bool = False  # a seed policy: every seed up to max counted
    expected_s: Optional[float] = None  # a seed policy: the seeds it is expected to run


@dataclass
class Progress:
    """Trials pending (per phase and cell), running and timed, for one sweep session."""

    epochs: dict[Slot, int]  # epochs (x folds) a trial of the slot trains
    clock: Callable[[], float] = time.monotonic
    pending: dict[Slot, int] = field(default_factory=dict)
    live: dict[str, Live] = field(default_factory=dict)
    at_most: bool = False  # final trials counted up to a seed policy's max
    expected_final: Optional[dict[str, float]] = None  # cell -> final trials a policy is expected to add
    _timed: dict[Slot, list[float]] = field(default_factory=dict)  # slot -> [seconds, epochs] of ended trials
    _peak: int = 0

    def phase_started(self, pending: dict[Slot, int]) -> None:
        """What the store says is left (the trials of both phases not ended), at a phase's start."""
        self.pending = {k: v for k, v in pending.items() if v > 0}
        self.live.clear()

    def started(self, key: str, label: str, slot: Slot, epoch: int = 0) -> None:
        if key in self.live:  # a retry, or a trial continued by --resume: its clock restarts
            self.live[key].started, self.live[key].epoch, self.live[key].trial_s = self.clock(), epoch, 0.0
            return
        if self.pending.get(slot):
            self.pending[slot] -= 1
        self.live[key] = Live(label, slot, self.epochs.get(slot, 1), self.clock(), epoch)
        self._peak = max(self._peak, len(self.live))

    def evaluated(self, key: str, epoch: int, trial_s: float) -> None:
        t = self.live.get(key)
        if t is not None and epoch > 0 and trial_s > 0:
            t.epoch, t.trial_s = epoch, trial_s

    def ended(self, key: str, seconds: float, epochs: int) -> None:
        t = self.live.pop(key, None)
        if t is not None and epochs > 0 and math.isfinite(seconds) and seconds > 0:
            timed = self._timed.setdefault(t.slot, [0.0, 0.0])
            timed[0] += seconds
            timed[1] += epochs

    @property
    def running(self) -> int:
        return len(self.live)

    @property
    def waiting(self) -> int:
        return sum(self.pending.values())

    def _rate(self, slot: Slot) -> tuple[Optional[float], bool]:
        """Seconds per epoch for `slot`: its cell's, else its phase's, else any (extrapolated)."""
        sums: dict[Slot, list[float]] = {k: list(v) for k, v in self._timed.items()}
        for t in self.live.values():
            if t.epoch:
                s = sums.setdefault(t.slot, [0.0, 0.0])
                s[0] += t.trial_s
                s[1] += t.epoch

        def pooled(keep: Callable[[Slot], bool]) -> Optional[float]:
            sec = sum(v[0] for k, v in sums.items() if keep(k))
            ep = sum(v[1] for k, v in sums.items() if keep(k))
            return sec / ep if ep else None

        for keep, guessed in ((lambda k: k == slot, False), (lambda k: k[0] == slot[0], False), (lambda k: True, True)):
            rate = pooled(keep)
            if rate is not None:
                return rate, guessed
        return None, False

    def remaining(self, t: Live, now: float) -> Optional[float]:
        """Seconds left of a running trial: its own pace once it evaluated, else its slot's."""
        rate = t.trial_s / t.epoch if t.epoch else self._rate(t.slot)[0]
        return None if rate is None else max(0.0, t.epochs * rate - (now - t.started))

    def slowest(self) -> Optional[tuple[Live, float]]:
        """The running trial expected to end last, with its elapsed seconds."""
        now = self.clock()
        if not self.live:
            return None
        t = max(self.live.values(), key=lambda t: (self.remaining(t, now) or 0.0, now - t.started))
        return t, now - t.started

    def eta(self) -> Optional[Estimate]:
        """Seconds until every trial counted has ended; None before any trial was timed."""
        now = self.clock()
        work, longest, guessed = 0.0, 0.0, False
        for t in self.live.values():
            left = self.remaining(t, now)
            if left is None:
                return None
            work, longest = work + left, max(longest, left)
        per_slot: dict[Slot, float] = {}
        for slot, n in self.pending.items():
            rate, extrapolated = self._rate(slot)
            if rate is None:
                return None
            guessed |= extrapolated
            per_slot[slot] = rate * self.epochs.get(slot, 1)
            work += n * per_slot[slot]
        trials = self.running + self.waiting
        if trials == 0:
            return None
        width = max(1, min(self._peak, trials))
        seconds = max(work / width, longest)
        estimate = Estimate(seconds, guessed, at_most=self.at_most and any(s[0] == FINAL for s in self.pending))
        if estimate.at_most and self.expected_final is not None:
            cut = sum(max(0.0, n - self.expected_final.get(slot[1], n)) * per_slot[slot]
                      for slot, n in self.pending.items() if slot[0] == FINAL)
            left = trials - sum(max(0.0, n - self.expected_final.get(slot[1], n))
                                for slot, n in self.pending.items() if slot[0] == FINAL)
            estimate.expected_s = max((work - cut) / max(1.0, min(self._peak, left)), longest)
        return estimate


def expected_final_trials(view: "PolicyView", records: Iterable[TrialRecord], draws: int = 2000,
                          seed: int = 0) -> Optional[dict[str, float]]:
    """Per cell, the final trials a seed policy is expected to add to what has ended, by simulation:
    each open comparison's remaining seeds drawn from a normal with its observed paired mean and
    spread (a plug-in estimate), the policy's own procedure run on each draw. None before every
    open comparison has two paired values (no spread to draw from)."""
    from sweep.sequential import sequential_test

    records = list(records)
    ended = {(r.cell, r.seed) for r in records if r.phase == FINAL and r.ended}
    design, seeds = view.design, view.seeds
    rng = np.random.default_rng(seed)
    seeds_of: dict[str, float] = {}  # cell -> expected seeds it ends with
    for a in view.assess(records):
        cells = a.quantity.cells
        if a.closed:
            stop = float(a.seeds_run)
        else:
            value = {(r.cell, r.seed): r.value(view.metric) for r in records if r.phase == FINAL and r.finished}
            seen = [value[(a.quantity.cell, s)] - (value[(a.quantity.ref, s)] if a.quantity.ref else 0.0)
                    for s in seeds if all((c, s) in value for c in cells)]
            seen = [v for v in seen if math.isfinite(v)]
            if len(seen) < 2:
                return None
            matrix = np.empty((draws, len(seeds)))
            matrix[:, :len(seen)] = seen
            matrix[:, len(seen):] = rng.normal(np.mean(seen), np.std(seen, ddof=1), (draws, len(seeds) - len(seen)))
            own = a.quantity.ref is None  # a cell compared with nothing: only a width rule adds seeds
            if own and design.ci_half_width is None:
                stop = float(design.looks[0])
            else:
                rule = replace(design, decided=False, margin=None) if own else design
                stopped = np.asarray(design.looks, dtype=float)[sequential_test(rule, matrix).look]
                stop = float(stopped.mean())
        for c in cells:
            seeds_of[c] = max(seeds_of.get(c, 0.0), stop)
    return {c: max(0.0, n - sum((c, s) in ended for s in seeds)) for c, n in seeds_of.items()}


def epochs_per_trial(plan: "SweepPlan") -> dict[Slot, int]:
    """Epochs a trial of each (phase, cell) trains; a search sample with k folds trains k times."""
    from sweep.plan import SEARCH

    base = int(plan.base["train"]["epochs"])
    search = plan.spec.search
    out: dict[Slot, int] = {}
    for c in plan.cells:
        epochs = int(c.overrides.get("train.epochs", base))
        out[(FINAL, c.id)] = epochs
        if search:
            out[(SEARCH, c.id)] = epochs * (search.folds or 1)
    return out


def trials_left(plan: "SweepPlan", records: Iterable[TrialRecord]) -> dict[Slot, int]:
    """Trials of each (phase, cell) not ended yet (search samples cut off are drawn again)."""
    from sweep.plan import SEARCH

    ended: dict[Slot, int] = {}
    for r in records:
        if r.ended:
            ended[(r.phase, r.cell)] = ended.get((r.phase, r.cell), 0) + 1
    search = plan.spec.search
    out: dict[Slot, int] = {}
    for c in plan.cells:
        if search:
            out[(SEARCH, c.id)] = max(0, search.num_samples - ended.get((SEARCH, c.id), 0))
        out[(FINAL, c.id)] = max(0, len(plan.seeds) - ended.get((FINAL, c.id), 0))
    return out
