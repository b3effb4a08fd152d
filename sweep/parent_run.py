"""What a sweep's MLflow parent run carries, from `SweepResults`: metrics in % and a description.

Metrics (step 0), the primary metric only:

- per cell `<metric>_pct.<cell label>.mean|ci_low|ci_high`: in %, the interval clipped to [0, 100];
- per comparison `<metric>_pct.<cell>_vs_<baseline>.diff|ci_low|ci_high` in percentage points
  (clipped to ±100) and `<metric>.<cell>_vs_<baseline>.p` (the paired t-test's p-value);
- a metric that is not a fraction (a loss) keeps its own unit and name (`loss.<cell>.mean`).

The `headline` and `headline.of` tags (the run page's first two tags, on its first screen) are the
first comparison in short, `R@1 -0.3 [-1.3, +0.7] pts, inconclusive` and `MS+EE n=2 vs MS`
(two tags: a tag's chip cuts its value after about 40 characters; `(+ 2 more)` when there are more). The description (below the child runs and tags) starts with the headlines (a tally plus the 20
with the smallest p on a large sweep), then names `report.html` (the full report with its plots,
in the run's artifacts) and the units, then any search that could not separate its candidates.

Both are rewritten by every report (`publish`): the parent never holds a metric the report no
longer shows (e.g. a p-value beside a seed policy's repeated interval after a `--resume`).
"""
from __future__ import annotations

import math
import tempfile
from typing import Any

from sweep.labels import slug
from sweep.results import SweepResults
from sweep.units import in_unit, is_fraction


REPORT_HTML = "report.html"
UI_PORT = 5000  # `mlflow ui`'s default
ML_VIEW = "workflowType=machine_learning"  # MLflow 3's navigation: the model-training view, not GenAI's
_MAX_DESCRIPTION = 5000  # MLflow caps a tag value at 8000 characters


def ui_base(tracking_uri: str) -> str:
    """Where the MLflow UI of `tracking_uri` is: the server itself, else `mlflow ui` on this host."""
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return f"http://127.0.0.1:{UI_PORT}"


def metric_prefix(metric: str) -> str:
    return f"{metric}_pct" if is_fraction(metric) else metric


def parent_metrics(results: SweepResults) -> dict[str, float]:
    metric = results.metric
    prefix = metric_prefix(metric)
    out: dict[str, float] = {}
    for c in results.cells:
        e = c.stats.get(metric)
        if e is not None and e.n:
            name = f"{prefix}.{slug(c.label)}"
            out |= {f"{name}.mean": in_unit(metric, e.mean), f"{name}.ci_low": in_unit(metric, e.low),
                    f"{name}.ci_high": in_unit(metric, e.high)}
    for c in results.primary:
        name = f"{slug(results.labels[c.cell])}_vs_{slug(results.labels[c.baseline])}"
        out |= {f"{prefix}.{name}.diff": in_unit(metric, c.test.mean_diff), f"{prefix}.{name}.ci_low": in_unit(metric, c.diff.low),
                f"{prefix}.{name}.ci_high": in_unit(metric, c.diff.high), f"{metric}.{name}.p": c.test.p_value}
    return out


def parent_description(results: SweepResults) -> str:
    metric = results.metric
    unit = ("in %, differences in percentage points, intervals clipped to the metric's range"
            if is_fraction(metric) else "in the metric's own unit")
    summary = results.summary
    lines = summary.headlines or [f"{len(results.cells)} cells, no baseline: see {REPORT_HTML}."]
    parts = ["\n".join(f"- {line}" for line in lines),
             f"**Full report with plots: `{REPORT_HTML}` (Artifacts tab).** Results {unit}; metrics "
             f"`{metric_prefix(metric)}.<cell>.mean|ci_low|ci_high` and `...<cell>_vs_<baseline>.diff|ci_low|ci_high`."]
    parts += [f"Search, {line}" for line in summary.search_lines[:5]]
    which = ("best-test-R@1 evaluation (test-set selection, the papers' choice)" if results.evaluation == "best_on_test"
             else f"{results.evaluation} evaluation")
    parts.append(f"Statistics on each final trial's {which}.")
    text = "\n\n".join(parts)
    if len(text) > _MAX_DESCRIPTION:
        text = text[:_MAX_DESCRIPTION - 60].rsplit("\n", 1)[0] + f"\n\n... (cut: the rest is in {REPORT_HTML})"
    return text


def publish(runs: Any, results: SweepResults) -> str:
    """Put `results` on the sweep's parent run (`runs`: the sweep's `trial_runs.TrialRuns`, not
    imported here: `tracker` imports this module) so that it holds exactly the metrics this report
    shows; returns the parent's run id (a new one if it had to be replaced).

    A report can drop a metric an earlier report logged: a `--resume` that switched to a seed
    policy has repeated CIs and no p-values, a relabelled cell has another name. MLflow cannot
    delete a metric, and logging NaN over it would still show a stale name (and a NaN that reads
    as "computed, undefined"). So a parent holding a metric this report does not log is replaced:
    a new run with its tags, params and artifacts, the trial runs moved under it, the old one
    deleted (MLflow's trash; `mlflow gc` purges it) and the new id recorded in the trial store.
    The new run says which it replaced (`sweep.replaces`)."""
    tracker, parent = runs.tracker, runs.parent.run_id
    metrics = {k: v for k, v in parent_metrics(results).items() if v is not None and math.isfinite(v)}
    old = tracker.client.get_run(parent)
    if set(old.data.metrics) - set(metrics):
        parent = _replace(runs, old)
    tracker.log_results(parent, metrics, parent_description(results), *results.summary.tag)
    return parent


def _replace(runs: Any, old: Any) -> str:
    tracker, old_id = runs.tracker, old.info.run_id
    tags = {k: v for k, v in old.data.tags.items() if k not in ("mlflow.note.content", "mlflow.parentRunId")}

    def start() -> str:  # the old run's tags, params and artifacts, without its metrics
        new_id = tracker.start_run(old.info.run_name, {**tags, "sweep.replaces": old_id}, old.data.params)
        with tempfile.TemporaryDirectory() as tmp:
            if tracker.client.list_artifacts(old_id):
                tracker.client.log_artifacts(new_id, tracker.client.download_artifacts(old_id, "", tmp))
        return new_id

    new_id = tracker.replace(old_id, start)
    runs.parent.run_id = new_id
    runs.log.parent_recorded(new_id, tracker.tracking_uri, tracker.experiment)
    return new_id
