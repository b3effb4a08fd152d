"""The ablation figure of each sweep axis, drawn as the papers draw it (Ko & Gu, CVPR 2020, Fig. 5:
R@1 against the number of synthetic points, n = 0 being the loss alone).

Per grid axis (the arms, for a sweep without a grid), from a `ReportView` (its units and names worked out once):

- `ablation_<axis>.png` and `ablation_<axis>.pdf` (for a paper). Top panel: the primary metric
  against the axis, one line per method with its 95 % interval as a band and every seed as a faint
  dot. A cell that takes no part in the axis (the loss alone, on an expansion's count) is drawn at
  `sweep.axes.<axis>.others_at` (n = 0) when the sweep says where it sits, else as a horizontal
  line with its band. A method and its baseline share a colour; the baseline is dashed with open
  markers. Bottom panel: each comparison's paired difference to its baseline along the same axis
  with its interval, the 0 line, and the ±margin band when `sweep.equivalence_margin` is set.
- `ablation_<axis>.csv` and `ablation_<axis>_diff.csv`: the points drawn, columns
  `series,x,mean,ci_low,ci_high,seeds`, in the report's unit (% for fractions, differences in
  percentage points), so a user can redraw the figure in their own style. An empty `x` is a series
  that does not vary along the axis (drawn as a horizontal line); an empty interval, fewer than
  two seeds.

The x axis reads a label (`sweep.axes.<axis>.label`, else `labels.axis_label`) and is spaced by
log2 when its values are powers of two (a 0 then sits one step left of the smallest power).
Series are named by method (`labels.method_of`: `MS+EE`), else by arm, plus any other grid axis
that varies (`MS+EE dim=16`). The names are a function of the plan alone, so `--dry-run` lists
the figures before anything is trained (`planned`).
"""
from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from dml_core.evaluation.names import sign as mode_sign
from sweep.labels import axis_label, fmt_value, metric_label, method_of, short_key
from sweep.plan import Cell, SweepPlan, yaml_value
from sweep.baseline import references
from sweep.report_view import ReportView
from sweep.stats import CONFIDENCE

CSV_COLUMNS = ("series", "x", "mean", "ci_low", "ci_high", "seeds")
MAX_SERIES = 8  # lines per panel; the CSVs hold every series
MAX_TICKS = 20  # labelled values on the x axis
DIFFERENCE = " - "  # a difference series: `MS+EE - MS`


@dataclass(frozen=True)
class Point:
    """One mean with its interval at one x, in the report's unit."""

    series: str
    x: Any  # the axis value; None: the series does not vary along the axis
    mean: float
    low: float  # NaN with fewer than two seeds
    high: float
    seeds: int
    dots: tuple[float, ...] = ()  # each seed's value (or paired difference)
    x_text: str = ""  # the axis value as its tick reads

    def row(self) -> list[Any]:
        def num(v: float) -> Any:
            return "" if not math.isfinite(v) else round(v, 4)

        return [self.series, "" if self.x is None else self.x, num(self.mean), num(self.low), num(self.high), self.seeds]


@dataclass(frozen=True)
class AxisView:
    """How one axis is drawn: its name, which series each cell belongs to, and where cells that
    take no part in the axis sit."""

    axis: str
    label: str
    others_at: Any  # None: such cells are horizontal lines
    series: dict[str, str]  # cell id -> series name
    on_axis: dict[str, bool]  # cell id -> the cell has a value on the axis
    baseline_of: dict[str, str]  # series -> the series its cells are compared with
    short: str  # the axis's short name (`n`), in a legend's `(n = 0)`
    x_text: dict[str, str]  # cell id -> its value on the axis as a tick reads (`fmt_value`)

    def x_of(self, cell: Cell) -> Any:
        return cell.get(self.axis) if self.on_axis[cell.id] else self.others_at


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, imported on first use (the driver's checks run
    without it); `plots.py` draws with it too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_axes(plan: SweepPlan) -> list[str]:
    """The axes that get an ablation figure: the grid's, else the arms."""
    return list(plan.spec.grid) or (["arm"] if plan.spec.arms else [])


