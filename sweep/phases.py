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
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from sweep.console import phase_header, say
from sweep.pending import (Restart, check_growth, crashed_pairs, final_work, identity, kept_value, search_left,
                           stored_answer, unsearched)
from sweep.plan import FINAL, SEARCH, SweepPlan, TrialSpec
from sweep.records import KILLED, BestChoice
from sweep.store import SweepLog

if TYPE_CHECKING:  # MLflow's module loads lazily: the driver's checks run before it
    from sweep.sequential import PolicyView
    from sweep.trial_runs import TrialRuns
    from sweep.tune_callback import TrackingCallback


class SweepInterrupted(Exception):
    """Ctrl-C (or a lost driver loop) stopped a phase before all its trials ended."""


@dataclass
class RunOptions:
    """How a driver session treats what the store already holds (see `sweep.pending`)."""

    resume: bool = False
    retry_failed: bool = False  # --retry-failed: crashed trials run again, from scratch
    reuse: bool = True  # a trial finished in the store (any sweep) is not run again
    restart_changed: bool = False  # --restart-changed: trials whose config the YAML changed run afresh
    verbose: int = 0


class SweepRunner:
    """Runs a plan's phases: what each phase runs is `sweep.pending`'s decision, how Ray Tune runs it
    `sweep.tuners`'s; each result goes to the Tune callback (`sweep.tune_callback`)."""

    def __init__(self, plan: SweepPlan, sweep_dir: Path, log: SweepLog, runs: "TrialRuns", options: RunOptions,
                 view: Optional["PolicyView"], callback: "TrackingCallback") -> None:
        self.plan, self.spec = plan, plan.spec
        self.sweep_dir, self.log, self.runs, self.options = sweep_dir, log, runs, options
        self.labels = runs.labels
        self.view = view  # the sweep's one view of its seed policy: the rounds and the callback's ETA read it
        self.callback = callback  # the session's (sweep.runner): store, MLflow view, console; it counts the reused
        self._identities: dict[str, tuple[dict[str, Any], Any]] = {}

    def run(self, restart: Optional[Restart] = None) -> None:
        """The phases in order; first, after `--restart-changed`, what `restart` reruns goes."""
        if restart is not None and (restart.keys or restart.search):
            self._restart(restart)
        # The report's modules (matplotlib, pyarrow: about a second) load while the trials run,
        # when the driver mostly waits, rather than between the last trial and the report.
        threading.Thread(target=_import_report_modules, name="import-report", daemon=True).start()
        best = self.run_search() if self.spec.search else {}
        if self.view is not None:
            self._run_rounds(best)
        else:
            self.run_final(best)

    def run_search(self) -> dict[str, dict[str, Any]]:
        """The search phase, when samples are left (one Tune experiment; samples some sweep
        finished are answered from the store), then the searched values each cell keeps
        (`pending.kept_value`): cell id -> values. A choice made now is recorded and told."""
        from sweep.search import JournalSearchGenerator, PerCellSearch, per_cell_scheduler
        from sweep.tuners import search_tuner

        plan, spec, search = self.plan, self.spec, self.spec.search
        specs = [plan.search_trial(cell) for cell in plan.cells]
        answer = self._answerer(specs) if self.options.reuse else None
        if left := search_left(plan, self.log):
            say(phase_header(plan, SEARCH, plan.num_search_trials, plan.num_search_trials - left))
            searcher = PerCellSearch(
                [s.cell for s in specs], search.params, search.num_samples, spec.search_metric, spec.search_mode,
                seed=plan.seeds[0], sweep_dir=self.sweep_dir, max_concurrent=spec.max_concurrent_trials, answer=answer,
            )
            self.callback.specs = specs
            searcher.answer_from_store()
            if not searcher.done:
                scheduler = per_cell_scheduler(spec, plan.max_epochs)
                search_tuner(plan, self.sweep_dir, specs, JournalSearchGenerator(searcher), scheduler, self.callback,
                             self.options.verbose).fit()
                self.runs.flush()  # every MLflow write of the phase made, every run id in the store
            if search_left(plan, self.log):
                raise SweepInterrupted(SEARCH)  # Tune returns normally after Ctrl-C; the store tells
            # Samples started just before a driver was killed, and lost from Tune's state with it,
            # stay KILLED in the table and MLflow (Optuna drew replacements).
            for r in self.log.trials():
                if r.phase == SEARCH and not r.ended and r.status != KILLED:
                    r = self.log.trial_killed(r.key, error="lost with a killed driver; replaced by a new sample")
                    if self.runs.ref(r) is not None:
                        self.runs.end(r)
            self.runs.flush()
        best = {}
        for cell in plan.cells:
            kept = kept_value(plan, self.log, cell)
            if kept is not None and kept.choice is not None:
                self.log.search_chosen(cell.id, BestChoice(**kept.choice.record(), samples=kept.samples))
                say(kept.choice.console_line(self.labels[cell.id], spec.search_metric, self.runs.search_prefix.rstrip("_")))
            if kept is not None and kept.params is not None:
                best[cell.id] = kept.params
        return best

    def _run_rounds(self, best: dict[str, dict[str, Any]]) -> None:
        """The final phase of a seed policy: rounds of trials, each chosen from the records by
        `sweep.sequential` (only the cells of comparisons still open get seeds), until no
        comparison is open. What ran before counts, so a resumed sweep continues where it was;
        each round goes through `run_final` (resume, reuse and growth as for any final trial)."""
        from sweep.policy_lines import round_lines

        view = self.view
        say(f"-- final: {view.rule()}")
        # --retry-failed: crashed trials of earlier rounds run again first (from scratch).
        todo = crashed_pairs(self.log, self.plan.final_trials(best)) if self.options.retry_failed else set()
        seen: dict[Any, int] = {}  # quantity -> the look its last console line showed
        while True:
            look = view.look([r for r in self.log.trials() if r.phase == FINAL])
            todo |= set(look.todo)
            for line in round_lines(view, look, self.labels, self.spec.mode, seen, done=not todo):
                say(line)
            if not todo:
                break
            seeds = sorted({seed for _, seed in todo})
            say(f"-- final round: {len(todo)} trials = {len({cell for cell, _ in todo})} cells x seeds {seeds}")
            self.run_final(best, only=todo, header=False)
            todo = set()

    def run_final(self, best: dict[str, dict[str, Any]], only: Optional[set[tuple[str, int]]] = None,
                  header: bool = True) -> None:
        """The final trials, or only the (cell, seed) pairs `only` (a seed policy's round): each
        cell with its searched values; one Tune experiment for those that train."""
        from sweep.tuners import final_tuner

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
        specs = [s for s in specs if only is None or (s.cell, s.seed) in only]
        work = final_work(self.plan, self.log, specs, identities, reuse=self.options.reuse,
                          retry_failed=self.options.retry_failed)
        for note in self.log.store.notes:  # records the store would not (wholly) reuse
            say(f"   {note}")
        self.log.store.notes.clear()
        if header and (work.run or work.reuse):
            say(phase_header(self.plan, FINAL, len(specs), work.ended))
        for r in work.reuse:
            self.callback.record_reused(r.spec, r.spec.key, r.ident, r.origin, r.record, r.spec.params)
        if work.run:
            self.callback.identities = identities
            final_tuner(self.plan, self.sweep_dir, work.run, self.callback, self.options.verbose).fit()
            self.runs.flush()  # every MLflow write of the phase made, every run id in the store
        left = [s.key for s in specs if not ((r := self.log.get(s.key)) and r.ended)]
        if left:
            raise SweepInterrupted(FINAL)

    def _restart(self, restart: Restart) -> None:
        """`--restart-changed` after a change of the design: the trials it affects go (record, MLflow
        run, checkpoint: the callback's `discard`, as for a trial whose config grew a change); a
        restarted search also loses its studies and choices, so it draws afresh."""
        from sweep.search import STUDY_FILE

        for key in restart.keys:
            self.callback.discard(key)
        if restart.search:
            (self.log.sweep_dir / STUDY_FILE).unlink(missing_ok=True)
            self.log.search_reset()
        say(f"   the design changed: {len(restart.keys)} trials of this sweep run afresh"
            + (" (the search draws anew)" if restart.search else ""))

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
            return found.record.value(metric)

        return answer

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
