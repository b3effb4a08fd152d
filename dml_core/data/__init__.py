"""Datasets for deep metric learning: zero-shot splits, P x K sampling, transforms.

``build_datasets(cfg.data)`` reads the dataset named by ``data.name`` and returns transformed,
DataLoader-ready splits. Every dataset is registered in `dml_core.params.datasets` with its
parameters, its standard Recall@K list and its builder, a module of this package whose docstring
describes the layout on disk and the split.

``data.holdout: f`` evaluates on the last share f of the *training* classes instead of the test
split (validation for hyper-parameter search, which must not look at the test classes).
``data.num_classes: N`` keeps the first N training classes (class-count ablation); test data is
untouched so runs with different N stay comparable.

Selecting the splits (`select_splits`, what the sweep driver's checks read) imports neither torch
nor torchvision; `PKBatchSampler` and `build_transforms`, which do, are imported on first use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dml_core.data.base import (
    ArrayDataset,
    DatasetError,
    DatasetSplits,
    DMLDataset,
    ImageListDataset,
)
from dml_core.data.download import ensure_downloaded
from dml_core.data.roots import resolve_data_paths
from dml_core.data.splits import fold_split, holdout_split
from dml_core.params.datasets import DATASETS, DataConfig

if TYPE_CHECKING:
    from dml_core.data.sampler import PKBatchSampler
    from dml_core.data.transforms import build_transforms

__all__ = [
    "ArrayDataset",
    "DatasetError",
    "DatasetSplits",
    "DMLDataset",
    "ImageListDataset",
    "PKBatchSampler",
    "build_datasets",
    "select_splits",
    "build_transforms",
    "ensure_downloaded",
]


def __getattr__(name: str) -> Any:
    """The names whose modules import torch, imported when first asked for (PEP 562)."""
    if name == "PKBatchSampler":
        from dml_core.data.sampler import PKBatchSampler

        return PKBatchSampler
    if name == "build_transforms":
        from dml_core.data.transforms import build_transforms

        return build_transforms
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def select_splits(cfg: DataConfig) -> DatasetSplits:
    """The untransformed splits of ``cfg.name`` after ``data.holdout`` and ``data.num_classes``.

    Reads annotation files / folder listings and image headers (what the builder checks), never
    pixels: this is also the dataset index `--dry-run` checks batches against.
    Paths may name ``${DML_DATA}`` (see `dml_core.data.roots`).
    """
    cfg = resolve_data_paths(cfg)
    if cfg.download:
        ensure_downloaded(cfg)
    splits = DATASETS.build(cfg)
    if cfg.holdout is not None:
        splits = holdout_split(splits, cfg.holdout)
    if cfg.folds is not None:
        splits = fold_split(splits, cfg.folds, cfg.fold)
    if cfg.num_classes is not None:
        available = splits.train.num_classes
        if cfg.num_classes > available:
            raise DatasetError(f"data.num_classes: {cfg.num_classes} exceeds the {available} training classes of {cfg.name}")
        splits.train = splits.train.subset_classes(cfg.num_classes)
    return splits


def build_datasets(cfg: DataConfig, *, pretrained: bool = False, out_channels: int | None = None) -> DatasetSplits:
    """The splits of ``cfg.name`` with train / test transforms applied.

    ``out_channels``: channels the model takes -- 3 for torchvision backbones, None for the data's
    own (a backbone whose `rgb` is False). ``pretrained`` selects ImageNet normalisation.
    """
    from dml_core.data.transforms import build_transforms

    splits = select_splits(cfg)
    channels = splits.num_channels if out_channels is None else out_channels

    def transforms(train: bool):
        return build_transforms(cfg, train=train, num_channels=splits.num_channels, pretrained=pretrained, out_channels=channels)

    splits.train = splits.train.with_transform(transforms(train=True))
    test_transform = transforms(train=False)
    for name, split in splits.eval_splits().items():
        setattr(splits, name, split.with_transform(test_transform))
    return splits
