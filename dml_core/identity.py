"""What identifies a result: the content key of one run, declared beside the config.

Two runs with the same content key are the same experiment: a sweep may answer one from the
other's stored result instead of training again (`sweep.store`). The key is a digest of

- the fully resolved, validated experiment config in canonical form (defaults filled in, keys
  sorted, `${DML_DATA}` left unexpanded and data paths as written, so every node computes the
  same key), minus `NOT_RESULT_FIELDS`;
- the seed (a field of the config);
- what the run is scored on (`scored_on`: the test split, held-out training classes, or folds);
- `RESULTS_VERSION`.

Bump `RESULTS_VERSION` with any change to `dml_core` that alters the numbers a config produces
(a training step, an augmentation, a metric): every stored result then stops matching, so none
is reused across the change.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

# 2: augmentation drawn per sample from (seed, epoch, draw), not from the loader workers' streams
# (dml_core.data.draws); results stored by the trial store's first version used the old crops.
RESULTS_VERSION = 2

# Fields that cannot change a run's numbers: how fast or where it runs, where it writes, how it is
# named. Everything else in the config is part of a result's identity. Dotted paths.
NOT_RESULT_FIELDS: tuple[str, ...] = (
    "name",  # names the output folder
    "sweep",  # the sweep driver's block; a trial's own settings are already merged into the config
    "data.num_workers",  # loader processes (augmentation randomness follows the sample, not the worker)
    "data.eval_batch_size",  # embedding batch size at evaluation (no batch statistics in eval mode)
    "data.cache_dir",  # where the feature cache lives
    "data.download",  # whether a missing dataset is fetched
    "train.num_threads",  # torch CPU threads
    "train.checkpoint",  # whether a checkpoint is written
)


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node: Any = tree
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(leaf, None)


def result_config(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config (`ExperimentConfig.to_dict()`) that determines its numbers."""
    tree = json.loads(json.dumps(config))  # a deep copy in plain JSON types
    for dotted in NOT_RESULT_FIELDS:
        _drop(tree, dotted)
    return tree


def scored_on(config: dict[str, Any]) -> str:
    """What a run's metrics are computed on: class-disjoint folds of the training classes,
    held-out training classes, or the test split."""
    data = config.get("data") or {}
    if data.get("folds") is not None:
        return "folds"
    return "holdout" if data.get("holdout") is not None else "test"


def content_key(config: dict[str, Any]) -> str:
    """The identity of a run's result: sha256 over the canonical result config, what it is
    scored on and the results version (hex, 32 characters)."""
    blob = json.dumps({"config": result_config(config), "scored_on": scored_on(config),
                       "results_version": RESULTS_VERSION}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]
