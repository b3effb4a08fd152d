"""`SweepResults`: everything a sweep concluded, computed once, read by every writer.

Built from the typed plan (`SweepPlan`) and the typed trial records (`load_records`) when a sweep
ends (or `sweep/report.py DIR` asks). The records are indexed once (final values by cell, metric
and seed; search samples by cell), each comparison is computed once, and the writers -- markdown
and HTML report (`sweep.writers`), plots (`sweep.plots`), the MLflow parent run and the console's
closing block -- only read this object.

Units and ranges are `sweep.units`'s: an interval is clipped to its metric's range, and a
clipped bound carries `clipped=True` so writers can say so.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

from dml_core.evaluation.names import ordered, sign as mode_sign
from sweep.baseline import references
from sweep.labels import comparison_label, metric_label, plan_labels
from sweep.plan import Cell, SweepPlan, plan_of
from sweep.records import FINAL, SEARCH, BestChoice, SweepRecords, TrialRecord
from sweep.store import load_records
from sweep.sequential import PolicyView
from sweep.units import fmt_points, from_points, in_unit, points_suffix, unit_of
from sweep.stats import CONFIDENCE, PAIRED_T, Estimate, PairedComparison, cell_estimates, difference_estimate, paired_comparison, shape_note
from sweep.stats import verdict as stats_verdict

EVALUATIONS = ("last", "best", "best_on_test")
# `best_on_test` ranks a trial's evaluations by this, whatever sweep.metric is: the papers' rule.
PAPERS_SELECTION_METRIC = "recall_at_1"


# --------------------------------------------------------------------------- parts


@dataclass(frozen=True)
class CellResult:
    cell: Cell
    label: str
    values: dict[str, dict[int, float]]  # metric -> seed -> value (finished final trials)
    stats: dict[str, Estimate]  # metric -> mean and clipped interval over seeds

    @property
    def id(self) -> str:
        return self.cell.id

    def seeds(self, metric: str) -> int:
        return len(self.values.get(metric, {}))


@dataclass(frozen=True)
class Comparison:
    """One cell against its baseline on one metric, paired by seed."""

    cell: str
    baseline: str
    label: str  # `MS+EE n=2 vs MS`
    metric: str
    test: PairedComparison  # raw, unclipped: what `sweep.stats.verdict` judges
    diff: Estimate  # the same, interval clipped to the difference's range
    diffs: dict[int, float]  # seed -> cell - baseline
    verdict: str
    margin: Optional[float] = None  # the equivalence margin, raw units (sweep.equivalence_margin)
    note: str = ""  # beside the verdict: a seed far from the others (`sweep.stats.shape_note`)

    @property
    def repeated(self) -> bool:
        """A seed policy's repeated CI (valid under its optional stopping), not a plain paired t."""
        return self.test.procedure != PAIRED_T

    @property
    def pairs(self) -> int:
        return self.test.n

    def headline(self) -> str:
        """`MS+EE n=2 vs MS: R@1 +1.3 points (95% CI -4.1 to +6.7, p = 0.42, 3 seed pairs): inconclusive.`"""
        m = self.metric
        head = f"{self.label}: {metric_label(m)}"
        if self.pairs == 0:
            return f"{head}: no seed finished in both cells."
        unit = f" {unit_of(m, True)}" if unit_of(m, True) else ""
        ci = ""
        if self.diff.has_interval:
            mark = " (clipped to the metric's range)" if self.diff.clipped else ""
            kind = "repeated CI" if self.repeated else "CI"
            ci = f"{CONFIDENCE:.0%} {kind} {fmt_points(m, self.diff.low)} to {fmt_points(m, self.diff.high)}{mark}, "
        p = f"p = {self.test.p_value:.2g}, " if math.isfinite(self.test.p_value) else ""
        pairs = f"{self.pairs} seed pair{'s' * (self.pairs != 1)}"
        note = f" {self.note}" if self.note else ""
        return f"{head} {fmt_points(m, self.test.mean_diff)}{unit} ({ci}{p}{pairs}): {self.verdict}.{note}"


    def tag(self) -> str:
        """The comparison in a few words: `R@1 -0.3 [-1.3, +0.7] pts, inconclusive` (MLflow's `headline` tag)."""
        m = self.metric
        unit = " pts" if unit_of(m, True) == "points" else f" {unit_of(m, True)}".rstrip()
        ci = f" [{fmt_points(m, self.diff.low)}, {fmt_points(m, self.diff.high)}]" if self.diff.has_interval else ""
        return f"{metric_label(m)} {fmt_points(m, self.test.mean_diff)}{ci}{unit}, {self.verdict}"


