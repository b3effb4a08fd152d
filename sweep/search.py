"""Hyper-parameter search per grid cell inside one Ray Tune experiment.

Each grid cell gets its own Optuna TPE study (Bergstra et al., NeurIPS 2011; Akiba et al., KDD
2019), and, with `scheduler: asha`, its own ASHA early-stopping brackets (Li et al., MLSys 2020):
a cell's best hyper-parameters must not depend on how the other cells did -- an ASHA shared by all
cells would stop every trial of a weak cell early. Running all cells in one experiment instead of
one experiment per cell keeps the trial actors (and their torch import) alive across cells, runs
cells in parallel, and leaves a single experiment to restore on `--resume`.

`PerCellSearch` hands out suggestions round-robin over the cells until each has `num_samples`.

The studies live in the sweep directory, in one Optuna journal file (`optuna.journal`, one study
per cell, named by the cell id), so `optuna.load_study`, `optuna.visualization` and
optuna-dashboard can show the search after the sweep, and `--resume` continues the same studies.

Nothing of the search is pickled or unpickled. Tune's `SearchGenerator` would cloudpickle its
state and the searcher's into `search_gen_state-*.json` / `searcher-state-*.pkl` and load them on
`Tuner.restore` -- code execution for whoever can write the folder. `JournalSearchGenerator`
writes neither, and the runner never restores the search experiment: `--resume` starts a new
Tune experiment on the same journal (that experiment's `tuner.pkl` is never read back). Samples
that were running when the driver stopped are closed as failed (`lost`) and redrawn from scratch:
a search sample is cheap, and its replacement is drawn with everything the study has learnt.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import SearchGenerator, Searcher

from sweep.compat import reopen_optuna_trial, reported_steps, searcher_metric, searcher_mode
from sweep.spec import SearchParam

STUDY_FILE = "optuna.journal"
_TUNE_ID = "tune_trial_id"  # Optuna user attribute: which Tune trial ran this sample
_LOST = "lost"  # user attribute of a sample lost with a killed driver (replaced)
_REUSED = "reused"  # user attribute of a sample answered from the trial store (not run)


def optuna_distribution(p: SearchParam) -> optuna.distributions.BaseDistribution:
    if p.type == "categorical":
        return optuna.distributions.CategoricalDistribution(p.choices)
    if p.type == "int":
        return optuna.distributions.IntDistribution(int(p.low), int(p.high))  # both ends inclusive
    return optuna.distributions.FloatDistribution(p.low, p.high, log=p.type == "loguniform")


def study_storage(sweep_dir: str | Path) -> JournalStorage:
    """The sweep's Optuna storage: `optuna.load_study(study_name=<cell id>, storage=...)`."""
    return JournalStorage(JournalFileBackend(str(Path(sweep_dir) / STUDY_FILE)))


def load_studies(sweep_dir: str | Path) -> dict[str, optuna.Study]:
    """Cell id -> its study; empty when the sweep ran no search."""
    if not (Path(sweep_dir) / STUDY_FILE).is_file():
        return {}
    storage = study_storage(sweep_dir)
    return {s.study_name: optuna.load_study(study_name=s.study_name, storage=storage)
            for s in storage.get_all_studies()}


