"""Seeds that stop when the answer is clear: a group-sequential procedure for a seed policy.

A seed policy (`sweep.seeds: {start, max, step, until}`, `sweep.spec.SeedPolicy`) runs seeds in
rounds. At each planned look (`start`, `start + step`, ..., `max` seeds per cell) every open
comparison with its baseline gets an interval, and stops getting seeds when its rule is met:

- `until: decided`: the interval excludes 0 (better / worse) or, with
  `sweep.equivalence_margin` m, lies inside (-m, +m) (equivalent: TOST);
- `until: {ci_half_width: h}`: the interval is at most h wide on each side.

Adding seeds until an ordinary 95 % interval excludes 0 is not valid: every look is another
chance for noise to cross the line, and the error rate grows with the number of looks. The
procedure here is the **repeated confidence interval** (Jennison & Turnbull 1989, "Interim
analyses: the repeated confidence interval approach", JRSS B 51:305-361; Jennison & Turnbull
2000, *Group Sequential Methods with Applications to Clinical Trials*, ch. 9): look k uses a
Student-t interval for the paired mean difference at level 1 - alpha_k, where alpha_1 + ... +
alpha_K <= alpha = 0.05. By Bonferroni's inequality all K intervals cover the true difference at
once with probability >= 1 - alpha, so the interval reported at whichever look the sweep stops --
for any stopping rule, even one that looks at other comparisons -- covers with probability >= 95 %,
and every verdict read off it (better, worse, equivalent) errs with probability <= alpha (each of
the one-sided claims, better / worse / equivalent, at most alpha / 2). How alpha is spread over the
looks follows a Lan-DeMets (1983) spending function f(t) at information fraction t = n_k / max:
alpha_k = f(t_k) - f(t_(k-1)); `pocock` f(t) = alpha log(1 + (e - 1) t) (easier early stops),
`obrien_fleming` f(t) = 2 - 2 Phi(z_(1-alpha/2) / sqrt t) (nearly all of alpha at the last look),
`bonferroni` alpha / K per look. Combining them by Bonferroni instead of the exact joint
distribution of the looks is conservative (the true error rate is below alpha), needs no
normal-theory boundary computation, and holds with the t-distribution at small n.

A trial that fails leaves its seed out of the comparison at that look (assumed unrelated to the
score it would have had). Everything here is a pure function of the plan and the records: the
driver asks `next_round` which trials to run, so an interrupted adaptive sweep resumes where it
was, and the report and tables recompute the same intervals.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Optional

import numpy as np
from scipy import special  # Student's t and the normal as ufuncs; scipy.stats costs the driver half a second to import

from sweep.baseline import references
from sweep.plan import Cell, SweepPlan
from sweep.records import FAILED, FINAL, FINISHED, TrialRecord
from sweep.spec import SeedPolicy
from sweep.seed_forecast import DIFFERENCE, HALF_WIDTH, MARGIN, SeedForecast, forecast
from sweep.stats import ALPHA, PairedComparison, spending
from sweep.units import from_points, points_suffix

PROCEDURE = "repeated CI"  # the `PairedComparison.procedure` of a seed policy's comparison
REFERENCE = ("repeated confidence intervals (Jennison & Turnbull 1989; Group Sequential Methods, 2000, ch. 9): "
             "paired Student-t intervals at each look, alpha = 0.05 spread over the looks by {spending} spending "
             "(Lan & DeMets 1983) and combined by Bonferroni's inequality")
SPENDING_NAMES = {"pocock": "Pocock-type", "obrien_fleming": "O'Brien-Fleming-type", "bonferroni": "equal (Bonferroni)"}

# Why a quantity stopped getting seeds (`Assessment.reason`).
OPEN, DECIDED, EQUIVALENT, WIDTH, MAX = "open", "decided", "equivalent", "ci_half_width", "max seeds"
NOTHING = "no comparison"  # a cell compared with nothing, under `until: decided`


# --------------------------------------------------------------------------- the design


@dataclass(frozen=True)
class Design:
    """The planned looks of a seed policy and what stops a quantity, in the metric's raw units."""

    looks: tuple[int, ...]  # seeds per cell at each look
    alphas: tuple[float, ...]  # error rate spent at each look; sum <= ALPHA
    decided: bool = False  # stop when better / worse / equivalent
    ci_half_width: Optional[float] = None  # stop when the interval is this narrow
    margin: Optional[float] = None  # equivalence margin
    spending: str = "pocock"

    @classmethod
    def from_policy(cls, policy: SeedPolicy, metric: str, margin_points: Optional[float] = None,
                    alpha: float = ALPHA) -> "Design":
        looks = policy.looks
        if policy.spending == "bonferroni":
            t = np.arange(1, len(looks) + 1) / len(looks)
        else:
            t = np.array(looks, dtype=float) / policy.max
        cumulative = spending(policy.spending, t, alpha)
        alphas = np.diff(np.concatenate([[0.0], cumulative]))
        width = policy.until.ci_half_width
        return cls(tuple(looks), tuple(float(a) for a in alphas), policy.until.decided,
                   None if width is None else from_points(metric, width),
                   None if margin_points is None else from_points(metric, margin_points), policy.spending)

    @property
    def description(self) -> str:
        return REFERENCE.format(spending=SPENDING_NAMES[self.spending])


