"""The report's plots, drawn from a `ReportView` (PNG files in the sweep directory).

Every plot is in the report's units (fractions in %, intervals clipped to the metric's range: the
view's `MetricUnit`s)
and stays readable at 1,000 cells: a plot shows at most a page of series or rows, chosen by a
stated rule, and its title says how many of how many it shows (the tables and CSVs have all).

- `ablation_<axis>.png|pdf|csv`, `ablation_<axis>_diff.csv`: the ablation figure of each axis, the
  primary metric per method along it and the paired difference to its baseline (`sweep.figures`);
- `plot_paired_differences.png`: per comparison, the seed-by-seed differences and their 95 %
  interval -- what the paired test looks at;
- `plot_learning_curves.png`: per cell, the primary metric and the loss against the epoch (mean
  over seeds, band = min to max);
- `plot_search_history.png`: each search sample's score in % against the value it tried (one panel
  per searched parameter, up to 3; a log axis for a log-uniform or decade-spanning parameter), with
  its noise (± 1.96 standard errors, `sweep.selection`), per cell with its own marker and offset,
  the chosen sample ringed;
- `plot_search_importance_<cell>.png`: Optuna's parameter importances, only when two or more
  parameters were searched (with one, its importance is 1 by construction).
"""
from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dml_core.evaluation.names import sign as mode_sign
from sweep.figures import pyplot
from sweep.labels import slug
from sweep.plan import SweepPlan
from sweep.report_view import ReportView
from sweep.results import Comparison
from sweep.selection import Z
from sweep.stats import CONFIDENCE

MAX_SERIES = 8  # cells per learning-curve plot / cells in the search history
MAX_ROWS = 30  # comparisons in the paired-differences plot
MAX_IMPORTANCE = 4  # cells with an importance plot
_MARKERS = "osD^v<>PX*"


@dataclass(frozen=True)
class Figure:
    title: str  # the report's section
    path: Path  # the PNG the report shows
    files: tuple[Path, ...] = ()  # written beside it: a vector copy, the data drawn (CSV)


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def _shown(n_shown: int, n_all: int, rule: str) -> str:
    return f"; {n_shown} of {n_all} shown ({rule})" if n_shown < n_all else ""


def plot_ablations(view: ReportView, out_dir: Path) -> list[Figure]:
    """The ablation figure of each sweep axis (`sweep.figures`): PNG for the report, PDF and the
    CSVs of its points beside it."""
    from sweep.figures import axis_view, draw_axis, figure_axes

    figures = []
    for axis in figure_axes(view.results.plan):
        drawn = axis_view(view.results.plan, axis)
        png, *files = draw_axis(view, drawn, out_dir)
        if png.suffix == ".png":
            figures.append(Figure(f"{view.metric.label} against {drawn.label}", png, tuple(files)))
    return figures


def _most_telling(comps: list[Comparison], limit: int) -> list[Comparison]:
    """Up to `limit` comparisons, smallest p first (those with a test before those without)."""
    if len(comps) <= limit:
        return comps
    keep = sorted(comps, key=lambda c: (not math.isfinite(c.test.p_value), c.test.p_value if math.isfinite(c.test.p_value) else 0,
                                        -abs(c.test.mean_diff) if math.isfinite(c.test.mean_diff) else 0))[:limit]
    kept = {id(c) for c in keep}
    return [c for c in comps if id(c) in kept]


