"""Runs a `SweepPlan` on Ray Tune: the search phase (if any), then the final phase.

Each phase is one Ray Tune experiment inside the sweep directory (`search/`, `final/`).
What each phase still has to run -- after a Ctrl-C, with trials some sweep already finished
(reuse), or after the YAML grew -- is decided by `sweep.pending` from the plan and the trial store
(`sweep.store`); a phase with nothing left starts no Tune experiment, and one with work left runs
it as a new Tune experiment (`final-2/`, ...; Tune's folders, which hold pickles, are never
restored or read). A cut-off final trial continues from its own last checkpoint in
`<sweep dir>/checkpoints/`; crashed ones are kept as failed unless `--retry-failed`, which
restarts them from scratch. An interrupted search continues its Optuna studies: finished samples
count, cut-off ones are redrawn.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import yaml

from dml_core.identity import result_config
from dml_core.cli import sigterm_as_ctrl_c
from dml_core.io import DirectoryLock, atomic_write_json, atomic_write_text, read_json
from sweep.checks import check_plan
from sweep.console import describe_plan, say
from sweep.labels import cell_labels
from sweep.pending import (Restart, best_of, changed_fields, check_design_unchanged, check_growth, final_work,
                           flatten_config, identity, search_ended, search_left)
from sweep.plan import FINAL, SEARCH, Cell, SweepPlan, TrialSpec
from sweep.records import FAILED, FINISHED, KILLED, BestChoice, TrialRecord
from sweep.resources import check_fits, cluster_shapes
from sweep.selection import candidate_of, select_for_cell
from sweep.spec import SweepError
from sweep.store import PLAN_FILE, POINTER_FILE, SweepLog, check_store_file, default_store_path

if TYPE_CHECKING:  # MLflow's module loads lazily: the driver's checks run before it
    from sweep.tracking import TrialRuns

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
    reused: int = 0  # trials this session answered from the trial store instead of training
    tracking_uri: str = ""
    wall_s: float = 0.0  # this driver session's wall time (the sweep's total over sessions: its records' meta)


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
    """Refuse to start over an existing sweep, or to resume a missing one. A resumed sweep may have
    grown; what it may not change is checked against its records (`resume_checks`)."""
    plan_file = sweep_dir / PLAN_FILE
    if resume:
        if not plan_file.is_file():
            raise SweepError(f"{sweep_dir}: no sweep to resume here (no {PLAN_FILE}); run without --resume")
        read_json(plan_file)  # a damaged plan stops here, before Ray starts, naming the file
    elif plan_file.exists():
        raise SweepError(f"{sweep_dir}: a sweep already exists here; add --resume to continue it, or use --out DIR / --set sweep.name=...")


def resume_checks(plan: SweepPlan, sweep_dir: Path, log: SweepLog, restart_changed: bool) -> Restart:
    """What a resumed sweep may not change: the base experiment's result fields (every trial's
    config derives from it; `--restart-changed` allows it), and what its finished results mean
    (`pending.check_design_unchanged`: the search's design, the seed policy, the margin).
    Seeds, arms, cells and search samples may be added; operational settings may change.
    Returns what `--restart-changed` reruns."""
    started = read_json(sweep_dir / PLAN_FILE)
    restart = check_design_unchanged(plan, started, log, restart_changed)
    old_base = started.get("base")
    if old_base is None and (sweep_dir / "sweep.yaml").is_file():  # a plan.json of an earlier version
        old_base = {k: v for k, v in yaml.safe_load((sweep_dir / "sweep.yaml").read_text()).items() if k != "sweep"}
    if old_base is not None and not restart_changed:
        changed = changed_fields(old_base, plan.base)
        if changed:
            flat_old, flat_new = flatten_config(result_config(old_base)), flatten_config(result_config(plan.base))
            was = f" ({flat_old.get(changed[0])!r} -> {flat_new.get(changed[0])!r})" if len(changed) == 1 else ""
            raise SweepError(
                f"{plan.source}: {', '.join(changed[:3])}{was}: changes the experiment this sweep already ran; "
                "add --restart-changed to run the affected trials afresh, or start a new sweep "
                "(--out DIR or --set sweep.name=...)")
    return restart


def write_plan(plan: SweepPlan, sweep_dir: Path) -> None:
    # plan.json last: it is what marks the directory as holding a sweep to --resume
    atomic_write_text(sweep_dir / "sweep.yaml", yaml.safe_dump({**plan.base, "sweep": plan.raw_sweep}, sort_keys=False))
    atomic_write_text(sweep_dir / "plan.txt", describe_plan(plan, sweep_dir) + "\n")
    atomic_write_json(sweep_dir / PLAN_FILE, plan.to_json())


def create_sweep_dir(plan: SweepPlan, sweep_dir: Path, store: Optional[str] = None) -> SweepLog:
    """A new sweep: its records' place in the trial store and its plan; after `check_sweep_dir`."""
    from sweep.tracking import git_commit

    log = SweepLog.create(sweep_dir, plan.name, store)
    log.update_meta(git_commit=git_commit())
    write_plan(plan, sweep_dir)
    return log


def open_sweep_dir(plan: SweepPlan, sweep_dir: Path, restart_changed: bool,
                   store: Optional[str] = None) -> tuple[SweepLog, Restart]:
    """A resumed sweep's records (an earlier version's ledger.json migrated into the store; a store
    found gone started anew, saying what was lost), after checking what it may not change, and
    what `--restart-changed` reruns; its plan files are rewritten (it may have grown)."""
    log = SweepLog.open(sweep_dir, plan.name, store_path=store, recover=True)
    if log.recovered:
        say(log.recovered)
    return log, resume_checks(plan, sweep_dir, log, restart_changed)


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id  # the default embeds the whole config in the folder name


def search_prefix(plan: SweepPlan) -> str:
    """MLflow name prefix of search-phase metrics: they are scored on other data than final ones."""
    s = plan.spec.search
    return "holdout_" if s and (s.holdout is not None or s.folds) else "search_"


def plan_labels(plan: SweepPlan) -> dict[str, str]:
    return cell_labels(plan.to_json()["cells"], plan.spec.arms, plan.base)


@dataclass
class RunOptions:
    """How a driver session treats what the store already holds (see `sweep.pending`)."""

    resume: bool = False
    retry_failed: bool = False  # --retry-failed: crashed trials run again, from scratch
    reuse: bool = True  # a trial finished in the store (any sweep) is not run again
    restart_changed: bool = False  # --restart-changed: trials whose config the YAML changed run afresh
    verbose: int = 0


class SweepRunner:
    def __init__(self, plan: SweepPlan, sweep_dir: Path, log: SweepLog, runs: "TrialRuns", options: RunOptions) -> None:
        from sweep.console import Console
        from sweep.tracking import TrackingCallback

        self.plan, self.spec = plan, plan.spec
        self.sweep_dir, self.log, self.runs, self.options = sweep_dir, log, runs, options
        self.labels = runs.labels
        total = plan.num_search_trials + len(plan.cells) * len(plan.seeds)
        self.console = Console(total, self.spec.metric, self.spec.search_metric, search_prefix(plan), sweep_dir)
        self.callback = TrackingCallback(plan, log, runs, self.console)
        self.reused = 0  # trials this session answered from the store
        self._identities: dict[str, tuple[dict[str, Any], Any]] = {}

    def _trainable(self, specs: list[TrialSpec]) -> Any:
        """The phase's Tune function: the base config and the phase's specs travel once through
        Ray's object store; each trial's config holds only its spec's index."""
        from ray import tune

        from sweep.trainable import run_trial

        res = self.spec.resources_per_trial
        bound = tune.with_parameters(run_trial, base=self.plan.base, source=self.plan.source,
                                     sweep_dir=str(self.sweep_dir), specs=specs,
                                     metrics=tuple({self.spec.metric, self.spec.search_metric}))
        self.callback.specs = specs
        return tune.with_resources(bound, {"cpu": res.cpu, "gpu": res.gpu})

    # ---------------------------------------------------------------- phases

    def run(self) -> None:
        # The report's modules (matplotlib, pyarrow: about a second) load while the trials run,
        # when the driver mostly waits, rather than between the last trial and the report.
        threading.Thread(target=_import_report_modules, name="import-report", daemon=True).start()
        best: dict[str, dict[str, Any]] = {}
        if self.spec.search:
            self.run_search()
            best = {cell.id: p for cell in self.plan.cells if (p := self._best_params(cell)) is not None}
        if self.spec.policy:
            self._run_rounds(best)
        else:
            self.run_final(best)

    def _run_rounds(self, best: dict[str, dict[str, Any]]) -> None:
        """The final phase of a seed policy: rounds of trials, each chosen from the records by
        `sweep.sequential` (only the cells of comparisons still open get seeds), until no
        comparison is open. What ran before counts, so a resumed sweep continues where it was;
        each round goes through `run_final` (resume, reuse and growth as for any final trial)."""
        from sweep.policy_lines import policy_end_lines, policy_look_lines
        from sweep.pending import crashed
        from sweep.sequential import PolicyView

        view = PolicyView.of(self.spec.policy, self.plan.cells, self.spec.baseline, self.spec.metric,
                             self.spec.equivalence_margin)
        say(f"-- final: {view.rule()}")
        # --retry-failed: crashed trials of earlier rounds run again first (from scratch).
        todo = {(t.cell, t.seed) for t in self.plan.final_trials(best)
                if self.options.retry_failed and crashed(self.log.get(t.key))}
        seen: dict[Any, int] = {}  # quantity -> the look its last console line showed
        while True:
            records = [r for r in self.log.trials() if r.phase == FINAL]
            for line in policy_look_lines(view, view.assess(records), self.labels, self.spec.mode, seen):
                say(line)
            todo |= set(view.next_round(records))
            if not todo:
                for line in policy_end_lines(view, view.assess(records), self.labels):
                    say(line)
                break
            seeds = sorted({seed for _, seed in todo})
            say(f"-- final round: {len(todo)} trials = {len({cell for cell, _ in todo})} cells x seeds {seeds}")
            self.run_final(best, only=todo, header=False)
            todo = set()

    def run_search(self) -> None:
        from sweep.search import JournalSearchGenerator, PerCellSearch

        specs = [self.plan.search_trial(cell) for cell in self.plan.cells]
        expected = self.plan.num_search_trials
        left = search_left(self.plan, self.log)
        if not left:
            return
        self._header(SEARCH, expected, expected - left)
        spec, search = self.spec, self.spec.search
        searcher = PerCellSearch(
            [s.cell for s in specs], search.params, search.num_samples, spec.search_metric, spec.search_mode,
            seed=self.plan.seeds[0], sweep_dir=self.sweep_dir, max_concurrent=spec.max_concurrent_trials,
            answer=self._answerer(specs) if self.options.reuse else None,
        )
        self.callback.specs = specs
        searcher.answer_from_store()
        if not searcher.done:
            self._fit(SEARCH, self._search_tuner(specs, JournalSearchGenerator(searcher)))
        if search_left(self.plan, self.log):
            raise SweepInterrupted(SEARCH)  # Tune returns normally after Ctrl-C; the store tells
        self._close_orphans(SEARCH)

    def run_final(self, best: dict[str, dict[str, Any]], seeds: Optional[list[int]] = None,
                  only: Optional[set[tuple[str, int]]] = None, header: bool = True) -> None:
        """The final trials of `seeds` (default: the plan's), or only the (cell, seed) pairs `only`
        (a seed policy's round): each cell with its searched values."""
        specs = self.plan.final_trials(best)
        if self.spec.search:
            specs = self._drop_unsearched(specs, best)
        identities = {s.key: self._identity(s) for s in specs}
        changed = check_growth(self.plan, self.log, specs, identities, self.options.restart_changed)
        if changed:
            say(f"   {len(changed)} trials whose config changed run afresh: {', '.join(changed[:3])}"
                + (", ..." if len(changed) > 3 else ""))
            for key in changed:
                self.runs.discard(key)
        specs = [s for s in specs if (seeds is None or s.seed in seeds) and (only is None or (s.cell, s.seed) in only)]
        work = final_work(self.plan, self.log, specs, identities, reuse=self.options.reuse,
                          retry_failed=self.options.retry_failed)
        for note in self.log.store.notes:  # records the store would not (wholly) reuse
            say(f"   {note}")
        self.log.store.notes.clear()
        if header and (work.run or work.reuse):
            self._header(FINAL, len(specs), work.ended)
        for r in work.reuse:
            self.callback.record_reused(r.spec, r.spec.key, r.ident, r.origin, r.record, r.spec.params)
            self.reused += 1
        if work.run:
            self.callback.identities = identities
            self._fit(FINAL, self._final_tuner(work.run))
        left = [s.key for s in specs if not ((r := self.log.get(s.key)) and r.ended)]
        if left:
            raise SweepInterrupted(FINAL)

    def _fit(self, phase: str, tuner: Any) -> None:
        """One driver session of a phase, always as a new Tune experiment: what ran before is known
        from the store (and the Optuna journal, and the trials' checkpoints), never from Tune's folders."""
        tuner(self._experiment_name(phase)).fit()
        self.runs.flush()  # every MLflow write of the phase made, every run id in the store

    def _identity(self, spec: TrialSpec) -> Any:
        """A final trial's identity, computed once per session (a seed policy asks every round)."""
        if spec.key not in self._identities or self._identities[spec.key][0] != spec.params:
            self._identities[spec.key] = (spec.params, identity(self.plan, spec))
        return self._identities[spec.key][1]

    def _answerer(self, specs: list[TrialSpec]) -> Any:
        """The search's `answer` hook: a sample whose content key some sweep finished is recorded
        here as reused and its value told to the study; it never runs."""
        metric = self.spec.search_metric

        def answer(index: int, params: dict[str, Any], number: int) -> Optional[float]:
            spec = specs[index]
            ident = identity(self.plan, spec, params)
            found = self.log.store.finished([ident.content_key]).get(ident.content_key)
            if found is None:
                return None
            origin, record = found
            self.callback.record_reused(spec, f"{spec.key}/reused-{number}", ident, origin, record, params)
            self.reused += 1
            return record.value(metric)

        return answer

    def _experiment_name(self, phase: str) -> str:
        """`final` the first time, `final-2`, `final-3`, ... for each later session of the phase."""
        name, n = phase, 1
        while (self.sweep_dir / name).exists():
            n += 1
            name = f"{phase}-{n}"
        return name

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
        for r in self.log.trials():
            if r.phase == phase and not r.ended and r.status != KILLED:
                r = self.log.update(r.key, status=KILLED, error="lost with a killed driver; replaced by a new sample")
                if self.runs.ref(r) is not None:
                    self.runs.end(r)
        self.runs.flush()

    def _run_config(self, name: str) -> Any:
        from ray import tune

        from sweep.compat import tune_loggers

        return tune.RunConfig(
            name=name,
            storage_path=str(self.sweep_dir),
            callbacks=[self.callback, *tune_loggers()],  # one callback of ours: store, then MLflow, then console
            failure_config=tune.FailureConfig(max_failures=self.spec.max_failures),
            verbose=self.options.verbose,
        )

    def _trial_name(self, specs: list[TrialSpec]) -> Any:
        def name(trial: Any) -> str:
            """What Tune's progress tables show: the cell and seed, not `run_trial_<id>`."""
            spec = specs[trial.config["trial"]]
            return spec.key if spec.phase == FINAL else f"{spec.key}/{trial.trial_id}"

        return name

    def _final_tuner(self, todo: list[TrialSpec]) -> Any:
        """name -> a Tuner of the final trials `todo`: the grid carries their indices, not specs."""
        from ray import tune

        def tuner(name: str) -> Any:
            config = tune.TuneConfig(
                num_samples=1, max_concurrent_trials=self.spec.max_concurrent_trials, reuse_actors=True,
                trial_dirname_creator=_trial_dirname, trial_name_creator=self._trial_name(todo),
            )
            space = {"trial": tune.grid_search(list(range(len(todo))))}
            return tune.Tuner(self._trainable(todo), param_space=space, tune_config=config,
                              run_config=self._run_config(name))

        return tuner

    def _search_tuner(self, specs: list[TrialSpec], searcher: Any) -> Any:
        from ray import tune

        from sweep.search import PerCellASHA

        spec = self.spec
        metric, mode = spec.search_metric, spec.search_mode
        scheduler = None
        if spec.scheduler.name == "asha":
            scheduler = PerCellASHA(
                metric, mode, time_attr="epoch", max_t=self.plan.max_epochs,
                grace_period=spec.scheduler.grace_period, reduction_factor=spec.scheduler.reduction_factor,
            )
        config = tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=self.plan.num_search_trials, metric=metric, mode=mode,
            reuse_actors=True, trial_dirname_creator=_trial_dirname, trial_name_creator=self._trial_name(specs),
        )
        return lambda name: tune.Tuner(self._trainable(specs), tune_config=config, run_config=self._run_config(name))

    # ---------------------------------------------------------------- search results

    def _best_params(self, cell: Cell) -> Optional[dict[str, Any]]:
        """Best finished search trial of `cell` by its last evaluation; decided once, then kept --
        until a grown search (more `num_samples`) has ended more samples of the cell."""
        chosen = self.log.meta.best.get(cell.id)
        ended = search_ended(self.log, cell.id)
        if chosen is not None and chosen.samples >= ended:
            return chosen.params
        if best_of(self.plan, self.log, cell) is None:
            return None
        metric = self.spec.search_metric
        done = [r for r in self.log.trials() if r.phase == SEARCH and r.cell == cell.id and r.finished
                and math.isfinite(r.value(metric))]
        # The documented rule (sweep/selection.py): the best, unless within scoring noise of another.
        choice = select_for_cell(self.plan, cell, [candidate_of(r, metric) for r in done])
        self.log.update_meta(best={**self.log.meta.best, cell.id: BestChoice(**choice.record(), samples=ended)})
        say(choice.console_line(self.labels[cell.id], metric, search_prefix(self.plan).rstrip("_")))
        return choice.params

    def _drop_unsearched(self, trials: list[TrialSpec], best: dict[str, Any]) -> list[TrialSpec]:
        """A cell whose every search trial failed has nothing to re-run: its final trials are
        recorded as failed (they appear in the table) instead of silently using base values."""
        kept = []
        for t in trials:
            if t.cell in best:
                kept.append(t)
            elif self.log.get(t.key) is None:
                self.log.add(TrialRecord(
                    trial_id="", key=t.key, label=f"{self.labels.get(t.cell, t.cell)} · s{t.seed}", phase=FINAL,
                    cell=t.cell, arm=t.arm, coords=t.coords, seed=t.seed, status=FAILED, failure="search",
                    error="no search trial of this cell finished",
                ))
        return kept


