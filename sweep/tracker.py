"""The MLflow client of a sweep: the tracking store, its experiment, runs, metrics, artifacts, URLs.

All MLflow calls happen in the driver -- from the sweep's Ray Tune callback (`sweep.tune_callback`)
and its writer thread (`sweep.mlflow_writer`) -- never inside trials:

- one writer, so a fresh sqlite store is never created concurrently by several trials (with
  `setup_mlflow` in trials that races: "table ... already exists"), and trials on other machines
  need no access to the tracking store;

The runs' lifecycle (made from the store, rebuilt by `sync_runs`): `sweep.trial_runs`.

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
  tags shown, hold the first comparison in short (`sweep.results.Summary.tag`);
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
import shlex
import sqlite3
import subprocess
import sys
import tempfile
import time
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlparse
from urllib.request import url2pathname

from filelock import FileLock

from sweep.parent_run import ML_VIEW, UI_PORT, ui_base
from dml_core.config import flatten_config
from sweep.records import FINISHED, RUNNING

_MAX_TAG = 5000  # MLflow caps tag values at 8000 characters
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI's "Machine learning" kind
HEADLINE_TAG = "headline"  # the parent's first tag: MLflow lists a run's tags in the order they were made
HEADLINE_OF_TAG = "headline.of"  # its second: what the headline compares
STEP_KEY = "epoch"  # the step of every logged metric


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parents[1])
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def _store_lock(tracking_uri: str) -> Any:
    """A file lock beside a sqlite store: MLflow creates and migrates a fresh database in several
    statements, and two drivers doing it at once fail (`table ... already exists`, `No such
    index`). Other stores (a server, a database server) serialise this themselves."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix) or tracking_uri == prefix + ":memory:":
        return contextlib.nullcontext()
    return FileLock(tracking_uri[len(prefix):] + ".lock")


def _sqlite_file(tracking_uri: str) -> str:
    """The database file of a `sqlite:///` tracking URI ("" for any other store, or an in-memory one)."""
    prefix = "sqlite:///"
    path = tracking_uri[len(prefix):].split("?")[0] if tracking_uri.startswith(prefix) else ""
    return "" if path == ":memory:" else path


def use_wal(tracking_uri: str) -> None:
    """Put a sqlite tracking store in WAL mode (a property of the file, kept from then on).

    Every MLflow write is a commit made in the driver's Tune loop, which waits for it; with
    SQLite's default rollback journal a commit costs several fsyncs, with WAL one: 2-3x faster
    MLflow writes (`benchmarks/bench_sweep_scale.py`, README). WAL needs readers on the same host,
    as the trial store does. A store that cannot be switched now (busy, unreadable) is left as it is.
    """
    path = _sqlite_file(tracking_uri)
    if not path or not Path(path).parent.is_dir():
        return
    try:
        conn = sqlite3.connect(path, timeout=10)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        finally:
            conn.close()
    except sqlite3.Error:
        pass


_RELAXED: set[str] = set()  # sqlite stores whose connections made here commit without an fsync (`relax_sync`)


def relax_sync(tracking_uri: str) -> None:
    """Make this process's connections to a sqlite store in WAL mode commit with
    `synchronous=NORMAL`: the store stays consistent after a crash or power loss, which may only
    undo its last commits -- a view that `--sync` rebuilds from the trial store, the record. With
    SQLite's default (FULL) each MLflow commit waited on an fsync: most of the writer thread's wall
    time per trial, some of its CPU (`benchmarks/bench_callback.py`). A per-connection setting, not
    the file's: other readers and writers of the store keep theirs, and a store that is not in WAL
    mode (where NORMAL could corrupt it on power loss) keeps FULL. SQLAlchemy's documented hook for
    a sqlite pragma: MLflow makes its engine itself, so the listener is on every `Engine` and acts
    on this store's file only."""
    path = _sqlite_file(tracking_uri)
    if not path:
        return
    if not _RELAXED:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "connect", _relax_connection)
    _RELAXED.add(os.path.realpath(path))


def _relax_connection(dbapi_connection: Any, _record: Any) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cursor = dbapi_connection.cursor()
    try:
        files = {os.path.realpath(row[2]) for row in cursor.execute("PRAGMA database_list") if row[1] == "main" and row[2]}
        if files & _RELAXED and cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
            cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


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
            relax_sync(self.tracking_uri)
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
        if uri.startswith("file://"):  # a local artifact store: the file written where MLflow would copy it
            target = Path(url2pathname(urlparse(uri).path)) / posixpath.normpath(path)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
            return
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        folder, name = posixpath.split(posixpath.normpath(path))
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / name).write_text(text, encoding="utf-8")
            get_artifact_repository(uri, tracking_uri=self.tracking_uri).log_artifact(str(Path(tmp) / name), folder or None)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int, params: Optional[dict[str, Any]] = None) -> None:
        """The metrics at `step` in one batch, with the run's `params` where they were held back
        (`TrialRuns.create`): a trial's MLflow transactions were most of the driver's CPU per trial."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._batch(run_id, params or {}, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        self._batch(run_id, params)

    def _batch(self, run_id: str, params: dict[str, Any], metrics: list[Any] = (), tags: list[Any] = ()) -> None:
        """One `log_batch` of `metrics`, `tags` and the first 100 params (MLflow's limit per batch),
        then the other params 100 at a time."""
        from mlflow.entities import Param

        items = [Param(k, str(v)) for k, v in params.items()]
        self.client.log_batch(run_id, metrics=list(metrics), params=items[:100], tags=list(tags))
        for i in range(100, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

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

    def end_run(self, run_id: str, status: str, error: Optional[str] = None, params: Optional[dict[str, Any]] = None,
                fresh: bool = False) -> None:
        """The run's end status (with its `error` tag, and `params` still held back); `fresh`: made
        by this session and never reopened, so it has no earlier session's `error` tag to drop."""
        from mlflow.entities import RunTag

        tags = [RunTag("error", error[:_MAX_TAG])] if error else []
        if tags or params:
            self._batch(run_id, params or {}, tags=tags)
        if not error and not fresh and status == FINISHED and "error" in self.client.get_run(run_id).data.tags:
            self.client.delete_tag(run_id, "error")  # an earlier session's failure, since overcome
        self.client.set_terminated(run_id, status=status)

    def replace_if_changed(self, run_id: str, params: dict[str, Any], start: Callable[[], str]) -> str:
        """`run_id`, or where its params are not `params` (MLflow never changes a logged param:
        `--restart-changed` changed the base config, or the sweep grew) a new run made by `start`
        that takes its place (`replace`). `params` are compared as MLflow keeps them: it cuts a
        value at its length limit (a grid of 512 values), which is no change."""
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

        if self.client.get_run(run_id).data.params == {k: str(v)[:MAX_PARAM_VAL_LENGTH] for k, v in params.items()}:
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
        first one also in its `headline` and `headline.of` tags (the first tags on the run page's
        first screen). The tags go with the first batch of metrics: a transaction each fewer."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, 0) for k, v in metrics.items() if v is not None and math.isfinite(v)]
        tags = [RunTag("mlflow.note.content", description)]
        if headline:
            tags += [RunTag(HEADLINE_TAG, headline[:_MAX_TAG]), RunTag(HEADLINE_OF_TAG, of[:_MAX_TAG])]
        size = 1000 - len(tags)  # MLflow takes at most 1000 metrics and tags per batch
        for i in range(0, max(len(items), 1), size):
            self.client.log_batch(run_id, metrics=items[i:i + size], tags=tags if i == 0 else [])


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