def plot_paired_differences(view: ReportView, out_dir: Path) -> list[Figure]:
    """One row per comparison: each seed's difference (cell - baseline) as a dot, the mean with its
    clipped 95 % paired interval, and 0 (no effect) as a line."""
    results, unit = view.results, view.metric
    comps = [c for c in results.primary if c.pairs]
    if not comps:
        return []
    shown = _most_telling(comps, MAX_ROWS)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 1.3 + 0.45 * len(shown)))
    lo, hi = unit.shown_diff_range
    for y, c in enumerate(shown):
        diffs = [unit.scale * d for d in c.diffs.values()]
        ax.scatter(diffs, [y] * len(diffs), s=18, alpha=0.6, color="C0", zorder=3)
        mean = unit.scale * c.test.mean_diff
        if c.diff.has_interval:
            low, high = unit.scale * c.diff.low, unit.scale * c.diff.high
            ax.errorbar([mean], [y], xerr=[[mean - low], [high - mean]], fmt="D", color="C3", capsize=4, zorder=4)
        else:
            ax.scatter([mean], [y], marker="D", color="C3", zorder=4)
    ax.axvline(0, color="gray", lw=1, ls="--")
    ax.set_yticks(range(len(shown)), [c.label for c in shown])
    ax.invert_yaxis()
    left, right = ax.get_xlim()
    ax.set_xlim(max(left, lo), min(right, hi))
    ax.set_xlabel(f"{unit.diff_heading}: dots = seeds, diamond = mean ± {CONFIDENCE:.0%} CI")
    clipped = any(c.diff.clipped for c in shown)
    ax.set_title(f"{results.plan.name}: paired by seed" + (" (CI clipped to the metric's range)" if clipped else "")
                 + _shown(len(shown), len(comps), "smallest p"), fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    return [Figure("Paired differences", _save(fig, out_dir / "plot_paired_differences.png"))]


def plot_learning_curves(view: ReportView, out_dir: Path) -> list[Figure]:
    """Per cell, the primary metric and the loss at each evaluation of the final trials: mean over
    seeds, band = min to max over seeds."""
    results = view.results
    metric = results.metric
    curves: dict[str, dict[int, dict[str, list[float]]]] = {}
    for r in results.records.final():
        if r.finished:
            for h in r.history:
                if "epoch" in h:
                    point = curves.setdefault(r.cell, {}).setdefault(int(h["epoch"]), defaultdict(list))
                    for m in (metric, "loss"):
                        if math.isfinite(h.get(m, math.nan)):
                            point[m].append(h[m])
    if not curves:
        return []
    cells = [c for c in results.cells if c.id in curves]
    shown = cells
    if len(cells) > MAX_SERIES:  # the best and the worst cells by mean
        sign = mode_sign(results.mode)
        ranked = sorted(cells, key=lambda c: -sign * c.stats[metric].mean if metric in c.stats and c.stats[metric].n else math.inf)
        keep = {c.id for c in ranked[:MAX_SERIES // 2] + ranked[-(MAX_SERIES - MAX_SERIES // 2):]}
        shown = [c for c in cells if c.id in keep]
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, panels = plt.subplots(1, 2, figsize=(11, 4.2))
    units = (view.metric, view.loss)
    for i, c in enumerate(shown):
        for ax, u in zip(panels, units):
            pts = sorted((e, v[u.metric]) for e, v in curves[c.id].items() if v.get(u.metric))
            if not pts:
                continue
            epochs = [e for e, _ in pts]
            ax.plot(epochs, [u.scale * (sum(v) / len(v)) for _, v in pts], marker=_MARKERS[i % len(_MARKERS)], ms=4,
                    color=f"C{i % 10}", label=c.label)
            ax.fill_between(epochs, [u.scale * min(v) for _, v in pts], [u.scale * max(v) for _, v in pts],
                            color=f"C{i % 10}", alpha=0.15)
    for ax, u in zip(panels, units):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(u.heading)
        ax.grid(alpha=0.3)
    panels[0].set_title("test split, mean over seeds (band: min-max)"
                        + _shown(len(shown), len(cells), f"{MAX_SERIES // 2} best + worst"), fontsize=9)
    panels[1].set_title("training loss", fontsize=9)
    panels[0].legend(fontsize=8)
    return [Figure("Learning curves", _save(fig, out_dir / "plot_learning_curves.png"))]


def plot_search_history(view: ReportView, out_dir: Path) -> list[Figure]:
    """Each cell's search samples against the value searched (one panel per searched parameter, a
    log axis for a log-uniform or decade-spanning one): score in % with ± Z standard errors of
    scoring noise, a distinct marker and a small offset per cell, the kept sample ringed."""
    results, unit = view.results, view.search_metric
    searched = [(s, points) for s, points in zip(results.search, view.search_points) if any(t.finished for t in s.samples)]
    space = results.plan.spec.search.params if results.plan.spec.search else {}
    if not searched or not space:
        return []
    shown = searched[:MAX_SERIES]
    params = list(space)[:3]
    from sweep.console import describe_param

    plt = pyplot()
    fig, axes = plt.subplots(1, len(params), figsize=(7.5 if len(params) == 1 else 4.2 * len(params), 4.2),
                             squeeze=False, sharey=True)
    for ax, name in zip(axes[0], params):
        place, log = _search_axis(space[name])
        for i, (s, points) in enumerate(shown):
            dodge = (i - (len(shown) - 1) / 2) / max(1, len(shown) - 1) if len(shown) > 1 else 0.0
            xs, ys, err = [], [], [[], []]
            for p in points:
                x = p.params.get(name)
                if x is None:
                    continue
                at = place(x, dodge)
                xs.append(at), ys.append(p.score)
                err[0].append(p.below), err[1].append(p.above)
                if p.kept:
                    ax.scatter([at], [p.score], s=160, facecolors="none", edgecolors=f"C{i % 10}", lw=1.5, zorder=5)
            ax.errorbar(xs, ys, yerr=err, fmt=_MARKERS[i % len(_MARKERS)], ms=6, capsize=3, alpha=0.85, color=f"C{i % 10}",
                        label=s.label + ("" if not s.note else " (within noise)"), zorder=4)
        if log:
            ax.set_xscale("log")
        if space[name].type == "categorical":
            ticks = [place(c, 0.0) for c in space[name].choices]
            ax.set_xticks(ticks, [str(c) for c in space[name].choices])
            ax.minorticks_off()
        ax.set_xlabel(f"{name}: {describe_param(space[name])}")
        ax.grid(alpha=0.3)
    ylo, yhi = unit.shown_range
    bottom, top = axes[0][0].get_ylim()
    axes[0][0].set_ylim(max(bottom, ylo), min(top, yhi + (0.5 if math.isfinite(yhi) else 0)))
    where = "held-out training classes" if results.plan.spec.search.holdout is not None else "test split"
    axes[0][0].set_ylabel(f"search {unit.heading} on {where}")
    more = f"; {len(params)} of {len(space)} parameters" if len(space) > len(params) else ""
    fig.suptitle(f"search: score ± {Z} SE of scoring noise against the value tried; ringed = kept"
                 + _shown(len(shown), len(searched), "first cells") + more, fontsize=9)
    axes[0][0].legend(fontsize=8)
    return [Figure("Search history", _save(fig, out_dir / "plot_search_history.png"))]


def _search_axis(p: Any) -> tuple[Any, bool]:
    """(value, dodge in -0.5..0.5) -> x, and whether the axis is logarithmic: log-uniform ranges and
    numeric choices spanning two decades or more on a log axis, other choices at their index."""
    numeric = p.type != "categorical" or all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in p.choices)
    values = [p.low, p.high] if p.type != "categorical" else list(p.choices)
    log = numeric and min(values) > 0 and (p.type == "loguniform" or max(values) / min(values) >= 100)
    if log:
        return (lambda x, d: float(x) * 10 ** (0.06 * d)), True
    if numeric:
        width = (max(values) - min(values)) or 1.0
        return (lambda x, d: float(x) + 0.02 * width * d), False
    index = {json.dumps(c): i for i, c in enumerate(p.choices)}
    return (lambda x, d: index.get(json.dumps(x), -1) + 0.3 * d), False


def plot_search_importance(view: ReportView, sweep_dir: Path) -> list[Figure]:
    """Optuna's importances per cell, with two or more searched params only (Optuna's style:
    draw it last)."""
    results = view.results
    if not results.plan.spec.search or len(results.plan.spec.search.params) < 2:
        return []
    from sweep.search import load_studies

    studies = load_studies(sweep_dir)
    import optuna
    from optuna.visualization import matplotlib as ovm

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # pinned by this report
    figures = []
    for s in results.search[:MAX_IMPORTANCE]:
        study = studies.get(s.cell)
        if study is None or sum(t.value is not None for t in study.get_trials(deepcopy=False)) < 2:
            continue
        ax = ovm.plot_param_importances(study)
        ax.set_title(f"importance: {s.label}", fontsize=9)
        figures.append(Figure("Search importance", _save(ax.figure, sweep_dir / f"plot_search_importance_{slug(s.label)}.png")))
    return figures


def planned_figures(plan: SweepPlan) -> list[str]:
    """What `draw_all` will draw for `plan`, one line per file (the dry run prints them)."""
    from sweep.figures import planned

    lines = planned(plan)
    if plan.spec.baseline:
        lines.append("plot_paired_differences.png: each comparison's seed-by-seed differences and interval")
    lines.append("plot_learning_curves.png: the primary metric and the loss per epoch, per cell")
    if plan.spec.search:
        lines.append("plot_search_history.png: each cell's search samples, the kept one ringed")
        if len(plan.spec.search.params) >= 2:
            lines.append(f"plot_search_importance_<cell>.png: Optuna's parameter importances (up to {MAX_IMPORTANCE} cells)")
    return lines


def draw_all(view: ReportView, sweep_dir: Path) -> list[Figure]:
    return [*plot_ablations(view, sweep_dir), *plot_paired_differences(view, sweep_dir),
            *plot_learning_curves(view, sweep_dir), *plot_search_history(view, sweep_dir),
            *plot_search_importance(view, sweep_dir)]
