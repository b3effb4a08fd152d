"""The Reality-Check protocol (Musgrave et al., ECCV 2020) as `sweep.search.folds`: class-disjoint
folds of the training classes, every class held out exactly once, a sample scored by the fold
mean, the same search budget per arm. The end-to-end sweep is tests/sweep/test_reality_check_e2e.py."""
from __future__ import annotations

import numpy as np
import pytest

from dml_core.config import ConfigError, config_from_dict
from dml_core.data import select_splits
from sweep.console import describe_plan
from sweep.plan import load_plan
from sweep.spec import SweepError
from sweep.trainable import fold_results
from stepcheck import REPO

import sys
sys.path.insert(0, str(REPO / "tests" / "sweep"))
from sweep_testlib import write_yaml  # noqa: E402


def _names(split) -> list[str]:
    return [split.class_names[c] for c in np.unique(split.labels)]


@pytest.mark.parametrize("folds", [2, 4, 5])
def test_folds_are_class_disjoint_and_hold_every_training_class_out_once(folds):
    def data(**extra):
        return config_from_dict({"data": {"name": "digits", **extra}}).data

    all_train = set(_names(select_splits(data()).train))
    held = []
    for fold in range(folds):
        s = select_splits(data(folds=folds, fold=fold))
        train, val = set(_names(s.train)), set(_names(s.test))
        assert not train & val, "a class both trains and validates"
        assert train | val == all_train
        assert s.query is None and s.gallery is None
        held += sorted(val)
    assert sorted(held) == sorted(all_train)  # each training class held out exactly once
    assert len(set(held)) == len(held)


def test_the_test_classes_never_enter_a_fold():
    test = set(_names(select_splits(config_from_dict({"data": {"name": "digits"}}).data).test))
    for fold in range(4):
        s = select_splits(config_from_dict({"data": {"name": "digits", "folds": 4, "fold": fold}}).data)
        assert not (set(_names(s.train)) | set(_names(s.test))) & test


def test_fold_settings_are_checked():
    with pytest.raises(ConfigError, match="data.fold"):
        config_from_dict({"data": {"name": "digits", "folds": 4, "fold": 4}})
    with pytest.raises(ConfigError, match="data.folds"):
        config_from_dict({"data": {"name": "digits", "folds": 4, "holdout": 0.2}})


def test_the_sample_score_is_the_fold_mean_and_each_fold_is_kept():
    per_fold = [{"epoch": 2, "map_at_r": v, "recall_at_1": 2 * v, "loss": 1.0} for v in (0.1, 0.2, 0.3, 0.6)]
    out = fold_results(per_fold, ("map_at_r",))
    assert out["map_at_r"] == pytest.approx(0.3) and out["recall_at_1"] == pytest.approx(0.6)
    assert [out[f"fold{i}_map_at_r"] for i in range(4)] == [0.1, 0.2, 0.3, 0.6]
    assert out["folds"] == 4 and "fold0_recall_at_1" not in out


SEARCH = {"params": {"optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2}}, "num_samples": 3, "folds": 4}


def test_the_plan_searches_folds_by_map_at_r_with_the_same_budget_per_arm(tmp_path):
    sweep = {"arms": {"ms": {}, "ee": {"expansion.name": "ee"}}, "search": SEARCH, "metric": "recall_at_1"}
    plan = load_plan(write_yaml(tmp_path / "x.yaml", sweep))
    assert plan.spec.search_metric == "map_at_r" and plan.spec.search_mode == "max"
    assert plan.spec.search.holdout is None
    trial = plan.search_trial(plan.cells[0])
    assert trial.overrides["data.folds"] == 4 and "data.holdout" not in trial.overrides
    assert [t.overrides.get("data.folds") for t in plan.final_trials()] == [None, None]  # final: all classes
    assert plan.search_budget() == {"ms": {"cells": 1, "samples": 3, "fits": 12}, "ee": {"cells": 1, "samples": 3, "fits": 12}}
    text = describe_plan(plan)
    assert "4 class-disjoint folds of the training classes" in text and "by map_at_r (max)" in text
    assert "search budget per arm: ms 3 samples x 4 folds = 12 runs; ee 3 samples x 4 folds = 12 runs -- " \
           "the same for every arm" in text


def test_an_arm_with_more_cells_is_called_out(tmp_path):
    sweep = {"arms": {"ms": {"model.embedding_dim": 8}, "ee": {"expansion.name": "ee"}},
             "grid": {"model.embedding_dim": [8, 16]}, "search": SEARCH}
    text = describe_plan(load_plan(write_yaml(tmp_path / "x.yaml", sweep)))
    assert "NOT the same for every arm" in text


def test_folds_refuse_asha_and_an_explicit_holdout(tmp_path):
    with pytest.raises(SweepError, match="asha"):
        load_plan(write_yaml(tmp_path / "a.yaml", {"search": SEARCH, "scheduler": {"name": "asha"}}))
    with pytest.raises(SweepError, match="holdout"):
        load_plan(write_yaml(tmp_path / "b.yaml", {"search": {**SEARCH, "holdout": 0.2}}))