# --------------------------------------------------------------------------- the procedure


@dataclass
class SequentialResult:
    """Per row of `sequential_test`'s input: where it stands, and the interval to report."""

    look: np.ndarray  # index of the reported look (-1: not even the first look is complete)
    n: np.ndarray  # finite values in the reported interval
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    closed: np.ndarray  # bool: no more seeds (a rule was met, or the last look was reached)
    reason: np.ndarray  # OPEN / DECIDED / EQUIVALENT / WIDTH / MAX


def sequential_test(design: Design, values: np.ndarray, reached: Optional[np.ndarray] = None) -> SequentialResult:
    """Run the procedure on many sequences at once (vectorised: the simulation test runs
    thousands). `values[i, j]` is row i's value at the j-th planned seed (a paired difference, or
    a cell's score), NaN where that seed failed; `reached[i]` is how many looks row i has
    complete (default: all). A row is evaluated look by look and keeps the interval of the look
    where it stopped; an open row reports its latest look's interval (also a valid repeated CI)."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    rows = values.shape[0]
    reached = np.full(rows, len(design.looks)) if reached is None else np.asarray(reached)
    out = SequentialResult(np.full(rows, -1), np.zeros(rows, dtype=int), *(np.full(rows, np.nan) for _ in range(3)),
                           np.zeros(rows, dtype=bool), np.full(rows, OPEN, dtype=object))
    last = len(design.looks) - 1
    for k, (n_k, alpha_k) in enumerate(zip(design.looks, design.alphas)):
        live = ~out.closed & (reached > k)
        if not live.any():
            break
        x = values[live, :n_k]
        finite = np.isfinite(x)
        n = finite.sum(axis=1)
        total = np.where(finite, x, 0.0).sum(axis=1)
        mean = np.divide(total, n, out=np.full(len(n), np.nan), where=n > 0)
        dev = np.where(finite, x - mean[:, None], 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            sd = np.sqrt((dev ** 2).sum(axis=1) / (n - 1))
            half = special.stdtrit(np.maximum(n - 1, 1), 1 - alpha_k / 2) * sd / np.sqrt(n)
        half = np.where(n >= 2, half, np.nan)
        low, high = mean - half, mean + half
        has = n >= 2
        excludes = has & ((low > 0) | (high < 0))
        equivalent = has & (design.margin is not None) & (low > -(design.margin or 0)) & (high < (design.margin or 0))
        narrow = has & (design.ci_half_width is not None) & (half <= (design.ci_half_width or 0))
        reason = np.full(len(n), OPEN, dtype=object)
        reason[k == last] = MAX
        if design.ci_half_width is not None:
            reason[narrow] = WIDTH
        if design.decided:
            reason[excludes] = DECIDED
            # Inside the margin but clear of 0 is decided (the verdict reads "better, within ±m"):
            # "equivalent" is kept for an interval that holds 0, as `stats.verdict` words it.
            reason[equivalent & ~excludes] = EQUIVALENT
        idx = np.flatnonzero(live)
        out.look[idx], out.n[idx], out.mean[idx], out.low[idx], out.high[idx] = k, n, mean, low, high
        out.reason[idx] = reason
        out.closed[idx] = reason != OPEN
    return out


# --------------------------------------------------------------------------- a sweep's comparisons


@dataclass(frozen=True)
class Quantity:
    """What the policy watches: `cell` - `ref` paired by seed, or `cell`'s own score (ref None:
    a cell compared with nothing)."""

    cell: str
    ref: Optional[str] = None

    @property
    def cells(self) -> tuple[str, ...]:
        return (self.cell,) if self.ref is None else (self.cell, self.ref)


def quantities(cells: list[Cell], baseline: Optional[dict[str, Any]]) -> list[Quantity]:
    """Each cell's comparison with its reference cell; a cell that is in no comparison (no
    baseline, or none matches) is watched on its own."""
    out, compared = [], set()
    for cell_id, ref in references(cells, baseline).items():
        out.append(Quantity(cell_id, ref.id))
        compared |= {cell_id, ref.id}
    return out + [Quantity(c.id) for c in cells if c.id not in compared]


@dataclass(frozen=True)
class Assessment:
    quantity: Quantity
    look: int  # index of the reported look; -1 before the first look is complete
    seeds_run: int  # seeds per cell that the reported look covers (its planned size)
    comparison: PairedComparison  # the reported interval (for a cell's own score: its mean)
    closed: bool
    reason: str
    diffs: tuple[float, ...] = ()  # the finite paired differences (own score: values) it is computed from


def _outcomes(records: Iterable[TrialRecord], metric: str) -> tuple[set[tuple[str, int]], dict[tuple[str, int], float]]:
    ended, value = set(), {}
    for r in records:
        if r.phase != FINAL or r.status not in (FINISHED, FAILED):
            continue
        ended.add((r.cell, r.seed))
        if r.status == FINISHED and math.isfinite(r.value(metric)):
            value[(r.cell, r.seed)] = r.value(metric)
    return ended, value


def assess(design: Design, seeds: list[int], qs: list[Quantity], records: Iterable[TrialRecord], metric: str) -> list[Assessment]:
    """Where each quantity stands after the trials in `records` (final phase, by `metric`)."""
    ended, value = _outcomes(records, metric)
    if not qs:
        return []
    matrix = np.full((len(qs), len(seeds)), np.nan)
    reached = np.zeros(len(qs), dtype=int)
    for i, q in enumerate(qs):
        for j, s in enumerate(seeds):
            if all((c, s) in value for c in q.cells):
                matrix[i, j] = value[(q.cell, s)] - (value[(q.ref, s)] if q.ref else 0.0)
        # a look is complete when every seed it covers has ended in every cell of the quantity
        done = next((j for j, s in enumerate(seeds) if not all((c, s) in ended for c in q.cells)), len(seeds))
        reached[i] = sum(n <= done for n in design.looks)
    res = sequential_test(design, matrix, reached)
    own = np.array([q.ref is None for q in qs])
    if own.any():
        # A cell compared with nothing has nothing to decide (its mean's interval always "excludes
        # 0"): only a width rule adds seeds to it; without one it stops at its first look.
        alone = sequential_test(replace(design, decided=False, margin=None), matrix[own], reached[own])
        if design.ci_half_width is None:
            first = alone.look >= 0
            alone.closed[first], alone.reason[first] = True, NOTHING
        for name in ("look", "n", "mean", "low", "high", "closed", "reason"):
            getattr(res, name)[own] = getattr(alone, name)
    out = []
    for i, q in enumerate(qs):
        k = int(res.look[i])
        used = design.looks[k] if k >= 0 else 0
        paired = [j for j in range(used) if math.isfinite(matrix[i, j])]
        comp = PairedComparison([seeds[j] for j in paired], float(res.mean[i]), float(res.low[i]), float(res.high[i]),
                                math.nan, PROCEDURE)
        out.append(Assessment(q, k, used, comp, bool(res.closed[i]), str(res.reason[i]),
                              tuple(float(matrix[i, j]) for j in paired)))
    return out


def next_round(design: Design, seeds: list[int], qs: list[Quantity], records: Iterable[TrialRecord],
               metric: str, assessed: Optional[list[Assessment]] = None) -> list[tuple[str, int]]:
    """The (cell, seed) trials of the next round, in plan order: for every quantity still open,
    its cells' seeds up to its next look that have not ended. Empty: the policy is done.
    `assessed`: `assess` of the same records, when the caller has it."""
    records = list(records)
    ended, _ = _outcomes(records, metric)
    todo: dict[tuple[str, int], None] = {}
    for a in assess(design, seeds, qs, records, metric) if assessed is None else assessed:
        if a.closed:
            continue
        upto = design.looks[a.look + 1]  # look -1 (nothing complete yet) -> the first look
        for c in a.quantity.cells:
            for s in seeds[:upto]:
                if (c, s) not in ended:
                    todo[(c, s)] = None
    order = {c: i for i, c in enumerate(dict.fromkeys(c for q in qs for c in q.cells))}
    return sorted(todo, key=lambda cs: (order[cs[0]], seeds.index(cs[1])))


@dataclass(frozen=True)
class Look:
    """A seed policy's look at the records, computed once per round: `sweep.policy_lines` words it."""

    assessments: list[Assessment]
    todo: list[tuple[str, int]]  # the next round's (cell, seed) trials; empty: the policy is done
    forecasts: dict[Quantity, SeedForecast] = field(default_factory=dict)  # the quantities at the maximum