def _import_report_modules() -> None:
    try:
        import sweep.report  # noqa: F401
        from sweep.plots import pyplot

        pyplot()
    except Exception:  # noqa: BLE001 -- only a head start: the report imports them itself and says what fails
        pass


def ray_address(address: Optional[str]) -> str:
    """--address > $RAY_ADDRESS > a new local instance. Plain `ray.init()` would attach to any Ray
    instance already running on this machine (another user's, or a stale one), so say "local"."""
    return address or os.environ.get("RAY_ADDRESS") or "local"


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
    check_plan(plan, download=True)
    options = RunOptions(resume=resume, retry_failed=retry_failed, reuse=plan.spec.reuse if reuse is None else reuse,
                         restart_changed=restart_changed, verbose=verbose)
    with DirectoryLock(sweep_dir):
        return _run_sweep(plan, sweep_dir, options, address=address, cluster_config=cluster_config, store=store)


def _run_sweep(plan: SweepPlan, sweep_dir: Path, options: RunOptions, *, address: Optional[str],
               cluster_config: Optional[str], store: Optional[str]) -> SweepOutcome:
    import ray

    from sweep.compat import use_legacy_tune_output
    from sweep.mlflow_writer import MlflowWriter
    from sweep.mlflow_check import resolve_tracking_uri
    from sweep.tracking import Tracker, TrialRuns
    from sweep.trainable import clean_stale_scratch

    # Tune's experiment-state snapshots are left at their defaults: a resume never reads them.
    if options.verbose == 0:
        use_legacy_tune_output()
    tracking_uri = resolve_tracking_uri(plan.spec.mlflow.tracking_uri)
    check_sweep_dir(plan, sweep_dir, options.resume)
    # What a resumed sweep may not change is refused before Ray starts.
    log, restart = open_sweep_dir(plan, sweep_dir, options.restart_changed, store) if options.resume else (None, Restart())
    if log is None:  # a foreign, newer, empty or read-only store file: refused before Ray starts
        check_store_file(store or default_store_path(sweep_dir))
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
        if not ray.is_initialized():
            ray.init(address=ray_address(address), include_dashboard=False, logging_level=logging.WARNING,
                     log_to_driver=options.verbose > 0)
            sigterm_as_ctrl_c()  # ray.init replaced the driver's SIGTERM handler
        # Before the directory exists: a sweep that cannot run must not leave one that needs --resume.
        check_fits(plan.spec.resources_per_trial, cluster_shapes(cluster_config), plan.source)
        writer.check()  # a store that already failed to open: still no sweep folder
        if log is None:
            log = create_sweep_dir(plan, sweep_dir, store)
        else:
            write_plan(plan, sweep_dir)
        runs = TrialRuns(log, tracker, plan.name, plan_labels(plan), search_prefix(plan), writer)
        return _run_phases(plan, sweep_dir, options, log, runs, tracking_uri, restart)
    finally:
        writer.close()


