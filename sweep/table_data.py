"""The paper's table's data: each sweep's finished final trials as experiments, and the table's cells and entries."""
from __future__ import annotations

import hashlib
import json
import math
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from dml_core.config import flatten_config
from dml_core.evaluation.names import direction, ordered
from dml_core.identity import content_key, result_config, scored_on
from sweep.labels import metric_label, plan_labels, short_key
from sweep.plan import FINAL, SweepPlan, TrialSpec, plan_of, trial_config
from sweep.records import FAILED, FINISHED, SEARCH, TrialRecord
from sweep.results import PAPERS_SELECTION_METRIC, with_evaluation  # the sweep report's evaluation rule, shared
from sweep.sequential import PolicyView
from sweep.store import load_records
from sweep.stats import MeanCI, PairedComparison
from sweep.units import fmt_metric


SWEEP_KEY, ARM_KEY = "sweep", "arm"  # pseudo config keys
# Fields of a trial's identity beside its config: they change its numbers as much as a config key.
EVALUATION_FIELD, VERSION_FIELD, SCORED_FIELD = "sweep.report.evaluation", "results_version", "scored_on"
# Metrics that describe the run, not its result: a re-run may differ in them.
_NOT_RESULTS = {"epoch", "time_s", "gpu_mem_peak_mib"}


class TableError(ValueError):
    """A table that cannot be built as asked; the message is one line."""


def canon(value: Any) -> str:
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
    plan = plan or plan_of(sweep_dir)
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
        experiment = hashlib.sha256(canon(fields).encode()).hexdigest()[:32]
        trials.append(Trial(name, sweep_dir, r.cell, labels[r.cell], (index, i), r.seed, flat, fields, experiment,
                            r.content_key or content_key(config), {k: float(v) for k, v in r.metrics.items()}, searched,
                            plan.spec.policy is not None, protocol))
    trials.sort(key=lambda t: (t.order, t.seed))
    policy = PolicyView.from_plan(plan)
    search = sum(r.phase == SEARCH for r in all_records)
    return Sweep(plan, sweep_dir, name, trials, policy, records, left_out, search)


def sweep_names(plans: list[SweepPlan], sweep_dirs: list[Path]) -> list[str]:
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


def value_text(value: Any) -> str:
    return "–" if value is None else str(value)


def values_text(values: tuple[Any, ...]) -> str:
    return ", ".join(value_text(v) for v in values)


def value_of(t: Trial, key: str) -> Any:
    if key not in t.config:
        # a key no trial has (a typo) is caught in `build_table`; a key one component lacks reads None
        return None
    return t.config[key]


def differing(a: Trial, b: Trial, ignore: set[str]) -> list[str]:
    """The result fields (not the seed) in which two trials' experiments differ."""
    keys = (set(a.result_fields) | set(b.result_fields)) - ignore
    return sorted(k for k in keys if canon(a.result_fields.get(k)) != canon(b.result_fields.get(k)))


def mode_of(metric: str, sweeps: list[Sweep]) -> str:
    for s in sweeps:
        if s.plan.spec.metric == metric:
            return s.plan.spec.mode
    return direction(metric)


def check_results(trials: list[Trial]) -> Counter[str]:
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
            differ = [m for m in ordered(shown) if canon(first.metrics.get(m)) != canon(t.metrics.get(m))]
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


