"""The paper's table from any set of sweeps: `dml-report table`.

    dml-report table sweeps/quickstart sweeps/quickstart_dim32 \\
        --rows expansion.n_inner_pts --cols model.embedding_dim --metrics recall_at_1,map_at_r \\
        --baseline expansion.n_inner_pts=0 --format latex

Rows and columns are chosen by config keys (dotted, as in a sweep's `grid`), `arm`, or `sweep`
(the sweep's name), and labelled the way the sweeps label their cells (`MS`, `MS+EE n=2`;
`--labels keys` for the raw keys and values), in the order the sweeps (command-line order) and
their YAMLs give them. Each table cell is one experiment -- trials whose result fields
(`dml_core.identity.result_config`), results version, what they are scored on and which
evaluation their sweep reports agree once the seed is set aside -- with mean +- 95 % Student-t
half-width over its seeds and the number of seeds. A result is its *stored* content key: the same
key in several sweeps is counted once, and two different numbers for one key and seed (or two keys
for one experiment and seed) are an error naming both sweeps, never a silent choice. Two
*different* experiments landing in one cell (e.g. a different learning rate) is an error naming
the differing key: add it to --rows or --cols.

Bold marks the best mean of a column only when a paired test over the seeds it shares with the
runner-up separates them (a paired t-test with p < 0.05, or the seed policy's repeated CI when the
two are one of its comparisons); never a lone cell. With `--baseline key=value`, each cell is
compared, paired by seed, with the cell of the baseline row in its column, when the two are the
same experiment up to the row keys (and searched parameters, tuned per cell): † marks a paired
t-test with p < 0.05 (its 95 % interval excludes 0); ‡ the same by a seed policy's repeated CI,
used when both cells are one comparison of one seed policy sweep; seeds a policy added adaptively
are never fed to a plain t-test (the cell is printed without a mark, and the legend says why);
≈ the interval lies inside +-`--margin` points (TOST). Columns whose sweeps ran another protocol
(per-cell search or fixed hyperparameters, adaptive or fixed seeds, which evaluation is reported)
get a footnote. The legend counts the trials used and those left out, and why.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import string
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from dml_core.evaluation.names import direction, ordered
from dml_core.identity import content_key, result_config, scored_on
from dml_core.io import PathError
from sweep.labels import fmt_value, method_of, metric_label, plan_labels, short_key, slug
from sweep.pending import flatten_config
from sweep.plan import FINAL, SweepPlan, TrialSpec, load_plan, trial_config
from sweep.records import FAILED, FINISHED, SEARCH, TrialRecord
from sweep.results import PAPERS_SELECTION_METRIC, with_evaluation  # the sweep report's evaluation rule, shared
from sweep.sequential import PolicyView
from sweep.spec import SweepError
from sweep.store import load_records
from sweep.stats import CONFIDENCE, PAIRED_T, MeanCI, PairedComparison, mean_ci, paired_comparison, verdict
from sweep.units import fmt_metric, from_points, heading, in_unit, is_fraction, points_suffix, unit_of

FORMATS = ("md", "latex", "csv")
LABELS = ("method", "keys")
SWEEP_KEY, ARM_KEY = "sweep", "arm"  # pseudo config keys
SIGNIFICANT = {PAIRED_T: "†", "repeated CI": "‡"}
EQUIVALENT_MARK = "≈"
# Fields of a trial's identity beside its config: they change its numbers as much as a config key.
EVALUATION_FIELD, VERSION_FIELD, SCORED_FIELD = "sweep.report.evaluation", "results_version", "scored_on"
# Metrics that describe the run, not its result: a re-run may differ in them.
_NOT_RESULTS = {"epoch", "time_s", "gpu_mem_peak_mib"}


class TableError(ValueError):
    """A table that cannot be built as asked; the message is one line."""


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass(frozen=True)
class Trial:
    """One finished final trial as the table sees it."""

    sweep: str  # the sweep's name as the table shows it (told apart from a same-named sweep)
    sweep_dir: Path
    cell: str
    label: str  # the cell's label in its own sweep (`MS+EE n=2`)
    order: tuple[int, int]  # (sweep on the command line, cell in its plan): the table's order
    seed: int
    config: dict[str, Any]  # the resolved config, flattened (+ `arm`, `sweep`): what rows and columns name
    result_fields: dict[str, Any]  # what determines its numbers, flattened, but the seed
    experiment: str  # digest of `result_fields`: one experiment, any seed
    result: str  # the result's identity: its stored content key
    metrics: dict[str, float]  # the evaluation its sweep reports (`sweep.report.evaluation`)
    searched: frozenset[str]  # keys its sweep searched per cell
    adaptive: bool  # its seeds were added by a seed policy
    protocol: str  # how its sweep produced it, in words


@dataclass
class Sweep:
    plan: SweepPlan
    sweep_dir: Path
    name: str  # as the table shows it
    trials: list[Trial]
    policy: Optional[PolicyView]
    records: list[TrialRecord]  # final records, with the sweep's evaluation
    left_out: Counter[str] = field(default_factory=Counter)  # reason -> final trials not in the table
    search_trials: int = 0
    assessed: dict[str, dict[tuple[str, Optional[str]], PairedComparison]] = field(default_factory=dict)  # by metric


def protocol_of(plan: SweepPlan) -> str:
    """How a sweep produced its numbers: hyperparameters, seeds, which evaluation (for footnotes)."""
    spec = plan.spec
    if spec.search:
        where = f"{spec.search.folds} class folds" if spec.search.folds else "held-out training classes"
        search = (f"{', '.join(short_key(k) for k in spec.search.params)} searched per cell "
                  f"({spec.search.num_samples} samples on {where})")
    else:
        search = "fixed hyperparameters"
    if spec.policy:
        looks = spec.policy.looks
        seeds = f"seeds added adaptively by a seed policy ({looks[0]} to {looks[-1]} per cell)"
    else:
        seeds = "fixed seeds"
    selection = {"last": "last evaluation",
                 "best": f"best evaluation by {metric_label(spec.metric)} (epoch chosen on the test split)",
                 "best_on_test": f"best test {metric_label(PAPERS_SELECTION_METRIC)} evaluation (test-set selection)",
                 }[spec.report.evaluation]
    return f"{search}; {seeds}; {selection}"


def load_sweep(sweep_dir: Path, index: int = 0, name: Optional[str] = None, plan: Optional[SweepPlan] = None) -> Sweep:
    """A sweep directory's finished final trials with their resolved configs, and a count of the
    trials left out."""
    plan = plan or _plan(sweep_dir)
    name = name or plan.name
    cells = {c.id: (i, c) for i, c in enumerate(plan.cells)}
    labels = plan_labels(plan)
    searched = frozenset(plan.spec.search.params) if plan.spec.search else frozenset()
    evaluation = plan.spec.report.evaluation
    protocol = protocol_of(plan)
    all_records = load_records(sweep_dir).trials
    records = [with_evaluation(r, evaluation, plan.spec.metric, plan.spec.mode) for r in all_records if r.phase == FINAL]
    left_out: Counter[str] = Counter()
    trials = []
    for r in records:
        if r.status != FINISHED:
            left_out["failed" if r.status == FAILED else "unfinished (running or stopped)"] += 1
            continue
        if r.cell not in cells:
            left_out["of a cell its sweep's plan no longer has"] += 1
            continue
        i, cell = cells[r.cell]
        config = r.config
        if not config:  # a record migrated from an old ledger.json: rebuild what it ran
            spec = TrialSpec(FINAL, cell.id, cell.arm, dict(cell.coords), r.seed, dict(cell.overrides), dict(r.params))
            config = trial_config(plan.base, spec, None, plan.source).to_dict()
            config.pop("sweep", None)
        flat = {**flatten_config(config), ARM_KEY: cell.arm, SWEEP_KEY: name}
        fields = {k: v for k, v in flatten_config(result_config(config)).items() if k != "seed"}
        # The stored identity, not today's: a result of an older RESULTS_VERSION, or scored on
        # something else, is another experiment than one recomputed from its config would say.
        fields |= {VERSION_FIELD: r.results_version, SCORED_FIELD: r.scored_on or scored_on(config),
                   EVALUATION_FIELD: evaluation}
        experiment = hashlib.sha256(_canon(fields).encode()).hexdigest()[:32]
        trials.append(Trial(name, sweep_dir, r.cell, labels[r.cell], (index, i), r.seed, flat, fields, experiment,
                            r.content_key or content_key(config), {k: float(v) for k, v in r.metrics.items()}, searched,
                            plan.spec.policy is not None, protocol))
    trials.sort(key=lambda t: (t.order, t.seed))
    policy = PolicyView.of(plan.spec.policy, plan.cells, plan.spec.baseline, plan.spec.metric,
                           plan.spec.equivalence_margin) if plan.spec.policy else None
    search = sum(r.phase == SEARCH for r in all_records)
    return Sweep(plan, sweep_dir, name, trials, policy, records, left_out, search)


def _plan(sweep_dir: Path) -> SweepPlan:
    if not (sweep_dir / "sweep.yaml").is_file():
        raise TableError(f"{sweep_dir}: not a sweep directory (no sweep.yaml)")
    return load_plan(sweep_dir / "sweep.yaml")


def _names(plans: list[SweepPlan], sweep_dirs: list[Path]) -> list[str]:
    """Each sweep's name; two folders with the same sweep name are told apart by their paths."""
    names = [p.name for p in plans]
    return [f"{n} ({d})" if names.count(n) > 1 else n for n, d in zip(names, sweep_dirs)]


