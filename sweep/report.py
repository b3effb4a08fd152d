"""The results of a sweep, from its directory alone (`plan.json`, its records in the trial store, `optuna.journal`).

    python sweep/report.py sweeps/<name>                     # rewrite the report of a (running) sweep
    python sweep/report.py sweeps/<name> --evaluation best   # statistics on each trial's best evaluation

Writes into the sweep directory:

- `trials.parquet|csv`: every trial (search and final), its cell, seed, status, error, searched
  params and metrics -- failed trials included, with their error message;
- `cells.parquet|csv`: per cell and metric, mean and 95 % Student-t interval over seeds (final
  phase, finished trials only);
- `comparisons.parquet|csv`: per cell and metric, the paired difference to its baseline cell
  (paired by seed), its 95 % interval and the paired t-test p-value;
- `report.md`: headlines, the same as tables, the small-n caveats, wall time and trial counts;
- `plot_<axis>.png`: the primary metric per cell along each ablation axis, one point per seed,
  mean and 95 % interval (clipped to the metric's range);
- `plot_paired_differences.png`: per comparison, the seed-by-seed differences and their 95 %
  interval -- what the paired test looks at;
- `plot_learning_curves.png`: per cell, the primary metric and the loss against the epoch (mean
  over seeds, band = min to max);
- `plot_search_history.png` (+ `plot_search_importance_<cell>.png` with 2+ searched params):
  Optuna's optimisation history and parameter importances, from the studies in `optuna.journal`.

Which evaluation of a final trial enters the statistics is `sweep.report.evaluation`: `last`
(default: the model as trained) or `best` (the best evaluation by the primary metric, with every
other metric taken at the same epoch; optimistic, since the epoch is then chosen on the test split)
or `best_on_test` (the papers' rule: the evaluation of best test Recall@1, whatever the primary
metric; shown as test-set selection wherever it is used).
"""
from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # `python sweep/report.py`: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import math
import re
import warnings
from collections import defaultdict
from typing import Any, Optional

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dml_core.evaluation.names import ordered
from dml_core.io import atomic_write_text
from sweep.labels import cell_labels, fmt_duration, fmt_metric, fmt_params, fmt_points, is_fraction, metric_label, slug
from sweep.console import describe_budget
from sweep.records import FINISHED, load_records
from sweep.store import PLAN_FILE
from sweep.plan import FINAL, SEARCH, Cell, reference_cell
from sweep.records import TrialRecord
from sweep.sequential import DECIDED, EQUIVALENT, MAX, NOTHING, OPEN, WIDTH, PolicyView, points
from sweep.spec import FOLD_METRIC
from sweep.stats import ALPHA, CONFIDENCE, PAIRED_T, MeanCI, PairedComparison, mean_ci, paired_comparison, t_multiplier
from sweep.stats import verdict as stats_verdict

EVALUATIONS = ("last", "best", "best_on_test")
# `best_on_test` ranks a trial's evaluations by this, whatever sweep.metric is: the papers' rule.
PAPERS_SELECTION_METRIC = "recall_at_1"


