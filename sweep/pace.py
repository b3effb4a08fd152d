"""A trial's work, and seconds per unit of it from timed stretches of trials, for the ETA (`sweep.progress`).

A trial's work is its training (an epoch's images x pixels, `epoch_work`) plus its evaluations
(the eval split's images x pixels each time it evaluates, `slot_evaluations`), the evaluations
weighed by `kappa`: the seconds an evaluated image x pixel takes against a trained one.
Evaluation does not scale with epochs, and a final trial evaluates the test split where a search
trial evaluates a holdout (Omniglot: 1,320 against 560 images), so training work alone priced a
final trial from the search's pace too low where evaluation weighs. `kappa` is fitted from the
trials of a cell whose kinds train and evaluate in different proportions (its search and its
final trials); before two such kinds are timed it is `KAPPA_PRIOR`.

A pace is pooled over the latest two rounds of timed stretches (a machine whose load changes
changes every trial's pace), the recent ones weighing more (the weight halves every typical
stretch of age), and no one stretch moves it by more than `MAX_STEP`: a single slow or fast trial
is news, not a new machine.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Optional

import numpy as np

if TYPE_CHECKING:
    from dml_core.config import ExperimentConfig
    from sweep.plan import SweepPlan

Slot = tuple[str, str]  # (phase, cell)

# An evaluated image x pixel against a trained one, until trials tell them apart: one forward
# pass without gradients against a forward and a backward (about two forwards). Measured on 1
# thread (`Trainer.evaluate` against `Trainer.train_epoch`, per image x pixel, load 7-14): 0.17 on
# the quickstart, 0.57 on Omniglot (its k-NN search and clustering weigh more).
KAPPA_PRIOR = 1 / 3
MAX_STEP = 1.5  # the most one timed stretch may move a pace (either way)
_DISTINCT = 1.2  # eval-to-train proportions this far apart tell the two rates apart


@dataclass(frozen=True)
class Evaluations:
    """When a trial of a slot evaluates and what one evaluation embeds."""

    epochs: tuple[int, ...]  # the epochs it evaluates after, in the trial's own count
    work: float  # images x pixels of one evaluation; 0 where unknown

    def between(self, start: int, end: int) -> int:
        """Evaluations after epoch `start`, up to and including epoch `end`."""
        return sum(start < e <= end for e in self.epochs)


def evaluated_epochs(epochs: int, every: int, first: int, fits: int = 1) -> tuple[int, ...]:
    """The epochs a trial evaluates after (`train.eval_every`, `train.eval_from_epoch`, always its
    last), `fits` fits one after the other (a fold search sample)."""
    one = [e for e in range(1, epochs + 1) if e == epochs or (e % every == 0 and e >= first)]
    return tuple(k * epochs + e for k in range(fits) for e in one)


@dataclass(frozen=True)
class Span:
    """A timed stretch of one trial: epochs `start` to `end` in `seconds`, measured at driver time
    `at` (`start` 0 and `whole`: the whole trial, its start-up included)."""

    slot: Slot
    seconds: float
    start: int
    end: int
    at: float
    whole: bool = False


@dataclass(frozen=True)
class WorkModel:
    """What a stretch of a trial of each slot trains and evaluates, and `kappa` to add them."""

    train: dict[Slot, float]  # an epoch's images x pixels; 1 where unknown
    evaluations: dict[Slot, Evaluations]
    kappa: float = KAPPA_PRIOR

    def parts(self, slot: Slot, start: int, end: int) -> tuple[float, float]:
        """(training, evaluation) work of epochs `start` to `end` of a trial of `slot`."""
        ev = self.evaluations.get(slot)
        return self.train.get(slot, 1.0) * (end - start), (ev.work * ev.between(start, end) if ev else 0.0)

    def work(self, slot: Slot, start: int, end: int) -> float:
        train, evaluation = self.parts(slot, start, end)
        return train + self.kappa * evaluation

    def fitted(self, spans: Iterable[Span]) -> "WorkModel":
        """This model with `kappa` fitted on `spans` (between evaluations): per cell whose slots
        train and evaluate in distinct proportions, the non-negative least-squares rates of its
        slots' pooled stretches, each relative to its seconds; the median over such cells. Kept
        where no cell has two such slots, or a fit gives no training rate."""
        return self.fit(self.pool(spans, {}))

    def pool(self, spans: Iterable[Span], pooled: dict[Slot, np.ndarray]) -> dict[Slot, np.ndarray]:
        """`pooled` (slot -> seconds, training, evaluation) with `spans` between evaluations added:
        what `fit` reads, kept as trials end so the driver does not re-read every trial per ETA."""
        for s in spans:
            if not s.whole and s.seconds > 0:
                pooled[s.slot] = pooled.get(s.slot, np.zeros(3)) + (s.seconds, *self.parts(s.slot, s.start, s.end))
        return pooled

    def fit(self, pooled: dict[Slot, np.ndarray]) -> "WorkModel":
        """This model with `kappa` fitted on `pool`'s sums (see `fitted`)."""
        by_cell: dict[str, list[np.ndarray]] = {}
        for slot, v in pooled.items():
            if v[1] > 0:
                by_cell.setdefault(slot[1], []).append(v)
        kappas = []
        for rows in by_cell.values():
            ratios = sorted(v[2] / v[1] for v in rows)
            if len(rows) < 2 or ratios[-1] <= 0 or ratios[-1] < _DISTINCT * ratios[0]:
                continue
            from scipy.optimize import nnls  # late: scipy.optimize costs the driver ~1 s to import, and a grid never fits

            a = np.array([[v[1] / v[0], v[2] / v[0]] for v in rows])
            (rate_train, rate_eval), _ = nnls(a, np.ones(len(rows)))
            if rate_train > 0:
                kappas.append(rate_eval / rate_train)
        if not kappas:
            return self
        return WorkModel(self.train, self.evaluations, float(np.median(kappas)))


