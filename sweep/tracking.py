"""MLflow tracking of a sweep: one parent run per sweep, one child run per trial.

All MLflow calls happen in the driver -- in a Ray Tune `Callback` -- never inside trials:

- one writer, so a fresh sqlite store is never created concurrently by several trials (with
  `setup_mlflow` in trials that races: "table ... already exists"), and trials on other machines
  need no access to the tracking store;
- the run of a trial is created when Tune first starts it and its id is kept in the sweep's
  ledger, keyed by the Tune trial id; a retried trial logs into the same run, and so does a final
  trial resumed in the new Tune experiment of `--resume` (found by its cell and seed, see
  `_adopt`); a step (epoch) already logged is not logged again, so `--resume` never duplicates
  runs or points;
- the end status follows the trial: FINISHED, or FAILED with the error in the `error` tag
  (crash after all retries, or a non-finite loss); KILLED for trials cut off by Ctrl-C.

What the UI shows (MLflow 3 UI, experiment page, "Model training" view):

- run names are short and distinct, and the same text is in the `label` tag: `ee n=2 · s0` for a
  final trial, `search · ee n=2 · #3` for the third search sample of that cell (the full cell id
  is in `sweep.cell`, the ledger key in `sweep.key`);
- search trials are scored on held-out *training* classes, final trials on the test split, so
  their metrics never share a name: a search run logs `holdout_recall_at_1`, `holdout_loss`, ...
  (`search_...` when the search has no holdout and scores the test split), a final run
  `recall_at_1`, ...; sorting the table by `recall_at_1` ranks final trials only;
- the epoch is the step of every metric, never a metric of its own;
- the parent run holds the sweep's results (see `log_results`; what, from `sweep.parent_run`):
  per-cell mean and CI bounds in %, paired differences in points and p-values as metrics, the
  headlines as its description, `report.html` (the report with its plots inline), `report.md`, its
  tables as CSV and its plots as artifacts, and the sweep YAML;
- child runs carry `sweep.group` (phase and cell label) for the runs table's Group-by. Its params are the base config,
  except that a swept key says `grid [...]` and a searched key `searched loguniform[...]`: no
  final trial used the base value of either;
- MLflow 3.17 opens an experiment on its GenAI overview; `Tracker.ui_hint`'s URL ends in
  `?workflowType=machine_learning`, which opens the runs table (checked in Chromium; the
  experiment tag `mlflow.experimentKind` does not change the page a fresh browser opens).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import sqlite3
import subprocess
import sys
import time
from functools import cached_property
from pathlib import Path
from typing import Any, Optional

import yaml
from filelock import FileLock
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from ray import tune
from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS

from sweep.ledger import FAILED, FINISHED, KILLED, RUNNING, Ledger
from sweep.plan import SEARCH, TrialSpec, trial_config
from sweep.spec import SweepError
from sweep.trainable import TRIAL_ERROR

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_TUNE_KEYS = {*AUTO_RESULT_KEYS, *DEBUG_METRICS, "done", "trial_id", "experiment_tag", "should_checkpoint"}
_MAX_TAG = 5000  # MLflow caps tag values at 8000 characters
STEP_KEY = "epoch"  # the step of every logged metric
UI_PORT = 5000  # `mlflow ui`'s default


def resolve_tracking_uri(configured: Optional[str]) -> str:
    """sweep.mlflow.tracking_uri > env MLFLOW_TRACKING_URI > sqlite:///mlflow.db; a relative sqlite
    path becomes absolute (the driver's cwd) so `--resume` from elsewhere finds the same store."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/") and uri != prefix + ":memory:":
        uri = prefix + os.path.abspath(uri[len(prefix):])
    is_file_store = uri.startswith("file:") or "://" not in uri
    if is_file_store and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() != "true":
        where = "sweep.mlflow.tracking_uri" if configured else "MLFLOW_TRACKING_URI"
        raise SweepError(
            f"{where}: {uri}: mlflow 3 refuses the file store unless MLFLOW_ALLOW_FILE_STORE=true; "
            f"use {DEFAULT_TRACKING_URI} or an MLflow server"
        )
    return uri


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parents[1])
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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

    @cached_property
    def client(self) -> MlflowClient:
        with _store_lock(self.tracking_uri):
            use_wal(self.tracking_uri)
            client = MlflowClient(self.tracking_uri)
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
            return found.experiment_id
        # With a sqlite store, keep artifacts beside the database (not in whatever cwd the sweep
        # started from); `mlflow ui --backend-store-uri sqlite:///...` then shows them as they are.
        location = None
        if self.tracking_uri.startswith("sqlite:///"):
            location = Path(self.tracking_uri[len("sqlite:///"):]).parent.joinpath("mlartifacts").as_uri()
        return self.client.create_experiment(self.experiment, artifact_location=location)

    def ui_hint(self) -> tuple[str, str]:
        """The command that serves this store, runnable as printed (this interpreter's `-m mlflow`:
        `mlflow` is not on PATH without an activated venv), and the URL of the runs table."""
        url = f"{self.ui_base()}/#/experiments/{self.experiment_id}?workflowType=machine_learning"
        if self.tracking_uri.startswith(("http://", "https://")):
            return "", url
        python = os.path.relpath(sys.executable) if not os.path.relpath(sys.executable).startswith("..") else sys.executable
        return f"{shlex.quote(python)} -m mlflow ui --backend-store-uri {shlex.quote(self.tracking_uri)} --port {UI_PORT}", url

    def ui_base(self) -> str:
        if self.tracking_uri.startswith(("http://", "https://")):
            return self.tracking_uri.rstrip("/")
        return f"http://127.0.0.1:{UI_PORT}"

    def run_url(self, run_id: str) -> str:
        """The run's page: for the parent, its description (the headlines) and artifacts (report.html)."""
        return f"{self.ui_base()}/#/experiments/{self.experiment_id}/runs/{run_id}"

    def artifact_url(self, run_id: str, path: str) -> str:
        """A run's artifact, opened in MLflow's artifact viewer (report.html renders there)."""
        return f"{self.run_url(run_id)}/artifacts/{path}"

    def compare_url(self, run_ids: list[str]) -> str:
        """MLflow's compare view of `run_ids` (this MLflow ignores filter parameters on the runs
        table's URL, but opens this one as built)."""
        runs, experiments = json.dumps(run_ids, separators=(",", ":")), json.dumps([self.experiment_id])
        return f"{self.ui_base()}/#/compare-runs?runs={runs}&experiments={experiments}"

    def start_run(self, name: str, tags: dict[str, Any], params: dict[str, Any]) -> str:
        run = self.client.create_run(self.experiment_id, tags={k: str(v) for k, v in tags.items()}, run_name=name)
        items = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run.info.run_id, params=items[i:i + 100])
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def reopen(self, run_id: str) -> None:
        self.client.update_run(run_id, status=RUNNING)

    def end_run(self, run_id: str, status: str, error: Optional[str] = None) -> None:
        if error:
            self.client.log_batch(run_id, tags=[RunTag("error", error[:_MAX_TAG])])
        self.client.set_terminated(run_id, status=status)

    def log_files(self, run_id: str, paths: list[Path]) -> None:
        for path in paths:
            self.client.log_artifact(run_id, str(path))

    def log_results(self, run_id: str, metrics: dict[str, float], description: str) -> None:
        """A sweep's statistics on its parent run, the headlines as the run's description."""
        now = int(time.time() * 1000)
        items = [Metric(k, v, now, 0) for k, v in metrics.items() if v is not None and math.isfinite(v)]
        for i in range(0, len(items), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(run_id, metrics=items[i:i + 1000])
        self.client.set_tag(run_id, "mlflow.note.content", description)


def parent_params(base: dict[str, Any], grid: dict[str, list[Any]], searched: dict[str, str],
                  sweep: dict[str, Any]) -> dict[str, Any]:
    """The parent run's params: the base config, with swept and searched keys saying so."""
    params = flatten(base)
    params |= {k: f"grid {json.dumps(v)}" for k, v in grid.items()}
    params |= {k: f"searched {v}" for k, v in searched.items()}
    return params | flatten({"sweep": sweep})


def mlflow_metric_names(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """What a trial logs: everything but the step, search metrics under their own prefix."""
    return {f"{prefix}{k}": v for k, v in metrics.items() if k != STEP_KEY}


class TrackingCallback(tune.Callback):
    """Mirrors trial events into the ledger and MLflow (driver side).

    Ray Tune pickles its callbacks into the experiment folder (the sweep never restores them from
    there); this object holds only plain settings, and all state lives in the ledger file.
    """

    _SETTINGS = ("sweep_dir", "tracking_uri", "experiment", "sweep_name", "base", "source", "labels", "search_prefix")

    def __init__(self, sweep_dir: str, tracking_uri: str, experiment: str, sweep_name: str, base: dict[str, Any],
                 source: str, labels: Optional[dict[str, str]] = None, search_prefix: str = "holdout_") -> None:
        self.sweep_dir = sweep_dir
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.sweep_name = sweep_name
        self.base = base  # to log each trial's resolved config
        self.source = source
        self.labels = labels or {}  # cell id -> label (sweep.labels.cell_labels)
        self.search_prefix = search_prefix  # search metrics' MLflow names: holdout_recall_at_1

    def __getstate__(self) -> dict[str, Any]:
        return {k: self.__dict__[k] for k in self._SETTINGS}  # not the cached client or ledger

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.sweep_dir)

    @cached_property
    def tracker(self) -> Tracker:
        return Tracker(self.tracking_uri, self.experiment)

    # ---------------------------------------------------------------- Tune hooks

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._open(trial)

    def _open(self, trial: Any) -> None:
        record = self.ledger.trial(trial.trial_id) or self._adopt(trial)
        if record is not None and record.get("mlflow_run_id"):
            self.tracker.reopen(record["mlflow_run_id"])  # retry, or continued by --resume
            self.ledger.update_trial(trial.trial_id, status=RUNNING, error=None, failure=None,
                                     attempts=record.get("attempts", 0) + 1, tune_experiment=trial.experiment_dir_name)
            return
        spec = TrialSpec.from_dict(trial.config["trial"])
        sampled = trial.config.get("params")
        cfg = trial_config(self.base, spec, sampled, self.source)
        params = {**spec.params, **(sampled or {})}  # searched values (sampled, or the cell's best)
        key = spec.ledger_key(trial.trial_id)
        cell_label = self.labels.get(spec.cell, spec.cell)
        if spec.phase == SEARCH:
            sample = 1 + sum(r.get("phase") == SEARCH and r.get("cell") == spec.cell for r in self.ledger.trials())
            label = f"search · {cell_label} · #{sample}"
        else:
            label = f"{cell_label} · s{spec.seed}"
        tags = {
            "label": label, "sweep.key": key,
            "mlflow.parentRunId": self.ledger.get("mlflow_parent_run_id"),
            "sweep.name": self.sweep_name, "sweep.phase": spec.phase, "sweep.cell": spec.cell,
            "sweep.arm": spec.arm or "", "sweep.seed": spec.seed, "sweep.trial_id": trial.trial_id,
            "sweep.group": f"{spec.phase} · {cell_label}",  # MLflow's Group-by: one group per phase and cell
            "mlflow.source.git.commit": self.ledger.get("git_commit", "unknown"),
            **{f"sweep.coord.{k}": v for k, v in spec.coords.items()},
        }
        config_dict = {k: v for k, v in cfg.to_dict().items() if k != "sweep"}
        run_id = self.tracker.start_run(label, tags, flatten(config_dict))
        self.tracker.client.log_text(run_id, yaml.safe_dump(config_dict, sort_keys=False), "config.yaml")
        self.ledger.add_trial(
            trial.trial_id, key=key, label=label, phase=spec.phase, cell=spec.cell, arm=spec.arm, coords=spec.coords,
            seed=spec.seed, params=params, status=RUNNING, error=None, failure=None, attempts=1, mlflow_run_id=run_id,
            tune_experiment=trial.experiment_dir_name, last_step=0, metrics={}, history=[],
        )

    def _adopt(self, trial: Any) -> Optional[dict[str, Any]]:
        """A final trial of an earlier driver session, now run under a new Tune id (each `--resume`
        is a new Tune experiment), continues the record and MLflow run of its key (cell + seed),
        so the table and MLflow keep one entry per trial."""
        spec = TrialSpec.from_dict(trial.config["trial"])
        if spec.phase == SEARCH:
            return None  # search trials are samples, not keys: a lost one is re-drawn
        old = next((r for r in self.ledger.trials() if r.get("key") == spec.key and r.get("mlflow_run_id")), None)
        if old is None:
            return None
        self.tracker.client.set_tag(old["mlflow_run_id"], "sweep.trial_id", trial.trial_id)
        return self.ledger.move_trial(old["trial_id"], trial.trial_id)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if result.get(TRIAL_ERROR):
            return  # the NaN marker of a non-finite loss, not an evaluation
        record = self.ledger.trial(trial.trial_id)
        metrics = trial_metrics(result)
        step = int(metrics.get(STEP_KEY, result.get("training_iteration", 0)))
        if record is None or step <= record.get("last_step", 0):
            return  # already logged by an earlier attempt of this trial
        prefix = self.search_prefix if record.get("phase") == SEARCH else ""
        self.tracker.log_metrics(record["mlflow_run_id"], mlflow_metric_names(metrics, prefix), step)
        self.ledger.update_trial(trial.trial_id, last_step=step, metrics=metrics, history=[*record["history"], metrics])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = (trial.last_result or {}).get(TRIAL_ERROR)
        self._finish(trial.trial_id, FAILED if error else FINISHED, error, "non_finite" if error else None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.ledger.trial(trial.trial_id) is None:
            self._open(trial)  # it failed to start (e.g. its actor could not be created)
        self._finish(trial.trial_id, FAILED, error_line(trial), "crash")

    # ---------------------------------------------------------------- helpers

    def _finish(self, trial_id: str, status: str, error: Optional[str], failure: Optional[str]) -> None:
        record = self.ledger.update_trial(trial_id, status=status, error=error, failure=failure)
        run_id = record.get("mlflow_run_id")
        if run_id is None:
            return  # failed before it ever started (e.g. could not be scheduled)
        summary = {"status": status, "error": error, "final": record.get("metrics", {}), "history": record.get("history", [])}
        self.tracker.client.log_text(run_id, json.dumps(summary, indent=1), "metrics.json")
        self.tracker.end_run(run_id, status, error)


def error_line(trial: Any) -> str:
    """The last line of the trial's traceback, e.g. `DatasetError: data.num_classes: ...`."""
    text = None
    if trial.error_file and Path(trial.error_file).is_file():
        text = Path(trial.error_file).read_text()
    else:
        text = trial.get_error()
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return lines[-1] if lines else "trial failed without an error message"


def mark_killed(ledger: Ledger, tracker: Tracker) -> int:
    """After Ctrl-C: trials cut off mid-run become KILLED (ledger + MLflow) until `--resume`."""
    killed = 0
    for record in ledger.trials():
        if record.get("status") == RUNNING:
            ledger.update_trial(record["trial_id"], status=KILLED)
            tracker.end_run(record["mlflow_run_id"], KILLED)
            killed += 1
    return killed
