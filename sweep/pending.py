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

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from dml_core.evaluation.names import sign as mode_sign
from dml_core.identity import RESULTS_VERSION, content_key, result_config, scored_on
from sweep.plan import FINAL, SEARCH, Cell, SweepPlan, TrialSpec, trial_config
from sweep.records import FAILED, TrialRecord
from sweep.spec import SweepError
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
    config = trial_config(plan.base, spec, sampled, plan.source).to_dict()
    config.pop("sweep", None)
    return Identity(config, content_key(config))


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
            record = log.update(spec.key, **identity_fields(ident))
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


def best_of(plan: SweepPlan, log: SweepLog, cell: Cell) -> Optional[TrialRecord]:
    """The finished search sample of `cell` with the best last evaluation."""
    metric, sign = plan.spec.search_metric, mode_sign(plan.spec.search_mode)
    done = [r for r in log.trials() if r.phase == SEARCH and r.cell == cell.id and r.finished
            and math.isfinite(r.value(metric))]
    return max(done, key=lambda r: sign * r.value(metric)) if done else None


# --------------------------------------------------------------------------- growth


def flatten_config(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out |= flatten_config(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


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
                         "start a new sweep (--out DIR or --set sweep.name=...) to run fewer trials")
    changed: dict[str, list[str]] = {}
    for r in log.trials():
        ident = identities.get(r.key)
        if ident is None or not r.content_key or r.content_key == ident.content_key:
            continue
        changed[r.key] = changed_fields(r.config, ident.config) or [_RESULTS_CHANGE]
    refused = {k: v for k, v in changed.items() if not set(v) <= searched}
    if refused and not restart_changed:
        key, first = next(iter(refused.items()))
        shown = ", ".join(first[:3]) + (", ..." if len(first) > 3 else "")
        old, new = flatten_config(log.get(key).config), flatten_config(identities[key].config)
        was = f" ({old.get(first[0])!r} -> {new.get(first[0])!r})" if len(first) == 1 else ""
        if first == [_RESULTS_CHANGE]:  # not a config key: the versions themselves
            was = f" ({log.get(key).results_version or 'unrecorded'} -> {RESULTS_VERSION})"
        raise SweepError(f"{plan.source}: {shown}{was} changes {len(refused)} trials this sweep already ran; "
                         "add --restart-changed to run them afresh, or start a new sweep (--out DIR or --set sweep.name=...)")
    return sorted(changed)


def check_search_unchanged(plan: SweepPlan, old_search: Optional[dict[str, Any]], log: SweepLog) -> None:
    """The search's ranges and holdout define the samples it already drew: changing them is refused
    once samples exist (more samples, `num_samples`, may be added)."""
    if not any(r.phase == SEARCH for r in log.trials()):
        return
    new = plan.spec.search.model_dump(mode="json") if plan.spec.search else None
    for name in ("params", "holdout"):
        if (old_search or {}).get(name) != (new or {}).get(name):
            raise SweepError(f"{plan.source}: sweep.search.{name}: differs from the search this sweep already ran; "
                             "start a new sweep (--out DIR or --set sweep.name=...)")
    if old_search and new and new["num_samples"] < old_search["num_samples"]:
        raise SweepError(f"{plan.source}: sweep.search.num_samples: fewer than this sweep already drew; "
                         "start a new sweep (--out DIR or --set sweep.name=...)")
