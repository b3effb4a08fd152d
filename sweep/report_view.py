"""The report's values in its units, labelled and formatted once per sweep: what its plots and sections arrange.

`report_view(results)` asks `sweep.units` and `sweep.labels` for every number and name the report
shows, once: per metric its label, unit, scale and ranges (`MetricUnit`); per cell, comparison,
search, trial and recipe field its table row as text; a seed policy's rule and where each
comparison stopped; each search sample as the search-history plot draws it; the flat tables
(raw units) the parquet and CSV files hold. The writers (`sweep.writers`, `sweep.plots`,
`sweep.figures`, `sweep.report_sections`) only arrange what it holds, so a unit or a format is
decided in one place and the report's files do not re-derive it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from sweep.console import describe_budget
from sweep.labels import fmt_duration, fmt_params
from sweep.records import SEARCH, TrialRecord
from sweep.results import SearchResult, SweepResults
from sweep.selection import Z, score_noise
from sweep.sequential import DECIDED, EQUIVALENT, MAX, NOTHING, OPEN, WIDTH
from sweep.stats import Estimate
from sweep.units import MetricUnit, fmt_metric, fmt_points, metric_unit

CLIPPED = "†"  # marks an interval bound clipped to the metric's range


@dataclass(frozen=True)
class SearchPoint:
    """One finished search sample as the search-history plot draws it, in the report's unit."""

    params: dict[str, Any]
    score: float
    below: float  # the noise bar under the score, clipped to the metric's range
    above: float
    kept: bool


@dataclass(frozen=True)
class ReportView:
    """What the report shows of `results`, each value in its unit and format (see the module)."""

    results: SweepResults
    metric: MetricUnit  # the primary metric
    search_metric: MetricUnit
    loss: MetricUnit
    shown: list[MetricUnit]  # the per-cell table's metric columns
    tables: dict[str, list[dict[str, Any]]]  # trials, cells, comparisons: raw units, for parquet and CSV
    cell_rows: list[list[Any]]  # label, seeds, one estimate per shown metric
    comparison_rows: list[list[Any]]  # the primary comparisons: label, pairs, mean, interval, p, verdict
    search_rows: list[list[Any]]
    search_points: list[list[SearchPoint]]  # per search result, its finished samples in draw order
    trial_rows: list[list[Any]]
    recipe_rows: list[list[Any]]  # field, value, default
    policy: Optional[tuple[str, str, list[list[Any]]]]  # a seed policy's rule, procedure, where each comparison stopped
    search_budget: str  # "" without a search
    wall_time: str
    trial_time: str


def fmt_interval(metric: str, e: Estimate, difference: bool = False) -> str:
    """`[94.1, 98.3]` (of a difference, `[-1.2, +3.4]` points); a clipped bound gets `†`."""
    fmt = fmt_points if difference else fmt_metric
    return f"[{fmt(metric, e.low)}{CLIPPED * e.clipped_low}, {fmt(metric, e.high)}{CLIPPED * e.clipped_high}]"


def fmt_estimate(metric: str, e: Estimate) -> str:
    """`96.2 [94.1, 98.3]`, `96.2 (1 seed)`, or `-` without values."""
    if e.n == 0:
        return "-"
    if not e.has_interval:
        return f"{fmt_metric(metric, e.mean)} (1 seed)"
    return f"{fmt_metric(metric, e.mean)} {fmt_interval(metric, e)}"


def report_view(results: SweepResults) -> ReportView:
    """Every value the report shows of `results`, formatted once."""
    tables = {"trials": results.trial_rows, "cells": results.cell_rows(), "comparisons": results.comparison_rows()}
    shown = [metric_unit(m) for m in results.shown_metrics()]
    metric, search = metric_unit(results.metric), metric_unit(results.search_metric)
    cells = [[c.label, c.seeds(results.metric)] + [fmt_estimate(m.metric, c.stats[m.metric]) for m in shown]
             for c in results.cells]
    comparisons = [[c.label, c.pairs, fmt_points(c.metric, c.test.mean_diff), fmt_interval(c.metric, c.diff, True),
                    "-" if not math.isfinite(c.test.p_value) else f"{c.test.p_value:.2g}", c.verdict]
                   for c in results.primary]
    trial_time = sum(float(r.metrics.get("time_s", 0.0)) for r in results.records.trials)
    kept = [kept_sample(s) for s in results.search]
    return ReportView(results, metric, search, metric_unit("loss"), shown, tables, cells, comparisons,
                      _search_rows(results, kept), _search_points(results, search, kept), _trial_rows(results),
                      recipe_rows(results), _policy(results), _search_budget(results),
                      fmt_duration(results.records.meta.wall_s or math.nan), fmt_duration(trial_time))


def kept_sample(s: SearchResult) -> Optional[TrialRecord]:
    """The search sample a cell kept (`SearchResult.choice`), or None. The choice names it by Tune
    trial id, or by its key when the sample was reused from the trial store (no Tune trial)."""
    if s.choice is None:
        return None
    return next((t for t in s.samples if s.choice.trial_id in {t.trial_id, t.key} - {""}), None)


def _search_rows(results: SweepResults, kept: list[Optional[TrialRecord]]) -> list[list[Any]]:
    """Per cell: finished/tried, the kept params, its score ± Z SE, queries, separated (+ per fold)."""
    metric = results.search_metric
    folds = results.plan.spec.search.folds if results.plan.spec.search else None
    rows = []
    for s, won in zip(results.search, kept):
        c = s.choice
        noise = f" ± {fmt_metric(metric, Z * c.noise)}" if c and c.noise is not None else ""
        row = [s.label, f"{s.finished}/{s.tried}", fmt_params(c.params) if c else "-",
               f"{fmt_metric(metric, c.value)}{noise}" if c else "-",
               "-" if c is None or c.queries is None else c.queries,
               "-" if c is None else ("yes" if c.separated else "**no**: within noise")]
        if folds:
            scores = [won.metrics.get(f"fold{i}_{metric}") if won else None for i in range(folds)]
            row.append(" / ".join(fmt_metric(metric, v) if v is not None else "-" for v in scores))
        rows.append(row)
    return rows


