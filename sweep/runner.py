"""Runs a `SweepPlan` on Ray Tune: the search phase (if any), then the final phase.

Each phase is one Ray Tune experiment inside the sweep directory (`search/`, `final/`).
Resuming (`--resume`) walks the same phases: a phase the ledger marks complete is skipped, an
interrupted one runs again as a new Tune experiment (`final-2/`, ...; Tune's folders, which hold
pickles, are never restored or read). An interrupted final phase runs only the trials the ledger
does not mark ended, each continuing from its own last checkpoint in `<sweep dir>/checkpoints/`;
finished ones are never re-run; crashed ones are kept as failed unless `--retry-failed`, which
restarts them from scratch. An interrupted search continues its Optuna studies: finished samples
count, cut-off ones are redrawn.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from dml_core.cli import sigterm_as_ctrl_c
from dml_core.io import DirectoryLock, atomic_write_json, atomic_write_text, read_json
from sweep.checks import check_plan
from sweep.console import describe_param, describe_plan, say
from sweep.labels import cell_labels
from sweep.ledger import FAILED, FINISHED, KILLED, LEDGER_FILE, PLAN_FILE, Ledger, trial_checkpoint
from sweep.plan import FINAL, SEARCH, Cell, SweepPlan, TrialSpec
from sweep.resources import check_fits, cluster_shapes
from sweep.selection import candidate_of, select_for_cell
from sweep.spec import SweepError

log = logging.getLogger("sweep")

class SweepInterrupted(Exception):
    """Ctrl-C (or a lost driver loop) stopped a phase before all its trials ended."""


@dataclass
class SweepOutcome:
    sweep_dir: Path
    status: str  # FINISHED or KILLED
    report_files: list[Path]
    mlflow_command: str = ""  # serves the tracking store ("" for an MLflow server)
    mlflow_url: str = ""  # this experiment's runs table
    parent_url: str = ""  # the sweep's parent run: headlines, report.html
    compare_url: str = ""  # MLflow's compare view of the final runs
    results: Any = None  # sweep.results.SweepResults, for the closing block
    report_url: str = ""  # report.html in MLflow's artifact viewer
    final_trials: int = 0
    failed: list[str] = field(default_factory=list)  # keys of the final trials that failed


def default_sweep_dir(plan: SweepPlan, out: Optional[str] = None) -> Path:
    """--out > $DML_STORAGE_PATH/<name> > sweep.storage_path/<name> > ./sweeps/<name>."""
    if out:
        return Path(out).resolve()
    root = os.environ.get("DML_STORAGE_PATH") or plan.spec.storage_path or "sweeps"
    if "://" in root:
        raise SweepError(
            f"{plan.source}: sweep.storage_path: {root}: use a filesystem path that every node sees (e.g. NFS); "
            "the sweep ledger and report are plain files"
        )
    return (Path(root) / plan.name).resolve()


def check_sweep_dir(plan: SweepPlan, sweep_dir: Path, resume: bool) -> None:
    """Refuse to start over an existing sweep, or to resume a missing or different one."""
    plan_file = sweep_dir / PLAN_FILE
    if resume:
        if not plan_file.is_file():
            raise SweepError(f"{sweep_dir}: no sweep to resume here (no {PLAN_FILE}); run without --resume")
        started = read_json(plan_file).get("fingerprint")
        Ledger(sweep_dir).trials()  # a damaged ledger stops here, before Ray starts, naming the file
        if started != plan.fingerprint():
            raise SweepError(
                f"{sweep_dir}: was started from a different sweep definition; resume with the same YAML and "
                "--set values, or start a new sweep (--out DIR or --set sweep.name=...)"
            )
    elif plan_file.exists():
        raise SweepError(f"{sweep_dir}: a sweep already exists here; add --resume to continue it, or use --out DIR / --set sweep.name=...")


def create_sweep_dir(plan: SweepPlan, sweep_dir: Path, resume: bool) -> Ledger:
    """The sweep directory with its plan (new sweeps) and ledger; after `check_sweep_dir`."""
    if not resume:
        # plan.json last: it is what marks the directory as holding a sweep to --resume
        atomic_write_text(sweep_dir / "sweep.yaml", yaml.safe_dump({**plan.base, "sweep": plan.raw_sweep}, sort_keys=False))
        atomic_write_text(sweep_dir / "plan.txt", describe_plan(plan, sweep_dir) + "\n")
        atomic_write_json(sweep_dir / PLAN_FILE, plan.to_json())
    return Ledger(sweep_dir)


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id  # the default embeds the whole config in the folder name


def _trial_name(trial: Any) -> str:
    """What Tune's progress tables show: the cell and seed, not `run_trial_<id>`."""
    spec = TrialSpec.from_dict(trial.config["trial"])
    return spec.key if spec.phase == FINAL else f"{spec.key}/{trial.trial_id}"


