"""Omniglot (Lake, Salakhutdinov & Tenenbaum, "Human-level concept learning through probabilistic
program induction", Science 2015): 1,623 handwritten characters from 50 alphabets, 20 drawings
each, 105x105 binary PNGs, read as 1-channel images.

Layout: ``<root>/<alphabet>/<character>/*.png``; a class is one (alphabet, character) folder,
named ``Alphabet/characterNN``. Splits, all class-disjoint:

* ``data.train_root`` / ``data.test_root``: e.g. the official ``images_background`` (30 alphabets)
  and ``images_evaluation`` (20 alphabets).
* ``data.root`` holding both official folders (as ``data.download`` leaves it): that split.
* ``data.root`` = one alphabet tree: split **by alphabet** -- alphabets in sorted order go to
  training until the training classes reach ``data.train_classes`` (default half). Whole alphabets
  on each side make the test a harder and cleaner zero-shot test than splitting characters, since
  characters of one alphabet share strokes and style. When no alphabet boundary leaves a test
  alphabet (e.g. a single alphabet), the split falls back to characters in sorted order.

Horizontal flips stay on by default: a mirrored character is a plausible drawing variation and
is applied to train images only, never at test time.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dml_core.params.datasets import DataConfig
from dml_core.data.base import DatasetError, DatasetSplits, ImageListDataset
from dml_core.data.layout import labelled_images, scan_class_tree, separate_roots
from dml_core.data.splits import split_first_classes, train_class_count

EXPECTED = "<alphabet>/<character>/*.png folders"
OFFICIAL_SPLIT = ("images_background", "images_evaluation")


def load_omniglot_tree(root: Path, field: str) -> ImageListDataset:
    paths, classes = scan_class_tree(root, field)
    bad = next((c for c in classes if c.count("/") != 1), None)
    if bad is not None:
        raise DatasetError(f"{root}: expected {EXPECTED} ({field}), found class folder {bad!r}")
    return labelled_images(paths, classes, num_channels=1)


def alphabet_split_count(class_names: Sequence[str], target: int) -> int:
    """Number of training classes when whole alphabets go to training until ``target`` is reached.

    ``class_names`` must be grouped by alphabet (as `scan_class_tree` sorts them).
    """
    alphabets = [name.split("/", 1)[0] for name in class_names]
    starts = [i for i in range(1, len(alphabets)) if alphabets[i] != alphabets[i - 1]]
    return next((b for b in starts if b >= target), target)


def build(cfg: DataConfig) -> DatasetSplits:
    roots = separate_roots(cfg, EXPECTED)
    if roots is None and all((Path(cfg.root) / name).is_dir() for name in OFFICIAL_SPLIT):
        if cfg.train_classes is not None:
            raise DatasetError(
                f"data.train_classes: {cfg.root} holds the official {'/'.join(OFFICIAL_SPLIT)} split; "
                "point data.root at one of them to split it by data.train_classes instead"
            )
        roots = (Path(cfg.root) / OFFICIAL_SPLIT[0], Path(cfg.root) / OFFICIAL_SPLIT[1])
    if roots is None:
        full = load_omniglot_tree(Path(cfg.root), "data.root")
        target = train_class_count(cfg.train_classes, full.num_classes)
        train, test = split_first_classes(full, alphabet_split_count(full.class_names, target))
    else:
        train = load_omniglot_tree(roots[0], "data.train_root")
        test = load_omniglot_tree(roots[1], "data.test_root")
    return DatasetSplits(train=train, test=test, recall_at=cfg.recall_at, num_channels=1)