def file_stem(axis: str) -> str:
    return "ablation_" + re.sub(r"[^A-Za-z0-9_.-]", "_", axis)


def axis_view(plan: SweepPlan, axis: str) -> AxisView:
    """How `axis` is drawn for `plan`; a function of the plan alone (the dry run lists it)."""
    spec = plan.spec
    described = spec.axes.get(axis)
    on_axis = {c.id: axis == "arm" or (axis in c.coords and c.coords[axis] is not None) for c in plan.cells}
    varying = [a for a in spec.grid if a != axis
               and len({yaml_value(c.coords[a]) for c in plan.cells if a in c.coords}) > 1]
    method = _methods(plan) if axis != "arm" else {}
    others_at = described.others_at if described else None
    series, x_text = {}, {}
    for c in plan.cells:
        parts = [method[c.id]] if method.get(c.id) else []
        parts += [f"{short_key(a)}={fmt_value(c.coords[a])}" for a in varying if c.coords.get(a) is not None]
        series[c.id] = " ".join(parts) or metric_label(spec.metric)
        x_text[c.id] = fmt_value(c.get(axis) if on_axis[c.id] else others_at)
    baseline_of: dict[str, str] = {}
    for cell_id, ref in references(plan.cells, plan.spec.baseline).items():
        if series[ref.id] != series[cell_id]:
            baseline_of.setdefault(series[cell_id], series[ref.id])
    return AxisView(axis, axis_label(axis, described.label if described else None), others_at, series, on_axis,
                    baseline_of, short_key(axis), x_text)


def _methods(plan: SweepPlan) -> dict[str, str]:
    """Cell id -> the method it runs (`MS+EE`), or the arm's name where the methods do not tell
    the arms apart; "" when every cell runs the same method."""
    by_cell = {c.id: method_of(c.overrides, plan.base)[0] for c in plan.cells}
    if plan.spec.arms:
        arms_of: dict[str, set[Optional[str]]] = defaultdict(set)
        for c in plan.cells:
            arms_of[by_cell[c.id]].add(c.arm)
        if "" in arms_of or any(len(arms) > 1 for arms in arms_of.values()):
            return {c.id: c.arm or "" for c in plan.cells}
    return by_cell if len(set(by_cell.values())) > 1 else {}


# --------------------------------------------------------------------------- data


def axis_points(report: ReportView, view: AxisView) -> tuple[list[Point], list[Point]]:
    """The top panel's points (per cell) and the bottom panel's (per comparison), plan order, in the
    report's unit."""
    results, metric, scale = report.results, report.metric.metric, report.metric.scale
    points = []
    for c in results.cells:
        e = c.stats.get(metric)
        if e is None or not e.n:
            continue
        points.append(Point(view.series[c.id], view.x_of(c.cell), scale * e.mean, scale * e.low, scale * e.high, e.n,
                            tuple(scale * v for v in c.values[metric].values()), view.x_text[c.id]))
    by_id = {c.id: c.cell for c in results.cells}
    diffs = []
    for comp in results.primary:
        if not comp.pairs:
            continue
        cell, ref = by_id[comp.cell], by_id[comp.baseline]
        if view.axis == "arm":
            name = f"{results.labels[comp.cell]}{DIFFERENCE}{results.labels[comp.baseline]}"
        elif view.series[cell.id] == view.series[ref.id]:  # a baseline on the same curve: name its value
            name = f"{view.series[cell.id]}{DIFFERENCE}{view.short}={view.x_text[ref.id]}"
        else:
            name = f"{view.series[cell.id]}{DIFFERENCE}{view.series[ref.id]}"
        diffs.append(Point(name, view.x_of(cell), scale * comp.test.mean_diff, scale * comp.diff.low,
                           scale * comp.diff.high, comp.pairs, tuple(scale * d for d in comp.diffs.values()),
                           view.x_text[cell.id]))
    return points, diffs