def search_prefix(plan: SweepPlan) -> str:
    """MLflow name prefix of search-phase metrics: they are scored on other data than final ones."""
    s = plan.spec.search
    return "holdout_" if s and (s.holdout is not None or s.folds) else "search_"


def plan_labels(plan: SweepPlan) -> dict[str, str]:
    return cell_labels(plan.to_json()["cells"], plan.spec.arms, plan.base)


class SweepRunner:
    def __init__(self, plan: SweepPlan, sweep_dir: Path, ledger: Ledger, tracking_uri: str, experiment: str,
                 *, resume: bool = False, retry_failed: bool = False, verbose: int = 0) -> None:
        from ray import tune

        from sweep.console import ConsoleCallback
        from sweep.tracking import TrackingCallback
        from sweep.trainable import run_trial

        self.plan, self.spec = plan, plan.spec
        self.sweep_dir, self.ledger = sweep_dir, ledger
        self.resume, self.retry_failed, self.verbose = resume, retry_failed, verbose
        res = self.spec.resources_per_trial
        # The base config travels once through Ray's object store, not inside every trial's config.
        bound = tune.with_parameters(run_trial, base=plan.base, source=plan.source, sweep_dir=str(sweep_dir),
                                     metrics=tuple({self.spec.metric, self.spec.search_metric}))
        self.trainable = tune.with_resources(bound, {"cpu": res.cpu, "gpu": res.gpu})
        self.labels = plan_labels(plan)
        self.callback = TrackingCallback(str(sweep_dir), tracking_uri, experiment, plan.name, plan.base, plan.source,
                                         self.labels, search_prefix(plan))
        total = plan.num_search_trials + len(plan.cells) * len(plan.seeds)
        self.console = ConsoleCallback(str(sweep_dir), total, self.spec.metric, self.spec.search_metric,
                                       search_prefix(plan))

    # ---------------------------------------------------------------- phases

    def run(self) -> None:
        best: dict[str, dict[str, Any]] = {}
        if self.spec.search:
            self._run_phase(SEARCH, self._search_tuner(), self.plan.num_search_trials, lambda: self._ended(SEARCH))
            best = {cell.id: p for cell in self.plan.cells if (p := self._best_params(cell)) is not None}
        trials = self.plan.final_trials(best)
        if self.spec.search:
            trials = self._drop_unsearched(trials, best)
        if trials and self.spec.policy:
            self._run_rounds(trials)
        elif trials:
            self._run_phase(FINAL, self._final_tuner(trials), len(trials), lambda: len(trials) - len(self._unended(trials)))

    def _run_rounds(self, trials: list[TrialSpec]) -> None:
        """The final phase of a seed policy: rounds of trials, each chosen from the records by
        `sweep.sequential` (only the cells of comparisons still open get seeds), until no
        comparison is open. What ran before counts, so a resumed sweep continues where it was."""
        from sweep.records import load_records
        from sweep.sequential import PolicyView

        if self.ledger.phase_done(FINAL) and not (self.retry_failed and self._has_crashes(FINAL)):
            return
        view = PolicyView.of(self.spec.policy, self.plan.cells, self.spec.baseline, self.spec.metric,
                             self.spec.equivalence_margin)
        by_cell_seed = {(t.cell, t.seed): t for t in trials}
        say(f"-- final: {view.rule()}")
        # --retry-failed: crashed trials of earlier rounds run again first (from scratch).
        todo = [t for t in trials if self.retry_failed and self._crashed(self.ledger.trial(t.key) or {})]
        while True:
            todo += [by_cell_seed[cs] for cs in view.next_round(load_records(self.sweep_dir).final()) if cs in by_cell_seed]
            if not todo:
                break
            seeds = sorted({t.seed for t in todo})
            say(f"-- final round: {len(todo)} trials = {len({t.cell for t in todo})} cells x seeds {seeds}")
            tuner = self._final_tuner(todo)(self._experiment_name(FINAL))
            if tuner is not None:
                tuner.fit()
            if self._unended(todo):
                raise SweepInterrupted(FINAL)
            todo = []
        self._close_orphans(FINAL)
        self.ledger.mark_phase_done(FINAL)

    def _run_phase(self, name: str, new_tuner: Any, expected: int, ended: Any) -> None:
        """One driver session of a phase, always as a new Tune experiment: what ran before is
        known from the ledger (and the Optuna journal, and the trials' checkpoints), never from
        Tune's folders. `ended()`: how many of the phase's `expected` trials have ended."""
        if self.ledger.phase_done(name) and not (self.retry_failed and self._has_crashes(name)):
            return
        self._header(name, expected, ended())
        tuner = new_tuner(self._experiment_name(name))
        if tuner is not None:
            tuner.fit()
        # Tune returns normally after Ctrl-C; the ledger tells: every trial of the phase must have ended.
        if ended() < expected:
            raise SweepInterrupted(name)
        self._close_orphans(name)
        self.ledger.mark_phase_done(name)

    def _experiment_name(self, phase: str) -> str:
        """`final` the first time, `final-2`, `final-3`, ... for each later session of the phase."""
        name, n = phase, 1
        while (self.sweep_dir / name).exists():
            n += 1
            name = f"{phase}-{n}"
        return name

    def _ended(self, phase: str) -> int:
        return sum(r.get("phase") == phase and r.get("status") in (FINISHED, FAILED) for r in self.ledger.trials())

    def _header(self, phase: str, expected: int, ended: int) -> None:
        done = f" ({ended} done before, resuming)" if ended else ""
        seeds = len(self.plan.seeds)
        if phase == SEARCH:
            s = self.spec.search
            on = "held-out training classes" if s.holdout is not None else "the test split"
            on = f"{s.folds} class-disjoint folds of the training classes (fold mean)" if s.folds else on
            what = f"{len(self.plan.cells)} cells x {s.num_samples} Optuna samples on seed {self.plan.seeds[0]}, scored on {on}"
        else:
            what = f"{len(self.plan.cells)} cells x {seeds} seed{'s' * (seeds > 1)}, scored on the test split"
        say(f"-- {phase}: {expected} trials = {what}{done}")

    def _close_orphans(self, phase: str) -> None:
        """Search samples started just before a driver was killed, and lost from Tune's state with
        it, stay KILLED in the table and MLflow (Optuna drew replacements)."""
        for r in self.ledger.trials():
            if r.get("phase") == phase and r.get("status") not in (FINISHED, FAILED):
                self.ledger.update_trial(r["trial_id"], status=KILLED, error="lost with a killed driver; replaced by a new sample")
                self.callback.tracker.end_run(r["mlflow_run_id"], KILLED, "lost with a killed driver")

    @staticmethod
    def _crashed(record: dict[str, Any]) -> bool:
        return record.get("status") == FAILED and record.get("failure") == "crash"

    def _has_crashes(self, phase: str) -> bool:
        return any(r.get("phase") == phase and self._crashed(r) for r in self.ledger.trials())

    def _final_records(self) -> dict[str, dict[str, Any]]:
        return {r["key"]: r for r in self.ledger.trials() if r.get("phase") == FINAL}

    def _unended(self, trials: list[TrialSpec]) -> list[TrialSpec]:
        records = self._final_records()
        return [t for t in trials if records.get(t.key, {}).get("status") not in (FINISHED, FAILED)]

    def _to_run(self, trials: list[TrialSpec]) -> list[TrialSpec]:
        """The final trials this session runs: those the ledger does not mark ended, and with
        `--retry-failed` the crashed ones too, whose checkpoints are dropped (from scratch)."""
        records = self._final_records()
        todo = []
        for t in trials:
            record = records.get(t.key, {})
            if self.retry_failed and self._crashed(record):
                trial_checkpoint(self.sweep_dir, t.key).unlink(missing_ok=True)
            elif record.get("status") in (FINISHED, FAILED):
                continue
            todo.append(t)
        return todo

    def _run_config(self, name: str) -> Any:
        from ray import tune

        return tune.RunConfig(
            name=name,
            storage_path=str(self.sweep_dir),
            callbacks=[self.callback, self.console],  # tracking first: the console reads its ledger
            failure_config=tune.FailureConfig(max_failures=self.spec.max_failures),
            verbose=self.verbose,
        )

    def _final_tuner(self, trials: list[TrialSpec]) -> Any:
        """name -> a Tuner of the final trials still to run (None when none is left)."""
        from ray import tune

        def tuner(name: str) -> Any:
            todo = self._to_run(trials)
            if not todo:
                return None
            config = tune.TuneConfig(
                num_samples=1, max_concurrent_trials=self.spec.max_concurrent_trials, reuse_actors=True,
                trial_dirname_creator=_trial_dirname, trial_name_creator=_trial_name,
            )
            space = {"trial": tune.grid_search([t.to_dict() for t in todo])}
            return tune.Tuner(self.trainable, param_space=space, tune_config=config, run_config=self._run_config(name))

        return tuner

    def _search_tuner(self) -> Any:
        from ray import tune

        from sweep.search import JournalSearchGenerator, PerCellASHA, PerCellSearch

        spec, search = self.spec, self.spec.search
        metric, mode = spec.search_metric, spec.search_mode
        searcher = JournalSearchGenerator(PerCellSearch(
            {cell.id: self.plan.search_trial(cell).to_dict() for cell in self.plan.cells},
            search.params, search.num_samples, metric, mode, seed=self.plan.seeds[0], sweep_dir=self.sweep_dir,
            max_concurrent=spec.max_concurrent_trials,
        ))
        scheduler = None
        if spec.scheduler.name == "asha":
            scheduler = PerCellASHA(
                metric, mode, time_attr="epoch", max_t=self.plan.max_epochs,
                grace_period=spec.scheduler.grace_period, reduction_factor=spec.scheduler.reduction_factor,
            )
        config = tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=self.plan.num_search_trials, metric=metric, mode=mode,
            reuse_actors=True, trial_dirname_creator=_trial_dirname,
            trial_name_creator=_trial_name,
        )
        return lambda name: tune.Tuner(self.trainable, tune_config=config, run_config=self._run_config(name))

    # ---------------------------------------------------------------- search results

    def _best_params(self, cell: Cell) -> Optional[dict[str, Any]]:
        """The kept search trial of `cell` by its last evaluation (`sweep.selection`); decided once, then kept."""
        chosen = self.ledger.get("best", {})
        if cell.id in chosen:
            return chosen[cell.id]["params"]
        metric = self.spec.search_metric
        done = [
            r for r in self.ledger.trials()
            if r.get("phase") == SEARCH and r.get("cell") == cell.id and r.get("status") == FINISHED
            and math.isfinite(r.get("metrics", {}).get(metric, math.nan))
        ]
        if not done:
            return None
        # The documented rule (sweep/selection.py): the best, unless within scoring noise of another.
        choice = select_for_cell(self.plan, cell, [candidate_of(r, metric) for r in done])
        self.ledger.set("best", {**chosen, cell.id: choice.record()})
        say(choice.console_line(self.labels[cell.id], metric, search_prefix(self.plan).rstrip("_")))
        return choice.params

    def _drop_unsearched(self, trials: list[TrialSpec], best: dict[str, Any]) -> list[TrialSpec]:
        """A cell whose every search trial failed has nothing to re-run: its final trials are
        recorded as failed (they appear in the table) instead of silently using base values."""
        kept = []
        for t in trials:
            if t.cell in best:
                kept.append(t)
            elif self.ledger.trial(t.key) is None:
                self.ledger.add_trial(
                    t.key, key=t.key, phase=FINAL, cell=t.cell, arm=t.arm, coords=t.coords, seed=t.seed, params={},
                    status=FAILED, failure="search", error="no search trial of this cell finished", metrics={}, history=[],
                )
        return kept


