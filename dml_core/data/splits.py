"""Class-disjoint (zero-shot) splits: the first classes train, the rest test.

The DML protocol (Oh Song et al., "Deep Metric Learning via Lifted Structured Feature Embedding",
CVPR 2016) trains on the first half of the classes in their canonical order and tests on the
other half -- CUB-200-2011 classes 1-100 / 101-200, Cars196 1-98 / 99-196. Datasets without a
published split (digits, Omniglot, an image folder) follow the same rule, and
``data.train_classes`` overrides the share for any dataset that is split this way.
"""
from __future__ import annotations

import dataclasses

from dml_core.params.datasets import DataConfig
from dml_core.data.base import DatasetError, DatasetSplits, DMLDataset


def train_class_count(train_classes: float | None, num_classes: int, default: float = 0.5) -> int:
    """How many classes train: ``train_classes`` < 1 is a fraction, >= 1 a count.

    Both sides must keep at least one class, otherwise the split cannot be evaluated.
    """
    value = default if train_classes is None else train_classes
    if value <= 0:
        raise DatasetError(f"data.train_classes: must be a fraction in (0, 1) or a class count >= 1, got {value}")
    if value < 1:
        count = round(value * num_classes)
    elif float(value).is_integer():
        count = int(value)
    else:
        raise DatasetError(f"data.train_classes: a count of classes must be a whole number, got {value}")
    if not 1 <= count < num_classes:
        raise DatasetError(
            f"data.train_classes: {value} of {num_classes} classes leaves "
            f"{count} training and {num_classes - count} test classes; both need at least one"
        )
    return count


def split_first_classes(full: DMLDataset, num_train: int) -> tuple[DMLDataset, DMLDataset]:
    """Classes [0, num_train) train, [num_train, C) test, each re-indexed from 0."""
    return full.select_classes(range(num_train)), full.select_classes(range(num_train, full.num_classes))


def split_by_share(full: DMLDataset, cfg: DataConfig) -> tuple[DMLDataset, DMLDataset]:
    """The standard half/half class split, or ``data.train_classes`` of them."""
    return split_first_classes(full, train_class_count(cfg.train_classes, full.num_classes))


def holdout_split(splits: DatasetSplits, share: float) -> DatasetSplits:
    """Validation split: the last ``share`` of the training classes become the evaluation set.

    Tuning hyper-parameters on the test classes inflates results (Musgrave et al., "A Metric
    Learning Reality Check", ECCV 2020); a search evaluates on held-out training classes instead,
    and the test split is dropped so nothing downstream can peek at it.
    """
    train = splits.train
    num_val = round(share * train.num_classes)
    if not 1 <= num_val < train.num_classes:
        raise DatasetError(
            f"data.holdout: {share} of {train.num_classes} training classes leaves {num_val} validation classes; "
            "both sides need at least one"
        )
    fit_part, val_part = split_first_classes(train, train.num_classes - num_val)
    return dataclasses.replace(splits, train=fit_part, test=val_part, query=None, gallery=None)


def fold_classes(num_classes: int, folds: int, fold: int) -> list[int]:
    """The training classes of fold `fold` of `folds`: contiguous in class order, sizes within one."""
    start, stop = round(fold * num_classes / folds), round((fold + 1) * num_classes / folds)
    return list(range(start, stop))


def fold_split(splits: DatasetSplits, folds: int, fold: int) -> DatasetSplits:
    """Reality-Check cross-validation (Musgrave et al., ECCV 2020): the training classes in `folds`
    class-disjoint folds; train on the others, evaluate on fold `fold`. Across folds every
    training class is held out exactly once. The test split is dropped, as for `holdout_split`."""
    train = splits.train
    if train.num_classes < folds:
        raise DatasetError(f"data.folds: {folds} folds need at least {folds} training classes, {train.num_classes} here")
    held = fold_classes(train.num_classes, folds, fold)
    rest = [c for c in range(train.num_classes) if c not in set(held)]
    return dataclasses.replace(splits, train=train.select_classes(rest), test=train.select_classes(held), query=None,
                               gallery=None)
