"""What the plan says each (phase, cell) trains and how many of its trials are left: the figures behind the ETA (`sweep.progress`), derived once per session."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Iterable, Optional

import numpy as np

from sweep.pace import Evaluations, Slot, epoch_work, slot_configs, slot_evaluations
from sweep.records import FINAL, TrialRecord

if TYPE_CHECKING:
    from sweep.plan import SweepPlan
    from sweep.sequential import PolicyView


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
    under a seed policy its view (the final phase then counts up to max seeds), and when a trial
    evaluates and what one evaluation embeds."""

    planned: dict[Slot, int]
    epochs: dict[Slot, int]
    work: dict[Slot, float]
    view: Optional["PolicyView"] = None
    evaluations: dict[Slot, Evaluations] = field(default_factory=dict)

    @classmethod
    def of(cls, plan: "SweepPlan", view: Optional["PolicyView"] = None) -> "PlannedWork":
        configs = slot_configs(plan)
        return cls(planned_trials(plan), epochs_per_trial(plan), epoch_work(plan, configs), view,
                   slot_evaluations(plan, configs))
