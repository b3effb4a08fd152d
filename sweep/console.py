"""What a sweep prints: one line per trial event, phase headers and the closing block.

Ray Tune's own output (config boxes, status tables, worker logs) is off unless `-v`; this
driver-side callback prints instead, e.g.

    [3/10] search  n=2 #2  lr 0.00354  holdout R@1 99.1  (5 s)  ETA 0:40
    [7/10] final   n=2 · s0  R@1 96.2  (8 s)  ETA 0:20
    [8/10] FAILED  final crash · s1  DatasetError: data.num_classes: 1000 exceeds ...  (2 s)
    [9/10] final   n=2 · s1  R@1 95.0  reused from quickstart (/home/me/sweeps/quickstart)
    [9/10] ...     running 1, pending 0 · slowest n=2 · s2 epoch 4/8 (0:41)  ETA 0:38

The counter and the trial lines come from the typed records of the trial store, handed over by
the sweep's one Tune callback (`sweep.tracking.TrackingCallback`) after it recorded the event.
While trials run and none ends, a status line (`...`) comes every `STATUS_EVERY_S` seconds: the
same plain lines on a terminal and in a log (no carriage returns). The ETA is
`sweep.progress.Progress`'s: work left in trial-seconds, from the trials' own times per epoch
(`~`: a phase not timed yet, paced by the other; `at most ..., expected ...` under a seed policy).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional, TextIO

from sweep.labels import cell_labels, fmt_duration, fmt_metric, fmt_params, is_fraction, metric_label
from sweep.plan import SweepPlan, yaml_value
from sweep.progress import Estimate, Progress, Slot
from sweep.records import FAILED, FINISHED, KILLED, SEARCH, TrialRecord
from sweep.sequential import PolicyView
from sweep.spec import SweepSpec
from sweep.store import describe_origin

_PHASE_WIDTH = 6
# Seconds without a console line, while trials run, before a status line: often enough to see a
# sweep is alive, rare enough that a log of a day-long sweep stays readable.
STATUS_EVERY_S = 30.0


def say(line: str = "", stream: Optional[TextIO] = None) -> None:
    """One line of the sweep's console output (stdout, flushed: it interleaves with Ray's)."""
    print(line, file=stream or sys.stdout, flush=True)


class Console:
    """Prints each trial's end (finished, failed or reused) and each retry as one line. Fed typed
    records by the sweep's Tune callback after it recorded the event, so the lines and the counter
    (trials ended, this sweep) stay right across `--resume`."""

    def __init__(self, total: int, metric: str, search_metric: str, search_prefix: str,
                 sweep_dir: Optional[Path] = None) -> None:
        self.sweep_dir = sweep_dir  # where the trials' traceback logs are (sweep.trainable.trial_log)
        self.total = total  # trials of the whole sweep, both phases
        self.metric = metric
        self.search_metric = search_metric
        self.search_prefix = search_prefix.rstrip("_")  # "holdout" or "search"
        self.progress = Progress({})
        self._done = 0
        self._last_line = time.monotonic()

    def _say(self, line: str) -> None:
        say(line)
        self._last_line = time.monotonic()

    def phase_started(self, ended: int, pending: Optional[dict[Slot, int]] = None,
                      epochs: Optional[dict[Slot, int]] = None, work: Optional[dict[Slot, float]] = None) -> None:
        """Each phase's `fit` starts here, with what is left of the sweep (both phases), the
        epochs a trial of each (phase, cell) trains and what one of its epochs trains: the ETA's work."""
        self._done, self._last_line = ended, time.monotonic()
        if epochs is not None:
            self.progress.epochs = epochs
        if work is not None:
            self.progress.work = work
        self.progress.phase_started(pending or {})

    def trial_started(self, record: TrialRecord, slot: Slot) -> None:
        self.progress.started(record.key, self._label(record), slot, record.last_step)

    def evaluated(self, record: TrialRecord, epoch: int, trial_s: float) -> None:
        self.progress.evaluated(record.key, epoch, trial_s)

    def tick(self) -> None:
        """Called on every turn of Tune's loop: a status line when none was printed for a while."""
        if time.monotonic() - self._last_line >= STATUS_EVERY_S and (self.progress.running or self.progress.waiting):
            self._say(self.status_line())

    def status_line(self) -> str:
        """`[ 6/16] ...     running 2, pending 8 · slowest MS · s0 epoch 4/8 (1:23)  ETA 3:40`."""
        p = self.progress
        line = f"{self._counter(self._done)} {'...':<{_PHASE_WIDTH}}  running {p.running}, pending {p.waiting}"
        slowest = p.slowest()
        if slowest is not None:
            t, elapsed = slowest
            line += f" · slowest {t.label} epoch {t.epoch}/{t.epochs} ({fmt_duration(elapsed)})"
        return line + self._eta()

    def retry(self, record: TrialRecord | None, label: str, error: str) -> None:
        self._say(f"{'':>{len(self._counter(0))}} retry   {label}  {error}{self._traceback(record)}")

    def _traceback(self, record: TrialRecord | None) -> str:
        """Where a crashed trial's traceback is (its log file), for the end of its one line."""
        from sweep.trainable import trial_log

        if record is None or self.sweep_dir is None:
            return ""
        path = trial_log(self.sweep_dir, record.key)
        return f"  traceback: {path}" if path.is_file() else ""

    def _counter(self, done: int) -> str:
        width = len(str(self.total))
        return f"[{done:>{width}}/{self.total}]"

    def _value(self, record: TrialRecord) -> str:
        metrics = record.metrics
        if record.phase == SEARCH:
            m = self.search_metric
            return f"{fmt_params(record.params)}  {self.search_prefix} {metric_label(m)} {fmt_metric(m, metrics.get(m))}"
        return f"{metric_label(self.metric)} {fmt_metric(self.metric, metrics.get(self.metric))}"

    def _label(self, record: TrialRecord) -> str:
        return (record.label or record.key).removeprefix(f"{SEARCH} · ")  # the phase column says it

    def ended(self, record: TrialRecord, done: int, seconds: float) -> None:
        head, phase = self._counter(done), record.phase
        self._done = done
        self.progress.ended(record.key, seconds, record.last_step)
        if record.status == FAILED:
            took = f"  ({fmt_duration(seconds)})" if seconds == seconds else ""  # NaN: it never reported
            self._say(f"{head} FAILED  {phase} {self._label(record)}  {record.error or 'failed'}{took}{self._traceback(record)}")
            return
        self._say(f"{head} {phase:<{_PHASE_WIDTH}}  {self._label(record)}  {self._value(record)}  ({fmt_duration(seconds)})"
                  f"{self._eta()}")

    def reused(self, record: TrialRecord, origin: str, done: int) -> None:
        """A trial answered from the trial store: trained by another sweep (or earlier in this one)."""
        self._done = done
        self._say(f"{self._counter(done)} {record.phase:<{_PHASE_WIDTH}}  {self._label(record)}  {self._value(record)}  "
                  f"reused from {describe_origin(origin)}")

    def _eta(self) -> str:
        estimate = self.progress.eta()
        return "" if estimate is None else f"  ETA {eta_text(estimate)}"


