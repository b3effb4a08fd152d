"""How far a running sweep is, and when it will end: the state behind the console's status lines
and ETA (`sweep.console.Console`), fed by the sweep's Tune callback.

The ETA counts work in trial-seconds, never in "trials per wall second": every trial is timed by
its own clock (Tune's `time_total_s` at each evaluation, per epoch), per phase and per cell, so
two trials ending in the same second change the estimate by what they measured, not by a count
(the pace of "seconds since the phase began / trials ended" doubled on the first of two and
halved on the second). The estimate is

    (start-up + epochs x work per epoch x seconds per unit of work, summed over the trials not yet
     started, + what is left of the running ones) / the concurrency reached, and at least the
     longest running trial

with work per epoch an epoch's images x pixels (`epoch_work`: a search trial trains on the
holdout's share of the classes) and seconds per unit from the latest trials of the same phase and
cell, else of the phase, else of the other phase (`extrapolated`). `benchmarks/bench_eta.py`
measures the error against a sweep's real end. Under a seed policy the final phase counts every seed
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
    reported: float = 0.0  # driver clock at that evaluation
    first: Optional[tuple[int, float]] = None  # (epoch, trial_s) of its first evaluation this attempt
    fresh: bool = True  # started before any trial of its phase ended: in a new worker process

    def pace(self) -> Optional[tuple[float, int]]:
        """(seconds, epochs) between its first and last evaluation: its pace without its start-up."""
        if self.first is None or self.epoch <= self.first[0]:
            return None
        return self.trial_s - self.first[1], self.epoch - self.first[0]

    def start_up(self) -> Optional[float]:
        """Seconds before its first epoch began (data, model, the process): not per epoch."""
        pace = self.pace()
        if pace is None:
            return None
        return max(0.0, self.first[1] - self.first[0] * pace[0] / pace[1])


@dataclass
class Estimate:
    seconds: float
    extrapolated: bool  # a phase not timed yet, paced by the other phase
    at_most: bool = False  # a seed policy: every seed up to max counted
    expected_s: Optional[float] = None  # a seed policy: the seeds it is expected to run


@dataclass
class Progress:
    """Trials pending (per phase and cell), running and timed, for one sweep session.

    A trial's time is its start-up (data, model, and in a new worker process the imports: the same
    for a short and a long trial) plus its epochs at its slot's pace; the pace comes from the
    seconds between a trial's first and last evaluation, so start-ups do not inflate it. Start-ups
    are kept apart for the first trials of a phase (each phase is a new Tune experiment: new worker
    processes, measured 40-45 s on the quickstart under load) and the later ones, which reuse a
    worker (about 1 s): the first trials' start-up counted for every trial made the ETA at half
    the quickstart 55 % too long."""

    epochs: dict[Slot, int]  # epochs (x folds) a trial of the slot trains
    clock: Callable[[], float] = time.monotonic
    work: dict[Slot, float] = field(default_factory=dict)  # what one epoch of the slot trains (`epoch_work`); 1 if unknown
    pending: dict[Slot, int] = field(default_factory=dict)
    live: dict[str, Live] = field(default_factory=dict)
    at_most: bool = False  # final trials counted up to a seed policy's max
    expected_final: Optional[dict[str, float]] = None  # cell -> final trials a policy is expected to add
    _paced: list[tuple[Slot, float, float]] = field(default_factory=list)  # (slot, seconds, work) between evaluations, as ended
    _whole: list[tuple[Slot, float, float]] = field(default_factory=list)  # (slot, seconds, work) of whole trials, as ended
    _start_ups: dict[tuple[bool, str], list[float]] = field(default_factory=dict)  # (fresh, phase) -> measured
    _peak: int = 0
    _started: dict[str, int] = field(default_factory=dict)  # phase -> trials started since the phase began
    _ended_in_phase: int = 0
    # `_pace`'s index: each slot's entries of `_paced` and `_whole`, and the phases with any.
    _of_slot: dict[Slot, tuple[list[tuple[Slot, float, float]], list[tuple[Slot, float, float]]]] = field(default_factory=dict)
    _timed_phases: set[str] = field(default_factory=set)

    def phase_started(self, pending: dict[Slot, int]) -> None:
        """What the store says is left (the trials of both phases not ended), at a phase's start."""
        self.pending = {k: v for k, v in pending.items() if v > 0}
        self.live.clear()
        self._started.clear()
        self._ended_in_phase = 0

    def started(self, key: str, label: str, slot: Slot, epoch: int = 0) -> None:
        now = self.clock()
        if key in self.live:  # a retry, or a trial continued by --resume: its clock restarts
            t = self.live[key]
            t.started, t.reported, t.epoch, t.trial_s, t.first = now, now, epoch, 0.0, None
            return
        if self.pending.get(slot):
            self.pending[slot] -= 1
        self._started[slot[0]] = self._started.get(slot[0], 0) + 1
        self.live[key] = Live(label, slot, self.epochs.get(slot, 1), now, epoch, reported=now,
                              fresh=self._ended_in_phase == 0)
        self._peak = max(self._peak, len(self.live))

    def evaluated(self, key: str, epoch: int, trial_s: float) -> None:
        t = self.live.get(key)
        if t is None or epoch <= t.epoch or trial_s <= 0:
            return
        if t.first is None:
            t.first = (epoch, trial_s)
        t.epoch, t.trial_s, t.reported = epoch, trial_s, self.clock()

    def ended(self, key: str, seconds: float, epochs: int) -> None:
        t = self.live.pop(key, None)
        if t is None:
            return
        self._ended_in_phase += 1
        if (pace := t.pace()) is not None:
            self._timed(0, (t.slot, pace[0], pace[1] * self._work(t.slot)))
            self._start_ups.setdefault((t.fresh, t.slot[0]), []).append(t.start_up())
        if epochs > 0 and math.isfinite(seconds) and seconds > 0:
            self._timed(1, (t.slot, seconds, epochs * self._work(t.slot)))

    def _timed(self, which: int, entry: tuple[Slot, float, float]) -> None:
        """`entry` into `_paced` (0) or `_whole` (1), and into `_pace`'s index."""
        (self._paced, self._whole)[which].append(entry)
        self._of_slot.setdefault(entry[0], ([], []))[which].append(entry)
        self._timed_phases.add(entry[0][0])

    @property
    def running(self) -> int:
        return len(self.live)

    @property
    def waiting(self) -> int:
        return sum(self.pending.values())

    def _start_up(self, fresh: bool, phase: str) -> float:
        """Median start-up of trials like it (new worker or not; its phase, else any phase); a new
        worker's, before one was measured, that of a reused one; 0 before any was measured. A
        reused worker never takes a new one's (imports, data): at the quickstart's first trial
        that charged 40 s to each trial still to come, and its ETA was 2.4x what was left."""
        measured: dict[tuple[bool, str], list[float]] = {k: list(v) for k, v in self._start_ups.items()}
        for t in self.live.values():
            if (s := t.start_up()) is not None:
                measured.setdefault((t.fresh, t.slot[0]), []).append(s)
        for keep in (lambda k: k == (fresh, phase), lambda k: k[0] == fresh, lambda k: fresh):
            values = [v for k, vs in measured.items() if keep(k) for v in vs]
            if values:
                return float(np.median(values))
        return 0.0

    def _work(self, slot: Slot) -> float:
        return self.work.get(slot, 1.0)

    def _pace(self, slot: Slot) -> tuple[Optional[float], bool]:
        """(seconds per unit of work, extrapolated) for a trial of `slot`: from its cell's trials,
        else its phase's, else any, the latest `_recent()` of them (a machine whose load changes
        changes every trial's pace: the first trials' pace kept for the whole phase made the
        quickstart's ETA 20-30 % long once other work on the machine ended); paces between
        evaluations first, else ended trials' whole time (start-up included: a trial that
        evaluates once, at its end). Work is an epoch's images x pixels (`epoch_work`), so a
        search trial on part of the training classes paces a final trial on all of them (seconds
        per epoch said 41 % too little there). None before a trial evaluated twice or ended: a
        first evaluation's time is mostly start-up (a fresh worker imports torch), and an ETA
        from it came out 10x too long."""
        live = [(t.slot, pace[0], pace[1] * self._work(t.slot))  # one evaluation alone is mostly start-up: no pace from it
                for t in self.live.values() if (pace := t.pace()) is not None]
        # The ETA asks once per pending cell: reading every trial ended for each made it O(trials x
        # cells) per trial. A cell's own trials come from the index; a phase's are the latest ones.
        paced, whole = self._of_slot.get(slot, ([], []))
        own = ((paced, live), (whole,))
        everyone = ((self._paced, live), (self._whole,))
        phase = slot[0] in self._timed_phases or any(k[0] == slot[0] for k, _, _ in live)
        for found, (keep, guessed), lists in ((True, (lambda k: k == slot, False), own),
                                              (phase, (lambda k: k[0] == slot[0], False), everyone),
                                              (True, (lambda k: True, True), everyone)):
            if not found:  # no trial of the phase timed: no scan of all the others to learn it
                continue
            for timed in lists:
                rate = _pooled(_latest(timed, keep, self._recent()))
                if rate is not None:
                    return rate, guessed
        return None, False

    def _recent(self) -> int:
        """How many of the latest timed trials set a pace: two rounds of the trials running at once."""
        return 2 * max(1, self._peak)

    def remaining(self, t: Live, now: float) -> Optional[float]:
        """Seconds left of a running trial: by its own pace once it has one, else its slot's."""
        pace = t.pace()
        if pace is not None:
            total = t.first[1] + (t.epochs - t.first[0]) * pace[0] / pace[1]
        else:
            rate, _ = self._pace(t.slot)
            if rate is None:
                return None
            total = self._start_up(t.fresh, t.slot[0]) + t.epochs * self._work(t.slot) * rate
        ran = t.trial_s + (now - t.reported) if t.epoch else now - t.started
        return max(0.0, total - ran)

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
        start_ups: dict[tuple[bool, str], float] = {}  # once per call: each one reads every trial ended

        def start_up(fresh: bool, phase: str) -> float:
            if (fresh, phase) not in start_ups:
                start_ups[fresh, phase] = self._start_up(fresh, phase)
            return start_ups[fresh, phase]

        # New workers for the first trials of a phase not begun, or not yet at its concurrency.
        new_workers = {slot[0]: max(0, self._peak - self._started.get(slot[0], 0)) for slot in self.pending}
        # A cell with no trial timed is paced by its phase's: asked once per phase, not per such cell.
        timed = self._of_slot.keys() | {t.slot for t in self.live.values() if t.pace() is not None}
        untimed: dict[str, tuple[Optional[float], bool]] = {}
        for slot, n in self.pending.items():
            if slot in timed:
                rate, extrapolated = self._pace(slot)
            else:
                rate, extrapolated = untimed[slot[0]] if slot[0] in untimed else untimed.setdefault(slot[0], self._pace(slot))
            if rate is None:
                return None
            guessed |= extrapolated
            fresh = min(n, new_workers[slot[0]])
            new_workers[slot[0]] -= fresh
            per_slot[slot] = start_up(False, slot[0]) + rate * self.epochs.get(slot, 1) * self._work(slot)
            work += n * per_slot[slot] + fresh * (start_up(True, slot[0]) - start_up(False, slot[0]))
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


