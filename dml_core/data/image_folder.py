"""Any ``root/<class>/<image>`` tree (nested trees too): bring-your-own-data retrieval.

The class of an image is its parent folder relative to the root (``birds/sparrow``), classes in
sorted path order. Either one ``data.root`` split class-disjointly by ``data.train_classes``
(first classes train; default half) or ``data.train_root`` + ``data.test_root``. Images are read
as RGB.
"""
from __future__ import annotations

from pathlib import Path

from dml_core.params.datasets import DataConfig
from dml_core.data.base import DatasetSplits, ImageListDataset
from dml_core.data.layout import labelled_images, scan_class_tree, separate_roots
from dml_core.data.splits import split_by_share

EXPECTED = "a folder of <class>/<image> folders"


def load_image_folder(root: Path, field: str, num_channels: int = 3) -> ImageListDataset:
    paths, classes = scan_class_tree(root, field)
    return labelled_images(paths, classes, num_channels)


def build(cfg: DataConfig) -> DatasetSplits:
    roots = separate_roots(cfg, EXPECTED)
    if roots is None:
        train, test = split_by_share(load_image_folder(Path(cfg.root), "data.root"), cfg)
    else:
        train = load_image_folder(roots[0], "data.train_root")
        test = load_image_folder(roots[1], "data.test_root")
    return DatasetSplits(train=train, test=test, recall_at=cfg.recall_at, num_channels=3)