def eta_text(e: Estimate) -> str:
    """`3:40`; `~3:40` paced by the other phase; `at most 5:00, expected 3:10` under a seed policy."""
    mark = "~" if e.extrapolated else ""
    if not e.at_most:
        return f"{mark}{fmt_duration(e.seconds)}"
    expected = f", expected {mark}{fmt_duration(e.expected_s)}" if e.expected_s is not None else ""
    return f"at most {mark}{fmt_duration(e.seconds)}{expected}"


HEADLINES = 10  # comparisons in the closing block; the report has them all


def _total_time(meta: Any, wall_s: float) -> str:
    """` (8:42 over 2 runs)` beside a resumed sweep's session time; "" for a sweep run once."""
    if meta.wall_s <= wall_s + 0.5:
        return ""
    runs = f"{meta.sessions} runs" if meta.sessions >= 2 else "every run"  # earlier versions did not count them
    return f" ({fmt_duration(meta.wall_s)} over {runs})"


def closing_block(outcome: Any, wall_s: float) -> str:
    """The sweep's last lines: the tally, the headlines (methods named), a search that could not
    separate its candidates, the report, and the MLflow command + the URLs that open answers.
    `outcome`: the runner's `SweepOutcome`, with its `SweepResults`; `wall_s`: this session's time
    (a resumed sweep's total over its sessions stands beside it)."""
    results = outcome.results
    trials = results.records.trials
    finished = sum(t.status == FINISHED for t in trials)
    failed = sum(t.status == FAILED for t in trials)
    lost = sum(t.status == KILLED for t in trials)  # search samples cut off and redrawn
    unit = "; metrics in %, differences in points" if is_fraction(results.metric) else ""
    lines = [f"-- done in {fmt_duration(wall_s)}{_total_time(results.records.meta, wall_s)}: {finished} trials finished, {failed} failed" + (f", {lost} cut off" if lost else "")
             + unit]
    reused = sum(t.reused for t in trials)
    if reused:
        trained = sum(t.ended and not t.reused for t in trials)
        lines.append(f"   {reused} of them reused from the trial store (not trained again), {trained} trained"
                     + (" (--no-reuse trains them afresh)" if outcome.reused == reused == len(trials) else ""))
    lines += [f"   {h}" for h in results.headlines(limit=HEADLINES)]
    lines += [f"   search, {line}" for line in results.search_lines()[:3]]
    lines.append(f"report:  {outcome.sweep_dir / 'report.md'}  (report.html: the same with its plots)")
    if outcome.mlflow_command:
        lines.append(f"MLflow:  {outcome.mlflow_command}")
        lines.append(f"         runs:    {outcome.mlflow_url}")
    else:
        lines.append(f"MLflow:  runs:    {outcome.mlflow_url}")
    if outcome.parent_url:
        lines.append(f"         sweep:   {outcome.parent_url}  (headlines, % metrics)")
    if outcome.report_url:
        lines.append(f"         report:  {outcome.report_url}")
    if outcome.compare_url and results.final_runs:
        shown = len(results.compare_run_ids())
        of = f" ({shown} of {len(results.final_runs)})" if shown < len(results.final_runs) else ""
        lines.append(f"         compare: {outcome.compare_url}  (final runs{of})")
    return "\n".join(lines)


