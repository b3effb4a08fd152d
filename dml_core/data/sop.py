"""Stanford Online Products (Oh Song et al., "Deep Metric Learning via Lifted Structured Feature
Embedding", CVPR 2016): 120,053 eBay product photos of 22,634 products. The published split is
the two list files: 11,318 train classes (59,551 images), 11,316 test classes (60,502).

Layout: ``Ebay_train.txt`` and ``Ebay_test.txt`` (header ``image_id class_id super_class_id
path``) with images at ``<root>/<path>``. ``data.root`` may be ``Stanford_Online_Products/`` or
the folder containing it. Get it from the authors' page
(https://cvgl.stanford.edu/projects/lifted_struct/); there is no maintained direct download.
"""
from __future__ import annotations

from pathlib import Path

from dml_core.params.datasets import DataConfig
from dml_core.data.base import DatasetSplits, ImageListDataset
from dml_core.data.layout import (
    check_images,
    find_layout_root,
    labelled_images,
    read_rows,
    require_file,
    require_root,
)

EXPECTED = "Stanford_Online_Products layout: Ebay_train.txt, Ebay_test.txt and the image folders"


def load_sop_list(root: Path, list_name: str) -> ImageListDataset:
    list_path = require_file(root / list_name, EXPECTED)
    rows = read_rows(list_path, 4, skip=1)  # image_id class_id super_class_id path
    paths = [str(root / row[3]) for row in rows]
    check_images(paths, list_path)
    class_order = [str(c) for c in sorted({int(row[1]) for row in rows})]
    return labelled_images(paths, [str(int(row[1])) for row in rows], 3, class_order=class_order, source=list_path)


def build(cfg: DataConfig) -> DatasetSplits:
    root = find_layout_root(require_root(cfg, EXPECTED), "Ebay_train.txt", "Stanford_Online_Products")
    return DatasetSplits(
        train=load_sop_list(root, "Ebay_train.txt"),
        test=load_sop_list(root, "Ebay_test.txt"),
        recall_at=cfg.recall_at,
        num_channels=3,
    )