def _run_phases(plan: SweepPlan, sweep_dir: Path, options: RunOptions, log: SweepLog, runs: "TrialRuns",
                tracking_uri: str, restart: Optional[Restart] = None) -> SweepOutcome:
    from sweep.parent_run import publish
    from sweep.report import write_report
    from sweep.results import SweepResults
    from sweep.store import load_records
    from sweep.tracking import drop_parent, end_parent, mark_killed, sync_runs

    tracker = runs.tracker
    if options.resume:
        before = log.meta.tracking_uri
        moved = f" (this sweep's runs were in {before}: rebuilt there from the trial store)" if before and before != tracking_uri else ""
        say(f"MLflow: writing to {tracking_uri}{moved}")
    runner = SweepRunner(plan, sweep_dir, log, runs, options)
    started = time.monotonic()
    try:
        runs.open_parent(plan, sweep_dir)
        if options.resume:
            created, deleted = sync_runs(runs)
            if created or deleted:
                say(f"MLflow: {created} trial runs recreated from the trial store" + (f", {deleted} duplicates deleted" if deleted else ""))
        if restart is not None and (restart.keys or restart.search):
            _restart(log, runs, restart)
        runner.run()
        runs.flush()  # reused trials' runs too
    except (SweepInterrupted, KeyboardInterrupt) as e:
        mark_killed(runs)
        end_parent(runs, KILLED)
        if isinstance(e, KeyboardInterrupt):
            raise
        return SweepOutcome(sweep_dir, KILLED, [], reused=runner.reused, tracking_uri=tracking_uri)
    except BaseException as e:
        runs.flush(check=False)
        if not options.resume and not log.trials():  # nothing ran: what create_sweep_dir wrote would refuse a plain rerun
            drop_parent(runs)  # and a parent run of no sweep folder would be an orphan
            for name in ("sweep.yaml", "plan.txt", PLAN_FILE, POINTER_FILE):
                (sweep_dir / name).unlink(missing_ok=True)
        elif isinstance(e, SweepError):  # a refused --resume changed nothing: the parent as it was
            end_parent(runs, runs.parent_status or KILLED)
        else:
            end_parent(runs, FAILED, f"{type(e).__name__}: {e}")
        raise
    finally:  # the driver's wall time over every session of the sweep, for the report
        session_s = time.monotonic() - started
        try:
            log.update_meta(wall_s=log.meta.wall_s + session_s, sessions=log.meta.sessions + 1)
        except OSError:  # a store that failed: the error the sweep stopped with is the one to show
            if sys.exc_info()[0] is None:
                raise
    runs.refresh_parent(plan, sweep_dir)  # its params, where --restart-changed or growth changed them
    final = [r for r in log.trials() if r.phase == FINAL]
    failed = sorted(r.key for r in final if not r.finished)
    results = SweepResults.build(plan, load_records(sweep_dir))  # once; every writer reads it
    files = write_report(sweep_dir, results=results)
    parent = publish(runs, results)  # a parent holding metrics this report dropped is replaced
    tracker.log_files(parent, files)
    if final and len(failed) == len(final):
        tracker.end_run(parent, FAILED, f"all {len(final)} final trials failed")
    else:
        tracker.end_run(parent, FINISHED)
    command, url = tracker.ui_hint()
    return SweepOutcome(sweep_dir, FINISHED, files, command, url, tracker.run_url(parent),
                        tracker.compare_url(results.compare_run_ids()), results, tracker.artifact_url(parent, "report.html"),
                        final_trials=len(final), failed=failed, reused=runner.reused, tracking_uri=tracking_uri,
                        wall_s=session_s)


