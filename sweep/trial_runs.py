"""The MLflow view of a sweep's trials and its parent run: made, mirrored and rebuilt from the store.

MLflow is a view of the trial store (`sweep.store`), never the record, and this module writes no
store row: a trial is recorded first (by the store's verbs), then its run is created, tagged with
the trial's key, and the id the writer thread got is handed back to the store's `run_recorded`
(`settle`). A retried trial logs into the same run, and so does a final trial resumed in the new
Tune experiment of `--resume` (same key); a step already recorded is not logged again.
`sync_runs` rebuilds the view at every `--resume` (and `python sweep/run.py --sync DIR`): the
parent run and one child run per trial are made to exist in the tracking store in use, whatever
happened to it (deleted, emptied, another `MLFLOW_TRACKING_URI`): a run created just before a
driver was killed is adopted by its key, a missing one is recreated from the record (params,
every evaluation, end status), a duplicate is deleted, and none is left RUNNING.

A trial answered from the store (reused) gets a light child run: tagged `sweep.reused_from` (the
sweep that ran it) and `sweep.trained_run` (the run that trained it, linked from its
description), with its final metrics as one value each (so the runs table, Group-by and the
compare view cover every trial of the sweep) and no history: its curves are in the run that
trained it, not copied into a second one. The end status follows the trial: FINISHED, or FAILED
with the error in the `error` tag (crash after all retries, or a non-finite loss); KILLED for
trials cut off by Ctrl-C. What the runs carry and how the UI shows them: `sweep.tracker`.
"""
from __future__ import annotations

import json
import math
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from sweep.console import describe_param
from sweep.mlflow_writer import MlflowWriter
from dml_core.config import flatten_config
from sweep.plan import SEARCH, SweepPlan
from sweep.records import FAILED, FINISHED, RUNNING, TrialRecord
from sweep.store import SweepLog
from sweep.tracker import HEADLINE_OF_TAG, HEADLINE_TAG, Tracker, mlflow_metric_names, parent_params

_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # PyYAML built without libyaml: the Python one


class RunRef:
    """A child run of this session: its id once the writer has created it."""

    __slots__ = ("run_id",)

    def __init__(self, run_id: Optional[str] = None) -> None:
        self.run_id = run_id


@dataclass(frozen=True)
class ParentFields:
    """What the sweep's parent run carries of the plan, derived once per session (`parent_fields`):
    opening the parent and remaking it at the end read these, not the plan."""

    sweep_dir: Path  # the run is named after it (`quickstart-2`: the same YAML's second sweep)
    tags: dict[str, Any]
    params: dict[str, Any]
    first: tuple[str, ...]  # the metrics each run logs first: the primary ones

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.sweep_dir / "sweep.yaml", self.sweep_dir / "plan.txt") if p.is_file()]


def parent_fields(plan: SweepPlan, sweep_dir: Path, log: SweepLog) -> ParentFields:
    """The parent run's tags, params and files; the headline tag is made first, so that it is the
    first tag shown (its value comes with the results)."""
    tags = {HEADLINE_TAG: "(running)", HEADLINE_OF_TAG: "(running)", "sweep.name": plan.name, "sweep.dir": str(sweep_dir), "sweep.id": log.sweep_id,
            "sweep.role": "parent", "sweep.source": plan.source, "mlflow.source.git.commit": log.meta.git_commit}
    searched = {k: describe_param(p) for k, p in (plan.spec.search.params if plan.spec.search else {}).items()}
    params = parent_params(plan.base, plan.spec.grid, searched, plan.spec.model_dump(mode="json"))
    return ParentFields(sweep_dir, tags, params, tuple(dict.fromkeys((plan.spec.metric, plan.spec.search_metric))))


