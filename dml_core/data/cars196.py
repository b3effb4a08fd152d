"""Cars196 / Stanford Cars (Krause et al., "3D Object Representations for Fine-Grained
Categorization", ICCV-W 2013): 16,185 images of 196 car models. DML protocol (Oh Song et al.,
CVPR 2016): classes 1-98 train (8,054 images), 99-196 test (8,131); the annotation's ``test``
flag is a classification split and is ignored.

Layout: ``cars_annos.mat`` (struct array ``annotations`` with fields ``relative_im_path`` and
``class`` (1-based), cell array ``class_names``) and the images at ``car_ims/...``.
"""
from __future__ import annotations

import numpy as np
import scipy.io
from scipy.io.matlab import MatReadError

from dml_core.params.datasets import DataConfig
from dml_core.data.base import DatasetError, DatasetSplits
from dml_core.data.layout import check_images, labelled_images, require_file, require_root
from dml_core.data.splits import split_by_share

EXPECTED = "Cars196 layout: cars_annos.mat and car_ims/"


def build(cfg: DataConfig) -> DatasetSplits:
    root = require_root(cfg, EXPECTED)
    mat_path = require_file(root / "cars_annos.mat", EXPECTED)
    try:
        mat = scipy.io.loadmat(mat_path, squeeze_me=True)
        annotations = np.atleast_1d(mat["annotations"])
        rel_paths = [str(p) for p in annotations["relative_im_path"]]
        class_ids = [int(c) for c in annotations["class"]]
        class_names = [str(n) for n in np.atleast_1d(mat["class_names"])]
    # Wrong keys or fields, a non-.mat file (MatReadError) or a v7.3 HDF5 .mat (NotImplementedError).
    except (KeyError, ValueError, TypeError, OSError, MatReadError, NotImplementedError) as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DatasetError(f"{mat_path}: not a Cars196 annotation file ({reason})") from None
    bad = next((c for c in class_ids if not 1 <= c <= len(class_names)), None)
    if bad is not None:
        raise DatasetError(f"{mat_path}: class {bad} outside 1..{len(class_names)} (class_names)")
    paths = [str(root / p) for p in rel_paths]
    check_images(paths, mat_path)
    # Names index by 1-based id; keying on the id keeps duplicate model names distinct.
    keys = [f"{c:03d}.{class_names[c - 1]}" for c in class_ids]
    order = [f"{c:03d}.{name}" for c, name in enumerate(class_names, start=1)]
    full = labelled_images(paths, keys, 3, class_order=order, source=mat_path)
    train, test = split_by_share(full, cfg)  # first half = classes 1-98
    return DatasetSplits(train=train, test=test, recall_at=cfg.recall_at, num_channels=3)