def _restart(log: SweepLog, runs: "TrialRuns", restart: Restart) -> None:
    """`--restart-changed` after a change of the design: the trials it affects go (record, MLflow
    run, checkpoint); a restarted search also loses its studies and choices, so it draws afresh."""
    from sweep.search import STUDY_FILE

    for key in restart.keys:
        runs.discard(key)
    if restart.search:
        (log.sweep_dir / STUDY_FILE).unlink(missing_ok=True)
        log.update_meta(best={})
    say(f"   the design changed: {len(restart.keys)} trials of this sweep run afresh"
        + (" (the search draws anew)" if restart.search else ""))


def sync_sweep(sweep_dir: Path) -> tuple[str, int, int]:
    """`--sync DIR`: rebuild the sweep's MLflow runs (parent + one per trial) from the trial store
    in the tracking store in use now. Returns (tracking URI, runs created, duplicates deleted)."""
    from sweep.plan import load_plan
    from sweep.mlflow_check import resolve_tracking_uri
    from sweep.tracking import Tracker, TrialRuns, sync_runs

    sweep_dir = Path(sweep_dir).resolve()
    if not (sweep_dir / "sweep.yaml").is_file() or not (sweep_dir / PLAN_FILE).is_file():
        raise SweepError(f"{sweep_dir}: not a sweep directory (no sweep.yaml / {PLAN_FILE})")
    plan = load_plan(sweep_dir / "sweep.yaml")
    with DirectoryLock(sweep_dir):
        log = SweepLog.open(sweep_dir, plan.name)
        tracking_uri = resolve_tracking_uri(plan.spec.mlflow.tracking_uri)
        tracker = Tracker(tracking_uri, plan.spec.mlflow.experiment or plan.name)
        runs = TrialRuns(log, tracker, plan.name, plan_labels(plan), search_prefix(plan))
        runs.open_parent(plan, sweep_dir)
        created, deleted = sync_runs(runs)
        parent = runs.refresh_parent(plan, sweep_dir)
        trials = log.trials()
        if (sweep_dir / "report.md").is_file():  # the report, rebuilt from the store, on the parent as a sweep leaves it
            from sweep.parent_run import publish
            from sweep.report import write_report
            from sweep.results import SweepResults

            results = SweepResults.of_dir(sweep_dir)
            parent = publish(runs, results)
            tracker.log_files(parent, write_report(sweep_dir, results=results))
        done = bool(trials) and all(r.ended for r in trials if r.phase == FINAL)
        tracker.end_run(parent, FINISHED if done else KILLED)
    return tracking_uri, created, deleted
