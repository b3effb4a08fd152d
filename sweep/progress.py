"""How far a running sweep is, and when it will end: the state behind the console's status lines
and ETA (`sweep.console.Console`), fed by the sweep's Tune callback.

The ETA counts work in trial-seconds, never in "trials per wall second": every trial is timed by
its own clock (Tune's `time_total_s` at each evaluation, per epoch), per phase and per cell, so
two trials ending in the same second change the estimate by what they measured, not by a count
(the pace of "seconds since the phase began / trials ended" doubled on the first of two and
halved on the second). The estimate is

    (start-up + a trial's work x seconds per unit of work, summed over the trials not yet
     started, + what is left of the running ones) / the concurrency reached, and at least the
     longest running trial

with a trial's work its epochs' images x pixels (`epoch_work`: a search trial trains on the
holdout's share of the classes) plus its evaluations' (`slot_evaluations`: a final trial
evaluates the test split), added with a fitted weight (`sweep.pace`), and seconds per unit from
the latest trials of the same phase and cell, else of the phase, else of the other phase
(`extrapolated`). A cell's own other phase is not used: with a few trials per cell, which trials
ran side by side moved their times 2x (an Omniglot search trial alone against one beside
another), more than the cells' recipes did. `benchmarks/bench_eta.py`
measures the error against a sweep's real end. Under a seed policy the final phase counts every seed
up to `max` ("at most"); `expected` then counts the seeds the policy is expected to run
(`sweep.planned_work.expected_final_trials`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from sweep.pace import Evaluations, Slot, Span, WorkModel, pace
from sweep.records import FINAL


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

    def span(self) -> Optional[Span]:
        """Its stretch between its first and last evaluation: its pace without its start-up."""
        if self.first is None or self.epoch <= self.first[0]:
            return None
        return Span(self.slot, self.trial_s - self.first[1], self.first[0], self.epoch, self.reported)


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
    for a short and a long trial) plus its work (training and evaluations, `sweep.pace`) at its
    slot's pace; the pace comes from the seconds between a trial's first and last evaluation, so
    start-ups do not inflate it. Start-ups are kept apart for the first trials of a phase (each
    phase is a new Tune experiment: new worker processes, measured 40-45 s on the quickstart under
    load) and the later ones, which reuse a worker (about 1 s): the first trials' start-up counted
    for every trial made the ETA at half the quickstart 55 % too long."""

    epochs: dict[Slot, int]  # epochs (x folds) a trial of the slot trains
    clock: Callable[[], float] = time.monotonic
    work: dict[Slot, float] = field(default_factory=dict)  # what one epoch of the slot trains (`epoch_work`); 1 if unknown
    evaluations: dict[Slot, Evaluations] = field(default_factory=dict)  # when a trial of the slot evaluates, and what
    pending: dict[Slot, int] = field(default_factory=dict)
    live: dict[str, Live] = field(default_factory=dict)
    at_most: bool = False  # final trials counted up to a seed policy's max
    expected_final: Optional[dict[str, float]] = None  # cell -> final trials a policy is expected to add
    _paced: list[Span] = field(default_factory=list)  # between evaluations, as ended
    _whole: list[Span] = field(default_factory=list)  # whole trials, as ended
    _start_ups: dict[tuple[bool, str], list[tuple[Span, float]]] = field(default_factory=dict)  # (fresh, phase) -> (span, its first evaluation's seconds)
    _start_up_values: dict[tuple[bool, str], tuple[WorkModel, list[float]]] = field(default_factory=dict)  # `_ended_start_ups`
    _peak: int = 0
    _started: dict[str, int] = field(default_factory=dict)  # phase -> trials started since the phase began
    _ended_in_phase: int = 0
    # Indexes kept as trials end, so an ETA (asked at every trial's end, once per pending cell)
    # reads the latest trials, not every trial ended per cell: that made a sweep of N trials over
    # N/2 cells O(N^3) in the driver (14 of its 47 s of CPU at N = 256, profiled).
    _of_slot: dict[Slot, tuple[list[Span], list[Span]]] = field(default_factory=dict)  # slot -> (paced, whole)
    _timed_phases: set[str] = field(default_factory=set)
    _pool: dict[Slot, np.ndarray] = field(default_factory=dict)  # `WorkModel.pool` of `_paced`

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
        if (span := t.span()) is not None:
            self._timed(0, span)
            self._base().pool([span], self._pool)
            self._start_ups.setdefault((t.fresh, t.slot[0]), []).append((span, t.first[1]))
        if epochs > 0 and math.isfinite(seconds) and seconds > 0:
            self._timed(1, Span(t.slot, seconds, 0, epochs, self.clock(), whole=True))

    def _timed(self, which: int, span: Span) -> None:
        """`span` into `_paced` (0) or `_whole` (1), and into `_pace`'s index."""
        (self._paced, self._whole)[which].append(span)
        self._of_slot.setdefault(span.slot, ([], []))[which].append(span)
        self._timed_phases.add(span.slot[0])

    def _live_spans(self) -> list[Span]:
        return [s for t in self.live.values() if (s := t.span()) is not None]

    def _base(self) -> WorkModel:
        return WorkModel(self.work, self.evaluations)

    @property
    def running(self) -> int:
        return len(self.live)

    @property
    def waiting(self) -> int:
        return sum(self.pending.values())

    def _model(self) -> WorkModel:
        """The work model, its evaluation weight fitted on every stretch timed so far."""
        base = self._base()
        return base.fit(base.pool(self._live_spans(), dict(self._pool)))

    @staticmethod
    def _start_up_of(span: Span, first_s: float, model: WorkModel) -> float:
        """Seconds before a trial's first epoch began: its first evaluation's time less the work
        up to it at the trial's own pace (data, model, the process: not per epoch)."""
        per_unit = span.seconds / max(model.work(span.slot, span.start, span.end), 1e-12)
        return max(0.0, first_s - per_unit * model.work(span.slot, 0, span.start))

    def _start_up(self, fresh: bool, phase: str, model: WorkModel) -> float:
        """Median start-up of trials like it (new worker or not; its phase, else any phase); a new
        worker's, before one was measured, that of a reused one; 0 before any was measured. A
        reused worker never takes a new one's (imports, data): at the quickstart's first trial
        that charged 40 s to each trial still to come, and its ETA was 2.4x what was left."""
        live: dict[tuple[bool, str], list[float]] = {}
        for t in self.live.values():
            if (span := t.span()) is not None:
                live.setdefault((t.fresh, t.slot[0]), []).append(self._start_up_of(span, t.first[1], model))
        keys = [*self._start_ups, *(k for k in live if k not in self._start_ups)]
        for keep in (lambda k: k == (fresh, phase), lambda k: k[0] == fresh, lambda k: fresh):
            values: list[float] = []
            for k in filter(keep, keys):
                values += self._ended_start_ups(k, model) if k in self._start_ups else []
                values += live.get(k, [])
            if values:
                return float(np.median(values))  # the same median in any order
        return 0.0

    def _ended_start_ups(self, key: tuple[bool, str], model: WorkModel) -> list[float]:
        """`_start_up_of` each ended trial of `key` under `model`, kept and extended as trials end
        while the model's figures stay: computing each anew at every ETA made one ETA O(trials
        ended), a sweep O(N^2)."""
        spans, cached = self._start_ups[key], self._start_up_values.get(key)
        if cached is None or not (cached[0].train is model.train and cached[0].evaluations is model.evaluations
                                  and cached[0].kappa == model.kappa):
            cached = self._start_up_values[key] = (model, [])
        values = cached[1]
        values += [self._start_up_of(s, f, model) for s, f in spans[len(values):]]
        return values

    def _pace(self, slot: Slot, model: WorkModel,
              live: Optional[list[Span]] = None) -> tuple[Optional[float], bool]:
        """(seconds per unit of work, extrapolated) for a trial of `slot`: from its slot's trials,
        else its phase's, else any, the latest `_recent()` of them (`sweep.pace.pace`: a machine whose load changes changes every
        trial's pace; the first trials' pace kept for the whole phase made the quickstart's ETA
        20-30 % long once other work on the machine ended); paces between evaluations first, else
        ended trials' whole time (start-up included: a trial that evaluates once, at its end).
        Work counts training and evaluations (`sweep.pace`), so a search trial on part of the
        training classes, evaluated on a holdout, paces a final trial on all of them, evaluated on
        the test split. None before a trial evaluated twice or ended: a first evaluation's time is
        mostly start-up (a fresh worker imports torch), and an ETA from it came out 10x too long."""
        live = self._live_spans() if live is None else live
        now, n = self.clock(), self._recent()
        paced, whole = self._of_slot.get(slot, ([], []))
        own = ((paced, [s for s in live if s.slot == slot]), (whole,))
        everyone = ((self._paced, live), (self._whole,))
        phase = slot[0] in self._timed_phases or any(s.slot[0] == slot[0] for s in live)
        for found, keep, guessed, lists in ((True, lambda k: k == slot, False, own),
                                            (phase, lambda k: k[0] == slot[0], False, everyone),
                                            (True, lambda k: True, True, everyone)):
            if not found:  # no trial of the phase timed: no scan of all the others to learn that
                continue
            for parts in lists:
                if (rate := pace(_latest(parts, keep, n), model, now)) is not None:
                    return rate, guessed
        return None, False

    def _recent(self) -> int:
        """How many of the latest timed trials set a pace: two rounds of the trials running at once."""
        return 2 * max(1, self._peak)

    def remaining(self, t: Live, now: float, model: Optional[WorkModel] = None) -> Optional[float]:
        """Seconds left of a running trial: by its own pace once it has one, else its slot's."""
        model = model or self._model()
        span = t.span()
        if span is not None:
            per_unit = span.seconds / max(model.work(t.slot, span.start, span.end), 1e-12)
            total = t.first[1] + per_unit * model.work(t.slot, t.first[0], t.epochs)
        else:
            rate, _ = self._pace(t.slot, model)
            if rate is None:
                return None
            total = self._start_up(t.fresh, t.slot[0], model) + rate * model.work(t.slot, 0, t.epochs)
        ran = t.trial_s + (now - t.reported) if t.epoch else now - t.started
        return max(0.0, total - ran)

    def slowest(self) -> Optional[tuple[Live, float]]:
        """The running trial expected to end last, with its elapsed seconds."""
        now = self.clock()
        if not self.live:
            return None
        model = self._model()
        t = max(self.live.values(), key=lambda t: (self.remaining(t, now, model) or 0.0, now - t.started))
        return t, now - t.started

    def eta(self) -> Optional[Estimate]:
        """Seconds until every trial counted has ended; None before any trial was timed."""
        now, model = self.clock(), self._model()
        work, longest, guessed = 0.0, 0.0, False
        for t in self.live.values():
            left = self.remaining(t, now, model)
            if left is None:
                return None
            work, longest = work + left, max(longest, left)
        per_slot: dict[Slot, float] = {}
        live, start_ups = self._live_spans(), {}

        def start_up(fresh: bool, phase: str) -> float:  # once per call: each reads every trial ended
            if (fresh, phase) not in start_ups:
                start_ups[fresh, phase] = self._start_up(fresh, phase, model)
            return start_ups[fresh, phase]

        # New workers for the first trials of a phase not begun, or not yet at its concurrency.
        new_workers = {slot[0]: max(0, self._peak - self._started.get(slot[0], 0)) for slot in self.pending}
        # A cell with no trial timed is paced by its phase's: asked once per phase, not per such cell.
        live_slots, untimed = {s.slot for s in live}, {}
        for slot, n in self.pending.items():
            if not n and self._of_slot.get(slot, ((), ()))[1] and self.work.get(slot, 1.0) > 0:
                # Every trial of it started: it adds no work, and its own ended trials (finite
                # times, positive work) give it a pace, not extrapolated. Pacing each such cell
                # anyway made every ETA O(cells ended), a sweep O(N^2) (4.5 of 41 s at N = 256).
                continue
            if slot in self._of_slot or slot in live_slots:
                rate, extrapolated = self._pace(slot, model, live)
            else:
                if slot[0] not in untimed:
                    untimed[slot[0]] = self._pace(slot, model, live)
                rate, extrapolated = untimed[slot[0]]
            if rate is None:
                return None
            guessed |= extrapolated
            fresh = min(n, new_workers[slot[0]])
            new_workers[slot[0]] -= fresh
            reused = start_up(False, slot[0])
            per_slot[slot] = reused + rate * model.work(slot, 0, self.epochs.get(slot, 1))
            work += n * per_slot[slot] + fresh * (start_up(True, slot[0]) - reused)
        trials = self.running + self.waiting
        if trials == 0:
            return None
        width = max(1, min(self._peak, trials))
        estimate = Estimate(max(work / width, longest), guessed,
                            at_most=self.at_most and any(s[0] == FINAL for s in self.pending))
        if estimate.at_most and self.expected_final is not None:
            cut = {slot: max(0.0, n - self.expected_final.get(slot[1], n))
                   for slot, n in self.pending.items() if slot[0] == FINAL}
            left = trials - sum(cut.values())
            estimate.expected_s = max((work - sum(n * per_slot[s] for s, n in cut.items() if n))
                                      / max(1.0, min(self._peak, left)), longest)
        return estimate


def _latest(parts: tuple[list[Span], ...], keep: Callable[[Slot], bool], n: int) -> list[Span]:
    """The last `n` spans of `parts` (in order) whose slot `keep` takes, oldest first: read from
    the end, so an ETA costs the latest trials, not all of them."""
    out: list[Span] = []
    for part in reversed(parts):
        for s in reversed(part):
            if len(out) == n:
                return out[::-1]
            if keep(s.slot):
                out.append(s)
    return out[::-1]
