"""One image-dataset config and seed gives the same numbers whatever the loader's worker count and
whether it runs alone (`fit`) or as a sweep trial (Ray Tune, the trial's auto worker count).

Omniglot at 20 px with random crops and flips, so that augmentation drawn from the workers' own
random streams (what happened before `dml_core.data.draws`) changes the loss and the metrics.
The intra-op thread count stays 1 everywhere: oneDNN's convolution backward sums the batch in a
thread-count dependent order, which is a separate (float-rounding) difference.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dml_core.config import config_from_dict
from dml_core.training import fit
from sweep.plan import load_plan
from sweep.store import load_records
from sweep.runner import run_sweep

pytestmark = pytest.mark.slow


def omniglot_experiment(root: Path) -> dict[str, Any]:
    return {
        "name": "determinism", "seed": 3,
        "data": {"name": "omniglot", "root": str(root), "image_size": 20, "train_classes": 0.5,
                 "crop_scale": [0.4, 1.0], "horizontal_flip": True,
                 "batch": {"classes_per_batch": 8, "samples_per_class": 4}},
        "model": {"backbone": "small_conv", "conv_blocks": 2, "conv_width": 8, "embedding_dim": 16},
        "loss": {"name": "multi_similarity"},
        "optimizer": {"lr": 0.003},
        "train": {"epochs": 2, "iterations_per_epoch": 3, "eval_every": 1, "num_threads": 1, "checkpoint": False},
        "eval": {"clustering": False},
    }


def numbers(metrics: dict[str, float]) -> dict[str, float]:
    """Everything a run computes (loss, every metric), not how long it took."""
    return {k: v for k, v in metrics.items() if k != "time_s"}


def test_loader_workers_and_sweep_trial_give_identical_metrics(omniglot_root: Path, ray_local: None,
                                                               tracking_uri: str, tmp_path: Path) -> None:
    raw = omniglot_experiment(omniglot_root)
    alone = {}
    for workers in (0, 1, 3):
        cfg = config_from_dict({**raw, "data": {**raw["data"], "num_workers": workers}})
        alone[workers] = numbers(fit(cfg).metrics)
    assert alone[1] == alone[0] and alone[3] == alone[0], alone

    # The sweep leaves data.num_workers to the trial's resources: 2 CPUs -> 1 worker, in a Ray actor.
    sweep = {"name": "determinism", "seeds": [raw["seed"]], "resources_per_trial": {"cpu": 2},
             "mlflow": {"tracking_uri": tracking_uri}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({**raw, "sweep": sweep}, sort_keys=False))
    run_sweep(load_plan(path), tmp_path / "sweep", verbose=0)
    [trial] = load_records(tmp_path / "sweep").final()
    assert {k: trial.metrics[k] for k in alone[0]} == alone[0]
