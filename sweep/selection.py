"""Which searched candidate a cell keeps, and whether the search could tell its candidates apart.

A search scores each candidate once, on a finite set of held-out queries. A recall over n queries
is a binomial proportion: its standard error is sqrt(p (1 - p) / n), so on 364 queries 99.7 % and
100 % are one wrong neighbour apart and well within noise. Choosing the top score then picks noise
and calls it tuning. The rule, per cell:

1. **Noise.** For a score p in [0, 1] on n queries, the binomial standard error with Agresti &
   Coull's adjustment (so that a perfect 100 % still has a noise): p' = (p n + 2) / (n + 4),
   SE = sqrt(p' (1 - p') / (n + 4)) (the standard error of a recall;
   an upper bound for any mean of per-query values in [0, 1] such as MAP@R or R-precision, and a
   rough guide for NMI / F1, which are not per-query means). With folds (`fold_scores`: the
   candidate's score on each fold), the standard error of the fold mean (sample SD / sqrt(folds))
   is used when it is larger. For other metrics (a loss) the noise is unknown and rule 3 applies.
   This is the noise of *scoring* only: a second training seed would add its own, so a separated
   search is necessary, not sufficient, for a well-chosen value.
2. **Ties.** A candidate is tied with the best when the difference of their scores is below
   `Z` = 1.96 standard errors of that difference, sqrt(SE_best^2 + SE_other^2).
   A value drawn twice is one candidate (the mean of its scores).
3. **Choice.** One candidate alone at the top (no ties, or noise unknown): it is chosen. Several
   tied: the search *could not separate candidates*; among the tied ones the sweep keeps the one
   closest to the base config's value (the YAML's own setting is the prior the search failed to
   overturn; distance in log space for `loguniform` and for positive numeric `categorical`
   choices (a decade grid), in units of the range for `uniform`/`int`, else 0/1 for
   `categorical`; summed over parameters), ties of distance broken by score.

The runner calls `select` once per cell at the end of the search, prints `Selection.console_line`
and keeps the choice (with its note) in the sweep's records; the report and MLflow show the note.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from dml_core.evaluation.names import sign as mode_sign
from sweep.labels import fmt_params, fmt_value, metric_label, short_key
from sweep.units import fmt_metric, is_fraction

Z = 1.96  # two-sided 95 %, the report's confidence level


@dataclass(frozen=True)
class Candidate:
    """One finished search sample of a cell."""

    trial_id: str
    params: dict[str, Any]
    value: float  # the search score (last evaluation)
    fold_scores: Sequence[float] = ()


@dataclass(frozen=True)
class Selection:
    params: dict[str, Any]
    trial_id: str
    value: float
    separated: bool  # False: the best was within noise of another candidate
    noise: Optional[float]  # SE of the best candidate's score; None when unknown
    queries: Optional[int]  # held-out queries each candidate was scored on; None when unknown
    tied: list[str] = field(default_factory=list)  # trial ids within noise of the best (best included)
    note: str = ""  # "" when separated

    def record(self) -> dict[str, Any]:
        """What the sweep's records keep (`sweep.records.BestChoice`)."""
        return {"params": self.params, "trial_id": self.trial_id, "value": self.value, "separated": self.separated,
                "noise": self.noise, "queries": self.queries, "note": self.note}

    def console_line(self, label: str, metric: str, prefix: str) -> str:
        """`   best MS+EE n=2: lr 0.00354 (holdout R@1 99.1 ± 0.5)` (+ the note when tied)."""
        noise = f" ± {fmt_metric(metric, Z * self.noise)}" if self.noise is not None else ""
        line = f"   best {label}: {fmt_params(self.params)} ({prefix} {metric_label(metric)} {fmt_metric(metric, self.value)}{noise})"
        return f"{line}\n     {self.note}" if self.note else line


def candidate_of(record: Any, metric: str) -> Candidate:
    """A finished search `TrialRecord` as a candidate; a Reality-Check folds sample
    (`sweep.search.folds`) reports each fold's score as `fold<i>_<metric>` beside the mean."""
    metrics = record.metrics
    folds = [float(metrics[f"fold{i}_{metric}"]) for i in range(int(metrics.get("folds", 0)))
             if f"fold{i}_{metric}" in metrics]
    return Candidate(record.trial_id or record.key, dict(record.params), float(metrics[metric]), folds)


def score_noise(value: float, queries: Optional[int], metric: str, fold_scores: Sequence[float] = ()) -> Optional[float]:
    """Standard error of one search score (rule 1); None when it cannot be estimated."""
    se: Optional[float] = None
    if queries and is_fraction(metric) and math.isfinite(value):
        p = (min(max(value, 0.0), 1.0) * queries + 2) / (queries + 4)  # Agresti-Coull
        se = math.sqrt(p * (1 - p) / (queries + 4))
    folds = np.asarray([f for f in fold_scores if math.isfinite(f)], dtype=float)
    if len(folds) >= 2:
        fold_se = float(folds.std(ddof=1) / math.sqrt(len(folds)))
        se = fold_se if se is None else max(se, fold_se)
    return se


