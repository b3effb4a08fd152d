"""What `--dry-run` needs to know of a dataset: images per training class (no pixels read).

`data_index` applies the dataset's split, ``data.holdout`` and ``data.num_classes`` exactly as
training will (`select_splits`), and `check_batch` rejects P x K batches that cannot be drawn
from it. Indexes are cached per data selection (`DataConfig.selection`: the fields the dataset
declares as selecting its images), so the cells of a sweep share one read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from dml_core.data import select_splits
from dml_core.data.roots import resolve_data_paths
from dml_core.params.datasets import DataConfig

_CACHE_SIZE = 64


@dataclass(frozen=True)
class DataIndex:
    images_per_class: tuple[int, ...]  # training classes, in label order

    @property
    def num_classes(self) -> int:
        return len(self.images_per_class)


_indexes: dict[str, DataIndex] = {}  # selection -> index, oldest first


def data_index(cfg: DataConfig) -> DataIndex:
    """The training split's images per class, read once per data selection."""
    # Keyed by the expanded paths: `${DML_DATA}/x` names another folder when DML_DATA changes.
    key = json.dumps(resolve_data_paths(cfg).selection(), sort_keys=True)
    if key not in _indexes:
        # Read with `cfg` itself: fields that do not select (`download`) still say how to read.
        counts = np.bincount(select_splits(cfg).train.labels)
        if len(_indexes) >= _CACHE_SIZE:
            _indexes.pop(next(iter(_indexes)))
        _indexes[key] = DataIndex(tuple(int(c) for c in counts))
    return _indexes[key]


def check_batch(cfg: DataConfig, index: DataIndex) -> None:
    """Raise `ValueError` naming the field if P x K batches cannot be drawn from the index."""
    p, k = cfg.batch.classes_per_batch, cfg.batch.samples_per_class
    after = ", after data.holdout" if cfg.holdout is not None else ""
    after += ", after data.num_classes" if cfg.num_classes is not None else ""
    if p > index.num_classes:
        raise ValueError(f"data.batch.classes_per_batch: {p} classes per batch but the training split of {cfg.name} "
                         f"has {index.num_classes} classes{after}")
    largest = max(index.images_per_class)
    if k > largest:
        # The sampler repeats images of a class smaller than K; when every class is, each batch
        # is made of duplicates.
        raise ValueError(f"data.batch.samples_per_class: {k} per class but no training class of {cfg.name} "
                         f"has more than {largest} images{after}")