def ray_address(address: Optional[str]) -> str:
    """--address > $RAY_ADDRESS > a new local instance. Plain `ray.init()` would attach to any Ray
    instance already running on this machine (another user's, or a stale one), so say "local"."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


def run_sweep(plan: SweepPlan, sweep_dir: Path, *, resume: bool = False, retry_failed: bool = False,
              address: Optional[str] = None, verbose: int = 0, cluster_config: Optional[str] = None) -> SweepOutcome:
    """Validate, own the sweep directory, start (or join) Ray, run all phases with MLflow tracking,
    write the report.

    The directory's lock is taken before anything is written or Ray starts and held to the end:
    a second driver on the same directory (a repeated command, a `--resume` while it runs) stops
    with one line naming the holder, and cannot interleave its ledger writes or MLflow runs.
    `verbose` 0 leaves the console to `sweep.console` (Tune silent, trial processes' output not
    forwarded); 1 or 2 bring back Tune's progress output and the trials' logs, for debugging."""
    check_plan(plan, download=True)
    with DirectoryLock(sweep_dir):
        return _run_sweep(plan, sweep_dir, resume=resume, retry_failed=retry_failed, address=address, verbose=verbose,
                          cluster_config=cluster_config)


def _start_parent(plan: SweepPlan, sweep_dir: Path, ledger: Ledger, tracker: Any) -> str:
    """The sweep's MLflow parent run, recorded in the ledger: from here on the sweep has started."""
    from sweep.tracking import git_commit, parent_params

    ledger.set("git_commit", git_commit())
    tags = {"sweep.name": plan.name, "sweep.role": "parent", "sweep.source": plan.source,
            "mlflow.source.git.commit": ledger.get("git_commit")}
    searched = {k: describe_param(p) for k, p in (plan.spec.search.params if plan.spec.search else {}).items()}
    params = parent_params(plan.base, plan.spec.grid, searched, plan.spec.model_dump(mode="json"))
    parent = tracker.start_run(plan.name, tags, params)
    ledger.set("mlflow_parent_run_id", parent)
    tracker.log_files(parent, [sweep_dir / "sweep.yaml", sweep_dir / "plan.txt"])
    return parent


