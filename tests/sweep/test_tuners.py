"""Each phase's Tune wiring (`sweep.tuners`): experiment folders and the names Tune shows (no Ray started)."""
from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sweep.plan import load_plan
from sweep.tuners import experiment_name, trial_namer
from sweep_testlib import write_yaml


def test_each_session_of_a_phase_is_a_new_tune_experiment(tmp_path: Path) -> None:
    assert experiment_name(tmp_path, "final") == "final"
    (tmp_path / "final").mkdir()
    assert experiment_name(tmp_path, "final") == "final-2"
    (tmp_path / "final-2").mkdir()
    assert experiment_name(tmp_path, "final") == "final-3" and experiment_name(tmp_path, "search") == "search"


def test_tune_shows_a_final_trial_by_its_key_and_a_search_sample_by_key_and_id(tmp_path: Path) -> None:
    search = {"params": {"optimizer.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}}, "num_samples": 2}
    plan = load_plan(write_yaml(tmp_path / "q.yaml", {"grid": {"model.embedding_dim": [8, 16]}, "seeds": [0], "search": search}))
    final, sample = plan.final_trials()[1], plan.search_trial(plan.cells[0])
    name = trial_namer([sample, final])
    assert name(SimpleNamespace(config={"trial": 1}, trial_id="a1")) == final.key
    assert name(SimpleNamespace(config={"trial": 0}, trial_id="b2")) == f"{sample.key}/b2"


def test_the_namer_tune_pickles_into_every_trial_state_is_one_string_not_the_phases_specs(tmp_path: Path) -> None:
    """Tune cloudpickles the name creator each time it saves a changed trial's state: carrying the
    phase's specs made that O(trials) pickled objects per save, the sweep's Tune loop O(N^2). Tune
    deep-copies it into each trial, and a pickled one names the same trials."""
    import copy

    from ray import cloudpickle

    grid = {"optimizer.lr": [round(1e-3 * (1 + i / 500), 8) for i in range(500)]}
    specs = load_plan(write_yaml(tmp_path / "g.yaml", {"grid": grid, "seeds": [0, 1]})).final_trials()
    name = trial_namer(specs)
    last = SimpleNamespace(config={"trial": len(specs) - 1}, trial_id="z9")
    assert name(last) == copy.deepcopy(name)(last) == cloudpickle.loads(cloudpickle.dumps(name))(last) == specs[-1].key
    objects = []  # what the pickler visits: a closure over the specs visits each spec and its dicts

    class Counting(cloudpickle.Pickler):
        def reducer_override(self, obj: Any) -> Any:
            objects.append(type(obj))
            return super().reducer_override(obj)

    Counting(io.BytesIO()).dump(name)
    assert len(objects) < 20, f"{len(objects)} objects pickled for {len(specs)} trials"
