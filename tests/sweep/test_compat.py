"""One test per private / developer-only API contract gathered in `sweep.compat`: an upgrade of
Ray or Optuna that breaks one fails here, by name."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweep import compat


def test_tune_result_keys_hold_tunes_bookkeeping() -> None:
    assert {"time_total_s", "training_iteration", "time_this_iter_s", "timestamp", "pid"} <= compat.TUNE_RESULT_KEYS
    assert not {"recall_at_1", "loss", "epoch"} & compat.TUNE_RESULT_KEYS


def test_legacy_output_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(compat.LEGACY_OUTPUT_ENV, raising=False)
    compat.use_legacy_tune_output()
    import os

    from ray.tune.experimental.output import get_air_verbosity

    assert os.environ[compat.LEGACY_OUTPUT_ENV] == "0"
    # Ray reads the variable here: None = the legacy reporter (silent at verbose 0).
    from ray.tune.utils.log import Verbosity

    assert get_air_verbosity(Verbosity.V0_MINIMAL) is None


def test_tune_loggers_write_results_but_no_tensorboard_events(monkeypatch: pytest.MonkeyPatch) -> None:
    """The callbacks Tune runs a sweep with: ours, its CSV and JSON loggers (each trial's
    result.json and progress.csv), and no TensorBoard logger, whose tensorboardX import pulled
    torch into the driver. Checked on the function `Tuner.fit` builds them with."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback
    from ray.tune.utils.callback import _create_default_callbacks

    monkeypatch.delenv(compat.AUTO_LOGGERS_ENV, raising=False)
    kinds = {type(c) for c in _create_default_callbacks(compat.tune_loggers())}
    assert {CSVLoggerCallback, JsonLoggerCallback} <= kinds and TBXLoggerCallback not in kinds
    monkeypatch.delenv(compat.AUTO_LOGGERS_ENV)
    assert TBXLoggerCallback in {type(c) for c in _create_default_callbacks([])}  # Tune's default: it would


def test_autoscaler_cluster_config_is_callable_on_a_local_ray() -> None:
    """Without a connected Ray the private call raises (the caller treats any error as "no
    autoscaler"); it must still exist under this name."""
    import ray._private.state

    assert callable(ray._private.state.state.get_cluster_config)


def test_local_node_pids_name_the_local_clusters_gcs_and_raylet(ray_local: None) -> None:
    import ray  # noqa: F401 -- puts Ray's vendored psutil on the path
    import psutil

    names = {psutil.Process(pid).name() for pid in compat.local_node_pids()}
    assert {"gcs_server", "raylet"} <= names, names


def test_searcher_metric_and_mode() -> None:
    from ray.tune.search import Searcher

    searcher = Searcher(metric="recall_at_1", mode="max")
    assert (compat.searcher_metric(searcher), compat.searcher_mode(searcher)) == ("recall_at_1", "max")


def test_reopen_optuna_trial_and_reported_steps(tmp_path: Path) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(tmp_path / "j.journal")))
    study = optuna.create_study(study_name="c", storage=storage)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.report(0.5, 1)
    trial.report(0.6, 3)
    assert compat.reported_steps(trial) == {1, 3}
    # A new process (a resumed driver) finds it RUNNING in the journal and closes it.
    again = optuna.load_study(study_name="c", storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.journal"))))
    (frozen,) = again.get_trials(states=(TrialState.RUNNING,))
    handle = compat.reopen_optuna_trial(again, frozen)
    again.tell(handle, state=TrialState.FAIL)
    assert [t.state for t in again.get_trials()] == [TrialState.FAIL]
