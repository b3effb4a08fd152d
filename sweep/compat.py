"""Every use of a private or developer-only API of Ray, Optuna or pydantic, in one place.

Each is a contract with a library version that may break on upgrade; `tests/sweep/test_compat.py`
checks each one against the installed versions, so an upgrade that breaks one fails there, by
name, rather than deep inside a sweep.

- `ray._private.state.state.get_cluster_config()`: the autoscaler's node types (`resources.py`);
- `ray.tune.result.AUTO_RESULT_KEYS` / `DEBUG_METRICS`: Tune's own keys in a trial result
  (developer API), kept out of the metrics logged to MLflow (`tune_callback.py`);
- the env var `RAY_AIR_NEW_OUTPUT=0`: Tune's legacy output engine, silent at verbose 0 (`runner.py`);
- the env var `TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1` with Tune's CSV and JSON loggers passed
  explicitly: no TensorBoard logger (`runner.py`, `tune_loggers`);
- `Searcher._metric` / `Searcher._mode`: set by `Searcher.__init__`, read by `search.py`;
- Optuna's `FrozenTrial._trial_id` (a trial's storage id, to reopen a RUNNING trial of a journal
  as a `Trial`) and `Trial._cached_frozen_trial` (the intermediate values reported so far, without
  a storage round trip);
- `ray._private.worker.global_worker.node.all_processes`: the processes a driver's `ray.init`
  started for a local cluster, which `local_ray.py`'s watchdog ends with the driver.
"""
from __future__ import annotations

import os
from typing import Any, Optional

from ray.tune.result import AUTO_RESULT_KEYS, DEBUG_METRICS

# Keys Tune adds to every result (time_total_s, training_iteration, ...): not a trainer's metrics.
TUNE_RESULT_KEYS: frozenset[str] = frozenset({*AUTO_RESULT_KEYS, *DEBUG_METRICS})

LEGACY_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"


def use_legacy_tune_output() -> None:
    """Ray 2.x's new output engine prints its config box, results path and TensorBoard hint even
    at verbose 0; the legacy engine at verbose 0 prints nothing. Read when `Tuner.fit` starts."""
    os.environ[LEGACY_OUTPUT_ENV] = "0"


AUTO_LOGGERS_ENV = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"


def tune_loggers() -> list[Any]:
    """The loggers of a sweep's Tune experiments: each trial's `result.json` and `progress.csv`,
    not TensorBoard's event files. Tune adds all three unless told not to (read when `Tuner.fit`
    starts); its TensorBoard logger imports tensorboardX, which imports torch into the driver --
    two seconds and 300 MB before the first trial, and a write per result -- for files nothing
    reads (MLflow is the sweep's view)."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    os.environ[AUTO_LOGGERS_ENV] = "1"
    return [CSVLoggerCallback(), JsonLoggerCallback()]


def autoscaler_cluster_config() -> Optional[Any]:
    """The cluster config the autoscaler reported to the GCS (`node_group_configs`), or None."""
    import ray._private.state

    return ray._private.state.state.get_cluster_config()


def local_node_pids() -> list[int]:
    """The pids of the processes (GCS, raylet, monitors) this driver's `ray.init` started."""
    import ray._private.worker

    node = ray._private.worker.global_worker.node
    return [info.process.pid for infos in node.all_processes.values() for info in infos]


def searcher_metric(searcher: Any) -> Optional[str]:
    return searcher._metric


def searcher_mode(searcher: Any) -> Optional[str]:
    return searcher._mode


def reopen_optuna_trial(study: Any, frozen: Any) -> Any:
    """A `optuna.Trial` handle on a trial stored in `study` (e.g. RUNNING in a journal left by a
    killed driver), so that it can be told its end."""
    import optuna

    return optuna.trial.Trial(study, frozen._trial_id)


def reported_steps(trial: Any) -> set[int]:
    """The steps an `optuna.Trial` already reported an intermediate value for."""
    return set(trial._cached_frozen_trial.intermediate_values)