# --------------------------------------------------------------------------- the table


@dataclass
class TableCell:
    row: tuple[Any, ...]
    col: tuple[Any, ...]
    trials: list[Trial]  # pooled: one per result identity
    policy_sweeps: frozenset[str] = frozenset()  # sweeps whose seed policy added seeds to this cell

    @property
    def config(self) -> dict[str, Any]:
        return self.trials[0].config

    @property
    def sources(self) -> set[tuple[Path, str]]:
        return {(t.sweep_dir, t.cell) for t in self.trials}

    @property
    def protocols(self) -> list[str]:
        return list(dict.fromkeys(t.protocol for t in self.trials))

    def by_seed(self, metric: str) -> dict[int, float]:
        return {t.seed: t.metrics[metric] for t in self.trials if math.isfinite(t.metrics.get(metric, math.nan))}


@dataclass
class Entry:
    """One number of the table: a cell's metric, its interval, and its comparison."""

    cell: TableCell
    metric: str
    ci: MeanCI
    best: bool = False
    comparison: Optional[PairedComparison] = None
    word: str = ""  # verdict of the comparison
    mark: str = ""
    note: str = ""  # why there is no comparison


@dataclass
class Table:
    rows: list[tuple[Any, ...]]
    cols: list[tuple[Any, ...]]
    row_keys: list[str]
    col_keys: list[str]
    metrics: list[str]
    entries: dict[tuple[tuple[Any, ...], tuple[Any, ...], str], Entry]
    baseline: Optional[dict[str, Any]] = None
    margin: Optional[float] = None  # points
    sweeps: list[str] = field(default_factory=list)
    row_labels: dict[tuple[Any, ...], str] = field(default_factory=dict)
    col_labels: dict[tuple[Any, ...], str] = field(default_factory=dict)
    row_header: str = ""
    protocols: list[str] = field(default_factory=list)  # distinct, first-appearance order
    notes: list[str] = field(default_factory=list)  # the accounting of trials, why some are not tested
    label: str = ""  # LaTeX \label
    caption: str = ""
    post_hoc: list[str] = field(default_factory=list)  # sweeps whose design had another equivalence margin
    keys: bool = False  # rows and columns named by raw keys and values (`--labels keys`)
    # Protocol footnote letters by column, when each column ran one protocol; else by cell.
    col_marks: dict[tuple[Any, ...], str] = field(default_factory=dict)
    by_column: bool = True

    def protocol_marks(self, protocols: list[str]) -> str:
        """The footnote letters of some protocols ("" when the whole table shares one)."""
        if len(self.protocols) < 2:
            return ""
        return "".join(string.ascii_lowercase[self.protocols.index(p)] for p in protocols)