# ------------------------------------------------------------------ the plan, before it runs

# Cells listed on the console; past this the list is cut to its head and tail (a 10,000-cell grid
# printed 10,008 lines). `plan.txt` in the sweep folder always lists every cell.
SCREEN_CELLS = 20


def describe_plan(plan: SweepPlan, sweep_dir: Path | None = None, cpus: float | None = None,
                  gpus: float | None = None, max_cells: int | None = None) -> str:
    """The block printed before a sweep (and by `--dry-run`), also kept as the sweep's `plan.txt`;
    with `max_cells`, a longer cell list shows its first and last cells and a count of the rest."""
    spec, res = plan.spec, plan.spec.resources_per_trial
    where = f" -> {sweep_dir}" if sweep_dir else ""
    factors = ([f"arms {list(spec.arms)}"] if spec.arms else []) + [f"{k} {v}" for k, v in spec.grid.items()]
    dropped = " (after pinning/exclude)" if spec.exclude or _pins(spec) else ""
    lines = [
        f"sweep {plan.name} ({plan.source}){where}",
        f"  cells: {len(plan.cells)}{dropped}" + (f" = {' x '.join(factors)}" if factors else ""),
        f"  seeds: {plan.seeds} (the same seeds in every cell: paired comparisons)",
    ]
    if spec.policy:
        view = PolicyView.of(spec.policy, plan.cells, spec.baseline, spec.metric, spec.equivalence_margin)
        lines += [f"  seed policy: {view.rule()}", f"               {view.design.description}"]
    if spec.search:
        s = spec.search
        on = f"held-out {s.holdout:g} of the training classes" if s.holdout else "THE TEST SPLIT (no holdout)"
        if s.folds:
            on = (f"{s.folds} class-disjoint folds of the training classes (Reality Check: each sample trained "
                  f"{s.folds} times, on all folds but one, scored by the fold mean)")
        sched = f", ASHA (grace {spec.scheduler.grace_period}, factor {spec.scheduler.reduction_factor:g})" if spec.scheduler.name == "asha" else ""
        lines.append(
            f"  search: {s.num_samples} Optuna TPE samples per cell on seed {plan.seeds[0]}, scored on {on}"
            f" by {spec.search_metric} ({spec.search_mode}){sched} -> {plan.num_search_trials} trials"
        )
        lines.append("          " + ", ".join(f"{k}: {describe_param(p)}" for k, p in s.params.items()))
        lines.append("  " + describe_budget(plan.search_budget(), s.folds))
    n_final = len(plan.cells) * len(plan.seeds)
    at_most = f"at most {len(plan.cells)} cells x {len(plan.seeds)} seeds (from {spec.policy.start} each)" if spec.policy else ""
    lines.append(f"  final: {at_most or f'{len(plan.cells)} cells x {len(plan.seeds)} seeds'} = {n_final} trials")
    conc = spec.max_concurrent_trials or "as resources allow"
    avail = f" (available: {cpus:g} CPUs, {gpus:g} GPUs)" if cpus is not None else ""
    lines.append(
        f"  total: {plan.num_search_trials + n_final} trials, {res.cpu:g} CPU + {res.gpu:g} GPU each, "
        f"concurrency {conc}{avail}, retries {spec.max_failures}"
    )
    lines.append(f"  metric: {spec.metric} ({spec.mode}); baseline: {_describe_baseline(spec.baseline)}")
    labels = cell_labels(plan.to_json()["cells"], spec.arms, plan.base)  # what the console and report call it
    width = max(len(c.id) for c in plan.cells)
    lwidth = max(len(v) for v in labels.values())
    lines.append(f"  {'#':>3}  {'cell':<{width}}  {'label':<{lwidth}}  overrides")
    shown = list(enumerate(plan.cells))
    if max_cells is not None and len(shown) > max_cells:
        head, tail = shown[:max_cells - 3], shown[-3:]
        where = f"{sweep_dir / 'plan.txt'} once the sweep starts" if sweep_dir else "plan.txt in the sweep folder"
        more = f"  ... {len(shown) - len(head) - len(tail)} more cells (every cell: {where}; or -v)"
        shown = [*head, (None, more), *tail]
    for i, c in shown:
        if i is None:
            lines.append(c)
            continue
        over = ", ".join(f"{k}={yaml_value(v)}" for k, v in c.overrides.items()) or "-"
        lines.append(f"  {i:>3}  {c.id:<{width}}  {labels[c.id]:<{lwidth}}  {over}")
    return "\n".join(lines)