def _search_points(results: SweepResults, unit: MetricUnit, kept: list[Optional[TrialRecord]]) -> list[list[SearchPoint]]:
    """Each cell's finished samples with a score: the score in the report's unit and its ± Z
    standard errors of scoring noise (`sweep.selection`), the bar clipped to the metric's range."""
    lo, hi = unit.range
    out = []
    for s, won in zip(results.search, kept):
        queries = s.choice.queries if s.choice else None
        points = []
        for t in s.samples:
            v = t.metrics.get(unit.metric)
            if not t.finished or v is None or not math.isfinite(v):
                continue
            half = Z * (score_noise(v, queries, unit.metric) or 0.0)
            points.append(SearchPoint(t.params, unit.scale * v, unit.scale * min(half, v - lo),
                                      unit.scale * min(half, hi - v), t is won))
        out.append(points)
    return out


def _trial_rows(results: SweepResults) -> list[list[Any]]:
    """Every trial (`SweepResults.trial_rows`) as the report lists it: a search trial's score is its
    search metric, a final trial's the test split's; its params; a link to its MLflow run."""
    metric, search = results.metric, results.search_metric
    run_url = _run_link(results)

    def status(r: dict) -> str:  # a reused result says which sweep trained it
        return f"{r['status']}, reused from {Path(r['reused_from']).name}" if r.get("reused_from") else r["status"]

    def scores(r: dict) -> list[str]:
        if r["phase"] == SEARCH:
            return [fmt_metric(search, r.get(search)), "-"]
        return ["-", fmt_metric(metric, r.get(metric))]

    return [[r["label"] or r["key"], r["phase"], status(r), *scores(r),
             "-" if r["epochs"] is None else r["epochs"], fmt_params(json.loads(r["params"])),
             run_url(r.get("mlflow_run_id")), (r["error"] or "")[:200]]
            for r in results.trial_rows]


def _run_link(results: SweepResults) -> Callable[[Optional[str]], str]:
    """A trial's MLflow run as a link in the model-training view (`#/runs/<id>`, which opens it in
    the GenAI view, for a sweep that did not record its experiment's id), or `-`."""
    from sweep.parent_run import ML_VIEW, ui_base

    meta = results.records.meta
    base = ui_base(meta.tracking_uri) if meta.tracking_uri else None
    where = f"experiments/{meta.experiment_id}/runs" if meta.experiment_id else "runs"
    view = f"?{ML_VIEW}" if meta.experiment_id else ""
    return lambda run_id: f"[run]({base}/#/{where}/{run_id}{view})" if base and run_id else "-"


def recipe_rows(results: SweepResults) -> list[list[str]]:
    """`[field, value, default]` for each field of the base config that differs from its default,
    plus the components' names; a swept field says `grid [...]`, a searched one its space."""
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    from dml_core.config import config_from_dict
    from sweep.console import describe_param
    from sweep.plan import yaml_value

    plan = results.plan
    spec = plan.spec
    swept = {k: f"grid {yaml_value(v)}" for k, v in spec.grid.items()}
    for arm, overrides in spec.arms.items():
        for k in overrides:
            swept.setdefault(k, "per arm")
    swept |= {k: f"searched {describe_param(p)}" for k, p in (spec.search.params if spec.search else {}).items()}
    rows = []

    def walk(model: Any, prefix: str) -> None:
        for name, info in type(model).model_fields.items():
            value, key = getattr(model, name), f"{prefix}{name}"
            if key == "sweep":
                continue
            if isinstance(value, BaseModel):
                walk(value, key + ".")
                continue
            default = info.get_default(call_default_factory=True)
            if isinstance(default, BaseModel):
                default = default.model_dump(mode="json")
            differs = default is PydanticUndefined or _plain(value) != _plain(default)
            if differs or key in swept or name in ("name", "backbone"):
                rows.append([f"`{key}`", swept.get(key, yaml_value(_plain(value))),
                             "-" if default is PydanticUndefined else yaml_value(_plain(default))])

    walk(config_from_dict(plan.base, plan.source), "")
    return rows


def _plain(value: Any) -> Any:
    """Tuples as lists, so a YAML list and its validated tuple compare (and print) alike."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _policy(results: SweepResults) -> Optional[tuple[str, str, list[list[Any]]]]:
    """A seed policy's rule and procedure in words, and per comparison where it stopped and why."""
    view = results.policy
    if view is None:
        return None
    reasons = {OPEN: "open (the sweep stopped first)", DECIDED: "decided", EQUIVALENT: "equivalent",
               WIDTH: "interval narrow enough", MAX: "max seeds reached", NOTHING: "no comparison"}
    rows = [[results.labels.get(a.quantity.cell, a.quantity.cell)
             + (f" vs {results.labels.get(a.quantity.ref, a.quantity.ref)}" if a.quantity.ref else ""),
             a.seeds_run, f"{a.look + 1} of {len(view.design.looks)}", reasons[a.reason]]
            for a in view.assess(results.records.trials)]
    return view.rule(), view.design.description, rows


def _search_budget(results: SweepResults) -> str:
    """The search budget per arm as a sentence (`Search budget per arm: ...`), or ""."""
    budget = results.plan.search_budget()
    if not budget:
        return ""
    text = describe_budget(budget, results.plan.spec.search.folds)
    return text[:1].upper() + text[1:] + "."