def _run_sweep(plan: SweepPlan, sweep_dir: Path, *, resume: bool, retry_failed: bool, address: Optional[str],
               verbose: int, cluster_config: Optional[str]) -> SweepOutcome:
    import ray

    from sweep.parent_run import parent_description, parent_metrics
    from sweep.records import load_records
    from sweep.report import write_report
    from sweep.results import SweepResults
    from sweep.tracking import Tracker, mark_killed, resolve_tracking_uri

    # Tune's experiment-state snapshots are left at their defaults: a resume never reads them.
    if verbose == 0:
        # Ray 2.60's output engine prints its config box, results path and TensorBoard hint even
        # at verbose 0; the legacy engine at verbose 0 prints nothing.
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    tracking_uri = resolve_tracking_uri(plan.spec.mlflow.tracking_uri)
    check_sweep_dir(plan, sweep_dir, resume)
    if not ray.is_initialized():
        ray.init(address=ray_address(address), include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=verbose > 0)
        sigterm_as_ctrl_c()  # ray.init replaced the driver's SIGTERM handler
    # Before the directory exists: a sweep that cannot run must not leave one that needs --resume.
    check_fits(plan.spec.resources_per_trial, cluster_shapes(cluster_config), plan.source)
    experiment = plan.spec.mlflow.experiment or plan.name
    tracker = Tracker(tracking_uri, experiment)
    tracker.experiment_id  # noqa: B018 -- the store and experiment first: a store that fails leaves no sweep folder
    ledger = create_sweep_dir(plan, sweep_dir, resume)
    parent = ledger.get("mlflow_parent_run_id")
    if parent:
        tracker.reopen(parent)
    else:
        try:
            parent = _start_parent(plan, sweep_dir, ledger, tracker)
        except BaseException:
            if not resume:  # not started: what create_sweep_dir wrote would refuse a plain rerun
                for name in ("sweep.yaml", "plan.txt", PLAN_FILE, LEDGER_FILE):
                    (sweep_dir / name).unlink(missing_ok=True)
            raise

    runner = SweepRunner(plan, sweep_dir, ledger, tracking_uri, experiment, resume=resume, retry_failed=retry_failed,
                         verbose=verbose)
    started = time.monotonic()
    try:
        runner.run()
    except (SweepInterrupted, KeyboardInterrupt) as e:
        mark_killed(ledger, tracker)
        tracker.end_run(parent, KILLED)
        if isinstance(e, KeyboardInterrupt):
            raise
        return SweepOutcome(sweep_dir, KILLED, [])
    except BaseException as e:
        tracker.end_run(parent, FAILED, f"{type(e).__name__}: {e}")
        raise
    finally:  # the driver's wall time over every session of the sweep, for the report
        ledger.set("wall_s", ledger.get("wall_s", 0.0) + time.monotonic() - started)
    final = [r for r in ledger.trials() if r.get("phase") == FINAL]
    failed = sorted(r["key"] for r in final if r.get("status") != FINISHED)
    results = SweepResults.build(plan, load_records(sweep_dir))  # once; every writer reads it
    files = write_report(sweep_dir, results=results)
    tracker.log_results(parent, parent_metrics(results), parent_description(results))
    tracker.log_files(parent, files)
    if final and len(failed) == len(final):
        tracker.end_run(parent, FAILED, f"all {len(final)} final trials failed")
    else:
        tracker.end_run(parent, FINISHED)
    command, url = tracker.ui_hint()
    return SweepOutcome(sweep_dir, FINISHED, files, command, url, tracker.run_url(parent),
                        tracker.compare_url(results.compare_run_ids()), results, tracker.artifact_url(parent, "report.html"),
                        final_trials=len(final), failed=failed)
