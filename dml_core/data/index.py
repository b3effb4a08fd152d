"""What `--dry-run` needs to know of a dataset: images per training class (no pixels read).

`data_index` applies the dataset's split, ``data.holdout`` and ``data.num_classes`` exactly as
training will (`select_splits`), and `check_batch` rejects P x K batches that cannot be drawn
from it. Indexes are cached per data selection (`DataConfig.selection`: the fields the dataset
declares as selecting its images), so the cells of a sweep share one read. `check_selections` is the
one call a sweep's checks make: fetch, find every path, index, and the first problem in words.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from dml_core.data import select_splits
from dml_core.data.download import ensure_downloaded, where_to_get
from dml_core.data.roots import DATA_ENV, data_home, resolve_data_paths, uses_data_home
from dml_core.data.splits import fold_classes
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


# Fewer held-out classes than this and a fold's score means nothing: with one class every
# embedding retrieves its own class, MAP@R 100 whatever the learning rate.
MIN_FOLD_CLASSES = 2


def check_folds(cfg: DataConfig, field: str = "data.folds") -> None:
    """Every fold of ``cfg.folds``, from one read of the training classes: it holds out at least
    `MIN_FOLD_CLASSES` classes, and the other folds' classes give its training P x K batches.
    `ValueError` naming ``field`` (where the fold count was written) otherwise."""
    k = cfg.folds
    whole = data_index(cfg.model_copy(update={"folds": None, "fold": 0}))  # the training classes before folds
    n = whole.num_classes
    for fold in range(k):
        held = set(fold_classes(n, k, fold))
        if len(held) < MIN_FOLD_CLASSES:
            most = f"; at most {n // MIN_FOLD_CLASSES} folds" if n >= MIN_FOLD_CLASSES else ""
            raise ValueError(f"{field}: {k} folds of the {n} training classes of {cfg.name} hold out "
                             f"{len(held)} class{'es' * (len(held) != 1)} in fold {fold}; a fold needs at least "
                             f"{MIN_FOLD_CLASSES} (one class scores every model 100 %){most}")
        rest = tuple(c for i, c in enumerate(whole.images_per_class) if i not in held)
        if cfg.num_classes is not None:  # the first N training classes, after the fold split
            rest = rest[:cfg.num_classes]
        try:
            check_batch(cfg, DataIndex(rest))
        except ValueError as e:
            raise ValueError(f"{field}: {k} folds leave fold {fold} {len(rest)} training classes: {e}") from None


@dataclass(frozen=True)
class DataProblem:
    """Why a list of data selections cannot train, in one line naming the field; ``at``: the
    selection it is of (None when it is a download or a path, which no one selection owns)."""

    message: str
    at: Optional[int] = None


def check_selections(configs: Sequence[DataConfig], *, download: bool = False,
                     folds_field: str = "data.folds") -> Optional[DataProblem]:
    """The first problem of ``configs``, in this order: (with ``download``) fetching each distinct
    selection whose ``data.download`` is on; a data path missing on this machine; P x K batches
    that a training split (or, with ``folds``, a fold's) cannot give. None when they all can train.
    A blocked network is a problem naming the URL; the network is never touched without ``download``."""
    if download:
        fetched = set()
        for cfg in configs:
            data = resolve_data_paths(cfg)
            if data.download and data.model_dump_json() not in fetched:
                fetched.add(data.model_dump_json())
                try:
                    ensure_downloaded(data)
                except ValueError as e:
                    return DataProblem(str(e))
    seen = set()
    for written in configs:
        data = resolve_data_paths(written)
        for key in data.data_roots():
            path = getattr(data, key)
            if path is None or path in seen or "://" in path:
                continue
            seen.add(path)
            if not Path(path).exists():
                raw = getattr(written, key)  # present: the resolved copy has the same fields
                why = (f"{raw} with {DATA_ENV}={data_home()}" if uses_data_home(raw)
                       else f"relative paths resolve against the current directory, {os.getcwd()}")
                return DataProblem(f"data.{key}: {path} does not exist ({why}; {where_to_get(data.name)})")
    for at, cfg in enumerate(configs):
        try:
            if cfg.folds is not None:
                check_folds(cfg, folds_field)
            else:
                check_batch(cfg, data_index(cfg))
        except ValueError as e:
            return DataProblem(str(e), at)
    return None