def _value(t: Trial, key: str) -> Any:
    if key not in t.config:
        # a key no trial has (a typo) is caught in `build_table`; a key one component lacks reads None
        return None
    return t.config[key]


def _differing(a: Trial, b: Trial, ignore: set[str]) -> list[str]:
    """The result fields (not the seed) in which two trials' experiments differ."""
    keys = (set(a.result_fields) | set(b.result_fields)) - ignore
    return sorted(k for k in keys if _canon(a.result_fields.get(k)) != _canon(b.result_fields.get(k)))


def _mode(metric: str, sweeps: list[Sweep]) -> str:
    for s in sweeps:
        if s.plan.spec.metric == metric:
            return s.plan.spec.mode
    return direction(metric)


def _check_results(trials: list[Trial]) -> Counter[str]:
    """One result per stored content key and seed, one content key per experiment and seed:
    anything else is an error naming both sweeps. Returns how many duplicates (the same result
    met again, e.g. reused from the trial store) are counted once."""
    by_result: dict[tuple[str, str], Trial] = {}
    by_experiment: dict[tuple[str, int], Trial] = {}
    dropped: Counter[str] = Counter()
    for t in trials:
        first = by_result.setdefault((t.result, t.experiment), t)
        if first is not t:
            shown = [m for m in t.metrics.keys() | first.metrics.keys() if m not in _NOT_RESULTS]
            differ = [m for m in ordered(shown) if _canon(first.metrics.get(m)) != _canon(t.metrics.get(m))]
            if differ:
                m = differ[0]
                raise TableError(
                    f"{first.sweep}/{first.cell} and {t.sweep}/{t.cell} hold different results for one content key "
                    f"({t.result[:12]}, seed {t.seed}): {metric_label(m)} {fmt_metric(m, first.metrics.get(m), 2)} vs "
                    f"{fmt_metric(m, t.metrics.get(m), 2)}; rerun one of them with --no-reuse, or leave one sweep out")
            dropped["duplicates of a result another sweep holds (counted once)"] += 1
            continue
        other = by_experiment.setdefault((t.experiment, t.seed), t)
        if other is not t:
            raise TableError(f"{other.sweep}/{other.cell} and {t.sweep}/{t.cell} hold different results for one "
                             f"experiment and seed {t.seed} (content keys {other.result[:12]} vs {t.result[:12]}: "
                             "data, code or hardware that the config does not show differ); leave one sweep out")
    return dropped