def _distance(params: dict[str, Any], base: dict[str, Any], space: dict[str, Any]) -> float:
    """How far a candidate is from the base config's values (rule 3); `space`: key -> SearchParam."""
    total = 0.0
    for key, p in space.items():
        value, prior = params.get(key), base.get(key)
        if prior is None or value is None:
            continue
        if p.type == "categorical":
            numbers = [c for c in p.choices if isinstance(c, (int, float)) and not isinstance(c, bool)]
            if len(numbers) == len(p.choices) >= 2 and isinstance(prior, (int, float)) and min(numbers) > 0 and prior > 0:
                # numeric choices (a decade grid of lrs): log distance over their span
                total += abs(math.log(value) - math.log(prior)) / (math.log(max(numbers)) - math.log(min(numbers)))
            else:
                total += float(value != prior)
        elif p.type == "loguniform" and value > 0 and prior > 0:
            total += abs(math.log(value) - math.log(prior)) / (math.log(p.high) - math.log(p.low))
        else:
            total += abs(float(value) - float(prior)) / (float(p.high) - float(p.low))
    return total


def _distinct(candidates: list[Candidate], sign: int) -> list[Candidate]:
    """One candidate per distinct value: a sampler may draw a value twice (TPE, a categorical),
    and a value does not tie with itself. Its score is the mean of its samples' scores, its trial
    the best of them."""
    groups: dict[str, list[Candidate]] = {}
    for c in candidates:
        groups.setdefault(json.dumps(c.params, sort_keys=True, default=str), []).append(c)
    out = []
    for same in groups.values():
        top = max(same, key=lambda c: sign * c.value)
        folds = [f for c in same for f in c.fold_scores]
        out.append(Candidate(top.trial_id, top.params, float(np.mean([c.value for c in same])), folds))
    return out


def select(candidates: list[Candidate], metric: str, mode: str, queries: Optional[int], space: dict[str, Any],
           base: dict[str, Any]) -> Optional[Selection]:
    """The cell's choice among its finished candidates (rules 1-3); None when there are none.

    `queries`: held-out queries each candidate was scored on (None: unknown); `space`: the
    searched params (dotted key -> `SearchParam`); `base`: dotted key -> the base config's value."""
    sign = mode_sign(mode)
    scored = _distinct([c for c in candidates if math.isfinite(c.value)], sign)
    if not scored:
        return None
    top = max(scored, key=lambda c: sign * c.value)
    se_top = score_noise(top.value, queries, metric, top.fold_scores)
    tied = [top]
    if se_top is not None:
        for c in scored:
            if c is top:
                continue
            se = score_noise(c.value, queries, metric, c.fold_scores) or 0.0
            if sign * (top.value - c.value) < Z * math.hypot(se_top, se):
                tied.append(c)
    if len(tied) == 1:
        return Selection(dict(top.params), top.trial_id, top.value, True, se_top, queries, [top.trial_id])
    chosen = min(tied, key=lambda c: (_distance(c.params, base, space), -sign * c.value))
    priors = fmt_params({k: base[k] for k in space if base.get(k) is not None})
    falls = ", ".join(f"{short_key(k)} falls back to {fmt_value(v)}" for k, v in chosen.params.items())
    low, high = (fmt_metric(metric, f(c.value for c in tied)) for f in (min, max))
    noise = f"± {fmt_metric(metric, Z * se_top)}" if se_top is not None else "noise unknown"
    note = (f"search could not separate candidates: scores within noise ({len(tied)} of {len(scored)} scored "
            f"{low} to {high}, {noise} on {queries or '?'} held-out queries); {falls}, the tied candidate "
            f"nearest the base config's {priors}.")
    return Selection(dict(chosen.params), chosen.trial_id, chosen.value, False, se_top, queries, [c.trial_id for c in tied], note)


def retrieval_queries(labels: Sequence[int]) -> int:
    """Queries a retrieval evaluation scores: items whose class has another item."""
    counts = np.bincount(np.asarray(labels, dtype=int)) if len(labels) else np.zeros(0, dtype=int)
    return int(counts[counts >= 2].sum())


def heldout_queries(cfg: Any) -> Optional[int]:
    """Queries a search trial of `cfg` (an `ExperimentConfig`) is scored on: its evaluation split
    after `data.holdout`; None when the data cannot be read here (the noise is then unknown)."""
    from dml_core.data import select_splits

    try:
        splits = select_splits(cfg.data)
    except (OSError, ValueError):
        return None
    split = splits.test if splits.test is not None else splits.query
    return None if split is None else retrieval_queries(split.labels)


def select_for_cell(plan: Any, cell: Any, candidates: list[Candidate]) -> Optional[Selection]:
    """`select` for one cell of a `SweepPlan`: its search metric and space, the held-out queries
    of its search trials, and the base config's values of the searched keys."""
    from dml_core.config import get_dotted
    from sweep.plan import trial_config

    spec = plan.spec
    cfg = trial_config(plan.base, plan.search_trial(cell), None, plan.source)
    base = {k: cell.overrides.get(k, get_dotted(plan.base, k)) for k in spec.search.params}
    return select(candidates, spec.search_metric, spec.search_mode, heldout_queries(cfg), spec.search.params, base)
