"""Hyper-parameter search per grid cell inside one Ray Tune experiment.

Each grid cell gets its own Optuna TPE study (Bergstra et al., NeurIPS 2011; Akiba et al., KDD
2019), and, with `scheduler: asha`, its own ASHA early-stopping brackets (Li et al., MLSys 2020):
a cell's best hyper-parameters must not depend on how the other cells did -- an ASHA shared by all
cells would stop every trial of a weak cell early. Running all cells in one experiment instead of
one experiment per cell keeps the trial actors (and their torch import) alive across cells, runs
cells in parallel, and leaves a single experiment to restore on `--resume`.

`PerCellSearch` hands out suggestions round-robin over the cells until each has `num_samples`.
"""
from __future__ import annotations

import pickle
from typing import Any, Optional

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from sweep.spec import SearchParam


def optuna_distribution(p: SearchParam) -> optuna.distributions.BaseDistribution:
    if p.type == "categorical":
        return optuna.distributions.CategoricalDistribution(p.choices)
    if p.type == "int":
        return optuna.distributions.IntDistribution(int(p.low), int(p.high))  # both ends inclusive
    return optuna.distributions.FloatDistribution(p.low, p.high, log=p.type == "loguniform")


class PerCellSearch(Searcher):
    def __init__(self, trials: dict[str, dict[str, Any]], params: dict[str, SearchParam], num_samples: int, metric: str,
                 mode: str, seed: int) -> None:
        """`trials`: cell id -> the cell's search `TrialSpec` as a dict; `params`: dotted key -> range."""
        super().__init__(metric=metric, mode=mode)
        self._trials = trials
        self._num_samples = num_samples
        space = {key: optuna_distribution(p) for key, p in params.items()}
        # The same sampler seed in every cell: the cells start from the same random proposals.
        self._studies = {cell: OptunaSearch(space=dict(space), metric=metric, mode=mode, seed=seed) for cell in trials}
        self._suggested = {cell: 0 for cell in trials}
        self._cell_of: dict[str, str] = {}

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], config: dict, **spec: Any) -> bool:
        return True  # metric, mode and space were fixed at construction

    def suggest(self, trial_id: str) -> Optional[dict[str, Any]]:
        open_cells = [c for c in self._trials if self._suggested[c] < self._num_samples]
        if not open_cells:
            return Searcher.FINISHED
        cell = min(open_cells, key=lambda c: self._suggested[c])
        params = self._studies[cell].suggest(trial_id)
        if params is None:
            return None
        self._suggested[cell] += 1
        self._cell_of[trial_id] = cell
        return {"trial": self._trials[cell], "params": params}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._cell_of:
            self._studies[self._cell_of[trial_id]].on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False) -> None:
        if trial_id in self._cell_of:
            self._studies[self._cell_of[trial_id]].on_trial_complete(trial_id, result, error)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self.__dict__, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))


class PerCellASHA(FIFOScheduler):
    """ASHA with separate brackets per grid cell (the cell id is in the trial's config)."""

    def __init__(self, metric: str, mode: str, **asha: Any) -> None:
        super().__init__()
        self._settings = dict(metric=metric, mode=mode, **asha)
        self._per_cell: dict[str, ASHAScheduler] = {}

    def set_search_properties(self, metric: Optional[str], mode: Optional[str], **spec: Any) -> bool:
        return True  # fixed at construction

    def _asha(self, trial: Any) -> ASHAScheduler:
        cell = trial.config["trial"]["cell"]
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
