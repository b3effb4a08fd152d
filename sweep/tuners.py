"""Each phase's Ray Tune `Tuner`: the trainable and its resources, the run config, the trials' names."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from sweep.plan import FINAL, SEARCH, SweepPlan, TrialSpec


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id  # the default embeds the whole config in the folder name


def experiment_name(sweep_dir: Path, phase: str) -> str:
    """`final` the first time, `final-2`, `final-3`, ... for each later session of the phase: what
    ran before is known from the store, never from Tune's folders, so each session is a new experiment."""
    name, n = phase, 1
    while (sweep_dir / name).exists():
        n += 1
        name = f"{phase}-{n}"
    return name


def trainable(plan: SweepPlan, sweep_dir: Path, specs: list[TrialSpec], callback: Any) -> Any:
    """The phase's Tune function: the base config and the phase's specs travel once through
    Ray's object store; each trial's config holds only its spec's index (the callback reads it)."""
    from ray import tune

    from sweep.trainable import run_trial

    spec, res = plan.spec, plan.spec.resources_per_trial
    bound = tune.with_parameters(run_trial, base=plan.base, source=plan.source, sweep_dir=str(sweep_dir), specs=specs,
                                 metrics=tuple({spec.metric, spec.search_metric}))
    callback.specs = specs
    return tune.with_resources(bound, {"cpu": res.cpu, "gpu": res.gpu})


def run_config(plan: SweepPlan, sweep_dir: Path, phase: str, callback: Any, verbose: int) -> Any:
    from ray import tune

    from sweep.compat import tune_loggers

    return tune.RunConfig(
        name=experiment_name(sweep_dir, phase),
        storage_path=str(sweep_dir),
        callbacks=[callback, *tune_loggers()],  # one callback of ours: store, then MLflow, then console
        failure_config=tune.FailureConfig(max_failures=plan.spec.max_failures),
        verbose=verbose,
    )


class _TrialNames:
    """What Tune's progress tables show: the cell and seed, not `run_trial_<id>`. Tune pickles its
    name creator into each trial's saved state, at every save of a changed trial: the phase's keys
    go in the pickle as one JSON string (one object to pickle), where a closure over the phase's
    specs made each save cost O(trials) in pickled objects and the sweep's Tune loop O(N^2) (3 ms
    per save at N = 1,024). Tune deep-copies it into each trial: the same table, never changed."""

    def __init__(self, specs: list[TrialSpec]) -> None:
        self.keys = json.dumps([[s.key, s.phase == FINAL] for s in specs])
        self._table: Optional[list[tuple[str, bool]]] = None

    def __call__(self, trial: Any) -> str:
        if self._table is None:
            self._table = [(key, final) for key, final in json.loads(self.keys)]
        key, final = self._table[trial.config["trial"]]
        return key if final else f"{key}/{trial.trial_id}"

    def __getstate__(self) -> dict[str, Any]:
        return {"keys": self.keys, "_table": None}

    def __deepcopy__(self, memo: dict[int, Any]) -> "_TrialNames":
        return self


def trial_namer(specs: list[TrialSpec]) -> Any:
    return _TrialNames(specs)


def final_tuner(plan: SweepPlan, sweep_dir: Path, todo: list[TrialSpec], callback: Any, verbose: int) -> Any:
    """A Tuner of the final trials `todo`: the grid carries their indices, not specs."""
    from ray import tune

    fn, run = trainable(plan, sweep_dir, todo, callback), run_config(plan, sweep_dir, FINAL, callback, verbose)
    config = tune.TuneConfig(
        num_samples=1, max_concurrent_trials=plan.spec.max_concurrent_trials, reuse_actors=True,
        trial_dirname_creator=_trial_dirname, trial_name_creator=trial_namer(todo),
    )
    return tune.Tuner(fn, param_space={"trial": tune.grid_search(list(range(len(todo))))}, tune_config=config,
                      run_config=run)


def search_tuner(plan: SweepPlan, sweep_dir: Path, specs: list[TrialSpec], searcher: Any, scheduler: Optional[Any],
                 callback: Any, verbose: int) -> Any:
    """A Tuner of the search: `searcher` draws each cell's samples, `scheduler` (or none) stops them early."""
    from ray import tune

    fn, run = trainable(plan, sweep_dir, specs, callback), run_config(plan, sweep_dir, SEARCH, callback, verbose)
    spec = plan.spec
    config = tune.TuneConfig(
        search_alg=searcher, scheduler=scheduler, num_samples=plan.num_search_trials, metric=spec.search_metric,
        mode=spec.search_mode, reuse_actors=True, trial_dirname_creator=_trial_dirname, trial_name_creator=trial_namer(specs),
    )
    return tune.Tuner(fn, tune_config=config, run_config=run)
