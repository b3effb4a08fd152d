"""One driver session of a sweep: hold its folder's lock (the folder itself: `sweep.sweep_folder`),
start Ray and MLflow, run the phases (`sweep.phases`), then conclude (`sweep.conclude`: one `SweepResults`,
the report, the MLflow parent). `--sync` rebuilds a sweep's MLflow view from the trial store."""
from __future__ import annotations

import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from dml_core.io import DirectoryLock
from sweep.checks import check_plan
from sweep.conclude import SweepOutcome, conclude
from sweep.console import say
from sweep.labels import plan_labels
from sweep.pending import Restart, identity
from sweep.phases import RunOptions, SweepInterrupted, SweepRunner
from sweep.plan import FINAL, PLAN_FILE, SweepPlan
from sweep.records import FAILED, FINISHED, KILLED
from sweep.resources import check_fits, cluster_shapes
from sweep.sequential import PolicyView
from sweep.spec import SweepError
from sweep.store import SweepLog
from sweep.sweep_folder import claim_sweep_dir, remove_plan_files, write_sweep_dir

if TYPE_CHECKING:  # MLflow's module loads lazily: the driver's checks run before it
    from sweep.trial_runs import TrialRuns


def search_prefix(plan: SweepPlan) -> str:
    """MLflow name prefix of search-phase metrics: they are scored on other data than final ones."""
    s = plan.spec.search
    return "holdout_" if s and (s.holdout is not None or s.folds) else "search_"


def run_sweep(plan: SweepPlan, sweep_dir: Path, *, resume: bool = False, retry_failed: bool = False,
              address: Optional[str] = None, verbose: int = 0, cluster_config: Optional[str] = None,
              reuse: Optional[bool] = None, restart_changed: bool = False, store: Optional[str] = None) -> SweepOutcome:
    """Validate, own the sweep directory, start (or join) Ray, run all phases with MLflow tracking,
    write the report.

    The directory's lock is taken before anything is written or Ray starts and held to the end:
    a second driver on the same directory (a repeated command, a `--resume` while it runs) stops
    with one line naming the holder, and cannot interleave its records or MLflow runs.
    `verbose` 0 leaves the console to `sweep.console` (Tune silent, trial processes' output not
    forwarded); 1 or 2 bring back Tune's progress output and the trials' logs, for debugging.
    `reuse` None follows `sweep.reuse` (default on); `store`: the trial store's file (default:
    `sweep.store.default_store_path`)."""
    tracking_uri = check_plan(plan, download=True)
    options = RunOptions(resume=resume, retry_failed=retry_failed, reuse=plan.spec.reuse if reuse is None else reuse,
                         restart_changed=restart_changed, verbose=verbose)
    with DirectoryLock(sweep_dir):
        return _run_sweep(plan, sweep_dir, options, tracking_uri, address=address, cluster_config=cluster_config,
                          store=store)


def _run_sweep(plan: SweepPlan, sweep_dir: Path, options: RunOptions, tracking_uri: str, *, address: Optional[str],
               cluster_config: Optional[str], store: Optional[str]) -> SweepOutcome:
    from sweep.compat import use_legacy_tune_output
    from sweep.local_ray import start_ray
    from sweep.mlflow_writer import MlflowWriter
    from sweep.tracker import Tracker
    from sweep.trial_runs import TrialRuns
    from sweep.trainable import clean_stale_scratch

    # Tune's experiment-state snapshots are left at their defaults: a resume never reads them.
    if options.verbose == 0:
        use_legacy_tune_output()
    view = PolicyView.from_plan(plan)  # built once: plan.txt, the rounds, the ETA and the results read it
    log, restart = claim_sweep_dir(plan, sweep_dir, options.resume, options.restart_changed, store)
    tracker = Tracker(tracking_uri, plan.spec.mlflow.experiment or plan.name)
    # Every MLflow write is the writer thread's, off the driver's path. Its first job opens the
    # store (MLflow and its database layer imported, schema checked, the experiment found or made:
    # a second or two) while Ray starts and then while Tune starts the first trials. What commonly
    # makes a store unusable was refused by `check_plan` (`sweep.mlflow_check`); a store that fails
    # to open anyway stops the sweep at the next Tune event, naming it (exit 3).
    writer = MlflowWriter()
    try:
        writer.submit(lambda: tracker.experiment_id)
        clean_stale_scratch()  # the trials' temporary folders a killed sweep left behind
        start_ray(address, options.verbose)
        # Before the directory exists: a sweep that cannot run must not leave one that needs --resume.
        check_fits(plan.spec.resources_per_trial, cluster_shapes(cluster_config), plan.source)
        writer.check()  # a store that already failed to open: still no sweep folder
        log = write_sweep_dir(plan, view, sweep_dir, log, store)
        runs = TrialRuns(log, tracker, plan.name, plan_labels(plan), search_prefix(plan), writer)
        return _run_phases(plan, view, sweep_dir, options, log, runs, tracking_uri, restart)
    finally:
        writer.close()


