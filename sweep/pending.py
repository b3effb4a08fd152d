"""What is left to run: the one place that decides, from the plan and the trial store, which
trials of a sweep train now, which are answered from a stored result, and which already ended.

- resume: a trial this sweep already ended (same content key) is kept; one cut off continues from
  its checkpoint; with `--retry-failed` a crashed one restarts from scratch;
- reuse: a trial whose content key some sweep in the store finished (this one or another) is not
  trained: its result is copied into this sweep, marked with where it came from;
- growth: a resumed sweep whose YAML gained seeds, arms, cells or search samples runs only what is
  new; a change that alters the config of trials this sweep already ran is refused in one line
  naming the field, unless `--restart-changed` (those trials then run afresh); a sweep that drops
  trials it ran is refused (start a new sweep instead). Operational settings (retries,
  resources, concurrency, the report) may change freely.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, NoReturn, Optional

from dml_core.config import flatten_config
from dml_core.identity import RESULTS_VERSION, content_key, result_config, scored_on
from sweep.plan import FINAL, SEARCH, Cell, SweepPlan, TrialSpec, trial_config
from sweep.records import FAILED, TrialRecord
from sweep.selection import Selection, candidate_of, select_for_cell
from sweep.spec import FOLD_METRIC, SweepError
from sweep.store import SweepLog, trial_checkpoint


@dataclass(frozen=True)
class Identity:
    """A trial's resolved config (without the `sweep` block) and its content key."""

    config: dict[str, Any]
    content_key: str

    @property
    def scored_on(self) -> str:
        return scored_on(self.config)


def identity(plan: SweepPlan, spec: TrialSpec, sampled: Optional[dict[str, Any]] = None) -> Identity:
    """The trial's config and its content key, over the fingerprint of the data it reads (each
    data root read once per plan: `SweepPlan.data_fingerprints`)."""
    from dml_core.data.fingerprint import Fingerprints

    cfg = trial_config(plan.base, spec, sampled, plan.source)
    try:
        data = Fingerprints(plan.data_fingerprints).of(cfg.data)
    except ValueError as e:  # DatasetError: one line naming the folder or file
        raise SweepError(f"{plan.source} [{spec.key}]: {e}") from None
    config = cfg.to_dict()
    config.pop("sweep", None)
    return Identity(config, content_key(config, data))


def identity_fields(ident: Identity) -> dict[str, Any]:
    """The fields of a `TrialRecord` that say which experiment it is."""
    return {"config": ident.config, "content_key": ident.content_key, "scored_on": ident.scored_on,
            "results_version": RESULTS_VERSION}


@dataclass
class Reuse:
    spec: TrialSpec
    ident: Identity
    origin: str  # the directory of the sweep that ran it
    record: TrialRecord  # its record there


@dataclass
class FinalWork:
    run: list[TrialSpec] = field(default_factory=list)  # to train: new, cut off, retried or changed
    reuse: list[Reuse] = field(default_factory=list)  # answered from the store
    ended: int = 0  # already ended in this sweep
    identities: dict[str, Identity] = field(default_factory=dict)  # trial key -> identity


def crashed(record: Optional[TrialRecord]) -> bool:
    return record is not None and record.status == FAILED and record.failure == "crash"


def final_work(plan: SweepPlan, log: SweepLog, specs: list[TrialSpec], identities: dict[str, Identity], *,
               reuse: bool, retry_failed: bool) -> FinalWork:
    """Split the final phase's trials into those that train, those answered from the store and
    those already ended here. Reads the store once (one indexed query for all content keys)."""
    work = FinalWork(identities=identities)
    done_elsewhere = log.store.finished(i.content_key for i in work.identities.values()) if reuse else {}
    for spec in specs:
        ident, record = work.identities[spec.key], log.get(spec.key)
        same = record is not None and record.content_key in (ident.content_key, "")  # "": migrated record
        if same and not record.content_key:  # migrated from a ledger.json: now it has an identity
            record = log.trial_identified(spec.key, identity_fields(ident))
        if same and record.ended:
            if retry_failed and crashed(record):
                trial_checkpoint(log.sweep_dir, spec.key).unlink(missing_ok=True)
                work.run.append(spec)
            else:
                work.ended += 1
            continue
        if record is not None and not same:  # --restart-changed: the old checkpoint is another config's
            trial_checkpoint(log.sweep_dir, spec.key).unlink(missing_ok=True)
        found = done_elsewhere.get(ident.content_key)
        if found is not None:
            work.reuse.append(Reuse(spec, ident, *found))
        else:
            work.run.append(spec)
    return work