def pace(spans: list[Span], model: WorkModel, now: float) -> Optional[float]:
    """Seconds per unit of work over `spans` (oldest first): pooled with weights that halve every
    typical stretch of age (the median stretch's seconds), each stretch in turn moving the pace
    by at most `MAX_STEP`. None without work."""
    timed = [(s, model.work(s.slot, s.start, s.end)) for s in spans]
    timed = [(s, w) for s, w in timed if w > 0 and math.isfinite(s.seconds)]
    if not timed:
        return None
    half = max(1.0, float(np.median([s.seconds for s, _ in timed])))
    weights = [0.5 ** (max(0.0, now - s.at) / half) for s, _ in timed]
    rate, seconds, work = None, 0.0, 0.0
    for weight, (s, w) in zip(weights, timed):
        seconds, work = seconds + weight * s.seconds, work + weight * w
        pooled = seconds / work
        rate = pooled if rate is None else min(max(pooled, rate / MAX_STEP), rate * MAX_STEP)
    return rate


def slot_configs(plan: "SweepPlan") -> dict[Slot, "ExperimentConfig"]:
    """The config of a trial of each (phase, cell): its first seed, a search sample at the base
    values. Made once for `epoch_work` and `slot_evaluations` (about 2 ms of driver CPU each)."""
    from sweep.plan import trial_config

    trials = {(t.phase, t.cell): t for t in reversed(plan.final_trials())}
    if plan.spec.search:
        trials |= {(t.phase, t.cell): t for t in map(plan.search_trial, plan.cells)}
    return {slot: trial_config(plan.base, trial, None, plan.source) for slot, trial in trials.items()}


def epoch_work(plan: "SweepPlan", configs: Optional[dict[Slot, "ExperimentConfig"]] = None) -> dict[Slot, float]:
    """What one epoch of a trial of each (phase, cell) trains, in images x pixels: a search trial
    on a holdout's share of the training classes trains fewer images an epoch than a final one
    (the quickstart: 720 against 1,248). A slot whose split cannot be counted here is left out
    (its epochs then weigh 1)."""
    from sweep.forecast import iterations_per_epoch

    out: dict[Slot, float] = {}
    for slot, cfg in (configs if configs is not None else slot_configs(plan)).items():
        try:
            out[slot] = float(iterations_per_epoch(cfg) * cfg.data.batch.size * cfg.data.image_size ** 2)
        except (ValueError, OSError):
            continue
    return out


def slot_evaluations(plan: "SweepPlan", configs: Optional[dict[Slot, "ExperimentConfig"]] = None) -> dict[Slot, Evaluations]:
    """When a trial of each (phase, cell) evaluates and what one evaluation embeds, in images x
    pixels: a search trial its holdout's (or fold's) classes, a final one the test split (the
    quickstart: 544 against 533 images; Omniglot's test split weighs half its training epoch).
    An eval split that cannot be counted here weighs 0 (evaluations then cost nothing extra)."""
    from dml_core.data import select_splits

    sizes: dict[str, int] = {}  # data selection -> eval images: the cells of a sweep share one read
    out: dict[Slot, Evaluations] = {}
    for slot, cfg in (configs if configs is not None else slot_configs(plan)).items():
        train, key = cfg.train, json.dumps(cfg.data.selection(), sort_keys=True)
        if key not in sizes:
            try:
                sizes[key] = sum(len(split) for split in select_splits(cfg.data).eval_splits().values())
            except (ValueError, OSError):
                sizes[key] = 0
        epochs = evaluated_epochs(train.epochs, train.eval_every, train.eval_from_epoch, cfg.data.folds or 1)
        out[slot] = Evaluations(epochs, float(sizes[key] * cfg.data.image_size ** 2))
    return out