def write_csv(points: list[Point], path: Path) -> Path:
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(CSV_COLUMNS)
        out.writerows(p.row() for p in points)
    return path


# --------------------------------------------------------------------------- x positions


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _powers_of_two(values: list[Any]) -> bool:
    positive = [v for v in values if v != 0]
    return len(set(positive)) >= 2 and all(v > 0 and float(math.log2(v)).is_integer() for v in positive)


def x_scale(values: list[Any]) -> tuple[Callable[[Any], float], str]:
    """Position of each axis value, and how the axis is spaced: `log2` (powers of two; a 0 one
    step left of the smallest), `linear` (other numbers) or `categorical` (in order)."""
    if values and all(_is_number(v) for v in values):
        if all(v >= 0 for v in values) and _powers_of_two(values):
            zero = math.log2(min(v for v in values if v > 0)) - 1
            return (lambda v: math.log2(v) if v > 0 else zero), "log2"
        return float, "linear"
    order = {yaml_value(v): i for i, v in enumerate(dict.fromkeys(yaml_value(v) for v in values))}
    return (lambda v: float(order[yaml_value(v)])), "categorical"


# --------------------------------------------------------------------------- drawing


def draw_axis(report: ReportView, view: AxisView, out_dir: Path) -> list[Path]:
    """The figure (PNG + PDF) and its two CSVs for one axis (`axis_view`); the files written (the PNG first)."""
    points, diffs = axis_points(report, view)
    stem = out_dir / file_stem(view.axis)
    files = [write_csv(points, stem.with_name(stem.name + ".csv")), write_csv(diffs, stem.with_name(stem.name + "_diff.csv"))]
    if not points:
        return files
    fig = ablation_figure(report, view, points, diffs)
    png, pdf = stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")
    fig.savefig(png, dpi=120)
    fig.savefig(pdf)
    pyplot().close(fig)
    return [png, pdf, *files]