def load_sweep(sweep_dir: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    sweep_dir = Path(sweep_dir)
    plan_file = sweep_dir / PLAN_FILE
    if not plan_file.is_file():
        raise FileNotFoundError(f"{sweep_dir}: not a sweep directory (no {PLAN_FILE})")
    return json.loads(plan_file.read_text()), [t.model_dump(mode="json", exclude={"config"}) for t in load_records(sweep_dir).trials]


def _cells(plan: dict[str, Any]) -> list[Cell]:
    return [Cell(c["arm"], c["coords"], {}) for c in plan["cells"]]


def labels_of(plan: dict[str, Any]) -> dict[str, str]:
    return cell_labels(plan["cells"], (plan.get("sweep") or {}).get("arms"))


def evaluation_of(plan: dict[str, Any], override: Optional[str] = None) -> str:
    """`--evaluation` > `sweep.report.evaluation` > last."""
    return override or ((plan.get("sweep") or {}).get("report") or {}).get("evaluation") or "last"


def select_evaluation(records: list[dict[str, Any]], evaluation: str, metric: str, mode: str) -> list[dict[str, Any]]:
    """The records with `metrics` = the evaluation the statistics use: the last one as recorded,
    or the best one of the history by `metric` (its epoch's metrics, all of them)."""
    if evaluation == "last":
        return records
    if evaluation == "best_on_test":
        metric, mode = PAPERS_SELECTION_METRIC, "max"
    sign = 1 if mode == "max" else -1
    out = []
    for r in records:
        scored = [h for h in r.get("history") or [] if math.isfinite(h.get(metric, math.nan))]
        if r.get("phase") == FINAL and r.get("status") == FINISHED and scored:
            r = {**r, "metrics": max(scored, key=lambda h: sign * h[metric])}
        out.append(r)
    return out


def summary_metrics(records: list[dict[str, Any]]) -> list[str]:
    """Metric names present in finished trials, recall@K first (by K), then the rest."""
    return ordered({k for r in records for k in r.get("metrics", {})} - {"epoch"})


def _by_seed(records: list[dict[str, Any]], cell_id: str, metric: str) -> dict[int, float]:
    return {
        r["seed"]: float(r["metrics"][metric])
        for r in records
        if r.get("phase") == FINAL and r.get("cell") == cell_id and r.get("status") == FINISHED and metric in r.get("metrics", {})
    }


# --------------------------------------------------------------------------- tables


def _column(values: list[Any]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # mixed types (e.g. an axis of ints and strings)
        return pa.array([None if v is None else v if isinstance(v, str) else json.dumps(v) for v in values])


def _table(rows: list[dict[str, Any]]) -> pa.Table:
    columns: dict[str, list[Any]] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, [])
    return pa.table({k: _column([row.get(k) for row in rows]) for k in columns})


def trials_rows(plan: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    order = {c["id"]: i for i, c in enumerate(plan["cells"])}
    metrics = summary_metrics(records)
    rows = []
    for r in sorted(records, key=lambda r: (r.get("phase") != SEARCH, order.get(r.get("cell"), 1e9), r.get("seed", 0), r.get("key", ""))):
        row = {"key": r.get("key"), "label": r.get("label"), "phase": r.get("phase"), "cell": r.get("cell"), "arm": r.get("arm")}
        row |= {axis: (r.get("coords") or {}).get(axis) for axis in plan["axes"]}
        row |= {"seed": r.get("seed"), "status": r.get("status"), "error": r.get("error"), "attempts": r.get("attempts"),
                "epochs": _int_or_none(r.get("metrics", {}).get("epoch")), "params": json.dumps(r.get("params") or {}, sort_keys=True)}
        row |= {m: r.get("metrics", {}).get(m) for m in metrics}
        row |= {"trial_id": r.get("trial_id"), "mlflow_run_id": r.get("mlflow_run_id"), "reused_from": r.get("reused_from")}
        rows.append(row)
    return rows


def _int_or_none(x: Any) -> Optional[int]:
    return None if x is None else int(x)


def cell_rows(plan: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for cell in _cells(plan):
        for metric in summary_metrics(records):
            ci = mean_ci(list(_by_seed(records, cell.id, metric).values()))
            rows.append({"cell": cell.id, "arm": cell.arm, **cell.coords, "metric": metric, "n": ci.n, "mean": ci.mean,
                         "ci_low": ci.low, "ci_high": ci.high})
    return rows


def comparison_rows(plan: dict[str, Any], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per cell and metric, the paired comparison with its baseline cell. Under a seed policy the
    interval is the policy's repeated CI at the look where it stopped (`sweep.sequential`)."""
    if not plan.get("baseline"):
        return []
    cells = _cells(plan)
    view = PolicyView.from_plan_json(plan)
    margin_points = (plan.get("sweep") or {}).get("equivalence_margin")
    typed = [TrialRecord.model_validate(r) for r in records] if view else []
    rows = []
    for metric in summary_metrics(records):
        policy = {(a.quantity.cell, a.quantity.ref): a.comparison for a in view.assess(typed, metric)} if view else {}
        for cell in cells:
            ref = reference_cell(cell, cells, plan["baseline"])
            if ref is None:
                continue
            c = policy.get((cell.id, ref.id)) or paired_comparison(_by_seed(records, cell.id, metric),
                                                                    _by_seed(records, ref.id, metric))
            rows.append({"cell": cell.id, "baseline": ref.id, "metric": metric, "n": c.n, "seeds": json.dumps(c.seeds),
                         "mean_diff": c.mean_diff, "ci_low": c.low, "ci_high": c.high, "p_value": c.p_value,
                         "procedure": c.procedure, "margin": None if margin_points is None else points(metric, margin_points)})
    order = {c.id: i for i, c in enumerate(cells)}
    return sorted(rows, key=lambda r: order[r["cell"]])


# --------------------------------------------------------------------------- headlines


def verdict(c: dict[str, Any], mode: str) -> str:
    """`sweep.stats.verdict` of a comparison row (with its equivalence margin, if any)."""
    seeds = json.loads(c["seeds"]) if "seeds" in c else list(range(c["n"]))
    comparison = PairedComparison(seeds, c["mean_diff"], c["ci_low"], c["ci_high"], c["p_value"], c.get("procedure", PAIRED_T))
    margin = c.get("margin")
    shown = None if margin is None else f"{_scale(c['metric']) * margin:g}" + (" points" if is_fraction(c["metric"]) else "")
    return stats_verdict(comparison, mode, margin=margin, margin_text=shown)


def headline(c: dict[str, Any], labels: dict[str, str], mode: str) -> str:
    """One sentence per comparison, e.g. `n=2 vs n=0: R@1 +1.3 points (95 % CI -4.1 to +6.7,
    p = 0.42, 2 seeds): inconclusive.`"""
    m = c["metric"]
    unit = " points" if is_fraction(m) else ""
    head = f"{labels.get(c['cell'], c['cell'])} vs {labels.get(c['baseline'], c['baseline'])}: {metric_label(m)}"
    if c["n"] == 0:
        return f"{head}: no seed finished in both cells."
    repeated = " repeated" if c.get("procedure", PAIRED_T) != PAIRED_T else ""  # a seed policy's interval
    ci = (f", {CONFIDENCE:.0%}{repeated} CI {fmt_points(m, c['ci_low'])} to {fmt_points(m, c['ci_high'])}"
          if math.isfinite(c["ci_low"]) else "")
    p = f", p = {c['p_value']:.2g}" if math.isfinite(c["p_value"]) else ""
    return f"{head} {fmt_points(m, c['mean_diff'])}{unit} ({c['n']} seed{'s' * (c['n'] > 1)}{ci}{p}): {verdict(c, mode)}."


def headlines(sweep_dir: str | Path, evaluation: Optional[str] = None) -> list[str]:
    """The headline of every comparison on the primary metric (the console's closing block)."""
    plan, records = load_sweep(sweep_dir)
    records = select_evaluation(records, evaluation_of(plan, evaluation), plan["metric"], plan["mode"])
    labels = labels_of(plan)
    return [headline(c, labels, plan["mode"]) for c in comparison_rows(plan, records) if c["metric"] == plan["metric"]]


def parent_results(sweep_dir: str | Path) -> tuple[dict[str, float], str]:
    """What the sweep's MLflow parent run carries: per cell `<metric>.<cell>.mean|ci_low|ci_high`,
    per comparison `<metric>.<cell>_vs_<baseline>.diff|ci_low|ci_high|p` (primary metric, raw
    values as the trials log them), and the headlines as its description."""
    plan, records = load_sweep(sweep_dir)
    evaluation = evaluation_of(plan)
    records = select_evaluation(records, evaluation, plan["metric"], plan["mode"])
    labels, metric = labels_of(plan), plan["metric"]
    out: dict[str, float] = {}
    for r in cell_rows(plan, records):
        if r["metric"] == metric:
            for k in ("mean", "ci_low", "ci_high"):
                out[f"{metric}.{slug(labels[r['cell']])}.{k}"] = r[k]
    for c in comparison_rows(plan, records):
        if c["metric"] == metric:
            name = f"{metric}.{slug(labels[c['cell']])}_vs_{slug(labels[c['baseline']])}"
            out |= {f"{name}.diff": c["mean_diff"], f"{name}.ci_low": c["ci_low"], f"{name}.ci_high": c["ci_high"],
                    f"{name}.p": c["p_value"]}
    lines = headlines(sweep_dir) or [f"{len(plan['cells'])} cells, no baseline: see report.md"]
    which = "best-test-R@1 evaluation (test-set selection, the papers' choice)" if evaluation == "best_on_test" else f"{evaluation} evaluation"
    return out, "\n\n".join([*lines, f"Statistics on each final trial's {which}; see report.md."])


# --------------------------------------------------------------------------- markdown


def _ci_text(metric: str, ci: MeanCI) -> str:
    if ci.n == 0:
        return "-"
    if ci.n == 1:
        return f"{fmt_metric(metric, ci.mean)} (n=1)"
    return f"{fmt_metric(metric, ci.mean)} ± {fmt_metric(metric, ci.half_width)}"


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    def clean(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(clean(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def _unit(metric: str) -> str:
    return f"{metric_label(metric)} (%)" if is_fraction(metric) else metric_label(metric)


def describe_baseline(baseline: dict[str, Any]) -> str:
    """`{expansion.n_inner_pts: 0}` -> `expansion.n_inner_pts = 0`; `{arm: {ee: ms}}` -> `arm ee -> ms`."""
    parts = []
    for k, v in baseline.items():
        if isinstance(v, dict):
            parts.append(f"{k} " + ", ".join(f"{a} -> {b}" for a, b in v.items()))
        else:
            parts.append(f"{k} = {v}")
    return "; ".join(parts)


def render_markdown(plan: dict[str, Any], records: list[dict[str, Any]], meta: dict[str, Any], plots: dict[str, list[Path]],
                    evaluation: str, search_notes: list[str]) -> str:
    labels, metric = labels_of(plan), plan["metric"]
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for r in records:
        counts[(str(r.get("phase")), str(r.get("status")))] += 1
    phases = [ph for ph in (SEARCH, FINAL) if any(p == ph for p, _ in counts)]
    tally = "; ".join(f"{ph} " + ", ".join(f"{n} {st.lower()}" for (p, st), n in sorted(counts.items()) if p == ph)
                      for ph in phases)
    trial_time = sum(float(r.get("metrics", {}).get("time_s", 0.0)) for r in records)
    which = {"last": "its **last** evaluation (the model as trained)",
             "best": f"its **best** evaluation by {metric_label(metric)} (optimistic: the epoch is chosen on the test split)",
             "best_on_test": f"its evaluation of best {metric_label(PAPERS_SELECTION_METRIC)} -- **test-set selection**, "
                             "the papers' choice (the epoch is chosen on the test split; optimistic)"}[evaluation]
    out = [f"# Sweep `{plan['name']}`", "",
           f"Source `{plan['source']}`; {len(plan['cells'])} cells x seeds "
           f"{'from ' + str(plan['seeds']) + ' by the seed policy below' if PolicyView.from_plan_json(plan) else plan['seeds']}; primary metric "
           f"{metric_label(metric)} (`{metric}`, {plan['mode']}), in % where it is a fraction.",
           f"Trials: {tally or 'none yet'}. Wall time {fmt_duration(float(meta.get('wall_s', math.nan)))} "
           f"(driver, all sessions); trial time {fmt_duration(trial_time)} (sum over trials).",
           f"Each final trial enters the statistics with {which}; set `sweep.report.evaluation: last|best|best_on_test` "
           "or `python sweep/report.py DIR --evaluation best`.", ""]
    comps = [c for c in comparison_rows(plan, records) if c["metric"] == metric] if plan.get("baseline") else []
    if comps:
        out += ["## Headlines", ""] + [f"- {headline(c, labels, plan['mode'])}" for c in comps] + [""]
    out += _policy_section(plan, records, labels)
    out += _cells_section(plan, records, labels)
    if plan.get("baseline"):
        out += _comparison_section(plan, records, labels)
    if plan.get("search"):
        out += _search_section(plan, records, meta.get("best", {}), labels, search_notes)
    for title, paths in plots.items():
        if paths:
            out += [f"## {title}", ""] + [f"![{p.stem}]({p.name})" for p in paths] + [""]
    out += _trials_section(plan, records)
    return "\n".join(out)


def _shown_metrics(plan: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    metric, metrics = plan["metric"], summary_metrics(records)
    shown = [m for m in metrics if m.startswith("recall_at_")][:2] + [m for m in ("map_at_r", "nmi") if m in metrics]
    return [metric] + [m for m in shown if m != metric] if metric in metrics else shown


def _policy_section(plan: dict[str, Any], records: list[dict[str, Any]], labels: dict[str, str]) -> list[str]:
    """A seed policy's rule, procedure and where each comparison stopped."""
    view = PolicyView.from_plan_json(plan)
    if view is None:
        return []
    reasons = {OPEN: "open (the sweep stopped first)", DECIDED: "decided", EQUIVALENT: "equivalent",
               WIDTH: "interval narrow enough", MAX: "max seeds reached", NOTHING: "no comparison"}
    rows = [[labels.get(a.quantity.cell, a.quantity.cell) + (f" vs {labels.get(a.quantity.ref, a.quantity.ref)}" if a.quantity.ref else ""),
             a.seeds_run, f"{a.look + 1} of {len(view.design.looks)}", reasons[a.reason]]
            for a in view.assess([TrialRecord.model_validate(r) for r in records])]
    return ["## Seed policy", "", f"Rule: {view.rule()}.", "",
            f"Procedure: {view.design.description}. Each comparison's interval is the repeated {CONFIDENCE:.0%} CI of the look "
            "where it stopped: it holds whatever the stopping; the per-cell intervals are plain Student-t over the seeds "
            "each cell ran (descriptive).", "",
            _md_table(["comparison", "seeds", "look", "stopped because"], rows), ""]


def _cells_section(plan: dict[str, Any], records: list[dict[str, Any]], labels: dict[str, str]) -> list[str]:
    shown = _shown_metrics(plan, records)
    rows = [[labels[cell.id], len(_by_seed(records, cell.id, plan["metric"]))]
            + [_ci_text(m, mean_ci(list(_by_seed(records, cell.id, m).values()))) for m in shown]
            for cell in _cells(plan)]
    key = "; ".join(f"{labels[c.id]} = `{c.id}`" for c in _cells(plan) if labels[c.id] != c.id)
    return [f"## Per cell: mean ± {CONFIDENCE:.0%} Student-t half-width over seeds (final phase)", "",
            _md_table(["cell", "seeds", *(_unit(m) for m in shown)], rows), "",
            *([f"Cells: {key}.", ""] if key else [])]


def _comparison_section(plan: dict[str, Any], records: list[dict[str, Any]], labels: dict[str, str]) -> list[str]:
    metric, n = plan["metric"], len(plan["seeds"])
    caveat = (f"With {n} seeds the interval is the mean difference ± {t_multiplier(n):.2f} standard errors: wide, "
              "and the test has little power" if n >= 2 else "With one seed there is no interval and no test")
    if PolicyView.from_plan_json(plan):
        caveat = "Under the seed policy the interval is the repeated CI of the look where the comparison stopped (see Seed policy)"
    unit = "points" if is_fraction(metric) else "difference"
    rows = [[labels[c["cell"]], labels[c["baseline"]], c["n"], fmt_points(metric, c["mean_diff"]),
             f"[{fmt_points(metric, c['ci_low'])}, {fmt_points(metric, c['ci_high'])}]",
             "-" if not math.isfinite(c["p_value"]) else f"{c['p_value']:.2g}", verdict(c, plan["mode"])]
            for c in comparison_rows(plan, records) if c["metric"] == metric]
    return [f"## Paired comparison with the baseline ({describe_baseline(plan['baseline'])}) on {metric_label(metric)}", "",
            "Differences are cell - baseline, paired by seed; p from a two-sided paired t-test "
            f"(`scipy.stats.ttest_rel`). {caveat}; p-values are not corrected for the number of cells compared. "
            f"Verdict: better/worse when p < {ALPHA:.2g} and the interval excludes 0{_equivalence_note(plan)}, else inconclusive.", "",
            _md_table(["cell", "baseline", "n", f"mean diff ({unit})", f"{CONFIDENCE:.0%} CI", "p", "verdict"], rows), ""]


def _equivalence_note(plan: dict[str, Any]) -> str:
    margin = (plan.get("sweep") or {}).get("equivalence_margin")
    if margin is None:
        return ""
    unit = " points" if is_fraction(plan["metric"]) else ""
    return (f"; equivalent within ±{margin:g}{unit} when the interval lies inside it (two one-sided tests, TOST, "
            "each at half the interval's error rate)")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


def _search_section(plan: dict[str, Any], records: list[dict[str, Any]], best: dict[str, Any], labels: dict[str, str],
                    notes: list[str]) -> list[str]:
    """What the search chose per cell (the runner's choice, kept in the trial store)."""
    search = plan["search"] or {}
    folds = search.get("folds")
    metric = search.get("metric") or (FOLD_METRIC if folds else plan["metric"])
    on = "held-out training classes" if search.get("holdout") is not None else "the test split"
    if folds:
        on = f"{folds} class-disjoint folds of the training classes, scored by the fold mean"
    rows = []
    for cell in _cells(plan):
        tried = [r for r in records if r.get("phase") == SEARCH and r.get("cell") == cell.id]
        finished = sum(r.get("status") == FINISHED for r in tried)
        chosen = best.get(cell.id)
        row = [labels[cell.id], f"{finished}/{len(tried)}", fmt_params(chosen["params"]) if chosen else "-",
               fmt_metric(metric, chosen["value"]) if chosen else "-"]
        if folds:
            won = next((r for r in tried if chosen and r.get("trial_id") == chosen.get("trial_id")), None)
            scores = [(won or {}).get("metrics", {}).get(f"fold{i}_{metric}") for i in range(folds)]
            row.append(" / ".join(fmt_metric(metric, v) if v is not None else "-" for v in scores))
        rows.append(row)
    head = ["cell", "finished", "best params", f"{_unit(metric)} (search{', fold mean' if folds else ''})"]
    head += [f"{_unit(metric)} per fold"] if folds else []
    budget = plan.get("search_budget")
    return [f"## Search (per cell, on {on})", "",
            *([_sentence(describe_budget(budget, folds)), ""] if budget else []),
            _md_table(head, rows), "",
            *(line for n in notes for line in (n, ""))]


def _trials_section(plan: dict[str, Any], records: list[dict[str, Any]]) -> list[str]:
    metric = plan["metric"]
    rows = [[r["label"] or r["key"], r["phase"], r["status"], fmt_metric(metric, r.get(metric)),
             "-" if r["epochs"] is None else r["epochs"], fmt_params(json.loads(r["params"])), (r["error"] or "")[:200]]
            for r in trials_rows(plan, records)]
    return ["## Trials", "", "Search trials show their search score (held-out classes when the search holds some "
            "out), final trials their test-split score.", "",
            _md_table(["trial", "phase", "status", _unit(metric), "epoch", "params", "error"], rows), ""]


# --------------------------------------------------------------------------- plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _scale(metric: str) -> float:
    return 100.0 if is_fraction(metric) else 1.0


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_axes(plan: dict[str, Any], records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Primary metric per cell along each ablation axis: every seed as a dot, the mean with its
    95 % interval clipped to the metric's range (a recall cannot exceed 100 %). Categorical x:
    axes like 0,1,2,4,8 read best evenly."""
    plt = _pyplot()
    metric, cells, labels = plan["metric"], _cells(plan), labels_of(plan)
    k = _scale(metric)
    lo, hi = (0.0, 100.0) if is_fraction(metric) else (-math.inf, math.inf)
    axes = plan["axes"] or (["arm"] if plan["arms"] else [])
    paths = []
    for axis in axes:
        values = list(dict.fromkeys(json.dumps(c.get(axis)) for c in cells))
        lines: dict[str, list[tuple[int, Cell]]] = defaultdict(list)
        for cell in cells:
            others = [("arm", cell.arm)] * (axis != "arm" and cell.arm is not None)
            others += [(a, v) for a, v in cell.coords.items() if a != axis]
            label = " ".join(f"{v}" if a == "arm" else f"{a.rsplit('.', 1)[-1]}={v}" for a, v in others) or metric_label(metric)
            lines[label].append((values.index(json.dumps(cell.get(axis))), cell))
        fig, ax = plt.subplots(figsize=(6, 4))
        for i, (label, points) in enumerate(lines.items()):
            points.sort(key=lambda p: p[0])
            dodge = 0.08 * (i - (len(lines) - 1) / 2)  # lines sharing an x stay visible
            xs, ys, err = [], [], [[], []]
            for x, cell in points:
                seeds = _by_seed(records, cell.id, metric)
                ci = mean_ci(list(seeds.values()))
                if not ci.n:
                    continue
                ax.scatter([x + dodge - 0.04] * len(seeds), [k * v for v in seeds.values()], s=14, alpha=0.5, color=f"C{i}")
                mean = k * ci.mean
                low = mean if math.isnan(ci.low) else max(lo, k * ci.low)
                high = mean if math.isnan(ci.high) else min(hi, k * ci.high)
                xs.append(x + dodge), ys.append(mean), err[0].append(mean - low), err[1].append(high - mean)
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label, color=f"C{i}")
        ax.set_xticks(range(len(values)), [json.loads(v) for v in values])
        ax.set_xlabel(axis)
        ax.set_ylabel(f"{_unit(metric)}: seeds, mean ± {CONFIDENCE:.0%} CI")
        ax.set_title(f"{plan['name']}: {len(plan['seeds'])} seeds per cell (CI clipped to the metric's range)", fontsize=9)
        ax.grid(alpha=0.3)
        if set(lines) != {metric_label(metric)}:
            ax.legend(fontsize=8)
        paths.append(_save(fig, out_dir / f"plot_{re.sub(r'[^A-Za-z0-9_.-]', '_', axis)}.png"))
    return paths


def plot_paired_differences(plan: dict[str, Any], records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """One row per comparison: each seed's difference (cell - baseline) as a dot, the mean with
    its 95 % paired interval, and 0 (no effect) as a line."""
    comps = [c for c in comparison_rows(plan, records) if c["metric"] == plan["metric"] and c["n"]]
    if not comps:
        return []
    plt = _pyplot()
    metric, labels = plan["metric"], labels_of(plan)
    k = _scale(metric)
    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.6 * len(comps)))
    for y, c in enumerate(comps):
        cell, base = _by_seed(records, c["cell"], metric), _by_seed(records, c["baseline"], metric)
        diffs = [k * (cell[s] - base[s]) for s in json.loads(c["seeds"])]
        ax.scatter(diffs, [y] * len(diffs), s=18, alpha=0.6, color="C0", zorder=3)
        mean = k * c["mean_diff"]
        if math.isfinite(c["ci_low"]):
            ax.errorbar([mean], [y], xerr=[[mean - k * c["ci_low"]], [k * c["ci_high"] - mean]], fmt="D", color="C3",
                        capsize=4, zorder=4)
        else:
            ax.scatter([mean], [y], marker="D", color="C3", zorder=4)
    ax.axvline(0, color="gray", lw=1, ls="--")
    ax.set_yticks(range(len(comps)), [f"{labels[c['cell']]} - {labels[c['baseline']]}" for c in comps])
    ax.invert_yaxis()
    unit = " (points)" if is_fraction(metric) else ""
    ax.set_xlabel(f"{metric_label(metric)} difference{unit} (dots: seeds; diamond: mean ± {CONFIDENCE:.0%} CI)")
    ax.set_title(f"{plan['name']}: paired by seed", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    return [_save(fig, out_dir / "plot_paired_differences.png")]


def plot_learning_curves(plan: dict[str, Any], records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Per cell, the primary metric and the loss at each evaluation of the final trials: mean over
    seeds, band = min to max over seeds."""
    metric, labels = plan["metric"], labels_of(plan)
    curves: dict[str, dict[int, dict[str, list[float]]]] = {}
    for r in records:
        if r.get("phase") == FINAL and r.get("status") == FINISHED:
            for h in r.get("history") or []:
                if "epoch" in h:
                    point = curves.setdefault(r["cell"], {}).setdefault(int(h["epoch"]), defaultdict(list))
                    for m in (metric, "loss"):
                        if math.isfinite(h.get(m, math.nan)):
                            point[m].append(h[m])
    if not curves:
        return []
    plt = _pyplot()
    fig, panels = plt.subplots(1, 2, figsize=(10, 4))
    for i, cell in enumerate(c.id for c in _cells(plan)):
        for ax, m in zip(panels, (metric, "loss")):
            pts = sorted((e, v[m]) for e, v in curves.get(cell, {}).items() if v.get(m))
            if not pts:
                continue
            k, epochs = _scale(m), [e for e, _ in pts]
            ax.plot(epochs, [k * sum(v) / len(v) for _, v in pts], marker="o", ms=3, color=f"C{i}", label=labels[cell])
            ax.fill_between(epochs, [k * min(v) for _, v in pts], [k * max(v) for _, v in pts], color=f"C{i}", alpha=0.15)
    from matplotlib.ticker import MaxNLocator

    for ax, m in zip(panels, (metric, "loss")):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(_unit(m))
        ax.grid(alpha=0.3)
    panels[0].set_title(f"test split, mean over seeds (band: min-max)", fontsize=9)
    panels[1].set_title("training loss", fontsize=9)
    panels[0].legend(fontsize=8)
    return [_save(fig, out_dir / "plot_learning_curves.png")]


def plot_search(sweep_dir: Path, plan: dict[str, Any]) -> tuple[list[Path], list[str]]:
    """Optuna's optimisation history (all cells) and, with 2+ searched params, their importances
    per cell; plus notes for the report (e.g. every cell drew the same candidates)."""
    from sweep.search import load_studies

    studies = load_studies(sweep_dir)
    if not studies:
        return [], []
    import optuna
    from optuna.visualization import matplotlib as ovm

    plt = _pyplot()
    labels = labels_of(plan)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # optuna.visualization.matplotlib is flagged experimental; the report pins what it draws.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    notes = [f"Optuna studies: `{sweep_dir.name}/optuna.journal`, one per cell, named by cell id; open one with "
             "`optuna.load_study(study_name=CELL_ID, storage=sweep.search.study_storage(DIR))` or "
             f"`optuna-dashboard {sweep_dir / 'optuna.journal'}`."]
    drawn = {name: [tuple(sorted(t.params.items())) for t in s.get_trials(deepcopy=False)] for name, s in studies.items()}
    if len(drawn) > 1 and len({tuple(v) for v in drawn.values()}) == 1:
        notes.append("Every cell drew the same candidate values (each study's sampler starts from the same seed, and "
                     "TPE proposes at random until it has 10 results), so the cells differ only in how the same "
                     "candidates scored.")
    paths = []
    ordered = [s for cid, s in studies.items() if cid in labels] or list(studies.values())
    done = [s for s in ordered if any(t.value is not None for t in s.get_trials(deepcopy=False))]
    if done:
        metric = (plan.get("search") or {}).get("metric") or plan["metric"]
        ax = ovm.plot_optimization_history(done, target_name=f"search {metric_label(metric)}")
        legend = ax.get_legend()
        for text in legend.get_texts() if legend else []:  # the legend names studies by cell id
            for cid in sorted(labels, key=len, reverse=True):
                text.set_text(text.get_text().replace(cid, labels[cid]))
        paths.append(_save(ax.figure, sweep_dir / "plot_search_history.png"))
    if len((plan.get("search") or {}).get("params") or {}) == 1:
        notes.append("One parameter was searched: its importance is 1 by construction.")
    for cid, s in studies.items():
        if sum(t.value is not None for t in s.get_trials(deepcopy=False)) < 2:
            continue
        ax = ovm.plot_param_importances(s)
        ax.set_title(f"importance: {labels.get(cid, cid)}")
        paths.append(_save(ax.figure, sweep_dir / f"plot_search_importance_{slug(labels.get(cid, cid))}.png"))
    return paths, notes


# --------------------------------------------------------------------------- entry points


def write_report(sweep_dir: str | Path, evaluation: Optional[str] = None) -> list[Path]:
    """Write tables, markdown and plots into `sweep_dir`; return the files written."""
    sweep_dir = Path(sweep_dir)
    plan, records = load_sweep(sweep_dir)
    evaluation = evaluation_of(plan, evaluation)
    records = select_evaluation(records, evaluation, plan["metric"], plan["mode"])
    files = []
    for name, rows in (("trials", trials_rows(plan, records)), ("cells", cell_rows(plan, records)),
                       ("comparisons", comparison_rows(plan, records))):
        if rows:
            table = _table(rows)
            pq.write_table(table, sweep_dir / f"{name}.parquet")
            pacsv.write_csv(table, sweep_dir / f"{name}.csv")  # previewable in MLflow's artifact view
            files += [sweep_dir / f"{name}.parquet", sweep_dir / f"{name}.csv"]
    plots = {"Per cell": plot_axes(plan, records, sweep_dir),
             "Paired differences": plot_paired_differences(plan, records, sweep_dir),
             "Learning curves": plot_learning_curves(plan, records, sweep_dir)}
    # Last: optuna's plots switch matplotlib to its own style for the rest of the process.
    plots["Search history"], notes = plot_search(sweep_dir, plan)
    md = sweep_dir / "report.md"
    facts = load_records(sweep_dir).meta
    meta = {"best": {k: v.model_dump() for k, v in facts.best.items()}, "wall_s": facts.wall_s}
    atomic_write_text(md, render_markdown(plan, records, meta, plots, evaluation, notes))
    return [md, *files, *(p for ps in plots.values() for p in ps)]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["table"]:  # `dml-report table SWEEP_DIR...`: the paper's table across sweeps
        from sweep.table import main as table_main

        return table_main(argv[1:])
    parser = argparse.ArgumentParser(description="Write the report of a sweep directory (or `table SWEEP_DIR...`).")
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--evaluation", choices=EVALUATIONS, default=None,
                        help="which evaluation of each final trial the statistics use (default: sweep.report.evaluation)")
    args = parser.parse_args(argv)
    try:
        files = write_report(args.sweep_dir, args.evaluation)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print((args.sweep_dir / "report.md").read_text())
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