class PerCellSearch(Searcher):
    def __init__(self, cells: list[str], params: dict[str, SearchParam], num_samples: int, metric: str,
                 mode: str, seed: int, sweep_dir: str | Path, max_concurrent: Optional[int] = None,
                 answer: Optional[Callable[[int, dict[str, Any], int], Optional[float]]] = None) -> None:
        """`cells`: the cell ids, in the order of the search phase's trial specs (a suggestion
        carries its cell's index, not its spec); `params`: dotted key -> range; `max_concurrent`:
        live samples at most (Tune ignores `max_concurrent_trials` for a `SearchGenerator`, so the
        limit is applied here); `answer(cell index, sampled params, Optuna trial number)`: the
        stored value of a sample some sweep already ran (it is then told to the study, never run),
        or None."""
        super().__init__(metric=metric, mode=mode)
        self._cells = list(cells)
        self._num_samples = num_samples
        self._space = {key: optuna_distribution(p) for key, p in params.items()}
        self._seed = seed
        self._sweep_dir = str(sweep_dir)
        self._max_concurrent = max_concurrent
        self._answer = answer
        self._open_studies()

    _DERIVED = ("_studies", "_asked", "_suggested", "_answer", "_pending")

    # Tune pickles its search algorithm into tuner.pkl; studies hold a storage with a file lock.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in self._DERIVED}

    def _open_studies(self) -> None:
        """Load (or create) every cell's study from the journal. A sample still RUNNING there
        belongs to an earlier, stopped driver (a new searcher runs in a new Tune experiment), so it
        is closed as FAIL, marked `lost`, and the cell draws a replacement."""
        storage = study_storage(self._sweep_dir)
        direction = "maximize" if searcher_mode(self) == "max" else "minimize"
        self._studies: dict[str, optuna.Study] = {}
        self._asked: dict[str, tuple[str, optuna.Trial]] = {}  # live Tune trial id -> (cell, Optuna trial)
        self._suggested: dict[str, int] = {}
        self._pending: Optional[tuple[str, optuna.Trial]] = None  # drawn, not answered from the store, not yet handed out
        for cell in self._cells:
            # The same sampler seed in every cell (the cells start from the same random proposals),
            # offset by the samples already drawn so that a resumed study does not re-propose its
            # first candidates.
            study = optuna.create_study(study_name=cell, storage=storage, direction=direction, load_if_exists=True)
            if study.metric_names is None:  # dashboards name the objective instead of "Objective 0"
                with warnings.catch_warnings():  # experimental in Optuna 5; the sweep pins Optuna's major
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names([self._metric])
            study.sampler = optuna.samplers.TPESampler(seed=self._seed + len(study.get_trials(deepcopy=False)))
            self._studies[cell] = study
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                lost = reopen_optuna_trial(study, t)
                lost.set_user_attr(_LOST, True)
                study.tell(lost, state=TrialState.FAIL)
            self._suggested[cell] = sum(not t.user_attrs.get(_LOST) for t in study.get_trials(deepcopy=False))

    def _open_cells(self) -> list[str]:
        return [c for c in self._cells if self._suggested[c] < self._num_samples]

    def answer_from_store(self) -> int:
        """Draw samples while the store already holds their results (each told to its study at
        once); stops at the first sample that must run, which stays for `suggest`. Returns how
        many were answered. The runner calls it before starting Tune: a fully answered search
        starts no Tune experiment."""
        answered = 0
        while self._pending is None and (cells := self._open_cells()):
            cell = min(cells, key=lambda c: self._suggested[c])
            trial = self._studies[cell].ask(self._space)
            value = self._answer(self._cells.index(cell), dict(trial.params), trial.number) if self._answer else None
            if value is None:
                self._pending = (cell, trial)
                return answered
            self._suggested[cell] += 1
            trial.set_user_attr(_REUSED, True)
            if math.isfinite(value):
                self._studies[cell].tell(trial, float(value))
            else:
                self._studies[cell].tell(trial, state=TrialState.FAIL)
            answered += 1
        return answered

    @property
    def done(self) -> bool:
        return self._pending is None and not self._open_cells()

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec: Any) -> bool:
        return True  # metric, mode and space were fixed at construction

    def suggest(self, trial_id: str) -> Optional[dict[str, Any]]:
        if self._max_concurrent is not None and len(self._asked) >= self._max_concurrent:
            return None
        if self._pending is None:
            self.answer_from_store()
        if self._pending is None:
            return Searcher.FINISHED
        (cell, trial), self._pending = self._pending, None
        trial.set_user_attr(_TUNE_ID, trial_id)
        self._suggested[cell] += 1
        self._asked[trial_id] = (cell, trial)
        return {"trial": self._cells.index(cell), "params": dict(trial.params)}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Each evaluation as an intermediate value (Optuna's intermediate-values plot); an epoch
        reported again after a resume is skipped."""
        value, step = result.get(searcher_metric(self)), result.get("epoch")
        if trial_id not in self._asked or value is None or step is None or not math.isfinite(value):
            return
        trial = self._asked[trial_id][1]
        if int(step) not in reported_steps(trial):
            trial.report(float(value), int(step))

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if trial_id not in self._asked:
            return
        cell, trial = self._asked.pop(trial_id)
        value = (result or {}).get(searcher_metric(self))
        if error or value is None or not math.isfinite(value):
            self._studies[cell].tell(trial, state=TrialState.FAIL)  # a crash or a NaN loss: nothing to learn
        else:
            self._studies[cell].tell(trial, float(value))

    # Tune's own hooks would pickle this object; the journal is the state instead.
    def save(self, checkpoint_path: str) -> None:
        raise NotImplementedError("the search state is the Optuna journal")

    def restore(self, checkpoint_path: str) -> None:
        raise NotImplementedError("the search state is the Optuna journal")


class JournalSearchGenerator(SearchGenerator):
    """Tune's `SearchGenerator` without its pickled snapshots (see the module doc)."""

    def save_to_dir(self, dirpath: str, session_str: str) -> None:
        pass  # every sample and result is already in the journal

    def has_checkpoint(self, dirpath: str) -> bool:
        return False  # nothing to restore from a Tune folder: never unpickle one

    def restore_from_dir(self, dirpath: str) -> None:
        raise RuntimeError("the search continues from its Optuna journal, not from a Tune folder")


class PerCellASHA(FIFOScheduler):
    """ASHA with separate brackets per grid cell (the cell id is in the trial's config)."""

    def __init__(self, metric: str, mode: str, **asha: Any) -> None:
        super().__init__()
        self._settings = dict(metric=metric, mode=mode, **asha)
        self._per_cell: dict[str, ASHAScheduler] = {}

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], **spec: Any) -> bool:
        return True  # fixed at construction

    def _asha(self, trial: Any) -> ASHAScheduler:
        cell = trial.config["trial"]  # the cell's index (see PerCellSearch.suggest)
        if cell not in self._per_cell:
            self._per_cell[cell] = ASHAScheduler(**self._settings)
        return self._per_cell[cell]

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._asha(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self._asha(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._asha(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._asha(trial).on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._asha(trial).on_trial_error(tune_controller, trial)

    def debug_string(self) -> str:
        return f"ASHA per grid cell ({len(self._per_cell)} cells)"


def per_cell_scheduler(spec: Any, max_epochs: int) -> Optional[PerCellASHA]:
    """The search's early stopping (`sweep.scheduler`): ASHA per cell, or None (every sample runs out)."""
    if spec.scheduler.name != "asha":
        return None
    return PerCellASHA(spec.search_metric, spec.search_mode, time_attr="epoch", max_t=max_epochs,
                       grace_period=spec.scheduler.grace_period, reduction_factor=spec.scheduler.reduction_factor)