def ablation_figure(report: ReportView, view: AxisView, points: list[Point], diffs: list[Point]) -> Any:
    """The two panels as a matplotlib figure (at most MAX_SERIES methods, the title says so)."""
    results, unit = report.results, report.metric
    shown = _shown_series(points, view, mode_sign(results.mode))
    hidden = len({p.series for p in points}) - len(shown)
    points = [p for p in points if p.series in shown]
    diffs = [d for d in diffs if d.series.split(DIFFERENCE)[0] in shown or view.axis == "arm"][:MAX_SERIES * 8]
    xs = [p.x for p in [*points, *diffs] if p.x is not None]
    pos, spacing = x_scale(xs)
    plt = pyplot()
    if diffs:
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 7.2), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    else:
        fig, top = plt.subplots(figsize=(7.5, 4.6))
        bottom = None
    colours = _colours(view, shown)
    lines = spacing != "categorical"  # no line or band between methods that share no axis
    _panel(top, points, view, pos, colours, connect=True, lines=lines)
    _clip_ylim(top, *unit.shown_range)
    top.set_ylabel(unit.heading)
    n_seeds = sorted({p.seeds for p in points})
    seeds = f"{n_seeds[0]}" if len(n_seeds) == 1 else f"{n_seeds[0]}-{n_seeds[-1]}"
    interval = f", {CONFIDENCE:.0%} CI band" if lines else f" ± {CONFIDENCE:.0%} CI"
    top.set_title(f"{results.plan.name}: {unit.label} against {view.label}; mean{interval}, "
                  f"dots = {seeds} seeds" + (f"; {len(shown)} of {len(shown) + hidden} methods shown (best by mean)"
                                              if hidden else ""), fontsize=9)
    top.legend(fontsize=8, loc="best")
    last = top
    if bottom is not None:
        margin = results.plan.spec.equivalence_margin
        if margin is not None:
            bottom.axhspan(-margin, margin, color="tab:green", alpha=0.12, lw=0,
                           label=f"equivalence margin ±{margin:g}")
        bottom.axhline(0, color="0.3", lw=1)
        names = list(dict.fromkeys(d.series for d in diffs))
        _panel(bottom, diffs, view, pos, {n: colours.get(n.split(DIFFERENCE)[0], f"C{i % 10}") for i, n in enumerate(names)},
               connect=False, lines=lines)
        _clip_ylim(bottom, *unit.shown_diff_range)
        bottom.set_ylabel(f"paired difference ({unit.diff_unit or unit.label})")
        bottom.set_title(f"{unit.label} minus its baseline, paired by seed: mean{interval}, "
                         "dots = seed pairs", fontsize=9)
        bottom.legend(fontsize=8, loc="best")
        last = bottom
    ticks = sorted({pos(p.x): p.x_text for p in [*points, *diffs] if p.x is not None}.items())
    step = -(-len(ticks) // MAX_TICKS)
    last.set_xticks([t for t, _ in ticks[::step]], [text for _, text in ticks[::step]])
    last.set_xlabel(view.label + {"log2": " (log2 spacing)", "linear": "", "categorical": ""}[spacing])
    if len(ticks) == 1:
        last.set_xlim(ticks[0][0] - 1, ticks[0][0] + 1)
    fig.tight_layout()
    return fig


def _shown_series(points: list[Point], view: AxisView, sign: int) -> list[str]:
    """Every series up to MAX_SERIES; past that the best by mean, with their baselines."""
    names = list(dict.fromkeys(p.series for p in points))
    if len(names) <= MAX_SERIES:
        return names
    best = defaultdict(lambda: -math.inf)
    for p in points:
        best[p.series] = max(best[p.series], sign * p.mean)
    keep: list[str] = []
    for name in sorted(names, key=lambda s: -best[s]):
        for s in (view.baseline_of.get(name), name):
            if s is not None and s not in keep and len(keep) < MAX_SERIES:
                keep.append(s)
    return [n for n in names if n in keep]


def _colours(view: AxisView, shown: list[str]) -> dict[str, str]:
    """A method and its baseline share a colour (the baseline drawn dashed)."""
    families: list[str] = []
    out = {}
    for name in shown:
        family = view.baseline_of.get(name, name)
        if family not in families:
            families.append(family)
        out[name] = f"C{families.index(family) % 10}"
    return out


def _panel(ax: Any, points: list[Point], view: AxisView, pos: Callable[[Any], float], colours: dict[str, str],
           connect: bool, lines: bool) -> None:
    by_series: dict[str, list[Point]] = defaultdict(list)
    for p in points:
        by_series[p.series].append(p)
    baselines = set(view.baseline_of.values())
    anchors: dict[str, Point] = {}  # a baseline drawn as a point at others_at, joined to its methods' curves
    for i, (name, pts) in enumerate(by_series.items()):
        colour = colours.get(name, f"C{i % 10}")
        is_base = name in baselines
        style = {"ls": "--" if is_base else "-", "marker": "s" if is_base else "o", "color": colour,
                 "mfc": "white" if is_base else colour}
        flat = [p for p in pts if p.x is None]
        for p in flat:  # no value on this axis: a horizontal line with its band
            ax.axhline(p.mean, ls=style["ls"], color=colour, lw=1.4, label=f"{name} (not varied)")
            if math.isfinite(p.low):
                ax.axhspan(p.low, p.high, color=colour, alpha=0.12, lw=0)
        curve = sorted((p for p in pts if p.x is not None), key=lambda p: pos(p.x))
        if not curve:
            continue
        x = [pos(p.x) for p in curve]
        jitter = 0.03 * (i - (len(by_series) - 1) / 2)
        # One collection per series, not per point: a 512-value axis drew 512 scatters (seconds at
        # the sweep's end); the same dots in the same order, so the same pixels.
        ax.scatter([x[j] + jitter - 0.06 * (not lines) for j, p in enumerate(curve) for _ in p.dots],
                   [d for p in curve for d in p.dots], s=12, alpha=0.35, color=colour, lw=0, zorder=2)
        low = [p.low if math.isfinite(p.low) else p.mean for p in curve]
        high = [p.high if math.isfinite(p.high) else p.mean for p in curve]
        if len(curve) > 1 and not lines:
            ax.errorbar(x, [p.mean for p in curve], yerr=[[p.mean - lo for p, lo in zip(curve, low)],
                                                          [hi - p.mean for p, hi in zip(curve, high)]],
                        capsize=4, label=name, zorder=3, ls="none", marker=style["marker"], color=colour, mfc=style["mfc"])
        elif len(curve) > 1:
            ax.plot(x, [p.mean for p in curve], label=name, zorder=3, **style)
            ax.fill_between(x, low, high, color=colour, alpha=0.15, lw=0)
        else:  # one point (a baseline at n = 0): nudged so that two at the same x stay apart
            p = curve[0]
            at = connect and is_base and view.others_at is not None and p.x == view.others_at
            label = f"{name} ({view.short} = {p.x_text})" if at else name
            ax.errorbar([x[0] + 2 * jitter], [p.mean], yerr=[[p.mean - low[0]], [high[0] - p.mean]], capsize=4,
                        label=label, zorder=3, **style)
            if at:
                anchors[name] = p
                ax.axhline(p.mean, color=colour, lw=0.8, ls=":", alpha=0.7)
    if connect:  # each method's curve starts from its baseline's point (n = 0: the loss alone)
        for name, pts in by_series.items():
            anchor = anchors.get(view.baseline_of.get(name, ""))
            curve = sorted((p for p in pts if p.x is not None), key=lambda p: pos(p.x))
            if anchor is not None and curve and anchor.x is not None:
                ax.plot([pos(anchor.x), pos(curve[0].x)], [anchor.mean, curve[0].mean], ls=":", lw=1.2,
                        color=colours.get(name, "0.5"), zorder=2)
    ax.grid(alpha=0.3)


def _clip_ylim(ax: Any, lo: float, hi: float) -> None:
    bottom, top = ax.get_ylim()
    ax.set_ylim(max(bottom, lo), min(top, hi))


# --------------------------------------------------------------------------- the plan's figures


def planned(plan: SweepPlan) -> list[str]:
    """One line per ablation figure the report will draw (for `--dry-run`)."""
    lines = []
    for axis in figure_axes(plan):
        view = axis_view(plan, axis)
        curves = list(dict.fromkeys(view.series[c.id] for c in plan.cells if view.on_axis[c.id]))
        flat = [s for s in dict.fromkeys(view.series[c.id] for c in plan.cells if not view.on_axis[c.id]) if s not in curves]
        values = list(dict.fromkeys(yaml_value(c.get(axis)) for c in plan.cells if view.on_axis[c.id]))
        where = (f"at {short_key(axis)} = {fmt_value(view.others_at)}" if view.others_at is not None
                 else "as horizontal lines")
        parts = [f"{metric_label(plan.spec.metric)} against {view.label} ({', '.join(values)}): "
                 f"{', '.join(curves) or '-'}" + (f"; {', '.join(flat)} {where}" if flat else "")]
        diffs = list(dict.fromkeys(f"{s}{DIFFERENCE}{b}" for s, b in view.baseline_of.items()))
        if diffs and axis != "arm":
            parts.append("difference panel " + ", ".join(diffs))
        elif plan.spec.baseline:
            parts.append("difference panel: each cell minus its baseline")
        lines.append(f"{file_stem(axis)}.png/.pdf (+ .csv, _diff.csv): " + "; ".join(parts))
    return lines