# --------------------------------------------------------------------------- search


def search_ended(log: SweepLog, cell: str) -> int:
    """Search samples of `cell` that ended (finished or failed; lost ones were redrawn)."""
    return sum(r.phase == SEARCH and r.cell == cell and r.ended for r in log.trials())


def search_left(plan: SweepPlan, log: SweepLog) -> int:
    if not plan.spec.search:
        return 0
    n = plan.spec.search.num_samples
    return sum(max(0, n - search_ended(log, c.id)) for c in plan.cells)


@dataclass
class Kept:
    """The searched values a cell's final trials run with."""

    params: dict[str, Any]
    choice: Optional[Selection]  # made now (to record and tell); None: the recorded choice stands
    samples: int  # the cell's ended search samples it was chosen among


def kept_value(plan: SweepPlan, log: SweepLog, cell: Cell) -> Optional[Kept]:
    """The best finished search sample of `cell` by its last evaluation (the rule of
    `sweep.selection`: the best, unless within scoring noise of another); decided once, then kept --
    until a grown search (more `num_samples`) has ended more samples of the cell. None: no sample
    of the cell finished."""
    chosen = log.meta.best.get(cell.id)
    ended = search_ended(log, cell.id)
    if chosen is not None and chosen.samples >= ended:
        return Kept(chosen.params, None, ended)
    metric = plan.spec.search_metric
    done = [r for r in log.trials() if r.phase == SEARCH and r.cell == cell.id and r.finished
            and math.isfinite(r.value(metric))]
    if not done:
        return None
    choice = select_for_cell(plan, cell, [candidate_of(r, metric) for r in done])
    return Kept(choice.params, choice, ended)


def stored_answer(plan: SweepPlan, log: SweepLog, spec: TrialSpec, params: dict[str, Any]) -> Optional[Reuse]:
    """A search sample (`spec` with the sampled `params`) whose content key some sweep in the store
    finished: answered from that record, it never runs. None: it trains."""
    ident = identity(plan, spec, params)
    found = log.store.finished([ident.content_key]).get(ident.content_key)
    return None if found is None else Reuse(spec, ident, *found)


def unsearched(log: SweepLog, trials: list[TrialSpec], best: dict[str, Any]) -> tuple[list[TrialSpec], list[TrialSpec]]:
    """A cell whose every search trial failed has nothing to re-run: its final trials are recorded
    as failed (they appear in the table) instead of silently using base values. Returns (the
    trials that run, those to record as failed: not recorded yet)."""
    kept = [t for t in trials if t.cell in best]
    return kept, [t for t in trials if t.cell not in best and log.get(t.key) is None]


def crashed_pairs(log: SweepLog, trials: list[TrialSpec]) -> set[tuple[str, int]]:
    """`--retry-failed` under a seed policy: the (cell, seed) of crashed final trials, run first."""
    return {(t.cell, t.seed) for t in trials if crashed(log.get(t.key))}


