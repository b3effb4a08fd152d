"""What the MLflow store holds after the same sweep command twice (`make run`, `make run`): the
second sweep's parent is named after its directory, its reused trials are light runs linked to
the runs that trained them (no history copied), and the experiment opens in MLflow's
model-training view."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest
from mlflow import MlflowClient

from sweep.run import main
from sweep_testlib import write_yaml

pytestmark = pytest.mark.slow

EPOCHS = 2


def test_two_identical_sweeps_in_mlflow(ray_local: None, tmp_path: Path, mlflow_db: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("DML_STORAGE_PATH", str(tmp_path / "sweeps"))
    sweep = {"name": "twice", "grid": {"model.embedding_dim": [8, 16]}, "seeds": [0, 1],
             "baseline": {"model.embedding_dim": 8}, "mlflow": {"tracking_uri": uri}}
    path = write_yaml(tmp_path / "twice.yaml", sweep)
    console = io.StringIO()
    with contextlib.redirect_stdout(console):
        assert main([str(path)]) == 0
        assert main([str(path)]) == 0
    assert (tmp_path / "sweeps" / "twice-2" / "plan.json").is_file()

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("twice")
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = {r.info.run_name: r for r in runs if r.data.tags.get("sweep.role") == "parent"}
    assert set(parents) == {"twice", "twice-2"}  # told apart by name, not by duration
    for name, parent in parents.items():
        assert parent.data.tags["sweep.dir"] == str(tmp_path / "sweeps" / name)
        assert re.fullmatch(r"R@1 [+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\] pts, \w+.*",
                            parent.data.tags["headline"]), parent.data.tags["headline"]
        assert parent.data.tags["headline.of"] == "dim=16 vs dim=8"
        assert list(parent.data.tags)[:2] == ["headline", "headline.of"]  # the run page's first chips
    children = {name: {r.data.tags["sweep.key"]: r for r in runs
                       if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
                for name, parent in parents.items()}
    assert len(children["twice"]) == len(children["twice-2"]) == 4
    for key, again in children["twice-2"].items():
        trained = children["twice"][key]
        assert again.data.tags["sweep.reused_from"] == str(tmp_path / "sweeps" / "twice")
        assert again.data.tags["sweep.trained_run"] == trained.info.run_id
        assert trained.info.run_id in again.data.tags["mlflow.note.content"]
        # The result, once; its history stays in the run that trained it.
        assert [m.step for m in client.get_metric_history(trained.info.run_id, "recall_at_1")] == [1, 2]
        assert [m.step for m in client.get_metric_history(again.info.run_id, "recall_at_1")] == [EPOCHS]
        assert again.data.metrics["recall_at_1"] == trained.data.metrics["recall_at_1"]
        # The primary metric is each run's first: MLflow's compare view opens its plot on it.
        assert next(iter(trained.data.metrics)) == next(iter(again.data.metrics)) == "recall_at_1"
    out = console.getvalue()
    assert "workflowType=machine_learning" in out.split("sweep:", 1)[1].splitlines()[0]
    assert "workflowType=machine_learning" in out.split("compare:", 1)[1].splitlines()[0]  # not the GenAI view
