"""MLflow tracking of a sweep: one parent run per sweep, one child run per trial.

All MLflow calls happen in the driver -- in a Ray Tune `Callback` -- never inside trials:

- one writer, so a fresh sqlite store is never created concurrently by several trials (with
  `setup_mlflow` in trials that races: "table ... already exists"), and trials on other machines
  need no access to the tracking store;
- MLflow is a view of the trial store (`sweep.store`), never the record: a trial is recorded in
  the store first, then its run is created (tagged with the trial's key) and its id recorded; a
  retried trial logs into the same run, and so does a final trial resumed in the new Tune
  experiment of `--resume` (same key); a step (epoch) already recorded is not logged again;
- `sync_runs` rebuilds the view: at every `--resume` (and `python sweep/run.py --sync DIR`) the
  parent run and one child run per trial are made to exist in the tracking store in use, whatever
  happened to it (deleted, emptied, another `MLFLOW_TRACKING_URI`): a run created just before a
  driver was killed is adopted by its key, a missing one is recreated from the record (params,
  every evaluation, end status), a duplicate is deleted, and none is left RUNNING;
- a trial answered from the store (reused) gets a light child run: tagged `sweep.reused_from`
  (the sweep that ran it) and `sweep.trained_run` (the run that trained it, linked from its
  description), with its final metrics as one value each (so the runs table, Group-by and the
  compare view cover every trial of the sweep) and no history: its curves are in the run that
  trained it, not copied into a second one;
- the end status follows the trial: FINISHED, or FAILED with the error in the `error` tag
  (crash after all retries, or a non-finite loss); KILLED for trials cut off by Ctrl-C.

What the UI shows (MLflow 3 UI, experiment page, "Model training" view):

- run names are short and distinct, and the same text is in the `label` tag: `ee n=2 · s0` for a
  final trial, `search · ee n=2 · #3` for the third search sample of that cell (the full cell id
  is in `sweep.cell`, the trial key in `sweep.key`);
- search trials are scored on held-out *training* classes, final trials on the test split, so
  their metrics never share a name: a search run logs `holdout_recall_at_1`, `holdout_loss`, ...
  (`search_...` when the search has no holdout and scores the test split), a final run
  `recall_at_1`, ...; sorting the table by `recall_at_1` ranks final trials only;
- the epoch is the step of every metric, never a metric of its own;
- the parent run holds the sweep's results (see `log_results`; what, from `sweep.parent_run`):
  per-cell mean and CI bounds in %, paired differences in points and p-values as metrics, the
  headlines as its description, `report.html` (the report with its plots inline), `report.md`, its
  tables as CSV and its plots as artifacts, and the sweep YAML;
- child runs carry `sweep.group` (phase and cell label) for the runs table's Group-by;
- the parent's params are the base config,
  except that a swept key says `grid [...]` and a searched key `searched loguniform[...]`: no
  final trial used the base value of either;
- the parent run is named after its sweep directory (`quickstart-2` for the second `make run`),
  tagged `sweep.dir`; its `headline` and `headline.of` tags, made first so that they are the first
  tags shown, hold the first comparison in short (`sweep.parent_run.parent_headline`);
- MLflow 3.17 opens an experiment on its GenAI overview unless told otherwise: the experiment is
  tagged `mlflow.experimentKind = custom_model_development` (what the UI's experiment-kind
  selector writes and the UI reads where its workflow switch is off), and every printed URL
  carries `workflowType=machine_learning`, which this build's navigation follows (its switch is
  on: without the parameter it shows the view the browser last chose, GenAI at first). Both
  checked in headless Chromium.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import posixpath
import queue
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Optional

import yaml
from filelock import FileLock
from ray import tune

from sweep.compat import TUNE_RESULT_KEYS
from sweep.console import Console, describe_param
from sweep.mlflow_writer import MlflowWriter
from sweep.parent_run import ML_VIEW, UI_PORT, ui_base
from sweep.pending import Identity, flatten_config, identity, identity_fields
from sweep.plan import SEARCH, SweepPlan, TrialSpec
from sweep.records import FAILED, FINISHED, KILLED, RUNNING, TrialRecord
from sweep.store import SweepLog, trial_checkpoint
from sweep.trainable import TRIAL_ERROR

_TUNE_KEYS = {*TUNE_RESULT_KEYS, "done", "trial_id", "experiment_tag", "should_checkpoint"}
_MAX_TAG = 5000  # MLflow caps tag values at 8000 characters
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI's "Machine learning" kind
HEADLINE_TAG = "headline"  # the parent's first tag: MLflow lists a run's tags in the order they were made
HEADLINE_OF_TAG = "headline.of"  # its second: what the headline compares
STEP_KEY = "epoch"  # the step of every logged metric
_YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # PyYAML built without libyaml: the Python one


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parents[1])
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def trial_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The trainer's numbers in a Tune result (Tune adds its own bookkeeping keys)."""
    return {
        k: float(v) for k, v in result.items()
        if k not in _TUNE_KEYS and not k.startswith("_") and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def _store_lock(tracking_uri: str) -> Any:
    """A file lock beside a sqlite store: MLflow creates and migrates a fresh database in several
    statements, and two drivers doing it at once fail (`table ... already exists`, `No such
    index`). Other stores (a server, a database server) serialise this themselves."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or tracking_uri == prefix + ":memory:":
        return contextlib.nullcontext()
    return FileLock(tracking_uri[len(prefix):] + ".lock")


def use_wal(tracking_uri: str) -> None:
    """Put a sqlite tracking store in WAL mode (a property of the file, kept from then on).

    Every MLflow write is a commit made in the driver's Tune loop, which waits for it; with
    SQLite's default rollback journal a commit costs several fsyncs, with WAL one: 2-3x faster
    MLflow writes (`benchmarks/bench_sweep_scale.py`, README). WAL needs readers on the same host,
    as the trial store does. A store that cannot be switched now (busy, unreadable) is left as it is.
    """
    prefix = "sqlite:///"
    path = tracking_uri[len(prefix):].split("?")[0] if tracking_uri.startswith(prefix) else ""
    if not path or path == ":memory:" or not Path(path).parent.is_dir():
        return
    try:
        conn = sqlite3.connect(path, timeout=10)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
    except sqlite3.Error:
        pass


class Tracker:
    """Thin layer over `MlflowClient` for the runs of one sweep."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self._artifact_uris: dict[str, str] = {}  # run id -> artifact URI, for the runs made here (`log_text`)

    @cached_property
    def client(self) -> Any:
        """The `MlflowClient` (MLflow and its database layer are imported here: a second or two,
        which a sweep spends in its writer thread while Tune starts the first trials)."""
        from mlflow import MlflowClient

        from sweep.console import say
        from sweep.mlflow_writer import PatientClient

        with _store_lock(self.tracking_uri):
            use_wal(self.tracking_uri)
            client = PatientClient(MlflowClient(self.tracking_uri), self.tracking_uri, say)  # a busy store: wait
            client.get_experiment_by_name(self.experiment)  # creates or migrates the store, under the lock
        return client

    @cached_property
    def experiment_id(self) -> str:
        self.client  # noqa: B018 -- the store first (its own lock; FileLock is not reentrant across instances)
        with _store_lock(self.tracking_uri):  # two sweeps of one experiment: one creates, the other finds it
            return self._experiment_id()

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment)
        if found:
            if found.tags.get("mlflow.experimentKind") is None:  # made by an earlier version, or by hand
                for key, value in EXPERIMENT_KIND.items():
                    self.client.set_experiment_tag(found.experiment_id, key, value)
            return found.experiment_id
        # With a sqlite store, keep artifacts beside the database (not in whatever cwd the sweep
        # started from); `mlflow ui --backend-store-uri sqlite:///...` then shows them as they are.
        location = None
        if self.tracking_uri.startswith("sqlite:///"):
            location = Path(self.tracking_uri[len("sqlite:///"):]).parent.joinpath("mlartifacts").as_uri()
        return self.client.create_experiment(self.experiment, artifact_location=location, tags=EXPERIMENT_KIND)

    def ui_hint(self) -> tuple[str, str]:
        """The command that serves this store, runnable as printed (this interpreter's `-m mlflow`:
        `mlflow` is not on PATH without an activated venv), and the URL of the runs table."""
        url = f"{self.ui_base()}/#/experiments/{self.experiment_id}?{ML_VIEW}"
        if self.tracking_uri.startswith(("http://", "https://")):
            return "", url
        python = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") else sys.executable
        return f"{shlex.quote(python)} -m mlflow ui --backend-store-uri {shlex.quote(self.tracking_uri)} --port {UI_PORT}", url

    def ui_base(self) -> str:
        return ui_base(self.tracking_uri)

    def run_url(self, run_id: str) -> str:
        """The run's page: for the parent, its description (the headlines) and artifacts (report.html)."""
        return self.run_url_in(self.experiment_id, run_id)

    def run_url_in(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_base()}/#/experiments/{experiment_id}/runs/{run_id}?{ML_VIEW}"

    def artifact_url(self, run_id: str, path: str) -> str:
        """A run's artifact, opened in MLflow's artifact viewer (report.html renders there)."""
        return f"{self.ui_base()}/#/experiments/{self.experiment_id}/runs/{run_id}/artifacts/{path}?{ML_VIEW}"

    def compare_url(self, run_ids: list[str]) -> str:
        """MLflow's compare view of `run_ids` (this MLflow ignores filter parameters on the runs
        table's URL, but opens this one as built)."""
        runs, experiments = json.dumps(run_ids, separators=(",", ":")), json.dumps([self.experiment_id])
        return f"{self.ui_base()}/#/compare-runs?runs={runs}&experiments={experiments}&{ML_VIEW}"

    def start_run(self, name: str, tags: dict[str, Any], params: dict[str, Any]) -> str:
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, tags={k: str(v) for k, v in tags.items()}, run_name=name)
        self._artifact_uris[run.info.run_id] = run.info.artifact_uri
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run.info.run_id, params=items[i:i + 100])
        return run.info.run_id

    def log_text(self, run_id: str, text: str, path: str) -> None:
        """`MlflowClient.log_text`, straight into the artifact store for a run made here: the client
        first fetches the run for its artifact URI, a query that was a fifth of a trial's MLflow CPU."""
        uri = self._artifact_uris.get(run_id)
        if uri is None:
            self.client.log_text(run_id, text, path)
            return
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        folder, name = posixpath.split(posixpath.normpath(path))
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / name).write_text(text, encoding="utf-8")
            get_artifact_repository(uri, tracking_uri=self.tracking_uri).log_artifact(str(Path(tmp) / name), folder or None)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def reopen(self, run_id: str) -> None:
        self.client.update_run(run_id, status=RUNNING)

    def exists(self, run_id: Optional[str]) -> bool:
        """`run_id` is a live run of this store (not missing, not deleted)."""
        from mlflow.exceptions import MlflowException

        if not run_id:
            return False
        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:
            return False

    def find_parent(self, sweep_id: str) -> Optional[str]:
        """The live parent run tagged with `sweep_id`, if a driver made one (None if not)."""
        runs = self.client.search_runs([self.experiment_id], f"tags.`sweep.id` = '{sweep_id}' and "
                                       "tags.`sweep.role` = 'parent'", max_results=1)
        return runs[0].info.run_id if runs else None

    def children(self, parent: str) -> dict[str, list[Any]]:
        """`sweep.key` tag -> the child runs of `parent` with that key (one paginated query)."""
        out: dict[str, list[Any]] = {}
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'",
                                           max_results=1000, page_token=token)
            for run in page:
                out.setdefault(run.data.tags.get("sweep.key", ""), []).append(run)
            token = page.token
            if not token:
                return out

    def log_history(self, run_id: str, history: list[dict[str, float]], prefix: str, first: tuple[str, ...] = ()) -> None:
        """Every evaluation of a trial, each at its epoch (a run recreated from the store)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, int(h.get(STEP_KEY, i + 1)))
                 for i, h in enumerate(history) for k, v in mlflow_metric_names(h, prefix, first).items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i:i + 1000])

    def end_run(self, run_id: str, status: str, error: Optional[str] = None) -> None:
        if error:
            from mlflow.entities import RunTag

            self.client.log_batch(run_id, tags=[RunTag("error", error[:_MAX_TAG])])
        elif status == FINISHED and "error" in self.client.get_run(run_id).data.tags:
            self.client.delete_tag(run_id, "error")  # an earlier session's failure, since overcome
        self.client.set_terminated(run_id, status=status)

    def replace_if_changed(self, run_id: str, params: dict[str, Any], start: Callable[[], str]) -> str:
        """`run_id`, or where its params are not `params` (MLflow never changes a logged param:
        `--restart-changed` changed the base config, or the sweep grew) a new run made by `start`
        that takes its place (`replace`)."""
        if self.client.get_run(run_id).data.params == {k: str(v) for k, v in params.items()}:
            return run_id
        return self.replace(run_id, start)

    def replace(self, run_id: str, start: Callable[[], str]) -> str:
        """A new run made by `start` in place of `run_id` (which MLflow cannot edit: a logged param
        or metric stays): the old run's children moved to it, the old one deleted (MLflow's trash;
        `mlflow gc` purges it)."""
        new = start()
        for runs in self.children(run_id).values():
            for child in runs:
                self.client.set_tag(child.info.run_id, "mlflow.parentRunId", new)
        self.client.delete_run(run_id)
        return new

    def log_files(self, run_id: str, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(run_id, str(path))

    def log_results(self, run_id: str, metrics: dict[str, float], description: str, headline: str = "",
                    of: str = "") -> None:
        """A sweep's statistics on its parent run, the headlines as the run's description, the
        first one also in its `headline` and `headline.of` tags (the first tags on the run page's first screen)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, 0) for k, v in metrics.items() if v is not None and math.isfinite(v)]
        for i in range(0, len(items), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(run_id, metrics=items[i:i + 1000])
        self.client.set_tag(run_id, "mlflow.note.content", description)
        if headline:
            self.client.set_tag(run_id, HEADLINE_TAG, headline[:_MAX_TAG])
            self.client.set_tag(run_id, HEADLINE_OF_TAG, of[:_MAX_TAG])


def parent_params(base: dict[str, Any], grid: dict[str, list[Any]], searched: dict[str, str],
                  sweep: dict[str, Any]) -> dict[str, Any]:
    """The parent run's params: the base config, with swept and searched keys saying so."""
    params = flatten_config(base)
    params |= {k: f"grid {json.dumps(v)}" for k, v in grid.items()}
    params |= {k: f"searched {v}" for k, v in searched.items()}
    return params | flatten_config({"sweep": sweep})


def mlflow_metric_names(metrics: dict[str, float], prefix: str, first: tuple[str, ...] = ()) -> dict[str, float]:
    """What a trial logs: everything but the step, search metrics under their own prefix; the
    metrics in `first` first. MLflow keeps a run's metrics in the order they were first logged,
    and its compare view opens its plot on the first metric the runs share: the primary one."""
    ordered = {k: metrics[k] for k in first if k in metrics} | metrics
    return {f"{prefix}{k}": v for k, v in ordered.items() if k != STEP_KEY}


class RunRef:
    """A child run of this session: its id once the writer has created it."""

    __slots__ = ("run_id",)

    def __init__(self, run_id: Optional[str] = None) -> None:
        self.run_id = run_id


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
        self.first: tuple[str, ...] = ()  # the metrics each run logs first (`open_parent`: the primary ones)
        self.parent = RunRef(log.meta.mlflow_parent_run_id)  # the sweep's run (`open_parent`)
        self.parent_status: Optional[str] = None  # its status before this session reopened it
        # Runs made by the writer whose ids are not yet in the store (key None: the parent).
        self._created: queue.SimpleQueue[tuple[Optional[str], RunRef]] = queue.SimpleQueue()

    def prefix(self, record: TrialRecord) -> str:
        return self.search_prefix if record.phase == SEARCH else ""

    def _do(self, job: Callable[[], None]) -> None:
        if self.writer is None:
            job()
        else:
            self.writer.submit(job)

    def settle(self, check: bool = True) -> None:
        """Record the ids of the runs created since the last call; then raise a failed write
        (unless told not to): the runs made before it keep their ids in the store."""
        while not self._created.empty():
            key, ref = self._created.get()
            if key is None:
                self._record_parent(ref.run_id)
                continue
            record = self.log.get(key)
            if record is not None and self._refs.get(key) is ref and record.mlflow_run_id != ref.run_id:
                self.log.update(key, mlflow_run_id=ref.run_id)
        if check and self.writer is not None:
            self.writer.check()

    def flush(self, check: bool = True) -> None:
        """Every write asked for so far made, and the created runs' ids in the store; `check`
        False: a failed write is not raised (an interrupted sweep still marks its trials killed)."""
        if self.writer is not None:
            self.writer.flush(check=False)
        self.settle(check)

    def _record_parent(self, run_id: str) -> None:
        meta, tracker = self.log.meta, self.tracker
        known = (run_id, tracker.tracking_uri, tracker.experiment, tracker.experiment_id)  # the id: cached by the parent's job
        if (meta.mlflow_parent_run_id, meta.tracking_uri, meta.experiment, meta.experiment_id) != known:
            self.log.update_meta(mlflow_parent_run_id=run_id, tracking_uri=tracker.tracking_uri,
                                 experiment=tracker.experiment, experiment_id=tracker.experiment_id)

    def open_parent(self, plan: SweepPlan, sweep_dir: Path) -> RunRef:
        """The sweep's parent run in the tracking store in use: reopened where it exists; found by
        the sweep's id where a driver made it but was killed before recording it; else created
        (a new sweep, or a store that lost it). Recorded, with the store's URI, at the next `settle`.
        With a writer, the first job of a new sweep: MLflow's store opens while Tune starts."""
        meta, ref = self.log.meta, self.parent
        self.first = tuple(dict.fromkeys((plan.spec.metric, plan.spec.search_metric)))
        # A sweep migrated from a ledger.json did not record its URI: its parent, if this store has it.
        known = meta.mlflow_parent_run_id if meta.tracking_uri in (None, self.tracker.tracking_uri) else None
        tags, params, files = self._parent_fields(plan, sweep_dir)

        def job() -> None:
            tracker = self.tracker
            found = known if tracker.exists(known) else tracker.find_parent(self.log.sweep_id)
            if found:
                self.parent_status = tracker.client.get_run(found).info.status
                tracker.reopen(found)
                ref.run_id = found
            else:
                ref.run_id = tracker.start_run(sweep_dir.name, tags, params)
                tracker.log_files(ref.run_id, files)
            self._created.put((None, ref))

        self._do(job)
        self.settle()
        return ref

    def _parent_fields(self, plan: SweepPlan, sweep_dir: Path) -> tuple[dict[str, Any], dict[str, Any], list[Path]]:
        """The parent run's tags, params and files. It is named after its directory (`quickstart-2`:
        the same YAML's second sweep); the headline tag is made first, so that it is the first tag
        shown (its value comes with the results)."""
        tags = {HEADLINE_TAG: "(running)", HEADLINE_OF_TAG: "(running)", "sweep.name": plan.name, "sweep.dir": str(sweep_dir), "sweep.id": self.log.sweep_id,
                "sweep.role": "parent", "sweep.source": plan.source, "mlflow.source.git.commit": self.log.meta.git_commit}
        searched = {k: describe_param(p) for k, p in (plan.spec.search.params if plan.spec.search else {}).items()}
        params = parent_params(plan.base, plan.spec.grid, searched, plan.spec.model_dump(mode="json"))
        return tags, params, [p for p in (sweep_dir / "sweep.yaml", sweep_dir / "plan.txt") if p.is_file()]

    def refresh_parent(self, plan: SweepPlan, sweep_dir: Path) -> str:
        """The parent run, remade where its params are not this session's plan (`--restart-changed`
        changed the base config, or the sweep grew): MLflow never changes a logged param. Called
        once the session has run, so that a refused command leaves the parent as it was."""
        self.flush()
        tags, params, files = self._parent_fields(plan, sweep_dir)

        def start() -> str:
            run_id = self.tracker.start_run(sweep_dir.name, tags, params)
            self.tracker.log_files(run_id, files)
            return run_id

        self.parent.run_id = self.tracker.replace_if_changed(self.parent.run_id, params, start)
        self._record_parent(self.parent.run_id)
        return self.parent.run_id

    def adopt(self, key: str, run_id: str) -> None:
        """The trial's run is `run_id` (found by its key in the tracking store)."""
        self._refs[key] = RunRef(run_id)
        self.log.update(key, mlflow_run_id=run_id)

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
        self._do(lambda: self.tracker.log_metrics(ref.run_id, named, step))

    def reopen(self, record: TrialRecord, trial_id: str) -> None:
        """A retried or resumed trial logs into its run again."""
        ref = self.ref(record)

        def job() -> None:
            self.tracker.reopen(ref.run_id)
            self.tracker.client.set_tag(ref.run_id, "sweep.trial_id", trial_id)

        self._do(job)

    def discard(self, key: str) -> None:
        """Drop a trial whose config changed (it runs afresh): its record, run and checkpoint."""
        record = self.log.get(key)
        if record is None:
            return
        self.flush()  # its run may still be in the writer's queue
        record = self.log.get(key)
        if record.mlflow_run_id and self.tracker.exists(record.mlflow_run_id):
            self.tracker.client.delete_run(record.mlflow_run_id)
        self._refs.pop(key, None)
        trial_checkpoint(self.log.sweep_dir, key).unlink(missing_ok=True)
        self.log.remove(key)

    def end(self, record: TrialRecord) -> None:
        """The run ends as the record did, with `metrics.json` (the record's results) attached."""
        ref = self.ref(record)
        summary = json.dumps({"status": record.status, "error": record.error, "final": record.metrics,
                              "history": [] if record.reused_from else record.history,
                              "reused_from": record.reused_from}, indent=1)
        status, error = record.status, record.error

        def job() -> None:
            self.tracker.log_text(ref.run_id, summary, "metrics.json")
            self.tracker.end_run(ref.run_id, status, error)

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
            record = log.update(record.key, status=KILLED)
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
        if keep.info.status != record.status:
            runs.end(log.get(record.key))
    runs.flush()
    return created, deleted


def _shows(run: Any, record: TrialRecord, prefix: str) -> bool:
    """The run's latest metrics are the record's last evaluation (none lost on the way)."""
    logged = run.data.metrics
    return all(k in logged and (logged[k] == v or (math.isnan(logged[k]) and math.isnan(v)))
               for k, v in mlflow_metric_names(record.metrics, prefix).items())


class TrackingCallback(tune.Callback):
    """Mirrors trial events into the trial store, then MLflow, then the console (driver side):
    the one Tune callback of a sweep, so nothing depends on the order Tune calls callbacks in.

    The runner sets `specs` (the phase's trial specs: a trial's config holds its index) and
    `identities` (trial key -> identity, computed once per phase) before each phase. Ray Tune
    pickles its callbacks into the experiment folder, never restored by the sweep: only the sweep
    directory goes in the pickle.
    """

    def __init__(self, plan: SweepPlan, log: SweepLog, runs: TrialRuns, console: Console) -> None:
        self.plan, self.log, self.runs, self.console = plan, log, runs, console
        self.tracker = runs.tracker
        self.specs: list[TrialSpec] = []
        self.identities: dict[str, Identity] = {}
        self._samples: Optional[dict[str, int]] = None  # cell -> search samples recorded (labels)
        self._hardware: Optional[str] = None

    def __getstate__(self) -> dict[str, Any]:
        return {"sweep_dir": str(self.log.sweep_dir)}

    @property
    def hardware(self) -> str:
        if self._hardware is None:
            self._hardware = _hardware()
        return self._hardware

    def spec_of(self, trial: Any) -> TrialSpec:
        return self.specs[trial.config["trial"]]

    def setup(self, **info: Any) -> None:
        from sweep.progress import epoch_work, epochs_per_trial, expected_final_trials, trials_left

        records = self.log.trials()
        self.console.phase_started(self._ended(), trials_left(self.plan, records), epochs_per_trial(self.plan),
                                   epoch_work(self.plan))
        if self.plan.spec.policy:  # the final phase counted up to max seeds: say so, and what to expect
            from sweep.sequential import PolicyView

            spec = self.plan.spec
            view = PolicyView.of(spec.policy, self.plan.cells, spec.baseline, spec.metric, spec.equivalence_margin)
            self.console.progress.at_most = True
            self.console.progress.expected_final = expected_final_trials(view, records)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.runs.settle()  # the runs the writer made meanwhile: their ids into the store
        self.console.tick()

    def _ended(self) -> int:
        return self.log.ended

    # ---------------------------------------------------------------- Tune hooks

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._open(trial)

    def _label(self, spec: TrialSpec) -> str:
        cell_label = self.labels_of(spec.cell)
        if spec.phase == SEARCH:
            if self._samples is None:
                self._samples = {}
                for r in self.log.trials():
                    if r.phase == SEARCH:
                        self._samples[r.cell] = self._samples.get(r.cell, 0) + 1
            self._samples[spec.cell] = self._samples.get(spec.cell, 0) + 1
            return f"search · {cell_label} · #{self._samples[spec.cell]}"
        return f"{cell_label} · s{spec.seed}"

    def labels_of(self, cell: str) -> str:
        return self.runs.labels.get(cell, cell)

    def _open(self, trial: Any) -> None:
        spec = self.spec_of(trial)
        key = spec.ledger_key(trial.trial_id)
        record = self.log.by_trial_id(trial.trial_id) or self.log.get(key)
        if record is not None and self.runs.ref(record) is not None:
            # A retry, a final trial continued by --resume, or a crashed one with --retry-failed.
            record = self.log.update(key, trial_id=trial.trial_id, status=RUNNING, error=None, failure=None,
                                     attempts=record.attempts + 1, tune_experiment=trial.experiment_dir_name)
            self.runs.reopen(record, trial.trial_id)
            self.console.trial_started(record, (spec.phase, spec.cell))
            return
        sampled = trial.config.get("params")
        ident = self.identities.get(key) or identity(self.plan, spec, sampled)
        # Recorded before its run exists: a driver killed from here on leaves this record and at
        # most one run tagged with its key, which `sync_runs` adopts on --resume (never a second).
        record = self.log.add(TrialRecord(
            trial_id=trial.trial_id, key=key, label=self._label(spec), phase=spec.phase, cell=spec.cell, arm=spec.arm,
            coords=spec.coords, seed=spec.seed, params={**spec.params, **(sampled or {})}, status=RUNNING, attempts=1,
            tune_experiment=trial.experiment_dir_name, code_version=self.log.meta.git_commit,
            checkpoint=str(trial_checkpoint(self.log.sweep_dir, key)), hardware=self.hardware, **identity_fields(ident),
        ))
        self.runs.create(record)
        self.console.trial_started(record, (spec.phase, spec.cell))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get(TRIAL_ERROR):
            return  # the NaN marker of a non-finite loss, not an evaluation
        record = self.log.by_trial_id(trial.trial_id)
        metrics = trial_metrics(result)
        step = int(metrics.get(STEP_KEY, result.get("training_iteration", 0)))
        if record is None or step <= record.last_step:
            return  # already recorded by an earlier attempt of this trial
        self.log.update(record.key, last_step=step, metrics=metrics, history=[*record.history, metrics],
                        wall_s=float(result.get("time_total_s", record.wall_s or 0.0)))
        self.runs.log_metrics(record, metrics, step)
        self.console.evaluated(record, step, float(result.get("time_total_s", 0.0)))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = (trial.last_result or {}).get(TRIAL_ERROR)
        self._finish(trial, FAILED if error else FINISHED, error, "non_finite" if error else None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.log.by_trial_id(trial.trial_id) is None:
            self._open(trial)  # it failed to start (e.g. its actor could not be created)
        self._finish(trial, FAILED, error_line(trial), "crash")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self.log.by_trial_id(trial.trial_id)
        self.console.retry(record, record.label if record else trial.trial_id, error_line(trial))

    # ---------------------------------------------------------------- reuse

    def record_reused(self, spec: TrialSpec, key: str, ident: Identity, origin: str, found: TrialRecord,
                      params: dict[str, Any]) -> TrialRecord:
        """A trial answered from the store: its result copied into this sweep, marked with the
        sweep that ran it, with a child run carrying its metrics. A record of this sweep under the
        same key (a trial cut off earlier) gives way, with its run: one run per trial."""
        self.runs.discard(key)
        record = self.log.add(TrialRecord(
            trial_id="", key=key, label=self._label(spec), phase=spec.phase, cell=spec.cell, arm=spec.arm,
            coords=spec.coords, seed=spec.seed, params={**spec.params, **params}, status=FINISHED, attempts=0, metrics=found.metrics, history=found.history,
            last_step=found.last_step, reused_from=origin, wall_s=found.wall_s, hardware=found.hardware,
            code_version=found.code_version, checkpoint=found.checkpoint, **identity_fields(ident),
        ))
        self.runs.create(record)
        self.console.reused(self.log.get(key), origin, self._ended())
        return record

    # ---------------------------------------------------------------- helpers

    def _finish(self, trial: Any, status: str, error: Optional[str], failure: Optional[str]) -> None:
        record = self.log.by_trial_id(trial.trial_id)
        record = self.log.update(record.key, status=status, error=error, failure=failure)
        if self.runs.ref(record) is not None:
            self.runs.end(record)
        seconds = float((trial.last_result or {}).get("time_total_s", float("nan")))
        self.console.ended(record, self._ended(), seconds)


def _hardware() -> str:
    """The driver-side description of where trials run (the cluster's resources, in short)."""
    import ray

    try:
        res = ray.cluster_resources()
    except Exception:  # not connected (tests drive the callback by hand)
        return ""
    return f"{res.get('CPU', 0):g} CPU, {res.get('GPU', 0):g} GPU"


def error_line(trial: Any) -> str:
    """The last line of the trial's traceback, e.g. `DatasetError: data.num_classes: ...`."""
    text = None
    if trial.error_file and Path(trial.error_file).is_file():
        text = Path(trial.error_file).read_text()
    else:
        text = trial.get_error()
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "trial failed without an error message"


def end_parent(runs: TrialRuns, status: str, error: Optional[str] = None) -> None:
    """End the sweep's parent run after an interruption or a failure, where it was made; a store
    that fails now does not hide the error the sweep stopped with."""
    if runs.parent.run_id:
        try:
            runs.tracker.end_run(runs.parent.run_id, status, error)
        except Exception:  # noqa: BLE001
            pass


def drop_parent(runs: TrialRuns) -> None:
    """Delete the parent run of a new sweep that stops before any trial ran (its folder is removed
    too): a plain rerun makes its own; a store that fails now does not hide the sweep's error."""
    if runs.parent.run_id:
        try:
            runs.tracker.client.delete_run(runs.parent.run_id)
        except Exception:  # noqa: BLE001
            pass


def mark_killed(runs: TrialRuns) -> int:
    """After Ctrl-C: trials cut off mid-run become KILLED (store + MLflow) until `--resume`."""
    runs.flush(check=False)  # the writes asked for before the interruption first
    killed = 0
    for record in runs.log.trials():
        if record.status == RUNNING:
            record = runs.log.update(record.key, status=KILLED)
            if (ref := runs.ref(record)) is not None and ref.run_id:
                runs.tracker.end_run(ref.run_id, KILLED)
            killed += 1
    return killed