def build_table(sweep_dirs: list[Path], rows: list[str], cols: list[str], metrics: Optional[list[str]] = None,
                baseline: Optional[dict[str, Any]] = None, margin: Optional[float] = None, labels: str = "method",
                label: Optional[str] = None, caption: str = "") -> Table:
    if margin is not None and not (math.isfinite(margin) and margin > 0):
        raise TableError(f"--margin: {margin:g} is not a finite number of points > 0")
    if margin is not None and not baseline:
        raise TableError("--margin: needs --baseline (the margin is for the comparison with the baseline row)")
    if labels not in LABELS:
        raise TableError(f"--labels: {labels!r} is not one of {', '.join(LABELS)}")
    dirs = list(dict.fromkeys(Path(d) for d in sweep_dirs))
    plans = [_plan(d) for d in dirs]
    sweeps = [load_sweep(d, i, n, p) for i, (d, n, p) in enumerate(zip(dirs, _names(plans, dirs), plans))]
    loaded = [t for s in sweeps for t in s.trials]
    if not loaded:
        raise TableError(f"{', '.join(map(str, sweep_dirs))}: no finished final trial")
    for key in [*rows, *cols, *(baseline or {})]:
        if not any(key in t.config for t in loaded):
            raise TableError(f"--rows/--cols/--baseline: {key!r} is not a config key of these trials (nor `arm` or `sweep`)")
    metrics = metrics or [sweeps[0].plan.spec.metric]
    for m in metrics:
        if not any(m in t.metrics for t in loaded):
            raise TableError(f"--metrics: {m!r} is not reported by these trials (they have "
                             f"{', '.join(ordered({k for t in loaded for k in t.metrics} - {'epoch', 'time_s'}))})")
    dropped = _check_results(loaded)

    # Group by (row, col): one experiment per cell, each result once, in command-line and plan order.
    groups: dict[tuple[str, str], dict[str, dict[str, Trial]]] = {}
    policy_sweeps: dict[tuple[str, str], set[str]] = {}
    for t in loaded:
        key = (_canon([_value(t, k) for k in rows]), _canon([_value(t, k) for k in cols]))
        groups.setdefault(key, {}).setdefault(t.experiment, {}).setdefault(t.result, t)
        if t.adaptive:
            policy_sweeps.setdefault(key, set()).add(t.sweep)
    cells: dict[tuple[str, str], TableCell] = {}
    for (rk, ck), experiments in groups.items():
        if len(experiments) > 1:
            a, b = (next(iter(e.values())) for e in list(experiments.values())[:2])
            diff = _differing(a, b, set())
            where = ", ".join(f"{k}={v}" for k, v in zip([*rows, *cols], [*json.loads(rk), *json.loads(ck)]))
            hint = diff[0] if diff and diff[0] in a.config else SWEEP_KEY
            raise TableError(f"cell {where}: holds different experiments ({a.sweep}/{a.cell} vs {b.sweep}/{b.cell} differ in "
                             f"{', '.join(diff[:3]) or 'the seed list'}); add {hint} to --rows or --cols")
        (pooled,) = experiments.values()
        members = sorted(pooled.values(), key=lambda t: (t.seed, t.order))
        cells[(rk, ck)] = TableCell(tuple(json.loads(rk)), tuple(json.loads(ck)), members,
                                    frozenset(policy_sweeps.get((rk, ck), ())))

    first_seen = {}
    for t in loaded:  # already in command-line, plan and seed order
        first_seen.setdefault((_canon([_value(t, k) for k in rows]), _canon([_value(t, k) for k in cols])), t.order)
    row_order = list(dict.fromkeys(rk for rk, _ in sorted(cells, key=lambda k: first_seen[k])))
    col_order = list(dict.fromkeys(ck for _, ck in sorted(cells, key=lambda k: first_seen[k])))
    table = Table([tuple(json.loads(r)) for r in row_order], [tuple(json.loads(c)) for c in col_order], rows, cols,
                  metrics, {}, baseline, margin, [s.name for s in sweeps])
    for cell in cells.values():
        for m in metrics:
            table.entries[(cell.row, cell.col, m)] = Entry(cell, m, mean_ci(list(cell.by_seed(m).values())))
    _name_rows_and_cols(table, labels)
    table.protocols = list(dict.fromkeys(p for cell in cells.values() for p in cell.protocols))
    by_col = {c: list(dict.fromkeys(p for cell in cells.values() if cell.col == c for p in cell.protocols)) for c in table.cols}
    table.by_column = all(len(ps) == 1 for ps in by_col.values())
    table.col_marks = {c: table.protocol_marks(ps) if table.by_column else "" for c, ps in by_col.items()}
    _bold(table, sweeps)
    if baseline:
        _compare(table, sweeps, baseline, margin)
    table.notes = _accounting(table, sweeps, dropped)
    if margin is not None:
        table.post_hoc = [s.name for s in sweeps if s.plan.spec.equivalence_margin != margin]
    table.label = label or "tab:" + slug("-".join(s.plan.name for s in sweeps)).lower().replace("_", "-")
    table.caption = caption
    return table


# --------------------------------------------------------------------------- names


def _key_value(key: str, value: Any) -> str:
    """`dim=16`; `arm` and `sweep` by their value alone (`ee`, `quick16`)."""
    return _fmt(value) if key in (ARM_KEY, SWEEP_KEY) else f"{short_key(key)}={fmt_value(value)}"