class TrialRuns:
    """The child runs of one sweep: their tags and params from the trial's record (the store is
    the record, MLflow its view), written by the driver only.

    With a `writer` (`sweep.mlflow_writer`; what a sweep uses) every MLflow write is queued and
    made by its thread, and a created run's id reaches the store at the next `settle` (each Tune
    event) or `flush`; without one (tests driving the callback by hand) each write is made at once.
    Either way a record is in the store before its run is asked for."""

    def __init__(self, log: SweepLog, tracker: Tracker, sweep_name: str, labels: dict[str, str],
                 search_prefix: str, writer: Optional[MlflowWriter] = None) -> None:
        self.log, self.tracker, self.writer = log, tracker, writer
        self.sweep_name, self.labels, self.search_prefix = sweep_name, labels, search_prefix
        self._refs: dict[str, RunRef] = {}  # key -> this session's run of the trial
        # A live trial's params go with its first metrics (or its end) in one batch: a transaction
        # fewer per trial. `_fresh`: runs made here and never reopened (no earlier `error` tag).
        self._held: dict[str, dict[str, Any]] = {}
        self._fresh: set[str] = set()
        self.first: tuple[str, ...] = ()  # the metrics each run logs first (`open_parent`: the primary ones)
        self.parent = RunRef(log.meta.mlflow_parent_run_id)  # the sweep's run (`open_parent`)
        self.parent_fields: Optional[ParentFields] = None  # what it carries of the plan (`open_parent`)
        self.parent_status: Optional[str] = None  # its status before this session reopened it
        self.made_parent: Optional[str] = None  # the parent this session created: it has no earlier `error` tag
        # Runs made by the writer whose ids are not yet in the store (key None: the parent).
        self._created: queue.SimpleQueue[tuple[Optional[str], RunRef]] = queue.SimpleQueue()

    def prefix(self, record: TrialRecord) -> str:
        return self.search_prefix if record.phase == SEARCH else ""

    def _do(self, job: Callable[[], None]) -> None:
        if self.writer is None:
            job()
        else:
            self.writer.submit(job)

    @property
    def lagging(self) -> bool:
        """MLflow is behind a store locked by someone else: its writes wait, the store has them."""
        return self.writer is not None and self.writer.is_lagging

    def settle(self, check: bool = True) -> None:
        """Record the ids of the runs created since the last call; then raise a failed write
        (unless told not to): the runs made before it keep their ids in the store."""
        while not self._created.empty():
            key, ref = self._created.get()
            if key is None:
                self._record_parent(ref.run_id)
                continue
            if self._refs.get(key) is ref:
                self.log.run_recorded(key, ref.run_id)
        if check and self.writer is not None:
            self.writer.check()

    def flush(self, check: bool = True) -> None:
        """Every write asked for so far made, and the created runs' ids in the store; `check`
        False: a failed write is not raised (an interrupted sweep still marks its trials killed)."""
        if self.writer is not None:
            self.writer.flush(check=False)
        self.settle(check)

    def _record_parent(self, run_id: str) -> None:
        tracker = self.tracker  # its experiment id: cached by the parent's job
        self.log.parent_recorded(run_id, tracker.tracking_uri, tracker.experiment, tracker.experiment_id)

    def open_parent(self, fields: ParentFields) -> RunRef:
        """The sweep's parent run in the tracking store in use: reopened where it exists; found by
        the sweep's id where a driver made it but was killed before recording it; else created
        (a new sweep, or a store that lost it). Recorded, with the store's URI, at the next `settle`.
        With a writer, the first job of a new sweep: MLflow's store opens while Tune starts."""
        meta, ref = self.log.meta, self.parent
        self.first, self.parent_fields = fields.first, fields
        # A sweep migrated from a ledger.json did not record its URI: its parent, if this store has it.
        known = meta.mlflow_parent_run_id if meta.tracking_uri in (None, self.tracker.tracking_uri) else None
        files = fields.files

        def job() -> None:
            tracker = self.tracker
            found = known if tracker.exists(known) else tracker.find_parent(self.log.sweep_id)
            if found:
                self.parent_status = tracker.client.get_run(found).info.status
                tracker.reopen(found)
                ref.run_id = found
            else:
                ref.run_id = self.made_parent = tracker.start_run(fields.sweep_dir.name, fields.tags, fields.params)
                tracker.log_files(ref.run_id, files)
            self._created.put((None, ref))

        self._do(job)
        self.settle()
        return ref

    def refresh_parent(self) -> str:
        """The parent run opened by `open_parent`, remade where its params are not this session's
        plan (`--restart-changed` changed the base config, or the sweep grew): MLflow never changes
        a logged param. Called once the session has run, so that a refused command leaves the
        parent as it was."""
        self.flush()
        fields = self.parent_fields
        files = fields.files

        def start() -> str:
            run_id = self.made_parent = self.tracker.start_run(fields.sweep_dir.name, fields.tags, fields.params)
            self.tracker.log_files(run_id, files)
            return run_id

        self.parent.run_id = self.tracker.replace_if_changed(self.parent.run_id, fields.params, start)
        self._record_parent(self.parent.run_id)
        return self.parent.run_id

    def adopt(self, key: str, run_id: str) -> None:
        """The trial's run is `run_id` (found by its key in the tracking store)."""
        self._refs[key] = RunRef(run_id)
        self.log.run_recorded(key, run_id)

    def ref(self, record: TrialRecord) -> Optional[RunRef]:
        """The trial's run: made (or asked for) by this session, or recorded by an earlier one."""
        ref = self._refs.get(record.key)
        if ref is None and record.mlflow_run_id:
            ref = self._refs[record.key] = RunRef(record.mlflow_run_id)
        return ref

    def create(self, record: TrialRecord) -> RunRef:
        """A child run for `record` (already in the store): tags, params and config.yaml; a reused
        or recreated record's evaluations and end status too. Its id goes to the store."""
        tags = {
            "label": record.label, "sweep.key": record.key,
            "sweep.name": self.sweep_name, "sweep.phase": record.phase, "sweep.cell": record.cell,
            "sweep.arm": record.arm or "", "sweep.seed": record.seed, "sweep.trial_id": record.trial_id,
            "sweep.content_key": record.content_key,
            # MLflow's Group-by: one group per phase and cell (`final · MS+EE n=2`)
            "sweep.group": f"{record.phase} · {self.labels.get(record.cell, record.cell)}",
            "mlflow.source.git.commit": record.code_version or self.log.meta.git_commit,
            **{f"sweep.coord.{k}": v for k, v in record.coords.items()},
        }
        trained = None
        if record.reused_from:
            tags["sweep.reused_from"] = record.reused_from
            trained = self._trained_run(record)
        ref = self._refs[record.key] = RunRef()
        params = flatten_config(record.config)
        # libyaml's emitter: the same text as `yaml.safe_dump` (same representer), a fifth of the CPU.
        config = yaml.dump(record.config, Dumper=_YAML_DUMPER, sort_keys=False) if record.config else None
        ended = record.status != RUNNING
        prefix = self.prefix(record)
        if not ended:
            self._held[record.key], params = params, {}
        self._fresh.add(record.key)

        def job() -> None:
            tags["mlflow.parentRunId"] = self.parent.run_id  # made by an earlier job
            if record.reused_from:
                tags.update(self._reused_tags(record, trained))
            ref.run_id = self.tracker.start_run(record.label or record.key, tags, params)
            if config:
                self.tracker.log_text(ref.run_id, config, "config.yaml")
            self._created.put((record.key, ref))
            if record.reused_from:  # its result, one value per metric; the curves stay in the run that trained it
                self.tracker.log_metrics(ref.run_id, mlflow_metric_names(record.metrics, prefix, self.first),
                                         record.last_step)
            elif ended:
                self.tracker.log_history(ref.run_id, record.history, prefix, self.first)

        self._do(job)
        if ended:
            self.end(record)
        self.settle()
        return ref

    def _trained_run(self, record: TrialRecord) -> Optional[str]:
        """The MLflow run of the trial that produced a reused result (a sweep's own run, never
        another reused one), if its sweep recorded one."""
        found = self.log.store.finished([record.content_key]).get(record.content_key)
        return found[1].mlflow_run_id if found and not found[1].reused_from else None

    def _reused_tags(self, record: TrialRecord, trained: Optional[str]) -> dict[str, str]:
        """`sweep.trained_run` and a description linking the run that trained it (writer thread)."""
        where = f"sweep `{record.reused_from}`"
        tags = {"sweep.trained_run": trained or ""}
        if trained and self.tracker.exists(trained):
            experiment = self.tracker.client.get_run(trained).info.experiment_id
            link = f"[the run that trained it]({self.tracker.run_url_in(experiment, trained)})"
        else:
            link = f"its run{f' `{trained}`' if trained else ''} (in that sweep's tracking store)"
        tags["mlflow.note.content"] = (f"**Reused**: this result was trained by {where}, not again here; "
                                       f"its evaluations per epoch are in {link}. This run holds the result only.")
        return tags

    def log_metrics(self, record: TrialRecord, metrics: dict[str, float], step: int) -> None:
        ref, named = self.ref(record), mlflow_metric_names(metrics, self.prefix(record), self.first)
        params = self._held.pop(record.key, None)
        self._do(lambda: self.tracker.log_metrics(ref.run_id, named, step, params))

    def reopen(self, record: TrialRecord, trial_id: str) -> None:
        """A retried or resumed trial logs into its run again."""
        ref = self.ref(record)
        self._fresh.discard(record.key)

        def job() -> None:
            self.tracker.reopen(ref.run_id)
            self.tracker.client.set_tag(ref.run_id, "sweep.trial_id", trial_id)

        self._do(job)

    def held(self, key: str) -> Optional[dict[str, Any]]:
        """The params of a run that has logged no metrics yet, for the batch that ends it."""
        return self._held.pop(key, None)

    def forget(self, key: str) -> None:
        """Delete the run of a trial about to be discarded (it runs afresh; the store's
        `trial_discarded` drops its record and checkpoint next)."""
        if self.log.get(key) is None:
            return
        self.flush()  # its run may still be in the writer's queue
        record = self.log.get(key)
        if record.mlflow_run_id and self.tracker.exists(record.mlflow_run_id):
            self.tracker.client.delete_run(record.mlflow_run_id)
        self._refs.pop(key, None)
        self._held.pop(key, None)
        self._fresh.discard(key)

    def end(self, record: TrialRecord) -> None:
        """The run ends as the record did, with `metrics.json` (the record's results) attached."""
        ref = self.ref(record)
        summary = json.dumps({"status": record.status, "error": record.error, "final": record.metrics,
                              "history": [] if record.reused_from else record.history,
                              "reused_from": record.reused_from}, indent=1)
        status, error = record.status, record.error
        params, fresh = self.held(record.key), record.key in self._fresh

        def job() -> None:
            self.tracker.log_text(ref.run_id, summary, "metrics.json")
            self.tracker.end_run(ref.run_id, status, error, params, fresh)

        self._do(job)


