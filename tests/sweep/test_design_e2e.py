"""`--resume --restart-changed` after a change of the design, on a real sweep (digits, Ray Tune,
MLflow): a seed policy's final phase runs afresh under the new design -- its old records, MLflow
runs and checkpoints gone, none left beside the new ones -- and the report names the new design."""
from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient

from sweep.plan import load_plan
from sweep.records import FINISHED
from sweep.runner import run_sweep
from sweep.spec import SweepError
from sweep.store import load_records
from sweep_testlib import TINY_DIGITS, write_yaml

pytestmark = pytest.mark.slow


def numbers(trials: dict) -> dict:
    return {k: {m: v for m, v in t.metrics.items() if m != "time_s"} for k, t in trials.items()}


def test_a_policy_restarted_under_another_spending_reruns_its_final_phase(ray_local: None, tracking_uri: str,
                                                                           tmp_path: Path) -> None:
    sweep = {"name": "restart", "arms": {"a": {}, "b": {"model.embedding_dim": 8}}, "baseline": {"arm": "a"},
             "seeds": {"start": 2, "max": 3, "until": {"ci_half_width": 1000.0}},  # met at the first look
             "mlflow": {"tracking_uri": tracking_uri}}
    path = write_yaml(tmp_path / "s.yaml", sweep, train={**TINY_DIGITS["train"], "epochs": 1})  # 8 trials trained; one epoch each says it
    out = tmp_path / "sweep"
    first = run_sweep(load_plan(path), out)
    before = {t.key: t for t in load_records(out).final()}
    assert first.status == FINISHED and len(before) == 4

    changed = load_plan(path, ["sweep.seeds.spending=obrien_fleming"])
    with pytest.raises(SweepError, match=r"sweep\.seeds\.spending \('pocock' -> 'obrien_fleming'\): changes what the "
                                         r"4 finished final trials"):
        run_sweep(changed, out, resume=True)
    again = run_sweep(changed, out, resume=True, restart_changed=True, reuse=True)
    after = {t.key: t for t in load_records(out).final()}
    assert again.status == FINISHED and sorted(after) == sorted(before)
    assert all(t.status == FINISHED for t in after.values())
    assert not {t.trial_id for t in after.values()} & {t.trial_id for t in before.values()}  # trained again
    assert numbers(after) == numbers(before)  # the same numbers, from training again
    assert "O'Brien-Fleming" in (out / "report.md").read_text()

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("restart")
    children = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("sweep.role") != "parent"]
    assert sorted(r.info.run_id for r in children) == sorted(t.mlflow_run_id for t in after.values())