def _run_phases(plan: SweepPlan, view: Optional[PolicyView], sweep_dir: Path, options: RunOptions, log: SweepLog, runs: "TrialRuns",
                tracking_uri: str, restart: Optional[Restart] = None) -> SweepOutcome:
    from sweep.console import Console
    from sweep.planned_work import PlannedWork
    from sweep.trial_runs import end_parent, parent_fields, sync_runs
    from sweep.tune_callback import TrackingCallback, mark_killed

    if options.resume:
        before = log.meta.tracking_uri
        moved = f" (this sweep's runs were in {before}: rebuilt there from the trial store)" if before and before != tracking_uri else ""
        say(f"MLflow: writing to {tracking_uri}{moved}")
    # The session's one Tune callback, handed what it needs of the plan: the ETA's figures, `identify`.
    total = plan.num_search_trials + len(plan.cells) * len(plan.seeds)
    console = Console(total, plan.spec.metric, plan.spec.search_metric, runs.search_prefix, sweep_dir)
    callback = TrackingCallback(log, runs, console, PlannedWork.of(plan, view), partial(identity, plan))
    started = time.monotonic()
    try:
        runs.open_parent(parent_fields(plan, sweep_dir, log))
        if options.resume:
            created, deleted = sync_runs(runs)
            if created or deleted:
                say(f"MLflow: {created} trial runs recreated from the trial store" + (f", {deleted} duplicates deleted" if deleted else ""))
        runner = SweepRunner(plan, sweep_dir, log, runs, options, view, callback)
        runner.run(restart)
        runs.flush()  # reused trials' runs too
    except (SweepInterrupted, KeyboardInterrupt) as e:
        mark_killed(runs)
        end_parent(runs, KILLED)
        if isinstance(e, KeyboardInterrupt):
            raise
        return SweepOutcome(sweep_dir, KILLED, [], reused=callback.reused, tracking_uri=tracking_uri)
    except BaseException as e:
        _stopped(e, sweep_dir, options, log, runs)
        raise
    finally:  # the driver's wall time over every session of the sweep, for the report
        session_s = time.monotonic() - started
        try:
            log.session_ended(session_s)
        except OSError:  # a store that failed: the error the sweep stopped with is the one to show
            if sys.exc_info()[0] is None:
                raise
    return conclude(plan, view, sweep_dir, log, runs, reused=callback.reused, tracking_uri=tracking_uri, wall_s=session_s)


def _stopped(error: BaseException, sweep_dir: Path, options: RunOptions, log: SweepLog, runs: "TrialRuns") -> None:
    """A session that failed: a new sweep of which nothing ran leaves no folder to --resume and no
    parent run; a refused --resume leaves the parent as it was; any other failure marks it FAILED."""
    from sweep.trial_runs import drop_parent, end_parent

    runs.flush(check=False)
    if not options.resume and not log.trials():  # nothing ran: what create_sweep_dir wrote would refuse a plain rerun
        drop_parent(runs)  # and a parent run of no sweep folder would be an orphan
        remove_plan_files(sweep_dir)
    elif isinstance(error, SweepError):  # a refused --resume changed nothing: the parent as it was
        end_parent(runs, runs.parent_status or KILLED)
    else:
        end_parent(runs, FAILED, f"{type(error).__name__}: {error}")


def sync_sweep(sweep_dir: Path) -> tuple[str, int, int]:
    """`--sync DIR`: rebuild the sweep's MLflow runs (parent + one per trial) from the trial store
    in the tracking store in use now. Returns (tracking URI, runs created, duplicates deleted)."""
    from sweep.plan import plan_of
    from sweep.mlflow_check import resolve_tracking_uri
    from sweep.tracker import Tracker
    from sweep.trial_runs import TrialRuns, parent_fields, sync_runs

    sweep_dir = Path(sweep_dir).resolve()
    if not (sweep_dir / PLAN_FILE).is_file():
        raise SweepError(f"{sweep_dir}: not a sweep directory (no {PLAN_FILE})")
    plan = plan_of(sweep_dir)
    with DirectoryLock(sweep_dir):
        log = SweepLog.open(sweep_dir, plan.name)
        tracking_uri = resolve_tracking_uri(plan.spec.mlflow.tracking_uri)
        tracker = Tracker(tracking_uri, plan.spec.mlflow.experiment or plan.name)
        runs = TrialRuns(log, tracker, plan.name, plan_labels(plan), search_prefix(plan))
        runs.open_parent(parent_fields(plan, sweep_dir, log))
        created, deleted = sync_runs(runs)
        parent = runs.refresh_parent()
        trials = log.trials()
        if (sweep_dir / "report.md").is_file():  # the report, rebuilt from the store, on the parent as a sweep leaves it
            from sweep.parent_run import publish
            from sweep.report import write_results
            from sweep.results import SweepResults

            results = SweepResults.of_dir(sweep_dir)
            parent = publish(runs, results)
            tracker.log_files(parent, write_results(results, sweep_dir))
        done = bool(trials) and all(r.ended for r in trials if r.phase == FINAL)
        tracker.end_run(parent, FINISHED if done else KILLED)
    return tracking_uri, created, deleted
