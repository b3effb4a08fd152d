"""What a seed policy prints: each look's standing, the closing lines per comparison, the seed forecast in words."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sweep.labels import comparison_label, metric_label, plan_labels
from sweep.plan import SweepPlan
from sweep.sequential import Look, PolicyView
from sweep.units import fmt_metric, fmt_points, is_fraction, points_suffix


def _quantity_label(q: Any, labels: dict[str, str]) -> str:
    name = labels.get(q.cell, q.cell)
    return name if q.ref is None else comparison_label(name, labels.get(q.ref, q.ref))


def _size(metric: str, x: float) -> str:
    """An unsigned width or distance in the metric's unit: `1.3 points`, `0.042`."""
    return fmt_metric(metric, abs(x), 2 if is_fraction(metric) and abs(x) < 0.01 else 1) + points_suffix(metric)


def _interval(metric: str, a: Any) -> str:
    """`R@1 +1.3 points (95% repeated CI -4.1 to +6.7, 4 seed pairs)` (a cell's own score: its mean)."""
    c = a.comparison
    own = a.quantity.ref is None
    value = fmt_metric(metric, c.mean_diff) if own else fmt_points(metric, c.mean_diff) + points_suffix(metric)
    bound = (lambda x: fmt_metric(metric, x)) if own else (lambda x: fmt_points(metric, x))
    n = f"{c.n} seed{'s' * (c.n != 1)}" if own else f"{c.n} seed pair{'s' * (c.n != 1)}"
    return f"{metric_label(metric)} {value} (95% repeated CI {bound(c.low)} to {bound(c.high)}, {n})"


def _needs(view: PolicyView, a: Any) -> str:
    """What an open comparison's interval still has to do to close it."""
    import math

    metric, design, c = view.metric, view.design, a.comparison
    half = (c.high - c.low) / 2
    if not math.isfinite(half):
        return "needs 2 paired seeds for an interval"
    wants = []
    if design.decided and a.quantity.ref is not None:
        distance = abs(c.mean_diff)
        if distance > 0:
            wants.append(f"±{_size(metric, distance)} to exclude 0")
        if design.margin is not None and distance < design.margin:
            wants.append(f"±{_size(metric, design.margin - distance)} to lie within ±{_size(metric, design.margin)}")
    if design.ci_half_width is not None:
        wants.append(f"±{_size(metric, design.ci_half_width)}")
    needs = " or ".join(wants) if wants else "its mean away from 0"  # no margin, mean exactly 0
    return f"±{_size(metric, half)} now, needs {needs}"


def policy_look_lines(view: PolicyView, assessments: list[Any], labels: dict[str, str], mode: str,
                      seen: dict[Any, int]) -> list[str]:
    """After a round: one line per comparison whose look is new since `seen` (which is updated):
    an open one with its repeated interval and what it still needs, one that closed with why."""
    import math

    from sweep.sequential import MAX, NOTHING, WIDTH
    from sweep.stats import verdict

    lines = []
    for a in assessments:
        if a.look < 0 or seen.get(a.quantity) == a.look or a.reason == NOTHING:
            continue
        seen[a.quantity] = a.look
        looks = view.design.looks
        head = f"   look {a.look + 1}/{len(looks)} ({a.seeds_run} seeds) {_quantity_label(a.quantity, labels)}: {_interval(view.metric, a)}"
        if not a.closed:
            lines.append(f"{head}: open, {_needs(view, a)}; next look at {looks[a.look + 1]} seeds")
        elif a.reason == MAX:
            lines.append(f"{head}: at the maximum, {_needs(view, a)}")
        elif a.reason == WIDTH or a.quantity.ref is None:
            lines.append(f"{head}: within ±{_size(view.metric, view.design.ci_half_width or math.nan)}, no more seeds")
        else:
            margin = view.design.margin
            margin_text = None if margin is None else _size(view.metric, margin)
            word = verdict(a.comparison, mode, margin=margin, margin_text=margin_text)
            lines.append(f"{head}: {word}, no more seeds{_shape(view.metric, a)}")
    return lines


def _shape(metric: str, a: Any) -> str:
    """` Note: seed 7 (-12.3 points) lies far from ...` beside a comparison's verdict, or ""."""
    from sweep.stats import shape_note

    note = shape_note(metric, dict(zip(a.comparison.seeds, a.diffs))) if a.quantity.ref is not None else ""
    return f". {note}" if note else ""


