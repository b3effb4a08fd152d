"""In-Shop Clothes Retrieval, a DeepFashion benchmark (Liu et al., "DeepFashion: Powering Robust
Clothes Recognition and Retrieval with Rich Annotations", CVPR 2016): 3,997 training items
(25,882 images); 3,985 test items searched query -> gallery (14,218 query, 12,612 gallery images).

Layout: ``list_eval_partition.txt`` (line 1: the row count, line 2: the header ``image_name
item_id evaluation_status``, then one row per image with status train / query / gallery) and the
images at ``<root>/<image_name>`` (``img/...``). There is no direct download: request DeepFashion
access from http://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html, then put
``Eval/list_eval_partition.txt`` and the extracted ``img/`` folder side by side in ``data.root``.

Query and gallery are two row views of one evaluation set, so they share one label space: a
label names the same item on both sides.
"""
from __future__ import annotations

from pathlib import Path

from dml_core.params.datasets import DataConfig
from dml_core.data.base import DatasetError, DatasetSplits, ImageListDataset
from dml_core.data.layout import check_images, labelled_images, read_rows, require_file, require_root

EXPECTED = "In-Shop layout: list_eval_partition.txt and img/"
STATUSES = ("train", "query", "gallery")


def read_partition(path: Path) -> list[list[str]]:
    rows = read_rows(path, 3, skip=2)
    with open(path, encoding="utf-8") as f:
        declared = f.readline().strip()
    if not declared.isdigit() or int(declared) != len(rows):
        raise DatasetError(f"{path}: line 1 declares {declared!r} images but the file lists {len(rows)} (truncated?)")
    bad = next((r for r in rows if r[2] not in STATUSES), None)
    if bad is not None:
        raise DatasetError(f"{path}: unknown evaluation_status {bad[2]!r} for {bad[0]} (expected {'/'.join(STATUSES)})")
    return rows


def items_dataset(root: Path, rows: list[list[str]], partition: Path) -> ImageListDataset:
    """Images of ``rows``, labelled by item id in sorted id order."""
    items = [r[1] for r in rows]
    return labelled_images([str(root / r[0]) for r in rows], items, 3, sorted(set(items)), partition)


def build(cfg: DataConfig) -> DatasetSplits:
    root = require_root(cfg, EXPECTED)
    partition = require_file(root / "list_eval_partition.txt", EXPECTED)
    rows = read_partition(partition)
    by_status = {s: [r for r in rows if r[2] == s] for s in STATUSES}
    for status, members in by_status.items():
        if not members:
            raise DatasetError(f"{partition}: empty split (no {status!r} rows)")
    check_images([str(root / r[0]) for r in rows], partition)

    # One evaluation set over query + gallery rows, then two row views of it: the shared label space.
    evaluation = items_dataset(root, by_status["query"] + by_status["gallery"], partition)
    n_query = len(by_status["query"])
    return DatasetSplits(
        train=items_dataset(root, by_status["train"], partition),
        test=None,
        query=evaluation.rows(range(n_query)),
        gallery=evaluation.rows(range(n_query, len(evaluation))),
        recall_at=cfg.recall_at,
        num_channels=3,
    )
