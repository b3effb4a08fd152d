"""How many seeds a decision would take: the seed forecast of a seed policy's comparisons (docs/conclusions.md)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
from scipy import special

from sweep.spec import SeedPolicy
from sweep.stats import ALPHA, spending

POWER = 0.8  # the chance of a decision the seed forecast plans for
FORECAST_CAP = 100_000  # seeds per cell; beyond this the forecast says "more than"
MARGIN, DIFFERENCE, HALF_WIDTH = "margin", "difference", "half-width"  # what a forecast plans for


def last_look_alpha(policy: SeedPolicy, maxes: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """The error rate a policy like `policy` (same start, step, spending) spends at its last look
    when its `max` is each of `maxes` (vectorised `Design.from_policy(...).alphas[-1]`)."""
    m = np.asarray(maxes, dtype=int)
    more = m > policy.start
    before = np.where(more, policy.start + policy.step * ((m - policy.start - 1) // policy.step), 0)  # the look before
    if policy.spending == "bonferroni":
        looks = np.where(more, (m - policy.start - 1) // policy.step + 2, 1)
        return alpha / looks
    return alpha - np.where(more, spending(policy.spending, np.maximum(before, 1) / m, alpha), 0.0)


@dataclass(frozen=True)
class SeedForecast:
    """How many seeds per cell (a policy's `max`, with this policy's start, step and spending) a
    decision would take, from the observed spread of paired differences (docs/conclusions.md)."""

    pairs: int  # paired differences the spread is estimated from
    sd: float  # their standard deviation, raw units
    goal: str  # MARGIN: equivalent within ±target when there is no difference; DIFFERENCE: a true
    #            difference of ±target found better / worse; HALF_WIDTH: the interval within ±target
    target: float  # raw units
    seeds: Optional[int]  # None: more than FORECAST_CAP


def seeds_needed(policy: SeedPolicy, sd: float, goal: str, target: float, power: float = POWER,
                 cap: int = FORECAST_CAP) -> Optional[int]:
    """The smallest `max` M >= start whose last look alone gives the decision with probability
    `power` (normal paired differences of standard deviation `sd`; earlier looks only add to it):

    - MARGIN (equivalence within ±m at no true difference, TOST): (t_M + z_(1-(1-power)/2)) sd / sqrt(M) <= m;
    - DIFFERENCE (a true difference d found better / worse): (t_M + z_power) sd / sqrt(M) <= d;
    - HALF_WIDTH (the interval within ±h, the width rule): t_M sd / sqrt(M) <= h (about half the time);

    t_M = the Student-t quantile at 1 - alpha_M / 2 with M - 1 degrees of freedom, alpha_M the
    last look's share of alpha. Not monotone in M (a `max` just above `start` leaves its last
    look little alpha), so every M is tried. None: more than `cap`."""
    if not (sd >= 0 and target > 0):
        return None
    if sd == 0:
        return policy.start
    z = {MARGIN: special.ndtri(1 - (1 - power) / 2), DIFFERENCE: special.ndtri(power), HALF_WIDTH: 0.0}[goal]
    low = max(policy.start, 2)
    for high in (1024, cap):  # most forecasts are small: the long scan only when needed
        m = np.arange(low, high + 1)
        t = special.stdtrit(m - 1, 1 - last_look_alpha(policy, m) / 2)
        ok = np.flatnonzero((t + z) * sd / np.sqrt(m) <= target)
        if len(ok):
            return int(m[ok[0]])
        low = high + 1
    return None


def forecast(policy: SeedPolicy, diffs: Iterable[float], goals: list[tuple[str, float]]) -> Optional[SeedForecast]:
    """The seed forecast of one comparison (or cell) from its finite paired differences (its
    values): of the `goals` (goal, target) its design has, the one that takes the fewest seeds.
    None: fewer than 2 differences, or no goal."""
    x = np.asarray([d for d in diffs if math.isfinite(d)], dtype=float)
    if len(x) < 2 or not goals:
        return None
    sd = float(x.std(ddof=1))
    found = [SeedForecast(len(x), sd, goal, target, seeds_needed(policy, sd, goal, target)) for goal, target in goals]
    return min(found, key=lambda f: FORECAST_CAP + 1 if f.seeds is None else f.seeds)