def _name_rows_and_cols(t: Table, how: str) -> None:
    """Row and column labels. `keys`: the raw values. `method`: a row reads the label its sweeps
    gave its cells when they all agree (`MS+EE n=2`); else the method its trials run and the
    row's key values (`MS+EE lr=0.01`); a column reads its key values (`dim=16`, a sweep's name)."""
    t.keys = how == "keys"
    if t.keys:
        t.row_labels = {r: _label(r) for r in t.rows}
        t.col_labels = {c: _label(c) for c in t.cols}
        t.row_header = ", ".join(t.row_keys)
        return
    trials = {r: [tr for (rr, _, _), e in t.entries.items() if rr == r for tr in e.cell.trials] for r in t.rows}
    # `base`: a sweep of one cell names nothing by it
    own = {r: next(iter(ls)) if len(ls := {tr.label for tr in trials[r]}) == 1 and ls != {"base"} else None for r in t.rows}
    taken = Counter(own.values())
    labels, methods = {}, False
    for r in t.rows:
        if own[r] is not None and taken[own[r]] == 1:
            labels[r], methods = own[r], True
            continue
        found = [method_of(tr.config, {}) for tr in trials[r]]
        # an arm's name is already the sweep's name for its method
        method, absorbed = found[0] if len({m for m, _ in found}) == 1 and ARM_KEY not in t.row_keys else ("", set())
        methods |= bool(method)
        parts = [method] if method else []
        parts += [_key_value(k, v) for k, v in zip(t.row_keys, r) if k not in absorbed and v is not None]
        labels[r] = " ".join(parts) or "–"
    if len(set(labels.values())) < len(labels):  # not unique: the raw values say it
        labels, methods = {r: _label(r) for r in t.rows}, False
    t.row_labels = labels
    t.row_header = "method" if methods else ", ".join(short_key(k) for k in t.row_keys)
    cols = {c: ", ".join(_key_value(k, v) for k, v in zip(t.col_keys, c) if v is not None) or "–" for c in t.cols}
    t.col_labels = cols if len(set(cols.values())) == len(cols) else {c: _label(c) for c in t.cols}


# --------------------------------------------------------------------------- bold and comparisons


def _policy_comparison(a: TableCell, b: TableCell, sweeps: list[Sweep], metric: str) -> Optional[PairedComparison]:
    """The repeated CI of a seed policy when `a` vs `b` is one of its comparisons."""
    if len(a.sources) != 1 or len(b.sources) != 1:
        return None
    (dir_a, cell_a), (dir_b, cell_b) = next(iter(a.sources)), next(iter(b.sources))
    sweep = next((s for s in sweeps if s.sweep_dir == dir_a), None)
    if dir_a != dir_b or sweep is None or sweep.policy is None:
        return None
    if metric not in sweep.assessed:
        sweep.assessed[metric] = {(a.quantity.cell, a.quantity.ref): a.comparison
                                  for a in sweep.policy.assess(sweep.records, metric)}
    return sweep.assessed[metric].get((cell_a, cell_b))


def _test(a: TableCell, b: TableCell, sweeps: list[Sweep], metric: str) -> tuple[Optional[PairedComparison], str]:
    """`a` - `b` paired by seed, by the procedure their seeds allow; or why there is none."""
    c = _policy_comparison(a, b, sweeps, metric)
    if c is not None:
        return c, ""
    c = _policy_comparison(b, a, sweeps, metric)
    if c is not None:  # the policy compares b with a: the same interval, negated
        return PairedComparison(c.seeds, -c.mean_diff, -c.high, -c.low, c.p_value, c.procedure), ""
    adaptive = a.policy_sweeps | b.policy_sweeps
    if adaptive:
        return None, (f"not tested: seeds added adaptively by the seed policy of {', '.join(sorted(adaptive))} "
                      "outside one of its own comparisons (a plain t-test on them would not hold)")
    return paired_comparison(a.by_seed(metric), b.by_seed(metric)), ""


def _bold(t: Table, sweeps: list[Sweep]) -> None:
    """Bold the best of a column only when a test separates it from the runner-up."""
    for m in t.metrics:
        sign, mode = (1 if _mode(m, sweeps) == "max" else -1), _mode(m, sweeps)
        for col in t.cols:
            column = [e for (_, c, mm), e in t.entries.items() if c == col and mm == m and math.isfinite(e.ci.mean)]
            if len(column) < 2:
                continue  # a lone cell is best of nothing
            first, second = sorted(column, key=lambda e: -sign * e.ci.mean)[:2]
            if first.ci.mean == second.ci.mean:
                continue
            c, _ = _test(first.cell, second.cell, sweeps, m)
            first.best = c is not None and verdict(c, mode) == "better"