@dataclass(frozen=True)
class SearchResult:
    """What the search did for one cell."""

    cell: str
    label: str
    tried: int
    finished: int
    choice: Optional[BestChoice]
    samples: list[TrialRecord]  # in the order they were drawn

    @property
    def note(self) -> str:
        return self.choice.note if self.choice else ""


HEADLINES = 20  # comparisons in the report's and the MLflow parent's headlines; the tables have them all


@dataclass(frozen=True)
class Summary:
    """What a sweep concluded, in words: the report's headlines, the MLflow parent's description and
    tags and the console's closing block all read these (formatted once, by `SweepResults.summary`)."""

    comparisons: list[tuple[str, str, float]]  # per primary comparison, plan order: headline, verdict, p
    search_lines: list[str]  # one per cell whose search could not separate its candidates
    # The first comparison in short, and what it compared: two tags, since MLflow's run page cuts a
    # tag's value after about 40 characters (a chip of 1600 x 1000 showed `R@1 -0.3 [-1.3, +0.7]
    # pts, inconclusive:...`, without what was compared).
    tag: tuple[str, str]

    @cached_property
    def headlines(self) -> list[str]:
        """The headlines up to HEADLINES comparisons (`top(HEADLINES)`)."""
        return self.top(HEADLINES)

    def top(self, limit: Optional[int] = None) -> list[str]:
        """The headline of every comparison on the primary metric, in plan order. With `limit`
        and more comparisons than that (a large sweep): a tally of the verdicts, then the
        `limit` comparisons with the smallest p (plan order), then where the rest are."""
        comps = self.comparisons
        if limit is None or len(comps) <= limit:
            return [line for line, _, _ in comps]
        tally: dict[str, int] = defaultdict(int)
        for _, verdict, _ in comps:
            tally[verdict] += 1
        keep = set(sorted(range(len(comps)), key=lambda i: comps[i][2] if math.isfinite(comps[i][2]) else math.inf)[:limit])
        return [f"{len(comps)} comparisons: " + ", ".join(f"{n} {v}" for v, n in sorted(tally.items(), key=lambda x: -x[1]))
                + f"; the {limit} with the smallest p:",
                *(comps[i][0] for i in range(len(comps)) if i in keep),
                f"... the other {len(comps) - limit}: report.html / comparisons.csv"]


# --------------------------------------------------------------------------- the object