@dataclass(frozen=True)
class PolicyView:
    """A seed policy as one sweep applies it: the design, the seeds, what it watches."""

    design: Design
    seeds: list[int]
    quantities: list[Quantity] = field(default_factory=list)
    metric: str = "recall_at_1"
    policy: Optional[SeedPolicy] = None
    margin_points: Optional[float] = None  # as written in the YAML

    @classmethod
    def of(cls, policy: SeedPolicy, cells: list[Cell], baseline: Optional[dict[str, Any]], metric: str,
           margin_points: Optional[float]) -> "PolicyView":
        return cls(Design.from_policy(policy, metric, margin_points), policy.seeds, quantities(cells, baseline),
                   metric, policy, margin_points)

    @classmethod
    def from_plan(cls, plan: SweepPlan) -> Optional["PolicyView"]:
        """The view of a typed plan's seed policy (None: the sweep has a plain seed list)."""
        spec = plan.spec
        return cls.of(spec.policy, plan.cells, spec.baseline, spec.metric, spec.equivalence_margin) if spec.policy else None

    def assess(self, records: Iterable[TrialRecord], metric: Optional[str] = None) -> list[Assessment]:
        """Where each quantity stands. For another `metric` than the policy's, the interval of
        that metric at the look where the policy's metric stopped (at the same level: the
        Bonferroni argument covers every look of every metric read this way)."""
        records = list(records)
        primary = assess(self.design, self.seeds, self.quantities, records, self.metric)
        if metric is None or metric == self.metric:
            return primary
        out = []
        for a in primary:
            if a.look < 0:
                out.append(a)
                continue
            at_look = Design((self.design.looks[a.look],), (self.design.alphas[a.look],))
            (b,) = assess(at_look, self.seeds, [a.quantity], records, metric)
            out.append(Assessment(a.quantity, a.look, a.seeds_run, b.comparison, a.closed, a.reason, b.diffs))
        return out

    def next_round(self, records: Iterable[TrialRecord]) -> list[tuple[str, int]]:
        return next_round(self.design, self.seeds, self.quantities, records, self.metric)

    def look(self, records: Iterable[TrialRecord]) -> "Look":
        """One look at `records`: where each quantity stands, the next round's trials (empty: the
        policy is done) and the seed forecast of each quantity at the maximum, from one assessment."""
        records = list(records)
        assessed = self.assess(records)
        todo = next_round(self.design, self.seeds, self.quantities, records, self.metric, assessed)
        return Look(assessed, todo, self.forecasts(assessed))

    def forecasts(self, assessed: list[Assessment]) -> dict[Quantity, SeedForecast]:
        """The seed forecast (`sweep.seed_forecast`) of each quantity that stopped at the maximum
        undecided, from its observed spread; one whose spread says nothing has none."""
        out = {}
        for a in assessed:
            if a.reason == MAX:
                c = a.comparison
                fc = self.forecast(a.diffs, (c.high - c.low) / 2, a.quantity.ref is not None)
                if fc is not None:
                    out[a.quantity] = fc
        return out

    def forecast(self, diffs: Iterable[float], half_width: float, compared: bool = True) -> Optional[SeedForecast]:
        """The seed forecast of one comparison (or cell, under a width rule alone) from its paired
        differences and its interval's half-width h now: a decision at the margin when the sweep
        has one; else on a true difference of h / 2 (half the observed interval: a difference of h
        itself is nearly decidable at the seeds run, so that forecast would not reach past them);
        under a width rule, the planned width (whichever comes first when both are set). A cell
        compared with nothing (`compared` False: `diffs` are its values) has only the width rule."""
        if self.policy is None:
            return None
        goals = []
        if self.design.decided and compared:
            if self.design.margin is not None:
                goals.append((MARGIN, self.design.margin))
            elif math.isfinite(half_width) and half_width > 0:
                goals.append((DIFFERENCE, half_width / 2))
        if self.design.ci_half_width is not None:
            goals.append((HALF_WIDTH, self.design.ci_half_width))
        return forecast(self.policy, diffs, goals)

    def rule(self) -> str:
        """The policy in words, for the plan, the console and the report."""
        p = self.policy
        until = []
        unit = points_suffix(self.metric)
        if self.design.decided:
            equivalent = f", or equivalent within ±{self.margin_points:g}{unit})" if self.margin_points else ")"
            until.append("every comparison with its baseline is decided (better, worse" + equivalent)
        if p and p.until.ci_half_width is not None:
            until.append(f"each interval is within ±{p.until.ci_half_width:g}{unit}")
        looks = ", ".join(str(n) for n in self.design.looks)
        return (f"seeds added in rounds (looks at {looks} seeds per cell) until " + " or ".join(until)
                + f"; at most {self.design.looks[-1]}")