def sync_runs(runs: TrialRuns) -> tuple[int, int]:
    """Make the tracking store show exactly the store's trials: one child run per record, adopted
    by key where one exists (a driver killed between creating a run and recording its id), else
    recreated from the record; duplicates deleted; statuses as recorded. A record still RUNNING
    belongs to a driver that is gone (the caller holds the sweep's lock): it becomes KILLED.
    Returns (runs created, duplicates deleted)."""
    log, tracker = runs.log, runs.tracker
    runs.flush()
    found = tracker.children(runs.parent.run_id)
    created = deleted = 0
    for key in found.keys() - {r.key for r in log.trials()}:  # records lost with a removed store
        for extra in found[key]:
            tracker.client.delete_run(extra.info.run_id)
            deleted += 1
    for record in log.trials():
        if record.status == RUNNING:
            record = log.trial_killed(record.key)
        candidates = found.get(record.key, [])
        keep = next((r for r in candidates if r.info.run_id == record.mlflow_run_id), candidates[0] if candidates else None)
        for extra in candidates:
            if extra is not keep:
                tracker.client.delete_run(extra.info.run_id)
                deleted += 1
        if keep is not None and not _shows(keep, record, runs.prefix(record)):
            tracker.client.delete_run(keep.info.run_id)  # writes lost with a killed driver: made anew
            keep = None
        if keep is None:
            runs.create(record)
            created += 1
            continue
        if keep.info.run_id != record.mlflow_run_id:
            runs.adopt(record.key, keep.info.run_id)
        if record.config and not keep.data.params:  # held back for a batch its killed driver never made
            tracker.log_params(keep.info.run_id, flatten_config(record.config))
        if keep.info.status != record.status:
            runs.end(log.get(record.key))
    runs.flush()
    return created, deleted


