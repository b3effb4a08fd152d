"""CUB-200-2011 (Wah et al., Caltech tech. report CNS-TR-2011-001): 11,788 photos of 200 bird
species. DML protocol (Oh Song et al., CVPR 2016): classes 1-100 train (5,864 images),
101-200 test (5,924); the dataset's own train_test_split.txt is a classification split and is
ignored.

Layout (the official tgz, extracted): ``CUB_200_2011/images.txt`` (``<image id> <path>``),
``image_class_labels.txt`` (``<image id> <class id>``), ``classes.txt`` (``<class id> <name>``)
and ``images/<path>``. ``data.root`` may be that folder or the folder containing it.
"""
from __future__ import annotations

from dml_core.params.datasets import DataConfig
from dml_core.data.base import DatasetError, DatasetSplits
from dml_core.data.layout import (
    check_images,
    find_layout_root,
    labelled_images,
    read_rows,
    require_file,
    require_root,
)
from dml_core.data.splits import split_by_share

EXPECTED = "CUB_200_2011 layout: images.txt, image_class_labels.txt, classes.txt, images/"


def build(cfg: DataConfig) -> DatasetSplits:
    root = find_layout_root(require_root(cfg, EXPECTED), "images.txt", "CUB_200_2011")
    images_txt = require_file(root / "images.txt", EXPECTED)
    labels_txt = require_file(root / "image_class_labels.txt", EXPECTED)
    classes_txt = require_file(root / "classes.txt", EXPECTED)

    class_rows = sorted(read_rows(classes_txt, 2), key=lambda r: int(r[0]))
    class_name = {cid: name for cid, name in class_rows}
    class_of = dict(read_rows(labels_txt, 2))
    paths, classes = [], []
    for image_id, rel_path in read_rows(images_txt, 2):
        cid = class_of.get(image_id)
        if cid is None:
            raise DatasetError(f"{labels_txt}: no class for image id {image_id} of {images_txt}")
        if cid not in class_name:
            raise DatasetError(f"{labels_txt}: class id {cid} (image {image_id}) is not in {classes_txt}")
        paths.append(str(root / "images" / rel_path))
        classes.append(class_name[cid])
    check_images(paths, images_txt)
    full = labelled_images(paths, classes, 3, class_order=[name for _, name in class_rows], source=images_txt)
    train, test = split_by_share(full, cfg)  # first half = classes 1-100
    return DatasetSplits(train=train, test=test, recall_at=cfg.recall_at, num_channels=3)