def _latest(parts: tuple[list[tuple[Slot, float, float]], ...], keep: Callable[[Slot], bool],
            n: int) -> list[tuple[float, float]]:
    """The last `n` (seconds, work) of `parts` (in order) whose slot `keep` takes, in their order:
    read from the end, so an ETA per trial ended costs the latest trials, not all of them."""
    out: list[tuple[float, float]] = []
    for part in reversed(parts):
        for k, s, w in reversed(part):
            if len(out) == n:
                return out[::-1]
            if keep(k):
                out.append((s, w))
    return out[::-1]


def _pooled(timed: list[tuple[float, float]]) -> Optional[float]:
    """Seconds per unit of work over (seconds, work) pairs."""
    work = sum(w for _, w in timed)
    return sum(s for s, _ in timed) / work if work else None


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


def epoch_work(plan: "SweepPlan") -> dict[Slot, float]:
    """What one epoch of a trial of each (phase, cell) trains, in images x pixels: a search trial
    on a holdout's share of the training classes trains fewer images an epoch than a final one
    (the quickstart: 720 against 1,248). A slot whose split cannot be counted here is left out
    (its epochs then weigh 1)."""
    from sweep.forecast import iterations_per_epoch
    from sweep.plan import trial_config

    trials = {(t.phase, t.cell): t for t in reversed(plan.final_trials())}
    if plan.spec.search:
        trials |= {(t.phase, t.cell): t for t in map(plan.search_trial, plan.cells)}
    out: dict[Slot, float] = {}
    for slot, trial in trials.items():
        cfg = trial_config(plan.base, trial, None, plan.source)
        try:
            out[slot] = float(iterations_per_epoch(cfg) * cfg.data.batch.size * cfg.data.image_size ** 2)
        except (ValueError, OSError):
            continue
    return out