def _shows(run: Any, record: TrialRecord, prefix: str) -> bool:
    """The run's latest metrics are the record's last evaluation (none lost on the way)."""
    logged = run.data.metrics
    return all(k in logged and (logged[k] == v or (math.isnan(logged[k]) and math.isnan(v)))
               for k, v in mlflow_metric_names(record.metrics, prefix).items())


def end_parent(runs: TrialRuns, status: str, error: Optional[str] = None) -> None:
    """End the sweep's parent run after an interruption or a failure, where it was made; a store
    that fails now does not hide the error the sweep stopped with."""
    if runs.parent.run_id and not runs.lagging:  # a busy store: --resume or --sync ends it
        try:
            runs.tracker.end_run(runs.parent.run_id, status, error)
        except Exception:  # noqa: BLE001
            pass


def drop_parent(runs: TrialRuns) -> None:
    """Delete the parent run of a new sweep that stops before any trial ran (its folder is removed
    too): a plain rerun makes its own; a store that fails now does not hide the sweep's error."""
    if runs.parent.run_id and not runs.lagging:
        try:
            runs.tracker.client.delete_run(runs.parent.run_id)
        except Exception:  # noqa: BLE001
            pass


def publish_sweep(runs: TrialRuns, results: Any, files: list[Path], all_failed: Optional[str]) -> Optional[str]:
    """The parent run as a sweep leaves it: remade where its params changed, the results
    (`parent_run.publish`), the report's files, its end status (FAILED with `all_failed` when every
    final trial failed). Returns its id; None where MLflow stayed busy past `CATCH_UP_S`: the sweep
    still ends normally, and one line says that `--sync` brings MLflow up to the trial store."""
    from sweep.console import say
    from sweep.mlflow_writer import CATCH_UP_S, is_busy
    from sweep.parent_run import publish

    behind = (f"MLflow is still busy ({runs.tracker.tracking_uri}): this sweep's runs are behind the trial store, "
              f"which has every result; once it is free, `python sweep/run.py --sync {runs.parent_fields.sweep_dir}` replays them")
    if runs.writer is not None and not runs.writer.catch_up(CATCH_UP_S):
        say(behind)
        return None
    try:
        runs.refresh_parent()  # its params, where --restart-changed or growth changed them
        parent = publish(runs, results)  # a parent holding metrics this report dropped is replaced
        runs.tracker.log_files(parent, files)
        runs.tracker.end_run(parent, FAILED if all_failed else FINISHED, all_failed, fresh=parent == runs.made_parent)
    except Exception as e:
        if not is_busy(e):
            raise
        say(behind)
        return None
    return parent
