"""Datasets for deep metric learning: zero-shot splits, P x K sampling, transforms.

``build_datasets(cfg.data)`` reads the dataset named by ``data.name`` and returns transformed,
DataLoader-ready splits. Layouts (each module's docstring has the details):

- ``digits``: none, scikit-learn's bundled 8x8 digits; classes 0-4 / 5-9; Recall@1,2,4,8.
- ``omniglot``: ``<alphabet>/<character>/*.png``; split by alphabet; Recall@1,2,4,8.
- ``image_folder``: ``<class>/<image>`` (nested classes allowed); first classes train; Recall@1,2,4,8.
- ``cub200``: ``CUB_200_2011/`` with images.txt, image_class_labels.txt, classes.txt, images/;
  classes 1-100 / 101-200; Recall@1,2,4,8.
- ``cars196``: ``cars_annos.mat`` and ``car_ims/``; classes 1-98 / 99-196; Recall@1,2,4,8.
- ``sop``: ``Ebay_train.txt`` / ``Ebay_test.txt`` and the images; those lists; Recall@1,10,100,1000.
- ``inshop``: ``list_eval_partition.txt`` and ``img/``; train / query / gallery rows;
  Recall@1,10,20,30,40,50, queries searched in the gallery.

``data.holdout: f`` evaluates on the last share f of the *training* classes instead of the test
split (validation for hyper-parameter search, which must not look at the test classes).
``data.num_classes: N`` keeps the first N training classes (class-count ablation); test data is
untouched so runs with different N stay comparable.
"""
from __future__ import annotations

from dml_core.config import DataConfig

# Importing the dataset modules registers them in DATASETS.
from dml_core.data import cars196, cub200, digits, image_folder, inshop, omniglot, sop  # noqa: F401
from dml_core.data.base import (
    DATASETS,
    ArrayDataset,
    DatasetError,
    DatasetSplits,
    DMLDataset,
    ImageListDataset,
)
from dml_core.data.download import ensure_downloaded
from dml_core.data.roots import resolve_data_paths
from dml_core.data.sampler import PKBatchSampler
from dml_core.data.splits import fold_split, holdout_split
from dml_core.data.transforms import build_transforms

__all__ = [
    "DATASETS",
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


def select_splits(cfg: DataConfig) -> DatasetSplits:
    """The untransformed splits of ``cfg.name`` after ``data.holdout`` and ``data.num_classes``.

    Reads annotation files / folder listings and image headers (what the builder checks), never
    pixels: this is also the dataset index `--dry-run` checks batches against.
    Paths may name ``${DML_DATA}`` (see `dml_core.data.roots`).
    """
    cfg = resolve_data_paths(cfg)
    if cfg.download:
        ensure_downloaded(cfg)
    splits = DATASETS.get(cfg.name)(cfg)
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
    own (small_conv). ``pretrained`` selects ImageNet normalisation.
    """
    splits = select_splits(cfg)
    channels = splits.num_channels if out_channels is None else out_channels

    def transforms(train: bool):
        return build_transforms(cfg, train=train, num_channels=splits.num_channels, pretrained=pretrained, out_channels=channels)

    splits.train = splits.train.with_transform(transforms(train=True))
    test_transform = transforms(train=False)
    for name, split in splits.eval_splits().items():
        setattr(splits, name, split.with_transform(test_transform))
    return splits