# --------------------------------------------------------------------------- growth


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted fields whose value differs between two resolved configs (result fields only)."""
    a, b = flatten_config(result_config(old)), flatten_config(result_config(new))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


_RESULTS_CHANGE = "dml_core results version"  # a changed content key with the same config


def check_growth(plan: SweepPlan, log: SweepLog, specs: list[TrialSpec], identities: dict[str, Identity],
                 restart_changed: bool) -> list[str]:
    """Refuse a resumed sweep that drops trials it ran, or (without `restart_changed`) changes the
    config of trials it ran; returns the keys of the changed trials that will run afresh. A final
    trial whose only change is in searched parameters follows its cell's new choice after the
    search grew (the search's ranges cannot change, `check_search_unchanged`): it runs afresh."""
    searched = set(plan.spec.search.params) if plan.spec.search else set()
    wanted = {s.key for s in specs}
    ran = [r for r in log.trials() if r.phase == FINAL]
    dropped = sorted({r.key for r in ran if r.key not in wanted and r.failure != "search"})
    if dropped:
        seeds = sorted({r.seed for r in ran if r.key in dropped} - set(plan.seeds))
        what = f"sweep.seeds: drops seed {', '.join(map(str, seeds))}" if seeds else f"sweep.grid/arms: drops {dropped[0]}"
        raise SweepError(f"{plan.source}: {what}, which this sweep has run ({len(dropped)} trials); "
                         f"{NEW_SWEEP} to run fewer trials")
    changed: dict[str, list[str]] = {}
    for r in log.trials():
        ident = identities.get(r.key)
        if ident is None or not r.content_key or r.content_key == ident.content_key:
            continue
        # Same fields, another key: another results version, else the data under the same paths.
        same_version = r.results_version in (None, RESULTS_VERSION)
        changed[r.key] = changed_fields(r.config, ident.config) or [
            "the data (what its data roots hold)" if same_version else _RESULTS_CHANGE]
    refused = {k: v for k, v in changed.items() if not set(v) <= searched}
    if refused and not restart_changed:
        key, first = next(iter(refused.items()))
        was = None
        if first == [_RESULTS_CHANGE]:  # not a config key: the versions themselves
            was = f" ({log.get(key).results_version or 'unrecorded'} -> {RESULTS_VERSION})"
        refuse_changed(plan.source, first, log.get(key).config, identities[key].config,
                       f" changes {len(refused)} trials this sweep already ran", "them", was)
    return sorted(changed)


def check_base_unchanged(plan: SweepPlan, old_base: Optional[dict[str, Any]], restart_changed: bool) -> None:
    """Refuse a resumed sweep whose base experiment changed in a result field (every trial's config
    derives from it), unless `restart_changed`. `old_base` None: an earlier version that kept none."""
    if old_base is None or restart_changed:
        return
    changed = changed_fields(old_base, plan.base)
    if changed:
        refuse_changed(plan.source, changed, result_config(old_base), result_config(plan.base),
                       ": changes the experiment this sweep already ran", "the affected trials")


NEW_SWEEP = "start a new sweep (--out DIR or --set sweep.name=...)"


def refuse_changed(source: str, fields: list[str], old: dict[str, Any], new: dict[str, Any], changes: str,
                   rerun: str, was: Optional[str] = None) -> NoReturn:
    """The one `--restart-changed` refusal: the dotted `fields` differ between the configs `old`
    and `new` (a single field shows both values, unless `was` says it otherwise)."""
    a, b = flatten_config(old), flatten_config(new)
    shown = ", ".join(fields[:3]) + (", ..." if len(fields) > 3 else "")
    if was is None:
        was = f" ({a.get(fields[0])!r} -> {b.get(fields[0])!r})" if len(fields) == 1 and fields[0] in a.keys() | b.keys() else ""
    raise SweepError(f"{source}: {shown}{was}{changes}; add --restart-changed to run {rerun} afresh, or {NEW_SWEEP}")


# --------------------------------------------------------------------------- the design


@dataclass
class Restart:
    """What `--restart-changed` reruns after a change of the design: these trials (their records,
    MLflow runs and checkpoints discarded), and with `search` the search's studies and choices."""

    keys: list[str] = field(default_factory=list)
    search: bool = False


def _search_metric(sweep: dict[str, Any]) -> Any:
    """The metric a dumped spec's search ranks by (`SweepSpec.search_metric`)."""
    search = sweep.get("search") or {}
    return search.get("metric") or (FOLD_METRIC if search.get("folds") else sweep.get("metric"))


def design(sweep: dict[str, Any]) -> dict[str, Any]:
    """What a sweep's results mean, from its dumped spec (`plan.json`'s `sweep`): dotted field ->
    value. The search's fields say what its samples were scored on and how; the seeds' kind and
    policy, the margin (and, for a policy, the metric and baseline its stops were decided on) say
    what the final phase's seeds and verdicts mean."""
    search = sweep.get("search") or {}
    seeds = sweep.get("seeds")
    policy = seeds if isinstance(seeds, dict) else None
    out: dict[str, Any] = {f"sweep.search.{k}": search.get(k) for k in ("params", "holdout", "folds")}
    out |= {"sweep.search.metric": _search_metric(sweep) if search else None, "sweep.scheduler": _scheduler(sweep.get("scheduler")),
            "sweep.seeds": "a seed policy" if policy else "a seed list",
            "sweep.equivalence_margin": sweep.get("equivalence_margin")}
    if policy:
        out |= {f"sweep.seeds.{k}": policy.get(k) for k in ("start", "max", "step", "spending", "until")}
        out |= {"sweep.metric": sweep.get("metric"), "sweep.baseline": sweep.get("baseline")}
    return out


def _scheduler(scheduler: Any) -> Any:
    # Without early stopping its settings are inert.
    return "none" if not scheduler or scheduler.get("name") == "none" else scheduler


def _phase_of(dotted: str) -> str:
    return SEARCH if dotted.startswith(("sweep.search.", "sweep.scheduler")) else FINAL


def check_resumed(plan: SweepPlan, started: dict[str, Any], old_base: Optional[dict[str, Any]], log: SweepLog,
                  restart_changed: bool) -> Restart:
    """What a resumed sweep may not change, against the plan it started with (`started`, its
    `plan.json`; `old_base`, its base experiment): the base experiment's result fields (every
    trial's config derives from it; `--restart-changed` allows it), and what its finished results
    mean (`check_design_unchanged`). Seeds, arms, cells and search samples may be added;
    operational settings may change. Returns what `--restart-changed` reruns."""
    restart = check_design_unchanged(plan, started, log, restart_changed)
    check_base_unchanged(plan, old_base, restart_changed)
    return restart


def check_design_unchanged(plan: SweepPlan, started: dict[str, Any], log: SweepLog, restart_changed: bool) -> Restart:
    """Refuse, in one line naming the field, a resumed sweep that changes what its finished
    results mean (`design`): a search field once search samples ran, a seed-policy field, the
    seeds' kind or the margin once final trials finished; and results keyed by another
    `RESULTS_VERSION`. With `restart_changed` the phase the change belongs to runs afresh: the
    search (samples, studies, choices), or the final phase of a seed policy (its stops follow the
    new design from the first look); a margin change in a sweep of fixed seeds reruns nothing."""
    trials = log.trials()
    stale = [r for r in trials if r.results_version not in (None, RESULTS_VERSION) and r.content_key]
    if stale and not restart_changed:
        raise SweepError(f"{plan.source}: {len(stale)} trials of this sweep were keyed under dml_core results version "
                         f"{stale[0].results_version} (now {RESULTS_VERSION}: the key covers the data, thread count and "
                         f"device); add --restart-changed to run them afresh, or {NEW_SWEEP}")
    old_sweep = started.get("sweep")
    if not isinstance(old_sweep, dict):  # a plan.json of an earlier version: its search is all it says
        check_search_unchanged(plan, started.get("search"), log)
        return Restart()
    old, new = design(old_sweep), design(plan.spec.model_dump(mode="json"))
    ran = {SEARCH: [r for r in trials if r.phase == SEARCH], FINAL: [r for r in trials if r.phase == FINAL and r.finished]}
    changed = [k for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k) and ran[_phase_of(k)]]
    if changed and not restart_changed:
        first = changed[0]
        phase = _phase_of(first)
        what = (f"{len(ran[SEARCH])} search samples" if phase == SEARCH else f"{len(ran[FINAL])} finished final trials")
        raise SweepError(f"{plan.source}: {first} ({_shown(old.get(first))} -> {_shown(new.get(first))}): changes what "
                         f"the {what} of this sweep mean; add --restart-changed to run the {phase} phase afresh "
                         f"under the new design, or {NEW_SWEEP}")
    phases = {_phase_of(k) for k in changed}
    if SEARCH not in phases:
        check_search_unchanged(plan, started.get("search"), log)
    policy = plan.spec.policy is not None or old.get("sweep.seeds") == "a seed policy"
    keys = [r.key for r in ran[SEARCH]] if SEARCH in phases else []
    if FINAL in phases and policy:
        keys += [r.key for r in trials if r.phase == FINAL]
    return Restart(keys, SEARCH in phases)


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(", ", ": "))
    return "unset" if value is None else repr(value)


def check_search_unchanged(plan: SweepPlan, old_search: Optional[dict[str, Any]], log: SweepLog) -> None:
    """The search's ranges and holdout define the samples it already drew: changing them is refused
    once samples exist (more samples, `num_samples`, may be added)."""
    if not any(r.phase == SEARCH for r in log.trials()):
        return
    new = plan.spec.search.model_dump(mode="json") if plan.spec.search else None
    for name in ("params", "holdout"):
        if (old_search or {}).get(name) != (new or {}).get(name):
            raise SweepError(f"{plan.source}: sweep.search.{name}: differs from the search this sweep already ran; "
                             f"{NEW_SWEEP}")
    if old_search and new and new["num_samples"] < old_search["num_samples"]:
        raise SweepError(f"{plan.source}: sweep.search.num_samples: fewer than this sweep already drew; "
                         f"{NEW_SWEEP}")