def describe_budget(budget: dict[str, dict[str, int]], folds: Any = None) -> str:
    """`search budget per arm: a 8 samples x 4 folds = 32 runs; b ... -- the same for every arm`."""
    per = "; ".join(f"{arm} {b['samples']} sample{'s' * (b['samples'] != 1)}"
                    + (f" x {folds} folds = {b['fits']} runs" if folds else "")
                    for arm, b in budget.items())
    same = len({(b["samples"], b["fits"]) for b in budget.values()}) <= 1
    return f"search budget per arm: {per} -- " + ("the same for every arm" if same else "NOT the same for every arm")


def describe_param(p: Any) -> str:
    """A searched parameter's space: `loguniform[0.0001, 0.01]`, `categorical[8, 16]`."""
    return f"{p.type}{p.choices}" if p.type == "categorical" else f"{p.type}[{p.low:g}, {p.high:g}]"


def _describe_baseline(baseline: dict[str, Any]) -> str:
    """`arm=ms, model.embedding_dim=8` as written in the YAML, not a Python dict."""
    if not baseline:
        return "none (no paired comparison)"
    return ", ".join(f"{key}={yaml_value(value)}" for key, value in baseline.items())


def _pins(spec: SweepSpec) -> bool:
    return any(k in spec.grid for arm in spec.arms.values() for k in arm)