def _baseline_rows(t: Table, baseline: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [r for r in t.rows if all(_canon(r[t.row_keys.index(k)]) == _canon(v) for k, v in baseline.items())]


def _compare(table: Table, sweeps: list[Sweep], baseline: dict[str, Any], margin: Optional[float]) -> None:
    for key in baseline:
        if key not in table.row_keys:
            raise TableError(f"--baseline: {key} is not one of --rows {table.row_keys}")
    matching = _baseline_rows(table, baseline)
    if not matching:
        raise TableError(f"--baseline: no row has {', '.join(f'{k}={v}' for k, v in baseline.items())}")
    ignore = set(table.row_keys)
    for (row, col, m), e in table.entries.items():
        ref_row = next((r for r in matching if all(_canon(r[i]) == _canon(row[i]) for i, k in enumerate(table.row_keys)
                                                   if k not in baseline)), None)
        ref = table.entries.get((ref_row, col, m)) if ref_row is not None else None
        if ref is None or ref_row == row:
            continue
        differ = _differing(e.cell.trials[0], ref.cell.trials[0], ignore | e.cell.trials[0].searched | ref.cell.trials[0].searched)
        if differ:
            e.note = f"not compared: differs from the baseline in {', '.join(differ[:3])}"
            continue
        c, why = _test(e.cell, ref.cell, sweeps, m)
        if c is None:
            e.note = why
            continue
        raw_margin = None if margin is None else from_points(m, margin)
        e.comparison = c
        e.word = verdict(c, _mode(m, sweeps), margin=raw_margin,
                         margin_text=None if margin is None else f"{margin:g}" + points_suffix(m))
        if e.word.startswith("equivalent"):
            e.mark = EQUIVALENT_MARK
        elif e.word.split(",")[0] in ("better", "worse"):
            e.mark = SIGNIFICANT[c.procedure] + (EQUIVALENT_MARK if "within" in e.word else "")


def _accounting(t: Table, sweeps: list[Sweep], dropped: Counter[str]) -> list[str]:
    """Every trial of the sweeps: how many the table uses, which it leaves out and why."""
    used = len({(tr.result, tr.experiment) for e in t.entries.values() for tr in e.cell.trials})
    left = Counter(dropped)
    for s in sweeps:
        left.update(s.left_out)
    for m in t.metrics:
        missing = sum(1 for (_, _, mm), e in t.entries.items() if mm == m for tr in e.cell.trials
                      if not math.isfinite(tr.metrics.get(m, math.nan)))
        if missing:
            left[f"without a finite {metric_label(m)} (left out of that metric only)"] += missing
    search = sum(s.search_trials for s in sweeps)
    text = f"Trials: {used} final trial{'s' * (used != 1)} used"
    text += "; left out: " + ", ".join(f"{n} {why}" for why, n in left.items()) if left else "; none left out"
    if search:
        text += f"; {search} search trial{'s' * (search != 1)} not shown (they chose hyperparameters)"
    notes = [text + "."]
    why = list(dict.fromkeys(e.note for e in t.entries.values() if e.note))
    notes += [f"Some cells {n}." for n in why[:3]] + ([f"({len(why) - 3} more reasons: see the csv format.)"] if len(why) > 3 else [])
    return notes


# --------------------------------------------------------------------------- writers


def _fmt(value: Any) -> str:
    return "–" if value is None else str(value)


def _label(values: tuple[Any, ...]) -> str:
    return ", ".join(_fmt(v) for v in values)


def _number(e: Optional[Entry]) -> tuple[str, str, str]:
    """(mean, half-width, n) as text."""
    if e is None or e.ci.n == 0:
        return "", "", ""
    half = "" if not math.isfinite(e.ci.low) else fmt_metric(e.metric, e.ci.half_width)
    return fmt_metric(e.metric, e.ci.mean), half, str(e.ci.n)


def _headers(t: Table) -> list[tuple[tuple[Any, ...], str]]:
    return [(c, m) for c in t.cols for m in t.metrics]


def _cell_marks(t: Table, e: Entry) -> str:
    """Protocol footnote letters on a cell, when its column mixes protocols."""
    return "" if t.by_column else t.protocol_marks(e.cell.protocols)


def _col_marks(t: Table, col: tuple[Any, ...]) -> str:
    return t.col_marks.get(col, "")


def _legend(t: Table) -> list[str]:
    marks = {ch for e in t.entries.values() for ch in e.mark}
    base = ", ".join(f"{k}={v}" for k, v in (t.baseline or {}).items())
    if t.baseline and not t.keys:  # the baseline rows by their labels (`MS`)
        base = ", ".join(t.row_labels[r] for r in _baseline_rows(t, t.baseline)) or base
    lines = [f"Mean ± {CONFIDENCE:.0%} Student-t half-width over seeds (number of seeds in parentheses), in % for "
             "retrieval and clustering scores. Bold: the best mean in its column when a paired test over the seeds it "
             "shares with the runner-up separates them (a paired t-test with p < 0.05, or a seed policy's repeated 95 % CI "
             "when the two are one of its comparisons); never a cell alone in its column."]
    if "†" in marks or (t.baseline and not marks):
        lines.append(f"† differs from the baseline ({base}) in the same column: paired t-test over the shared seeds, "
                     "p < 0.05 (its 95 % interval of the difference excludes 0).")
    if "‡" in marks:
        lines.append(f"‡ differs from the baseline ({base}): a seed policy's repeated 95 % CI (Jennison & Turnbull; "
                     "valid under its optional stopping) excludes 0.")
    if EQUIVALENT_MARK in marks:
        unit = " points" if all(is_fraction(m) for m in t.metrics) else ""
        lines.append(f"≈ within ±{t.margin:g}{unit} of the baseline: the 95 % interval of the paired difference lies "
                     "inside the margin (two one-sided tests, TOST); with † or ‡ it also excludes 0."
                     + (f" The margin is this table's, not in the design of {', '.join(t.post_hoc)} (post hoc)."
                        if t.post_hoc else ""))
    if len(t.protocols) == 1:
        lines.append(f"Protocol: {t.protocols[0]}.")
    elif t.protocols:
        where = "columns" if t.by_column else "cells"
        lines.append(f"The {where} differ in protocol: "
                     + "; ".join(f"({string.ascii_lowercase[i]}) {p}" for i, p in enumerate(t.protocols)) + ".")
    lines += t.notes
    lines.append(f"Sweeps: {', '.join(t.sweeps)}.")
    return lines


def to_markdown(t: Table) -> str:
    def cell_text(e: Optional[Entry]) -> str:
        mean, half, n = _number(e)
        if not mean:
            return "–"
        mean = f"**{mean}**" if e.best else mean
        sup = f"<sup>{marks}</sup>" if (marks := _cell_marks(t, e)) else ""
        return (f"{mean} ± {half} ({n}){e.mark}" if half else f"{mean} ({n}){e.mark}") + sup

    def col_text(c: tuple[Any, ...], m: str) -> str:
        sup = f"<sup>{marks}</sup>" if (marks := _col_marks(t, c)) else ""
        name = t.col_labels[c] + sup
        return (f"{name} · {heading(m)}" if len(t.metrics) > 1 else name) if t.col_keys else heading(m) + sup

    header = [t.row_header] + [col_text(c, m) for c, m in _headers(t)]
    keys = f"{', '.join(t.col_keys)} → " if t.col_keys and t.keys else ""
    title = keys + (heading(t.metrics[0]) if len(t.metrics) == 1 and t.col_keys else "")
    lines = [f"**{title.strip()}**", ""] if title.strip() else []
    lines += ["| " + " | ".join(_md(h) for h in header) + " |", "| " + " | ".join(["---"] + [":---:"] * len(_headers(t))) + " |"]
    for r in t.rows:
        cells = [t.row_labels[r]] + [cell_text(t.entries.get((r, c, m))) for c, m in _headers(t)]
        lines.append("| " + " | ".join(_md(x) for x in cells) + " |")
    return "\n".join(lines + [""] + [f"{line}  " for line in _legend(t)]) + "\n"


def _md(x: str) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
        "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--", "±": r"$\pm$", "≈": r"$^{\approx}$", "†": r"$^\dagger$",
        "‡": r"$^\ddagger$", "→": r"$\rightarrow$", "·": r"$\cdot$", "<": r"$<$", ">": r"$>$"}