@dataclass
class SweepResults:
    plan: SweepPlan
    records: SweepRecords
    evaluation: str  # last | best
    labels: dict[str, str]
    metrics: list[str]  # every metric of the finished trials, recall@K first
    cells: list[CellResult]  # plan order
    comparisons: list[Comparison]  # every metric
    search: list[SearchResult] = field(default_factory=list)
    search_notes: list[str] = field(default_factory=list)
    policy: Optional[PolicyView] = None  # a seed policy (sweep.sequential); None: a plain seed list

    # ---------------------------------------------------------------- building

    @classmethod
    def build(cls, plan: SweepPlan, records: SweepRecords, evaluation: Optional[str] = None) -> "SweepResults":
        """The results of `plan` from `records` (its seed policy's view built here)."""
        return cls.of_view(plan, PolicyView.from_plan(plan), records, evaluation)

    @classmethod
    def of_view(cls, plan: SweepPlan, policy: Optional[PolicyView], records: SweepRecords,
                evaluation: Optional[str] = None) -> "SweepResults":
        """The results of `plan` under `policy` (`PolicyView.from_plan(plan)`, which a driver holds)."""
        evaluation = evaluation or plan.spec.report.evaluation
        if evaluation not in EVALUATIONS:
            raise ValueError(f"evaluation: {evaluation!r} is not one of {', '.join(EVALUATIONS)}")
        metric, mode = plan.spec.metric, plan.spec.mode
        labels = plan_labels(plan)
        trials = [with_evaluation(t, evaluation, metric, mode) for t in records.trials]
        # One pass over the records: final values by cell, metric and seed; search samples by cell.
        values: dict[str, dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
        samples: dict[str, list[TrialRecord]] = defaultdict(list)
        names: set[str] = set()
        for t in trials:
            if t.phase == SEARCH:
                samples[t.cell].append(t)
            elif t.finished:
                for m, v in t.metrics.items():
                    if math.isfinite(v):
                        values[t.cell][m][t.seed] = float(v)
                names.update(t.metrics)
        metrics = ordered(names - {"epoch"})
        by_cell = {cell.id: {m: dict(values[cell.id].get(m, {})) for m in metrics} for cell in plan.cells}
        search = [SearchResult(c.id, labels[c.id], len(samples[c.id]), sum(t.finished for t in samples[c.id]),
                               records.meta.best.get(c.id), samples[c.id])
                  for c in plan.cells] if plan.spec.search else []
        notes = _search_notes(search)
        # The statistics, in one pass: each comparison (baseline rule, the policy's stops, paired
        # tests and verdicts), then each cell's interval.
        comparisons = _comparisons(plan, by_cell, labels, metrics, mode, policy, trials)
        cells = [CellResult(cell, labels[cell.id], by_cell[cell.id], cell_estimates(by_cell[cell.id])) for cell in plan.cells]
        return cls(plan, records, evaluation, labels, metrics, cells, comparisons, search, notes, policy)

    @classmethod
    def of_dir(cls, sweep_dir: str | Path, evaluation: Optional[str] = None) -> "SweepResults":
        return cls.build(plan_of(sweep_dir), load_records(sweep_dir), evaluation)

    # ---------------------------------------------------------------- reading

    @property
    def metric(self) -> str:
        return self.plan.spec.metric

    @property
    def mode(self) -> str:
        return self.plan.spec.mode

    @property
    def search_metric(self) -> str:
        return self.plan.spec.search_metric

    @cached_property
    def primary(self) -> list[Comparison]:
        """The comparisons on the primary metric (headlines, plots, MLflow)."""
        return [c for c in self.comparisons if c.metric == self.metric]

    @cached_property
    def summary(self) -> "Summary":
        """What the sweep concluded in words, formatted once (`Summary`)."""
        comps = self.primary
        lines = [(c.headline(), c.verdict, c.test.p_value) for c in comps]
        if comps:
            tag = (comps[0].tag(), comps[0].label + (f" (+ {len(comps) - 1} more)" if len(comps) > 1 else ""))
        else:
            tag = (f"{len(self.cells)} cells, no baseline", "see report.html")
        return Summary(lines, [f"{s.label}: {s.note}" for s in self.search_unseparated], tag)

    @cached_property
    def search_unseparated(self) -> list[SearchResult]:
        return [s for s in self.search if s.choice is not None and s.note]

    @cached_property
    def final_runs(self) -> list[TrialRecord]:
        return [t for t in self.records.final() if t.mlflow_run_id]

    def compare_run_ids(self, limit: int = 40) -> list[str]:
        """The final runs for MLflow's compare view: all of them up to `limit`; past that, those of
        the cells in the first headline comparisons (a compare page of 1,000 runs says nothing)."""
        runs = self.final_runs
        if len(runs) > limit:
            cells: list[str] = []
            for c in self.primary:
                cells += [x for x in (c.cell, c.baseline) if x not in cells]
            keep = set(cells)
            runs = [t for t in runs if t.cell in keep]
        return [t.mlflow_run_id for t in runs[:limit]]

    def shown_metrics(self) -> list[str]:
        """The primary metric, then up to two recalls, MAP@R and NMI (the report's columns)."""
        shown = [m for m in self.metrics if m.startswith("recall_at_")][:2] + [m for m in ("map_at_r", "nmi") if m in self.metrics]
        return [self.metric] + [m for m in shown if m != self.metric] if self.metric in self.metrics else shown

    # ---------------------------------------------------------------- flat tables

    @cached_property
    def trial_rows(self) -> list[dict[str, Any]]:
        """Every trial (search first, then final; plan order, seed), searched params as JSON: built
        once, read by the tables and the report's trial list."""
        order = {c.id: i for i, c in enumerate(self.plan.cells)}
        rows = []
        for r in sorted(self.records.trials, key=lambda r: (r.phase != SEARCH, order.get(r.cell, 1 << 30), r.seed, r.key)):
            row = {"key": r.key, "label": r.label, "phase": r.phase, "cell": r.cell, "arm": r.arm}
            row |= {axis: r.coords.get(axis) for axis in self.plan.spec.grid}
            epoch = r.metrics.get("epoch")
            row |= {"seed": r.seed, "status": r.status, "error": r.error, "attempts": r.attempts,
                    "epochs": None if epoch is None else int(epoch), "params": json.dumps(r.params, sort_keys=True)}
            row |= {m: r.metrics.get(m) for m in self.metrics}
            row |= {"trial_id": r.trial_id, "mlflow_run_id": r.mlflow_run_id, "reused_from": r.reused_from}
            rows.append(row)
        return rows

    def cell_rows(self) -> list[dict[str, Any]]:
        """Per cell and metric: seeds, mean and the clipped 95 % interval (raw units)."""
        return [{"cell": c.id, "label": c.label, "arm": c.cell.arm, **c.cell.coords, "metric": m, "seeds": e.n,
                 "mean": e.mean, "ci_low": e.low, "ci_high": e.high, "ci_clipped": e.clipped}
                for c in self.cells for m, e in c.stats.items()]

    def comparison_rows(self) -> list[dict[str, Any]]:
        return [{"cell": c.cell, "baseline": c.baseline, "label": c.label, "metric": c.metric, "pairs": c.pairs,
                 "seeds": json.dumps(c.test.seeds), "mean_diff": c.test.mean_diff, "ci_low": c.diff.low,
                 "ci_high": c.diff.high, "ci_clipped": c.diff.clipped, "p_value": c.test.p_value, "verdict": c.verdict,
                 "procedure": c.test.procedure, "margin": c.margin}
                for c in self.comparisons]


# --------------------------------------------------------------------------- helpers


def with_evaluation(t: TrialRecord, evaluation: str, metric: str, mode: str) -> TrialRecord:
    """`last`: the record as is. `best`: a finished final trial's metrics are those of its best
    evaluation by `metric` (that epoch's metrics, all of them); `best_on_test`: the same by test
    R@1 whatever `metric` is (the papers' test-set selection)."""
    if evaluation == "last" or t.phase != FINAL or not t.finished:
        return t
    if evaluation == "best_on_test":
        metric, mode = PAPERS_SELECTION_METRIC, "max"
    scored = [h for h in t.history if math.isfinite(h.get(metric, math.nan))]
    if not scored:
        return t
    sign = mode_sign(mode)
    return t.model_copy(update={"metrics": max(scored, key=lambda h: sign * h[metric])})


def _comparisons(plan: SweepPlan, values: dict[str, dict[str, dict[int, float]]], labels: dict[str, str],
                 metrics: list[str], mode: str, policy: Optional[PolicyView], trials: list[TrialRecord]) -> list[Comparison]:
    """Each cell against its baseline on every metric, paired by seed; under a seed policy the
    interval is the policy's repeated CI at the look where it stopped (`sweep.sequential`). The
    verdict is `sweep.stats.verdict`'s, with the equivalence margin when the sweep sets one."""
    refs = references(plan.cells, plan.spec.baseline)
    margin_points = plan.spec.equivalence_margin
    out = []
    for m in metrics:
        stopped = {(a.quantity.cell, a.quantity.ref): a.comparison for a in policy.assess(trials, m)} if policy else {}
        margin = None if margin_points is None else from_points(m, margin_points)
        shown = None if margin is None else f"{in_unit(m, margin):g}" + points_suffix(m)
        for cell_id, ref in refs.items():
            a, b = values[cell_id][m], values[ref.id][m]
            test = stopped.get((cell_id, ref.id)) or paired_comparison(a, b)
            diff = difference_estimate(test, m)
            diffs = {s: a[s] - b[s] for s in test.seeds if s in a and s in b}
            out.append(Comparison(cell_id, ref.id, comparison_label(labels[cell_id], labels[ref.id]), m, test, diff, diffs,
                                  stats_verdict(test, mode, margin=margin, margin_text=shown), margin, shape_note(m, diffs)))
    order = {c.id: i for i, c in enumerate(plan.cells)}
    return sorted(out, key=lambda c: (order[c.cell], metrics.index(c.metric)))


def _search_notes(search: list[SearchResult]) -> list[str]:
    notes = []
    drawn = [tuple(json.dumps(t.params, sort_keys=True) for t in s.samples) for s in search if s.samples]
    if len(drawn) > 1 and len(set(drawn)) == 1:
        notes.append("Every cell drew the same candidate values (each cell's sampler starts from the same seed, and "
                     "TPE proposes at random until it has 10 results), so the cells differ only in how the same "
                     "candidates scored.")
    return notes
