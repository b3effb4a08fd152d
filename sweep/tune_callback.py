"""The sweep's one Ray Tune callback: each trial event to the store's verbs, then the MLflow view, then the console."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from ray import tune

from sweep.compat import TUNE_RESULT_KEYS
from sweep.console import Console
from sweep.pending import Identity, identity_fields
from sweep.plan import SEARCH, TrialSpec
from sweep.planned_work import PlannedWork
from sweep.records import FAILED, FINISHED, KILLED, RUNNING, TrialRecord
from sweep.store import SweepLog
from sweep.tracker import STEP_KEY
from sweep.trainable import TRIAL_ERROR
from sweep.trial_runs import TrialRuns

_TUNE_KEYS = {*TUNE_RESULT_KEYS, "done", "trial_id", "experiment_tag", "should_checkpoint"}


def trial_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The trainer's numbers in a Tune result (Tune adds its own bookkeeping keys)."""
    return {
        k: float(v) for k, v in result.items()
        if k not in _TUNE_KEYS and not k.startswith("_") and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class TrackingCallback(tune.Callback):
    """Mirrors trial events into the trial store, then MLflow, then the console (driver side):
    the one Tune callback of a sweep, so nothing depends on the order Tune calls callbacks in.

    It is handed what it needs of the plan, derived once by the runner: the figures of the ETA
    (`planned`) and `identify` (spec, sampled values -> identity). The runner sets `specs` (the
    phase's trial specs: a trial's config holds its index) and `identities` (trial key -> identity,
    computed once per phase) before each phase. Ray Tune pickles its callbacks into the experiment
    folder, never restored by the sweep: only the sweep directory goes in the pickle.
    """

    def __init__(self, log: SweepLog, runs: TrialRuns, console: Console, planned: PlannedWork,
                 identify: Callable[[TrialSpec, Optional[dict[str, Any]]], Identity]) -> None:
        self.log, self.runs, self.console = log, runs, console
        self.planned, self.identify = planned, identify
        self.tracker = runs.tracker
        self.specs: list[TrialSpec] = []
        self.reused = 0  # trials this session answered from the store (`record_reused`)
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
        from sweep.planned_work import expected_final_trials, trials_left

        records = self.log.trials()
        planned = self.planned
        self.console.phase_started(self._ended(), trials_left(planned.planned, records), planned.epochs, planned.work)
        self.console.progress.evaluations = planned.evaluations  # the ETA counts evaluations as work
        if planned.view is not None:  # the final phase counted up to max seeds: say so, and what to expect
            self.console.progress.at_most = True
            self.console.progress.expected_final = expected_final_trials(planned.view, records)

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
            record = self.log.trial_restarted(key, trial_id=trial.trial_id, tune_experiment=trial.experiment_dir_name)
            self.runs.reopen(record, trial.trial_id)
            self.console.trial_started(record, (spec.phase, spec.cell))
            return
        sampled = trial.config.get("params")
        ident = self.identities.get(key) or self.identify(spec, sampled)
        # Recorded before its run exists: a driver killed from here on leaves this record and at
        # most one run tagged with its key, which `sync_runs` adopts on --resume (never a second).
        record = self.log.trial_started(spec, key, trial_id=trial.trial_id, label=self._label(spec), params=sampled or {},
                                        identity=identity_fields(ident), tune_experiment=trial.experiment_dir_name,
                                        hardware=self.hardware)
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
        self.log.trial_result(record.key, step, metrics, float(result.get("time_total_s", record.wall_s or 0.0)))
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
        self.discard(key)
        record = self.log.trial_reused(spec, key, label=self._label(spec), params=params, origin=origin, found=found,
                                       identity=identity_fields(ident))
        self.runs.create(record)
        self.console.reused(self.log.get(key), origin, self._ended())
        self.reused += 1
        return record

    def discard(self, key: str) -> None:
        """A trial that runs afresh (its config changed, or a reused result takes its place): its run
        deleted by the view, then its record and checkpoint by the store."""
        self.runs.forget(key)
        self.log.trial_discarded(key)

    # ---------------------------------------------------------------- helpers

    def _finish(self, trial: Any, status: str, error: Optional[str], failure: Optional[str]) -> None:
        record = self.log.by_trial_id(trial.trial_id)
        record = self.log.trial_ended(record.key, status, error, failure)
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


def mark_killed(runs: TrialRuns) -> int:
    """After Ctrl-C: trials cut off mid-run become KILLED (store + MLflow) until `--resume`."""
    runs.flush(check=False)  # the writes asked for before the interruption first
    killed = 0
    for record in runs.log.trials():
        if record.status == RUNNING:
            record = runs.log.trial_killed(record.key)
            if (ref := runs.ref(record)) is not None and ref.run_id and not runs.lagging:  # else --resume ends it
                runs.tracker.end_run(ref.run_id, KILLED, params=runs.held(record.key))
            killed += 1
    return killed
