"""What a sweep prints: one line per trial event, phase headers and the closing block.

Ray Tune's own output (config boxes, status tables, worker logs) is off unless `-v`; this
driver-side callback prints instead, e.g.

    [3/10] search  n=2 #2  lr 0.00354  holdout R@1 99.1  (5 s)  ETA 0:40
    [7/10] final   n=2 · s0  R@1 96.2  (8 s)  ETA 0:20
    [8/10] FAILED  final crash · s1  DatasetError: data.num_classes: 1000 exceeds ...  (2 s)
    [9/10] final   n=2 · s1  R@1 95.0  reused from quickstart (/home/me/sweeps/quickstart)
    [9/10] ...     running 1, pending 0 · slowest n=2 · s2 epoch 4/8 (0:41)  ETA 0:38

The counter and the trial lines come from the typed records of the trial store, handed over by
the sweep's one Tune callback (`sweep.tune_callback.TrackingCallback`) after it recorded the event.
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

from sweep.baseline import describe_baseline
from sweep.labels import fmt_duration, fmt_params, metric_label, plan_labels
from sweep.plan import SweepPlan, yaml_value
from sweep.progress import Estimate, Progress, Slot
from sweep.records import FAILED, FINISHED, KILLED, SEARCH, TrialRecord
from sweep.sequential import PolicyView
from sweep.spec import SweepSpec
from sweep.store import describe_origin
from sweep.units import fmt_metric, is_fraction

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
    lines += [f"   {h}" for h in results.summary.top(HEADLINES)]
    lines += [f"   search, {line}" for line in results.summary.search_lines[:3]]
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


def phase_header(plan: SweepPlan, phase: str, expected: int, ended: int) -> str:
    """`-- final: 8 trials = 4 cells x 2 seeds, scored on the test split`: a phase's first line."""
    done = f" ({ended} done before, resuming)" if ended else ""
    seeds = len(plan.seeds)
    if phase == SEARCH:
        s = plan.spec.search
        on = "held-out training classes" if s.holdout is not None else "the test split"
        on = f"{s.folds} class-disjoint folds of the training classes (fold mean)" if s.folds else on
        what = f"{len(plan.cells)} cells x {s.num_samples} Optuna samples on seed {plan.seeds[0]}, scored on {on}"
    else:
        what = f"{len(plan.cells)} cells x {seeds} seed{'s' * (seeds > 1)}, scored on the test split"
    return f"-- {phase}: {expected} trials = {what}{done}"


# ------------------------------------------------------------------ the plan, before it runs

# Cells listed on the console; past this the list is cut to its head and tail (a 10,000-cell grid
# printed 10,008 lines). `plan.txt` in the sweep folder always lists every cell.
SCREEN_CELLS = 20


def describe_plan(plan: SweepPlan, sweep_dir: Path | None = None, cpus: float | None = None,
                  gpus: float | None = None, max_cells: int | None = None) -> str:
    """`plan_block` with the plan's seed-policy view built here."""
    return plan_block(plan, PolicyView.from_plan(plan), sweep_dir, cpus, gpus, max_cells)


def plan_block(plan: SweepPlan, view: Optional[PolicyView], sweep_dir: Path | None = None, cpus: float | None = None,
               gpus: float | None = None, max_cells: int | None = None) -> str:
    """The block printed before a sweep (and by `--dry-run`), also kept as the sweep's `plan.txt`;
    `view`: the plan's seed policy (`PolicyView.from_plan`, which a driver holds). With
    `max_cells`, a longer cell list shows its first and last cells and a count of the rest."""
    spec, res = plan.spec, plan.spec.resources_per_trial
    where = f" -> {sweep_dir}" if sweep_dir else ""
    factors = ([f"arms {list(spec.arms)}"] if spec.arms else []) + [f"{k} {v}" for k, v in spec.grid.items()]
    dropped = " (after pinning/exclude)" if spec.exclude or _pins(spec) else ""
    lines = [
        f"sweep {plan.name} ({plan.source}){where}",
        f"  cells: {len(plan.cells)}{dropped}" + (f" = {' x '.join(factors)}" if factors else ""),
        f"  seeds: {plan.seeds} (the same seeds in every cell: paired comparisons)",
    ]
    if view is not None:
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
    lines.append(f"  metric: {spec.metric} ({spec.mode}); baseline: {describe_baseline(spec.baseline)}")
    labels = plan_labels(plan)  # what the console and report call it
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


def _pins(spec: SweepSpec) -> bool:
    return any(k in spec.grid for arm in spec.arms.values() for k in arm)