def tex(text: str) -> str:
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def _sup(marks: str) -> str:
    return rf"\textsuperscript{{{marks}}}" if marks else ""


def to_latex(t: Table) -> str:
    """A booktabs `table` with a caption and a `\\label` (needs `\\usepackage{booktabs}`)."""
    heads = _headers(t)
    spec = "l" + "c" * len(heads)
    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{spec}}}", r"\toprule"]
    col_head = {c: tex(t.col_labels[c]) + _sup(_col_marks(t, c)) for c in t.cols}
    if t.col_keys:
        if t.keys:
            lines.append(rf" & \multicolumn{{{len(heads)}}}{{c}}{{{tex(', '.join(t.col_keys))}}} \\")
            lines.append(rf"\cmidrule(lr){{2-{1 + len(heads)}}}")
        if len(t.metrics) > 1:
            n = len(t.metrics)
            lines.append(" & ".join([""] + [rf"\multicolumn{{{n}}}{{c}}{{{col_head[c]}}}" for c in t.cols]) + r" \\")
            lines.append(" ".join(rf"\cmidrule(lr){{{2 + i * n}-{1 + i * n + n}}}" for i in range(len(t.cols))))
            lines.append(" & ".join([tex(t.row_header)] + [tex(heading(m)) for _, m in heads]) + r" \\")
        else:
            lines.append(" & ".join([tex(t.row_header)] + [col_head[c] for c, _ in heads]) + r" \\")
    else:
        lines.append(" & ".join([tex(t.row_header)] + [tex(heading(m)) + _sup(_col_marks(t, c)) for c, m in heads]) + r" \\")
    lines.append(r"\midrule")
    for r in t.rows:
        cells = [tex(t.row_labels[r])]
        for c, m in heads:
            e = t.entries.get((r, c, m))
            mean, half, n = _number(e)
            if not mean:
                cells.append("--")
                continue
            mean = rf"\textbf{{{mean}}}" if e.best else mean
            body = rf"{mean} $\pm$ {half}" if half else mean
            cells.append(rf"{body} {{\scriptsize ({n})}}{tex(e.mark)}{_sup(_cell_marks(t, e))}")
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    legend = " ".join(tex(line) for line in _legend(t))
    metric = "" if len(t.metrics) > 1 else f"{tex(heading(t.metrics[0]))}. "
    head = f"{tex(t.caption.rstrip('.'))}. " if t.caption else ""
    lines += [rf"\caption{{{head}{metric}{legend}}}", rf"\label{{{t.label}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["row", "col", "metric", "unit", "n", "mean", "ci_low", "ci_high", "best", "seeds", "mark", "test",
              "verdict", "diff", "diff_low", "diff_high", "p_value", "protocol", "sources"]