def policy_end_lines(view: PolicyView, look: Look, labels: dict[str, str]) -> list[str]:
    """The end of a seed policy: each comparison still open at `max`, with its seed forecast
    (`look.forecasts`: how many seeds a decision would take, from its observed spread)."""
    import math

    from sweep.sequential import MAX

    lines = []
    n_max = view.design.looks[-1]
    for a in look.assessments:
        if a.reason != MAX:
            continue
        compared = a.quantity.ref is not None
        state = ("undecided" if view.design.decided and compared
                 else f"wider than ±{_size(view.metric, view.design.ci_half_width or math.nan)}")
        lines.append(f"-- {_quantity_label(a.quantity, labels)}: {state} at the maximum of {n_max} seeds: "
                     f"{_interval(view.metric, a)}{_shape(view.metric, a)}")
        if a.quantity in look.forecasts:
            lines.append("   " + forecast_words(view.metric, look.forecasts[a.quantity], compared))
    return lines


def round_lines(view: PolicyView, look: Look, labels: dict[str, str], mode: str,
                seen: dict[Any, int], done: bool) -> list[str]:
    """What a seed policy prints after a round: each new look (`policy_look_lines`), and when no
    comparison is left open (`done`) the closing lines (`policy_end_lines`)."""
    return policy_look_lines(view, look.assessments, labels, mode, seen) + (policy_end_lines(view, look, labels) if done else [])


def forecast_words(metric: str, fc: Any, compared: bool = True) -> str:
    """`seed forecast: ... would take about 43 seeds per cell as max ...`, for the console and the
    dry run; `compared` False: the spread is of a cell's own values (a width rule without a baseline)."""
    from sweep.seed_forecast import FORECAST_CAP, HALF_WIDTH, MARGIN, DIFFERENCE, POWER

    goal = {MARGIN: f"equivalence within ±{_size(metric, fc.target)} (the margin)",
            DIFFERENCE: f"a decision on a difference of ±{_size(metric, fc.target)} (half the observed interval's half-width)"}.get(
        fc.goal, f"an interval within ±{_size(metric, fc.target)}")
    seeds = f"more than {FORECAST_CAP:,}" if fc.seeds is None else f"about {fc.seeds}"
    what = "paired differences" if compared else "values"
    chance = "about even odds" if fc.goal == HALF_WIDTH else f"{POWER:.0%} chance"
    return (f"seed forecast: with the spread of {fc.pairs} {what} (sd {_size(metric, fc.sd)}), {goal} "
            f"would take {seeds} seeds per cell as `max` ({chance}; a new sweep -- raising `max` on "
            f"--resume inflates false decisions; docs/conclusions.md)")


def pilot_forecast_lines(plan: SweepPlan, sweep_dir: Path) -> list[str]:
    """`--dry-run` of a seed policy: the seed forecast of each comparison from the seeds of the
    same cells (the same content keys) that the trial store already holds -- a pilot, or an
    earlier sweep of these cells -- beside `max`; nothing without a policy."""
    import math

    import numpy as np

    from sweep.pending import identity
    from sweep.sequential import Design, sequential_test
    from sweep.store import TrialStore, default_store_path

    spec = plan.spec
    if spec.policy is None:
        return []
    if spec.search:  # the final configs are the search's choice: nothing stored can be matched yet
        return ["  seed forecast: none before the search has chosen each cell's values (then: at the end of the sweep)"]
    path = default_store_path(sweep_dir)
    specs = plan.final_trials()
    keys = {(s.cell, s.seed): identity(plan, s).content_key for s in specs}
    found = TrialStore(path).finished(keys.values()) if path.is_file() else {}
    metric = spec.metric
    values = {cs: found[k][1].value(metric) for cs, k in keys.items() if k in found}
    view = PolicyView.from_plan(plan)
    labels = plan_labels(plan)
    lines = []
    for q in view.quantities:
        if q.ref is None and view.design.ci_half_width is None:
            continue
        diffs = [values[(q.cell, s)] - (values[(q.ref, s)] if q.ref else 0.0) for s in view.seeds
                 if all((c, s) in values for c in q.cells)]
        diffs = [d for d in diffs if math.isfinite(d)]
        if len(diffs) < 2:
            continue
        # The pilot's interval at the first look's level: what "half the observed interval" refers to.
        first = sequential_test(Design((len(diffs),), (view.design.alphas[0],)), np.array([diffs]))
        fc = view.forecast(diffs, float(first.high[0] - first.low[0]) / 2, q.ref is not None)
        if fc is not None:
            lines.append(f"  {_quantity_label(q, labels)} (max {view.design.looks[-1]}): "
                         f"{forecast_words(metric, fc, q.ref is not None)}")
    if not lines:
        return [f"  seed forecast: no stored seeds of these cells in {path} (a pilot sweep of a few seeds gives one)"]
    return [f"  seed forecast from the seeds of these cells already in {path}:", *lines]
