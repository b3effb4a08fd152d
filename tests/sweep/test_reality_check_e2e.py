"""A Reality-Check sweep end to end (`sweep.search.folds: 4`) on the real Omniglot subset: Ray
Tune, Optuna, MLflow, the report. Each search sample trains 4 times on 3 of 4 class-disjoint
folds of the training alphabets' characters and is scored by the fold mean of MAP@R; the final
trials train on every training class and test on the test alphabets."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweep.plan import load_plan
from sweep.records import FINISHED
from sweep.store import load_records
from sweep.runner import run_sweep

pytestmark = pytest.mark.slow


def test_fold_search_runs_end_to_end_and_reports_fold_scores_and_budget(ray_local, tracking_uri, tmp_path: Path,
                                                                         omniglot_root: Path) -> None:
    raw = {
        "name": "rc", "seed": 0,
        "data": {"name": "omniglot", "root": str(omniglot_root), "image_size": 16, "train_classes": 0.5,
                 "horizontal_flip": False, "batch": {"classes_per_batch": 8, "samples_per_class": 4}},
        "model": {"backbone": "small_conv", "conv_blocks": 2, "conv_width": 16, "embedding_dim": 16},
        "loss": {"name": "multi_similarity"},
        "train": {"epochs": 1, "iterations_per_epoch": 2, "num_threads": 1},
        "eval": {"clustering": False},
        "sweep": {
            "arms": {"ms": {}, "ms_ee": {"expansion.name": "ee"}},
            "seeds": [0], "baseline": {"arm": "ms"}, "metric": "recall_at_1",
            "search": {"params": {"optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 1e-2}},
                       "num_samples": 1, "folds": 4},
            "mlflow": {"tracking_uri": tracking_uri},
        },
    }
    path = tmp_path / "rc.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    outcome = run_sweep(load_plan(path), tmp_path / "sweep", verbose=0)
    assert outcome.status == FINISHED
    state = load_records(outcome.sweep_dir)
    search, final = state.search(), state.final()
    assert len(search) == 2 and len(final) == 2 and {r.status for r in state.trials} == {FINISHED}
    for r in search:
        folds = [r.metrics[f"fold{i}_map_at_r"] for i in range(4)]
        assert r.metrics["map_at_r"] == pytest.approx(sum(folds) / 4)  # scored by the fold mean
        assert r.metrics["folds"] == 4
    for r in final:  # trained on every training class: no fold, no holdout; scored on the test split
        assert r.metrics["recall_at_1"] > 0
    assert set(state.meta.best) == {"arm=ms", "arm=ms_ee"}
    for r in search:  # the search chose by the fold mean
        assert state.meta.best[r.cell].value == r.metrics["map_at_r"]
    report = (outcome.sweep_dir / "report.md").read_text()
    assert "## Search (per cell, on 4 class-disjoint folds of the training classes, scored by the fold mean)" in report
    assert "Search budget per arm: ms 1 sample x 4 folds = 4 runs; ms_ee 1 sample x 4 folds = 4 runs -- " \
           "the same for every arm." in report
    assert "per fold" in report