# ------------------------------------------------------------------ a seed policy, look by look


def _quantity_label(q: Any, labels: dict[str, str]) -> str:
    from sweep.labels import comparison_label

    name = labels.get(q.cell, q.cell)
    return name if q.ref is None else comparison_label(name, labels.get(q.ref, q.ref))


def _size(metric: str, x: float) -> str:
    """An unsigned width or distance in the metric's unit: `1.3 points`, `0.042`."""
    return f"{fmt_metric(metric, abs(x), 2 if is_fraction(metric) and abs(x) < 0.01 else 1)}" + (
        " points" if is_fraction(metric) else "")


def _interval(metric: str, a: Any) -> str:
    """`R@1 +1.3 points (95% repeated CI -4.1 to +6.7, 4 seed pairs)` (a cell's own score: its mean)."""
    from sweep.labels import fmt_points

    c = a.comparison
    own = a.quantity.ref is None
    value = fmt_metric(metric, c.mean_diff) if own else fmt_points(metric, c.mean_diff) + (" points" if is_fraction(metric) else "")
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
            word = verdict(a.comparison, mode, margin=margin,
                           margin_text=None if margin is None else _size(view.metric, margin))
            lines.append(f"{head}: {word}, no more seeds{_shape(view.metric, a)}")
    return lines


def _shape(metric: str, a: Any) -> str:
    """` Note: seed 7 (-12.3 points) lies far from ...` beside a comparison's verdict, or ""."""
    from sweep.sequential import shape_note

    note = shape_note(metric, dict(zip(a.comparison.seeds, a.diffs))) if a.quantity.ref is not None else ""
    return f". {note}" if note else ""


def policy_end_lines(view: PolicyView, assessments: list[Any], labels: dict[str, str]) -> list[str]:
    """The end of a seed policy: each comparison still open at `max`, with the seed forecast
    (`sweep.sequential.forecast`: how many seeds a decision would take, from its observed spread)."""
    import math

    from sweep.sequential import MAX, forecast

    lines = []
    n_max = view.design.looks[-1]
    for a in assessments:
        if a.reason != MAX:
            continue
        c = a.comparison
        compared = a.quantity.ref is not None
        state = ("undecided" if view.design.decided and compared
                 else f"wider than ±{_size(view.metric, view.design.ci_half_width or math.nan)}")
        lines.append(f"-- {_quantity_label(a.quantity, labels)}: {state} at the maximum of {n_max} seeds: "
                     f"{_interval(view.metric, a)}{_shape(view.metric, a)}")
        fc = forecast(view, a.diffs, (c.high - c.low) / 2, compared)
        if fc is not None:
            lines.append("   " + forecast_words(view.metric, fc, compared))
    return lines


def forecast_words(metric: str, fc: Any, compared: bool = True) -> str:
    """`seed forecast: ... would take about 43 seeds per cell as max ...`, for the console and the
    dry run; `compared` False: the spread is of a cell's own values (a width rule without a baseline)."""
    from sweep.sequential import FORECAST_CAP, HALF_WIDTH, MARGIN, DIFFERENCE, POWER

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
    from sweep.sequential import Design, forecast, sequential_test
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
    view = PolicyView.of(spec.policy, plan.cells, spec.baseline, metric, spec.equivalence_margin)
    labels = cell_labels(plan.to_json()["cells"], spec.arms, plan.base)
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
        fc = forecast(view, diffs, float(first.high[0] - first.low[0]) / 2, q.ref is not None)
        if fc is not None:
            lines.append(f"  {_quantity_label(q, labels)} (max {view.design.looks[-1]}): "
                         f"{forecast_words(metric, fc, q.ref is not None)}")
    if not lines:
        return [f"  seed forecast: no stored seeds of these cells in {path} (a pilot sweep of a few seeds gives one)"]
    return [f"  seed forecast from the seeds of these cells already in {path}:", *lines]
