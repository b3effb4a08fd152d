"""What identifies a result: the content key of one run, declared beside the config.

Two runs with the same content key are the same experiment: a sweep may answer one from the
other's stored result instead of training again (`sweep.store`). The key is a digest of

- the fully resolved, validated experiment config in canonical form (defaults filled in, keys
  sorted), minus `NOT_RESULT_FIELDS`; the settings a trial would otherwise resolve on its own
  node are fixed before it is keyed (`sweep.plan`): `train.num_threads`, `train.device` and
  `eval.knn_backend` hold the values the trial runs with, never `null` or `auto`;
- the data it reads (`data`: `dml_core.data.fingerprint`, a digest of what the data roots hold or
  of the in-memory arrays). With a fingerprint the data roots' paths leave the key (the same data
  under another `DML_DATA` or folder is the same experiment); without one they stay as written;
- the seed (a field of the config);
- what the run is scored on (`scored_on`: the test split, held-out training classes, or folds);
- `RESULTS_VERSION`.

A field belongs in `NOT_RESULT_FIELDS` only if changing it leaves every number bitwise identical
(tests/sweep/test_identity.py changes each one and compares); any other field is in the key.

Bump `RESULTS_VERSION` with any change to `dml_core` that alters the numbers a config produces
(a training step, an augmentation, a metric), or to what the key covers: every stored result then
stops matching, so none is reused across the change.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Optional

# 2: augmentation drawn per sample from (seed, epoch, draw), not from the loader workers' streams
# (dml_core.data.draws); results stored by the trial store's first version used the old crops.
# 3: the key covers the data (its fingerprint), torch's thread count and the resolved device and
# kNN backend; version-2 keys matched runs with other labels, threads or devices.
RESULTS_VERSION = 3

# Fields that cannot change a run's numbers: where it writes, how it is named, how its data is
# fed. Everything else in the config is part of a result's identity. Dotted paths.
NOT_RESULT_FIELDS: tuple[str, ...] = (
    "name",  # names the output folder
    "sweep",  # the sweep driver's block; a trial's own settings are already merged into the config
    "data.num_workers",  # loader processes (augmentation randomness follows the sample, not the worker)
    "data.eval_batch_size",  # embedding batch size at evaluation (eval mode: each image's embedding alone)
    "data.cache_dir",  # where the feature cache lives
    "data.download",  # whether a missing dataset is fetched (the data itself is in the key)
    "train.checkpoint",  # whether a checkpoint is written
)
# Not here, though they look operational: `train.num_threads` (torch's intra-op thread count
# changes the order of floating-point sums: Omniglot, 1 epoch of 30 iterations, R@1 0.5795 with 1
# thread, 0.5788 with 2), `train.device` and `eval.knn_backend` (CUDA and CPU kernels, faiss and
# torch k-means give other numbers).


def data_location_fields() -> set[str]:
    """`data.<field>` for every dataset's data roots (`DataConfig.data_roots`): where the data lies,
    which leaves the key when what lies there (its fingerprint) enters it."""
    from dml_core.params.datasets import DATASETS

    return {f"data.{f}" for dataset in DATASETS for f in dataset.params.data_roots()}


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


def content_key(config: dict[str, Any], data: Optional[str] = None) -> str:
    """The identity of a run's result: sha256 over the canonical result config, the data's
    fingerprint `data` (`dml_core.data.fingerprint`; None: the data paths as written instead),
    what it is scored on and the results version (hex, 32 characters)."""
    tree = result_config(config)
    blob: dict[str, Any] = {"scored_on": scored_on(config), "results_version": RESULTS_VERSION}
    if data is not None:
        for dotted in data_location_fields():
            _drop(tree, dotted)
        blob["data"] = data
    blob["config"] = tree
    text = json.dumps(blob, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