def planned_trials(plan: "SweepPlan") -> dict[Slot, int]:
    """Trials each (phase, cell) plans: its search samples, its seeds (a seed policy's max)."""
    from sweep.plan import SEARCH

    search = plan.spec.search
    out: dict[Slot, int] = {}
    for c in plan.cells:
        if search:
            out[(SEARCH, c.id)] = search.num_samples
        out[(FINAL, c.id)] = len(plan.seeds)
    return out


def trials_left(planned: dict[Slot, int], records: Iterable[TrialRecord]) -> dict[Slot, int]:
    """Trials of each (phase, cell) of `planned` not ended yet (search samples cut off are drawn again)."""
    ended: dict[Slot, int] = {}
    for r in records:
        if r.ended:
            ended[(r.phase, r.cell)] = ended.get((r.phase, r.cell), 0) + 1
    return {slot: max(0, n - ended.get(slot, 0)) for slot, n in planned.items()}


@dataclass(frozen=True)
class PlannedWork:
    """What the plan says each (phase, cell) trains, derived once per session so the Tune callback
    needs the figures, not the plan: trials planned, epochs a trial trains, what one epoch trains,
    and under a seed policy its view (the final phase then counts up to max seeds)."""

    planned: dict[Slot, int]
    epochs: dict[Slot, int]
    work: dict[Slot, float]
    view: Optional["PolicyView"] = None

    @classmethod
    def of(cls, plan: "SweepPlan", view: Optional["PolicyView"] = None) -> "PlannedWork":
        return cls(planned_trials(plan), epochs_per_trial(plan), epoch_work(plan), view)