def _shown(metric: str, x: float) -> float | str:
    """A value in the unit every format shows (fractions in %, differences in points)."""
    return in_unit(metric, x) if math.isfinite(x) else ""


def to_csv(t: Table) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, CSV_FIELDS + t.row_keys + t.col_keys)
    w.writeheader()
    for (r, c, m), e in sorted(t.entries.items(), key=lambda kv: (t.rows.index(kv[0][0]), t.cols.index(kv[0][1]), t.metrics.index(kv[0][2]))):
        comp = e.comparison
        w.writerow({"row": t.row_labels[r], "col": t.col_labels[c], "metric": m, "unit": unit_of(m),
                    "n": e.ci.n, "mean": _shown(m, e.ci.mean), "ci_low": _shown(m, e.ci.low), "ci_high": _shown(m, e.ci.high),
                    "best": e.best, "seeds": json.dumps(sorted(e.cell.by_seed(m))), "mark": e.mark,
                    "test": comp.procedure if comp else "", "verdict": e.word or e.note,
                    "diff": _shown(m, comp.mean_diff) if comp else "", "diff_low": _shown(m, comp.low) if comp else "",
                    "diff_high": _shown(m, comp.high) if comp else "",
                    "p_value": comp.p_value if comp and math.isfinite(comp.p_value) else "",
                    "protocol": " | ".join(e.cell.protocols),
                    "sources": ";".join(sorted({f"{tr.sweep}/{tr.cell}" for tr in e.cell.trials})),
                    **dict(zip(t.row_keys, r)), **dict(zip(t.col_keys, c))})
    return out.getvalue()


WRITERS = {"md": to_markdown, "latex": to_latex, "csv": to_csv}


# --------------------------------------------------------------------------- command line


def _keys(text: str) -> list[str]:
    return [k.strip() for k in text.split(",") if k.strip()]


def _baseline(items: list[str]) -> dict[str, Any]:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise TableError(f"--baseline {item!r}: expected key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def _margin(text: Optional[str]) -> Optional[float]:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise TableError(f"--margin: {text!r} is not a number (points of the metric)") from None
    if not (math.isfinite(value) and value > 0):
        raise TableError(f"--margin: {text} is not a finite number of points > 0")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dml-report table", description="The paper's table from one or more sweeps.")
    parser.add_argument("sweep_dirs", nargs="+", type=Path)
    parser.add_argument("--rows", required=True, help="comma-separated config keys (or arm, sweep) naming the rows")
    parser.add_argument("--cols", default="", help="comma-separated config keys naming the columns")
    parser.add_argument("--metrics", default="", help="comma-separated metrics (default: the first sweep's metric)")
    parser.add_argument("--baseline", nargs="*", default=[], help="key=value of the baseline row, e.g. expansion.n_inner_pts=0")
    parser.add_argument("--margin", default=None, help="equivalence margin in points of the metric (TOST), finite and > 0")
    parser.add_argument("--labels", choices=LABELS, default="method",
                        help="method: rows named as the sweeps name their cells (MS+EE n=2); keys: the raw config values")
    parser.add_argument("--label", default=None, help=r"the LaTeX \label (default: tab:<sweep names>)")
    parser.add_argument("--caption", default="", help="the caption's first sentence (LaTeX), before the legend")
    parser.add_argument("--format", choices=FORMATS, default="md")
    parser.add_argument("--out", type=Path, default=None, help="write here instead of stdout")
    args = parser.parse_args(argv)
    try:
        table = build_table(args.sweep_dirs, _keys(args.rows), _keys(args.cols), _keys(args.metrics) or None,
                            _baseline(args.baseline) or None, _margin(args.margin), args.labels, args.label, args.caption)
    except (TableError, SweepError, PathError, OSError) as e:  # PathError, OSError: a sweep's store missing or not one
        from dml_core.errors import first_line

        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    text = WRITERS[args.format](table)
    if args.out:
        try:
            args.out.write_text(text)
        except OSError as e:  # a directory, a path under a file, a read-only folder
            print(f"error: --out {args.out}: cannot write it ({e.strerror or type(e).__name__})", file=sys.stderr)
            return 2
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
