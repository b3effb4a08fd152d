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

import threading
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from sweep.console import say
from sweep.pending import (check_growth, crashed_pairs, final_work, identity, kept_value, search_left, stored_answer,
                           unsearched)
from sweep.plan import FINAL, SEARCH, Cell, SweepPlan, TrialSpec
from sweep.records import KILLED, BestChoice
from sweep.store import SweepLog

if TYPE_CHECKING:  # MLflow's module loads lazily: the driver's checks run before it
    from sweep.trial_runs import TrialRuns


class SweepInterrupted(Exception):
    """Ctrl-C (or a lost driver loop) stopped a phase before all its trials ended."""


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id  # the default embeds the whole config in the folder name


@dataclass
class RunOptions:
    """How a driver session treats what the store already holds (see `sweep.pending`)."""

    resume: bool = False
    retry_failed: bool = False  # --retry-failed: crashed trials run again, from scratch
    reuse: bool = True  # a trial finished in the store (any sweep) is not run again
    restart_changed: bool = False  # --restart-changed: trials whose config the YAML changed run afresh
    verbose: int = 0


class SweepRunner:
    """Wires a plan's phases to Ray Tune: what each phase runs is `sweep.pending`'s decision; this
    builds the Tuners, runs them, and hands each result to the Tune callback (`sweep.tune_callback`)."""

    def __init__(self, plan: SweepPlan, sweep_dir: Path, log: SweepLog, runs: "TrialRuns", options: RunOptions) -> None:
        from sweep.console import Console
        from sweep.progress import PlannedWork
        from sweep.sequential import PolicyView
        from sweep.tune_callback import TrackingCallback

        self.plan, self.spec = plan, plan.spec
        self.sweep_dir, self.log, self.runs, self.options = sweep_dir, log, runs, options
        self.labels = runs.labels
        self.view = PolicyView.from_plan(plan)  # built once: the rounds and the callback's ETA read the same view
        total = plan.num_search_trials + len(plan.cells) * len(plan.seeds)
        self.console = Console(total, self.spec.metric, self.spec.search_metric, runs.search_prefix, sweep_dir)
        self.callback = TrackingCallback(log, runs, self.console, PlannedWork.of(plan, self.view), partial(identity, plan))
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
        if self.view is not None:
            self._run_rounds(best)
        else:
            self.run_final(best)

    def _run_rounds(self, best: dict[str, dict[str, Any]]) -> None:
        """The final phase of a seed policy: rounds of trials, each chosen from the records by
        `sweep.sequential` (only the cells of comparisons still open get seeds), until no
        comparison is open. What ran before counts, so a resumed sweep continues where it was;
        each round goes through `run_final` (resume, reuse and growth as for any final trial)."""
        from sweep.policy_lines import policy_end_lines, policy_look_lines

        view = self.view
        say(f"-- final: {view.rule()}")
        # --retry-failed: crashed trials of earlier rounds run again first (from scratch).
        todo = crashed_pairs(self.log, self.plan.final_trials(best)) if self.options.retry_failed else set()
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
                self.callback.discard(key)
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
            found = stored_answer(self.plan, self.log, specs[index], params)
            if found is None:
                return None
            spec = found.spec
            self.callback.record_reused(spec, f"{spec.key}/reused-{number}", found.ident, found.origin, found.record, params)
            self.reused += 1
            return found.record.value(metric)

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
                r = self.log.trial_killed(r.key, error="lost with a killed driver; replaced by a new sample")
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
        """The searched values `cell` keeps (`pending.kept_value`); a choice made now is recorded and told."""
        kept = kept_value(self.plan, self.log, cell)
        if kept is None:
            return None
        if kept.choice is not None:
            choice = kept.choice
            self.log.search_chosen(cell.id, BestChoice(**choice.record(), samples=kept.samples))
            say(choice.console_line(self.labels[cell.id], self.spec.search_metric, self.runs.search_prefix.rstrip("_")))
        return kept.params

    def _drop_unsearched(self, trials: list[TrialSpec], best: dict[str, Any]) -> list[TrialSpec]:
        """The final trials of cells with a searched value; the others are recorded as failed (`pending.unsearched`)."""
        kept, failed = unsearched(self.log, trials, best)
        for t in failed:
            self.log.trial_unsearched(t, f"{self.labels.get(t.cell, t.cell)} · s{t.seed}")
        return kept


def _import_report_modules() -> None:
    try:
        import sweep.report  # noqa: F401
        from sweep.plots import pyplot

        pyplot()
    except Exception:  # noqa: BLE001 -- only a head start: the report imports them itself and says what fails
        pass
