"""Shared by the sweep tests: the digits experiment at its smallest (a trial takes about a second
once its process has imported torch) and a YAML writer."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]

# Digits: 5 training classes, 5 test classes. P = 3 classes per batch so that a search holdout of
# 0.4 (2 classes) still leaves 3 training classes; K = 8 is even for EE.
TINY_DIGITS: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "data": {"name": "digits", "image_size": 16, "crop_scale": [0.6, 1.0], "horizontal_flip": False,
             "batch": {"classes_per_batch": 3, "samples_per_class": 8}},
    "model": {"backbone": "small_conv", "conv_blocks": 2, "conv_width": 16, "embedding_dim": 16},
    "loss": {"name": "multi_similarity"},
    "optimizer": {"name": "adam", "lr": 0.003},
    "train": {"epochs": 2, "eval_every": 1, "iterations_per_epoch": 5, "num_threads": 1},
    "eval": {"clustering": False},
}


def write_yaml(path: Path, sweep: dict[str, Any] | None, **sections: Any) -> Path:
    """The tiny digits experiment with `sweep` as its sweep block; `sections` replace base sections."""
    raw = {**TINY_DIGITS, **sections}
    if sweep is not None:
        raw["sweep"] = sweep
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def sweep_from_records(sweep_dir: Path, plan: Any, values: dict[str, dict[int, float]], content: str = "") -> Path:
    """A finished sweep directory written from trial records, no training: `values[cell][seed]` =
    R@1 (MAP@R = R@1 / 2). `content` names the results' content keys (`<content>/<cell>/<seed>`),
    so two such sweeps can share a result."""
    from sweep.records import TrialRecord
    from sweep.sweep_folder import create_sweep_dir

    sweep_dir.mkdir(parents=True)
    log = create_sweep_dir(plan, sweep_dir)
    for cell, by_seed in values.items():
        for seed, v in by_seed.items():
            key = f"{cell}/seed={seed}"
            log.add(TrialRecord(trial_id=key, key=key, phase="final", cell=cell, seed=seed, status="FINISHED",
                                metrics={"recall_at_1": v, "map_at_r": v / 2, "epoch": 2.0},
                                content_key=f"{content}/{cell}/{seed}" if content else ""))
    return sweep_dir
